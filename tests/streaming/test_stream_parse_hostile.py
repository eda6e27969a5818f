"""The hostile corpus against the streaming job's own validation (records that skipped the bridge).

A buggy producer writing straight to the telemetry topic must not get anything into
``sensor_data`` that the contract refuses. Three kinds are out of Spark's reach and left out; in
each the row Spark keeps is still a contract-valid reading:

- ``id_mismatch``: a Kafka record carries no MQTT topic to compare the payload's id with;
- ``json_two_objects``: Spark reads the first object and ignores the trailing bytes;
- ``schema_device_id_number``: Spark's JSON reader turns any scalar read into a string field into
  its text, so ``42`` becomes the (valid) id ``"42"``. Telling them apart would cost a second parse
  per record, or a raw-text pattern that misfires on unknown nested fields the bridge forwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stream_data import kafka_df, reading

from fleetsim.cloud.streaming.parse import parse_telemetry, rejects, valid_readings
from fleetsim.kernel.contract import RejectReason

pytestmark = pytest.mark.spark

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
OUT_OF_REACH = {"json_two_objects.bin", "schema_device_id_number.bin"}
"""Besides every ``id_mismatch`` case; see the module docstring."""


def spark_cases() -> list[tuple[str, bytes]]:
    cases = json.loads((HOSTILE / "index.json").read_text(encoding="utf-8"))
    return [
        (c["file"], (HOSTILE / c["file"]).read_bytes())
        for c in cases
        if c["reason"] != RejectReason.ID_MISMATCH.value and c["file"] not in OUT_OF_REACH
    ]


# Found by replaying the corpus into Kafka directly: Java's `$` let a trailing newline through
# the device-id and ts patterns, and Jackson accepted single-quoted JSON.
EXTRA: list[tuple[str, bytes]] = [
    ("device_id with a trailing newline", reading(device_id="dev-1\n")),
    ("ts with a trailing newline", reading(ts="2026-11-29T12:00:00.000Z\n")),
    ("a whole reading in single quotes", reading().replace(b'"', b"'")),
]


def test_every_hostile_record_is_rejected_with_a_reason(spark: Any) -> None:
    cases = spark_cases() + EXTRA
    assert len(cases) >= 60
    parsed = parse_telemetry(kafka_df(spark, [payload for _, payload in cases] + [reading()]))
    valid = [r.kafka_offset for r in valid_readings(parsed).collect()]
    assert valid == [len(cases)], [cases[o][0] for o in valid if o < len(cases)]  # only the control
    got = {r.kafka_offset: r.reason for r in rejects(parsed).collect()}
    codes = {r.value for r in RejectReason}
    for offset, (name, _) in enumerate(cases):
        code, _, detail = got[offset].partition(": ")
        assert code in codes and detail, (name, got[offset])
