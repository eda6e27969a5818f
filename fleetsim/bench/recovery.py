"""How long a flow takes to come back after a restart, from a series of (time, figure) points.

Used by ``bench/bench_restart.py``: the raw flow's p95 event->row latency per bucket of event
time, and the windows' lag sampled from the job's gauges. A flow is back from the first point
after which every known figure stays within its limit; a point with no figure (the job's
endpoint was down) neither breaks nor ends a recovery.
"""

from __future__ import annotations

from collections.abc import Sequence


def recovery_s(points: Sequence[tuple[float, float | None]], limit: float, restart_t: float) -> float | None:
    """Seconds from ``restart_t`` until the flow was back within ``limit`` for good: the time of
    the first known point at or after the restart from which no later known point exceeds the
    limit (0.0 if that is the restart itself). None when the last known point is still over the
    limit, or no point after the restart is known: not back within the observation."""
    after = [(t, v) for t, v in sorted(points) if t >= restart_t and v is not None]
    if not after or after[-1][1] > limit:
        return None
    back = after[-1][0]
    for t, v in reversed(after):
        if v > limit:
            break
        back = t
    return round(back - restart_t, 1)


def worst_after(points: Sequence[tuple[float, float | None]], restart_t: float) -> float | None:
    """The largest known figure at or after the restart (how far the flow fell behind)."""
    known = [v for t, v in points if t >= restart_t and v is not None]
    return round(max(known), 1) if known else None
