"""Memory of each stage's process tree, sampled through a run, and whether it stops growing.

PSS (``/proc/<pid>/smaps_rollup``), not RSS: PostgreSQL backends and the JVM's threads share
pages, and RSS summed over a process tree counts shared memory once per process (PostgreSQL's
shared buffers once per backend). PSS splits each shared page between the processes mapping it,
so a tree's sum is its real footprint.

"No growth without bound" is judged on the second half of the run, after start-up, caches and
JVM heaps have settled: the least-squares slope there, projected over ten minutes, must stay
under :data:`GROWTH_LIMIT_FRACTION` of the stage's footprint (or :data:`GROWTH_FLOOR_MIB`,
whichever is larger: a small process's allocator noise is not a leak).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from fleetsim.stack import process

GROWTH_LIMIT_FRACTION: Final = 0.05
"""Allowed growth per 10 minutes in the settled half, as a fraction of the stage's median PSS."""
GROWTH_FLOOR_MIB: Final = 16.0
"""Growth per 10 minutes below this many MiB is never called unbounded."""
MIB: Final = 1024 * 1024

Roots = Mapping[str, int | Sequence[int]]
"""Stage name -> the pid (or pids) whose process trees make it."""

PART_SEP: Final = "/"
"""``<stage>/<process name>``: a part of a stage's tree, sampled beside the stage when asked for
(:class:`MemSampler`'s ``split``); its growth is reported, the verdict is the stage's."""


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 if it is gone or unreadable)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def children_map() -> dict[int, list[int]]:
    """``{ppid: [pid, ...]}`` of every process now."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := process.stat_fields(entry)) is not None:
            kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def comm(pid: int) -> str:
    """A process's name (``java``, ``python3``...), or ``?`` if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def tree(pid: int, kids: Mapping[int, list[int]]) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


class MemSampler:
    """Samples each stage's PSS (the trees of its root pids) every ``every_s`` seconds in a
    thread, from ``start()`` to ``stop()``. The stages in ``split`` are also sampled by process
    name (``spark/java``, ``spark/python3``): a stage of several runtimes says which one grows."""

    def __init__(
        self,
        roots: Roots,
        every_s: float = 10.0,
        split: frozenset[str] = frozenset(),
        gauges: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._roots = roots
        self._split = split
        # Figures a stage reports of itself, sampled beside its PSS (``spark/state stores``: what
        # its RocksDB stores say they hold); a failed read leaves that sample without them.
        self._gauges = gauges
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, int]:
        kids = children_map()
        out: dict[str, int] = {}
        for stage, pids in self._roots.items():
            tops = [pids] if isinstance(pids, int) else list(pids)
            by_pid = {p: pss_bytes(p) for top in tops for p in tree(top, kids)}
            out[stage] = sum(by_pid.values())
            if stage in self._split:
                for p, size in by_pid.items():
                    part = f"{stage}{PART_SEP}{comm(p)}"
                    out[part] = out.get(part, 0) + size
        if self._gauges is not None:
            # A figure missing from one sample, not a failed run (the endpoint restarting, say).
            with contextlib.suppress(Exception):
                out.update(self._gauges())
        return out

    def _loop(self) -> None:
        t0 = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - t0, self.sample()))
            if self._stop.wait(self.every_s):
                return

    def start(self) -> MemSampler:
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, dict[str, int]]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


def metric_sum(url: str, name: str, timeout_s: float = 2.0) -> float:
    """The sum over all labels of ``name`` in the Prometheus text served at ``url``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (our own endpoint)
        text = resp.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def growth(samples: list[tuple[float, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """Per stage: first, last and peak PSS (MiB), the settled half's slope (MiB per minute) and
    whether that growth is bounded (see the module docstring). Needs samples over at least two
    minutes to judge; shorter runs get ``bounded: None``."""
    if not samples:
        return {}
    span_s = samples[-1][0] - samples[0][0]
    stages = sorted({s for _, by in samples for s in by})
    out: dict[str, dict[str, Any]] = {}
    for stage in stages:
        pts = [(t, by[stage] / MIB) for t, by in samples if by.get(stage)]
        if not pts:
            continue
        half = [(t / 60.0, v) for t, v in pts if t >= samples[0][0] + span_s / 2]
        slope = _slope(half)
        mids = sorted(v for _, v in half) or [pts[-1][1]]
        median = mids[len(mids) // 2]
        allowed = max(GROWTH_LIMIT_FRACTION * median, GROWTH_FLOOR_MIB)
        out[stage] = {
            "first_mib": round(pts[0][1], 1),
            "last_mib": round(pts[-1][1], 1),
            "peak_mib": round(max(v for _, v in pts), 1),
            "slope_mib_per_min": round(slope, 2),
            "allowed_mib_per_10min": round(allowed, 1),
            "bounded": None if span_s < 120 or len(half) < 3 else bool(slope * 10 <= allowed),
        }
    return out


def growing_label(stage: str, mem: Mapping[str, Mapping[str, Any]]) -> str:
    """``spark (java +14.2, python +1.1 MiB/min)``: a stage of :func:`growth`'s result with the
    slopes of its parts, if it was sampled split; else just its name."""
    parts = [
        f"{k.split(PART_SEP, 1)[1]} {v['slope_mib_per_min']:+.1f}"
        for k, v in sorted(mem.items())
        if k.startswith(stage + PART_SEP)
    ]
    return f"{stage} ({', '.join(parts)} MiB/min)" if parts else stage
