"""Failure modes: what each fault does, how it is started and ended, and how it is scheduled.

A fault is an :class:`ActiveFault` held in a device's ``faults`` dict (so several compose:
a drifting sensor can also lose its network). Its life is a SimPy process: injected now or by a
schedule, ended by its duration, a ``clear`` or the end of the run, and written to the ledger
when it ends. The per-reading effects live in ``edge.device`` (they are on the hot path); the
start/end side effects (crash, outage) live here.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from edge.device import NO_FAULT_RNG
from fleetsim.contract import FaultKind

if TYPE_CHECKING:
    import simpy

    from edge.device import Device, SimContext

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


@dataclass(slots=True)
class ActiveFault:
    """One fault active on one device."""

    kind: FaultKind
    params: dict[str, float]
    """Effective parameters (defaults merged with the injected ones)."""
    start: float
    """Simulated seconds since the run's start instant at which it began."""
    source: str
    """``schedule`` (fleet profile), ``control`` (MQTT control topic) or ``api``."""
    counters: dict[str, int] = field(default_factory=dict)
    """Effects counted while active (``buffered``, ``dropped_overflow``, ``spikes``...)."""
    state: Any = None
    """Kind-specific memory (the frozen values of ``stuck``)."""


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


# ------------------------------------------------------------------------------------ injector
class FaultInjector:
    """Starts and ends faults on devices, runs schedules, and writes the ledger."""

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self.env: simpy.Environment = ctx.env

    def inject(
        self,
        dev: Device,
        kind: FaultKind,
        params: dict[str, float] | None = None,
        duration_s: float | None = None,
        source: str = "api",
    ) -> ActiveFault:
        """Activate ``kind`` on ``dev`` now (replacing the same kind if active)."""
        merged = merge_params(kind, params)
        if dev.frng is NO_FAULT_RNG:
            dev.frng = random.Random(f"{self.ctx.seed}:{dev.device_id}:faults")
        old = dev.faults.get(kind)
        if old is not None:
            self.end(dev, old)
        af = ActiveFault(kind, merged, self.env.now, source)
        dev.faults[kind] = af
        if kind is FaultKind.CRASH:
            dev.go_down("crash")
        elif kind is FaultKind.NETWORK_OUTAGE:
            dev.set_link(False)
        if duration_s is not None:
            self.env.process(self._expire(dev, af, duration_s))
        return af

    def _expire(self, dev: Device, af: ActiveFault, duration_s: float) -> Generator[Any, Any, None]:
        yield self.env.timeout(duration_s)
        if dev.faults.get(af.kind) is af:  # not cleared or replaced meanwhile
            self.end(dev, af)

    def end(self, dev: Device, af: ActiveFault, truncated: bool = False) -> None:
        """End ``af`` now, undo its side effects and record it in the ledger."""
        if dev.faults.get(af.kind) is af:
            del dev.faults[af.kind]
        if af.kind is FaultKind.CRASH and not truncated:
            dev.go_up("crash")
        elif af.kind is FaultKind.NETWORK_OUTAGE:
            # Also at shutdown: the buffered readings are flushed rather than lost to the run's end.
            dev.set_link(True)
        ctx = self.ctx
        ctx.ledger.write(
            {
                "record": "fault",
                "device": dev.device_id,
                "fault": af.kind.value,
                "start": ctx.iso(af.start),
                "end": ctx.iso(self.env.now),
                "params": af.params,
                "source": af.source,
                "counters": af.counters,
                "truncated": truncated,
            }
        )

    def clear(self, dev: Device, kind: FaultKind | None = None) -> int:
        """End ``kind`` (or every fault) on ``dev``; returns how many ended."""
        targets = [af for k, af in list(dev.faults.items()) if kind is None or k is kind]
        for af in targets:
            self.end(dev, af)
        return len(targets)

    def start_profile(self, dev: Device, seed: int) -> None:
        """Start the schedule of ``dev.spec.fault_profile`` (a named profile or explicit entries)."""
        profile = dev.spec.fault_profile
        if profile == "none":
            return
        rng = random.Random(f"{seed}:{dev.device_id}:profile")
        if profile in PROFILES:
            for rule in PROFILES[profile]:
                self.env.process(self._recurring(dev, rule, rng))
        else:
            for entry in parse_schedule(profile):
                self.env.process(self._once(dev, entry))

    def _recurring(self, dev: Device, rule: ProfileRule, rng: random.Random) -> Generator[Any, Any, None]:
        while True:
            yield self.env.timeout(rng.expovariate(1.0 / rule.mean_gap_s))
            duration = rng.uniform(rule.min_s, rule.max_s)
            self.inject(dev, rule.kind, rule.params, duration, source="schedule")
            yield self.env.timeout(duration)

    def _once(self, dev: Device, entry: ScheduledFault) -> Generator[Any, Any, None]:
        yield self.env.timeout(entry.start_s)
        self.inject(dev, entry.kind, entry.params, entry.duration_s, source="schedule")

    def close_all(self, devices: list[Device]) -> None:
        """End every active fault at shutdown, marked ``truncated``."""
        for dev in devices:
            for af in list(dev.faults.values()):
                self.end(dev, af, truncated=True)
