"""The fault catalog: every fault kind's parameters and defaults, the named fleet profiles, and the
schedule syntax of the fleet file's ``fault_profile`` column.

Pure data and parsing, shared by the simulator (which injects faults), the fleet-file model (which
validates a profile column) and experiments (which schedule faults from a scenario).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from fleetsim.kernel.contract import FaultKind

DEFAULT_PARAMS: Final[dict[FaultKind, dict[str, float]]] = {
    FaultKind.STUCK: {},
    FaultKind.DRIFT: {"rate": 0.1},  # °C per simulated minute, added to temperature
    FaultKind.SPIKE: {"prob": 0.3, "magnitude": 25.0},  # per reading; °C (CO2 gets 40x in ppm)
    FaultKind.NOISE: {"sigma": 3.0},  # extra std dev in °C (humidity 2x, CO2 40x, pressure 1x)
    FaultKind.DROPOUT: {"prob": 1.0},  # per reading: made (seq used) but never transmitted
    FaultKind.SENSOR_FAILURE: {},  # measurements null, status FAILURE
    FaultKind.CRASH: {},  # offline (Last Will), no sampling; reboot when it ends
    FaultKind.NETWORK_OUTAGE: {},  # store-and-forward into the bounded buffer
    FaultKind.CLOCK_SKEW: {"offset_s": 90.0},  # added to the event timestamp
    FaultKind.DUPLICATE: {"prob": 1.0},  # per reading: sent twice, same seq and bytes
    FaultKind.BATTERY_DRAIN: {"factor": 5.0},  # drain multiplier
    FaultKind.HEATWAVE: {"delta": 8.0},  # °C outdoors (indoors 30 % of it through the walls)
}
"""Parameters of each fault and their defaults (``--param k=v`` overrides; unknown keys are errors)."""


def merge_params(kind: FaultKind, params: dict[str, float] | None) -> dict[str, float]:
    """Defaults overridden by ``params``; raises ValueError naming the allowed keys."""
    allowed = DEFAULT_PARAMS[kind]
    extra = sorted(set(params or {}) - set(allowed))
    if extra:
        names = ", ".join(allowed) or "none"
        raise ValueError(f"fault {kind.value} has no parameter {', '.join(extra)}; allowed: {names}")
    return {**allowed, **(params or {})}


# ------------------------------------------------------------------------------------ profiles
@dataclass(frozen=True, slots=True)
class ProfileRule:
    """A recurring fault: Poisson arrivals with a mean gap, uniform durations."""

    kind: FaultKind
    mean_gap_s: float
    """Mean simulated seconds between two occurrences."""
    min_s: float
    """Shortest duration in seconds."""
    max_s: float
    """Longest duration in seconds."""
    params: dict[str, float] = field(default_factory=dict)


PROFILES: Final[dict[str, tuple[ProfileRule, ...]]] = {
    "none": (),
    "flaky_network": (ProfileRule(FaultKind.NETWORK_OUTAGE, 4 * 3600, 120, 900),),
    "aging": (ProfileRule(FaultKind.DRIFT, 12 * 3600, 1800, 7200, {"rate": 0.05}),),
    "glitchy": (
        ProfileRule(FaultKind.SPIKE, 3 * 3600, 300, 900),
        ProfileRule(FaultKind.NOISE, 6 * 3600, 600, 1800, {"sigma": 2.0}),
    ),
    "fragile": (ProfileRule(FaultKind.CRASH, 8 * 3600, 30, 300),),
    "lossy": (
        ProfileRule(FaultKind.DROPOUT, 3 * 3600, 120, 600, {"prob": 0.5}),
        ProfileRule(FaultKind.DUPLICATE, 5 * 3600, 300, 900, {"prob": 0.3}),
    ),
    "failing": (ProfileRule(FaultKind.SENSOR_FAILURE, 24 * 3600, 600, 3600),),
    "stuck_prone": (ProfileRule(FaultKind.STUCK, 10 * 3600, 900, 3600),),
}


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """One explicit entry ``kind@start+duration[?k=v&k=v]`` of a fault_profile column."""

    kind: FaultKind
    start_s: float
    duration_s: float
    params: dict[str, float]


def parse_schedule(text: str) -> list[ScheduledFault]:
    """``stuck@600+300|drift@1200+1800?rate=0.5`` -> entries; raises ValueError naming the part."""
    out = []
    for part in text.split("|"):
        spec, _, query = part.strip().partition("?")
        kind_s, at, timing = spec.partition("@")
        start_s, plus, dur_s = timing.partition("+")
        if not at or not plus:
            raise ValueError(f"{part!r} is not kind@start_s+duration_s")
        try:
            kind = FaultKind(kind_s)
        except ValueError as exc:
            allowed = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"unknown fault {kind_s!r}; allowed: {allowed}") from exc
        try:
            start, dur = float(start_s), float(dur_s)
            params = {}
            for kv in filter(None, query.split("&")):
                k, _, v = kv.partition("=")
                params[k] = float(v)
        except ValueError as exc:
            raise ValueError(f"{part!r}: start, duration and parameters must be numbers") from exc
        if start < 0 or dur <= 0:
            raise ValueError(f"{part!r}: need start >= 0 and duration > 0")
        out.append(ScheduledFault(kind, start, dur, merge_params(kind, params)))
    return out


def validate_profile(profile: str) -> None:
    """A named profile or an explicit schedule; raises ValueError listing the profiles."""
    if profile in PROFILES:
        return
    if "@" not in profile:
        raise ValueError(f"{profile!r}; allowed: {', '.join(PROFILES)} or kind@start_s+duration_s|...")
    parse_schedule(profile)
