"""What every payload adapter provides, and the helpers they share.

An adapter turns one MQTT payload into zero or more contract readings, each already encoded
with the contract. It raises :class:`fleetsim.kernel.contract.Rejected` for anything it refuses and
nothing else (a property test holds every adapter to that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fleetsim.kernel.contract import (
    EARLIEST_TS,
    MAX_SEQ,
    Reading,
    Rejected,
    RejectReason,
    encode_reading,
    format_ts_ms,
    is_valid_device_id,
    loads_strict,
    reading_from_wire,
    validate_obj,
)


class Adapted:
    """One contract record produced by an adapter.

    ``device_id`` is the Kafka key; ``value`` the contract v1 JSON bytes (for native payloads the
    original bytes, never re-encoded); ``reading`` the validated :class:`Reading`, built on first
    access when the adapter only kept the validated wire struct (the native hot path forwards
    bytes and never needs it: building a Reading costs more than validating the payload).
    """

    __slots__ = ("_reading", "_wire", "device_id", "value")

    def __init__(
        self, device_id: str, value: bytes, reading: Reading | None = None, wire: Any = None
    ) -> None:
        self.device_id = device_id
        self.value = value
        self._reading = reading
        self._wire = wire

    @property
    def reading(self) -> Reading | None:
        if self._reading is None and self._wire is not None:
            self._reading = reading_from_wire(self._wire)
        return self._reading

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Adapted):
            return NotImplemented
        return (self.device_id, self.value) == (other.device_id, other.value)

    def __hash__(self) -> int:
        return hash((self.device_id, self.value))

    def __repr__(self) -> str:
        return f"Adapted(device_id={self.device_id!r}, value={self.value!r})"


class Adapter(Protocol):
    """A payload format. ``name`` is the ``format`` value in config and in the Kafka header."""

    name: str

    def adapt(self, payload: bytes, topic_device_id: str | None, received_ms: int) -> list[Adapted]:
        """Decode ``payload`` (already within the size cap). Raises only :class:`Rejected`."""
        ...


def parse_json(payload: bytes) -> Any:
    """Strict UTF-8 JSON (NaN/Infinity refused) with the contract's reason codes."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(RejectReason.INVALID_UTF8, str(exc)[:200]) from exc
    try:
        return loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected(RejectReason.INVALID_JSON, str(exc)[:200]) from exc


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float if it is a finite JSON number (bools are not numbers), else ``schema``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(RejectReason.SCHEMA, f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise Rejected(RejectReason.INVALID_JSON, f"{what} is not finite")
    return float(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(ts: datetime) -> int:
    """Aware datetime -> integer epoch milliseconds (floor; exact, no float rounding)."""
    return (ts - _EPOCH) // timedelta(milliseconds=1)


def time_seq(ms: int) -> int:
    """The idempotency key of a reading that carries no ``seq``: its event time in epoch ms.

    Deterministic (a redelivered message gets the same key, so downstream de-duplication on
    ``(device_id, seq)`` drops it) and increasing with event time, as the contract wants.
    """
    if not 0 <= ms <= MAX_SEQ:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"event time {ms} ms is not a valid sequence key")
    return ms


def ms_from_seconds(seconds: float, what: str) -> int:
    """Epoch seconds (float) -> epoch ms, refusing values no datetime can hold."""
    if not -1e12 < seconds < 1e12:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"{what}={seconds} s is not a plausible epoch time")
    return round(seconds * 1000)


def build_reading(
    device_id: str,
    ms: int,
    values: Mapping[str, float | None],
    received_ms: int,
) -> Adapted:
    """Validate adapter output with the contract's own rules and encode it.

    Going through the contract's :func:`validate_obj` (msgspec on :data:`WireReading`, then
    :func:`reading_from_obj` for anything refused) keeps one definition of ranges and types: an
    adapted reading is refused for exactly the reasons (and details) a native one is.
    """
    if not is_valid_device_id(device_id):
        raise Rejected(RejectReason.SCHEMA, "device id does not match [A-Za-z0-9_.-]{1,64}")
    if ms < int(EARLIEST_TS.timestamp() * 1000):
        raise Rejected(RejectReason.OUT_OF_RANGE, f"event time {ms} ms is before {EARLIEST_TS:%Y-%m-%d}")
    if ms > received_ms + 10 * 365 * 86_400_000:
        # Far beyond any clock skew: refuse before datetime arithmetic can overflow.
        raise Rejected(RejectReason.OUT_OF_RANGE, f"event time {ms} ms is far in the future")
    obj: dict[str, Any] = {"device_id": device_id, "ts": format_ts_ms(ms), "seq": time_seq(ms)}
    obj.update(values)
    now = datetime.fromtimestamp(received_ms / 1000, UTC)
    w = validate_obj(obj, now=now)
    # encode_reading: the same bytes as Reading.encode() (tests/unit/test_edge_encode.py), several
    # times cheaper; the values are already validated, so it never needs its fallback.
    value = encode_reading(
        w.device_id, w.ts, w.seq, w.temperature, w.humidity, w.co2, w.pressure, w.battery, w.lat, w.lon,
        w.status.value, w.fault,
    )  # fmt: skip
    return Adapted(device_id, value, wire=w)
