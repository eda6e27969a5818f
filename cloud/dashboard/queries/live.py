"""Live view: KPIs, incident and alert feeds, map, tracks and fine-grained series.

Only ``device_latest`` (one row per device), the ``devices`` registry, index range scans of
``sensor_alerts`` by time and per-device index scans of ``sensor_data`` are used, so the cost does
not grow with the size of the raw table.

A device is *online* when it was last heard (the later of its newest event time and the time that
row was written) within ``offline_after_s``. Disabled registry entries are left out of the counts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from psycopg2 import sql

from fleetsim.cloud.dashboard.queries._sql import ONLINE, fetch_df

# One row per known device: the registry (placed or not) joined with the latest reading (devices
# that report without being registered show up too).
_FLEET = f"""
  SELECT coalesce(d.device_id, l.device_id) AS device_id,
         l.ts,
         GREATEST(l.ts, l.ingest_ts) AS last_seen,
         {ONLINE}
           AS online,
         l.status, l.fault, l.battery, l.temperature, l.humidity, l.co2, l.pressure,
         coalesce(l.lat, d.lat) AS lat, coalesce(l.lon, d.lon) AS lon,
         coalesce(l.site, d.site) AS site,
         coalesce(d.kind, 'unregistered') AS kind,
         coalesce(d.type, 'fixed') AS type,
         d.name
    FROM devices d
    FULL JOIN device_latest l ON l.device_id = d.device_id
   WHERE coalesce(d.enabled, true)
"""  # noqa: S608 (ONLINE is a module constant; values are bound parameters)

_KPI = """
SELECT count(*) AS devices,
       count(*) FILTER (WHERE online) AS online,
       count(*) FILTER (WHERE NOT online) AS offline,
       count(*) FILTER (WHERE online AND status = 'WARNING') AS warning,
       count(*) FILTER (WHERE online AND status = 'FAILURE') AS failure,
       count(*) FILTER (WHERE battery < %(low_battery_pct)s) AS low_battery,
       avg(temperature) FILTER (WHERE online) AS temperature_mean,
       avg(humidity) FILTER (WHERE online) AS humidity_mean,
       avg(co2) FILTER (WHERE online) AS co2_mean,
       max(last_seen) AS newest_reading,
       (SELECT count(*) FROM sensor_data
         WHERE ts >= now() - interval '1 minute' AND ts < now()) AS messages_last_min,
       (SELECT count(*) FROM sensor_data
         WHERE ts >= now() - interval '2 minutes' AND ts < now() - interval '1 minute') AS messages_prev_min,
       (SELECT count(*) FROM sensor_alerts
         WHERE event_ts >= now() - make_interval(secs => %(active_alert_s)s)) AS active_alerts,
       (SELECT count(*) FROM sensor_alerts
         WHERE event_ts >= now() - make_interval(secs => 2 * %(active_alert_s)s)
           AND event_ts < now() - make_interval(secs => %(active_alert_s)s)) AS previous_alerts,
       (SELECT count(*) FROM incidents WHERE state = 'open') AS open_incidents,
       (SELECT count(*) FROM incidents WHERE state = 'acknowledged') AS acknowledged_incidents
  FROM ({fleet}) f
"""


def kpis(
    conn: Any,
    *,
    offline_after_s: float,
    offline_intervals: float,
    low_battery_pct: float,
    active_alert_s: float,
) -> pd.DataFrame:
    """One row of fleet KPIs (counts, fleet means of online devices, message and alert rates)."""
    return fetch_df(
        conn,
        sql.SQL(_KPI).format(fleet=sql.SQL(_FLEET)),
        {
            "offline_after_s": offline_after_s,
            "offline_intervals": offline_intervals,
            "low_battery_pct": low_battery_pct,
            "active_alert_s": active_alert_s,
        },
    )


# Only what the map draws and its tooltip shows; the age comes as seconds (parsing 10k
# timestamps in Python costs more than the query).
_MAP = """
SELECT device_id, kind, site, lat, lon, online,
       extract(epoch FROM now() - last_seen)::float8 AS age_s,
       CASE WHEN NOT online THEN 'OFFLINE' ELSE coalesce(status, 'OFFLINE') END AS state,
       fault, battery, temperature, humidity, co2, pressure,
       coalesce(device_id IN (SELECT i.device_id FROM incidents i
                               WHERE i.state IN ('open', 'acknowledged')), false) AS incident
  FROM ({fleet}) f
 ORDER BY (kind = 'real') DESC, device_id COLLATE "C"
 LIMIT %(limit)s
"""
# ``IN (uncorrelated subquery)``: one scan of the live incidents (partial index incidents_state_idx)
# into a hashed subplan, probed per device, instead of a correlated EXISTS run once per device (10k
# index descents per refresh at 10k devices). Device ids are ASCII ([A-Za-z0-9_.-]): sorting them
# bytewise (COLLATE "C") gives the same order as the database collation up to letter case, without
# its locale-aware comparisons.


def fleet_map(conn: Any, *, offline_after_s: float, offline_intervals: float, limit: int) -> pd.DataFrame:
    """Every device (up to ``limit``, real devices first) with position, state and last reading.

    Devices without coordinates are included with null lat/lon so the page can count them."""
    return fetch_df(
        conn,
        sql.SQL(_MAP).format(fleet=sql.SQL(_FLEET)),
        {"offline_after_s": offline_after_s, "offline_intervals": offline_intervals, "limit": limit},
    )


_ALERT_FEED = """
SELECT event_ts, detected_at, device_id, kind, measurement, severity, value, threshold, site, message
  FROM sensor_alerts
 ORDER BY event_ts DESC
 LIMIT %(limit)s
"""


def alert_feed(conn: Any, *, limit: int = 50) -> pd.DataFrame:
    """The newest alerts by event time."""
    return fetch_df(conn, _ALERT_FEED, {"limit": limit})


_INCIDENT_FEED = """
SELECT incident_id, state, severity, device_id, site, kind, measurement, opened_at, last_seen, n_alerts,
       peak_value, threshold, acknowledged_by, ack_note, resolved_by, resolve_note
  FROM incidents
 WHERE state = ANY(%(states)s)
   AND (%(severities)s::text[] IS NULL OR severity = ANY(%(severities)s))
   AND (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))
 ORDER BY opened_at DESC, incident_id DESC
 LIMIT %(limit)s
"""


def incident_feed(
    conn: Any, *, states: list[str], severities: list[str] | None, sites: list[str] | None, limit: int = 100
) -> pd.DataFrame:
    """Incidents newest first, filtered by state, severity and site (None: any)."""
    return fetch_df(
        conn,
        _INCIDENT_FEED,
        {"states": list(states), "severities": severities or None, "sites": sites or None, "limit": limit},
    )


_INCIDENT_SITES = """
SELECT site FROM devices WHERE site IS NOT NULL
 UNION
SELECT site FROM incidents WHERE state IN ('open', 'acknowledged') AND site IS NOT NULL
 ORDER BY 1
"""


def incident_sites(conn: Any) -> pd.DataFrame:
    """Site filter choices: the registry's sites and those of live incidents (devices not in the
    registry). Not ``DISTINCT site FROM incidents``: a scan of every incident ever, which only grows."""
    return fetch_df(conn, _INCIDENT_SITES)


_TRACKS = """
SELECT t.device_id, t.lon, t.lat
  FROM (SELECT device_id FROM devices
         WHERE type = 'mobile' AND enabled
         ORDER BY device_id LIMIT %(max_devices)s) m
 CROSS JOIN LATERAL (
   SELECT s.device_id, s.ts, s.lat, s.lon
     FROM sensor_data s
    WHERE s.device_id = m.device_id
      AND s.ts >= now() - make_interval(secs => %(window_s)s)
      AND s.lat IS NOT NULL AND s.lon IS NOT NULL
    ORDER BY s.ts DESC
    LIMIT %(max_points)s) t
 ORDER BY t.device_id, t.ts
"""


def mobile_tracks(
    conn: Any, *, window_s: float, max_devices: int = 100, max_points: int = 60
) -> pd.DataFrame:
    """Recent positions (device_id, lon, lat) of up to ``max_devices`` mobile devices, the newest
    ``max_points`` each, ordered by device then time (no timestamps: the path only needs the order)."""
    return fetch_df(
        conn, _TRACKS, {"window_s": window_s, "max_devices": max_devices, "max_points": max_points}
    )


_SERIES = """
SELECT t.*
  FROM unnest(%(device_ids)s::text[]) AS k(device_id)
 CROSS JOIN LATERAL (
   SELECT s.device_id, s.ts, s.temperature, s.humidity, s.co2, s.pressure, s.battery, s.status, s.fault
     FROM sensor_data s
    WHERE s.device_id = k.device_id
      AND s.ts >= now() - make_interval(secs => %(window_s)s)
    ORDER BY s.ts DESC
    LIMIT %(max_points)s) t
 ORDER BY t.device_id, t.ts
"""


def device_series(
    conn: Any, *, device_ids: list[str], window_s: float, max_points: int = 2000
) -> pd.DataFrame:
    """Raw readings of the chosen devices over the last ``window_s`` seconds (newest ``max_points`` each)."""
    return fetch_df(
        conn, _SERIES, {"device_ids": list(device_ids), "window_s": window_s, "max_points": max_points}
    )
