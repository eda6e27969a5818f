"""Pure presentation logic (no Streamlit, no database): states, colours, deltas, periods."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

STATES: tuple[str, ...] = ("OK", "WARNING", "FAILURE", "OFFLINE")
"""Map states: the device-reported status while online, else OFFLINE."""

STATE_COLORS: dict[str, tuple[int, int, int]] = {
    "OK": (46, 160, 67),
    "WARNING": (230, 160, 0),
    "FAILURE": (214, 39, 40),
    "OFFLINE": (130, 130, 130),
}
"""RGB per state (colour-blind friendly enough: green/amber/red differ in lightness too; offline grey)."""

REAL_OUTLINE: tuple[int, int, int, int] = (20, 20, 230, 255)
"""Outline of real (non-simulated) devices on the map."""


def fmt_num(value: Any, digits: int = 1, unit: str = "") -> str:
    """``12.3 °C`` or an em dash for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    try:
        text = f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "—"
    return f"{text} {unit}".strip()


def fmt_age(seconds: float | None) -> str:
    """Human age: ``42 s``, ``5 min``, ``3.2 h``, ``2.0 d``; ``never`` when missing."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def age_seconds(ts: Any, now: datetime) -> float | None:
    """Seconds between a timestamp (aware) and ``now``; None when missing."""
    if ts is None or ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts)):
        return None
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return (now - stamp.to_pydatetime()).total_seconds()


def delta(current: Any, previous: Any, digits: int = 0) -> float | int | None:
    """``current - previous`` rounded to ``digits`` decimals (an int for 0: counts, whole ppm) when
    both are numbers, else None (Streamlit then shows no delta). Streamlit prints a float delta as
    ``repr`` (``0.18960459183673528``): round it to the precision the value itself is shown with."""
    try:
        c, p = float(current), float(previous)
    except (TypeError, ValueError):
        return None
    if math.isnan(c) or math.isnan(p):
        return None
    if digits <= 0:
        return round(c - p)
    return round(c - p, digits) + 0.0  # + 0.0: no "-0.0" (Streamlit would draw a down arrow)


def battery_radius(battery: Any) -> float:
    """Marker radius in pixels: 3 px (empty) to 8 px (full); 4 px when unknown."""
    try:
        b = float(battery)
    except (TypeError, ValueError):
        return 4.0
    if math.isnan(b):
        return 4.0
    return 3.0 + 5.0 * min(max(b, 0.0), 100.0) / 100.0


def battery_alpha(battery: Any) -> int:
    """Fill opacity 90..255 rising with battery (a low battery fades out); 200 when unknown."""
    try:
        b = float(battery)
    except (TypeError, ValueError):
        return 200
    if math.isnan(b):
        return 200
    return int(90 + 165 * min(max(b, 0.0), 100.0) / 100.0)


@dataclass(frozen=True)
class Period:
    """A half-open time interval [start, end) in UTC."""

    start: datetime
    """Inclusive start (aware UTC)."""
    end: datetime
    """Exclusive end (aware UTC)."""

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def shifted(self, by: timedelta) -> Period:
        return Period(self.start - by, self.end - by)


PRESETS: dict[str, timedelta] = {
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
}
"""Trend-view period presets."""

COMPARISONS: dict[str, str] = {
    "Previous period": "previous",
    "Same period a day earlier": "day",
    "Same period a week earlier": "week",
}


def preset_period(preset: str, now: datetime) -> Period:
    """The preset interval ending at ``now`` rounded up to the next minute (stable cache keys)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown period {preset!r}; expected one of {', '.join(PRESETS)}")
    end = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return Period(end - PRESETS[preset], end)


def day_period(first: Any, last: Any) -> Period:
    """Whole UTC days from ``first`` to ``last`` inclusive (dates from a date picker)."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    if end <= start:
        raise ValueError("the period's end must not be before its start")
    return Period(start, end)


def comparison_period(period: Period, mode: str) -> Period:
    """The period to compare with: the one just before, or a day or a week earlier."""
    if mode == "previous":
        return period.shifted(period.length)
    if mode == "day":
        return period.shifted(timedelta(days=1))
    if mode == "week":
        return period.shifted(timedelta(days=7))
    raise ValueError(f"unknown comparison {mode!r}")


def align_periods(a: pd.DataFrame, b: pd.DataFrame, start_a: datetime, start_b: datetime) -> pd.DataFrame:
    """Two window series (``window_start``, ``mean``) side by side, indexed by minutes since their start."""
    out = []
    for label, df, start in (("current", a, start_a), ("compared", b, start_b)):
        if df.empty:
            continue
        g = df.groupby("window_start")["mean"].mean().reset_index()
        g["minutes"] = (
            pd.to_datetime(g["window_start"], utc=True) - pd.Timestamp(start)
        ).dt.total_seconds() / 60
        g["period"] = label
        out.append(g[["minutes", "period", "mean"]])
    if not out:
        return pd.DataFrame(columns=["current", "compared"])
    both = pd.concat(out).pivot_table(index="minutes", columns="period", values="mean")
    return both.reindex(columns=["current", "compared"])


def pearson(df: pd.DataFrame, x: str = "x", y: str = "y") -> float | None:
    """Pearson correlation of two columns; None with fewer than 3 points or a constant column."""
    clean = df[[x, y]].dropna()
    if len(clean) < 3 or clean[x].nunique() < 2 or clean[y].nunique() < 2:
        return None
    return float(clean[x].astype(float).corr(clean[y].astype(float)))


def utc_now() -> datetime:
    return datetime.now(UTC)
