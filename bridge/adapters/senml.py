"""SenML JSON (RFC 8428) packs -> contract readings.

A pack is a JSON array of records. Base fields (``bn``, ``bt``, ``bu``, ``bv``) apply to the
records that follow them until changed; the resolved name is ``bn + n``, the resolved time
``bt + t`` (seconds), the resolved value ``bv + v``. Records are grouped by resolved time: each
distinct time becomes one reading, in time order.

Mapping (the unit decides, the name's last component only when there is no unit):

=========  ===============  =========================================
unit       contract field   conversion
=========  ===============  =========================================
``Cel``    temperature      as is (°C)
``K``      temperature      − 273.15
``%RH``    humidity         as is
``ppm``    co2              as is (unless the name says another gas)
``Pa``     pressure         ÷ 100 (contract is hPa)
``hPa``    pressure         as is
``kPa``    pressure         × 10
``%EL``    battery          as is (remaining battery, %)
``lat``    lat              degrees
``lon``    lon              degrees
=========  ===============  =========================================

Records in other units (``V``, ``W``, ...) or with string/boolean/data values are ignored, as
unknown fields of a native payload are; a pack where nothing maps is ``unsupported_format``.

Device id: the topic's id slot when the route has one (the broker's ACL ties the topic to the
authenticated device; ``urn:dev:mac:…`` base names are hardware ids, not fleet ids); otherwise
the ``<id>`` of ``urn:dev:<type>:<id>:<measurement>`` names, or what precedes the last ``:`` or
``/`` of the name; all mapped records must agree.

Idempotency: SenML has no sequence number, so ``seq`` is the event time in epoch milliseconds
(deterministic for absolute times). Times below 2**28 are relative to "now" per the RFC; the
bridge's receive time is "now", so such readings are only as idempotent as that clock.
"""

from __future__ import annotations

from typing import Any

from fleetsim.bridge.adapters.base import Adapted, build_reading, finite_number, ms_from_seconds, parse_json
from fleetsim.kernel.contract import Rejected, RejectReason

RELATIVE_TIME_LIMIT = 2**28
"""RFC 8428 §4.5.3: resolved times below this many seconds are relative to the current time."""

_NAME_ALIASES: dict[str, str] = {
    "temp": "temperature",
    "temperature": "temperature",
    "humidity": "humidity",
    "hum": "humidity",
    "rh": "humidity",
    "co2": "co2",
    "carbon_dioxide": "co2",
    "pressure": "pressure",
    "press": "pressure",
    "battery": "battery",
    "batt": "battery",
    "bat": "battery",
    "lat": "lat",
    "latitude": "lat",
    "lon": "lon",
    "lng": "lon",
    "longitude": "lon",
}
"""Fallback when a record has no unit: name leaf -> contract field (value taken in contract units)."""

_UNITS: dict[str, tuple[str, float, float]] = {
    "Cel": ("temperature", 1.0, 0.0),
    "K": ("temperature", 1.0, -273.15),
    "%RH": ("humidity", 1.0, 0.0),
    "ppm": ("co2", 1.0, 0.0),
    "Pa": ("pressure", 0.01, 0.0),
    "hPa": ("pressure", 1.0, 0.0),
    "kPa": ("pressure", 10.0, 0.0),
    "%EL": ("battery", 1.0, 0.0),
    "lat": ("lat", 1.0, 0.0),
    "lon": ("lon", 1.0, 0.0),
}
"""SenML unit -> (contract field, factor, offset): contract value = v * factor + offset."""

_OTHER_GASES = frozenset({"co", "o3", "no2", "nh3", "so2", "ch4", "h2s", "voc", "tvoc", "h2"})
"""Name leaves whose ``ppm`` is not CO2."""

_BASE_TYPES: dict[str, type | tuple[type, ...]] = {
    "bn": str,
    "bu": str,
    "n": str,
    "u": str,
    "vs": str,
    "vd": str,
    "vb": bool,
}
_NUMERIC = ("bt", "bv", "bs", "bver", "t", "v", "s", "ut")
_KNOWN = frozenset({*_BASE_TYPES, *_NUMERIC})


def _leaf(name: str) -> str:
    for sep in (":", "/"):
        name = name.rstrip(sep)
        name = name.rsplit(sep, 1)[-1]
    return name.lower()


def device_from_name(name: str) -> str | None:
    """The device part of a resolved name: ``urn:dev:mac:0024befffe804ff1:temp`` ->
    ``0024befffe804ff1``, ``dev-1/temp`` or ``dev-1:temp`` -> ``dev-1``; None when the name has
    no device part (``temp``)."""
    if name.startswith("urn:dev:"):
        parts = name.split(":")
        return parts[3] if len(parts) >= 5 and parts[3] else None
    cut = max(name.rfind(":"), name.rfind("/"))
    return name[:cut] if cut > 0 else None


def _check_record(rec: Any, index: int) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise Rejected(RejectReason.SCHEMA, f"SenML record {index} is not an object")
    for key, value in rec.items():
        if key in _NUMERIC:
            finite_number(value, f"record {index} {key}")
        elif key in _BASE_TYPES:
            if not isinstance(value, _BASE_TYPES[key]) or (key != "vb" and isinstance(value, bool)):
                raise Rejected(RejectReason.SCHEMA, f"SenML record {index} {key} has the wrong type")
        elif key.endswith("_"):
            # RFC 8428 §4.4: unknown "must understand" fields make the pack unprocessable.
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, f"SenML field {key!r} must be understood")
    return rec


class SenmlAdapter:
    """RFC 8428 SenML JSON packs (``sensors/<id>/senml`` by default)."""

    name = "senml"

    def adapt(self, payload: bytes, topic_device_id: str | None, received_ms: int) -> list[Adapted]:
        pack = parse_json(payload)
        if not isinstance(pack, list) or not pack:
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, "not a SenML pack (a non-empty JSON array)")
        bn, bu, bt, bv = "", None, 0.0, 0.0
        groups: dict[int, dict[str, float]] = {}
        device_names: set[str] = set()
        for i, raw in enumerate(pack):
            rec = _check_record(raw, i)
            bn = rec.get("bn", bn)
            bu = rec.get("bu", bu)
            bt = float(rec.get("bt", bt))
            bv = float(rec.get("bv", bv))
            if "v" not in rec:
                continue  # base-only, string, boolean or data record: nothing to map
            name = bn + rec.get("n", "")
            if not name:
                raise Rejected(RejectReason.SCHEMA, f"SenML record {i} has no name (bn + n is empty)")
            unit = rec.get("u", bu)
            target = self._target(name, unit)
            if target is None:
                continue
            field, factor, offset = target
            value = (bv + float(rec["v"])) * factor + offset
            t = bt + float(rec.get("t", 0.0))
            ms = received_ms + round(t * 1000) if abs(t) < RELATIVE_TIME_LIMIT else ms_from_seconds(t, "time")
            value = round(value, 6)  # unit conversions leave float noise (1013.2000000000001)
            group = groups.setdefault(ms, {})
            if field in group and group[field] != value:
                raise Rejected(
                    RejectReason.SCHEMA, f"SenML pack has two different {field} values at one time"
                )
            group[field] = value
            device_names.add(device_from_name(name) or "")
        if not groups:
            raise Rejected(RejectReason.UNSUPPORTED_FORMAT, "no SenML record maps to a contract measurement")
        if topic_device_id is not None:
            device_id = topic_device_id
        elif len(device_names) == 1 and "" not in device_names:
            device_id = device_names.pop()
        else:
            raise Rejected(
                RejectReason.SCHEMA, "SenML names give no single device id; use a topic with the id"
            )
        return [build_reading(device_id, ms, values, received_ms) for ms, values in sorted(groups.items())]

    @staticmethod
    def _target(name: str, unit: str | None) -> tuple[str, float, float] | None:
        leaf = _leaf(name)
        if unit is None:
            field = _NAME_ALIASES.get(leaf)
            return (field, 1.0, 0.0) if field else None
        target = _UNITS.get(unit)
        if target is not None and target[0] == "co2" and leaf in _OTHER_GASES:
            return None
        return target
