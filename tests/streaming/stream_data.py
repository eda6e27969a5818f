"""Test data helpers: telemetry payloads and Kafka-shaped DataFrames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "timestampType int, headers array<struct<key:string,value:binary>>"
)

BROKER_TS = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def reading(device_id: Any = "dev-1", ts: Any = "2026-11-29T12:00:00.000Z", seq: Any = 1, **kw: Any) -> bytes:
    """A valid telemetry payload; keyword arguments override or add fields, ``...`` removes one
    (values are Any on purpose: tests feed wrong types)."""
    obj: dict[str, Any] = {
        "device_id": device_id,
        "ts": ts,
        "seq": seq,
        "temperature": 21.5,
        "humidity": 45.0,
        "co2": 600.0,
        "pressure": 1013.0,
        "battery": 80.0,
        "lat": 48.85,
        "lon": 2.35,
        "status": "OK",
    }
    obj.update(kw)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def kafka_df(spark: Any, values: Sequence[bytes | None], headers: Sequence[dict[str, str]] | None = None,
             topic: str = "t", broker_ts: datetime = BROKER_TS) -> Any:  # fmt: skip
    """A DataFrame shaped like the Kafka source's, one record per value (offsets 0..n-1)."""
    rows = []
    for i, v in enumerate(values):
        h = (headers[i] if headers else {}) or {}
        rows.append((None, v, topic, 0, i, broker_ts, 0, [(k, hv.encode()) for k, hv in h.items()]))
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


# Per-reading rule cases with the fleet-wide defaults (AlertsConfig()): the reading's overrides, and
# the (kind, measurement, value, threshold) of every alert it must fire.
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
