"""Scorer on synthetic ground truth: every expected figure below is computed by hand."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from fleetsim.experiments.detection import (
    AlertRow,
    FaultInstance,
    IncidentRow,
    count_notifications,
    overall,
    score_detection,
    score_incidents,
)
from fleetsim.experiments.integrity import SentLog, StageSeqs, device_integrity, score_integrity, totals
from fleetsim.experiments.mapping import check_complete, not_detectable_reason
from fleetsim.experiments.stats import hop_latencies, percentile

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def t(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def alert(
    dev: str,
    kind: str,
    at: float,
    measurement: str = "",
    fault: str | None = None,
    evidence: datetime | None = None,
    detected_at: datetime | None = None,
) -> AlertRow:
    return AlertRow(dev, kind, measurement, t(at), detected_at or t(at + 5), fault, evidence)


def test_mapping_classifies_every_fault_kind_once() -> None:
    check_complete()


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    vals = [10.0, 20.0, 30.0, 40.0]
    assert percentile(vals, 50) == 20.0  # ceil(0.5 * 4) = 2nd
    assert percentile(vals, 95) == 40.0  # ceil(0.95 * 4) = 4th
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_detection_counts_precision_recall_and_ttd() -> None:
    faults = [
        FaultInstance("a", "stuck", t(100), t(400)),
        FaultInstance("b", "stuck", t(100), t(400)),
        FaultInstance("c", "stuck", t(100), t(400)),  # never detected
        FaultInstance("d", "sensor_failure", t(200), t(300)),
        FaultInstance("e", "duplicate", t(0), t(50)),  # integrity: not a detection target
    ]
    alerts = [
        alert("a", "stuck", 150, "temperature"),  # ttd 50
        alert("a", "stuck", 160, "humidity"),  # second true alert, same instance
        alert("b", "stuck", 190, "temperature", evidence=t(190), detected_at=t(192.5)),  # ttd 90, wall 2.5 s
        alert("b", "stuck", 900, "temperature"),  # after end + grace (400 + 120): false alarm
        alert("d", "status_failure", 200),  # ttd 0
        alert("z", "extreme_high", 50, "temperature"),  # no fault on z: false alarm
    ]
    rep = score_detection(faults, alerts, grace_s=120)
    stuck, fail = rep.kinds["stuck"], rep.kinds["sensor_failure"]
    assert (stuck.injected, stuck.detected, stuck.missed) == (3, 2, 1)
    assert stuck.recall == pytest.approx(2 / 3)
    assert (stuck.true_alerts, stuck.false_alarms) == (3, 1)
    assert stuck.precision == pytest.approx(3 / 4)
    assert stuck.ttd_p50_s == 50.0 and stuck.ttd_p95_s == 90.0 and stuck.ttd_max_s == 90.0
    assert stuck.wall_p50_s == pytest.approx(2.5)
    assert (fail.injected, fail.detected, fail.precision, fail.recall, fail.ttd_p50_s) == (
        1,
        1,
        1.0,
        1.0,
        0.0,
    )
    assert rep.false_alarms == {"stuck": 1, "extreme_high": 1}
    assert rep.unscored == {"duplicate": 1}
    ov = overall(rep)
    assert (ov["injected"], ov["detected"], ov["missed"]) == (4, 3, 1)
    assert ov["recall"] == pytest.approx(3 / 4)
    # 4 matched alerts (a x2, b, d); false alarms of expected kinds: stuck@900 and extreme_high
    assert ov["precision"] == pytest.approx(4 / 6)
    assert ov["false_alarms"] == 2


def test_grace_and_lead_windows_and_fault_code() -> None:
    faults = [FaultInstance("a", "network_outage", t(100), t(200))]
    late_ok = score_detection(faults, [alert("a", "offline", 319)], grace_s=120)
    assert late_ok.kinds["network_outage"].detected == 1
    assert late_ok.kinds["network_outage"].ttd_p50_s == 219.0
    too_late = score_detection(faults, [alert("a", "offline", 321)], grace_s=120)
    assert too_late.kinds["network_outage"].detected == 0
    early = [alert("a", "offline", 95)]
    assert score_detection(faults, early, grace_s=120).kinds["network_outage"].detected == 0
    lead = score_detection(faults, early, grace_s=120, lead_s=10)
    assert lead.kinds["network_outage"].detected == 1
    assert lead.kinds["network_outage"].ttd_p50_s == 0.0  # clamped at 0
    # The alert's own ground-truth code matches even beyond the grace window.
    by_code = score_detection(faults, [alert("a", "offline", 500, fault="network_outage")], grace_s=120)
    assert by_code.kinds["network_outage"].detected == 1


def test_measurement_constraint_and_consequences() -> None:
    faults = [
        FaultInstance("h", "heatwave", t(0), t(600)),
        FaultInstance("b", "battery_drain", t(0), t(600)),
    ]
    alerts = [
        alert("h", "extreme_high", 10, "co2"),  # heatwave expects temperature: not a detection
        alert("h", "extreme_low", 20, "humidity"),  # consequence of the heatwave: not a false alarm
        alert("b", "low_battery", 300, "battery"),
        alert("b", "offline", 500),  # depleted: consequence
    ]
    rep = score_detection(faults, alerts, grace_s=60)
    assert rep.kinds["heatwave"].detected == 0
    assert rep.kinds["battery_drain"].detected == 1
    assert rep.false_alarms == {"extreme_high": 1}
    assert rep.consequence_alerts == 2


def test_stuck_window_counts_detections_within_it() -> None:
    faults = [FaultInstance("a", "stuck", t(0), t(600)), FaultInstance("b", "stuck", t(0), t(600))]
    rep = score_detection(
        faults, [alert("a", "stuck", 50), alert("b", "stuck", 130)], grace_s=0, stuck_window_s=120
    )
    assert rep.kinds["stuck"].within_window == 1


def test_two_instances_of_one_kind_take_their_own_alerts() -> None:
    faults = [FaultInstance("a", "crash", t(0), t(100)), FaultInstance("a", "crash", t(300), t(400))]
    rep = score_detection(faults, [alert("a", "offline", 80), alert("a", "offline", 330)], grace_s=150)
    # 80 is in the first window only; 330 is past the first (100 + 150) and inside the second.
    assert [o.ttd_s for o in rep.outcomes] == [80.0, 30.0]
    rep2 = score_detection(faults, [alert("a", "offline", 240)], grace_s=150)
    # In the first's grace window only (the second starts at 300).
    assert [o.detected for o in rep2.outcomes] == [True, False]


# ------------------------------------------------------------------------------- integrity
def stage(seqs: list[int], late: set[int] | None = None) -> StageSeqs:
    return StageSeqs(Counter(seqs), set(late or ()))


def test_integrity_locates_each_loss() -> None:
    # Device made 0..19. Edge: 3..5 overflowed, 10 dropped out. Published: the other 16.
    sent = SentLog(((0, 2), (6, 9), (11, 19)), {"overflow": ((3, 5),), "dropout": ((10, 10),)}, 2, 19)
    # Kafka lost seq 7 (MQTT->Kafka), has 8 and 9 twice; 15 and 16 are late at Kafka.
    kafka = stage([0, 1, 2, 6, 8, 8, 9, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19], late={15, 16})
    # The table lacks 15 (late: watermark), 18 (Kafka -> table), and has 16 flagged late.
    db = stage([0, 1, 2, 6, 8, 9, 11, 12, 13, 14, 16, 17, 19], late={16})
    r = device_integrity("d1", sent, kafka, db)
    assert (r.made, r.published, r.in_db) == (20, 16, 13)
    assert (r.dropped_overflow, r.dropped_dropout, r.dropped_shutdown) == (3, 1, 0)
    assert r.in_kafka == 15
    assert r.lost_mqtt_kafka == 1
    assert r.dropped_watermark == 1
    assert r.lost_kafka_db == 1
    assert r.lost == 7  # 3 + 1 + 1 + 1 + 1
    assert r.unaccounted == 0
    assert (r.duplicated_sent, r.duplicated_kafka, r.duplicated_db) == (2, 2, 0)
    assert r.late == 1
    assert r.unexpected == 0


def test_integrity_without_kafka_and_totals() -> None:
    sent = {"a": SentLog(((0, 9),), {}, 0, 9), "b": SentLog(((0, 4),), {"overflow": ((5, 9),)}, 0, 9)}
    db = {"a": stage(list(range(10))), "b": stage([0, 1, 2, 3, 4])}
    rows = score_integrity(["a", "b", "c"], sent, None, db)
    assert [r.device_id for r in rows] == ["a", "b", "c"]
    assert [r.lost for r in rows] == [0, 5, 0]
    assert rows[0].in_kafka is None and rows[0].unaccounted is None
    tot = totals(rows)
    assert tot["made"] == 20 and tot["lost"] == 5 and tot["dropped_overflow"] == 5
    assert tot["in_kafka"] is None


def test_hop_latencies() -> None:
    rows = [
        (1000.0, 1100.0, 1110.0, 1300.0),
        (2000.0, 2050.0, 2070.0, 2150.0),
        (3000.0, None, 3090.0, 3100.0),
    ]
    wall = hop_latencies(rows, device_clock_is_wall=True)
    assert wall["device_bridge"] == {"n": 2, "p50": 50.0, "p95": 100.0, "max": 100.0}
    assert wall["bridge_kafka"] == {"n": 2, "p50": 10.0, "p95": 20.0, "max": 20.0}
    assert wall["kafka_db"] == {"n": 3, "p50": 80.0, "p95": 190.0, "max": 190.0}
    assert wall["bridge_db"] == {"n": 2, "p50": 100.0, "p95": 200.0, "max": 200.0}
    assert hop_latencies(rows, device_clock_is_wall=False)["device_bridge"] is None


def test_integrity_counts_only_the_runs_own_seq_span() -> None:
    # Seqs start at the run's start instant in epoch ms: "made" is first..last, not 0..last
    # (which was 1.8e12 seqs, and ran the scorer out of memory).
    base = 1_796_000_000_000
    sent = SentLog(((base, base + 9),), {"overflow": ((base + 10, base + 11),)}, 0, base + 11)
    db = StageSeqs(Counter({base + i: 1 for i in range(10)}))
    r = device_integrity("d", sent, None, db)
    assert (r.made, r.published, r.in_db, r.lost, r.dropped_overflow, r.unexpected) == (12, 10, 10, 2, 2, 0)
    assert sent.first_seq == base


# ------------------------------------------------------------------------------- incidents
def incident(
    iid: int,
    dev: str,
    kind: str,
    opened: float,
    last: float,
    measurement: str = "",
    *,
    state: str = "open",
    min_duration_s: float = 0.0,
    fault: str | None = None,
    opened_wall: datetime | None = None,
    evidence: datetime | None = None,
    n_alerts: int = 1,
) -> IncidentRow:
    return IncidentRow(
        iid, dev, kind, measurement, t(opened), t(last), n_alerts, min_duration_s, fault, opened_wall,
        evidence, state,
    )  # fmt: skip


def test_incidents_one_detection_per_fault_precision_counts_incidents() -> None:
    faults = [
        FaultInstance("a", "stuck", t(100), t(400)),
        FaultInstance("b", "stuck", t(100), t(400)),  # never detected
        FaultInstance("d", "sensor_failure", t(200), t(300)),
        FaultInstance("n", "noise", t(0), t(600)),  # no rule targets it
        FaultInstance("e", "duplicate", t(0), t(50)),  # integrity
    ]
    incidents = [
        # 300 raw alerts grouped into one incident: one detection, one true incident.
        incident(
            1, "a", "stuck", 150, 420, "temperature", n_alerts=300, opened_wall=t(1000), evidence=t(997.5)
        ),
        # A humid night on an outdoor device: 1 false incident (however many rows it groups).
        incident(2, "z", "extreme_high", 10, 900, "humidity", n_alerts=518),
        incident(3, "d", "status_failure", 200, 290, state="resolved", min_duration_s=30),
        # Never opened (shorter than its rule's minimum): not shown, not scored.
        incident(4, "b", "stuck", 150, 160, "temperature", state="expired"),
        incident(5, "b", "stuck", 700, 710, "temperature", state="pending"),
    ]
    rep = score_incidents(faults, incidents, grace_s=120)
    stuck, fail = rep.kinds["stuck"], rep.kinds["sensor_failure"]
    assert (stuck.injected, stuck.detected, stuck.missed, stuck.true_alerts, stuck.false_alarms) == (
        2,
        1,
        1,
        1,
        0,
    )
    assert stuck.precision == 1.0 and stuck.recall == 0.5
    assert stuck.ttd_p50_s == 50.0 and stuck.wall_p50_s == pytest.approx(2.5)
    # The failure incident opened (was notified) after its rule's 30 s minimum.
    assert (fail.detected, fail.ttd_p50_s) == (1, 30.0)
    assert rep.unit == "incident" and rep.total_alerts == 3 and rep.suppressed == 2
    assert rep.false_alarms == {"extreme_high": 1} and rep.false_ids == [2]
    assert rep.not_detectable == {"noise": {"injected": 1, "reason": not_detectable_reason("noise")}}
    assert "noise" not in rep.kinds and rep.unscored == {"duplicate": 1}
    ov = overall(rep)
    assert (ov["injected"], ov["detected"], ov["recall"]) == (3, 2, pytest.approx(2 / 3))
    assert ov["precision"] == pytest.approx(2 / 3)  # incidents 1 and 3 true, 2 false
    assert [o.incident_id for o in rep.outcomes] == [1, None, 3]


def test_incident_span_overlap_fault_code_and_consequences() -> None:
    faults = [FaultInstance("a", "network_outage", t(100), t(200))]
    # Opened before the fault's window but still seen in it: overlaps.
    assert (
        score_incidents(faults, [incident(1, "a", "offline", 50, 110)], grace_s=0)
        .kinds["network_outage"]
        .detected
        == 1
    )
    # Opened after end + grace: not it (and a false alarm).
    late = score_incidents(faults, [incident(1, "a", "offline", 321, 400)], grace_s=120)
    assert late.kinds["network_outage"].detected == 0 and late.false_alarms == {"offline": 1}
    # Its first alert's ground-truth code matches beyond the grace window.
    code = score_incidents(
        faults, [incident(1, "a", "offline", 500, 510, fault="network_outage")], grace_s=120
    )
    assert code.kinds["network_outage"].detected == 1
    drained = [FaultInstance("b", "battery_drain", t(0), t(600))]
    drain_incidents = [
        incident(1, "b", "low_battery", 300, 600, "battery"),
        incident(2, "b", "offline", 610, 700),
    ]
    cons = score_incidents(drained, drain_incidents, grace_s=60)
    assert (
        cons.kinds["battery_drain"].detected == 1 and cons.consequence_alerts == 1 and not cons.false_alarms
    )


def test_an_incident_open_across_two_faults_detects_both_ttd_from_raw_alerts() -> None:
    faults = [FaultInstance("a", "crash", t(0), t(100)), FaultInstance("a", "crash", t(300), t(400))]
    alerts = [alert("a", "offline", 80), alert("a", "offline", 330)]
    raw = score_detection(faults, alerts, grace_s=150)
    # One incident from 80 to 330 (the quiet time did not close it between the crashes).
    rep = score_incidents(faults, [incident(1, "a", "offline", 80, 330)], grace_s=150, alerts=raw)
    assert [o.detected for o in rep.outcomes] == [True, True]
    assert [o.ttd_s for o in rep.outcomes] == [80.0, 30.0]  # the second from its first raw alert
    assert rep.kinds["crash"].true_alerts == 1  # one incident, counted once


def test_notifications_counted_during_the_run_and_for_false_alarms() -> None:
    faults = [FaultInstance("a", "stuck", t(100), t(400))]
    rep = score_incidents(
        faults,
        [incident(1, "a", "stuck", 150, 300), incident(2, "z", "extreme_high", 10, 900, "co2")],
        grace_s=0,
    )
    events = [
        (1, "opened", t(150)), (1, "note", t(160)), (1, "acknowledged", t(170)),
        (2, "opened", t(10)), (2, "resolved", t(2000)),  # after the run: not received during it
    ]  # fmt: skip
    got = count_notifications(events, rep, t(0), t(1000))
    assert got == {
        "total": 3,
        "by_action": {"opened": 2, "acknowledged": 1, "resolved": 0},
        "for_false_alarms": 1,
    }


def test_a_clock_behind_is_matched_in_its_own_event_time() -> None:
    """A clock 300 s behind stamps its readings, and the clock_skew alert and incident they raise,
    300 s before the simulated instant: the fault's window is read in that clock. Time to detect
    stays in simulated time (alert at device time 130 = simulated 430, 30 s into the fault)."""
    behind = FaultInstance("k", "clock_skew", t(400), t(640), params={"offset_s": -300.0})
    ahead = FaultInstance("m", "clock_skew", t(400), t(640), params={"offset_s": 300.0})
    alerts = [alert("k", "clock_skew", 130), alert("m", "clock_skew", 730)]
    rep = score_detection([behind, ahead], alerts, grace_s=0)
    ks = rep.kinds["clock_skew"]
    assert (ks.injected, ks.detected, ks.false_alarms) == (2, 2, 0)
    assert [o.ttd_s for o in rep.outcomes] == [30.0, 30.0]
    incs = [incident(1, "k", "clock_skew", 130, 320), incident(2, "m", "clock_skew", 730, 900)]
    rep = score_incidents([behind, ahead], incs, grace_s=0)
    assert (rep.kinds["clock_skew"].detected, rep.false_alarms) == (2, {})
    # Without the offset the same alert is a false alarm and the fault a miss.
    plain = FaultInstance("k", "clock_skew", t(400), t(640))
    rep = score_detection([plain], [alert("k", "clock_skew", 130)], grace_s=0)
    assert (rep.kinds["clock_skew"].detected, rep.false_alarms) == (0, {"clock_skew": 1})
