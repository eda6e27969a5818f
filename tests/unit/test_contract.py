"""Wire contract v1: codec round-trip, validation verdicts, and agreement with the published schema."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsim.kernel import contract as c
from fleetsim.kernel.errors import ContractError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "telemetry-v1.schema.json"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def good(**over: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "device_id": "lyon-office-01",
        "ts": "2026-11-29T11:59:58.250Z",
        "seq": 7,
        "temperature": 21.5,
        "humidity": 40.0,
        "co2": 612.0,
        "pressure": 1013.2,
        "battery": 88.0,
        "lat": 45.76,
        "lon": 4.83,
        "status": "OK",
    }
    obj.update(over)
    return obj


def verdict(obj: object, topic_id: str | None = "lyon-office-01") -> str:
    try:
        c.decode(json.dumps(obj).encode(), topic_device_id=topic_id, now=NOW)
    except c.Rejected as exc:
        return exc.reason.value
    return "ok"


def test_published_schema_file_is_generated_from_the_code() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == c.json_schema()


def test_schema_lists_every_contract_field_and_range() -> None:
    schema = c.json_schema()
    assert list(schema["properties"]) == [f.name for f in c.FIELDS]
    for m in c.MEASUREMENTS:
        prop = schema["properties"][m.name]
        assert (prop["minimum"], prop["maximum"]) == (m.valid_min, m.valid_max)
        assert m.unit in prop["description"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (good(), "ok"),
        (good(temperature=None, humidity=None, status="FAILURE", fault="sensor_failure"), "ok"),
        ({"device_id": "lyon-office-01", "ts": "2026-11-29T11:59:58.250Z", "seq": 0}, "ok"),
        (good(extra_field={"nested": [1, 2]}), "ok"),
        (good(temperature=151.0), "out_of_range"),
        (good(humidity=-0.1), "out_of_range"),
        (good(co2=40_001), "out_of_range"),
        (good(pressure=200), "out_of_range"),
        (good(battery=100.5), "out_of_range"),
        (good(lat=91), "out_of_range"),
        (good(lon=-181), "out_of_range"),
        (good(seq=-1), "out_of_range"),
        (good(temperature="21.5"), "schema"),
        (good(temperature=True), "schema"),
        (good(seq=1.5), "schema"),
        (good(seq="7"), "schema"),
        (good(status="BROKEN"), "schema"),
        (good(fault="gremlins"), "schema"),
        (good(device_id="bad id with spaces"), "schema"),
        (good(device_id="x" * 65), "schema"),
        (good(ts="yesterday"), "schema"),
        (good(ts="2026-11-29T11:59:58"), "schema"),
        (good(ts="1999-12-31T23:59:59.000Z"), "out_of_range"),
        (good(ts="2026-12-01T12:00:00.000Z"), "out_of_range"),
        ({k: v for k, v in good().items() if k != "seq"}, "schema"),
        ([good()], "schema"),
        ("a string", "schema"),
        (good(device_id="someone-else"), "id_mismatch"),
    ],
)
def test_decode_verdicts(payload: object, expected: str) -> None:
    assert verdict(payload) == expected


def test_decode_rejects_bytes_before_parsing() -> None:
    with pytest.raises(c.Rejected) as big:
        c.decode(b"{" + b" " * 5000 + b"}", topic_device_id=None)
    assert big.value.reason is c.RejectReason.TOO_LARGE
    with pytest.raises(c.Rejected) as utf:
        c.decode(b'{"device_id": "\xff\xfe"}', topic_device_id=None)
    assert utf.value.reason is c.RejectReason.INVALID_UTF8
    for raw in (b'{"seq": NaN}', b'{"seq": Infinity}', b'{"a": -Infinity}', b"{not json", b""):
        with pytest.raises(c.Rejected) as bad:
            c.decode(raw, topic_device_id=None)
        assert bad.value.reason is c.RejectReason.INVALID_JSON, raw
    with pytest.raises(c.Rejected) as deep:
        c.decode(b"[" * 3000 + b"]" * 3000, topic_device_id=None, max_bytes=10_000)
    assert deep.value.reason in {c.RejectReason.INVALID_JSON, c.RejectReason.SCHEMA}


def test_schema_and_code_agree_on_shape() -> None:
    """Everything the schema can express gets the same verdict from the JSON Schema validator."""
    validator = jsonschema.Draft202012Validator(c.json_schema(), format_checker=jsonschema.FormatChecker())
    schema_expressible = [
        good(),
        good(temperature=None),
        good(temperature=151.0),
        good(battery=-1),
        good(seq=-1),
        good(seq=1.5),
        good(status="BROKEN"),
        good(fault="gremlins"),
        good(fault="stuck"),
        good(device_id="bad id"),
        good(temperature="hot"),
        {"device_id": "lyon-office-01", "ts": "2026-11-29T11:59:58.250Z"},
    ]
    for obj in schema_expressible:
        schema_ok = validator.is_valid(obj)
        assert schema_ok == (verdict(obj) == "ok"), obj


def test_encode_is_compact_utc_milliseconds() -> None:
    r = c.Reading("d-1", datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC), 3, temperature=20.25)
    raw = r.encode()
    assert b" " not in raw
    assert json.loads(raw)["ts"] == "2026-01-02T03:04:05.678Z"
    assert "fault" not in json.loads(raw)
    with pytest.raises(ContractError):
        c.format_ts(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_non_utc_offsets_are_normalised() -> None:
    obj = good(ts="2026-11-29T13:59:58.250+02:00")
    r = c.decode(json.dumps(obj).encode(), topic_device_id=None, now=NOW)
    assert r.ts == datetime(2026, 11, 29, 11, 59, 58, 250_000, tzinfo=UTC)


_finite = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(
    device_id=st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"),
    seq=st.integers(min_value=0, max_value=c.MAX_SEQ),
    ms=st.integers(min_value=0, max_value=10**10),
    temperature=st.one_of(st.none(), st.floats(-80, 150)),
    humidity=st.one_of(st.none(), st.floats(0, 100)),
    co2=st.one_of(st.none(), st.floats(0, 40_000)),
    battery=st.one_of(st.none(), st.floats(0, 100)),
    status=st.sampled_from(list(c.Status)),
    fault=st.one_of(st.none(), st.sampled_from([f.value for f in c.FaultKind])),
)
def test_round_trip(
    device_id: str,
    seq: int,
    ms: int,
    temperature: float | None,
    humidity: float | None,
    co2: float | None,
    battery: float | None,
    status: c.Status,
    fault: str | None,
) -> None:
    ts = c.EARLIEST_TS + timedelta(milliseconds=ms)
    r = c.Reading(device_id, ts, seq, temperature, humidity, co2, 1000.0, battery, 1.0, 2.0, status, fault)
    back = c.decode(r.encode(), topic_device_id=device_id, now=ts)
    assert back == r


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | _finite | st.text(),
        lambda ch: st.lists(ch) | st.dictionaries(st.text(), ch),
    )
)
def test_decode_never_raises_anything_but_rejected(value: object) -> None:
    raw = json.dumps(value).encode()
    with contextlib.suppress(c.Rejected):
        c.decode(raw, topic_device_id="x", max_bytes=1 << 20)


def test_topics_and_ids() -> None:
    assert c.telemetry_topic("a") == "sensors/a/telemetry"
    assert c.status_topic("a") == "sensors/a/status"
    assert c.control_topic("a") == "fleetsim/control/a"
    assert c.device_id_from_topic("sensors/dev-1/telemetry") == "dev-1"
    assert c.device_id_from_topic("sensors/telemetry") is None
    assert c.is_valid_device_id("ok_1.2-x")
    assert not c.is_valid_device_id("no/slash")
    assert not c.is_valid_device_id("")


def test_control_command_round_trip_and_errors() -> None:
    cmd = c.ControlCommand(c.ControlAction.INJECT, c.FaultKind.DRIFT, 120.0, None, {"rate": 0.5})
    assert c.ControlCommand.decode(cmd.encode()) == cmd
    with pytest.raises(ContractError, match="inject"):
        c.ControlCommand.decode(b'{"action": "explode"}')
    with pytest.raises(ContractError, match="stuck"):
        c.ControlCommand.decode(b'{"action": "inject", "fault": "gremlins"}')
    with pytest.raises(ContractError, match="duration_s"):
        c.ControlCommand.decode(b'{"action": "inject", "fault": "stuck", "duration_s": -3}')
    with pytest.raises(ContractError, match="params"):
        c.ControlCommand.decode(b'{"action": "inject", "fault": "stuck", "params": {"a": "b"}}')
