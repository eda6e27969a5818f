"""The native (msgspec) contract path against the reference Python validator.

``decode`` takes msgspec's one-pass decode+validate for payloads it accepts and falls back to
``decode_python`` for everything else. The fast path must never accept what the reference refuses,
must produce the same values when both accept, and every refused payload must get the reference's
reason AND detail. These tests compare the two on mutated valid payloads, on byte-level mutations
of the wire text, on hand-picked JSON corner cases and on the hostile corpus.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleetsim.kernel import contract as c

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
DEV = "dev-1"
GOOD: dict[str, Any] = {
    "device_id": DEV, "ts": "2026-11-29T04:59:00.000Z", "seq": 7, "temperature": 21.5,
    "humidity": 45.0, "co2": 600, "pressure": 1013.2, "battery": 88.0, "lat": 45.76, "lon": 4.84,
    "status": "OK", "fault": None,
}  # fmt: skip


def outcome(fn: Any, raw: bytes, topic_id: str | None = DEV) -> tuple[str, Any]:
    try:
        return "ok", fn(raw, topic_device_id=topic_id, now=NOW)
    except c.Rejected as exc:
        return exc.reason.value, exc.detail


def assert_same(raw: bytes, topic_id: str | None = DEV) -> None:
    ref = outcome(c.decode_python, raw, topic_id)
    assert outcome(c.decode, raw, topic_id) == ref, raw
    fast = c._fast(raw, topic_id, NOW, c.DEFAULT_MAX_FUTURE) if len(raw) <= c.MAX_PAYLOAD_BYTES else None
    if fast is not None:
        assert ref[0] == "ok", (raw, ref)
        assert c.reading_from_wire(fast) == ref[1]
    v = outcome(c.validate, raw, topic_id)
    assert v[0] == ref[0], raw
    if v[0] == "ok":
        assert c.reading_from_wire(v[1]) == ref[1]
    else:
        assert v == ref


# ------------------------------------------------------------------------------- one definition
def test_wire_struct_is_generated_from_fields() -> None:
    info = msgspec.inspect.type_info(c.WireReading)
    assert isinstance(info, msgspec.inspect.StructType)
    assert [f.name for f in info.fields] == [f.name for f in c.FIELDS]
    for spec, f in zip(c.FIELDS, info.fields, strict=True):
        assert f.required == spec.required, spec.name
        if spec.type == "number":
            num = next(t for t in f.type.types if isinstance(t, msgspec.inspect.FloatType))
            assert (num.ge, num.le) == c.field_range(spec.name)
            assert any(isinstance(t, msgspec.inspect.NoneType) for t in f.type.types)


def test_the_fast_path_takes_good_payloads() -> None:
    raw = c.encode_reading(DEV, "2026-11-29T04:59:00.000Z", 7, 21.5, 45.0, 600.0, 1013.2, 88.0, 45.76, 4.84)
    assert c._fast(raw, DEV, NOW, c.DEFAULT_MAX_FUTURE) is not None
    assert c.decode(raw, topic_device_id=DEV, now=NOW) == c.decode_python(raw, topic_device_id=DEV, now=NOW)


# ------------------------------------------------------------------------------- corner cases
CORNERS: list[bytes] = [
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"device_id":"dev-2"}',
    b'{"device_id":"dev-2","ts":"2026-11-29T04:59:00.000Z","seq":1,"device\\u005fid":"dev-1"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"device\\u005fid":"dev-2"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":7.0}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1e3}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":-0}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":9223372036854775807}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":9223372036854775808}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"temperature":1e400}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"temperature":150}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"temperature":150.0000001}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"co2":99999999999999999999}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":1e400}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":"\xff"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":"\xed\xa0\x80"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":"\\ud800"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":"caf\xc3\xa9"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":' + b"[" * 30 + b"]" * 30 + b"}",
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"status":null}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"status":"ok"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"fault":"stuck"}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"fault":null}',
    b'{"device_id":"dev-1","ts":"2026-11-29t04:59:00.000z","seq":1}',
    b'{"device_id":"dev-1","ts":"2026-11-29 04:59:00.000Z","seq":1}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000+02:00","seq":1}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00","seq":1}',
    b'{"device_id":"dev-1","ts":"20261129T045900Z","seq":1}',
    b'{"device_id":"dev-1","ts":"2026-11-30T04:59:00.001Z","seq":1}',
    b'{"device_id":"dev-1\\n","ts":"2026-11-29T04:59:00.000Z","seq":1}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"a":NaN}',
    b'\xef\xbb\xbf{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1}',
    b' \t\r\n{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1} \n',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1}{}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"lat":-90,"lon":180}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"lat":-0.0,"lon":1E-400}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"temperature":true}',
    b'{"device_id":"dev-1","ts":"2026-11-29T04:59:00.000Z","seq":1,"extra":01}',
    b"[]",
    b"null",
    b"",
]


@pytest.mark.parametrize("raw", CORNERS)
@pytest.mark.parametrize("topic_id", [DEV, "dev-2", None])
def test_corner_cases_get_the_reference_verdict(raw: bytes, topic_id: str | None) -> None:
    assert_same(raw, topic_id)


def corpus() -> list[dict[str, str]]:
    return list(json.loads((HOSTILE / "index.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "case", [k for k in corpus() if k["topic"].endswith("/telemetry")], ids=lambda k: k["file"]
)
def test_hostile_corpus_same_reason_and_detail(case: dict[str, str]) -> None:
    raw = (HOSTILE / case["file"]).read_bytes()
    topic_id = c.device_id_from_topic(case["topic"])
    assert_same(raw, topic_id)


# ------------------------------------------------------------------------------- properties
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["OK", "WARNING", "FAILURE", "stuck", "2026-11-29T04:59:00Z", DEV, "dev-2"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_GONE = object()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(st.sampled_from([*GOOD, "extra", "Device_id"]), min_size=1, max_size=3, unique=True),
    values=st.lists(st.one_of(st.just(_GONE), _values), min_size=3, max_size=3),
    topic_id=st.sampled_from([DEV, None, "dev-2"]),
)
@example(keys=["seq"], values=[7.0, None, None], topic_id=DEV)
def test_mutated_payloads_get_the_reference_verdict(
    keys: list[str], values: list[Any], topic_id: str | None
) -> None:
    obj = dict(GOOD)
    for k, v in zip(keys, values, strict=False):
        if v is _GONE:
            obj.pop(k, None)
        else:
            obj[k] = v
    assert_same(json.dumps(obj).encode(), topic_id)
    assert_same(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"), topic_id)


_RAW = json.dumps(GOOD, separators=(",", ":")).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(_RAW)),
            st.sampled_from(["insert", "replace", "delete"]),
            st.one_of(
                st.binary(min_size=1, max_size=3),
                st.sampled_from([b"\\", b'"', b"{", b"[", b"1", b"-", b"e", b"."]),
            ),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_byte_mutations_get_the_reference_verdict(edits: list[tuple[int, str, bytes]]) -> None:
    raw = bytearray(_RAW)
    for at, op, data in edits:
        pos = min(at, len(raw))
        if op == "insert":
            raw[pos:pos] = data
        elif op == "replace":
            raw[pos : pos + len(data)] = data
        else:
            del raw[pos : pos + len(data)]
    assert_same(bytes(raw))


@settings(max_examples=500, deadline=None)
@given(
    vals=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**64), 2**64)),
        min_size=7,
        max_size=7,
    ),
    seq=st.integers(min_value=-(2**64), max_value=2**65),
    ms=st.integers(min_value=0, max_value=2 * 10**12),
)
def test_numbers_parse_identically(vals: list[Any], seq: int, ms: int) -> None:
    ts = (c.EARLIEST_TS + timedelta(milliseconds=ms) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    obj = dict(
        GOOD,
        seq=seq,
        ts=ts,
        **dict(
            zip(("temperature", "humidity", "co2", "pressure", "battery", "lat", "lon"), vals, strict=True)
        ),
    )
    assert_same(json.dumps(obj).encode())


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(st.sampled_from([*GOOD, "extra"]), min_size=1, max_size=3, unique=True),
    values=st.lists(st.one_of(st.just(_GONE), _values), min_size=3, max_size=3),
)
@example(keys=["temperature"], values=[float("nan"), None, None])
@example(keys=["seq"], values=[True, None, None])
def test_validate_obj_gets_the_reference_verdict(keys: list[str], values: list[Any]) -> None:
    """The adapters' path: msgspec.convert on a decoded dict, reading_from_obj for the rest."""
    obj = dict(GOOD)
    for k, v in zip(keys, values, strict=False):
        if v is _GONE:
            obj.pop(k, None)
        else:
            obj[k] = v
    try:
        ref: tuple[str, Any] = ("ok", c.reading_from_obj(obj, topic_device_id=None, now=NOW))
    except c.Rejected as exc:
        ref = (exc.reason.value, exc.detail)
    try:
        got: tuple[str, Any] = ("ok", c.reading_from_wire(c.validate_obj(obj, now=NOW)))
    except c.Rejected as exc:
        got = (exc.reason.value, exc.detail)
    assert got == ref, obj


def test_the_encoders_write_the_fields_in_the_definitions_order() -> None:
    """The simulator's f-string encoder and Reading.encode follow FIELDS (the one definition)."""
    raw = c.encode_reading(
        DEV, "2026-11-29T04:59:00.000Z", 7, 1.0, 2.0, 3.0, 400.0, 5.0, 6.0, 7.0, "OK", "stuck"
    )
    assert list(json.loads(raw)) == [f.name for f in c.FIELDS]
    assert raw == c.decode(raw, topic_device_id=DEV, now=NOW).encode()
