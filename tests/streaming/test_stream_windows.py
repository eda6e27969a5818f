"""Sliding-window aggregates against hand-computed values, and late data in a real stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stream_data import reading

from fleetsim.cloud.streaming.flows import windowed
from fleetsim.cloud.streaming.parse import parse_telemetry, valid_readings
from fleetsim.cloud.streaming.rules import with_alert_count
from fleetsim.cloud.streaming.windows import attach_site, window_aggregates
from fleetsim.kernel.config import AlertsConfig, SparkConfig

pytestmark = pytest.mark.spark


def _readings(spark: Any, payloads: list[bytes]) -> Any:
    from stream_data import kafka_df

    return valid_readings(parse_telemetry(kafka_df(spark, payloads)))


def test_window_means_and_counts_per_scope(spark: Any) -> None:
    payloads = [
        reading("a", "2026-11-29T12:00:30.000Z", 1, temperature=20.0),
        reading("a", "2026-11-29T12:01:30.000Z", 2, temperature=22.0, status="WARNING"),
        reading("b", "2026-11-29T12:01:45.000Z", 1, temperature=30.0, status="FAILURE", battery=10.0),
        reading("c", "2026-11-29T12:00:10.000Z", 1, temperature=10.0, humidity=None),
    ]
    registry = spark.createDataFrame([("a", "s1"), ("b", "s1"), ("c", None)], "device_id string, site string")
    enriched = attach_site(with_alert_count(_readings(spark, payloads), AlertsConfig()), registry)
    rows = window_aggregates(enriched, "2 minutes", "1 minute").collect()
    got = {
        (r.scope, r.key, r.window_start.strftime("%H:%M")): (
            r.n_messages, r.n_warnings, r.n_failures, r.n_alerts, r.temperature_mean, r.temperature_min,
            r.temperature_max,
        )
        for r in rows
    }  # fmt: skip
    # b's reading fires status_failure and low_battery: 2 alerts.
    assert got == {
        ("device", "a", "11:59"): (1, 0, 0, 0, 20.0, 20.0, 20.0),
        ("device", "a", "12:00"): (2, 1, 0, 1, 21.0, 20.0, 22.0),
        ("device", "a", "12:01"): (1, 1, 0, 1, 22.0, 22.0, 22.0),
        ("device", "b", "12:00"): (1, 0, 1, 2, 30.0, 30.0, 30.0),
        ("device", "b", "12:01"): (1, 0, 1, 2, 30.0, 30.0, 30.0),
        ("device", "c", "11:59"): (1, 0, 0, 0, 10.0, 10.0, 10.0),
        ("device", "c", "12:00"): (1, 0, 0, 0, 10.0, 10.0, 10.0),
        ("site", "s1", "11:59"): (1, 0, 0, 0, 20.0, 20.0, 20.0),
        ("site", "s1", "12:00"): (3, 1, 1, 3, 24.0, 20.0, 30.0),
        ("site", "s1", "12:01"): (2, 1, 1, 3, 26.0, 22.0, 30.0),
        ("fleet", "fleet", "11:59"): (2, 0, 0, 0, 15.0, 10.0, 20.0),
        ("fleet", "fleet", "12:00"): (4, 1, 1, 3, 20.5, 10.0, 30.0),
        ("fleet", "fleet", "12:01"): (2, 1, 1, 3, 26.0, 22.0, 30.0),
    }
    by_key = {(r.scope, r.key, r.window_start.strftime("%H:%M")): r for r in rows}
    # NULL humidity of c is ignored by the mean, not counted as 0.
    assert by_key[("fleet", "fleet", "11:59")].humidity_mean == 45.0
    assert all((r.window_end - r.window_start).total_seconds() == 120 for r in rows)


def test_late_rows_are_left_out_of_windows_by_their_arrival(spark: Any, tmp_path: Path) -> None:
    """A real micro-batch stream, lateness 2 min: a row that reaches Kafka 10 min after its own
    time is left out (whatever the batch), a duplicate is dropped, an out-of-order row that
    arrives in time is kept, and a clock 10 min ahead neither drags the watermark nor leaves
    its own row out: it is windowed at arrival + the skew bound."""
    from pyspark.sql import functions as F

    src = tmp_path / "in"
    src.mkdir()
    line = F.split(F.col("value"), "\t")
    kafka_like = (
        spark.readStream.format("text")
        .load(str(src))
        .select(
            F.lit(None).cast("binary").alias("key"),
            line[1].cast("binary").alias("value"),
            F.lit("t").alias("topic"),
            F.lit(0).alias("partition"),
            F.lit(0).cast("long").alias("offset"),
            F.to_timestamp(line[0]).alias("timestamp"),  # arrival, per record
            F.lit(0).alias("timestampType"),
            F.lit(None).cast("array<struct<key:string,value:binary>>").alias("headers"),
        )
    )
    registry = spark.createDataFrame([("a", "s1"), ("f", "s1")], "device_id string, site string")
    cfg = SparkConfig(watermark="2 minutes", window="1 minute", slide="1 minute", max_clock_skew_s=30)
    out: dict[tuple[str, str, str], int] = {}

    def collect(df: Any, _batch_id: int) -> None:
        for r in df.collect():  # update mode: a later row for a window replaces the earlier
            out[(r.scope, r.key, r.window_start.strftime("%H:%M"))] = r.n_messages

    query = (
        windowed(kafka_like, registry, cfg, AlertsConfig())
        .writeStream.outputMode("update")
        .foreachBatch(collect)
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .start()
    )

    def rec(arrival: str, payload: bytes) -> bytes:
        return f"2026-11-29 {arrival}\t".encode() + payload

    try:
        batches = [
            [
                rec("12:00:11", reading("a", "2026-11-29T12:00:10.000Z", 1)),
                # f's clock runs 10 min ahead: windowed at 12:00:41 (arrival + 30 s).
                rec("12:00:11", reading("f", "2026-11-29T12:10:11.000Z", 1)),
                rec("12:01:01", reading("a", "2026-11-29T12:01:00.000Z", 2)),
            ],
            [
                rec("12:10:20", reading("a", "2026-11-29T12:00:20.000Z", 3)),  # late: 10 min after
                rec("12:10:20", reading("a", "2026-11-29T12:01:00.000Z", 2)),  # duplicate (device, seq)
                rec("12:01:30", reading("a", "2026-11-29T12:00:50.000Z", 4)),  # out of order, in time
            ],
        ]
        for i, batch in enumerate(batches):
            (src / f"{i}.json").write_bytes(b"\n".join(batch) + b"\n")
            query.processAllAvailable()
        dropped = sum(
            int(op.numRowsDroppedByWatermark or 0) for p in query.recentProgress for op in p.stateOperators
        )
    finally:
        query.stop()
    assert out[("device", "a", "12:00")] == 2  # 12:00:10 and the out-of-order 12:00:50, not 12:00:20
    assert out[("device", "a", "12:01")] == 1  # the duplicate was not counted twice
    assert out[("device", "f", "12:00")] == 1  # the fast clock's row, at arrival + 30 s
    assert ("device", "f", "12:10") not in out
    assert out[("site", "s1", "12:00")] == 3
    assert dropped == 0  # Spark's watermark only evicts: every left-out row is the rule's


def test_on_time_rule_per_record(spark: Any) -> None:
    """The rule both flows share, on a plain DataFrame: late iff it reached Kafka more than the
    lateness bound after its own time (exactly the bound is on time); window time capped at
    arrival + skew bound; a reject is never a reading."""
    from datetime import UTC, datetime, timedelta

    from stream_data import BROKER_TS, kafka_df

    from fleetsim.cloud.streaming.parse import on_time_readings

    def at(delta_s: float) -> str:
        return (BROKER_TS + timedelta(seconds=delta_s)).isoformat().replace("+00:00", "Z")

    payloads = [
        reading("a", at(-120), 1),  # exactly 2 min before arrival: on time
        reading("a", at(-120.001), 2),  # late
        reading("a", at(600), 3),  # 10 min ahead: windowed at arrival + 60 s
        reading("a", at(30), 4),  # ahead within the bound: its own time
        reading("a", at(0), -1),  # reject (seq < 0)
    ]
    rows = on_time_readings(
        parse_telemetry(kafka_df(spark, payloads)), timedelta(minutes=2), timedelta(seconds=60)
    ).collect()
    got = {r.seq: (r.ts.astimezone(UTC), r.wts.astimezone(UTC)) for r in rows}
    arrival = BROKER_TS.astimezone(UTC)
    assert set(got) == {1, 3, 4}
    assert got[3] == (arrival + timedelta(minutes=10), arrival + timedelta(seconds=60))
    assert got[4][0] == got[4][1] == arrival + timedelta(seconds=30)
    assert isinstance(got[1][0], datetime)
