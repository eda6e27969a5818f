"""How a user writes simulated time: a speed factor, a duration, a start instant.

Parsed once when the configuration is validated (``simulation.speed``, ``.duration``, ``.start``)
and again by the simulator from the same strings, so a bad value fails at start-up naming the
forms that are allowed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

SPEED_FORMS: Final = "a number > 0 (simulated seconds per wall second, e.g. 1, 60) or 'max'"
DURATION_FORMS: Final = "a number with an optional unit ms, s, m, h or d (e.g. 90, 10m, 1.5h, 7d)"
START_FORMS: Final = "empty (now) or an RFC 3339 instant with an offset (e.g. 2026-06-01T08:00:00Z)"


def parse_speed(raw: str) -> float | None:
    """``1``, ``60``, ``max`` -> factor (None = as fast as possible); raises ValueError."""
    if raw.strip().lower() == "max":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"speed {raw!r} is not allowed; allowed: {SPEED_FORMS}")
    return value


def parse_duration(raw: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``2d``, ``250ms`` -> seconds; raises ValueError."""
    m = _DURATION_RE.match(raw)
    if not m:
        raise ValueError(f"duration {raw!r} is not allowed; allowed: {DURATION_FORMS}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_start(raw: str, now: datetime | None = None) -> datetime:
    """A start instant (empty: ``now`` or the wall clock) as aware UTC truncated to milliseconds."""
    if not raw:
        base = now or datetime.now(UTC)
    else:
        try:
            base = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"start {raw!r} is not allowed; allowed: {START_FORMS}") from exc
        if base.tzinfo is None:
            raise ValueError(f"start {raw!r} has no UTC offset; allowed: {START_FORMS}")
    base = base.astimezone(UTC)
    return base - timedelta(microseconds=base.microsecond % 1000)


def format_duration(seconds: float) -> str:
    """The two largest units, as :func:`parse_duration` reads them back: ``5400`` -> ``1h30m``,
    ``90`` -> ``1m30s``, ``604800`` -> ``7d``."""
    s = round(seconds)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    shown = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (s, "s")) if v][:2]
    return "".join(shown) or "0s"
