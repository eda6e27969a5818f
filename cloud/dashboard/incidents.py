"""Incident lifecycle (docs/alerts.md): list incidents, acknowledge, resolve, add a note.

Plain psycopg2 on a connection the caller opens as the ``operator`` role (it may change only
incident state and notes: V006). Shared by the dashboard's alert feed and ``fleetsim alerts``.
Every step records who, when and a note, in the incident row and as an ``incident_events`` row;
the database's transition trigger refuses a step out of order even if a client skipped this check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from fleetsim.kernel.errors import DashboardError

VISIBLE_STATES: Final = ("open", "acknowledged", "resolved")
"""States an operator sees (``pending``: shorter than its rule's minimum duration so far;
``expired``: a pending one that ended; both stay internal)."""
LIVE_STATES: Final = ("open", "acknowledged")
SEVERITIES: Final = ("info", "warning", "critical")
MAX_NOTE = 2000
"""Longest note kept, in characters."""

INCIDENT_COLUMNS: Final = (
    "incident_id", "device_id", "site", "kind", "measurement", "severity", "state", "opened_at", "last_seen",
    "n_alerts", "peak_value", "threshold", "acknowledged_at", "acknowledged_by", "ack_note", "resolved_at",
    "resolved_by", "resolve_note",
)  # fmt: skip


class IncidentError(DashboardError):
    """An incident step that cannot be done (unknown id, wrong state, empty note)."""


@dataclass(frozen=True, slots=True)
class Incident:
    incident_id: int
    device_id: str
    site: str | None
    kind: str
    measurement: str
    severity: str
    state: str
    opened_at: datetime
    last_seen: datetime
    n_alerts: int
    peak_value: float | None
    threshold: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in INCIDENT_COLUMNS}


_SELECT: Final = f"SELECT {', '.join(INCIDENT_COLUMNS)} FROM incidents"  # noqa: S608 (module constants)


def _check(values: Sequence[str] | None, allowed: Sequence[str], what: str) -> list[str] | None:
    if not values:
        return None
    bad = [v for v in values if v not in allowed]
    if bad:
        raise IncidentError(f"unknown {what} {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return list(values)


def list_incidents(
    conn: Any,
    *,
    states: Sequence[str] | None = LIVE_STATES,
    sites: Sequence[str] | None = None,
    severities: Sequence[str] | None = None,
    device_id: str | None = None,
    limit: int = 200,
) -> list[Incident]:
    """Incidents newest first, filtered (None or empty: no filter; states default to the live ones)."""
    st = _check(states, VISIBLE_STATES, "state") or list(VISIBLE_STATES)
    sev = _check(severities, SEVERITIES, "severity")
    params = {"states": st, "sites": list(sites) if sites else None, "sev": sev, "dev": device_id}
    query = (
        _SELECT + " WHERE state = ANY(%(states)s)"
        " AND (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))"
        " AND (%(sev)s::text[] IS NULL OR severity = ANY(%(sev)s))"
        " AND (%(dev)s::text IS NULL OR device_id = %(dev)s)"
        " ORDER BY opened_at DESC, incident_id DESC LIMIT %(limit)s"
    )
    with conn.cursor() as cur:
        cur.execute(query, {**params, "limit": max(1, int(limit))})
        return [Incident(*row) for row in cur.fetchall()]


def get_incident(conn: Any, incident_id: int) -> Incident:
    with conn.cursor() as cur:
        cur.execute(
            _SELECT + " WHERE incident_id = %s AND state = ANY(%s)", (incident_id, list(VISIBLE_STATES))
        )
        row = cur.fetchone()
    if row is None:
        raise IncidentError(f"no incident {incident_id}")
    return Incident(*row)


def incident_events(conn: Any, incident_id: int) -> list[tuple[datetime, str, str, str | None]]:
    """``(at, action, actor, note)`` of every step of one incident, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT at, action, actor, note FROM incident_events WHERE incident_id = %s ORDER BY event_id",
            (incident_id,),
        )
        return [tuple(r) for r in cur.fetchall()]


def _clean(actor: str, note: str) -> tuple[str, str]:
    actor, note = actor.strip(), note.strip()
    if not actor:
        raise IncidentError("who did it is missing: set [alerts] operator or pass --by")
    if not note:
        raise IncidentError("a note is required (what was seen or done)")
    return actor[:64], note[:MAX_NOTE]


_STEPS: Final = {
    "acknowledged": (
        "UPDATE incidents SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %(actor)s,"
        " ack_note = %(note)s, updated_at = now() WHERE incident_id = %(id)s AND state = 'open'",
        "only an open incident can be acknowledged",
    ),
    "resolved": (
        "UPDATE incidents SET state = 'resolved', resolved_at = now(), resolved_by = %(actor)s,"
        " resolve_note = %(note)s, updated_at = now()"
        " WHERE incident_id = %(id)s AND state IN ('open', 'acknowledged')",
        "it is already resolved",
    ),
}


def _step(conn: Any, incident_id: int, action: str, actor: str, note: str) -> Incident:
    actor, note = _clean(actor, note)
    try:
        current = get_incident(conn, incident_id)
        with conn.cursor() as cur:
            if action in _STEPS:
                stmt, refusal = _STEPS[action]
                cur.execute(stmt, {"actor": actor, "note": note, "id": incident_id})
                if cur.rowcount != 1:
                    raise IncidentError(f"incident {incident_id} is {current.state}: {refusal}")
            cur.execute(
                "INSERT INTO incident_events (incident_id, action, actor, note) VALUES (%s, %s, %s, %s)",
                (incident_id, action, actor, note),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return get_incident(conn, incident_id)


def acknowledge(conn: Any, incident_id: int, actor: str, note: str) -> Incident:
    """open -> acknowledged: someone is on it."""
    return _step(conn, incident_id, "acknowledged", actor, note)


def resolve(conn: Any, incident_id: int, actor: str, note: str) -> Incident:
    """open or acknowledged -> resolved. New alerts of the same kind then open a new incident."""
    return _step(conn, incident_id, "resolved", actor, note)


def add_note(conn: Any, incident_id: int, actor: str, note: str) -> Incident:
    """A note on an incident in any visible state (the state does not change)."""
    return _step(conn, incident_id, "note", actor, note)
