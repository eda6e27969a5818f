"""What every payload adapter provides, and the helpers they share.

An adapter turns one MQTT payload into zero or more contract readings, each already encoded
with the contract. It raises :class:`fleetsim.kernel.contract.Rejected` for anything it refuses and
nothing else (a property test holds every adapter to that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fleetsim.kernel.contract import (
    EARLIEST_TS,
    MAX_SEQ,
    Reading,
    Rejected,
    RejectReason,
    format_ts_ms,
    is_valid_device_id,
    loads_strict,
    reading_from_obj,
)


@dataclass(frozen=True, slots=True)
class Adapted:
    """One contract record produced by an adapter."""

    device_id: str
    """Kafka key: the reading's device id."""
    value: bytes
    """Contract v1 JSON bytes (for native payloads: the original bytes, never re-encoded)."""
    reading: Reading | None = None
    """The validated reading, when the adapter built one (native forwards bytes; ``None`` is
    allowed so the hot path needn't keep it)."""


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

    Going through :func:`reading_from_obj` (not a hand-made Reading) keeps one definition of
    ranges and types: an adapted reading is refused for exactly the reasons a native one is.
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
    reading = reading_from_obj(obj, topic_device_id=None, now=now)
    return Adapted(device_id, reading.encode(), reading)
