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
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from pyspark.sql.streaming import StreamingQueryListener

from fleetsim.cloud.streaming.job import StreamJob
from fleetsim.kernel.clients import confluent_kafka_config, pg_connect
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.contract import encode_reading, format_ts_ms
from fleetsim.stack import dedicated

REPO = Path(__file__).resolve().parent.parent
EXTRA_CONF: dict[str, str] = {}
PHASES = ("latestOffset", "queryPlanning", "addBatch", "walCommit", "commitOffsets", "triggerExecution")


class Collector(StreamingQueryListener):
    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.agg: list[dict[str, Any]] = []

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        row = {"rows": int(p.numInputRows or 0), **{k: int(v) for k, v in (p.durationMs or {}).items()}}
        {"raw": self.raw, "agg": self.agg}.get(p.name or "", []).append(row)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


def _cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _job_pids() -> list[int]:
    """This process and every descendant (the JVM, Python workers)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [me]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def measure(cfg: FleetsimConfig, rate: int, seconds: float, devices: int, warmup_s: float) -> dict[str, Any]:
    from fleetsim.cloud.streaming import session

    base_conf = session.session_conf
    session.session_conf = lambda *a, **k: {**base_conf(*a, **k), **EXTRA_CONF}
    job = StreamJob(cfg, ui=False)
    job.start()
    coll = Collector()
    assert job.spark is not None
    job.spark.streams.addListener(coll)
    producer = Producer({**confluent_kafka_config(cfg, "bridge"), "linger.ms": 5})
    sent = 0
    try:
        time.sleep(warmup_s)
        coll.raw.clear()
        coll.agg.clear()
        cpu0, t_start = _cpu_s(_job_pids()), time.time()
        while time.time() - t_start < seconds:
            tick = time.time()
            for _ in range(max(rate // 10, 1)):
                now_ms = int(time.time() * 1000)
                dev = f"cost-{sent % devices:05d}"
                value = encode_reading(
                    dev, format_ts_ms(now_ms), sent // devices, 21.0 + (sent % 13) / 10,
                    45.0 + (sent % 11) / 10, 600.0 + sent % 17, 1013.0 + (sent % 7) / 10, 80.0, 48.85, 2.35,
                )  # fmt: skip
                producer.produce(
                    cfg.kafka.telemetry_topic, value, key=dev.encode(), headers=[("received_at", str(now_ms))]
                )
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, 0.1 - (time.time() - tick)))
        producer.flush(30)
        elapsed = time.time() - t_start
        cpu = _cpu_s(_job_pids()) - cpu0
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
                "SELECT extract(epoch FROM ingest_ts - ts) * 1000 AS ms FROM sensor_data) x"
            )
            n, p50, p95 = cur.fetchone()
    finally:
        conn.close()
    busy = [b for b in coll.raw if b["rows"] > 0]
    med = {k: statistics.median(b.get(k, 0) for b in busy) for k in PHASES} if busy else {}
    return {
        "rate": rate,
        "sent": sent,
        "landed": n,
        "p50_ms": round(p50 or 0),
        "p95_ms": round(p95 or 0),
        "raw_batches_with_rows": len(busy),
        "raw_batches_total": len(coll.raw),
        "raw_median_ms": med,
        "rows_per_raw_batch": statistics.median(b["rows"] for b in busy) if busy else 0,
        "agg_batches": len(coll.agg),
        "agg_median_trigger_ms": statistics.median(b.get("triggerExecution", 0) for b in coll.agg)
        if coll.agg
        else None,
        "job_cpu_cores": round(cpu / elapsed, 3),
        "loadavg": os.getloadavg(),
    }


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
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--raw-sink", choices=("driver", "executor"), default="driver", help="spark.raw_sink")
    ap.add_argument("--sync-progress", action="store_true", help="no async progress tracking")
    ap.add_argument("--conf", action="append", default=[], help="extra Spark conf key=value")
    args = ap.parse_args()
    args.set.append(f"spark.raw_sink={args.raw_sink}")
    StreamJob.async_progress = not args.sync_progress
    for kv in args.conf:
        k, v = kv.split("=", 1)
        EXTRA_CONF[k] = v
    base = load_config(REPO / "fleetsim.toml", environ={}).with_overrides(
        {"stack.jvm_dir": str(REPO / ".cache" / "jvm"), "stack.start_timeout_s": 120}
    )
    with dedicated(base, Path(tempfile.mkdtemp(prefix="batch-cost-")), "kafka", "postgres") as (engines, _):
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
        print(json.dumps(measure(cfg, args.rate, args.seconds, args.devices, args.warmup), indent=2))


if __name__ == "__main__":
    main()
