"""Progress of a simulator run: simulated time reached, messages per second and an ETA.

:class:`RunProgress` is pure arithmetic over the runner's once-a-second ticks; :class:`Display`
shows it: a live bar on a terminal (rich) when the run has a duration, otherwise a log line every
few wall seconds. The same figures go to the metrics endpoint, so ``fleetsim status`` shows them
for a simulator running in the background.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from fleetsim.kernel.timespec import format_duration

log = logging.getLogger(__name__)

SMOOTHING: Final = 0.3
"""Weight of the newest second in the smoothed rates (an EWMA: one slow step does not swing the ETA)."""
LOG_EVERY_S: Final = 5.0
"""Wall seconds between two progress lines when there is no terminal (or no duration)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a run stands."""

    sim_s: float
    """Simulated seconds reached since the start instant."""
    duration_s: float | None
    """Simulated seconds the run lasts (None: until stopped)."""
    published: int
    """Messages published so far."""
    msg_per_s: float
    """Messages per wall second, smoothed."""
    speed: float
    """Simulated seconds per wall second, smoothed."""

    @property
    def fraction(self) -> float | None:
        """Share of the duration done, 0-1 (None: unbounded run)."""
        return min(1.0, self.sim_s / self.duration_s) if self.duration_s else None

    @property
    def eta_s(self) -> float | None:
        """Wall seconds left at the current speed (None: unbounded run or no speed yet)."""
        if not self.duration_s or self.speed <= 0:
            return None
        return max(0.0, self.duration_s - self.sim_s) / self.speed

    def line(self) -> str:
        """``simulated 1h20m of 7d (19.0 %), 7,412 msg/s, ETA 5m10s``."""
        if self.duration_s:
            pct = 100 * (self.fraction or 0.0)
            head = (
                f"simulated {format_duration(self.sim_s)} of {format_duration(self.duration_s)} ({pct:.1f} %)"
            )
        else:
            head = f"simulated {format_duration(self.sim_s)}"
        eta = f", ETA {format_duration(self.eta_s)}" if self.eta_s is not None else ""
        return f"{head}, {self.msg_per_s:,.0f} msg/s{eta}"


class RunProgress:
    """Smoothed rates from cumulative (simulated seconds, messages) samples."""

    def __init__(self, duration_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.duration_s = duration_s
        self._clock = clock
        self._last: tuple[float, float, int] | None = None
        self._msg_rate = 0.0
        self._speed = 0.0

    def update(self, sim_s: float, published: int) -> Snapshot:
        now = self._clock()
        if self._last is not None:
            wall = now - self._last[0]
            if wall > 0:
                msg = (published - self._last[2]) / wall
                speed = (sim_s - self._last[1]) / wall
                first = self._msg_rate == 0.0 and self._speed == 0.0
                a = 1.0 if first else SMOOTHING
                self._msg_rate += a * (msg - self._msg_rate)
                self._speed += a * (speed - self._speed)
        self._last = (now, sim_s, published)
        return Snapshot(sim_s, self.duration_s, published, self._msg_rate, self._speed)


class Display:
    """A live bar on a terminal for a run with a duration; a log line every few seconds otherwise."""

    def __init__(self, duration_s: float | None, stream: TextIO = sys.stderr) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._next_line = 0.0
        if duration_s and stream.isatty():
            self._bar = Progress(
                TextColumn("[bold]fleetsim sim"),
                BarColumn(),
                TextColumn("{task.fields[line]}"),
                console=Console(file=stream),
                transient=False,
            )
            self._task = self._bar.add_task("sim", total=duration_s, line="starting")
            self._bar.start()

    def show(self, snap: Snapshot) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=snap.sim_s, line=snap.line())
            return
        now = time.monotonic()
        if now >= self._next_line:
            self._next_line = now + LOG_EVERY_S
            log.info("%s", snap.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
