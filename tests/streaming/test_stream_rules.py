"""Per-reading alert rules on a small DataFrame, against hand-written expectations."""

from __future__ import annotations

from typing import Any

import pytest
from stream_data import kafka_df, reading

from fleetsim.cloud.streaming.parse import parse_telemetry, valid_readings
from fleetsim.cloud.streaming.rules import ALERT_COLUMNS, row_alerts, with_alert_count
from fleetsim.kernel.config import AlertsConfig

pytestmark = pytest.mark.spark

CASES: list[tuple[dict[str, Any], set[tuple[str, str, float | None, float | None]]]] = [
    ({}, set()),
    ({"temperature": 41.0}, {("extreme_high", "temperature", 41.0, 40.0)}),
    ({"temperature": 40.0}, set()),  # the threshold itself is not beyond it
    ({"temperature": -11.0}, {("extreme_low", "temperature", -11.0, -10.0)}),
    ({"humidity": 90.0}, {("extreme_high", "humidity", 90.0, 85.0)}),
    ({"humidity": 10.0}, {("extreme_low", "humidity", 10.0, 15.0)}),
    ({"co2": 1600.0}, {("extreme_high", "co2", 1600.0, 1500.0)}),
    ({"co2": 300.0}, set()),  # no co2_low threshold configured
    ({"pressure": 950.0}, {("extreme_low", "pressure", 950.0, 960.0)}),
    ({"status": "WARNING"}, {("status_warning", "", None, None)}),
    ({"status": "FAILURE", "temperature": None}, {("status_failure", "", None, None)}),
    ({"battery": 10.0}, {("low_battery", "battery", 10.0, 15.0)}),
    (
        {"temperature": 45.0, "battery": 5.0},
        {("extreme_high", "temperature", 45.0, 40.0), ("low_battery", "battery", 5.0, 15.0)},
    ),
]


def test_each_rule_fires_exactly_when_expected(spark: Any) -> None:
    payloads = [
        reading("d1", seq=i, fault="heatwave" if i == 1 else None, **kw) for i, (kw, _) in enumerate(CASES)
    ]
    readings = valid_readings(parse_telemetry(kafka_df(spark, payloads)))
    alerts = row_alerts(readings, AlertsConfig()).collect()
    assert list(alerts[0].asDict()) == list(ALERT_COLUMNS)
    got: dict[int, set[tuple[str, str, float | None, float | None]]] = {i: set() for i in range(len(CASES))}
    for a in alerts:
        got[a.seq].add((a.kind, a.measurement, a.value, a.threshold))
        assert a.device_id == "d1" and a.event_ts is not None and a.message
        assert a.severity == ("critical" if a.kind == "status_failure" else "warning")
        assert a.fault == ("heatwave" if a.seq == 1 else None)  # ground truth copied from the reading
    assert got == {i: expected for i, (_, expected) in enumerate(CASES)}
    counts = {r.seq: r.n_alerts for r in with_alert_count(readings, AlertsConfig()).collect()}
    assert counts == {i: len(expected) for i, (_, expected) in enumerate(CASES)}


def test_thresholds_come_from_config(spark: Any) -> None:
    cfg = AlertsConfig(temperature_high=25.0, low_battery_pct=90.0)
    readings = valid_readings(parse_telemetry(kafka_df(spark, [reading(temperature=26.0, battery=80.0)])))
    kinds = {(a.kind, a.threshold) for a in row_alerts(readings, cfg).collect()}
    assert kinds == {("extreme_high", 25.0), ("low_battery", 90.0)}
