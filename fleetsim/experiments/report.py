"""Assemble the report dict from the scores, and write ``report.json``, ``summary.md`` and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetsim.experiments import plots
from fleetsim.experiments.detection import AlertRow, DetectionReport, FaultInstance, IncidentRow, overall
from fleetsim.experiments.integrity import DeviceIntegrity, as_dicts, totals
from fleetsim.experiments.mapping import INTEGRITY_FAULTS
from fleetsim.experiments.scenario import Scenario
from fleetsim.experiments.stats import HOPS

MAX_ALERTS_IN_REPORT = 5000
"""Alerts listed in ``report.json`` (for the timeline plot); the counts always cover all."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Identity and clocks of one experiment run."""

    run_id: str
    sim_start: str
    """Simulated start instant (RFC 3339)."""
    sim_end: str
    wall_start: str
    """Wall-clock start of the run (RFC 3339)."""
    wall_end: str
    devices: int
    """Devices in the simulated fleet."""
    drained: bool
    """Whether the pipeline drained before the timeout."""
    drain_note: str
    """How the drain ended (``stable``, ``timeout``, ...)."""


def build_report(
    scenario: Scenario,
    info: RunInfo,
    planned: Sequence[dict[str, Any]],
    detection: DetectionReport,
    faults: Sequence[FaultInstance],
    alerts: Sequence[AlertRow],
    integrity_rows: Sequence[DeviceIntegrity],
    latency: dict[str, Any],
    pipeline: dict[str, Any],
    *,
    alert_detection: DetectionReport | None = None,
    incidents: Sequence[IncidentRow] = (),
    notifications: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The machine-readable report (``report.json``). ``detection`` is the primary score (incidents
    since issue 21); ``alert_detection`` the secondary per-alert-row score, without its fault list."""
    det = detection.to_dict()
    det["overall"] = overall(detection)
    det["notifications"] = notifications
    raw: dict[str, Any] | None = None
    if alert_detection is not None:
        raw = alert_detection.to_dict()
        raw["overall"] = overall(alert_detection)
        raw["faults"] = [
            {"device_id": f["device_id"], "kind": f["kind"], "detected": f["detected"], "ttd_s": f["ttd_s"]}
            for f in raw["faults"]
        ]
    return {
        "run_id": info.run_id,
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "file": str(scenario.path),
            "fleet_file": str(scenario.fleet_file),
            "scale": scenario.scale,
            "duration_s": scenario.duration_s,
            "speed": scenario.speed,
            "seed": scenario.seed,
            "grace_s": scenario.scoring.grace_s,
            "lead_s": scenario.scoring.lead_s,
            "stuck_window_s": scenario.scoring.stuck_window_s,
            "campaign": list(planned),
        },
        "run": {
            "sim_start": info.sim_start,
            "sim_end": info.sim_end,
            "wall_start": info.wall_start,
            "wall_end": info.wall_end,
            "devices": info.devices,
            "drained": info.drained,
            "drain_note": info.drain_note,
        },
        "detection": det,
        "alert_detection": raw,
        "incidents": [
            {
                "incident_id": i.incident_id,
                "device_id": i.device_id,
                "kind": i.kind,
                "measurement": i.measurement,
                "state": i.state,
                "opened_at": i.opened_at.isoformat(),
                "last_seen": i.last_seen.isoformat(),
                "n_alerts": i.n_alerts,
                "fault": i.fault,
            }
            for i in list(incidents)[:MAX_ALERTS_IN_REPORT]
        ],
        "integrity_faults": [
            {
                "device_id": f.device_id,
                "kind": f.kind,
                "start": f.start.isoformat(),
                "end": f.end.isoformat(),
                "counters": f.counters,
            }
            for f in faults
            if f.kind in {k.value for k in INTEGRITY_FAULTS}
        ],
        "integrity": {
            "totals": totals(integrity_rows),
            "devices": as_dicts(integrity_rows),
            "pipeline": pipeline,
        },
        "latency_ms": latency,
        "alerts": [
            {
                "device_id": a.device_id,
                "kind": a.kind,
                "measurement": a.measurement,
                "event_ts": a.event_ts.isoformat(),
                "detected_at": a.detected_at.isoformat(),
                "fault": a.fault,
            }
            for a in sorted(alerts, key=lambda a: a.event_ts)[:MAX_ALERTS_IN_REPORT]
        ],
    }


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _detection_section(det: dict[str, Any], sc: dict[str, Any]) -> list[str]:
    """The primary detection table: incidents (or alert rows for reports from before issue 21)."""
    ov = det["overall"]
    unit = det.get("unit", "alert")
    what = "incidents" if unit == "incident" else "alert rows"
    out = [
        "## Detection" + (" (incidents)" if unit == "incident" else ""),
        "",
        f"Overall: {ov['detected']}/{ov['injected']} detected, recall {_pct(ov['recall'])}, "
        f"precision {_pct(ov['precision'])}, false alarms {ov['false_alarms']} ({what}), "
        f"time to detect p50 {_fmt(ov['ttd_p50_s'])} s / p95 {_fmt(ov['ttd_p95_s'])} s.",
        "",
    ]
    if unit == "incident":
        out += [
            f"A fault is detected by an incident of its device, of an expected kind, whose span "
            f"overlaps [start − {sc['lead_s']:g} s, end + {sc['grace_s']:g} s]; precision and false "
            f"alarms count incidents ({det['total_alerts']} opened"
            + (
                f", {det['suppressed']} never opened: shorter than their rule's minimum duration"
                if det.get("suppressed")
                else ""
            )
            + ").",
            "",
        ]
    notif = det.get("notifications")
    if notif:
        ba = notif["by_action"]
        out += [
            f"**Notifications** an operator received during the run: {notif['total']} "
            f"({ba['opened']} opened, {ba['acknowledged']} acknowledged, {ba['resolved']} resolved), "
            f"{notif['for_false_alarms']} of them about false alarms.",
            "",
        ]
    out += [
        "| fault kind | injected | detected | missed | precision | recall | TTD p50 (s) | TTD p95 (s) "
        f"| wall latency p50 (s) | false alarms | true {what} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, ks in det["kinds"].items():
        out.append(
            f"| {k} | {ks['injected']} | {ks['detected']} | {ks['missed']} | {_pct(ks['precision'])} "
            f"| {_pct(ks['recall'])} | {_fmt(ks['ttd_p50_s'])} | {_fmt(ks['ttd_p95_s'])} "
            f"| {_fmt(ks['wall_p50_s'], 2)} | {ks['false_alarms']} | {ks['true_alerts']} |"
        )
        if ks.get("within_window") is not None:
            out.append(
                f"| ↳ stuck within {sc['stuck_window_s']:g} s | | {ks['within_window']} | | | | | | | | |"
            )
    for k, nd in (det.get("not_detectable") or {}).items():
        out.append(f"| {k} | {nd['injected']} | not detectable: {nd['reason']} | | | | | | | | |")
    if not det["kinds"] and not det.get("not_detectable"):
        out.append("| (no detection faults injected) | | | | | | | | | | |")
    if unit == "incident" and any(ks["true_alerts"] > ks["detected"] for ks in det["kinds"].values()):
        out += [
            "",
            "More true incidents than detected faults: one fault raised several incidents (e.g. a stuck "
            "sensor flat-lines every measurement, one incident per measurement), each notified.",
        ]
    if det["false_alarms"]:
        fa = ", ".join(f"{k}: {v}" for k, v in det["false_alarms"].items())
        out += ["", f"False alarms by alert kind ({what} no injected fault explains): {fa}."]
    if det["unscored"]:
        un = ", ".join(f"{k}: {v}" for k, v in det["unscored"].items())
        out += ["", f"Integrity faults injected (scored below, not as detections): {un}."]
    out.append("")
    return out


def summary_markdown(report: dict[str, Any]) -> str:
    """The human-readable ``summary.md``."""
    sc, run, det = report["scenario"], report["run"], report["detection"]
    out = [
        f"# Experiment {report['run_id']}: {sc['name']}",
        "",
        sc["description"] or "",
        "",
        f"- Scenario file: `{sc['file']}` (seed {sc['seed']}, speed {sc['speed']}, "
        f"{sc['duration_s']:g} s simulated, fleet ×{sc['scale']}: {run['devices']} devices)",
        f"- Simulated time: {run['sim_start']} → {run['sim_end']}",
        f"- Wall clock: {run['wall_start']} → {run['wall_end']}; pipeline drained: "
        f"{'yes' if run['drained'] else 'NO'} ({run['drain_note']})",
        f"- Matching: incidents (alert rows) meeting [start − {sc['lead_s']:g} s, end + {sc['grace_s']:g} s]"
        " (event time)",
        "",
        *_detection_section(det, sc),
    ]
    raw = report.get("alert_detection")
    if raw:
        rov = raw["overall"]
        out += [
            "### Raw alert rows (secondary)",
            "",
            f"Per `sensor_alerts` row, as scored before incidents: {raw['total_alerts']} alert rows, "
            f"{rov['detected']}/{rov['injected']} detected, recall {_pct(rov['recall'])}, "
            f"precision {_pct(rov['precision'])}, false alarm rows {rov['false_alarms']}.",
            "",
            "| fault kind | detected | precision | recall | TTD p50 (s) | false alarm rows |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k, ks in raw["kinds"].items():
            out.append(
                f"| {k} | {ks['detected']}/{ks['injected']} | {_pct(ks['precision'])} | {_pct(ks['recall'])} "
                f"| {_fmt(ks['ttd_p50_s'])} | {ks['false_alarms']} |"
            )
        if raw["false_alarms"]:
            fa = ", ".join(f"{k}: {v}" for k, v in raw["false_alarms"].items())
            out += ["", f"False alarm rows by alert kind: {fa}."]
        out.append("")
    t = report["integrity"]["totals"]
    out += [
        "",
        "## Data integrity (from seq)",
        "",
        "| made | in sensor_data | lost | edge overflow | edge dropout | edge shutdown | MQTT→Kafka "
        "| watermark | Kafka→table | unaccounted | dup sent | dup in Kafka | dup in table | late |",
        "|" + "---:|" * 14,
        "| "
        + " | ".join(
            _fmt(t[k])
            for k in (
                "made",
                "in_db",
                "lost",
                "dropped_overflow",
                "dropped_dropout",
                "dropped_shutdown",
                "lost_mqtt_kafka",
                "dropped_watermark",
                "lost_kafka_db",
                "unaccounted",
                "duplicated_sent",
                "duplicated_kafka",
                "duplicated_db",
                "late",
            )
        )
        + " |",
        "",
    ]
    bad = [r for r in report["integrity"]["devices"] if r["lost"] or r["duplicated_kafka"] or r["late"]]
    if bad:
        out += ["Devices with loss, duplicates or late readings:", ""]
        out += ["| device | made | lost | overflow | dropout | MQTT→Kafka | Kafka→table | dup Kafka | late |"]
        out += ["|---|" + "---:|" * 8]
        for r in bad[:50]:
            out.append(
                f"| {r['device_id']} | {r['made']} | {r['lost']} | {r['dropped_overflow']} "
                f"| {r['dropped_dropout']} "
                f"| {_fmt(r['lost_mqtt_kafka'])} | {_fmt(r['lost_kafka_db'])} "
                f"| {_fmt(r['duplicated_kafka'])} "
                f"| {r['late']} |"
            )
        out.append("")
    pipe = report["integrity"].get("pipeline") or {}
    if pipe:
        out += [f"Streaming job: {', '.join(f'{k} = {v}' for k, v in pipe.items())}.", ""]
    out += ["## Latency per hop (ms)", "", "| hop | n | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    for key, meaning in HOPS:
        s = report["latency_ms"].get(key)
        if s is None:
            out.append(f"| {meaning} | n/a (simulated clock is not wall time) | | | |")
        else:
            out.append(f"| {meaning} | {s['n']} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['max'])} |")
    out += [
        "",
        "## Plots",
        "",
        "![timeline](timeline.png)",
        "",
        "![detection latency](detection_latency.png)",
        "",
        "![integrity](integrity.png)",
        "",
    ]
    return "\n".join(out)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``report.json``, ``summary.md`` and the PNG plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = plots.render_all(report, out_dir)
    report = {**report, "plots": [p.name for p in paths]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out_dir / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
    return [out_dir / "report.json", out_dir / "summary.md", *paths]
