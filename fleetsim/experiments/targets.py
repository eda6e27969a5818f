"""Resolve a campaign against a fleet: which devices each fault hits, and the simulator input.

The campaign is handed to the simulator through its own fleet-file API: every targeted device's
``fault_profile`` column becomes an explicit schedule ``kind@start+duration?k=v|...``, which the
simulator runs as SimPy processes at exact simulated times (so injections land where they should
even at ``speed = max``). Pure functions, apart from :func:`write_fleet_csv`.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fleetsim.experiments.scenario import FaultSpec, Scenario, Target
from fleetsim.kernel.errors import ExperimentError
from fleetsim.kernel.fleetfile import COLUMNS, DeviceSpec, haversine_km, scale_fleet


@dataclass(frozen=True, slots=True)
class Injection:
    """One planned fault on one device."""

    device_id: str
    fault_index: int
    """Index of the campaign entry it comes from."""
    spec: FaultSpec


def matches(target: Target, dev: DeviceSpec) -> bool:
    """Whether ``dev`` passes the target's filters (before the fraction is sampled)."""
    if target.devices and dev.device_id not in target.devices:
        return False
    if target.site is not None and dev.site != target.site:
        return False
    if target.type is not None and dev.type != target.type:
        return False
    if target.within is not None:
        w = target.within
        # Mobile units are judged at their start point: the campaign is fixed before the run.
        if haversine_km(w.lat, w.lon, dev.lat, dev.lon) > w.km:
            return False
    return True


def select(target: Target, devices: Sequence[DeviceSpec], seed: int, salt: str = "") -> list[str]:
    """Ids hit by ``target``, sorted. ``fraction`` samples ``max(1, round(f * n))`` of the ``n``
    filtered devices with a RNG seeded by ``seed`` and ``salt`` (the same scenario always hits
    the same devices, and two entries with different salts draw independently)."""
    ids = sorted(d.device_id for d in devices if matches(target, d))
    if target.fraction >= 1.0 or not ids:
        return ids
    k = max(1, round(target.fraction * len(ids)))
    rng = random.Random(f"{seed}:target:{salt}")
    return sorted(rng.sample(ids, k))


def plan(scenario: Scenario, devices: Sequence[DeviceSpec]) -> list[Injection]:
    """Every (device, fault) of the campaign, in campaign order."""
    out = []
    for i, f in enumerate(scenario.faults):
        for dev_id in select(f.target, devices, scenario.seed, salt=str(i)):
            out.append(Injection(dev_id, i, f))
    return out


def schedule_text(injections: Sequence[Injection]) -> str:
    """The ``fault_profile`` schedule of one device: ``kind@start+duration?k=v|...``."""
    parts = []
    for inj in sorted(injections, key=lambda j: j.spec.at_s):
        f = inj.spec
        query = "&".join(f"{k}={v!r}" for k, v in sorted(f.params.items()))
        parts.append(f"{f.kind.value}@{f.at_s!r}+{f.duration_s!r}" + (f"?{query}" if query else ""))
    return "|".join(parts)


def prepare_fleet(scenario: Scenario, base: Sequence[DeviceSpec]) -> tuple[list[DeviceSpec], list[Injection]]:
    """The fleet the simulator runs (scaled, interval overridden, profiles replaced by the
    campaign's schedules) and the planned injections."""
    devices = scale_fleet(base, scenario.scale, scenario.seed)
    if scenario.interval_s is not None:
        devices = [replace(d, interval_s=scenario.interval_s) for d in devices]
    known = {d.device_id for d in devices}
    for f in scenario.faults:
        unknown = sorted(set(f.target.devices) - known)
        if unknown:
            raise ExperimentError(
                f"{scenario.path}:{f.line}: device(s) {', '.join(unknown)}"
                f" not in the fleet {scenario.fleet_file}"
            )
    injections = plan(scenario, devices)
    by_dev: dict[str, list[Injection]] = {}
    for inj in injections:
        by_dev.setdefault(inj.device_id, []).append(inj)
    out = []
    for d in devices:
        mine = by_dev.get(d.device_id)
        # A named profile and explicit entries cannot share the column: the campaign wins.
        profile = schedule_text(mine) if mine else "none"
        if scenario.keep_profiles and not mine:
            profile = d.fault_profile
        out.append(replace(d, fault_profile=profile))
    return out, injections


def write_fleet_csv(devices: Sequence[DeviceSpec], path: Path) -> Path:
    """Write specs back as a ``devices.csv`` the simulator's loader accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for d in devices:
            w.writerow(
                [
                    d.device_id, d.type, d.site, str(d.indoor).lower(), repr(d.lat), repr(d.lon),
                    repr(d.altitude_m), repr(d.interval_s), repr(d.battery_mah), repr(d.replace_after_s),
                    d.occupancy, repr(d.temp_offset_c), repr(d.speed_kmh) if d.speed_kmh else "",
                    ";".join(f"{a!r}:{b!r}" for a, b in d.route), d.fault_profile,
                ]
            )  # fmt: skip
    return path
