"""``fleetsim sim --replay readings.csv``: republish recorded readings, paced by their timestamps.

The CSV has the contract's field names as header (``device_id,ts,seq,temperature,...``; extra
columns are ignored). Every row is validated with the contract; a bad row is an error naming
its row and column. Timestamps are kept (``shift="original"``) or moved so the first reading
lands on the run's start instant (``shift="start"``); gaps between readings are preserved.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import simpy

from fleetsim.edge.engine import Simulation
from fleetsim.kernel.contract import (
    FIELDS,
    Reading,
    Rejected,
    encode_reading,
    format_ts,
    reading_from_obj,
    telemetry_topic,
)
from fleetsim.kernel.errors import FleetFileError

_NUMERIC = {f.name for f in FIELDS if f.type in ("number", "integer")}
_NAMES = {f.name for f in FIELDS}


def load_replay(path: Path) -> list[Reading]:
    """Validated readings sorted by timestamp; raises :class:`FleetFileError` (row, column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetFileError(f"{path}: cannot read the replay file: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [f.name for f in FIELDS if f.required and f.name not in (reader.fieldnames or [])]
    if missing:
        raise FleetFileError(f"{path}: row 1, missing required column(s) {missing}")
    out = []
    for rec in reader:
        row = reader.line_num
        obj: dict[str, Any] = {}
        for name in (f.name for f in FIELDS):
            raw = (rec.get(name) or "").strip()
            if raw == "":
                continue
            if name in _NUMERIC:
                try:
                    obj[name] = int(raw) if name == "seq" else float(raw)
                except ValueError as exc:
                    raise FleetFileError(
                        f"{path}: row {row}, column {name!r}: {raw!r} is not a number"
                    ) from exc
            else:
                obj[name] = raw
        try:
            out.append(reading_from_obj(obj, topic_device_id=None))
        except Rejected as exc:
            # The contract's details start with the field's name ("humidity=140 outside ...").
            first = exc.detail.replace("=", " ").split(" ", 1)[0]
            column = first if first in _NAMES else "?"
            raise FleetFileError(f"{path}: row {row}, column {column!r}: {exc}") from exc
    if not out:
        raise FleetFileError(f"{path}: no readings")
    out.sort(key=lambda r: r.ts)
    return out


def replay_process(
    sim: Simulation, readings: list[Reading], start: datetime, shift: str = "original"
) -> Generator[simpy.Event, Any, None]:
    """Publish ``readings`` at their offsets from the first one (simulated seconds)."""
    first = readings[0].ts
    delta = (start - first) if shift == "start" else None
    pub, stats = sim.ctx.publisher, sim.ctx.stats
    for r in readings:
        wait = (r.ts - first).total_seconds() - sim.env.now
        if wait > 0:
            yield sim.env.timeout(wait)
        ts = r.ts + delta if delta is not None else r.ts
        payload = encode_reading(
            r.device_id, format_ts(ts), r.seq, r.temperature, r.humidity, r.co2, r.pressure,
            r.battery, r.lat, r.lon, r.status.value, r.fault,
        )  # fmt: skip
        if pub.publish(r.device_id, telemetry_topic(r.device_id), payload):
            stats.published += 1
        else:
            stats.dropped_overflow += 1  # no buffering in replay: counted, never silent
