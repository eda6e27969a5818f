"""Tasmota ``tele/<device>/SENSOR`` telemetry -> contract readings.

Example payload (Tasmota 13/14)::

    {"Time":"2026-11-29T05:40:00","BME280":{"Temperature":21.4,"Humidity":45.2,
     "DewPoint":9.1,"Pressure":1013.2},"SCD40":{"CarbonDioxide":612,"eCO2":600,
     "Temperature":22.9,"Humidity":41.0,"DewPoint":9.0},"PressureUnit":"hPa","TempUnit":"C"}

Sensor blocks are recognised by name, with Tasmota's ``-<address>`` suffix for several
sensors of a kind (``SHT3X-0x44``). When several blocks report the same quantity the first in
:data:`PRIORITY` wins: dedicated T/RH chips first, the SCD4x last because its temperature
reads high from self-heating. Unknown blocks (``ANALOG``, ``ENERGY`` …) are ignored; a payload
with no known block is ``unsupported_format``.

Units: ``TempUnit`` ``C`` (default) or ``F``; ``PressureUnit`` ``hPa`` (default), ``mmHg`` or
``inHg``; converted to the contract's °C and hPa.

Time assumption: Tasmota's ``Time`` is the device's LOCAL time and carries no offset unless
``SetOption52 1`` is set. An offset, when present, is honoured; without one the bridge takes
the time as UTC. Run Tasmota devices with ``Timezone 0`` (or ``SetOption52 1``) so that holds.

Idempotency: Tasmota sends no sequence number; ``seq`` is the event time in epoch ms (the
``Time`` field, one-second resolution: ``TelePeriod`` is at least 10 s).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetsim.bridge.adapters.base import Adapted, build_reading, epoch_ms, finite_number, parse_json
from fleetsim.kernel.contract import Rejected, RejectReason

PRIORITY: tuple[str, ...] = (
    "SHT3X",
    "SHT4X",
    "SHT2X",
    "AM2301",
    "DS18B20",
    "BME280",
    "BME680",
    "BMP280",
    "BMP180",
    "SCD40",
    "SCD41",
    "SCD30",
)
"""Known sensor blocks, best source of temperature/humidity first."""

_FIELDS: dict[str, str] = {
    "Temperature": "temperature",
    "Humidity": "humidity",
    "Pressure": "pressure",
    "CarbonDioxide": "co2",
}
"""Tasmota block key -> contract field (``eCO2`` is an estimate from VOC sensors: not mapped)."""

_PRESSURE_TO_HPA: dict[str, float] = {"hPa": 1.0, "mmHg": 1.3332239, "inHg": 33.863886}


def _block_kind(key: str) -> str | None:
    base = key.split("-", 1)[0].upper()
    return base if base in PRIORITY else None


def parse_time(value: Any) -> int:
    """Tasmota ``Time`` -> epoch ms (no offset: taken as UTC, see the module docstring)."""
    if not isinstance(value, str) or len(value) > 40 or "T" not in value:
        raise Rejected(RejectReason.SCHEMA, "Tasmota Time missing or not an ISO 8601 date-time")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Rejected(RejectReason.SCHEMA, f"Tasmota Time {value!r} is not ISO 8601") from exc
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return epoch_ms(ts)


class TasmotaAdapter:
    """Tasmota ``SENSOR`` telemetry (``tele/<device>/SENSOR`` by default)."""

    name = "tasmota"

    def adapt(self, payload: bytes, topic_device_id: str | None, received_ms: int) -> list[Adapted]:
        obj = parse_json(payload)
        if not isinstance(obj, dict):
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, "not a Tasmota SENSOR object")
        if topic_device_id is None:
            raise Rejected(RejectReason.SCHEMA, "Tasmota payloads carry no device id: route by topic")
        blocks = sorted(
            ((kind, key) for key in obj if (kind := _block_kind(key)) is not None),
            key=lambda kk: (PRIORITY.index(kk[0]), kk[1]),
        )
        if not blocks:
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, "no known Tasmota sensor block")
        temp_unit = obj.get("TempUnit", "C")
        if not isinstance(temp_unit, str) or temp_unit not in ("C", "F"):
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, f"TempUnit {temp_unit!r} is not C or F")
        pressure_unit = obj.get("PressureUnit", "hPa")
        # isinstance first: a JSON list or object is unhashable and would raise TypeError here.
        if not isinstance(pressure_unit, str) or pressure_unit not in _PRESSURE_TO_HPA:
            raise Rejected(
                RejectReason.UNSUPPORTED_FORMAT, f"PressureUnit {pressure_unit!r} is not hPa, mmHg or inHg"
            )
        ms = parse_time(obj.get("Time"))
        values: dict[str, float | None] = {}
        for _, key in blocks:
            block = obj[key]
            if not isinstance(block, dict):
                raise Rejected(RejectReason.SCHEMA, f"Tasmota block {key} is not an object")
            for tkey, field in _FIELDS.items():
                if field in values or tkey not in block:
                    continue
                raw = block[tkey]
                if raw is None:
                    continue  # Tasmota reports null for a sensor that failed this period
                value = finite_number(raw, f"{key}.{tkey}")
                if field == "temperature" and temp_unit == "F":
                    value = (value - 32.0) * 5.0 / 9.0
                elif field == "pressure":
                    value *= _PRESSURE_TO_HPA[pressure_unit]
                values[field] = round(value, 6)
        if not values:
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, "Tasmota sensor blocks hold no mapped value")
        return [build_reading(topic_device_id, ms, values, received_ms)]
