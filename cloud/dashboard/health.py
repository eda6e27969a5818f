"""Per-component health for the pipeline view, from the same source as ``fleetsim status``.

When the stack's status functions are importable they are called (the dashboard then says exactly
what ``fleetsim status`` says). Otherwise only what the database proves is shown, and the other
components are reported as *unknown*, never as a made-up "running".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetsim.kernel.config import FleetsimConfig

COMPONENTS: tuple[str, ...] = ("mosquitto", "kafka", "postgres", "stream", "bridge", "sim", "dashboard")


@dataclass(frozen=True)
class ComponentHealth:
    """One row of the health table."""

    name: str
    """Component name as in ``fleetsim status``."""
    state: str
    """``up``, ``down``, ``unhealthy``/``not installed`` (from ``fleetsim status``), ``stale`` (wrote
    in the past, quiet now) or ``unknown``."""
    detail: str
    """The live figure or why the state is what it is."""
    source: str
    """Where the state comes from: ``fleetsim status`` or ``database``."""


def _status_function() -> Callable[[FleetsimConfig], Iterable[Any]] | None:
    """``fleetsim.stack.lifecycle.status`` (what ``fleetsim status`` prints), if installed."""
    try:
        module = importlib.import_module("fleetsim.stack.lifecycle")
    except ImportError:
        return None
    fn = getattr(module, "status", None)
    return fn if callable(fn) else None


def _field(row: Any, name: str, default: Any = None) -> Any:
    return row.get(name, default) if isinstance(row, dict) else getattr(row, name, default)


def stack_health(cfg: FleetsimConfig) -> list[ComponentHealth] | None:
    """Rows from the stack's status function, or None when it is not available."""
    fn = _status_function()
    if fn is None:
        return None
    try:
        statuses = list(fn(cfg))
    except Exception as exc:  # the status source itself failing is shown, not raised
        return [ComponentHealth("stack", "unknown", f"fleetsim status failed: {exc}", "fleetsim status")]
    rows = []
    for s in statuses:
        up = bool(_field(s, "up", False))
        state = str(_field(s, "state", "") or ("up" if up else "down"))
        rows.append(
            ComponentHealth(
                name=str(_field(s, "name", "?")),
                state=state,
                detail=str(_field(s, "figure", "")),
                source="fleetsim status",
            )
        )
    return rows


def _age(ts: Any, now: datetime) -> float | None:
    if ts is None:
        return None
    try:
        return (now - ts).total_seconds()
    except TypeError:
        return None


def database_health(fresh: dict[str, Any], now: datetime, stale_after_s: float) -> list[ComponentHealth]:
    """What the database proves: it answered, and when the streaming job last wrote each output."""
    rows = [ComponentHealth("postgres", "up", "answered the dashboard's read-only queries", "database")]
    batch_age = _age(fresh.get("newest_batch"), now)
    row_age = _age(fresh.get("newest_row_written"), now)
    ages = [a for a in (batch_age, row_age) if a is not None]
    if not ages:
        rows.append(ComponentHealth("stream", "unknown", "no batch or row written yet", "database"))
    else:
        newest = min(ages)
        state = "up" if newest <= stale_after_s else "stale"
        rows.append(ComponentHealth("stream", state, f"last write {newest:.0f} s ago", "database"))
    return rows


def merge(stack_rows: list[ComponentHealth] | None, db_rows: list[ComponentHealth]) -> list[ComponentHealth]:
    """Stack status first; database evidence added; components nobody vouches for marked unknown."""
    out: list[ComponentHealth] = list(stack_rows or [])
    seen = {r.name for r in out}
    for r in db_rows:
        if r.name in seen:
            out.append(ComponentHealth(f"{r.name} (db)", r.state, r.detail, r.source))
        else:
            out.append(r)
            seen.add(r.name)
    for name in COMPONENTS:
        if name not in seen:
            why = "status source unavailable" if stack_rows is None else "not reported by fleetsim status"
            out.append(ComponentHealth(name, "unknown", why, "none"))
    return out
