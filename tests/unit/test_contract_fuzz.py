"""Mutation fuzzing of the validators and adapters (Hypothesis).

``test_bridge_adapters`` fuzzes with random JSON, which almost never gets past the first checks
(a random object rarely has a valid id, seq and ts). Here every example starts from a VALID
payload of each format and breaks one to three fields with arbitrary JSON values (or removes
them), so the deep checks (status, fault, ranges, units, blocks) see hostile values too.

Properties: a validator or adapter raises nothing but :class:`Rejected`; the processor never
flags a dead letter ``internal`` (an adapter crash); whatever is accepted is a contract-valid
reading whose values are within the contract's ranges.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleetsim.bridge.adapters import NativeAdapter, SenmlAdapter, TasmotaAdapter
from fleetsim.bridge.pipeline import DeadLetter, Forward, Processor
from fleetsim.bridge.routing import Router, build_routes
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import (
    LAT_RANGE,
    LON_RANGE,
    MEASUREMENTS,
    Reading,
    Rejected,
    RejectReason,
    decode,
)

NOW_MS = int(datetime(2026, 11, 29, 5, 0, tzinfo=UTC).timestamp() * 1000)
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
DEV = "dev-1"

NATIVE: dict[str, Any] = {
    "device_id": DEV, "ts": "2026-11-29T04:59:00.000Z", "seq": 7, "temperature": 21.5,
    "humidity": 45.0, "co2": 600, "pressure": 1013.2, "battery": 88.0, "lat": 45.76, "lon": 4.84,
    "status": "OK", "fault": None,
}  # fmt: skip
TASMOTA: dict[str, Any] = {
    "Time": "2026-11-29T04:59:00",
    "BME280": {"Temperature": 21.4, "Humidity": 45.2, "Pressure": 1013.2},
    "SCD40": {"CarbonDioxide": 615},
    "TempUnit": "C",
    "PressureUnit": "hPa",
}
SENML: list[dict[str, Any]] = [
    {"bn": f"{DEV}/", "bt": 1795928340, "bu": "Cel", "n": "temp", "v": 21.5},
    {"n": "hum", "u": "%RH", "v": 40.25},
    {"n": "co2", "u": "ppm", "v": 612},
    {"n": "press", "u": "hPa", "v": 1013.2},
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["OK", "WARNING", "stuck", "C", "F", "K", "hPa", "mmHg", "Cel", "%RH", "ppm", DEV]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_GONE = object()
"""Marker: remove the field instead of replacing it."""
_mutation = st.one_of(st.just(_GONE), _values)


def _mutate(obj: dict[str, Any], keys: list[str], values: list[Any]) -> dict[str, Any]:
    out = dict(obj)
    for k, v in zip(keys, values, strict=False):
        if v is _GONE:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # allow_nan: NaN/Infinity must meet the strict parser


def _assert_in_contract(r: Reading) -> None:
    for m in MEASUREMENTS:
        v = getattr(r, m.name)
        assert v is None or m.valid_min <= v <= m.valid_max, (m.name, v)
    assert r.lat is None or LAT_RANGE[0] <= r.lat <= LAT_RANGE[1]
    assert r.lon is None or LON_RANGE[0] <= r.lon <= LON_RANGE[1]


def _processor() -> Processor:
    cfg = FleetsimConfig()
    return Processor(Router(build_routes(cfg.bridge.routes, cfg.bridge.max_payload)), 4096)


_PROCESSOR = _processor()


def _check_adapter(adapter: Any, topic: str, payload: bytes) -> None:
    try:
        out = adapter.adapt(payload, DEV, NOW_MS)
    except Rejected:
        pass
    else:
        for rec in out:
            assert rec.device_id == DEV
            _assert_in_contract(decode(rec.value, topic_device_id=DEV, now=NOW))
    verdict = _PROCESSOR.process(topic, payload, NOW_MS)
    assert isinstance(verdict, Forward | DeadLetter)
    assert not (isinstance(verdict, DeadLetter) and verdict.internal), verdict.detail


_NATIVE_KEYS = st.lists(st.sampled_from([*NATIVE, "extra"]), min_size=1, max_size=3, unique=True)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=_NATIVE_KEYS, values=st.lists(_mutation, min_size=3, max_size=3))
# Found by this test: an unhashable status or fault made the contract raise TypeError, which the
# bridge turned into an `internal` unsupported_format dead letter with a traceback per message.
@example(keys=["status"], values=[["OK"], None, None])
@example(keys=["fault"], values=[{"kind": "stuck"}, None, None])
def test_native_contract_raises_only_rejected(keys: list[str], values: list[Any]) -> None:
    payload = _encode(_mutate(NATIVE, keys, values))
    try:
        reading = decode(payload, topic_device_id=DEV, now=NOW)
    except Rejected as exc:
        assert isinstance(exc.reason, RejectReason)
    else:
        _assert_in_contract(reading)
        assert decode(reading.encode(), topic_device_id=DEV, now=NOW) == reading  # round trip
    _check_adapter(NativeAdapter(), f"sensors/{DEV}/telemetry", payload)


_TASMOTA_KEYS = st.lists(
    st.sampled_from([*TASMOTA, "SHT3X-0x44", "BME280.Temperature", "BME280.Pressure", "SCD40.CarbonDioxide"]),
    min_size=1,
    max_size=3,
    unique=True,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=_TASMOTA_KEYS, values=st.lists(_mutation, min_size=3, max_size=3))
def test_tasmota_adapter_raises_only_rejected(keys: list[str], values: list[Any]) -> None:
    obj = json.loads(json.dumps(TASMOTA))
    for key, value in zip(keys, values, strict=False):
        block, _, leaf = key.partition(".")
        target = obj.get(block) if leaf else obj
        name = leaf or block
        if not isinstance(target, dict):
            continue
        if value is _GONE:
            target.pop(name, None)
        else:
            target[name] = value
    _check_adapter(TasmotaAdapter(), f"tele/{DEV}/SENSOR", _encode(obj))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(SENML) - 1),
    keys=st.lists(
        st.sampled_from(["bn", "bt", "bu", "bv", "n", "u", "v", "t", "vs", "s"]), min_size=1, max_size=3
    ),
    values=st.lists(_mutation, min_size=3, max_size=3),
)
def test_senml_adapter_raises_only_rejected(index: int, keys: list[str], values: list[Any]) -> None:
    pack = [dict(r) for r in SENML]
    pack[index] = _mutate(pack[index], keys, values)
    _check_adapter(SenmlAdapter(), f"sensors/{DEV}/senml", _encode(pack))


def test_the_unmutated_payloads_are_accepted() -> None:
    # The fuzz starts from these: if they were refused, every example would test one early check.
    assert decode(_encode(NATIVE), topic_device_id=DEV, now=NOW).seq == 7
    assert len(TasmotaAdapter().adapt(_encode(TASMOTA), DEV, NOW_MS)) == 1
    assert len(SenmlAdapter().adapt(_encode(SENML), DEV, NOW_MS)) == 1
