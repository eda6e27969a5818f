"""The fleet description: ``devices.csv`` rows validated into :class:`DeviceSpec`, plus the
geometry (distances, routes) and the ``--scale`` / ``--shard`` transforms.

Every validation error names the file, the row (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import io
import math
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from fleetsim.kernel.contract import LAT_RANGE, LON_RANGE, is_valid_device_id
from fleetsim.kernel.errors import FleetFileError
from fleetsim.kernel.faultcatalog import validate_profile

COLUMNS: Final = (
    "device_id",
    "type",
    "site",
    "indoor",
    "lat",
    "lon",
    "altitude_m",
    "interval_s",
    "battery_mah",
    "replace_after_s",
    "occupancy",
    "temp_offset_c",
    "speed_kmh",
    "route",
    "fault_profile",
)
REQUIRED: Final = frozenset({"device_id", "type", "site", "lat", "lon", "interval_s"})
DEVICE_TYPES: Final = ("fixed", "mobile")
OCCUPANCY_KINDS: Final = ("none", "office", "meeting", "retail", "lab", "home")
EARTH_RADIUS_KM: Final = 6371.0088


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device, as described by a ``devices.csv`` row."""

    device_id: str
    """Contract device id (``[A-Za-z0-9_.-]{1,64}``)."""
    type: str
    """``fixed`` or ``mobile``."""
    site: str
    """Site name; devices of a site share its climate offset and occupancy schedule."""
    indoor: bool
    """Indoor devices see HVAC-controlled temperature and occupancy-driven CO2."""
    lat: float
    """Latitude in degrees (WGS84); the start point of a mobile unit."""
    lon: float
    """Longitude in degrees (WGS84)."""
    altitude_m: float = 170.0
    """Altitude in metres above sea level (sets the station pressure)."""
    interval_s: float = 60.0
    """Sampling interval in seconds."""
    battery_mah: float = 0.0
    """Battery capacity in mAh; 0 means mains powered (battery reported as null)."""
    replace_after_s: float = 0.0
    """Seconds after depletion until a technician swaps the battery; 0 means never."""
    occupancy: str = "none"
    """Occupancy schedule driving indoor CO2: one of :data:`OCCUPANCY_KINDS`."""
    temp_offset_c: float = 0.0
    """Local temperature offset in °C (heat island, sunny facade, server room...)."""
    speed_kmh: float = 0.0
    """Mean travel speed of a mobile unit in km/h."""
    route: tuple[tuple[float, float], ...] = ()
    """Waypoints ``(lat, lon)`` in degrees of a mobile unit; travelled back and forth."""
    fault_profile: str = "none"
    """Named profile (``fleetsim.kernel.faultcatalog.PROFILES``) or a schedule ``kind@start+dur|...``."""


def _err(path: Path, row: int, column: str, message: str) -> FleetFileError:
    return FleetFileError(f"{path}: row {row}, column {column!r}: {message}")


def _float(path: Path, row: int, col: str, raw: str, lo: float, hi: float, default: float) -> float:
    if raw == "":
        if col in REQUIRED:
            raise _err(path, row, col, "is required")
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise _err(path, row, col, f"{raw!r} is not a number") from exc
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _err(path, row, col, f"{raw} is outside [{lo}, {hi}]")
    return value


def parse_route(raw: str) -> tuple[tuple[float, float], ...]:
    """``lat:lon;lat:lon;...`` -> waypoints; raises ValueError with the bad part."""
    points = []
    for raw_part in raw.split(";"):
        part = raw_part.strip()
        if not part:
            continue
        lat_s, sep, lon_s = part.partition(":")
        if not sep:
            raise ValueError(f"waypoint {part!r} is not lat:lon")
        lat, lon = float(lat_s), float(lon_s)
        if not (LAT_RANGE[0] <= lat <= LAT_RANGE[1] and LON_RANGE[0] <= lon <= LON_RANGE[1]):
            raise ValueError(f"waypoint {part!r} is outside WGS84 ranges")
        points.append((lat, lon))
    return tuple(points)


def _bool(path: Path, row: int, col: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("", "false", "0", "no"):
        return False
    raise _err(path, row, col, f"{raw!r} is not a boolean; allowed: true, false")


def parse_row(path: Path, row: int, rec: dict[str, str]) -> DeviceSpec:
    """Validate one csv record (``row`` is its 1-based line number) into a :class:`DeviceSpec`."""
    get = {k: (rec.get(k) or "").strip() for k in COLUMNS}
    device_id = get["device_id"]
    if not is_valid_device_id(device_id):
        raise _err(path, row, "device_id", f"{device_id!r} does not match [A-Za-z0-9_.-]{{1,64}}")
    dtype = get["type"]
    if dtype not in DEVICE_TYPES:
        raise _err(path, row, "type", f"{dtype!r}; allowed: {', '.join(DEVICE_TYPES)}")
    if not get["site"]:
        raise _err(path, row, "site", "is required")
    occupancy = get["occupancy"] or "none"
    if occupancy not in OCCUPANCY_KINDS:
        raise _err(path, row, "occupancy", f"{occupancy!r}; allowed: {', '.join(OCCUPANCY_KINDS)}")
    try:
        route = parse_route(get["route"])
    except ValueError as exc:
        raise _err(path, row, "route", str(exc)) from exc
    if dtype == "mobile" and len(route) < 2:
        raise _err(path, row, "route", "a mobile device needs at least 2 waypoints lat:lon;lat:lon")
    if dtype == "fixed" and route:
        raise _err(path, row, "route", "only mobile devices have a route")
    speed = _float(path, row, "speed_kmh", get["speed_kmh"], 0.0, 300.0, 0.0)
    if dtype == "mobile" and speed <= 0:
        raise _err(path, row, "speed_kmh", "a mobile device needs a speed > 0")
    profile = get["fault_profile"] or "none"
    try:
        validate_profile(profile)
    except ValueError as exc:
        raise _err(path, row, "fault_profile", str(exc)) from exc
    return DeviceSpec(
        device_id=device_id,
        type=dtype,
        site=get["site"],
        indoor=_bool(path, row, "indoor", get["indoor"]),
        lat=_float(path, row, "lat", get["lat"], *LAT_RANGE, 0.0),
        lon=_float(path, row, "lon", get["lon"], *LON_RANGE, 0.0),
        altitude_m=_float(path, row, "altitude_m", get["altitude_m"], -400.0, 8000.0, 170.0),
        interval_s=_float(path, row, "interval_s", get["interval_s"], 0.1, 86_400.0, 60.0),
        battery_mah=_float(path, row, "battery_mah", get["battery_mah"], 0.0, 1e6, 0.0),
        replace_after_s=_float(path, row, "replace_after_s", get["replace_after_s"], 0.0, 1e9, 0.0),
        occupancy=occupancy,
        temp_offset_c=_float(path, row, "temp_offset_c", get["temp_offset_c"], -30.0, 30.0, 0.0),
        speed_kmh=speed,
        route=route,
        fault_profile=profile,
    )


def load_fleet(path: Path) -> list[DeviceSpec]:
    """Read and validate ``devices.csv``. Raises :class:`FleetFileError` naming row and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetFileError(f"{path}: cannot read the fleet file: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise FleetFileError(f"{path}: row 1, unknown column(s) {unknown}; allowed: {', '.join(COLUMNS)}")
    missing = sorted(REQUIRED - set(header))
    if missing:
        raise FleetFileError(f"{path}: row 1, missing required column(s) {missing}")
    devices: list[DeviceSpec] = []
    seen: dict[str, int] = {}
    for rec in reader:
        index = reader.line_num  # the file's line number, as an editor or spreadsheet shows it
        if None in rec:
            raise _err(path, index, "(extra)", "more fields than the header has columns")
        spec = parse_row(path, index, rec)
        if spec.device_id in seen:
            raise _err(path, index, "device_id", f"duplicate of row {seen[spec.device_id]}")
        seen[spec.device_id] = index
        devices.append(spec)
    if not devices:
        raise FleetFileError(f"{path}: no devices")
    return devices


# ------------------------------------------------------------------------------------- geometry
def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def offset_point(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m``/``east_m`` metres away (flat-earth approximation, fine below ~10 km)."""
    dlat = north_m / 111_320.0
    dlon = east_m / (111_320.0 * max(0.01, math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


# ---------------------------------------------------------------------------- scale and shards
def scale_fleet(
    devices: Sequence[DeviceSpec], factor: int, seed: int, jitter_m: float = 250.0
) -> list[DeviceSpec]:
    """``factor`` copies of the fleet; copy k>0 gets ids ``<id>-c<k>`` and positions (and routes)
    jittered by up to ``jitter_m`` metres, deterministically from ``seed``."""
    if factor <= 1:
        return list(devices)
    out = list(devices)
    for k in range(1, factor):
        for spec in devices:
            rng = random.Random(f"{seed}:clone:{spec.device_id}:{k}")
            north, east = rng.uniform(-jitter_m, jitter_m), rng.uniform(-jitter_m, jitter_m)
            lat, lon = offset_point(spec.lat, spec.lon, north, east)
            route = tuple(offset_point(a, b, north, east) for a, b in spec.route)
            clone_id = f"{spec.device_id}-c{k}"
            if not is_valid_device_id(clone_id):
                raise FleetFileError(f"device id {spec.device_id!r} is too long to clone with --scale")
            out.append(replace(spec, device_id=clone_id, lat=lat, lon=lon, route=route))
    return out


def parse_shard(raw: str) -> tuple[int, int]:
    """``i/n`` -> (i, n) with 0 <= i < n."""
    try:
        i_s, n_s = raw.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError as exc:
        raise FleetFileError(f"shard {raw!r} is not i/n (e.g. 0/4)") from exc
    if n < 1 or not 0 <= i < n:
        raise FleetFileError(f"shard {raw!r}: need 0 <= i < n")
    return i, n


def shard_fleet(devices: Iterable[DeviceSpec], index: int, count: int) -> list[DeviceSpec]:
    """The devices of shard ``index`` of ``count``: a stable hash of the id, so a device always
    lands in the same shard whatever the fleet's order or size."""
    if count == 1:
        return list(devices)
    return [d for d in devices if zlib.crc32(d.device_id.encode()) % count == index]
