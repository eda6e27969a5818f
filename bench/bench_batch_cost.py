"""Fixed cost of a raw micro-batch: StreamingQueryProgress.durationMs breakdown on a small run.

Starts its own Kafka and PostgreSQL (dedicated, free ports), runs the streaming job in-process,
produces ``--rate`` msg/s (keyed by device id, like the bridge) for ``--seconds`` and reports, for
the raw query's batches that had rows: the median of each durationMs phase (addBatch,
queryPlanning, walCommit, commitOffsets, latestOffset, triggerExecution), p50/p95 event->row and
the job's CPU (driver Python + its JVM, from /proc). Used to compare candidates one at a time
(docs/streaming.md, "What a raw micro-batch costs").

Run: ``python bench/bench_batch_cost.py [--rate 100] [--seconds 60] [--devices 50] [--set k=v ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from fleetsim.bench import pg_statements
from fleetsim.bench.cpu_profile import cores_by_group, cpu_seconds, thread_cpu
from fleetsim.bench.memory import children_map, tree
from fleetsim.cloud.streaming.job import StreamJob
from fleetsim.cloud.streaming.listener import ProgressListener
from fleetsim.kernel.clients import confluent_kafka_config, pg_connect
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.contract import encode_reading, format_ts_ms
from fleetsim.stack import dedicated, service
from fleetsim.stack.postgres import Postgres

REPO = Path(__file__).resolve().parent.parent
EXTRA_CONF: dict[str, str] = {}
PHASES = ("latestOffset", "queryPlanning", "addBatch", "walCommit", "commitOffsets", "triggerExecution")


class Collector(ProgressListener):
    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.agg: list[dict[str, Any]] = []

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        row: dict[str, Any] = {
            "rows": int(p.numInputRows or 0),
            **{k: int(v) for k, v in (p.durationMs or {}).items()},
        }
        # Per stateful operator (dedup, window aggregation): where a windowed batch's time goes.
        row["state"] = [
            {
                "op": s.operatorName,
                "rows_total": int(s.numRowsTotal),
                "updated": int(s.numRowsUpdated),
                "removed": int(s.numRowsRemoved),
                "update_ms": int(s.allUpdatesTimeMs),
                "removal_ms": int(s.allRemovalsTimeMs),
                "commit_ms": int(s.commitTimeMs),
                "memory_mib": round(int(s.memoryUsedBytes) / 2**20, 1),
            }
            for s in (p.stateOperators or [])
        ]
        {"raw": self.raw, "agg": self.agg}.get(p.name or "", []).append(row)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


def _job_pids() -> list[int]:
    """This process and its descendants that belong to the job (the JVM, Python workers); not
    the Kafka broker and PostgreSQL that ``dedicated`` started as children of this process."""
    me = os.getpid()
    children = children_map()
    out, todo = [], [me]
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        argv = cmd.split(b"\0")
        if pid != me and (b"kafka.Kafka" in argv or argv[0].split(b"/")[-1].startswith(b"postgres")):
            continue  # an engine, and its descendants with it
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _engine_pids(cfg: FleetsimConfig) -> dict[str, list[int]]:
    """The Kafka broker's and PostgreSQL's process trees (PostgreSQL is daemonized by pg_ctl, so
    not a child of this process): their CPU is the price of the job's fetches, commits and
    merges, apart from the job's own."""
    out: dict[str, list[int]] = {}
    for name in ("kafka", "postgres"):
        pid = service(name, cfg).status().pid
        out[name] = tree(pid, children_map()) if pid else []
    return out


def _engines_cpu_s(cfg: FleetsimConfig) -> dict[str, float]:
    return {name: cpu_seconds(pids) for name, pids in _engine_pids(cfg).items()}


def prefill(
    pg: Postgres, cfg: FleetsimConfig, devices: int, per_device: int, interval_s: float
) -> dict[str, Any]:
    """``per_device`` readings of history for each bench device, one every ``interval_s`` up to
    now, as a run that has been going for a while leaves them (the e2e benchmark's at-rest step
    comes after its ramps): the history rules' look-ups then walk a table larger than shared
    buffers. Seqs 0 .. per_device - 1; the load continues from there."""
    t0 = time.monotonic()
    conn = pg.superuser_connect(cfg.postgres.database)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ensure_sensor_data_partition(d::date) FROM generate_series("
                "(now() - make_interval(secs => %s))::date, now()::date, interval '1 day') d",
                (per_device * interval_s,),
            )
            # Device by device in ts order, as they would have arrived: one reading of every
            # device per interval.
            cur.execute(
                "INSERT INTO sensor_data (device_id, seq, ts, temperature, humidity, co2, pressure,"
                " battery, lat, lon, status, ingest_ts)"
                " SELECT 'cost-' || lpad(d::text, 5, '0'), k, t, 21 + random(), 45 + random(),"
                " 600 + 20 * random(), 1013 + random(), 80, 48.85, 2.35, 'OK', t"
                " FROM generate_series(0, %(n)s - 1) k,"
                " LATERAL (SELECT now() - make_interval(secs => (%(n)s - k) * %(iv)s) AS t) x,"
                " generate_series(0, %(devices)s - 1) d",
                {"n": per_device, "iv": interval_s, "devices": devices},
            )
            rows = cur.rowcount
            cur.execute("VACUUM ANALYZE sensor_data")
            cur.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('sensor_data_' || to_char(now(), 'YYYYMMDD')))"
            )
            today = cur.fetchone()[0]
    finally:
        conn.close()
    return {
        "rows": rows,
        "per_device": per_device,
        "seconds": round(time.monotonic() - t0, 1),
        "today_size": today,
    }


def measure(
    cfg: FleetsimConfig,
    rate: int,
    seconds: float,
    devices: int,
    warmup_s: float,
    *,
    seq_base: int = 0,
    pg: Postgres | None = None,
    tick_s: float = 0.1,
) -> dict[str, Any]:
    """``pg``: the dedicated PostgreSQL service when ``pg_stat_statements`` is on (profiled)."""
    from fleetsim.cloud.streaming import session

    base_conf = session.session_conf
    session.session_conf = lambda *a, **k: {**base_conf(*a, **k), **EXTRA_CONF}
    job = StreamJob(cfg, ui=False)
    sink_ms: list[float] = []
    raw_sink = job._sinks["raw"]
    write_raw = raw_sink.write_raw

    def timed_write_raw(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return write_raw(*a, **k)
        finally:
            sink_ms.append((time.perf_counter() - t0) * 1000)

    raw_sink.write_raw = timed_write_raw  # type: ignore[method-assign]
    job.start()
    coll = Collector()
    assert job.spark is not None
    job.spark.streams.addListener(coll)
    producer = Producer({**confluent_kafka_config(cfg, "bridge"), "linger.ms": 5})
    sent = 0
    measured_from = 0
    try:
        # Warm-up under the same load: an idle JVM has not JIT-compiled the data path, and its
        # C2 compiler threads then take ~0.5 core for the first minute of load (measured).
        t_load = time.time()
        t_start = t_load + warmup_s
        cpu0: float | None = None
        jvm0: dict[str, int] = {}
        threads0: dict[int, tuple[str, float]] = {}
        engines0: dict[str, float] = {}
        server0: dict[str, float] = {}
        while time.time() - t_start < seconds:
            tick = time.time()
            if cpu0 is None and tick >= t_start:
                coll.raw.clear()
                coll.agg.clear()
                sink_ms.clear()
                jvm0, cpu0, t_start, measured_from = (
                    _jvm_counters(job.spark),
                    cpu_seconds(_job_pids()),
                    tick,
                    sent,
                )
                threads0 = thread_cpu(_job_pids())
                engines0 = _engines_cpu_s(cfg)
                if pg is not None:
                    pg_statements.reset(pg, cfg.postgres.database)
                    server0 = pg_statements.server_counters(pg)
                job.spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor.resetMetrics()
            for _ in range(max(round(rate * tick_s), 1)):
                now_ms = int(time.time() * 1000)
                dev = f"cost-{sent % devices:05d}"
                value = encode_reading(
                    dev, format_ts_ms(now_ms), seq_base + sent // devices, 21.0 + (sent % 13) / 10,
                    45.0 + (sent % 11) / 10, 600.0 + sent % 17, 1013.0 + (sent % 7) / 10, 80.0, 48.85, 2.35,
                )  # fmt: skip
                producer.produce(
                    cfg.kafka.telemetry_topic, value, key=dev.encode(), headers=[("received_at", str(now_ms))]
                )
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, tick_s - (time.time() - tick)))
        assert cpu0 is not None
        producer.flush(30)
        elapsed = time.time() - t_start
        cpu = cpu_seconds(_job_pids()) - cpu0
        jvm = {k: v - jvm0[k] for k, v in _jvm_counters(job.spark).items()}
        rules = _top_rules(job.spark)
        top_threads = cores_by_group(threads0, thread_cpu(_job_pids()), elapsed)
        engines1 = _engines_cpu_s(cfg)
        engines_cores = {k: round((v - engines0.get(k, 0.0)) / elapsed, 3) for k, v in engines1.items()}
        statements = pg_statements.top(pg, cfg.postgres.database, elapsed) if pg is not None else None
        server = (
            {k: v - server0[k] for k, v in pg_statements.server_counters(pg).items()}
            if pg is not None
            else None
        )
        cpu_per_msg_us = cpu / max(sent - measured_from, 1) * 1e6
        deadline = time.time() + 60
        while time.time() < deadline and _count(cfg) < sent:
            time.sleep(0.5)
    finally:
        job.stop()
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) FROM ("
                "SELECT extract(epoch FROM ingest_ts - ts) * 1000 AS ms FROM sensor_data WHERE seq >= %s) x",
                (seq_base + measured_from // devices + 1,),
            )
            n, p50, p95 = cur.fetchone()
            # The windowed query's PostgreSQL upsert against its whole batch (all its batches).
            cur.execute(
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY write_duration_ms), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY batch_duration_ms) "
                "FROM pipeline_metrics WHERE query_name = 'agg' AND write_duration_ms IS NOT NULL"
            )
            agg_n, agg_write, agg_batch = cur.fetchone()
            cur.execute("SELECT count(*) FROM sensor_data_agg")
            agg_rows = cur.fetchone()[0]
    finally:
        conn.close()
    busy = [b for b in coll.raw if b["rows"] > 0]
    med = {k: statistics.median(b.get(k, 0) for b in busy) for k in PHASES} if busy else {}
    return {
        "rate": rate,
        "sent": sent,
        "landed": _count(cfg),
        "measured_rows": n,
        "p50_ms": round(p50 or 0),
        "p95_ms": round(p95 or 0),
        "raw_batches_with_rows": len(busy),
        "raw_batches_total": len(coll.raw),
        "raw_median_ms": med,
        "raw_sink_write_ms_median": round(statistics.median(sink_ms)) if sink_ms else None,
        "rows_per_raw_batch": statistics.median(b["rows"] for b in busy) if busy else 0,
        "agg_batches": len(coll.agg),
        "agg_median_trigger_ms": statistics.median(b.get("triggerExecution", 0) for b in coll.agg)
        if coll.agg
        else None,
        "agg_median_add_batch_ms": statistics.median(b.get("addBatch", 0) for b in coll.agg)
        if coll.agg
        else None,
        "agg_state_median": _state_median(coll.agg),
        "agg_all_batches": {"n": agg_n, "write_ms_median": agg_write, "batch_ms_median": agg_batch},
        "agg_rows_stored": agg_rows,
        "job_cpu_cores": round(cpu / elapsed, 3),
        "job_cpu_us_per_msg": round(cpu_per_msg_us),
        "warmup_s": warmup_s,
        "jvm_in_window": jvm,
        "cores_by_thread": top_threads,
        "engines_cores": engines_cores,
        "pg_statements": statements,
        "pg_server": server,
        "catalyst_rules_top": rules,
        "loadavg": os.getloadavg(),
    }


def _state_median(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stateful operator's figures, median over the windowed batches that had rows."""
    busy = [b["state"] for b in batches if b["rows"] > 0 and b.get("state")]
    if not busy:
        return []
    return [
        {"op": ops[0]["op"], **{k: statistics.median(o[k] for o in ops) for k in ops[0] if k != "op"}}
        for ops in zip(*busy, strict=False)
    ]


def _jvm_counters(spark: Any) -> dict[str, int]:
    """Codegen compilations (Spark's CodegenMetrics: a cache miss compiles a class with Janino),
    classes loaded and JIT time (ms) so far in the job's JVM: per-batch code that never stops
    being generated shows up as a steady climb in all three."""
    jvm = spark._jvm
    codegen = jvm.org.apache.spark.metrics.source.CodegenMetrics
    mgmt = jvm.java.lang.management.ManagementFactory
    return {
        "codegen_compilations": int(codegen.METRIC_COMPILATION_TIME().getCount()),
        "classes_loaded": int(mgmt.getClassLoadingMXBean().getTotalLoadedClassCount()),
        "jit_ms": int(mgmt.getCompilationMXBean().getTotalCompilationTime()),
    }  # fmt: skip


def _top_rules(spark: Any, n: int = 12) -> dict[str, Any]:
    """Catalyst's own account of the window: total time in rules and the rules that took most
    (``RuleExecutor.dumpTimeSpent``), to tell which optimizer rules a batch pays for."""
    text = str(spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor.dumpTimeSpent())
    out: dict[str, Any] = {}
    rows = []
    for line in text.splitlines():
        total = re.match(r"\s*Total time:\s*([\d.]+) seconds", line)
        if total:
            out["total_s"] = float(total.group(1))
        m = re.match(r"\s*(org\.apache\.\S+)\s+(\d+)\s*/\s*(\d+)\s+(\d+)\s*/\s*(\d+)", line)
        if m:
            rows.append((m.group(1).rsplit(".", 1)[-1], int(m.group(2)) / 1e6, int(m.group(4))))
    rows.sort(key=lambda r: -r[1])
    out["rules_ms_runs"] = [(name, round(ms, 1), runs) for name, ms, runs in rows[:n]]
    return out


def _count(cfg: FleetsimConfig) -> int:
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM sensor_data")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of load before measuring")
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument(
        "--raw-sink", choices=("realtime", "driver", "executor"), default="realtime", help="spark.raw_sink"
    )
    ap.add_argument("--sync-progress", action="store_true", help="no async progress tracking")
    ap.add_argument("--conf", action="append", default=[], help="extra Spark conf key=value")
    ap.add_argument("--queries", default="raw,agg,deadletter", help="which of the job's queries run")
    ap.add_argument("--raw-without-registry", action="store_true", help="raw flow without the registry join")
    ap.add_argument(
        "--tick", type=float, default=0.1, help="seconds between sends (0.01: evenly paced, like e2e's load)"
    )
    ap.add_argument("--registry-uncached", action="store_true", help="re-read the registry in every batch")
    ap.add_argument(
        "--history-per-device",
        type=int,
        default=0,
        help="readings of history per device inserted before the load",
    )
    ap.add_argument("--pg-statements", action="store_true", help="profile PostgreSQL per statement")
    ap.add_argument(
        "--pg-set", action="append", default=[], help="PostgreSQL setting name=value (ALTER SYSTEM)"
    )
    args = ap.parse_args()
    # Attribution switches: patched in the job's modules, this process only.
    from fleetsim.cloud.streaming import flows, job

    job.QUERY_NAMES = tuple(q for q in args.queries.split(",") if q)
    if args.registry_uncached:
        from fleetsim.cloud.streaming.registry_cache import registry_relation

        job.StreamJob.registry = lambda self: registry_relation(self.spark, self.cfg)  # type: ignore[method-assign]
    if args.raw_without_registry:
        plain_raw = flows.raw_lines
        flows.raw_lines = lambda kafka_df, alerts, **kw: plain_raw(kafka_df, alerts)
    args.set.append(f"spark.raw_sink={args.raw_sink}")
    StreamJob.async_progress = not args.sync_progress
    for kv in args.conf:
        k, v = kv.split("=", 1)
        EXTRA_CONF[k] = v
    base = load_config(REPO / "fleetsim.toml", environ={}).with_overrides(
        {"stack.jvm_dir": str(REPO / ".cache" / "jvm"), "stack.start_timeout_s": 120}
    )
    with dedicated(base, Path(tempfile.mkdtemp(prefix="batch-cost-")), "kafka", "postgres") as (
        engines,
        svcs,
    ):
        postgres = svcs["postgres"]
        assert isinstance(postgres, Postgres)
        pg_settings = dict(kv.split("=", 1) for kv in args.pg_set)
        if args.pg_statements or pg_settings:
            pg_statements.enable(postgres, engines.postgres.database, pg_settings)
        over: dict[str, Any] = {
            "spark.master": "local[2]",
            "spark.checkpoint_dir": tempfile.mkdtemp(prefix="batch-cost-ckpt-"),
            "spark.starting_offsets": "earliest",
            "spark.metrics_port": 0,
        }
        for kv in args.set:
            k, v = kv.split("=", 1)
            over[k] = v
        cfg = engines.with_overrides(over)
        history = None
        if args.history_per_device:
            history = prefill(postgres, cfg, args.devices, args.history_per_device, args.devices / args.rate)
        result = measure(
            cfg,
            args.rate,
            args.seconds,
            args.devices,
            args.warmup,
            seq_base=args.history_per_device,
            pg=postgres if args.pg_statements else None,
            tick_s=args.tick,
        )
        print(json.dumps({**result, "history": history, "pg_settings": pg_settings}, indent=2))


if __name__ == "__main__":
    main()
