"""End-to-end benchmark: load -> Mosquitto -> bridge -> Kafka -> Spark -> PostgreSQL.

Two load modes, each at two fleet sizes (100 and 10,000 devices), ramped side by side in one run:

- ``sim``: the simulator, as users run it (real time, QoS 1, sharded above 8k msg/s);
- ``external``: :mod:`fleetsim.bench.loadgen`, contract readings over bare MQTT sockets at a few µs
  each, to measure the pipeline's own capacity apart from its load generator.

Each ramp stops at the first step whose p95 event->row latency exceeds 2 s or that loses anything
against the ground truth (the simulator's ledger, or the load generator's PUBACK count); the
highest passing rate then soaks. Per step: p50/p95/p99 latency per hop (device ts -> bridge
receive -> Kafka append -> row) from the rows themselves, and a CPU table per stage in µs per
message from /proc against a budget that sums to 200 µs/msg (10k msg/s on 2 cores), naming the
stages over their share.

Run: ``fleetsim bench e2e`` (``--quick``: two steps per ramp, no soak, <= 10 minutes).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from fleetsim.bench import pg_statements, series
from fleetsim.bench.budget import (
    HOPS,
    LOADGEN,
    SETTLED_RATE,
    SETTLED_S,
    after_soak_figure,
    cpu_table,
    holder,
    settled_figure,
    shown_step,
)
from fleetsim.bench.cpu_profile import (
    Snapshot,
    cores_by_group,
    cpu_seconds,
    label_backends,
    process_cpu,
    thread_cpu,
)
from fleetsim.bench.memory import (
    MIB,
    PART_SEP,
    MemSampler,
    children_map,
    growing_label,
    growth,
    metric_sum,
    tree,
)
from fleetsim.bench.windows import WindowsSampler
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.registry.seed import seed_from_csv
from fleetsim.stack import service
from fleetsim.stack.components import AppComponent
from fleetsim.stack.postgres import Postgres

# Ramp (up to 9 steps of 60 s plus drains) and a 10-minute soak.
TIMEOUT_S = 3_000
REPO = Path(__file__).resolve().parent.parent
P95_LIMIT_S = 2.0
WARMUP_S = 5.0


# ---------------------------------------------------------------------------------- /proc CPU
class CpuMeter:
    """CPU seconds used by each stage's process tree between two snapshots."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.before: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        kids = children_map()
        return {stage: cpu_seconds(tree(pid, kids)) for stage, pid in self.roots.items()}

    def start(self) -> None:
        self.before = self.snapshot()

    def used(self) -> dict[str, float]:
        now = self.snapshot()
        return {k: now[k] - self.before.get(k, 0.0) for k in now}


class StageProfile:
    """Spark's CPU by thread and PostgreSQL's by process (with the workers that ended in between,
    e.g. autovacuum's), between :meth:`start` and :meth:`cores`."""

    def __init__(
        self,
        roots: dict[str, int],
        backend_names: Callable[[], dict[int, str]] | None = None,
        statements: tuple[Postgres, str] | None = None,
    ) -> None:
        self.roots = roots
        self.backend_names = backend_names
        self.before: dict[str, Snapshot] = {}
        self.t0 = 0.0
        self.pg_statements = statements
        """PostgreSQL (with ``pg_stat_statements``) and the database to profile by statement."""
        self.statements: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Snapshot]:
        kids = children_map()
        out: dict[str, Snapshot] = {}
        if "spark" in self.roots:
            out["spark"] = thread_cpu(tree(self.roots["spark"], kids))
        if "postgres" in self.roots:
            pg = self.roots["postgres"]
            out["postgres"] = process_cpu(tree(pg, kids), reaped_of=pg)
            if self.backend_names is not None:
                out["postgres"] = label_backends(out["postgres"], self.backend_names())
        return out

    def start(self) -> None:
        if self.pg_statements is not None:
            pg_statements.reset(*self.pg_statements)
        self.before, self.t0 = self.snapshot(), time.monotonic()

    def cores(self) -> dict[str, dict[str, float]]:
        now, seconds = self.snapshot(), max(time.monotonic() - self.t0, 1e-3)
        if self.pg_statements is not None:
            self.statements = pg_statements.top(*self.pg_statements, seconds)
        return {k: cores_by_group(self.before.get(k, {}), v, seconds) for k, v in now.items()}


# ---------------------------------------------------------------------------------- fleet file
def write_fleet(path: Path, prefix: str, n: int, interval_s: float = 1.0) -> None:
    """``n`` fixed devices cloned from the shipped fleet (no faults, mains powered)."""
    with (REPO / "devices.csv").open(newline="") as fh:
        template = [r for r in csv.DictReader(fh) if r["type"] == "fixed"]
    fields = list(template[0].keys())
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for i in range(n):
            row = dict(template[i % len(template)])
            row.update(
                device_id=f"{prefix}-{i:06d}",
                interval_s=f"{interval_s:g}",
                battery_mah="0",
                fault_profile="none",
            )
            w.writerow(row)


def published_from_ledger(ledger: Path) -> int:
    last: dict[str, int] = {}
    for line in ledger.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("record") == "sent":
            last[rec["device"]] = sum(b - a + 1 for a, b in rec["published"])
    return sum(last.values())


# ------------------------------------------------------------------------------------ queries
LATENCY_SQL = """
WITH q AS (SELECT ARRAY[0.5, 0.95, 0.99]::float8[] AS p)
SELECT count(*),
       percentile_cont((SELECT p FROM q)) WITHIN GROUP (ORDER BY extract(epoch FROM ingest_ts - ts)),
       percentile_cont((SELECT p FROM q)) WITHIN GROUP (ORDER BY extract(epoch FROM bridge_ts - ts)),
       percentile_cont((SELECT p FROM q)) WITHIN GROUP (ORDER BY extract(epoch FROM kafka_ts - bridge_ts)),
       percentile_cont((SELECT p FROM q)) WITHIN GROUP (ORDER BY extract(epoch FROM ingest_ts - kafka_ts))
FROM sensor_data
WHERE device_id LIKE %(prefix)s AND ts >= %(since)s
"""


def stored_count(cfg: FleetsimConfig, prefix: str, since: datetime) -> int:
    """Rows of the ramp's devices stamped at or after ``since`` (a step's start: devices are reused
    across the steps of a ramp, and their clocks are this machine's)."""
    with pg_connect(cfg, "admin") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM sensor_data WHERE device_id LIKE %s AND ts >= %s", (prefix + "-%", since)
        )
        return int(cur.fetchone()[0])


def alert_count(cfg: FleetsimConfig, prefix: str, since: datetime) -> int:
    """Alerts raised on the ramp's devices' readings stamped at or after ``since``: what share of
    the step's load also went down the alert path (alert lines, sensor_alerts, incidents)."""
    with pg_connect(cfg, "admin") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM sensor_alerts WHERE event_ts >= %s AND device_id LIKE %s",
            (since, prefix + "-%"),
        )
        return int(cur.fetchone()[0])


def backend_names(cfg: FleetsimConfig) -> dict[int, str]:
    """PostgreSQL backend pid -> ``application_name`` (the loader, the windowed flow's writer and
    the notifier share one role; this tells them apart in the CPU profile). Empty if unreadable."""
    try:
        with pg_connect(cfg, "admin") as conn, conn.cursor() as cur:
            cur.execute("SELECT pid, application_name FROM pg_stat_activity WHERE application_name <> ''")
            return {int(pid): str(name) for pid, name in cur.fetchall()}
    except psycopg2.Error:
        return {}


def latency(cfg: FleetsimConfig, prefix: str, since: datetime) -> dict[str, Any]:
    with pg_connect(cfg, "admin") as conn, conn.cursor() as cur:
        cur.execute(LATENCY_SQL, {"prefix": prefix + "-%", "since": since})
        n, e2e, to_bridge, bridge_kafka, kafka_row = cur.fetchone()

    def q(v: list[float] | None) -> dict[str, float | None]:
        if not v:
            return {"p50": None, "p95": None, "p99": None}
        return {"p50": v[0], "p95": v[1], "p99": v[2]}

    return {
        "rows": n,
        "event_to_row_s": q(e2e),
        "device_to_bridge_s": q(to_bridge),
        "bridge_to_kafka_s": q(bridge_kafka),
        "kafka_to_row_s": q(kafka_row),
    }


# -------------------------------------------------------------------------------------- loads
MIN_INTERVAL_S = 0.1
"""The fleet file's fastest sampling: a simulated fleet of N devices cannot exceed 10·N msg/s."""


@dataclass(frozen=True, slots=True)
class Mode:
    """One ramp: a load (``sim`` or ``external``) and a fleet size."""

    load: str
    devices: int

    @property
    def name(self) -> str:
        return f"{self.load} {self.devices:,} devices"

    @property
    def max_rate(self) -> float:
        return self.devices / MIN_INTERVAL_S if self.load == "sim" else float("inf")


def run_sim(
    env: dict[str, str], fleet: Path, ledger: Path, seconds: float, shards: int
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(shards):
        argv = [
            sys.executable, "-m", "fleetsim.cli", "sim",
            "--devices", str(fleet), "--speed", "1", "--duration", f"{int(seconds)}s",
            "--seed", "7", "--shard", f"{i}/{shards}", "--ledger", f"{ledger}.{i}", "--metrics-port", "0",
        ]  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


def start_load(
    mode: Mode, env: dict[str, str], prefix: str, rate: int, seconds: float, tmp: Path
) -> tuple[list[subprocess.Popen[bytes]], Callable[[], int]]:
    """Start the step's load; returns its processes and how to read the ground truth afterwards
    (readings acknowledged by the broker)."""
    tag = f"{prefix}-{rate}"
    if mode.load == "sim":
        fleet, ledger = tmp / f"{tag}.csv", tmp / f"{tag}.ledger"
        write_fleet(fleet, prefix, mode.devices, interval_s=mode.devices / rate)
        # One simulator process keeps ~25k msg/s; shard above 8k so the load is not the limit.
        shards = 1 if rate <= 8000 else 2
        procs = run_sim(env, fleet, ledger, seconds, shards)
        return procs, lambda: sum(published_from_ledger(Path(f"{ledger}.{i}")) for i in range(shards))
    out = tmp / f"{tag}.json"
    argv = [
        sys.executable, "-m", "fleetsim.bench.loadgen", "--devices", str(mode.devices),
        "--rate", str(rate), "--duration", str(seconds), "--prefix", prefix, "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return [proc], lambda: int(json.loads(out.read_text())["acked"])


def step(
    mode: Mode,
    env: dict[str, str],
    cfg: FleetsimConfig,
    stages: dict[str, int],
    prefix: str,
    rate: int,
    seconds: float,
    tmp: Path,
    drain_s: float = 120.0,
    mem_every_s: float = 5.0,
    full_memory: bool = False,
    profile: bool = False,
) -> dict[str, Any]:
    """One rate for ``seconds``, drained; with ``profile``, also where Spark's and PostgreSQL's CPU
    went inside their trees (by thread, by process title: :mod:`fleetsim.bench.cpu_profile`)."""
    meter = CpuMeter(stages)
    statements = (Postgres(cfg), cfg.postgres.database) if profile else None
    prof = StageProfile(stages, lambda: backend_names(cfg), statements) if profile else None
    started = datetime.now(UTC)
    # The load's processes exit before the meter's last read; their CPU comes from the kernel's
    # account of reaped children instead (the bench's only children that end within a step).
    reaped0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows0 = _state_gauge(cfg, "rows", STATE_ROWS_METRIC).get("rows") if profile else None
    windows = WindowsSampler(cfg.spark.metrics_port, cfg.spark.state_delay_s)
    windows.start()
    procs, truth = start_load(mode, env, prefix, rate, seconds, tmp)
    meter.start()
    if prof is not None:
        prof.start()
    load = "simulator" if mode.load == "sim" else LOADGEN
    # The soak also samples what Spark's state stores say they hold: RocksDB's memory, outside
    # the JVM's own accounts, fills toward spark.state_memory_mb as the state grows.
    gauges = (lambda: _state_gauge(cfg, STATE_PART, STATE_METRIC)) if full_memory else None
    mem = MemSampler(
        {**stages, load: [p.pid for p in procs]},
        every_s=mem_every_s,
        split=frozenset({"spark"}),
        gauges=gauges,
    ).start()
    try:
        for p in procs:
            _, err = p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"{mode.load} load exited {p.returncode}: {err.decode()[-500:]}")
    finally:
        samples = mem.stop()
    reaped1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_cpu = (reaped1.ru_utime + reaped1.ru_stime) - (reaped0.ru_utime + reaped0.ru_stime)
    published = truth()
    # Drain: wait until every acknowledged reading is a row, or nothing has moved for 15 s after
    # rows started arriving (a cold Spark job may take long to plan its first batch).
    deadline, last, last_change = time.monotonic() + drain_s, -1, time.monotonic()
    stored = 0
    while time.monotonic() < deadline:
        stored = stored_count(cfg, prefix, started)
        if stored >= published:
            break
        if stored != last:
            last, last_change = stored, time.monotonic()
        elif stored > 0 and time.monotonic() - last_change > 15:
            break
        time.sleep(0.5)
    cpu = meter.used() | {load: load_cpu}
    # A watermark read in a step's first two windowed triggers may still be the previous step's.
    win = windows.stop(skip_s=2 * cfg.spark.agg_trigger_interval_s, limit_s=cfg.spark.windows_behind_after_s)
    where = prof.cores() if prof is not None else None
    rows = [rows0, _state_gauge(cfg, "rows", STATE_ROWS_METRIC).get("rows")] if profile else None
    lat = latency(cfg, prefix, started + timedelta(seconds=WARMUP_S))
    p95 = lat["event_to_row_s"]["p95"]
    # The soak: where in its minutes the slow readings sat, and beside what (fleetsim.bench.series).
    buckets = series.fetch(cfg, prefix, started + timedelta(seconds=WARMUP_S)) if full_memory else None
    lost = max(published - stored, 0)
    alerts = alert_count(cfg, prefix, started)
    return {
        "mode": mode.name,
        "rate_target_msg_s": rate,
        "rate_achieved_msg_s": round(published / seconds, 1),
        "published": published,
        "stored": stored,
        "lost": lost,
        "alerts_per_reading": round(alerts / max(stored, 1), 4),
        "latency": lat,
        "windows": win,
        "cpu_us_per_msg": {k: round(v * 1e6 / max(published, 1), 1) for k, v in cpu.items()},
        **memory_summary(samples, full=full_memory),
        **({"cpu_profile_cores": where} if where is not None else {}),
        **({"pg_statements": prof.statements} if prof is not None else {}),
        **({"state_rows": rows} if rows is not None else {}),
        **(
            {
                "latency_series": [b.as_row(started.timestamp()) for b in buckets],
                "latency_series_fields": series.ROW_FIELDS,
                "stalls": series.stalls(buckets, P95_LIMIT_S, started.timestamp()),
            }
            if buckets is not None
            else {}
        ),
        # Windows never judged (the job's endpoint did not answer) do not fail a step: they are
        # reported as unknown (None), not as kept up.
        "passed": bool(
            p95 is not None
            and p95 <= P95_LIMIT_S
            and lost == 0
            and published > 0
            and win["kept_up"] is not False
        ),
    }


def ramp_prefix(mode: Mode, started: float) -> str:
    """The device-id prefix of one ramp's fleet (the same ids in every step of the ramp)."""
    return f"e2e-{mode.load[:3]}{mode.devices}-{int(started)}"


def register_sim_fleets(
    cfg: FleetsimConfig, modes: list[Mode], prefixes: dict[Mode, str], first_rate: int, tmp: Path
) -> None:
    """Registers the simulated ramps' fleets with their device class before any of them runs, as
    `fleetsim up` registers a user's fleet. Unregistered, the stream knew no device class and
    applied the fleet-wide rules: the outdoor sensors' humidity near saturation (weather, per
    their class rule) raised a warning on 29 % of all readings, and the steps measured an alert
    storm (ANALYSIS.md, nineteenth round). Once, here: the alert rules see a registry change within
    ``spark.registry_refresh_s`` plus one real-time batch (``spark.realtime_batch_s``, 60 s), and
    seeded at a ramp's start its first minute was still judged by the fleet-wide rules. The
    registered interval is the ramp's slowest (its first step's); the offline rule then waits
    ``alerts.offline_after_s`` at every step, as it would with each step's own interval."""
    for mode in modes:
        if mode.load == "sim":
            fleet = tmp / f"{prefixes[mode]}-registry.csv"
            write_fleet(fleet, prefixes[mode], mode.devices, interval_s=mode.devices / first_rate)
            seed_from_csv(cfg, fleet)


def ramp(
    mode: Mode, rates: list[int], step_s: float, env: dict[str, str], cfg: FleetsimConfig,
    stages: dict[str, int], tmp: Path, prefix: str,
) -> dict[str, Any]:  # fmt: skip
    """Steps up the rates until one fails; the same device ids throughout, so the windowed flow
    holds ``mode.devices`` devices in its state from the first step on."""
    steps: list[dict[str, Any]] = []
    limit = ""
    for rate in rates:
        if rate > mode.max_rate:
            limit = f"the simulator samples a device at most every {MIN_INTERVAL_S} s"
            break
        res = step(mode, env, cfg, stages, prefix, rate, step_s, tmp)
        steps.append(res)
        print(
            f"e2e {mode.name} {rate} msg/s: achieved {res['rate_achieved_msg_s']}, lost {res['lost']}, "
            f"p95 {res['latency']['event_to_row_s']['p95']}, windows lag {res['windows']['lag_s_max']} s "
            f"backlog {res['windows']['backlog_records_max']}",
            file=sys.stderr,
            flush=True,
        )
        if not res["passed"]:
            break
    passing = [r for r in steps if r["passed"]]
    return {
        "mode": mode.name,
        "prefix": prefix,
        "steps": steps,
        "best": passing[-1] if passing else None,
        "first_failure": next((r for r in steps if not r["passed"]), None),
        "load_limit": limit,
    }


# ------------------------------------------------------------------------------------- report
def stage_pids(cfg: FleetsimConfig, apps: dict[str, AppComponent]) -> dict[str, int]:
    pids = {}
    for name in ("mosquitto", "kafka", "postgres"):
        pid = service(name, cfg).status().pid
        if pid:
            pids[name] = pid
    for name, app in apps.items():
        pid = app.pid()
        if pid:
            pids["spark" if name == "stream" else name] = pid
    return pids


def memory_summary(samples: list[tuple[float, dict[str, int]]], full: bool) -> dict[str, Any]:
    """A ramp step: each stage's peak PSS (MiB). The soak (``full``): the growth verdict per stage
    and one sample a minute (the JSON feeds BENCHMARKS.md's flat tables: every sample would
    drown them)."""
    if not full:
        return {"memory_peak_mib": {k: v["peak_mib"] for k, v in growth(samples).items()}}
    minute = [
        (t, by) for i, (t, by) in enumerate(samples) if i == 0 or int(t // 60) > int(samples[i - 1][0] // 60)
    ]
    return {
        "memory": growth(samples),
        "memory_samples_mib": [[round(t), {k: round(v / MIB) for k, v in by.items()}] for t, by in minute],
    }


def memory_table(mem: dict[str, dict[str, Any]]) -> dict[str, Any]:
    verdict = {True: "bounded", False: "growing", None: "too short to judge"}
    keys = ("first_mib", "last_mib", "peak_mib", "slope_mib_per_min", "allowed_mib_per_10min")
    rows = [[stage, *(m[k] for k in keys), verdict[m["bounded"]]] for stage, m in mem.items()]
    return {"title": "Soak: memory per stage (PSS of the process tree, MiB; slope over the second half)",
            "columns": ["stage", "first", "last", "peak", "MiB/min", "allowed MiB/10 min", "verdict"],
            "rows": rows}  # fmt: skip


def latency_table(ramps: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for r in ramps:
        s = shown_step(r)
        if not s:
            continue
        for hop in (*HOPS, "event_to_row_s"):
            q = s["latency"][hop]
            rows.append(
                [r["mode"], s["rate_target_msg_s"], hop.removesuffix("_s"), q["p50"], q["p95"], q["p99"]]
            )
    return {"title": "Latency per hop at each ramp's judged step, seconds", "rows": rows,
            "columns": ["ramp", "msg/s", "hop", "p50", "p95", "p99"]}  # fmt: skip


def _secs(value: float | None) -> str:
    return "none (no row)" if value is None else f"{value:.2f} s"


def _rate_figure(r: dict[str, Any], target: float) -> dict[str, Any]:
    best = r["best"]
    value = best["rate_achieved_msg_s"] if best else 0.0
    failure = r["first_failure"]
    why = (
        f"stopped by {r['load_limit']}"
        if r["load_limit"]
        else (
            f"first failing step {failure['rate_target_msg_s']:,} msg/s: p95 "
            f"{_secs(failure['latency']['event_to_row_s']['p95'])}, lost {failure['lost']}; "
            + holder(failure)
            if failure
            else "every step passed"
        )
    )
    # What share of the load went down the alert path too: an alert storm costs PostgreSQL and
    # Spark far more per message than quiet readings, so the figure says which one it measured.
    shares = [s["alerts_per_reading"] for s in r["steps"] if "alerts_per_reading" in s]
    if shares:
        why += f"; alerts {100 * max(shares):.1f} % of readings at most"
    return {
        "name": f"{r['mode']}: highest passing rate (p95 event->row <= 2 s, 0 lost) — {why}",
        "value": value,
        "unit": "msg/s",
        "target": f">= {target:,.0f} msg/s",
        "met": value >= target * 0.98,
    }


OFFLINE_AFTER_S = 300.0
"""The benchmark fleets' offline threshold: three of the slowest reporting interval (10,000
devices at 100 msg/s report every 100 s). With the default 60 s every such device was offline
between two readings, and the 100 msg/s steps measured a permanent alert storm (an offline alert,
an incident and its notification per reading) instead of the pipeline."""


STATE_PART = f"spark{PART_SEP}state stores"
"""The memory table's row of what the state stores report (a part of ``spark``, not a process)."""
STATE_METRIC = "fleetsim_stream_state_memory_bytes"
STATE_ROWS_METRIC = "fleetsim_stream_state_rows"


def _state_gauge(cfg: FleetsimConfig, key: str, metric: str) -> dict[str, int]:
    """``{key: what Spark's state stores report of themselves}`` (``metric`` summed over the
    queries), or ``{}`` if the job's endpoint did not answer: a missing figure, not a failed run."""
    try:
        return {key: int(metric_sum(_metrics_url(cfg), metric))}
    except OSError:
        return {}


def _metrics_url(cfg: FleetsimConfig) -> str:
    return f"http://127.0.0.1:{cfg.spark.metrics_port}/metrics"


def _stalls_text(st: dict[str, Any]) -> str:
    """The soak's stalls in a phrase: how many 10-s buckets went over the p95 limit, and whether
    they sat beside the windowed batches more often than the buckets at large."""
    if not st["over"]:
        return f"no {series.BUCKET_S}-s bucket over {P95_LIMIT_S:g} s"
    return (
        f"{st['over']} of {st['buckets']} {series.BUCKET_S}-s buckets over {P95_LIMIT_S:g} s "
        f"(worst {_secs(st['worst_p95_s'])} at {st['worst_at_s']} s; {st['over_with_agg_batch']} of "
        f"them beside a windowed batch, against {st['all_with_agg_batch']} of all buckets)"
    )


def soak_seconds(cfg: FleetsimConfig) -> float:
    """Twice the time the windowed flow's deduplication state takes to reach its steady size, and
    at least 10 minutes. A (device_id, seq) key stays in that state for two state delays of event
    time (``dropDuplicatesWithinWatermark`` keeps it one delay past its own time, and the
    watermark trails the newest reading by another), so the state, and RocksDB's memory with it,
    grows for that long at any steady rate (3.1 million keys after 620 s at 5,000 msg/s). The
    soak's judged second half then starts once it is full: a 10-minute soak was judging the fill.
    With ``spark.dedup = "buckets"`` (the default since 7 Dec) a group is freed one state delay plus
    at most a bucket after its readings, sooner than this; the soak keeps the longer bound, which
    also covers the window state's fill, so that its figures compare with the earlier runs'."""
    fill_s = 2 * cfg.spark.state_delay_s
    return max(600.0, 2 * fill_s)


def run(cfg: FleetsimConfig, quick: bool) -> dict[str, Any]:
    cfg = cfg.with_overrides({"alerts.offline_after_s": OFFLINE_AFTER_S})
    rates = [100, 1000] if quick else [100, 1000, 2500, 5000, 8000, 10_000, 15_000, 20_000]
    # A full step measures exactly one windowed trigger period after its first WARMUP_S: every
    # step then holds one windowed batch. With 30 s steps (25 s measured) a step held zero or one,
    # and two back-to-back runs disagreed by a whole step where p95 sat near 2 s (ANALYSIS.md).
    step_s = 15.0 if quick else WARMUP_S + cfg.spark.agg_trigger_interval_s
    soak_s = 0.0 if quick else soak_seconds(cfg)
    # Spark's CPU at rest, measured after the ramps: their first steps still pay the JVM's JIT
    # (C2 compiled ~0.1 core of a 100 msg/s run one minute in, ~0.04 five minutes in;
    # bench_batch_cost.py), a cost of the first minutes, not of a job that runs for days.
    settled_s = 0.0 if quick else SETTLED_S
    modes = [Mode("external", 100), Mode("sim", 100), Mode("external", 10_000), Mode("sim", 10_000)]
    targets = {"external": 15_000.0, "sim": 10_000.0}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    apps = {"stream": AppComponent("stream", cfg), "bridge": AppComponent("bridge", cfg)}
    ramps: list[dict[str, Any]] = []
    soak: dict[str, Any] | None = None
    settled: dict[str, Any] | None = None
    after_soak: dict[str, Any] | None = None
    # The JVMs keep JIT-compiling the data path for minutes under load (C2 took ~0.5 core for
    # the first minute of a 100 msg/s run; bench_batch_cost.py), so the warm-up runs under load.
    warm_s = 45.0 if quick else 120.0
    # ... and it outlasts the registry change of the simulated fleets reaching the alert rules.
    warm_s = max(warm_s, cfg.spark.registry_refresh_s + cfg.spark.realtime_batch_s + 5.0)
    if settled_s:
        # The at-rest step's PostgreSQL CPU by statement: preloaded now, before any client connects.
        pg_statements.enable(Postgres(cfg), cfg.postgres.database)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            for app in apps.values():
                app.start(env)
            stages = stage_pids(cfg, apps)
            prefixes = {mode: ramp_prefix(mode, time.time()) for mode in modes}
            register_sim_fleets(cfg, modes, prefixes, rates[0], tmp)
            # Explicit warm-up, not measured: the JVMs (Kafka, Spark) compile their hot paths and
            # Spark plans its first batches; a 10 s warm-up left the first step measuring that.
            warm = step(
                Mode("external", 100), env, cfg, stages, "e2e-warmup", 500, warm_s, tmp, drain_s=300.0
            )
            if warm["stored"] == 0:
                raise RuntimeError(
                    "warm-up: no row reached PostgreSQL within 300 s; see the stream/bridge logs"
                )
            for mode in modes:
                ramps.append(ramp(mode, rates, step_s, env, cfg, stages, tmp, prefixes[mode]))
            sim_big = ramps[-1]
            ext_big = ramps[2]
            if settled_s:
                # Before the soak: its rate x 600 s of deduplication keys would still be expiring
                # for ten minutes after it, and each windowed batch scans them all (after_soak).
                settled = step(Mode("external", 10_000), env, cfg, stages, ext_big["prefix"],
                               SETTLED_RATE, settled_s, tmp, profile=True)  # fmt: skip
            if soak_s and sim_big["best"]:
                soak = step(Mode("sim", 10_000), env, cfg, stages, sim_big["prefix"],
                            sim_big["best"]["rate_target_msg_s"], soak_s, tmp,
                            mem_every_s=10.0, full_memory=True)  # fmt: skip
                if settled_s:
                    after_soak = step(Mode("external", 10_000), env, cfg, stages, ext_big["prefix"],
                                      SETTLED_RATE, settled_s, tmp, profile=True)  # fmt: skip
        finally:
            for app in apps.values():
                app.stop()
    figures = [_rate_figure(r, targets[r["mode"].split()[0]]) for r in ramps]
    if soak:
        figures.append(
            {
                "name": f"soak {soak_s / 60:.0f} min, sim 10,000 devices at "
                f"{soak['rate_target_msg_s']:,} msg/s: p95 event->row "
                f"{_secs(soak['latency']['event_to_row_s']['p95'])}, lost {soak['lost']}, "
                f"windows lag at most {soak['windows']['lag_s_max']} s; {_stalls_text(soak['stalls'])}",
                "value": soak["rate_achieved_msg_s"],
                "unit": "msg/s",
                "target": f">= 10,000 msg/s for {soak_s / 60:.0f} min, p95 <= 2 s, 0 lost, windows kept up",
                "met": soak["passed"] and soak["rate_target_msg_s"] >= 10_000,
            }
        )
    if settled:
        figures.append(settled_figure(settled, ramps[2]))
    if after_soak and soak:
        figures.append(after_soak_figure(after_soak, soak["rate_target_msg_s"]))
    tables = []
    if soak:
        stages_mem = {k: v for k, v in soak["memory"].items() if PART_SEP not in k}
        unbounded = [k for k, v in stages_mem.items() if v["bounded"] is False]
        figures.append(
            {
                "name": "soak: memory (PSS) of every stage bounded in the settled half "
                + (
                    f"— growing: {', '.join(growing_label(k, soak['memory']) for k in unbounded)}"
                    if unbounded
                    else f"({len(stages_mem)} stages)"
                ),
                "value": len(stages_mem) - len(unbounded),
                "unit": "stages bounded",
                "target": "all",
                "met": not unbounded and all(v["bounded"] for v in stages_mem.values()),
            }
        )
        tables.append(memory_table(soak["memory"]))
    cpu, over = cpu_table(ramps)
    behind_s = cfg.spark.windows_behind_after_s
    return {
        "title": "End to end (load -> Mosquitto -> bridge -> Kafka -> Spark -> PostgreSQL)",
        "method": (
            f"Four ramps in one run: external load generator (bare MQTT sockets, QoS 1) and the simulator "
            f"(real time, QoS 1), each with 100 and 10,000 devices; rates {rates} msg/s for {step_s:.0f} s "
            f"each, a ramp stopping at its first step with p95 event->row > {P95_LIMIT_S} s, any loss, or "
            f"windows fallen behind (their newest reading older than {behind_s:.0f} s, four windowed "
            "triggers, or a windowed batch its cap held back; sampled every 5 s from the job's gauges); "
            f"then {settled_s:.0f} s of the external load with 10,000 devices at {SETTLED_RATE} msg/s "
            "for Spark's CPU at rest; then a "
            f"{soak_s / 60:.0f}-minute soak of the simulator with 10,000 devices at its highest "
            f"passing rate; last, the same {SETTLED_RATE} msg/s again, right after the soak. "
            f"Warm-up: {warm_s:.0f} s at 500 msg/s before the first ramp, not reported; the simulated "
            "fleets are registered with their device class before it (as `fleetsim up` registers a "
            "user's fleet), and each step counts its alerts per reading. "
            f"Latencies come from each row (ts, bridge_ts, kafka_ts, ingest_ts), skipping the first "
            f"{WARMUP_S:.0f} s of a step (the rest of a full step is one windowed trigger period, so "
            "each holds one windowed batch). Loss = readings the broker acknowledged (simulator ledger or "
            "load generator PUBACKs) minus rows stored. CPU per stage from /proc, whole process trees, "
            "all on the same 2 cores. Memory: PSS of each stage's process tree every 5 s (soak: 10 s); "
            "the soak's stages must stop growing in its second half (fleetsim/bench/memory.py), which "
            "starts once the windowed flow's deduplication state has reached its steady size "
            "(`soak_seconds`); `spark/state stores` is what Spark's state stores report of their own "
            "memory (capped by spark.state_memory_mb), shown beside the processes, not judged. "
            f"alerts.offline_after_s = {OFFLINE_AFTER_S:.0f} s (three of the slowest fleet's "
            "100 s reporting interval)."
        ),
        "figures": figures,
        "tables": [cpu, latency_table(ramps), *tables],
        "ramps": ramps,
        "soak": soak,
        "settled": settled,
        "after_soak": after_soak,
        "notes": [
            "All stages share the machine's 2 cores, so a stage's CPU per message is also a share of "
            "the ceiling of every other stage.",
            *(over or ["every stage within its share of 200 µs/msg"]),
        ],
    }
