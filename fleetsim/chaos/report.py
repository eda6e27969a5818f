"""A campaign's report: ``report.json``, ``summary.md`` and ``timeline.png`` (faults against
throughput and latency). Input: the report dict :mod:`.runner` builds."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

_TARGET_ORDER = (
    "devices",
    "mqtt-sessions",
    "mqtt-link",
    "mosquitto",
    "bridge",
    "kafka-link",
    "kafka",
    "stream",
    "postgres-backends",
    "postgres",
)
_KIND_COLORS = {
    "kill": "#e15759",
    "pause": "#f28e2b",
    "restart": "#4e79a7",
    "link": "#76b7b2",
    "pgterm": "#b07aa1",
    "storm": "#edc948",
    "device": "#59a14f",
}


def verdict_line(report: dict[str, Any]) -> str:
    c, a, al = report["checker"], report["aggregates"], report["alerts"]
    return (
        f"{'PASSED' if report['passed'] else 'FAILED'}: {report['schedule']['faults']} faults "
        f"({report['schedule']['overlapping']} overlapping); acked {c['acked']}, stored {c['stored']}, "
        f"lost {c['lost']}, duplicated {c['dup']}, unexpected {c['unexpected']}; aggregates "
        f"{'exact' if a['exact'] else 'NOT exact'} ({a['matched']}/{a['windows']} windows, "
        f"{a['missing']} missing, {a['extra']} extra, {a['mismatched']} differ); device-fault alerts "
        f"{al['found']}/{al['injected']}"
    )


def summary_markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    lines = [
        f"# Chaos campaign {report['run_id']}",
        "",
        f"**{verdict_line(report)}**",
        "",
        f"- seed {o['seed']}, {o['duration_s']:g} s at {o['rate']:g} msg/s over {o['devices']} devices, "
        f"fault kinds: {', '.join(o['kinds'])}",
        f"- wall clock {report['wall_start']} .. {report['wall_end']}; load average at the end "
        f"{report.get('loadavg', '?')}",
        f"- drained {report['drain_s']:g} s after the load stopped; unplanned restarts "
        f"{len(report['unplanned_restarts'])}; nemesis errors {len(report['nemesis_errors'])}",
        f"- stored rows per second (raw query): mean {report['throughput']['stored_mean']:g}, "
        f"event-to-row latency p95 of the batches: median {report['latency']['p95_median_ms']:g} ms, "
        f"max {report['latency']['p95_max_ms']:g} ms",
        "",
        "| # | at (s) | for (s) | fault | outcome |",
        "|---|---|---|---|---|",
    ]
    by_fault: dict[int, list[dict[str, Any]]] = {}
    for e in report["events"]:
        by_fault.setdefault(e["fault"], []).append(e)
    for i, f in enumerate(report["schedule"]["faults_list"]):
        evs = by_fault.get(i, [])
        out = "; ".join(
            f"{e['phase']} @{e['t']:g}"
            + "".join(f" {k}={v}" for k, v in e.items() if k not in ("fault", "t", "phase", "label"))
            for e in evs
        )
        label = f"{f['kind']} {f['target']}" + "".join(f" {k}={v}" for k, v in f["params"].items())
        lines.append(f"| {i} | {f['at_s']:g} | {f['duration_s']:g} | {label} | {out or 'not run'} |")
    if report["unplanned_restarts"]:
        lines += ["", "Unplanned restarts (a component died outside any fault):", ""]
        lines += [
            f"- t={u['t']} s {u['component']} (exit {u.get('exit_code')})"
            for u in report["unplanned_restarts"]
        ]
    if report["nemesis_errors"]:
        lines += ["", "Nemesis errors:", ""] + [f"- {e}" for e in report["nemesis_errors"]]
    if report["checker"]["lost"] or report["checker"]["dup"] or report["checker"]["unexpected"]:
        lines += ["", f"Checker detail: {report['checker_summary']}"]
    return "\n".join(lines) + "\n"


def timeline_png(report: dict[str, Any], path: Path) -> Path:
    """Three panels over campaign time: fault spans per target, throughput (acked by the broker,
    stored by the raw query), and the raw batches' event-to-row latency (p50/p95)."""
    # matplotlib costs ~0.5 s to import; only the report's PNG needs it.
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    faults = report["schedule"]["faults_list"]
    targets = [t for t in _TARGET_ORDER if any(f["target"] == t for f in faults)]
    row = {t: i for i, t in enumerate(targets)}
    fig, (ax0, ax1, ax2) = plt.subplots(
        3, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [max(2, len(targets)) * 0.5, 2, 2]}
    )
    for f in faults:
        width = max(f["duration_s"], 0.8)
        ax0.barh(
            row[f["target"]],
            width,
            left=f["at_s"],
            height=0.6,
            color=_KIND_COLORS[f["kind"]],
            edgecolor="black",
            linewidth=0.3,
        )
    ax0.set_yticks(range(len(targets)), targets)
    ax0.invert_yaxis()
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c)
        for k, c in _KIND_COLORS.items()
        if k in report["options"]["kinds"]
    ]
    ax0.legend(
        handles,
        [k for k in _KIND_COLORS if k in report["options"]["kinds"]],
        ncol=7,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, 1.35),
    )
    wrapped = textwrap.fill(f"{report['run_id']}: {verdict_line(report)}", 150)
    ax0.set_title(wrapped, fontsize=8, pad=30, color="#1a7f37" if report["passed"] else "#d62728")
    s = report["series"]
    ax1.plot(s["acked_t"], s["acked_rate"], label="acked by the broker (msg/s)", lw=0.9)
    ax1.step(s["stored_t"], s["stored_rate"], where="pre", label="stored by the raw query (rows/s)", lw=0.9)
    ax1.set_ylabel("msg/s")
    ax1.legend(fontsize=8, loc="upper right")
    ax2.plot(s["stored_t"], s["p95_ms"], ".-", label="p95 of the batch", lw=0.8, ms=3, color="#e15759")
    ax2.plot(s["stored_t"], s["p50_ms"], ".-", label="p50 of the batch", lw=0.8, ms=3, color="#4e79a7")
    ax2.set_yscale("log")
    ax2.set_ylabel("event-to-row latency (ms)")
    ax2.set_xlabel("seconds from the start of the load")
    ax2.legend(fontsize=8, loc="upper right")
    for ax in (ax0, ax1, ax2):
        for f in faults:
            if f["kind"] in ("kill", "pause", "restart", "link"):
                ax.axvspan(f["at_s"], f["at_s"] + f["duration_s"], color=_KIND_COLORS[f["kind"]], alpha=0.06)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "summary.md",
        "png": out_dir / "timeline.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(summary_markdown(report))
    timeline_png(report, paths["png"])
    return paths
