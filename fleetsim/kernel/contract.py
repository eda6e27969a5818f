"""Wire contract v1: the one definition of topics, payloads and ranges.

The simulator encodes with it, the bridge validates with it, the streaming job derives its Spark
schema from :data:`FIELDS`, and ``schemas/telemetry-v1.schema.json`` is generated from it (a test
keeps the two in step). See ``docs/contract.md``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from fleetsim.kernel.errors import ContractError

CONTRACT_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 4096
"""Largest valid telemetry payload, in bytes."""
DEVICE_ID_PATTERN: Final = r"[A-Za-z0-9_.-]{1,64}"
_DEVICE_ID_RE = re.compile(rf"\A{DEVICE_ID_PATTERN}\Z")
MAX_SEQ: Final = 2**63 - 1
EARLIEST_TS: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Readings stamped before this instant are rejected as ``out_of_range``."""
DEFAULT_MAX_FUTURE: Final = timedelta(days=1)
"""Readings stamped further than this ahead of the receiver's clock are ``out_of_range``."""

# ---------------------------------------------------------------------------------------- topics
TELEMETRY_FILTER: Final = "sensors/+/telemetry"
STATUS_FILTER: Final = "sensors/+/status"
CONTROL_ALL_TOPIC: Final = "fleetsim/control/all"
CONTROL_FILTER: Final = "fleetsim/control/#"
BRIDGE_STATUS_FILTER: Final = "fleetsim/bridge/+/status"
"""Every bridge's retained presence (``online``/``offline``; ``offline`` is also its Last Will)."""


def telemetry_topic(device_id: str) -> str:
    """``sensors/<device_id>/telemetry``."""
    return f"sensors/{device_id}/telemetry"


def status_topic(device_id: str) -> str:
    """``sensors/<device_id>/status``: retained ``online``/``offline``, also the Last Will."""
    return f"sensors/{device_id}/status"


def control_topic(device_id: str) -> str:
    """``fleetsim/control/<device_id>``."""
    return f"fleetsim/control/{device_id}"


def bridge_status_topic(client_id: str) -> str:
    """``fleetsim/bridge/<client_id>/status``: a bridge session's presence, read by its peers."""
    return f"fleetsim/bridge/{client_id}/status"


def device_id_from_topic(topic: str) -> str | None:
    """The device id in ``<prefix>/<device_id>/<suffix>`` topics, or None if the topic has no id slot."""
    parts = topic.split("/")
    if len(parts) != 3:
        return None
    return parts[1]


def is_valid_device_id(device_id: object) -> bool:
    return isinstance(device_id, str) and _DEVICE_ID_RE.match(device_id) is not None


class DeviceState(StrEnum):
    """Payload of the retained status topic."""

    ONLINE = "online"
    OFFLINE = "offline"


class Status(StrEnum):
    """Device-reported health of a reading."""

    OK = "OK"
    WARNING = "WARNING"
    FAILURE = "FAILURE"


class FaultKind(StrEnum):
    """Codes carried in the ``fault`` field while an injected fault is active (experiment ground truth)."""

    STUCK = "stuck"
    DRIFT = "drift"
    SPIKE = "spike"
    NOISE = "noise"
    DROPOUT = "dropout"
    SENSOR_FAILURE = "sensor_failure"
    CRASH = "crash"
    NETWORK_OUTAGE = "network_outage"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    BATTERY_DRAIN = "battery_drain"
    HEATWAVE = "heatwave"


class RejectReason(StrEnum):
    """Dead-letter reason codes."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    OUT_OF_RANGE = "out_of_range"
    ID_MISMATCH = "id_mismatch"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNKNOWN_DEVICE = "unknown_device"


# ------------------------------------------------------------------------------------ measurements
@dataclass(frozen=True, slots=True)
class MeasurementSpec:
    """Ranges of one measurement. Outside ``valid`` is physically impossible (rejected); outside
    ``extreme`` is valid but alert-worthy."""

    name: str
    unit: str
    """Unit symbol on the wire."""
    valid_min: float
    valid_max: float
    extreme_min: float
    extreme_max: float
    description: str


MEASUREMENTS: Final[tuple[MeasurementSpec, ...]] = (
    MeasurementSpec("temperature", "°C", -80.0, 150.0, -10.0, 40.0, "Air temperature"),
    MeasurementSpec("humidity", "%RH", 0.0, 100.0, 15.0, 85.0, "Relative humidity"),
    MeasurementSpec("co2", "ppm", 0.0, 40_000.0, 350.0, 1500.0, "CO2 concentration"),
    MeasurementSpec("pressure", "hPa", 300.0, 1100.0, 960.0, 1045.0, "Barometric pressure"),
    MeasurementSpec("battery", "%", 0.0, 100.0, 15.0, 100.0, "Remaining battery charge"),
)
MEASUREMENT_BY_NAME: Final = {m.name: m for m in MEASUREMENTS}
LAT_RANGE: Final = (-90.0, 90.0)
LON_RANGE: Final = (-180.0, 180.0)


# --------------------------------------------------------------------------------------- payload
@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry reading, as published on ``sensors/<device_id>/telemetry``."""

    device_id: str
    """Device identifier, ``[A-Za-z0-9_.-]{1,64}``; must equal the id in the topic."""
    ts: datetime
    """Event time at the device (timezone-aware UTC; millisecond precision on the wire)."""
    seq: int
    """Per-device sequence number, >= 0, strictly increasing, survives reboots."""
    temperature: float | None = None
    """Air temperature in °C; None when the sensor has failed."""
    humidity: float | None = None
    """Relative humidity in %RH."""
    co2: float | None = None
    """CO2 concentration in ppm."""
    pressure: float | None = None
    """Barometric pressure in hPa."""
    battery: float | None = None
    """Battery charge in % (0-100)."""
    lat: float | None = None
    """Latitude in degrees (WGS84); None when the device does not know its position."""
    lon: float | None = None
    """Longitude in degrees (WGS84)."""
    status: Status = Status.OK
    """Device-reported health."""
    fault: str | None = None
    """Code of the injected fault active when the reading was made (a :class:`FaultKind` value), if any."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Not on the wire: adapter metadata (e.g. the idempotency source). Never encoded."""

    def to_dict(self) -> dict[str, Any]:
        """The wire form as a dict (``ts`` formatted, ``fault`` omitted when None)."""
        out: dict[str, Any] = {
            "device_id": self.device_id,
            "ts": format_ts(self.ts),
            "seq": self.seq,
            "temperature": self.temperature,
            "humidity": self.humidity,
            "co2": self.co2,
            "pressure": self.pressure,
            "battery": self.battery,
            "lat": self.lat,
            "lon": self.lon,
            "status": self.status.value,
        }
        if self.fault is not None:
            out["fault"] = self.fault
        return out

    def encode(self) -> bytes:
        """Compact UTF-8 JSON, the bytes that go on the wire."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()


def encode_reading(
    device_id: str,
    ts: str,
    seq: int,
    temperature: float | None,
    humidity: float | None,
    co2: float | None,
    pressure: float | None,
    battery: float | None,
    lat: float | None,
    lon: float | None,
    status: str = "OK",
    fault: str | None = None,
) -> bytes:
    """The same bytes as ``Reading(...).encode()``, about 7x faster (the simulator's hot path).

    ``ts`` is the wire string (:func:`format_ts` / :func:`format_ts_ms`). The f-string relies on
    ``repr(float)`` being what ``json.dumps`` writes; anything the shortcut cannot vouch for (an id
    needing escapes, an unknown status or fault, a non-finite number) falls back to
    :meth:`Reading.encode`, which escapes or raises exactly as before. A test checks both agree.
    """
    s = (
        f'{{"device_id":"{device_id}","ts":"{ts}","seq":{seq},'
        f'"temperature":{"null" if temperature is None else repr(temperature)},'
        f'"humidity":{"null" if humidity is None else repr(humidity)},'
        f'"co2":{"null" if co2 is None else repr(co2)},'
        f'"pressure":{"null" if pressure is None else repr(pressure)},'
        f'"battery":{"null" if battery is None else repr(battery)},'
        f'"lat":{"null" if lat is None else repr(lat)},'
        f'"lon":{"null" if lon is None else repr(lon)},"status":"{status}"'
        + ("}" if fault is None else f',"fault":"{fault}"}}')
    )
    if (
        "nan" in s
        or "inf" in s
        or "(" in s  # e.g. numpy scalars, whose repr is not their JSON
        or "True" in s
        or "False" in s
        or status not in _STATUS_VALUES
        or (fault is not None and fault not in _FAULT_VALUES)
        or not _DEVICE_ID_RE.match(device_id)
    ):
        reading = Reading(
            device_id, parse_ts(ts), seq, temperature, humidity, co2, pressure, battery, lat, lon,
            Status(status), fault,
        )  # fmt: skip
        return reading.encode()
    return s.encode()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field, for schema generation (JSON Schema and Spark)."""

    name: str
    type: str
    """``string`` | ``integer`` | ``number`` | ``timestamp``."""
    required: bool
    nullable: bool
    unit: str | None
    description: str


FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("device_id", "string", True, False, None, "Device identifier"),
    FieldSpec("ts", "timestamp", True, False, None, "Event time, RFC 3339 UTC with milliseconds"),
    FieldSpec("seq", "integer", True, False, None, "Per-device sequence number"),
    *(FieldSpec(m.name, "number", False, True, m.unit, m.description) for m in MEASUREMENTS),
    FieldSpec("lat", "number", False, True, "deg", "Latitude (WGS84)"),
    FieldSpec("lon", "number", False, True, "deg", "Longitude (WGS84)"),
    FieldSpec("status", "string", False, False, None, "OK | WARNING | FAILURE (default OK)"),
    FieldSpec("fault", "string", False, True, None, "Active injected fault code (ground truth)"),
)


def field_range(name: str) -> tuple[float, float]:
    """Valid ``[min, max]`` of a ``number`` field of :data:`FIELDS` (rejected ``out_of_range`` outside)."""
    if name == "lat":
        return LAT_RANGE
    if name == "lon":
        return LON_RANGE
    m = MEASUREMENT_BY_NAME[name]
    return (m.valid_min, m.valid_max)


def _wire_type(f: FieldSpec) -> tuple[Any, Any]:
    """(msgspec type, default or ``msgspec.NODEFAULT``) of one :data:`FIELDS` entry."""
    if f.name == "device_id":
        typ: Any = Annotated[str, msgspec.Meta(pattern=rf"\A{DEVICE_ID_PATTERN}\Z")]
    elif f.name == "ts":
        typ = str  # parsed by parse_ts: the same RFC 3339 rules as the Python path
    elif f.name == "seq":
        typ = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    elif f.name == "status":
        typ = Status
    elif f.name == "fault":
        typ = Literal[tuple(k.value for k in FaultKind)]
    elif f.type == "number":
        lo, hi = field_range(f.name)
        typ = Annotated[float, msgspec.Meta(ge=lo, le=hi)]
    else:  # a new FieldSpec type must be mapped here and in json_schema()
        raise TypeError(f"no wire type for field {f.name!r} of type {f.type!r}")
    if f.nullable:
        typ = typ | None
    if f.required:
        return typ, msgspec.NODEFAULT
    return typ, Status.OK if f.name == "status" else None


WireReading: Final[type[msgspec.Struct]] = msgspec.defstruct(
    "WireReading",
    [(f.name, *_wire_type(f)) for f in FIELDS],
    gc=False,
    module=__name__,
)
"""The telemetry payload as a msgspec Struct, generated from :data:`FIELDS` (types, ranges, enums,
defaults), so msgspec's C decoder parses and validates a payload in one pass. Unknown fields are
ignored, as the contract says. Only ``ts`` is checked afterwards, in Python (:func:`parse_ts` and
the receiver-relative window)."""


# ----------------------------------------------------------------------------------- timestamps
def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-29T04:40:00.123Z``."""
    if ts.tzinfo is None:
        raise ContractError("naive datetime: timestamps must be timezone-aware UTC")
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


_TS_SECOND_CACHE: dict[int, str] = {}


def format_ts_ms(epoch_ms: int) -> str:
    """:func:`format_ts` of an epoch-milliseconds instant, with the per-second prefix cached
    (thousands of devices share each second, and ``strftime`` dominates the simple path)."""
    sec, ms = divmod(epoch_ms, 1000)
    prefix = _TS_SECOND_CACHE.get(sec)
    if prefix is None:
        if len(_TS_SECOND_CACHE) > 4096:  # bounded: a long run visits each second once
            _TS_SECOND_CACHE.clear()
        prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _TS_SECOND_CACHE[sec] = prefix
    return f"{prefix}{ms:03d}Z"


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset into aware UTC; raises ValueError."""
    if not isinstance(value, str) or len(value) > 40 or "T" not in value:
        raise ValueError("not an RFC 3339 timestamp")
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return ts.astimezone(UTC)


# ----------------------------------------------------------------------------------- validation
class Rejected(ContractError):
    """A payload the contract refuses, with its dead-letter reason."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not valid JSON")


_STRICT_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(raw: bytes | str) -> Any:
    """``json.loads`` that refuses NaN/Infinity (Python accepts them by default)."""
    if isinstance(raw, str):
        # One shared decoder: json.loads(..., parse_constant=...) builds a new JSONDecoder per
        # call, a quarter of the bridge's parse time. Same result (a leading BOM is still refused).
        return _STRICT_DECODER.decode(raw)
    return json.loads(raw, parse_constant=_reject_constant)


_NUMBER_FIELDS: Final = tuple(m.name for m in MEASUREMENTS)
_STATUS_VALUES: Final = frozenset(s.value for s in Status)
_FAULT_VALUES: Final = frozenset(f.value for f in FaultKind)


def _number(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(RejectReason.SCHEMA, f"{key} must be a number or null, got {type(value).__name__}")
    if not math.isfinite(value):
        raise Rejected(RejectReason.INVALID_JSON, f"{key} is not finite")
    if not lo <= value <= hi:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"{key}={value} outside [{lo}, {hi}]")
    return float(value)


def reading_from_obj(
    obj: Any,
    *,
    topic_device_id: str | None,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> Reading:
    """Validate a decoded JSON value against the contract. Raises :class:`Rejected`."""
    if not isinstance(obj, dict):
        raise Rejected(RejectReason.SCHEMA, f"payload must be a JSON object, got {type(obj).__name__}")
    device_id = obj.get("device_id")
    if not isinstance(device_id, str):
        raise Rejected(RejectReason.SCHEMA, "device_id missing or not a string")
    if not _DEVICE_ID_RE.match(device_id):
        raise Rejected(RejectReason.SCHEMA, "device_id does not match [A-Za-z0-9_.-]{1,64}")
    if topic_device_id is not None and device_id != topic_device_id:
        raise Rejected(RejectReason.ID_MISMATCH, "device_id in payload differs from the topic's")
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise Rejected(RejectReason.SCHEMA, "seq missing or not an integer")
    if not 0 <= seq <= MAX_SEQ:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"seq={seq} outside [0, 2^63-1]")
    raw_ts = obj.get("ts")
    if not isinstance(raw_ts, str):
        raise Rejected(RejectReason.SCHEMA, "ts missing or not a string")
    try:
        ts = parse_ts(raw_ts)
    except ValueError as exc:
        raise Rejected(RejectReason.SCHEMA, f"ts is not RFC 3339 with an offset: {exc}") from exc
    now = now or datetime.now(UTC)
    if ts < EARLIEST_TS or ts > now + max_future:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"ts={raw_ts} too far in the past or future")
    t, h, co2, p, b = (_number(obj, m.name, m.valid_min, m.valid_max) for m in MEASUREMENTS)
    lat = _number(obj, "lat", *LAT_RANGE)
    lon = _number(obj, "lon", *LON_RANGE)
    status = obj.get("status", "OK")
    # isinstance first: a JSON list or object is unhashable and the set lookup would raise TypeError.
    if not isinstance(status, str) or status not in _STATUS_VALUES:
        raise Rejected(RejectReason.SCHEMA, "status must be one of OK, WARNING, FAILURE")
    fault = obj.get("fault")
    if fault is not None and (not isinstance(fault, str) or fault not in _FAULT_VALUES):
        raise Rejected(
            RejectReason.SCHEMA, f"fault must be null or one of {', '.join(sorted(_FAULT_VALUES))}"
        )
    return Reading(device_id, ts, seq, t, h, co2, p, b, lat, lon, Status(status), fault)


def decode(
    raw: bytes,
    *,
    topic_device_id: str | None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> Reading:
    """Bytes -> :class:`Reading`, checking size, UTF-8, strict JSON, types and ranges.

    Raises :class:`Rejected` with the dead-letter reason. Good payloads take the native path
    (:func:`validate`: msgspec parses and validates against :data:`WireReading` in C); anything
    it does not accept is judged again by :func:`decode_python`, so reasons and details of refused
    payloads are exactly the reference validator's.
    """
    if len(raw) > max_bytes:
        raise Rejected(RejectReason.TOO_LARGE, f"{len(raw)} bytes > {max_bytes}")
    wire = _fast(raw, topic_device_id, now, max_future)
    if wire is None:
        return decode_python(
            raw, topic_device_id=topic_device_id, max_bytes=max_bytes, now=now, max_future=max_future
        )
    return reading_from_wire(wire)


def validate(
    raw: bytes,
    *,
    topic_device_id: str | None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> Any:
    """:func:`decode` without building the :class:`Reading`: the validated :data:`WireReading`
    (``ts`` still the wire string; :func:`reading_from_wire` makes the Reading). The bridge's hot
    path: it forwards the original bytes and needs only the verdict and the device id.

    Same verdicts as :func:`decode` (a payload only the Python path accepts is converted).
    """
    if len(raw) > max_bytes:
        raise Rejected(RejectReason.TOO_LARGE, f"{len(raw)} bytes > {max_bytes}")
    wire = _fast(raw, topic_device_id, now, max_future)
    if wire is None:
        r = decode_python(
            raw, topic_device_id=topic_device_id, max_bytes=max_bytes, now=now, max_future=max_future
        )
        wire = WireReading(
            r.device_id, format_ts(r.ts), r.seq, r.temperature, r.humidity, r.co2, r.pressure, r.battery,
            r.lat, r.lon, r.status, r.fault,
        )  # fmt: skip
    return wire


def reading_from_wire(wire: Any) -> Reading:
    """The :class:`Reading` of a :data:`WireReading` that :func:`validate` accepted."""
    w = wire
    return Reading(
        w.device_id, parse_ts(w.ts), w.seq, w.temperature, w.humidity, w.co2, w.pressure, w.battery,
        w.lat, w.lon, w.status, w.fault,
    )  # fmt: skip


def validate_obj(
    obj: dict[str, Any],
    *,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> Any:
    """:func:`reading_from_obj` (no topic id) for an already-decoded object, returning the
    validated :data:`WireReading`: msgspec checks it against the Struct in C; anything it refuses
    is judged by :func:`reading_from_obj`, whose reason and detail stand. The adapters' path."""
    try:
        w: Any = msgspec.convert(obj, WireReading)
        ts = parse_ts(w.ts)
        if EARLIEST_TS <= ts <= (now or datetime.now(UTC)) + max_future:
            return w
    except (msgspec.ValidationError, ValueError):
        pass
    r = reading_from_obj(obj, topic_device_id=None, now=now, max_future=max_future)
    return WireReading(
        r.device_id, format_ts(r.ts), r.seq, r.temperature, r.humidity, r.co2, r.pressure, r.battery,
        r.lat, r.lon, r.status, r.fault,
    )  # fmt: skip


_WIRE_DECODER: Final = msgspec.json.Decoder(WireReading)
_MAX_FAST_NESTING: Final = 32
"""Payloads with more ``{``/``[`` than this go to the Python path: its recursion limit (not
msgspec's) decides when deep nesting is ``invalid_json``."""


def _fast(
    raw: bytes,
    topic_device_id: str | None,
    now: datetime | None,
    max_future: timedelta,
) -> Any:
    """The :data:`WireReading` if ``raw`` (within the size cap) is valid, else None: then
    :func:`decode_python` gives the verdict. Never raises.

    Accepts only what :func:`decode_python` accepts, with the same values (a property test in
    ``tests/unit/test_contract_fast.py`` holds it to that). Left to the Python path, besides
    anything msgspec refuses: non-UTF-8 bytes (msgspec does not check strings it skips), any
    backslash escape (no escape-decoding subtleties on the fast path, e.g. in key names), deep
    nesting, a topic/payload id mismatch and any ``ts`` problem.
    """
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if b"\\" in raw or raw.count(b"{") + raw.count(b"[") > _MAX_FAST_NESTING:
        return None
    try:
        w: Any = _WIRE_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    if topic_device_id is not None and w.device_id != topic_device_id:
        return None
    try:
        ts = parse_ts(w.ts)
    except ValueError:
        return None
    if ts < EARLIEST_TS or ts > (now or datetime.now(UTC)) + max_future:
        return None
    return w


def decode_python(
    raw: bytes,
    *,
    topic_device_id: str | None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    now: datetime | None = None,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> Reading:
    """The reference validator, pure Python: :func:`loads_strict` then :func:`reading_from_obj`.

    :func:`decode` uses it for every payload the native path does not accept, so it alone defines
    reasons and details. Raises :class:`Rejected`.
    """
    if len(raw) > max_bytes:
        raise Rejected(RejectReason.TOO_LARGE, f"{len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(RejectReason.INVALID_UTF8, str(exc)) from exc
    try:
        obj = loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected(RejectReason.INVALID_JSON, str(exc)[:200]) from exc
    return reading_from_obj(obj, topic_device_id=topic_device_id, now=now, max_future=max_future)


# ----------------------------------------------------------------------------- payload formats
PayloadFormat = Literal["native", "senml", "tasmota"]
"""Name of a payload adapter: the ``format`` of a bridge route and of a registered device, and the
Kafka ``format`` header. The one list of formats; ``fleetsim.bridge.adapters`` checks at import
that its adapters match it exactly (the ``devices`` table's CHECK constraint repeats it in SQL)."""
PAYLOAD_FORMATS: Final[tuple[PayloadFormat, ...]] = get_args(PayloadFormat)
"""The :data:`PayloadFormat` names, in order."""


# ---------------------------------------------------------------------------------- kafka side
class KafkaHeader(StrEnum):
    """Header names on Kafka records written by the bridge."""

    SOURCE_TOPIC = "source_topic"
    """MQTT topic the message came from."""
    RECEIVED_AT = "received_at"
    """Bridge receive time, epoch milliseconds (ASCII digits)."""
    FORMAT = "format"
    """Adapter that decoded the payload (a :data:`PayloadFormat`)."""
    REASON = "reason"
    """Dead-letter only: a :class:`RejectReason` value."""
    DETAIL = "detail"
    """Dead-letter only: human-readable explanation."""


# ------------------------------------------------------------------------------------- control
class ControlAction(StrEnum):
    INJECT = "inject"
    CLEAR = "clear"
    SET_INTERVAL = "set_interval"
    KILL = "kill"
    REVIVE = "revive"


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A message on ``fleetsim/control/<device_id>`` or ``fleetsim/control/all``."""

    action: ControlAction
    fault: FaultKind | None = None
    """Fault to inject or clear (None with ``clear`` clears every fault)."""
    duration_s: float | None = None
    """Seconds (simulated) the fault lasts; None means until cleared."""
    interval_s: float | None = None
    """New sampling interval in seconds, for ``set_interval``."""
    params: dict[str, float] = field(default_factory=dict)
    """Fault parameters (e.g. ``{"rate": 0.1}`` for drift in unit/min); keys depend on the fault."""
    site: str | None = None
    """Selector: only devices of this site among the topic's targets (use with ``control/all``)."""
    within: tuple[float, float, float] | None = None
    """Selector: ``(lat deg, lon deg, radius km)``; only devices currently that close to the point
    (mobile units are judged where they are when the command arrives)."""

    def encode(self) -> bytes:
        out: dict[str, Any] = {"action": self.action.value}
        if self.fault is not None:
            out["fault"] = self.fault.value
        if self.duration_s is not None:
            out["duration_s"] = self.duration_s
        if self.interval_s is not None:
            out["interval_s"] = self.interval_s
        if self.params:
            out["params"] = self.params
        if self.site is not None:
            out["site"] = self.site
        if self.within is not None:
            out["within"] = list(self.within)
        return json.dumps(out, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ControlCommand:
        """Parse a control message; raises :class:`ContractError` naming the allowed values."""
        try:
            obj = loads_strict(raw)
            action = ControlAction(obj["action"])
        except (ValueError, KeyError, TypeError) as exc:
            allowed = ", ".join(a.value for a in ControlAction)
            raise ContractError(f"control message needs action in ({allowed})") from exc
        try:
            fault = FaultKind(obj["fault"]) if obj.get("fault") is not None else None
        except ValueError as exc:
            allowed = ", ".join(f.value for f in FaultKind)
            raise ContractError(f"unknown fault {obj.get('fault')!r}; allowed: {allowed}") from exc
        params = obj.get("params") or {}
        if not isinstance(params, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()
        ):
            raise ContractError("control params must be an object of numbers")
        dur = obj.get("duration_s")
        interval = obj.get("interval_s")
        for name, v in (("duration_s", dur), ("interval_s", interval)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
                raise ContractError(f"{name} must be a positive number")
        site = obj.get("site")
        if site is not None and not isinstance(site, str):
            raise ContractError("site must be a string")
        within = obj.get("within")
        if within is not None:
            if (
                not isinstance(within, list)
                or len(within) != 3
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in within)
                or not LAT_RANGE[0] <= within[0] <= LAT_RANGE[1]
                or not LON_RANGE[0] <= within[1] <= LON_RANGE[1]
                or within[2] <= 0
            ):
                raise ContractError("within must be [lat, lon, radius_km] with a valid point and radius > 0")
            within = (float(within[0]), float(within[1]), float(within[2]))
        return cls(action, fault, dur, interval, {str(k): float(v) for k, v in params.items()}, site, within)


# --------------------------------------------------------------------------------- JSON Schema
def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the telemetry payload, generated from :data:`FIELDS`."""
    props: dict[str, Any] = {}
    for f in FIELDS:
        spec: dict[str, Any]
        if f.name == "device_id":
            spec = {"type": "string", "pattern": f"^{DEVICE_ID_PATTERN}$"}
        elif f.name == "ts":
            spec = {"type": "string", "format": "date-time"}
        elif f.name == "seq":
            spec = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
        elif f.name == "status":
            spec = {"enum": [s.value for s in Status], "default": "OK"}
        elif f.name == "fault":
            spec = {"enum": [*(k.value for k in FaultKind), None]}
        else:
            lo, hi = field_range(f.name)
            spec = {"type": ["number", "null"], "minimum": lo, "maximum": hi}
        spec["description"] = f.description + (f" [{f.unit}]" if f.unit else "")
        props[f.name] = spec
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fleetsim.dev/schemas/telemetry-v1.schema.json",
        "title": f"Fleetsim telemetry v{CONTRACT_VERSION}",
        "description": f"Published on sensors/<device_id>/telemetry; at most {MAX_PAYLOAD_BYTES} bytes. "
        "Unknown fields are ignored.",
        "type": "object",
        "required": [f.name for f in FIELDS if f.required],
        "properties": props,
        "additionalProperties": True,
    }
