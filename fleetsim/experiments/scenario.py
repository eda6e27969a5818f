"""Scenario files (TOML): the fleet, the run and a campaign of faults, validated into dataclasses.

``tomllib`` reports syntax errors with a position but gives no positions for valid documents, so
semantic errors are located by :class:`_Locator`, which finds table headers and keys in the raw
text. Every error names the file, the line and, for enumerations, the allowed values.

Layout (see ``docs/experiments.md``)::

    [scenario]  name, description
    [fleet]     file, scale, interval_s, buffer_size, keep_profiles
    [run]       duration, speed, seed, start
    [scoring]   grace_s, lead_s, drain_timeout_s, stuck_window_s
    [[fault]]   at, kind, duration, params, device | devices | site | type | within | fraction
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from fleetsim.kernel.contract import LAT_RANGE, LON_RANGE, FaultKind, is_valid_device_id
from fleetsim.kernel.errors import ExperimentError
from fleetsim.kernel.faultcatalog import merge_params

SECTIONS: Final[dict[str, tuple[str, ...]]] = {
    "scenario": ("name", "description"),
    "fleet": ("file", "scale", "interval_s", "buffer_size", "keep_profiles"),
    "run": ("duration", "speed", "seed", "start"),
    "scoring": ("grace_s", "lead_s", "drain_timeout_s", "stuck_window_s"),
}
FAULT_KEYS: Final = (
    "at",
    "kind",
    "duration",
    "params",
    "device",
    "devices",
    "site",
    "type",
    "within",
    "fraction",
)
DEVICE_TYPES: Final = ("fixed", "mobile")
_DURATION_RE = re.compile(r"\A\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*\Z")
_NAME_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Within:
    """A disc on the ground: every device whose position is inside it."""

    lat: float
    """Centre latitude in degrees (WGS84)."""
    lon: float
    """Centre longitude in degrees (WGS84)."""
    km: float
    """Radius in kilometres (haversine distance)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Which devices a fault hits. Filters intersect; ``fraction`` then samples the result."""

    devices: tuple[str, ...] = ()
    """Explicit device ids (empty: no id filter)."""
    site: str | None = None
    """Only devices of this site."""
    type: str | None = None
    """Only ``fixed`` or ``mobile`` devices."""
    within: Within | None = None
    """Only devices inside this disc (mobile units: their start point)."""
    fraction: float = 1.0
    """Share of the filtered devices hit, in (0, 1], chosen with the scenario's seed."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One campaign entry."""

    kind: FaultKind
    """Contract fault code."""
    at_s: float
    """Start, simulated seconds after the run's start."""
    duration_s: float
    """How long it lasts, simulated seconds."""
    params: dict[str, float]
    """Fault parameters (keys per kind: ``fleetsim.kernel.faultcatalog.DEFAULT_PARAMS``)."""
    target: Target
    """The devices it hits."""
    line: int
    """Line of its ``[[fault]]`` header in the scenario file (for messages)."""


@dataclass(frozen=True, slots=True)
class Scoring:
    """How alerts are matched to faults."""

    grace_s: float = 180.0
    """Seconds (event time) after a fault ends during which a matching alert still counts."""
    lead_s: float = 0.0
    """Seconds before a fault starts during which a matching alert counts (offline alerts may
    carry the last reading's time)."""
    drain_timeout_s: float = 180.0
    """Wall-clock seconds to wait for the pipeline to drain after the simulator ends."""
    stuck_window_s: float | None = None
    """If set, a stuck sensor must be detected within this many seconds (event time) of onset;
    reported as ``within_window`` per fault kind."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario file."""

    name: str
    description: str
    path: Path
    """The file it was read from."""
    fleet_file: Path
    """``devices.csv`` to run (relative paths resolve against the scenario's directory)."""
    scale: int
    """Fleet copies (``fleetsim.kernel.fleetfile.scale_fleet``)."""
    interval_s: float | None
    """Sampling interval override for every device in seconds; None keeps the fleet's."""
    buffer_size: int | None
    """Store-and-forward buffer override in readings; None keeps the config's."""
    keep_profiles: bool
    """Keep the fleet's own fault profiles (default: only the campaign injects faults)."""
    duration_s: float
    """Simulated run length in seconds."""
    speed: str
    """Simulated seconds per wall second, or ``max``."""
    seed: int
    start: str
    """Simulated start instant (RFC 3339); empty: the current time."""
    scoring: Scoring
    faults: tuple[FaultSpec, ...]

    def shortened(self, factor: float) -> Scenario:
        """A copy with every time (duration, fault start and length) divided by ``factor``; the
        fleet's sampling interval is kept, so short faults may carry fewer readings."""
        if factor <= 1:
            return self
        faults = tuple(
            replace(f, at_s=f.at_s / factor, duration_s=f.duration_s / factor) for f in self.faults
        )
        return replace(self, duration_s=self.duration_s / factor, faults=faults, name=f"{self.name}-short")


# ------------------------------------------------------------------------------------ locating
class _Locator:
    """Line numbers of tables and keys in the raw TOML text (tomllib gives none)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []
        for i, raw in enumerate(self.lines, start=1):
            m = re.match(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?", raw)
            if m:
                self.headers.append((i, m.group(2).strip()))

    def table(self, name: str, index: int = 0) -> int:
        """Line of the ``index``-th ``[name]``/``[[name]]`` header (1 if absent: top of file)."""
        found = [line for line, h in self.headers if h == name]
        return found[index] if index < len(found) else 1

    def key(self, table: str, key: str, index: int = 0) -> int:
        """Line where ``key`` is set inside that table (or inline-table); the header's line else."""
        start = self.table(table, index) if any(h == table for _, h in self.headers) else 0
        end = next((line for line, _ in self.headers if line > start), len(self.lines) + 1)
        pat = re.compile(rf"(?:^|[\s{{,])\"?{re.escape(key)}\"?\s*=")
        for n in range(start + 1 if start else 1, end):
            if pat.search(self.lines[n - 1].split("#", 1)[0]):
                return n
        return max(start, 1)


class _Ctx:
    def __init__(self, path: Path, loc: _Locator) -> None:
        self.path, self.loc = path, loc

    def err(self, line: int, msg: str) -> ExperimentError:
        return ExperimentError(f"{self.path}:{line}: {msg}")


# ------------------------------------------------------------------------------------- values
def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90``, ``90s``, ``5m``, ``1h30m``; ValueError else."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 5m, 90s, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)) and any(m.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = 3600 * h + 60 * mi + s
    else:
        raise ValueError(f"{value!r} is not a duration; use seconds or a string like 5m, 90s, 1h30m")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} must be a finite duration >= 0")
    return seconds


def _num(c: _Ctx, line: int, name: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise c.err(line, f"{name} must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise c.err(line, f"{name}={v} is outside [{lo}, {hi}]")
    return float(v)


def _dur(c: _Ctx, line: int, name: str, v: Any, positive: bool = False) -> float:
    try:
        s = parse_duration(v)
    except ValueError as exc:
        raise c.err(line, f"{name}: {exc}") from exc
    if positive and s <= 0:
        raise c.err(line, f"{name} must be > 0")
    return s


def _check_keys(c: _Ctx, table: str, data: dict[str, Any], allowed: tuple[str, ...], index: int = 0) -> None:
    for key in data:
        if key not in allowed:
            line = c.loc.key(table, key, index)
            raise c.err(line, f"unknown key {key!r} in [{table}]; allowed: {', '.join(allowed)}")


# ------------------------------------------------------------------------------------- parsing
def _target(c: _Ctx, i: int, f: dict[str, Any]) -> Target:
    def line(k: str) -> int:
        return c.loc.key("fault", k, i)

    devices: tuple[str, ...] = ()
    if "device" in f and "devices" in f:
        raise c.err(line("devices"), "use either device or devices, not both")
    raw_devices = [f["device"]] if "device" in f else f.get("devices", [])
    if not isinstance(raw_devices, list) or not all(is_valid_device_id(d) for d in raw_devices):
        key = "device" if "device" in f else "devices"
        raise c.err(line(key), f"{key} must be device ids matching [A-Za-z0-9_.-]{{1,64}}")
    devices = tuple(raw_devices)
    site = f.get("site")
    if site is not None and (not isinstance(site, str) or not site):
        raise c.err(line("site"), "site must be a non-empty string")
    dtype = f.get("type")
    if dtype is not None and dtype not in DEVICE_TYPES:
        raise c.err(line("type"), f"type {dtype!r}; allowed: {', '.join(DEVICE_TYPES)}")
    within = None
    if "within" in f:
        w = f["within"]
        wl = line("within")
        if not isinstance(w, dict) or set(w) != {"lat", "lon", "km"}:
            raise c.err(wl, "within must be a table { lat = <deg>, lon = <deg>, km = <radius> }")
        within = Within(
            _num(c, wl, "within.lat", w["lat"], *LAT_RANGE),
            _num(c, wl, "within.lon", w["lon"], *LON_RANGE),
            _num(c, wl, "within.km", w["km"], 1e-6, 20_000.0),
        )
    fraction = 1.0
    if "fraction" in f:
        fraction = _num(c, line("fraction"), "fraction", f["fraction"], 0.0, 1.0)
        if fraction <= 0:
            raise c.err(line("fraction"), "fraction must be in (0, 1]")
    return Target(devices, site, dtype, within, fraction)


def _fault(c: _Ctx, i: int, f: Any) -> FaultSpec:

    head = c.loc.table("fault", i)
    if not isinstance(f, dict):
        raise c.err(head, "each [[fault]] must be a table")
    _check_keys(c, "fault", f, FAULT_KEYS, i)
    for required in ("at", "kind", "duration"):
        if required not in f:
            raise c.err(head, f"[[fault]] #{i + 1} needs {required!r}")
    try:
        kind = FaultKind(f["kind"])
    except ValueError as exc:
        allowed = ", ".join(k.value for k in FaultKind)
        raise c.err(
            c.loc.key("fault", "kind", i), f"unknown fault kind {f['kind']!r}; allowed: {allowed}"
        ) from exc
    params_raw = f.get("params", {})
    pl = c.loc.key("fault", "params", i)
    if not isinstance(params_raw, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in params_raw.values()
    ):
        raise c.err(pl, "params must be a table of numbers, e.g. params = { rate = 0.5 }")
    try:
        params = merge_params(kind, {str(k): float(v) for k, v in params_raw.items()})
    except ValueError as exc:
        raise c.err(pl, str(exc)) from exc
    at = _dur(c, c.loc.key("fault", "at", i), "at", f["at"])
    duration = _dur(c, c.loc.key("fault", "duration", i), "duration", f["duration"], positive=True)
    target = _target(c, i, f)
    if not (target.devices or target.site or target.type or target.within or "fraction" in f):
        raise c.err(head, "a fault needs a target: device, devices, site, type, within and/or fraction")
    return FaultSpec(kind, at, duration, params, target, head)


def parse_scenario(text: str, path: Path) -> Scenario:
    """Validate scenario text; raises :class:`ExperimentError` naming ``path:line``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path}: invalid TOML: {exc}") from exc
    c = _Ctx(path, _Locator(text))
    for key, value in data.items():
        if key not in (*SECTIONS, "fault"):
            line = c.loc.table(key) if isinstance(value, dict) else c.loc.key("", key)
            raise c.err(line, f"unknown table or key {key!r}; allowed: {', '.join([*SECTIONS, 'fault'])}")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise c.err(c.loc.key("", key), f"{key} must be a table [{key}]")
            _check_keys(c, key, value, SECTIONS[key])
    sc, fl, rn, so = (data.get(s, {}) for s in ("scenario", "fleet", "run", "scoring"))
    name = sc.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise c.err(c.loc.key("scenario", "name"), "name must match [A-Za-z0-9_.-]{1,64}")
    description = sc.get("description", "")
    if not isinstance(description, str):
        raise c.err(c.loc.key("scenario", "description"), "description must be a string")
    fleet_raw = fl.get("file", "devices.csv")
    if not isinstance(fleet_raw, str) or not fleet_raw:
        raise c.err(c.loc.key("fleet", "file"), "file must be a path to a devices.csv")
    fleet_file = Path(fleet_raw)
    if not fleet_file.is_absolute():
        fleet_file = (path.parent / fleet_file).resolve()
    scale = int(_num(c, c.loc.key("fleet", "scale"), "scale", fl.get("scale", 1), 1, 1000))
    interval = fl.get("interval_s")
    if interval is not None:
        interval = _num(c, c.loc.key("fleet", "interval_s"), "interval_s", interval, 0.1, 86_400)
    buffer_size = fl.get("buffer_size")
    if buffer_size is not None:
        buffer_size = int(_num(c, c.loc.key("fleet", "buffer_size"), "buffer_size", buffer_size, 0, 10**7))
    keep = fl.get("keep_profiles", False)
    if not isinstance(keep, bool):
        raise c.err(c.loc.key("fleet", "keep_profiles"), "keep_profiles must be true or false")
    if "duration" not in rn:
        raise c.err(c.loc.table("run"), '[run] needs duration (e.g. duration = "10m")')
    duration = _dur(c, c.loc.key("run", "duration"), "duration", rn["duration"], positive=True)
    speed = str(rn.get("speed", "60"))
    if speed != "max":
        try:
            ok = float(speed) > 0 and math.isfinite(float(speed))
        except ValueError:
            ok = False
        if not ok:
            raise c.err(c.loc.key("run", "speed"), f'speed {speed!r}; allowed: a number > 0 or "max"')
    seed = rn.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise c.err(c.loc.key("run", "seed"), "seed must be an integer")
    start = rn.get("start", "")
    if not isinstance(start, str):
        raise c.err(c.loc.key("run", "start"), "start must be an RFC 3339 string or empty")
    scoring = Scoring(
        grace_s=_dur(c, c.loc.key("scoring", "grace_s"), "grace_s", so.get("grace_s", 180)),
        lead_s=_dur(c, c.loc.key("scoring", "lead_s"), "lead_s", so.get("lead_s", 0)),
        drain_timeout_s=_dur(
            c,
            c.loc.key("scoring", "drain_timeout_s"),
            "drain_timeout_s",
            so.get("drain_timeout_s", 180),
            True,
        ),
        stuck_window_s=(
            _dur(c, c.loc.key("scoring", "stuck_window_s"), "stuck_window_s", so["stuck_window_s"], True)
            if "stuck_window_s" in so
            else None
        ),
    )
    raw_faults = data.get("fault", [])
    if not isinstance(raw_faults, list):
        raise c.err(c.loc.table("fault"), "faults are an array of tables: write [[fault]], not [fault]")
    faults = tuple(_fault(c, i, f) for i, f in enumerate(raw_faults))
    for f in faults:
        if f.at_s >= duration:
            raise c.err(f.line, f"fault starts at {f.at_s:g} s, after the run's {duration:g} s")
    return Scenario(
        name, description, path, fleet_file, scale, interval, buffer_size, keep,
        duration, speed, seed, start, scoring, faults,
    )  # fmt: skip


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the scenario: {exc.strerror}") from exc
    return parse_scenario(text, path)


__all__ = ["FaultSpec", "Scenario", "Scoring", "Target", "Within", "load_scenario", "parse_scenario"]
