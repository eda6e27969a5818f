"""Detection scoring: injected faults (ground truth) against ``sensor_alerts``. Pure functions.

Matching rule (documented in ``docs/experiments.md``): an alert detects a fault instance when it
is on the same device, its kind (and measurement) is one :mod:`fleetsim.experiments.mapping`
expects for the fault's kind, and its event time is within ``[start - lead_s, end + grace_s]``
-- or the alert's own ``fault`` column carries the fault's code and it is not before
``start - lead_s``. Each alert is assigned, per fault kind, to the latest matching instance that
started at or before it (else the earliest); an alert that matches no instance is a false alarm.

- time to detect (event time) = first matching alert's ``event_ts`` - fault start, clamped at 0;
- detection latency (wall clock) = that alert's ``detected_at`` - the bridge receive time of the
  reading it was raised on (``evidence_ts``): how long the pipeline took to turn the evidence
  into an alert, independent of the simulation speed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleetsim.experiments.mapping import EXPECTED, alert_matches_kind, expectation, explains
from fleetsim.experiments.stats import percentile


@dataclass(frozen=True, slots=True)
class FaultInstance:
    """One fault that was active on one device (a ledger ``fault`` record)."""

    device_id: str
    kind: str
    """Contract fault code."""
    start: datetime
    """Simulated start instant (aware UTC)."""
    end: datetime
    """Simulated end instant (aware UTC)."""
    params: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    """Effects counted by the simulator (``buffered``, ``dropped_overflow``, ...)."""
    truncated: bool = False
    """The run ended while it was active."""


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One ``sensor_alerts`` row (the columns the scorer needs)."""

    device_id: str
    kind: str
    measurement: str
    event_ts: datetime
    """Event time of the alert (aware UTC)."""
    detected_at: datetime
    """Wall-clock instant the streaming job wrote it."""
    fault: str | None = None
    """Ground-truth fault code carried by the triggering reading."""
    evidence_ts: datetime | None = None
    """Bridge receive time (wall clock) of the triggering reading, when known."""


@dataclass(slots=True)
class Outcome:
    """What happened to one fault instance."""

    fault: FaultInstance
    detected: bool = False
    first_alert: datetime | None = None
    """Event time of the first matching alert."""
    ttd_s: float | None = None
    """Time to detect in simulated seconds (event time)."""
    wall_latency_s: float | None = None
    """Wall-clock detection latency in seconds, when the evidence time is known."""
    alerts: int = 0
    """Matching alerts assigned to it."""


@dataclass(slots=True)
class KindScore:
    """Scores of one fault kind."""

    kind: str
    injected: int = 0
    detected: int = 0
    missed: int = 0
    true_alerts: int = 0
    """Alerts of the expected kinds assigned to an instance of this kind."""
    false_alarms: int = 0
    """Alerts of the expected kinds explained by no fault at all."""
    precision: float | None = None
    """true_alerts / (true_alerts + false_alarms); None without any such alert."""
    recall: float | None = None
    """detected / injected; None when nothing was injected."""
    ttd_p50_s: float | None = None
    ttd_p95_s: float | None = None
    ttd_max_s: float | None = None
    wall_p50_s: float | None = None
    wall_p95_s: float | None = None
    within_window: int | None = None
    """Instances detected within the scenario's ``stuck_window_s`` (stuck only)."""


@dataclass(slots=True)
class DetectionReport:
    kinds: dict[str, KindScore]
    outcomes: list[Outcome]
    false_alarms: dict[str, int]
    """Unexplained alerts by alert kind (all kinds, also those no fault expects)."""
    total_alerts: int
    unscored: dict[str, int]
    """Integrity and unscored faults injected, by kind (not detection targets)."""
    matched_alerts: int = 0
    """Alerts that detect at least one fault."""
    consequence_alerts: int = 0
    """Alerts explained as a consequence of a fault (not detections, not false alarms)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kinds": {k: _asdict(v) for k, v in sorted(self.kinds.items())},
            "false_alarms": dict(sorted(self.false_alarms.items())),
            "false_alarms_total": sum(self.false_alarms.values()),
            "total_alerts": self.total_alerts,
            "matched_alerts": self.matched_alerts,
            "consequence_alerts": self.consequence_alerts,
            "unscored": dict(sorted(self.unscored.items())),
            "faults": [
                {
                    "device_id": o.fault.device_id,
                    "kind": o.fault.kind,
                    "start": o.fault.start.isoformat(),
                    "end": o.fault.end.isoformat(),
                    "params": o.fault.params,
                    "counters": o.fault.counters,
                    "truncated": o.fault.truncated,
                    "detected": o.detected,
                    "first_alert": o.first_alert.isoformat() if o.first_alert else None,
                    "ttd_s": o.ttd_s,
                    "wall_latency_s": o.wall_latency_s,
                    "alerts": o.alerts,
                }
                for o in self.outcomes
            ],
        }


def _asdict(ks: KindScore) -> dict[str, Any]:
    return {name: getattr(ks, name) for name in KindScore.__slots__}


def _best(cands: list[Outcome], ts: datetime) -> Outcome:
    before = [o for o in cands if o.fault.start <= ts]
    if before:
        return max(before, key=lambda o: o.fault.start)
    return min(cands, key=lambda o: o.fault.start)


def score_detection(
    faults: Iterable[FaultInstance],
    alerts: Sequence[AlertRow],
    *,
    grace_s: float,
    lead_s: float = 0.0,
    stuck_window_s: float | None = None,
) -> DetectionReport:
    """Score alerts against the faults (see the module docstring for the rules)."""
    grace, lead = timedelta(seconds=grace_s), timedelta(seconds=lead_s)
    outcomes: list[Outcome] = []
    unscored: dict[str, int] = {}
    by_device: dict[str, list[Outcome]] = {}
    for f in faults:
        if expectation(f.kind) is None:
            unscored[f.kind] = unscored.get(f.kind, 0) + 1
            continue
        o = Outcome(f)
        outcomes.append(o)
        by_device.setdefault(f.device_id, []).append(o)
    kinds: dict[str, KindScore] = {o.fault.kind: KindScore(o.fault.kind) for o in outcomes}
    false_alarms: dict[str, int] = {}
    explained: list[tuple[AlertRow, set[str]]] = []
    consequences = 0
    for a in sorted(alerts, key=lambda x: x.event_ts):
        matched_kinds: set[str] = set()
        per_kind: dict[str, list[Outcome]] = {}
        for o in by_device.get(a.device_id, ()):
            f = o.fault
            if not alert_matches_kind(f.kind, a.kind, a.measurement):
                continue
            in_window = f.start - lead <= a.event_ts <= f.end + grace
            by_code = a.fault == f.kind and a.event_ts >= f.start - lead
            if in_window or by_code:
                per_kind.setdefault(f.kind, []).append(o)
        for kind, cands in per_kind.items():
            o = _best(cands, a.event_ts)
            o.alerts += 1
            matched_kinds.add(kind)
            if not o.detected:
                o.detected = True
                o.first_alert = a.event_ts
                o.ttd_s = max(0.0, (a.event_ts - o.fault.start).total_seconds())
                if a.evidence_ts is not None:
                    o.wall_latency_s = max(0.0, (a.detected_at - a.evidence_ts).total_seconds())
        if not matched_kinds:
            if any(
                explains(o.fault.kind, a.kind) and o.fault.start - lead <= a.event_ts <= o.fault.end + grace
                for o in by_device.get(a.device_id, ())
            ):
                consequences += 1
                matched_kinds.add("")  # explained: neither a detection nor a false alarm
            else:
                false_alarms[a.kind] = false_alarms.get(a.kind, 0) + 1
        explained.append((a, matched_kinds))
    for kind, ks in kinds.items():
        mine = [o for o in outcomes if o.fault.kind == kind]
        ks.injected = len(mine)
        ks.detected = sum(o.detected for o in mine)
        ks.missed = ks.injected - ks.detected
        ks.recall = ks.detected / ks.injected if ks.injected else None
        for a, matched in explained:
            if alert_matches_kind(kind, a.kind, a.measurement):
                if kind in matched:
                    ks.true_alerts += 1
                elif not matched:
                    ks.false_alarms += 1
        denom = ks.true_alerts + ks.false_alarms
        ks.precision = ks.true_alerts / denom if denom else None
        ttd = [o.ttd_s for o in mine if o.ttd_s is not None]
        wall = [o.wall_latency_s for o in mine if o.wall_latency_s is not None]
        ks.ttd_p50_s, ks.ttd_p95_s = percentile(ttd, 50), percentile(ttd, 95)
        ks.ttd_max_s = max(ttd) if ttd else None
        ks.wall_p50_s, ks.wall_p95_s = percentile(wall, 50), percentile(wall, 95)
        if kind == "stuck" and stuck_window_s is not None:
            ks.within_window = sum(1 for t in ttd if t <= stuck_window_s)
    n_matched = sum(1 for _, m in explained if m - {""})
    return DetectionReport(kinds, outcomes, false_alarms, len(alerts), unscored, n_matched, consequences)


def overall(report: DetectionReport) -> dict[str, float | int | None]:
    """Fleet-level totals over the detection kinds (micro-averaged)."""
    ks = list(report.kinds.values())
    injected = sum(k.injected for k in ks)
    detected = sum(k.detected for k in ks)
    expected_alerts = {a for k in EXPECTED.values() for a in k.alert_kinds}
    true_alerts = report.matched_alerts
    false_alarms = sum(v for k, v in report.false_alarms.items() if k in expected_alerts)
    ttd = [o.ttd_s for o in report.outcomes if o.ttd_s is not None]
    return {
        "injected": injected,
        "detected": detected,
        "missed": injected - detected,
        "recall": detected / injected if injected else None,
        "precision": true_alerts / (true_alerts + false_alarms) if true_alerts + false_alarms else None,
        "false_alarms": sum(report.false_alarms.values()),
        "ttd_p50_s": percentile(ttd, 50),
        "ttd_p95_s": percentile(ttd, 95),
    }
