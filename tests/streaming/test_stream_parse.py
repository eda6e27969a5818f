"""Parsing good and malformed records, reject reasons, Kafka metadata, dedup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from stream_data import kafka_df, reading

from fleetsim.cloud.streaming.parse import deadletters, deduplicate, parse_telemetry, rejects, valid_readings
from fleetsim.cloud.streaming.schema import payload_schema
from fleetsim.kernel.contract import FIELDS

pytestmark = pytest.mark.spark


def test_schema_is_derived_from_the_contract() -> None:
    names = [f.name for f in payload_schema().fields]
    assert names[:-1] == [f.name for f in FIELDS]
    types = {f.name: f.dataType.simpleString() for f in payload_schema().fields}
    assert types["seq"] == "bigint"
    assert types["temperature"] == "double"
    assert types["ts"] == "string"  # parsed afterwards, so a bad ts is a reject, not a null


def test_valid_reading_parsed_with_kafka_metadata(spark: Any) -> None:
    df = kafka_df(spark, [reading(fault="heatwave", status="WARNING")], [{"received_at": "1796040000123"}])
    rows = valid_readings(parse_telemetry(df)).collect()
    assert len(rows) == 1
    r = rows[0]
    assert (r.device_id, r.seq, r.temperature, r.status, r.fault) == ("dev-1", 1, 21.5, "WARNING", "heatwave")
    assert r.ts.replace(tzinfo=UTC) == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # session tz is UTC
    assert r.kafka_offset == 0 and r.kafka_partition == 0
    assert r.bridge_ts.replace(tzinfo=UTC).timestamp() == pytest.approx(1796040000.123)


def test_optional_fields_missing_are_null_and_status_defaults_ok(spark: Any) -> None:
    payload = reading(temperature=..., lat=..., lon=..., status=...)
    r = valid_readings(parse_telemetry(kafka_df(spark, [payload]))).collect()[0]
    assert r.temperature is None and r.lat is None
    assert r.status == "OK"
    assert r.bridge_ts is None  # no header: not made up


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (reading(seq="seven"), "schema: a field has the wrong type"),
    (reading(temperature="hot"), "schema: a field has the wrong type"),
    (b'{"device_id":"d","ts":"2026-11-29T12:00:00Z","seq":1,"temperature":NaN}', "schema: a field"),
    (reading(device_id=...), "schema: device_id missing"),
    (reading(seq=...), "schema: seq missing"),
    (reading(ts=...), "schema: ts missing"),
    (reading(ts="yesterday"), "schema: ts is not RFC 3339"),
    (reading(ts="2026-11-29T12:00:00"), "schema: ts is not RFC 3339"),  # no offset
    (reading(ts="1999-12-31T23:59:59Z"), "out_of_range: ts"),
    (reading(ts="2026-12-01T12:00:00Z"), "out_of_range: ts"),  # > broker ts + 1 day
    (reading(device_id="bad id!"), "schema: device_id does not match"),
    (reading(seq=-1), "out_of_range: seq"),
    (reading(temperature=151.0), "out_of_range: temperature"),
    (reading(humidity=-0.5), "out_of_range: humidity"),
    (reading(lat=91.0), "out_of_range: lat"),
    (reading(status="MAYBE"), "schema: status"),
    (reading(fault="gremlins"), "schema: fault"),
    (b"x" * 5000, "too_large"),
]


def test_malformed_records_are_rejected_with_a_reason(spark: Any) -> None:
    # One DataFrame for every case: a Spark job per case would cost seconds each.
    parsed = parse_telemetry(kafka_df(spark, [p for p, _ in MALFORMED]))
    assert valid_readings(parsed).count() == 0
    got = {r.kafka_offset: r for r in rejects(parsed).collect()}
    assert sorted(got) == list(range(len(MALFORMED)))
    for offset, (_, reason) in enumerate(MALFORMED):
        assert got[offset].reason.startswith(reason), (offset, got[offset].reason)
        assert got[offset].topic == "t"


def test_reject_payload_is_kept_and_made_text_safe(spark: Any) -> None:
    parsed = parse_telemetry(kafka_df(spark, [b"\xff\x00bad", b'{"device_id": 1'], topic="x"))
    rows = sorted(rejects(parsed).collect(), key=lambda r: r.kafka_offset)
    assert "\x00" not in rows[0].payload and rows[0].payload.endswith("bad")
    assert rows[1].payload == '{"device_id": 1'


def test_good_and_bad_rows_are_counted_separately(spark: Any) -> None:
    values = [reading(seq=i) for i in range(5)] + [b"{", reading(seq=...)]
    parsed = parse_telemetry(kafka_df(spark, values))
    assert valid_readings(parsed).count() == 5
    assert rejects(parsed).count() == 2


def test_dedup_on_device_and_seq(spark: Any) -> None:
    values = [
        reading("a", seq=1),
        reading("a", seq=1),  # exact duplicate
        reading("a", seq=1, temperature=30.0),  # same key, other content: still a duplicate
        reading("a", seq=2, ts="2026-11-29T12:00:01.000Z"),
        reading("b", seq=1),
    ]
    out = deduplicate(valid_readings(parse_telemetry(kafka_df(spark, values))), "2 minutes")
    keys = sorted((r.device_id, r.seq) for r in out.collect())
    assert keys == [("a", 1), ("a", 2), ("b", 1)]


def test_deadletters_take_reason_detail_source_from_headers(spark: Any) -> None:
    df = kafka_df(
        spark,
        [b"\x01raw", b"x"],
        [{"reason": "too_large", "detail": "5000 bytes", "source_topic": "sensors/d/telemetry"}, {}],
    )
    rows = sorted(deadletters(df).collect(), key=lambda r: r.kafka_offset)
    assert (rows[0].reason, rows[0].detail, rows[0].source_topic) == (
        "too_large",
        "5000 bytes",
        "sensors/d/telemetry",
    )
    assert rows[0].payload == "\\x01726177"
    assert rows[1].reason == "unknown" and rows[1].detail is None
