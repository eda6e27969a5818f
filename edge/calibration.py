"""Calibration check: a simulated week of a fleet against the envelopes of real buildings.

``python -m fleetsim.edge.calibration [devices.csv] [--start ISO] [--days 7]`` runs the fleet at
``--speed max`` in memory and prints each envelope with its figure and a verdict; it exits 1 when
one is missed. The envelopes come from public datasets of real buildings (an office occupancy
dataset: indoor 19-24.4 °C, CO2 413-2,077 ppm rising with occupancy; the Intel Berkeley lab motes)
and from climatology (daily minimum near sunrise, maximum mid-afternoon); docs/simulator.md gives
the sources. ``tests/unit/test_edge_envelopes.py`` (slow) runs the same check.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fleetsim.edge.engine import Simulation
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.physics import sunrise_solar_hour
from fleetsim.edge.runner import Runner
from fleetsim.kernel.fleetfile import DeviceSpec, load_fleet

DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)
"""A Monday: the week covers five working days and a weekend."""
TZ = ZoneInfo("Europe/Paris")


@dataclass(frozen=True, slots=True)
class Envelope:
    name: str
    value: float
    low: float
    high: float
    unit: str

    @property
    def ok(self) -> bool:
        return self.low <= self.value <= self.high

    def line(self) -> str:
        verdict = "ok  " if self.ok else "MISS"
        return f"{verdict} {self.name:<58} {self.value:9.2f} {self.unit:<4} [{self.low:g}, {self.high:g}]"


class _Collect:
    """A publisher keeping (device, local time, values) of every reading."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, datetime, dict[str, Any]]] = []
        self.generation = 1

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        obj = json.loads(payload)
        ts = datetime.fromisoformat(obj["ts"].replace("Z", "+00:00")).astimezone(TZ)
        # Only what the envelopes read: a week of the default fleet is ~560k readings.
        keep = {k: obj.get(k) for k in ("temperature", "humidity", "co2", "status", "fault")}
        self.rows.append((device_id, ts, keep))
        return True

    def set_status(self, device_id: str, online: bool, abrupt: bool = False) -> None:
        pass

    def link_ok(self, device_id: str) -> bool:
        return True


def _hour(ts: datetime) -> float:
    return ts.hour + ts.minute / 60.0


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def simulate(specs: list[DeviceSpec], start: datetime, days: float, seed: int = 42) -> list[Any]:
    pub = _Collect()
    sim = Simulation(specs, pub, seed=seed, start=start, ledger=Ledger(None))
    Runner(sim, speed=None, duration_s=days * 86400).run()
    return pub.rows


def envelopes(specs: list[DeviceSpec], rows: list[Any], start: datetime, days: float) -> list[Envelope]:
    """The figures of the issue's comparison with real buildings, each with its envelope."""
    by_id = {s.device_id: s for s in specs}
    clean = [(by_id[d], ts, o) for d, ts, o in rows if o.get("fault") is None and o["status"] != "FAILURE"]

    def pick(pred: Callable[[DeviceSpec, datetime], bool], key: str) -> list[float]:
        return [o[key] for s, ts, o in clean if pred(s, ts) and o.get(key) is not None]

    def workday(ts: datetime) -> bool:
        return ts.weekday() < 5

    night_co2 = pick(lambda s, ts: s.indoor and 2 <= ts.hour < 5, "co2")
    office_busy = pick(
        lambda s, ts: s.occupancy == "office" and workday(ts) and (10 <= ts.hour < 12 or 14 <= ts.hour < 16),
        "co2",
    )
    office_lunch = pick(
        lambda s, ts: s.occupancy == "office" and workday(ts) and 12.75 <= _hour(ts) < 13.5, "co2"
    )
    meeting = pick(lambda s, ts: s.occupancy == "meeting", "co2")
    rooms: dict[str, list[float]] = defaultdict(list)
    for s, ts, o in clean:
        if (
            s.indoor
            and s.occupancy in ("office", "meeting", "lab", "retail")
            and workday(ts)
            and 9 <= ts.hour < 17
            and o.get("temperature") is not None
        ):
            rooms[s.device_id].append(o["temperature"])
    room_means = [_mean(v) for v in rooms.values()]
    occupied = sorted(x for v in rooms.values() for x in v)
    outdoor = [(ts, o) for s, ts, o in clean if not s.indoor and s.type == "fixed"]
    temps = [o["temperature"] for _, o in outdoor]
    hums = [o["humidity"] for _, o in outdoor]
    # The hourly mean profile of outdoor temperature (local clock), and each day's coldest hour.
    hourly: dict[int, list[float]] = defaultdict(list)
    daily: dict[Any, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for ts, o in outdoor:
        q = ts.hour * 4 + ts.minute // 15
        hourly[q].append(o["temperature"])
        daily[ts.date()][q].append(o["temperature"])
    profile = {q: _mean(v) for q, v in hourly.items()}
    warmest = max(profile, key=lambda q: profile[q]) / 4
    lat = statistics.fmean(s.lat for s in specs)
    lon = statistics.fmean(s.lon for s in specs)
    misses = []
    for day, quarters in sorted(daily.items()):
        if len(quarters) < 90:  # a partial day (the run's edges)
            continue
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=TZ)
        offset = noon.utcoffset()
        offset_h = offset.total_seconds() / 3600 if offset is not None else 0.0
        doy = noon.timetuple().tm_yday
        sunrise_local = sunrise_solar_hour(lat, doy) - lon / 15.0 + offset_h
        means = {q: _mean(v) for q, v in quarters.items()}
        coldest = min(means, key=lambda q: means[q]) / 4
        misses.append(abs(coldest - sunrise_local))
    p1, p99 = occupied[len(occupied) // 100], occupied[-len(occupied) // 100 - 1]
    busy, lunch_dip = _mean(office_busy), _mean(office_busy) - _mean(office_lunch)
    rh_corr, sunrise_median = statistics.correlation(temps, hums), statistics.median(misses)
    return [
        Envelope("night CO2 (indoor, 02-05 h), mean", _mean(night_co2), 410, 460, "ppm"),
        Envelope("occupied offices CO2 (workdays 10-12, 14-16 h), mean", busy, 850, 1050, "ppm"),
        Envelope("office lunch dip (12:45-13:30 h) below the busy mean", lunch_dip, 40, 400, "ppm"),
        Envelope("meeting rooms CO2, max", max(meeting), 1700, 2100, "ppm"),
        Envelope("occupied rooms (workdays 9-17 h): coldest room's mean", min(room_means), 18, 23, "degC"),
        Envelope("occupied rooms (workdays 9-17 h): warmest room's mean", max(room_means), 18, 23, "degC"),
        Envelope("occupied rooms, readings' 1st percentile (dataset: 19)", p1, 19, 24.4, "degC"),
        Envelope("occupied rooms, readings' 99th percentile (dataset: 24.4)", p99, 19, 24.4, "degC"),
        Envelope("outdoor temperature/RH correlation", rh_corr, -0.99, -0.85, ""),
        Envelope("outdoor warmest quarter-hour of the mean day (local)", warmest, 13.5, 17.5, "h"),
        Envelope("outdoor daily minimum minus sunrise (local), median |diff|", sunrise_median, 0, 1, "h"),
        Envelope("outdoor daily minimum minus sunrise (local), worst day", max(misses), 0.0, 2.5, "h"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("devices", nargs="?", type=Path, default=Path("devices.csv"))
    parser.add_argument("--start", default=DEFAULT_START.isoformat())
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    specs = load_fleet(args.devices)
    start = datetime.fromisoformat(args.start).astimezone(UTC)
    rows = simulate(specs, start, args.days, args.seed)
    end = start + timedelta(days=args.days)
    print(f"{len(specs)} devices, {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} UTC, {len(rows):,} readings")
    found = envelopes(specs, rows, start, args.days)
    for env in found:
        print(env.line())
    return 0 if all(e.ok for e in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
