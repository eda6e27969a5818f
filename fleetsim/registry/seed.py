"""Seed the registry from ``devices.csv`` (idempotent): called by ``fleetsim up`` once PostgreSQL
is ready, and usable on its own (``fleetsim device seed``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import RegistryError
from fleetsim.kernel.fleetfile import load_fleet, scale_fleet
from fleetsim.registry import store
from fleetsim.registry.model import DeviceRecord

log = logging.getLogger("fleetsim.registry")


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What one seeding pass did."""

    devices: int
    """Devices described by the fleet file (after ``--scale``)."""
    changed: int
    """Rows inserted or updated (0 on a restart with an unchanged file)."""
    path: Path | None
    """The fleet file read, or None when there was none."""


def simulated_devices(cfg: FleetsimConfig, path: Path | None = None) -> list[DeviceRecord]:
    """The fleet file as registry rows, scaled like the simulator scales it (``simulation.scale``),
    so every id the simulator publishes is known to the registry."""
    specs = load_fleet(path or cfg.simulation.devices_file)
    specs = scale_fleet(specs, cfg.simulation.scale, cfg.simulation.seed)
    return [
        DeviceRecord(
            device_id=s.device_id,
            kind="simulated",
            type=s.type,
            site=s.site,
            lat=s.lat,
            lon=s.lon,
            payload_format="native",
            interval_s=s.interval_s,
            indoor=s.indoor,
            placed=True,
        )
        for s in specs
    ]


def seed_devices(cfg: FleetsimConfig, devices: Sequence[DeviceRecord]) -> int:
    """Upsert ``devices`` (simulated) in one transaction as the writer role; rows changed."""
    try:
        conn = pg_connect(cfg, "writer")
    except Exception as exc:
        raise RegistryError(f"cannot reach PostgreSQL to seed the registry: {exc}") from exc
    try:
        with conn:
            return store.upsert_simulated(conn, devices)
    finally:
        conn.close()


def seed_from_csv(cfg: FleetsimConfig, path: Path | None = None) -> SeedResult:
    """Upsert the fleet file's devices into ``devices``. A missing default file is not an error
    (a stack with only real devices has none); a missing explicit file is."""
    fleet = path or cfg.simulation.devices_file
    if not fleet.is_file():
        if path is not None:
            raise RegistryError(f"fleet file {fleet} does not exist")
        log.info("no fleet file at %s: registry not seeded", fleet)
        return SeedResult(0, 0, None)
    devices = simulated_devices(cfg, fleet)
    changed = seed_devices(cfg, devices)
    log.info("registry seeded from %s: %d devices, %d rows changed", fleet, len(devices), changed)
    return SeedResult(len(devices), changed, fleet)


def seed_at_startup(cfg: FleetsimConfig, report: Callable[[str], None] = log.info) -> SeedResult:
    """``fleetsim up``'s hook, right after PostgreSQL is ready: seed and say what happened."""
    result = seed_from_csv(cfg)
    if result.path is None:
        report(f"  {'registry':<10} no fleet file at {cfg.simulation.devices_file}: not seeded")
    else:
        what = f"{result.devices} simulated devices from {result.path.name} ({result.changed} changed)"
        report(f"  {'registry':<10} {what}")
    return result
