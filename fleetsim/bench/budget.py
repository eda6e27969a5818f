"""The end-to-end benchmark's CPU budget: 200 µs of CPU per message for every stage together.

At 10k msg/s on 2 cores the whole machine has 200 µs of CPU per message. Each stage gets a share;
the table built here puts each stage's measured µs/msg (from /proc) next to its share, per ramp,
and names the stages over it.
"""

from __future__ import annotations

from typing import Any

BUDGET_US: dict[str, float] = {
    "simulator": 50.0,
    "mosquitto": 15.0,
    "bridge": 25.0,
    "kafka": 30.0,
    "spark": 60.0,
    "postgres": 20.0,
}
"""Each stage's share of 200 µs/msg, the whole machine's CPU at 10k msg/s on 2 cores. Spark gets
the largest share (parse, validate, rules, two flows); the simulator's covers physics + encoding +
paho. In external mode the load generator is outside the budget and reported on its own."""
LOADGEN = "load generator"


def shown_step(r: dict[str, Any]) -> dict[str, Any] | None:
    """The step a ramp is judged by: its highest passing step, else its first (failing) one."""
    return r["best"] or (r["steps"][0] if r["steps"] else None)


def cpu_table(ramps: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Stage x ramp, µs/msg at each ramp's judged step, against the budget; and the stages over."""
    shown = [(r["mode"], shown_step(r)) for r in ramps]
    cols = ["stage", "budget µs/msg"] + [
        f"{m} @ {s['rate_target_msg_s']:,} msg/s" if s else m for m, s in shown
    ] + ["verdict"]  # fmt: skip
    rows, over = [], []
    for stage in [*BUDGET_US, LOADGEN, "total (all but the load generator)"]:
        budget = BUDGET_US.get(stage, 200.0 if stage.startswith("total") else None)
        row: list[Any] = [stage, budget]
        misses = []
        for mode, s in shown:
            cpu = s["cpu_us_per_msg"] if s else {}
            if stage.startswith("total"):
                value = round(sum(v for k, v in cpu.items() if k != LOADGEN), 1) if cpu else None
            else:
                value = cpu.get(stage)
            row.append(value)
            if budget is not None and value is not None and value > budget:
                misses.append(mode)
        if budget is None:
            row.append("outside the budget")
        else:
            row.append("over in " + "; ".join(misses) if misses else "within")
        if misses and not stage.startswith("total"):
            over.append(f"{stage} over its {budget:g} µs/msg share in: {', '.join(misses)}")
        rows.append(row)
    table = {"title": "CPU per stage, µs per message (from /proc, whole process trees)", "columns": cols,
             "rows": rows}  # fmt: skip
    return table, over


HOPS: dict[str, str] = {
    "device_to_bridge_s": "load -> Mosquitto -> bridge",
    "bridge_to_kafka_s": "bridge -> Kafka",
    "kafka_to_row_s": "Kafka -> Spark -> PostgreSQL",
}
"""The hops of event->row latency (timestamps on each row), and the stages each one holds."""


def holder(step: dict[str, Any]) -> str:
    """What holds a failing step: the hop with the longest p95 (the stages behind it), and the
    stages over their CPU share at that step, furthest over first (on 2 shared cores, a stage over
    its share takes CPU from every other)."""
    lat = step["latency"]
    hops = [(lat[h]["p95"], h) for h in HOPS if lat.get(h, {}).get("p95") is not None]
    parts = []
    win = step.get("windows") or {}
    if win.get("kept_up") is False:
        parts.append(
            f"the windows fell behind (lag {win['lag_s_max']:g} s, limit {win['lag_limit_s']:g}; "
            f"{win['backlog_records_max'] or 0:,} records left by capped batches)"
        )
    if hops:
        p95, hop = max(hops)
        parts.append(f"held by {HOPS[hop]} (p95 {p95:.2f} s)")
    cpu = step.get("cpu_us_per_msg", {})
    over = sorted(
        ((cpu[k] / b, k) for k, b in BUDGET_US.items() if cpu.get(k) is not None and cpu[k] > b), reverse=True
    )
    if over:
        parts.append(
            "over their CPU share: " + ", ".join(f"{k} {cpu[k]:g}/{BUDGET_US[k]:g} µs/msg" for _, k in over)
        )
    return "; ".join(parts) or "no hop timestamps"


SETTLED_RATE = 100
SETTLED_S = 180.0
"""Six windowed trigger periods: one windowed batch more or less moves the figure by ~5 %."""
SPARK_REST_TARGET_CORES = 0.2


def _cores(res: dict[str, Any]) -> float:
    # Four decimals: at three, 0.2004 core read as 0.200 and passed a "<= 0.2" target.
    return round(res["cpu_us_per_msg"]["spark"] * res["rate_achieved_msg_s"] / 1e6, 4)


def _rest_detail(res: dict[str, Any]) -> str:
    """The windowed state the step carried (first and last read of the job's gauge), and the busiest
    Spark threads when profiled: what the figure was paying for."""
    parts = []
    rows = res.get("state_rows")
    if rows and None not in rows:
        parts.append(f"windowed state {rows[0]:,} -> {rows[1]:,} rows")
    busiest = res.get("cpu_profile_cores", {}).get("spark", {})
    if busiest:
        parts.append("busiest threads: " + ", ".join(f"{k} {v:.3f}" for k, v in list(busiest.items())[:4]))
    return "".join(f"; {p}" for p in parts)


def settled_figure(settled: dict[str, Any], ramp_10k: dict[str, Any]) -> dict[str, Any]:
    """Spark's cores at :data:`SETTLED_RATE` with 10,000 devices in state, after the ramps (JIT done)
    and before the soak, beside the same rate at the 10,000-device ramp's first step (JVM still
    compiling). After the soak the windowed flow still evicts the soak's state (:func:`after_soak_figure`):
    a cost of the soak's rate, not of 100 msg/s."""
    first = next((r for r in ramp_10k["steps"] if r["rate_target_msg_s"] == SETTLED_RATE), None)
    value = _cores(settled)
    fig: dict[str, Any] = {
        "name": f"Spark CPU (driver + JVM) at {SETTLED_RATE} msg/s, 10,000 devices in state, at rest "
        f"({settled['published']:,} readings over {SETTLED_S:.0f} s, after the ramps; "
        f"lost {settled['lost']}{_rest_detail(settled)})",
        "value": value,
        "unit": "core",
        "target": f"<= {SPARK_REST_TARGET_CORES} core",
        "met": value <= SPARK_REST_TARGET_CORES and settled["lost"] == 0,
    }
    if first is not None:
        fig |= {
            "baseline": _cores(first),
            "baseline_name": "same rate, the ramp's first step (JIT compiling)",
        }
    return fig


def after_soak_figure(res: dict[str, Any], soak_rate: int) -> dict[str, Any]:
    """The same rate right after the soak, reported, not judged: the windowed query then evicts the
    soak's state (with ``spark.dedup = "watermark"`` by reading all of its rate x 600 s
    deduplication keys in every batch; with ``buckets`` only the groups whose timer expired)."""
    return {
        "name": f"Spark CPU at {SETTLED_RATE} msg/s right after the soak at {soak_rate:,} msg/s "
        f"(its windowed state expiring; lost {res['lost']}{_rest_detail(res)})",
        "value": _cores(res),
        "unit": "core",
        "target": "report",
        "met": res["lost"] == 0,
    }
