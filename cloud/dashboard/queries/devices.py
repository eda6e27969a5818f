"""Registry and per-device queries (Devices page and the drill-down of the live view)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fleetsim.cloud.dashboard.queries._sql import ONLINE, fetch_df, like_pattern

_LIST = f"""
SELECT coalesce(d.device_id, l.device_id) AS device_id,
       d.name,
       coalesce(d.kind, 'unregistered') AS kind,
       d.type, coalesce(l.site, d.site) AS site, d.payload_format, d.interval_s,
       d.placed, d.enabled, d.lat AS home_lat, d.lon AS home_lon,
       GREATEST(l.ts, l.ingest_ts) AS last_seen,
       {ONLINE}
         AS online,
       l.status, l.battery, d.created_at
  FROM devices d
  FULL JOIN device_latest l ON l.device_id = d.device_id
 WHERE (%(pattern)s::text IS NULL
        OR coalesce(d.device_id, l.device_id) ILIKE %(pattern)s
        OR d.name ILIKE %(pattern)s)
   AND (%(site)s::text IS NULL OR coalesce(l.site, d.site) = %(site)s)
   AND (%(kind)s::text IS NULL OR coalesce(d.kind, 'unregistered') = %(kind)s)
 ORDER BY (d.kind = 'real') DESC NULLS LAST, 1
 LIMIT %(limit)s
"""  # noqa: S608 (ONLINE is a module constant; values are bound parameters)


def device_list(
    conn: Any,
    *,
    offline_after_s: float,
    offline_intervals: float,
    search: str = "",
    site: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Registry rows (plus unregistered reporters) filtered by id/name substring, site and kind."""
    return fetch_df(
        conn,
        _LIST,
        {
            "offline_after_s": offline_after_s,
            "offline_intervals": offline_intervals,
            "pattern": like_pattern(search) if search else None,
            "site": site or None,
            "kind": kind or None,
            "limit": limit,
        },
    )


_COUNTS = f"""
SELECT coalesce(d.kind, 'unregistered') AS kind, d.type, count(*) AS devices,
       count(*) FILTER (
         WHERE {ONLINE}) AS online
  FROM devices d
  FULL JOIN device_latest l ON l.device_id = d.device_id
 GROUP BY 1, 2
 ORDER BY 1, 2
"""  # noqa: S608 (ONLINE is a module constant; values are bound parameters)


def device_counts(conn: Any, *, offline_after_s: float, offline_intervals: float) -> pd.DataFrame:
    """Device and online counts per kind (simulated/real/unregistered) and type."""
    return fetch_df(
        conn, _COUNTS, {"offline_after_s": offline_after_s, "offline_intervals": offline_intervals}
    )


_SITES = """
SELECT site FROM devices WHERE site IS NOT NULL
UNION
SELECT site FROM device_latest WHERE site IS NOT NULL
ORDER BY 1
LIMIT 1000
"""


def sites(conn: Any) -> pd.DataFrame:
    """Known site names."""
    return fetch_df(conn, _SITES)


_IDS = """
SELECT device_id FROM devices
UNION
SELECT device_id FROM device_latest
ORDER BY 1
LIMIT %(limit)s
"""


def device_ids(conn: Any, *, limit: int = 20000) -> pd.DataFrame:
    """Known device ids (registry and reporters)."""
    return fetch_df(conn, _IDS, {"limit": limit})


_DETAIL = f"""
SELECT k.device_id,
       d.device_id IS NOT NULL AS registered,
       l.device_id IS NOT NULL AS reporting,
       d.name, d.kind, d.type, d.site AS home_site, d.lat AS home_lat, d.lon AS home_lon,
       d.payload_format, d.interval_s, d.placed, d.enabled, d.created_at, d.updated_at,
       l.seq, l.ts, l.ingest_ts, GREATEST(l.ts, l.ingest_ts) AS last_seen,
       {ONLINE}
         AS online,
       l.status, l.fault, l.temperature, l.humidity, l.co2, l.pressure, l.battery, l.lat, l.lon, l.site
  FROM (SELECT %(device_id)s::text AS device_id) k
  LEFT JOIN devices d ON d.device_id = k.device_id
  LEFT JOIN device_latest l ON l.device_id = k.device_id
 WHERE d.device_id IS NOT NULL OR l.device_id IS NOT NULL
"""  # noqa: S608 (ONLINE is a module constant; values are bound parameters)


def device_detail(
    conn: Any, *, device_id: str, offline_after_s: float, offline_intervals: float
) -> pd.DataFrame:
    """Registry entry and latest reading of one device; empty when the id is unknown."""
    return fetch_df(
        conn,
        _DETAIL,
        {"device_id": device_id, "offline_after_s": offline_after_s, "offline_intervals": offline_intervals},
    )


_DEVICE_ALERTS = """
SELECT event_ts, kind, measurement, severity, value, threshold, message, fault
  FROM sensor_alerts
 WHERE device_id = %(device_id)s
 ORDER BY event_ts DESC
 LIMIT %(limit)s
"""


def device_alerts(conn: Any, *, device_id: str, limit: int = 50) -> pd.DataFrame:
    """Newest alerts of one device."""
    return fetch_df(conn, _DEVICE_ALERTS, {"device_id": device_id, "limit": limit})


_DEVICE_INCIDENTS = """
SELECT incident_id, state, severity, kind, measurement, opened_at, last_seen, n_alerts, peak_value,
       acknowledged_by, ack_note, resolved_by, resolve_note
  FROM incidents
 WHERE device_id = %(device_id)s AND state IN ('open', 'acknowledged', 'resolved')
 ORDER BY opened_at DESC, incident_id DESC
 LIMIT %(limit)s
"""


def device_incidents(conn: Any, *, device_id: str, limit: int = 20) -> pd.DataFrame:
    """Incident history of one device, newest first (who acknowledged/resolved it, with the notes)."""
    return fetch_df(conn, _DEVICE_INCIDENTS, {"device_id": device_id, "limit": limit})
