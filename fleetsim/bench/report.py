"""Render ``BENCHMARKS.md`` from stored results.

A benchmark's ``run()`` returns a dict. The harness understands this shape (see bench/README.md)::

    {"title": "Simulator",
     "method": "one paragraph: what is measured, how many runs, what the baseline is",
     "figures": [{"name": ..., "value": 27100.0, "unit": "msg/s", "baseline_name": "bare paho loop",
                  "baseline": 30500.0, "ratio": 0.89, "target": ">= 25000 msg/s", "met": true,
                  "runs": [...]}],
     "tables": [{"title": "CPU per stage", "columns": ["stage", ...], "rows": [[...], ...]}],
     "notes": ["..."]}

Anything else in the dict is shown as a flat key/value list, so a benchmark is never hidden.
"""

from __future__ import annotations

from typing import Any

HEADER = """# Benchmarks

Measured by `make bench` (`fleetsim bench`), which starts a dedicated Mosquitto + Kafka + PostgreSQL
stack on free loopback ports and runs every `bench/bench_<name>.py` in its own time-bounded process.
Raw figures: `bench/results/<timestamp>.json`. Every figure is a median of several runs, with its
in-run baseline or ceiling measured side by side in the same run; targets are from the issues and
are reported, never asserted in tests. Misses are listed as misses.

"""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        # Below 1, a fourth digit: 0.2004 core must not read as the 0.2 it missed.
        return f"{value:.3g}" if abs(value) >= 1 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "–"
    return str(value)


def _is_point(value: Any) -> bool:
    """A short list of numbers (None for an unknown one), e.g. ``[t, p95]``."""
    return (
        isinstance(value, list)
        and 0 < len(value) <= 3
        and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in value)
    )


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        out.append((prefix, ", ".join(_fmt(v) for v in value)))
    elif isinstance(value, list) and value and all(_is_point(v) for v in value):
        # A series of (time, figure) points: one row, not one per number.
        out.append((prefix, ", ".join(" / ".join(_fmt(x) for x in v) for v in value)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, value))


def _met(fig: dict[str, Any]) -> str:
    met = fig.get("met")
    if met is None:
        return ""
    return "met" if met else "**missed**"


def _run_label(outcome: dict[str, Any]) -> str:
    """``2026-12-05, load 0.82`` (+ ``quick``) from the result file's stamp and the load guard."""
    stamp = str(outcome.get("file", ""))
    day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}" if len(stamp) >= 8 and stamp[:8].isdigit() else "?"
    load = outcome.get("load_before")
    parts = [day] + ([f"load {load}"] if load is not None else [])
    if outcome.get("quick"):
        parts.append("quick")
    return ", ".join(parts)


def render_bench(name: str, outcome: dict[str, Any]) -> str:
    result = outcome.get("result") or {}
    title = result.get("title") or name
    lines = [f"## {title} (`bench_{name}.py`)", ""]
    lines.append(
        f"Status: {outcome.get('status')}{' (quick run)' if outcome.get('quick') else ''}, "
        f"{outcome.get('duration_s')} s, from `bench/results/{outcome.get('file')}`"
        + (
            f"; 1-min load average {outcome['load_before']} before, {outcome['load_after']} after (2 cores)."
            if outcome.get("load_before") is not None
            else "."
        )
    )
    lines.append("")
    if outcome.get("quiet") is False:
        lines += [
            f"**Taken on a busy machine (1-min load average {outcome.get('load_before')} before the "
            "run): not a measurement.** Rerun it alone.",
            "",
        ]
    if outcome.get("status") != "ok":
        lines += ["```", str(outcome.get("error", ""))[-2000:], "```", ""]
        return "\n".join(lines)
    if result.get("method"):
        lines += [str(result["method"]), ""]
    figures = result.get("figures") or []
    if figures:
        lines += [
            "| figure | value | baseline / ceiling | ratio | target | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for fig in figures:
            unit = fig.get("unit", "")
            base = fig.get("baseline")
            base_s = f"{_fmt(base)} {unit} ({fig.get('baseline_name', '')})" if base is not None else "–"
            value_s = f"{_fmt(fig.get('value'))} {unit}"
            lines.append(
                f"| {fig.get('name')} | {value_s} | {base_s} | {_fmt(fig.get('ratio'))} "
                f"| {fig.get('target', '')} | {_met(fig)} |"
            )
        lines.append("")
    for table in result.get("tables") or []:
        cols = [str(c) for c in table.get("columns", [])]
        lines += [f"**{table.get('title', '')}**", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "---|" * len(cols))
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.get("rows", [])]
        lines.append("")
    rest = {k: v for k, v in result.items() if k not in {"title", "method", "figures", "tables", "notes"}}
    if rest:
        flat: list[tuple[str, Any]] = []
        _flatten("", rest, flat)
        lines += ["<details><summary>all figures</summary>", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in flat]
        lines += ["", "</details>", ""]
    for note in result.get("notes") or []:
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    return "\n".join(lines)


def render(latest: dict[str, dict[str, Any]], analysis: str = "") -> str:
    """The whole BENCHMARKS.md from the newest outcome of each benchmark; ``analysis`` (the
    hand-written ``bench/ANALYSIS.md``: profiles, fixes, what remains) follows the targets."""
    parts = [HEADER]
    machines = {str(o.get("machine")) for o in latest.values() if o.get("machine")}
    if latest:
        machine = next(iter(latest.values())).get("machine", {})
        parts.append(
            "Machine: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in machine.items())
            + (" (results from more than one machine below)" if len(machines) > 1 else "")
            + "\n"
        )
    summary = [
        "## Targets",
        "",
        "Each figure next to its baseline or ceiling measured in the same run, the issue's target, the",
        "verdict, and the run it comes from (a quick run is a smoke check: fewer, shorter rounds).",
        "",
        "| benchmark | figure | value | baseline / ceiling, same run | target | verdict | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, outcome in latest.items():
        run = _run_label(outcome)
        for fig in (outcome.get("result") or {}).get("figures") or []:
            if fig.get("target"):
                unit = fig.get("unit", "")
                base = fig.get("baseline")
                base_s = f"{_fmt(base)} {unit} ({fig.get('baseline_name', '')})" if base is not None else "–"
                summary.append(
                    f"| {name} | {fig.get('name')} | {_fmt(fig.get('value'))} {unit} | {base_s} "
                    f"| {fig.get('target')} | {_met(fig)} | {run} |"
                )
        if outcome.get("status") != "ok":
            summary.append(
                f"| {name} | (did not finish: {outcome.get('status')}) | – | – | – | **missed** | {run} |"
            )
    parts.append("\n".join(summary) + "\n")
    if analysis.strip():
        parts.append(analysis.strip() + "\n")
    for name, outcome in latest.items():
        parts.append(render_bench(name, outcome))
    return "\n".join(parts).rstrip() + "\n"
