"""The clock: advances a :class:`~edge.engine.Simulation` in real time × speed, or as fast as
possible, and does the upkeep between steps (control commands, buffer flush on reconnect,
metrics, periodic ledger snapshots).

Event timestamps always follow simulated time. In real-time mode every batch of events is
processed as soon as its due instant has passed, and its lag behind the wall clock is measured
(due instant of the batch's first event -> end of the batch), weighted by the messages it sent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from fleetsim.edge.engine import Simulation

SNAPSHOT_EVERY_S: Final = 30.0
"""Wall seconds for one pass of ``sent`` snapshots over the fleet (a slice at every step)."""
STEP_READINGS: Final = 5000
"""Readings per step of an accelerated run (``--speed max``)."""
TICK_S: Final = 0.02
"""Shortest wall time between two steps of a paced run: readings due meanwhile are made as one
batch (they wait at most this long; the lag measures it)."""
MAX_SLEEP_S: Final = 0.05
"""Longest sleep between steps, so control commands and SIGTERM are handled promptly."""


@dataclass(slots=True)
class RunReport:
    """What a run did, for the CLI, the bench and tests."""

    sim_seconds: float = 0.0
    """Simulated seconds covered."""
    wall_seconds: float = 0.0
    published: int = 0
    lag_ms: Counter[int] = field(default_factory=Counter)
    """Messages per lag bucket (milliseconds, real-time mode only)."""

    def lag_quantile(self, q: float) -> float:
        """Lag in seconds at quantile ``q`` of messages (0 when nothing was measured)."""
        total = sum(self.lag_ms.values())
        if total == 0:
            return 0.0
        rank, seen = q * total, 0
        for ms in sorted(self.lag_ms):
            seen += self.lag_ms[ms]
            if seen >= rank:
                return ms / 1000.0
        return max(self.lag_ms) / 1000.0


class Runner:
    """Drives one simulation until its duration is reached or ``stop`` is set."""

    def __init__(
        self,
        sim: Simulation,
        *,
        speed: float | None,
        duration_s: float | None,
        stop: threading.Event | None = None,
        on_tick: Callable[[Simulation, RunReport, float], None] | None = None,
        generation: Callable[[], int] | None = None,
        lag_warmup_s: float = 0.0,
        io: Callable[[float], None] | None = None,
        anchor: float | None = None,
    ) -> None:
        self.sim = sim
        self.speed = speed
        self.duration_s = duration_s
        self.stop = stop or threading.Event()
        self.on_tick = on_tick
        """Called about once a wall second with (sim, report, current lag s): metrics."""
        self.generation = generation or (lambda: 0)
        self.io = io
        """Transport service hook, called with a timeout: 0 between steps, the wait when idle
        (an inline MQTT publisher selects on its socket instead of sleeping)."""
        self.anchor = anchor
        """Wall-clock instant (epoch s) that simulated time 0 stands for, when the run starts "now":
        a paced run then keeps simulated time on the wall clock. Without it, simulated time starts
        when :meth:`run` does, and the set-up before it (building a 10,000-device fleet, connecting)
        stamped every reading that much before it was sent: 0.3-0.5 s of every reading's latency
        in the end-to-end benchmark, the same at every rate. The readings due during the set-up go
        out at once, late by the set-up (the lag shows it), instead."""
        self.lag_warmup_s = lag_warmup_s
        """Wall seconds at the start whose lags are not recorded (start-up status burst)."""
        self.report = RunReport()
        self._gen = self.generation()
        self._next_tick = 0.0
        self._snapshot_at = 0.0
        self._snapshot_due = 0.0
        self._lag_now = 0.0
        self._stepped = float("-inf")

    def run(self) -> RunReport:
        wall0 = time.monotonic()
        self._next_tick = wall0 + 1.0
        self._snapshot_at = wall0
        if self.speed is None:
            self._run_max()
        else:
            self._run_paced(wall0, self.speed)
        self.report.sim_seconds = self.sim.env.now
        self.report.wall_seconds = time.monotonic() - wall0
        self.report.published = self.sim.stats.published
        return self.report

    def _end(self) -> float:
        return self.duration_s if self.duration_s is not None else float("inf")

    def _run_max(self) -> None:
        sim, end = self.sim, self._end()
        rate = float((1.0 / sim.fleet.interval).sum()) or 1.0
        # Steps of ~STEP_READINGS readings: long enough for the sampler's batches to amortise numpy's
        # per-call cost and the upkeep, short enough to react to control commands and SIGTERM.
        step = min(600.0, max(0.05, STEP_READINGS / rate))
        while not self.stop.is_set() and sim.env.now < end:
            sim.advance(min(end, sim.env.now + step))
            self._upkeep(time.monotonic())

    def _run_paced(self, wall0: float, speed: float) -> None:
        sim, env, end = self.sim, self.sim.env, self._end()
        sim0 = env.now
        if self.anchor is not None:
            # The monotonic instant at which simulated time sim0 is due on the wall clock.
            wall0 = time.monotonic() - (time.time() - (self.anchor + sim0 / speed))
        while not self.stop.is_set() and env.now < end:
            now = time.monotonic()
            target = min(end, sim0 + (now - wall0) * speed)
            first = env.peek()
            if first < target:
                before = sim.stats.published
                self._stepped = now
                sim.advance(target)
                done = time.monotonic()
                lag = max(0.0, done - (wall0 + (first - sim0) / speed))
                sent = sim.stats.published - before
                if sent and done - wall0 >= self.lag_warmup_s:
                    self.report.lag_ms[int(lag * 1000)] += sent
                self._lag_now = lag
            elif target >= end:
                sim.advance(end)
            now = time.monotonic()
            self._upkeep(now)
            nxt = env.peek()
            wait = wall0 + (min(nxt, end) - sim0) / speed - now
            # At most one step per TICK_S: a large fleet always has a reading due within
            # microseconds, and one step per reading would pay the sampler's per-batch cost
            # (array scans over the whole fleet) for every reading.
            wait = max(wait, self._stepped + TICK_S - now) if nxt < end else wait
            if wait > 0:
                if self.io is not None:
                    self.io(min(MAX_SLEEP_S, wait))
                else:
                    self.stop.wait(min(MAX_SLEEP_S, wait))

    def _upkeep(self, now: float) -> None:
        sim = self.sim
        if self.io is not None:
            self.io(0.0)
        sim.apply_pending()
        gen = self.generation()
        if gen != self._gen:  # the broker connection came back: forward what was buffered
            self._gen = gen
            sim.flush_buffers()
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            if self.on_tick is not None:
                self.on_tick(sim, self.report, self._lag_now)
        # A slice of the fleet per step, in proportion to the wall time since the last one.
        self._snapshot_due += len(sim.devices) * (now - self._snapshot_at) / SNAPSHOT_EVERY_S
        self._snapshot_at = now
        if self._snapshot_due >= 1.0:
            whole = int(self._snapshot_due)
            self._snapshot_due -= whole
            sim.snapshot_some(whole)
