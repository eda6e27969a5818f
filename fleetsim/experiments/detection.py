"""Detection scoring: injected faults (ground truth) against incidents and ``sensor_alerts``. Pure.

The primary score is per **incident** (:func:`score_incidents`): what an operator is told about,
one detection per injected fault. The per-alert score (:func:`score_detection`, one row per
reading) is kept as a secondary figure.

Alert matching rule (documented in ``docs/experiments.md``): an alert detects a fault instance when it
is on the same device, its kind (and measurement) is one :mod:`fleetsim.experiments.mapping`
expects for the fault's kind, and its event time is within ``[start - lead_s, end + grace_s]``
-- or the alert's own ``fault`` column carries the fault's code and it is not before
``start - lead_s``. Each alert is assigned, per fault kind, to the latest matching instance that
started at or before it (else the earliest); an alert that matches no instance is a false alarm.
A ``clock_skew`` fault's window is read in its device's own clock (widened by ``offset_s``): the
alert and incident it raises carry the skewed readings' event time.

- time to detect (event time) = first matching alert's ``event_ts`` (back in simulated time for a
  skewed clock) - fault start, clamped at 0;
- detection latency (wall clock) = that alert's ``detected_at`` - the bridge receive time of the
  reading it was raised on (``evidence_ts``): how long the pipeline took to turn the evidence
  into an alert, independent of the simulation speed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleetsim.experiments.mapping import (
    EXPECTED,
    alert_matches_kind,
    expectation,
    explains,
    not_detectable_reason,
)
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


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One ``incidents`` row that reached ``open`` (the columns the scorer needs)."""

    incident_id: int
    device_id: str
    kind: str
    measurement: str
    opened_at: datetime
    """Event time of its first alert (aware UTC)."""
    last_seen: datetime
    """Event time of its last alert (or reading beyond the clear bound)."""
    n_alerts: int = 1
    min_duration_s: float = 0.0
    """The rule's minimum duration: the incident opened (was notified) this long after ``opened_at``."""
    fault: str | None = None
    """Ground-truth fault code of its first alert."""
    opened_wall: datetime | None = None
    """Wall-clock instant of its ``opened`` event (when the notification was queued)."""
    evidence_ts: datetime | None = None
    """Bridge receive time of the reading that opened it, when known."""
    state: str = "open"


OPENED_STATES = frozenset({"open", "acknowledged", "resolved"})
"""Incident states that were shown and notified (``pending``/``expired`` never were)."""


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
    """Matching alerts (or incidents, when scoring incidents) assigned to it."""
    incident_id: int | None = None
    """The first incident that detected it (incident scoring)."""


@dataclass(slots=True)
class KindScore:
    """Scores of one fault kind."""

    kind: str
    injected: int = 0
    detected: int = 0
    missed: int = 0
    true_alerts: int = 0
    """Alerts (incidents) of the expected kinds assigned to an instance of this kind."""
    false_alarms: int = 0
    """Alerts (incidents) of the expected kinds explained by no fault at all."""
    precision: float | None = None
    """true_alerts / (true_alerts + false_alarms); None without any such alert (incident)."""
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
    unit: str = "alert"
    """What was scored: ``alert`` (sensor_alerts rows) or ``incident``."""
    not_detectable: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Injected kinds the monitoring cannot detect: ``{kind: {"injected": n, "reason": ...}}``."""
    suppressed: int = 0
    """Incidents that never opened (``pending``/``expired``: shorter than the rule's minimum)."""
    false_ids: list[int] = field(default_factory=list)
    """Incident ids scored as false alarms (incident scoring)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "not_detectable": dict(sorted(self.not_detectable.items())),
            "kinds": {k: _asdict(v) for k, v in sorted(self.kinds.items())},
            "false_alarms": dict(sorted(self.false_alarms.items())),
            "false_alarms_total": sum(self.false_alarms.values()),
            "total_alerts": self.total_alerts,
            "matched_alerts": self.matched_alerts,
            "consequence_alerts": self.consequence_alerts,
            "unscored": dict(sorted(self.unscored.items())),
            "suppressed": self.suppressed,
            "false_incident_ids": self.false_ids[:1000],
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
                    "incident_id": o.incident_id,
                }
                for o in self.outcomes
            ],
        }


def _asdict(ks: KindScore) -> dict[str, Any]:
    return {name: getattr(ks, name) for name in KindScore.__slots__}


def _clock_offset(f: FaultInstance) -> timedelta:
    """How far the device's own clock is off during the fault: a skewed clock stamps its readings,
    and so the alerts and incidents they raise, ``offset_s`` away from the simulated time."""
    return timedelta(seconds=f.params.get("offset_s", 0.0)) if f.kind == "clock_skew" else timedelta()


def _window(f: FaultInstance, lead: timedelta, grace: timedelta) -> tuple[datetime, datetime]:
    """The fault's span in the event time its device's rows carry: ``[start - lead, end + grace]``,
    widened by a skewed clock's offset (a clock 5 min behind raises its clock_skew alert with an
    event time 5 min before the fault started)."""
    off = _clock_offset(f)
    return f.start - lead + min(off, timedelta()), f.end + grace + max(off, timedelta())


def _overlaps(f: FaultInstance, lead: timedelta, grace: timedelta, first: datetime, last: datetime) -> bool:
    """``[first, last]`` (an alert's instant, an incident's span) meets the fault's :func:`_window`."""
    lo, hi = _window(f, lead, grace)
    return first <= hi and last >= lo


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
    outcomes, by_device, unscored, not_detectable = _instances(faults)
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
            in_window = _overlaps(f, lead, grace, a.event_ts, a.event_ts)
            by_code = a.fault == f.kind and a.event_ts >= _window(f, lead, grace)[0]
            if in_window or by_code:
                per_kind.setdefault(f.kind, []).append(o)
        for kind, cands in per_kind.items():
            o = _best(cands, a.event_ts)
            o.alerts += 1
            matched_kinds.add(kind)
            if not o.detected:
                o.detected = True
                o.first_alert = a.event_ts
                true_ts = a.event_ts - _clock_offset(o.fault)
                o.ttd_s = max(0.0, (true_ts - o.fault.start).total_seconds())
                if a.evidence_ts is not None:
                    o.wall_latency_s = max(0.0, (a.detected_at - a.evidence_ts).total_seconds())
        if not matched_kinds:
            if any(
                explains(o.fault.kind, a.kind) and _overlaps(o.fault, lead, grace, a.event_ts, a.event_ts)
                for o in by_device.get(a.device_id, ())
            ):
                consequences += 1
                matched_kinds.add("")  # explained: neither a detection nor a false alarm
            else:
                false_alarms[a.kind] = false_alarms.get(a.kind, 0) + 1
        explained.append((a, matched_kinds))
    _kind_scores(kinds, outcomes, [(a.kind, a.measurement, m) for a, m in explained], stuck_window_s)
    n_matched = sum(1 for _, m in explained if m - {""})
    return DetectionReport(
        kinds, outcomes, false_alarms, len(alerts), unscored, n_matched, consequences, "alert", not_detectable
    )


def _key(f: FaultInstance) -> tuple[str, str, datetime]:
    return f.device_id, f.kind, f.start


def _instances(
    faults: Iterable[FaultInstance],
) -> tuple[list[Outcome], dict[str, list[Outcome]], dict[str, int], dict[str, dict[str, Any]]]:
    """Detection instances (and per device), integrity faults by kind, not-detectable kinds."""
    outcomes: list[Outcome] = []
    unscored: dict[str, int] = {}
    not_detectable: dict[str, dict[str, Any]] = {}
    by_device: dict[str, list[Outcome]] = {}
    for f in faults:
        if expectation(f.kind) is None:
            reason = not_detectable_reason(f.kind)
            if reason is not None:
                nd = not_detectable.setdefault(f.kind, {"injected": 0, "reason": reason})
                nd["injected"] += 1
            else:
                unscored[f.kind] = unscored.get(f.kind, 0) + 1
            continue
        o = Outcome(f)
        outcomes.append(o)
        by_device.setdefault(f.device_id, []).append(o)
    return outcomes, by_device, unscored, not_detectable


def score_incidents(
    faults: Iterable[FaultInstance],
    incidents: Sequence[IncidentRow],
    *,
    grace_s: float,
    lead_s: float = 0.0,
    stuck_window_s: float | None = None,
    alerts: DetectionReport | None = None,
) -> DetectionReport:
    """Score incidents against the faults: one detection per injected fault is an incident.

    An incident **detects** a fault instance when it is on the same device, its kind (and
    measurement) is one the fault's kind expects, and its span ``[opened_at, last_seen]`` overlaps
    ``[start - lead_s, end + grace_s]`` -- or its ``fault`` column carries the fault's code and it
    was still seen at ``start - lead_s`` or later. An incident still open when a second fault of
    the same kind starts on that device detects both (the operator already has it; no new
    notification). An incident that detects nothing and that no fault explains as a consequence
    is a **false alarm**; precision counts incidents (each once in the overall figure).

    Time to detect = the instant the incident opened in event time (``opened_at`` +
    ``min_duration_s``) - fault start, clamped at 0. For an incident that was already open before
    the fault's window, the first matching raw alert of ``alerts`` (the per-alert report) stands in.
    Wall latency = the ``opened`` event's wall-clock instant - the bridge receive time of the
    reading that opened it.
    """
    grace, lead = timedelta(seconds=grace_s), timedelta(seconds=lead_s)
    outcomes, by_device, unscored, not_detectable = _instances(faults)
    kinds: dict[str, KindScore] = {o.fault.kind: KindScore(o.fault.kind) for o in outcomes}
    raw_first = {_key(o.fault): o for o in alerts.outcomes} if alerts is not None else {}
    false_alarms: dict[str, int] = {}
    false_ids: list[int] = []
    explained: list[tuple[IncidentRow, set[str]]] = []
    consequences = 0
    shown = [i for i in incidents if i.state in OPENED_STATES]
    for inc in sorted(shown, key=lambda x: (x.opened_at, x.incident_id)):
        matched_kinds: set[str] = set()
        opened = inc.opened_at + timedelta(seconds=inc.min_duration_s)
        for o in by_device.get(inc.device_id, ()):
            f = o.fault
            if not alert_matches_kind(f.kind, inc.kind, inc.measurement):
                continue
            lo = _window(f, lead, grace)[0]
            overlaps = _overlaps(f, lead, grace, inc.opened_at, inc.last_seen)
            by_code = inc.fault == f.kind and inc.last_seen >= lo
            if not (overlaps or by_code):
                continue
            o.alerts += 1
            matched_kinds.add(f.kind)
            if o.detected:
                continue
            o.detected = True
            o.incident_id = inc.incident_id
            if opened >= lo:
                o.first_alert = opened
                o.ttd_s = max(0.0, (opened - _clock_offset(f) - f.start).total_seconds())
                if inc.opened_wall is not None and inc.evidence_ts is not None:
                    o.wall_latency_s = max(0.0, (inc.opened_wall - inc.evidence_ts).total_seconds())
            else:  # opened before this fault: its first raw alert is when the operator could tell
                raw = raw_first.get(_key(f))
                o.first_alert = raw.first_alert if raw is not None else None
                o.ttd_s = raw.ttd_s if raw is not None else None
        if not matched_kinds:
            if any(
                explains(o.fault.kind, inc.kind)
                and _overlaps(o.fault, lead, grace, inc.opened_at, inc.last_seen)
                for o in by_device.get(inc.device_id, ())
            ):
                consequences += 1
                matched_kinds.add("")
            else:
                false_alarms[inc.kind] = false_alarms.get(inc.kind, 0) + 1
                false_ids.append(inc.incident_id)
        explained.append((inc, matched_kinds))
    _kind_scores(kinds, outcomes, [(i.kind, i.measurement, m) for i, m in explained], stuck_window_s)
    n_matched = sum(1 for _, m in explained if m - {""})
    return DetectionReport(
        kinds, outcomes, false_alarms, len(shown), unscored, n_matched, consequences, "incident",
        not_detectable, len(incidents) - len(shown), false_ids,
    )  # fmt: skip


NOTIFIED_ACTIONS = ("opened", "acknowledged", "resolved")
"""Incident events that are notified (MQTT, webhook); notes are not."""


def count_notifications(
    events: Iterable[tuple[int, str, datetime]], report: DetectionReport, since: datetime, until: datetime
) -> dict[str, Any]:
    """Notifications an operator received during the run: the scored incidents' ``opened``,
    ``acknowledged`` and ``resolved`` events between ``since`` and ``until`` (wall clock).
    ``events``: ``(incident_id, action, at)``."""
    false = set(report.false_ids)
    by_action = dict.fromkeys(NOTIFIED_ACTIONS, 0)
    n = n_false = 0
    for incident_id, action, at in events:
        if action not in by_action or not since <= at <= until:
            continue
        by_action[action] += 1
        n += 1
        n_false += incident_id in false
    return {"total": n, "by_action": by_action, "for_false_alarms": n_false}


def _kind_scores(
    kinds: dict[str, KindScore],
    outcomes: list[Outcome],
    explained: list[tuple[str, str, set[str]]],
    stuck_window_s: float | None,
) -> None:
    """Fill each kind's counts, precision, recall and latencies (``explained``: kind, measurement
    and matched fault kinds of every scored alert or incident)."""
    for kind, ks in kinds.items():
        mine = [o for o in outcomes if o.fault.kind == kind]
        ks.injected = len(mine)
        ks.detected = sum(o.detected for o in mine)
        ks.missed = ks.injected - ks.detected
        ks.recall = ks.detected / ks.injected if ks.injected else None
        for akind, measurement, matched in explained:
            if alert_matches_kind(kind, akind, measurement):
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
