"""Per-reading alert rules on a small DataFrame, against hand-written expectations."""

from __future__ import annotations

from typing import Any

import pytest
from stream_data import CASES, kafka_df, reading

from fleetsim.cloud.streaming.parse import parse_telemetry, valid_readings
from fleetsim.cloud.streaming.rules import ALERT_COLUMNS, row_alerts, with_alert_count
from fleetsim.kernel.config import AlertsConfig

pytestmark = pytest.mark.spark


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


def _classed(
    spark: Any, payloads: list[bytes], registry_rows: list[tuple[str, str, bool | None, str]]
) -> Any:
    from fleetsim.cloud.streaming.rules import with_device_class

    registry = spark.createDataFrame(
        registry_rows, "device_id string, site string, indoor boolean, type string"
    )
    return with_device_class(valid_readings(parse_telemetry(kafka_df(spark, payloads))), registry)


def test_outdoor_humidity_near_saturation_is_weather_not_an_alarm(spark: Any) -> None:
    # Lyon in November: outdoor RH ~100 % at night. The default rules keep it quiet outdoors and
    # still flag it indoors and for devices of no known class (the fleet-wide rule).
    payloads = [
        reading("out-1", seq=1, humidity=99.5),
        reading("in-1", seq=2, humidity=99.5),
        reading("unknown-1", seq=3, humidity=99.5),
        reading("out-1", seq=4, humidity=3.0),  # outdoor low bound is 5 %
    ]
    rows = [("out-1", "tete-dor", False, "fixed"), ("in-1", "gerland", True, "fixed")]
    alerts = row_alerts(_classed(spark, payloads, rows), AlertsConfig(), stage=True).collect()
    got = {(a.device_id, a.kind, a.threshold, a.clear_threshold, a.min_duration_s) for a in alerts}
    assert got == {
        ("in-1", "extreme_high", 85.0, 80.0, 600.0),  # indoor rule: hysteresis and minimum duration
        ("unknown-1", "extreme_high", 85.0, 85.0, 0.0),  # fleet-wide: no hysteresis, at once
        ("out-1", "extreme_low", 5.0, 5.0, 0.0),
    }


def test_most_specific_rule_wins_and_site_rules_apply(spark: Any) -> None:
    from fleetsim.kernel.config import AlertRule

    cfg = AlertsConfig(
        rules=[
            AlertRule(measurement="co2", indoor=True, high=1000.0, severity="info"),
            AlertRule(measurement="co2", indoor=True, site="lab", high=2000.0, severity="critical"),
        ]
    )
    payloads = [
        reading("a", seq=1, co2=1500.0),
        reading("b", seq=2, co2=2500.0),
        reading("c", seq=3, co2=1500.0),
    ]
    rows = [("a", "office", True, "fixed"), ("b", "lab", True, "fixed"), ("c", "lab", True, "fixed")]
    alerts = row_alerts(_classed(spark, payloads, rows), cfg).collect()
    assert {(a.device_id, a.threshold, a.severity) for a in alerts} == {
        ("a", 1000.0, "info"),
        ("b", 2000.0, "critical"),
    }
