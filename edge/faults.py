"""Failure modes: what each fault does, how it is started and ended, and how it is scheduled.

A fault is an :class:`ActiveFault` held in a device's ``faults`` dict (so several compose:
a drifting sensor can also lose its network). Its life is a SimPy process: injected now or by a
schedule, ended by its duration, a ``clear`` or the end of the run, and written to the ledger
when it ends. The per-reading effects live in :mod:`fleetsim.edge.fault_effects`; the start/end
side effects (crash, outage) live here.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetsim.edge.fault_effects import NO_FAULT_RNG
from fleetsim.kernel.contract import FaultKind
from fleetsim.kernel.faultcatalog import (
    PROFILES,
    ProfileRule,
    ScheduledFault,
    merge_params,
    parse_schedule,
)

if TYPE_CHECKING:
    import simpy

    from fleetsim.edge.device import Device, SimContext


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
        dev.faults_changed()
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
            dev.faults_changed()
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
