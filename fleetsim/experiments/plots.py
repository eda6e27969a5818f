"""PNG plots of a report (matplotlib, headless Agg backend). Input: the ``report.json`` dict."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 100
_COLORS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#17becf", "#7f7f7f",
)  # fmt: skip


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def timeline(report: dict[str, Any], path: Path, max_devices: int = 40) -> Path:
    """Injected faults (bars, hatched when missed), incidents (red spans, opened to last seen) and
    alerts (markers) per device over event time."""
    faults = report["detection"]["faults"] + report.get("integrity_faults", [])
    alerts = report.get("alerts", [])
    incidents = report.get("incidents", [])
    devices = sorted(
        {f["device_id"] for f in faults}
        | {a["device_id"] for a in alerts}
        | {i["device_id"] for i in incidents}
    )[:max_devices]
    row = {d: i for i, d in enumerate(devices)}
    kinds = sorted({f["kind"] for f in faults})
    akinds = sorted({a["kind"] for a in alerts})
    color = {k: _COLORS[i % len(_COLORS)] for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.28 * len(devices) + 1.8)))
    for f in faults:
        if f["device_id"] not in row:
            continue
        s, e = _ts(f["start"]), _ts(f["end"])
        width = max((e - s).total_seconds(), 1.0) / 86400.0
        missed = f.get("detected") is False
        ax.barh(
            row[f["device_id"]], width, left=mdates.date2num(s), height=0.6, color=color[f["kind"]],
            alpha=0.45 if missed else 0.8, hatch="//" if missed else None, edgecolor="black", linewidth=0.3,
        )  # fmt: skip
    labelled = False
    for inc in incidents:
        if inc["device_id"] not in row or inc.get("state") not in ("open", "acknowledged", "resolved"):
            continue
        y = row[inc["device_id"]] + 0.38
        x0, x1 = mdates.date2num(_ts(inc["opened_at"])), mdates.date2num(_ts(inc["last_seen"]))
        ax.plot([x0, max(x1, x0 + 2 / 86400)], [y, y], color="#d62728", linewidth=2.5, solid_capstyle="butt",
                label=None if labelled else "incident", zorder=4)  # fmt: skip
        labelled = True
    markers = "ov^sDP*XhH+x"
    for i, k in enumerate(akinds):
        pts = [
            (mdates.date2num(_ts(a["event_ts"])), row[a["device_id"]])
            for a in alerts
            if a["kind"] == k and a["device_id"] in row
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(
                xs, ys, marker=markers[i % len(markers)], s=22, color="black", label=f"alert: {k}", zorder=3
            )
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(facecolor=color[k], edgecolor="black", linewidth=0.3, label=f"fault: {k}") for k in kinds
    ]
    ax.set_yticks(range(len(devices)), devices, fontsize=7)
    ax.xaxis_date()
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("event time (UTC)")
    ax.set_title(f"Injected faults vs incidents and alerts — {report['scenario']['name']} (hatched: missed)")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def detection_latency(report: dict[str, Any], path: Path) -> Path:
    """Distribution of time-to-detect (event time) per fault kind."""
    by_kind: dict[str, list[float]] = {}
    for f in report["detection"]["faults"]:
        if f["ttd_s"] is not None:
            by_kind.setdefault(f["kind"], []).append(f["ttd_s"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if by_kind:
        names = sorted(by_kind)
        ax.boxplot([by_kind[k] for k in names], tick_labels=names, showmeans=True)
        for i, k in enumerate(names, start=1):
            ax.scatter([i] * len(by_kind[k]), by_kind[k], s=10, alpha=0.5, color=_COLORS[0])
    else:
        ax.text(0.5, 0.5, "no detected faults", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("time to detect (s, event time)")
    ax.set_title("Detection latency per fault kind")
    return _save(fig, path)


def integrity(report: dict[str, Any], path: Path, max_devices: int = 60) -> Path:
    """Per device: readings lost by stage, duplicated and late (stacked bars)."""
    rows = report["integrity"]["devices"]
    keyed = sorted(rows, key=lambda r: (-(r["lost"] + r["duplicated_db"] + r["late"]), r["device_id"]))
    rows = sorted(keyed[:max_devices], key=lambda r: r["device_id"])
    parts = (
        ("dropped_overflow", "edge: buffer overflow"),
        ("dropped_dropout", "edge: dropout"),
        ("dropped_shutdown", "edge: shutdown"),
        ("lost_mqtt_kafka", "MQTT -> Kafka"),
        ("dropped_watermark", "watermark"),
        ("lost_kafka_db", "Kafka -> sensor_data"),
        ("unaccounted", "unaccounted"),
        ("duplicated_kafka", "duplicated (Kafka)"),
        ("late", "late (stored)"),
    )
    fig, ax = plt.subplots(figsize=(11, 4.8))
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for i, (key, label) in enumerate(parts):
        vals = [float(r.get(key) or 0) for r in rows]
        if any(vals):
            ax.bar(x, vals, bottom=bottom, label=label, color=_COLORS[i % len(_COLORS)])
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    if not any(bottom):
        ax.text(
            0.5, 0.5, "no loss, duplicates or late readings", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xticks(x, [r["device_id"] for r in rows], rotation=75, fontsize=7)
    ax.set_ylabel("readings")
    ax.set_title("Integrity per device (seq accounting)")
    if any(bottom):
        ax.legend(fontsize=7)
    return _save(fig, path)


def render_all(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every plot into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        timeline(report, out_dir / "timeline.png"),
        detection_latency(report, out_dir / "detection_latency.png"),
        integrity(report, out_dir / "integrity.png"),
    ]
