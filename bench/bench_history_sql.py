"""The raw sink's PostgreSQL merge, stuck/drift from the per-device running state against the
sensor_data path, side by side in one run.

Two fleet shapes, 5,000-reading batches each: 10,000 devices sending one reading per batch (a
large fleet at 5,000 msg/s), and 100 devices sending 50 each (a small, fast one). For each shape
and each variant (``PgSink(running_state=True)``, the micro-batch sinks' default;
``running_state=False``, every device judged from ``sensor_data``; ``state_in_memory=True``, the
real-time loader's default, :mod:`.rule_memory`) the tables are emptied, warm-up batches give
every device its history, then the measured batches are merged one after another through
``PgSink.write_raw`` as the streaming job calls it. Per batch: wall time of the whole merge, of the
stuck/drift statements alone, the PostgreSQL backend's CPU from /proc and the writer's own CPU.
The variants alternate order run to run; medians over runs, ratios are medians of per-run ratios.

Run: ``fleetsim bench history_sql`` or ``python bench/bench_history_sql.py [--quick]``
(starts its own PostgreSQL). docs/streaming.md, "History rules".
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetsim.bench.cpu_profile import cpu_seconds
from fleetsim.bench.engines import pg_rows, run_standalone
from fleetsim.cloud.streaming import rule_memory, rule_state
from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import FleetsimConfig

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 1200
ROWS = 5_000
SHAPES = {"10k devices x 1": (10_000, 1), "100 devices x 50": (100, 50)}
"""Batch shape: devices in the fleet, readings per device per batch (5,000 readings a batch)."""
VARIANTS = {"running state": (True, False), "sensor_data path": (False, False), "memory": (True, True)}
"""Variant -> (``running_state``, ``state_in_memory``): the running state in ``device_rule_state``
(the micro-batch sinks' default), judging every device from ``sensor_data``, and the running state
in the writer's memory (:mod:`.rule_memory`, the real-time loader's default)."""


def _time_rules(sink: PgSink, rule_ids: set[int], rule_ms: list[float]) -> None:
    """Each stuck/drift statement's wall time into ``rule_ms``. Timed around the sink's prepared
    statements: the cursor only sees ``EXECUTE <name>``, so timing ``cursor.execute`` by the
    statement object (as this bench did before the merges were prepared) counted nothing."""
    run = sink._prepared.run

    def timed(cur: Any, query: Any, params: dict[str, Any] | None = None, size: int = 0) -> None:
        t0 = time.perf_counter()
        try:
            run(cur, query, params, size)
        finally:
            if id(query) in rule_ids:
                rule_ms.append((time.perf_counter() - t0) * 1000)

    sink._prepared.run = timed  # type: ignore[method-assign]


def _batch(devices: int, per_device: int, k: int, t0: datetime) -> RawBatch:
    """The k-th batch: ``ROWS // per_device`` devices (rotating through the fleet), ``per_device``
    readings each, 10 s apart per device, slowly varying values (a few onsets, as in real data)."""
    n_dev = ROWS // per_device
    lines = []
    for j in range(n_dev):
        d = (k * n_dev + j) % devices
        rnd = (k * n_dev + j) // devices  # how many times the rotation reached this device
        for i in range(per_device):
            seq = rnd * per_device + i
            ts = (t0 + timedelta(seconds=10 * seq)).isoformat()
            temp, hpa = 20 + (seq % 7) * 0.1 + (d % 3), 1013 + (seq % 3) * 0.1
            lines.append(
                f"hs-{d:05d},{seq},{ts},{temp:.1f},{50 + (d % 5)},{600 + seq % 11},{hpa:.1f},"
                f"80,,,OK,,0,{seq},{ts},{ts}\n"
            )
    return RawBatch("".join(lines).encode(), b"", b"", ())


def _history(cfg: FleetsimConfig) -> int:
    """Readings each device gets before the measured batches: the rules' look-back and two more."""
    return max(cfg.alerts.stuck_readings, cfg.alerts.drift_window_readings) + 2


def _measure(
    cfg: FleetsimConfig, devices: int, per_device: int, variant: tuple[bool, bool], batches: int
) -> dict[str, float]:
    pg_rows(
        cfg,
        "TRUNCATE sensor_data, device_latest, sensor_alerts, incident_events, incidents, pipeline_metrics",
    )
    sink = PgSink(cfg, "raw", running_state=variant[0], state_in_memory=variant[1])
    rule_ms: list[float] = []
    rule_ids = {
        id(sink._stuck_drift),
        id(sink._fast_alerts),
        id(rule_state.FAST_SQL),
        id(sink._memory_alerts),
    }
    _time_rules(sink, rule_ids | {id(rule_state.STATE_UPSERT_SQL), id(rule_memory.REBUILD_SQL)}, rule_ms)
    # Every device gets lookback + 2 readings of history before the measured batches.
    per_round = ROWS // per_device
    warm = -(-devices * _history(cfg) // (per_round * per_device))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    day = t0.date()
    try:
        conn = sink.conn()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = int(cur.fetchone()[0])
        conn.commit()
        sink.ensure_partitions([day, day + timedelta(days=1), day + timedelta(days=2)])
        for k in range(warm):
            sink.write_raw(_batch(devices, per_device, k, t0), k)
        wall, cpu, client, rules, state = [], [], [], [], 0
        for k in range(warm, warm + batches):
            b = _batch(devices, per_device, k, t0)
            rule_ms.clear()
            c0, p0, w0 = cpu_seconds([pid]), time.process_time(), time.perf_counter()
            res = sink.write_raw(b, k)
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((cpu_seconds([pid]) - c0) * 1000)
            # The writer's own CPU: the memory variant moves work from the backend to here.
            client.append((time.process_time() - p0) * 1000)
            rules.append(sum(rule_ms))
            state += res.state_devices
    finally:
        sink.close()
    med = statistics.median
    return {
        "merge_ms": med(wall),
        "rules_ms": med(rules),
        "backend_cpu_ms": med(cpu),
        "client_cpu_ms": med(client),
        "state_share": state / (batches * per_round),
    }


def _get(m: dict[str, float], key: str) -> float:
    return m["backend_cpu_ms"] + m["client_cpu_ms"] if key == "cpu_ms" else m[key]


def run(cfg: FleetsimConfig, quick: bool) -> dict[str, Any]:
    runs, batches = (1, 8) if quick else (3, 24)
    history = _history(cfg)
    by: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(runs):
        for shape, (devices, per_device) in SHAPES.items():
            order = list(VARIANTS.items())
            if r % 2:
                order.reverse()
            for variant, flags in order:
                m = _measure(cfg, devices, per_device, flags, batches)
                by.setdefault((shape, variant), []).append(m)
                print(f"run {r + 1}/{runs} {shape}, {variant}: {m}", file=sys.stderr, flush=True)
    med = statistics.median
    figures: list[dict[str, Any]] = []
    for shape in SHAPES:
        new, old = by[(shape, "running state")], by[(shape, "sensor_data path")]
        for key, what in (("merge_ms", "whole merge"), ("rules_ms", "stuck/drift statements")):
            figures.append(
                {
                    "name": f"{shape} reading(s) per 5,000-reading batch: {what}, running state",
                    "value": round(med(m[key] for m in new) * 1000 / ROWS, 1),
                    "unit": "µs/reading",
                    "baseline_name": "sensor_data path (every device's history read and windowed)",
                    "baseline": round(med(m[key] for m in old) * 1000 / ROWS, 1),
                    "ratio": round(med(a[key] / b[key] for a, b in zip(new, old, strict=True)), 2),
                    "runs": [round(m[key] * 1000 / ROWS, 1) for m in new],
                }
            )
        figures.append(
            {
                "name": f"{shape}: PostgreSQL backend CPU of the whole merge, running state",
                "value": round(med(m["backend_cpu_ms"] for m in new) * 1000 / ROWS, 1),
                "unit": "µs/reading",
                "baseline_name": "sensor_data path",
                "baseline": round(med(m["backend_cpu_ms"] for m in old) * 1000 / ROWS, 1),
                "ratio": round(
                    med(a["backend_cpu_ms"] / b["backend_cpu_ms"] for a, b in zip(new, old, strict=True)), 2
                ),
                "runs": [round(m["backend_cpu_ms"] * 1000 / ROWS, 1) for m in new],
            }
        )
    for shape in SHAPES:
        mem, table = by[(shape, "memory")], by[(shape, "running state")]
        for key, what in (
            ("merge_ms", "whole merge (wall)"),
            ("backend_cpu_ms", "PostgreSQL backend CPU"),
            ("client_cpu_ms", "writer's own CPU"),
            ("cpu_ms", "CPU, backend + writer"),
        ):
            figures.append(
                {
                    "name": f"{shape}: {what}, running state in the loader's memory",
                    "value": round(med(_get(m, key) for m in mem) * 1000 / ROWS, 1),
                    "unit": "µs/reading",
                    "baseline_name": "running state in device_rule_state",
                    "baseline": round(med(_get(m, key) for m in table) * 1000 / ROWS, 1),
                    "ratio": round(
                        med(_get(a, key) / _get(b, key) for a, b in zip(mem, table, strict=True)), 2
                    ),
                    "runs": [round(_get(m, key) * 1000 / ROWS, 1) for m in mem],
                }
            )
    share = {
        f"{s}, {v}": round(med(m["state_share"] for m in by[(s, v)]), 3)
        for s in SHAPES
        for v in ("running state", "memory")
    }
    return {
        "title": "Raw merge in PostgreSQL: stuck/drift from the running state (in a table, in the loader's "
        "memory) vs from sensor_data",
        "method": (
            f"PgSink.write_raw on {ROWS:,}-reading batches, two fleet shapes ({', '.join(SHAPES)} "
            "readings per batch); per variant the tables are emptied and warm-up batches give every "
            f"device {history} readings of history, then {batches} batches are measured one after "
            "another: wall of the merge, wall of the stuck/drift statements (running state: its three "
            "statements plus the sensor_data path for devices it cannot judge; baseline: the "
            "sensor_data statement; memory: the alert insert of its onsets and the re-read of the devices it "
            "could not judge), backend CPU from /proc, the writer's process CPU. Variants alternate order "
            "per run; medians of "
            f"{runs} run(s) of per-batch medians; ratios are medians of per-run ratios."
        ),
        "figures": figures,
        "state_share": share,
        "notes": [
            "state_share: fraction of the measured device-batches the running state judged (the rest, "
            "and every device before it has 12 readings, took the sensor_data path).",
            "The memory variant's writer CPU includes parsing the batch's lines and judging in Python; "
            "the other variants' writer CPU is psycopg2 sending the COPY and statements.",
            "jit is off in the writer session for both variants (PostgreSQL compiled the running "
            "state's statement on every batch otherwise).",
        ],
    }


if __name__ == "__main__":
    raise SystemExit(run_standalone(REPO, "history_sql", ("postgres",), run, "--quick" in sys.argv[1:], 120))
