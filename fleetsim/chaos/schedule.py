"""The campaign's fault schedule: pure and seeded (same seed, same arguments: same schedule).

A schedule is a list of :class:`Fault`: what (kind), on what (target), when (seconds from the
campaign start) and for how long. Faults on *different* targets overlap freely (a Kafka pause
during a Spark kill during a cut MQTT link); faults on the *same* target never do, and each is
followed by a quiet gap long enough for that component to come back (a Spark restart takes up to a
minute on a loaded 2-core machine), so every fault hits a running component.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Final

KINDS: Final[dict[str, tuple[str, ...]]] = {
    # kill -9 and restart. Not Mosquitto (its autosave window is a documented loss window, see
    # docs/reliability.md) and not PostgreSQL (an orphaned backend keeps the shared memory block a
    # restart needs): both get graceful restarts and, for PostgreSQL, backend terminations.
    "kill": ("bridge", "stream", "kafka"),
    "pause": ("bridge", "stream", "kafka", "mosquitto"),  # SIGSTOP ... SIGCONT
    "restart": ("bridge", "stream", "kafka", "mosquitto", "postgres"),  # SIGTERM, then start
    "link": ("kafka-link", "mqtt-link"),  # slowed or cut through a TCP proxy
    "pgterm": ("postgres-backends",),  # pg_terminate_backend on every writer backend
    "storm": ("mqtt-sessions",),  # ~1,000 per-device sessions drop and reconnect at once
    "device": ("devices",),  # a device fault in the readings (spike, FAILURE): its alert must land
}
"""Fault kinds and the targets each can hit (``--faults`` takes a subset of the kinds)."""

DEFAULT_KINDS: Final = tuple(KINDS)

_DURATION_S: Final[dict[str, tuple[float, float]]] = {
    "kill": (2.0, 12.0),  # down time between the SIGKILL and the restart
    "pause": (3.0, 20.0),
    "restart": (1.0, 5.0),  # down time between the graceful stop and the start
    "link": (4.0, 20.0),
    "pgterm": (0.0, 0.0),
    "storm": (3.0, 10.0),  # drop-and-reconnect rounds repeat until it is over
    "device": (0.0, 0.0),
}
_RECOVERY_S: Final[dict[str, float]] = {
    "stream": 90.0,  # Spark start on a loaded machine
    "kafka": 40.0,  # log recovery after kill -9
    "postgres": 15.0,
    "mosquitto": 10.0,
    "bridge": 10.0,
    "kafka-link": 5.0,
    "mqtt-link": 5.0,
    "postgres-backends": 10.0,
    "mqtt-sessions": 30.0,
    "devices": 2.0,
}
"""Quiet time after a fault's end before the same target is hit again."""


@dataclass(frozen=True, order=True)
class Fault:
    at_s: float
    """Seconds from the campaign start."""
    duration_s: float
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    """``mode``/``delay_ms`` of a link fault, ``sessions`` of a storm, ``fault`` of a device fault."""

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind} {self.target}" + (f" ({extra})" if extra else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _params(kind: str, rng: random.Random, storm_sessions: int) -> dict[str, Any]:
    if kind == "link":
        if rng.random() < 0.5:
            return {"mode": "slow", "delay_ms": rng.choice((50, 100, 200, 400))}
        return {"mode": "cut"}
    if kind == "storm":
        return {"sessions": storm_sessions}
    if kind == "device":
        return {"fault": rng.choice(("spike", "sensor_failure"))}
    return {}


def make_schedule(
    seed: int,
    duration_s: float,
    kinds: tuple[str, ...] | list[str] = DEFAULT_KINDS,
    *,
    faults_per_minute: float = 2.0,
    storm_sessions: int = 1000,
) -> list[Fault]:
    """A seeded schedule of about ``faults_per_minute`` faults over ``duration_s``, sorted by start.

    Faults start after a warm-up (10 % of the run, at most 20 s) and end by 80 % of it, so the
    pipeline is whole again before the load stops. Kinds are drawn in turn from a shuffled cycle
    (every requested kind appears once the schedule has as many faults as kinds), then targets
    and times at random, most of them close to an earlier fault's start (faults come in
    clusters, as real outages do); a draw that would overlap an earlier fault on the same target (plus its
    recovery time) is drawn again. Fewer faults come out when the run is too short to fit them.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(KINDS)}")
    if not kinds:
        raise ValueError("no fault kind given")
    if duration_s <= 0 or faults_per_minute <= 0:
        raise ValueError("duration and faults per minute must be positive")
    rng = random.Random(seed)
    wanted = max(1, round(duration_s / 60.0 * faults_per_minute))
    first, last = min(20.0, 0.1 * duration_s), 0.8 * duration_s
    busy: dict[str, list[tuple[float, float]]] = {}
    out: list[Fault] = []
    cycle: list[str] = []
    attempts = 0
    while len(out) < wanted and attempts < 200 * wanted:
        attempts += 1
        if not cycle:
            cycle = list(dict.fromkeys(kinds))
            rng.shuffle(cycle)
        kind = cycle[-1]
        target = rng.choice(KINDS[kind])
        lo, hi = _DURATION_S[kind]
        dur = round(rng.uniform(lo, hi), 1)
        if last - dur <= first:
            continue
        if out and rng.random() < 0.7:  # join a cluster: real outages come together
            at = round(min(max(first, rng.choice(out).at_s + rng.uniform(-3.0, 8.0)), last - dur), 1)
        else:
            at = round(rng.uniform(first, last - dur), 1)
        guard = _RECOVERY_S[target]
        if any(at < e + guard and s < at + dur + guard for s, e in busy.get(target, [])):
            continue
        cycle.pop()
        busy.setdefault(target, []).append((at, at + dur))
        out.append(Fault(at, dur, kind, target, _params(kind, rng, storm_sessions)))
    return sorted(out)


def overlapping(schedule: list[Fault]) -> int:
    """How many faults overlap in time with at least one other (instant faults count while they
    fall inside another's span)."""
    n = 0
    for i, f in enumerate(schedule):
        if any(
            j != i and g.at_s <= f.end_s and f.at_s <= g.end_s and (g.duration_s > 0 or f.duration_s > 0)
            for j, g in enumerate(schedule)
        ):
            n += 1
    return n


def summary(schedule: list[Fault]) -> dict[str, Any]:
    """Counts per kind and per target, and the overlap count, for the report."""
    return {
        "faults": len(schedule),
        "overlapping": overlapping(schedule),
        "by_kind": dict(Counter(f.kind for f in schedule)),
        "by_target": dict(Counter(f.target for f in schedule)),
    }
