"""Trend view: window aggregates from ``sensor_data_agg`` and alert distributions.

Never touches the raw table. Windows slide (a reading counts in several windows), so period means
are the windows' means weighted by their message counts; that equals the plain mean of the readings
whenever every window holds the same readings share, and stays close otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from psycopg2 import sql

from fleetsim.cloud.dashboard.queries._sql import (
    MEASUREMENT_COLUMNS,
    check_scope,
    fetch_df,
    measurement_column,
)

_SERIES = """
SELECT key, window_start, window_end, n_messages, n_alerts,
       {mean} AS mean, {min} AS min, {max} AS max
  FROM sensor_data_agg
 WHERE scope = %(scope)s
   AND (%(all_keys)s OR key = ANY(%(keys)s::text[]))
   AND window_start >= %(start)s AND window_start < %(end)s
 ORDER BY key, window_start
 LIMIT %(limit)s
"""


def window_series(
    conn: Any,
    *,
    scope: str,
    keys: list[str] | None,
    measurement: str,
    start: datetime,
    end: datetime,
    limit: int = 20000,
) -> pd.DataFrame:
    """Window mean/min/max of one measurement for the chosen keys (None: all) of a scope over [start, end)."""
    m = measurement_column(measurement)
    query = sql.SQL(_SERIES).format(
        mean=sql.Identifier(f"{m}_mean"), min=sql.Identifier(f"{m}_min"), max=sql.Identifier(f"{m}_max")
    )
    params = {
        "scope": check_scope(scope),
        "all_keys": keys is None,
        "keys": list(keys or []),
        "start": start,
        "end": end,
        "limit": limit,
    }
    return fetch_df(conn, query, params)


def _weighted(m: str) -> sql.Composable:
    col = sql.Identifier(f"{m}_mean")
    return sql.SQL(
        "sum({c} * n_messages) / nullif(sum(n_messages) FILTER (WHERE {c} IS NOT NULL), 0) AS {a}"
    ).format(c=col, a=sql.Identifier(f"{m}_mean"))


_SUMMARY = """
SELECT key, count(*) AS windows, min(window_start) AS first_window, max(window_end) AS last_window,
       {means},
       sum(n_warnings)::bigint AS warning_readings, sum(n_failures)::bigint AS failure_readings
  FROM sensor_data_agg
 WHERE scope = %(scope)s
   AND (%(all_keys)s OR key = ANY(%(keys)s::text[]))
   AND window_start >= %(start)s AND window_start < %(end)s
 GROUP BY key
 ORDER BY key
 LIMIT %(limit)s
"""


def window_summary(
    conn: Any,
    *,
    scope: str,
    keys: list[str] | None,
    start: datetime,
    end: datetime,
    limit: int = 500,
) -> pd.DataFrame:
    """Per-key period means of every measurement; ``keys=None`` means every key of the scope."""
    query = sql.SQL(_SUMMARY).format(means=sql.SQL(", ").join(_weighted(m) for m in MEASUREMENT_COLUMNS))
    params = {
        "scope": check_scope(scope),
        "all_keys": keys is None,
        "keys": list(keys or []),
        "start": start,
        "end": end,
        "limit": limit,
    }
    return fetch_df(conn, query, params)


_FLEET = """
SELECT window_start, window_end, n_messages, n_warnings, n_failures, n_alerts, {means}
  FROM sensor_data_agg
 WHERE scope = 'fleet' AND window_start >= %(start)s AND window_start < %(end)s
 ORDER BY window_start
 LIMIT %(limit)s
"""


def fleet_evolution(conn: Any, *, start: datetime, end: datetime, limit: int = 20000) -> pd.DataFrame:
    """Fleet-wide window means of every measurement over [start, end)."""
    means = sql.SQL(", ").join(sql.Identifier(f"{m}_mean") for m in MEASUREMENT_COLUMNS)
    return fetch_df(conn, sql.SQL(_FLEET).format(means=means), {"start": start, "end": end, "limit": limit})


# Group by the hour bucket first (a plain timestamp: cheaper than per-row time-zone arithmetic),
# then fold buckets into hours of the day over the few resulting rows.
_ALERTS = """
SELECT kind, coalesce(site, '(none)') AS site,
       extract(hour FROM bucket AT TIME ZONE 'UTC')::int AS hour_utc,
       severity, sum(n)::bigint AS alerts
  FROM (SELECT kind, site, date_trunc('hour', event_ts, 'UTC') AS bucket, severity, count(*) AS n
          FROM sensor_alerts
         WHERE event_ts >= %(start)s AND event_ts < %(end)s
         GROUP BY 1, 2, 3, 4) b
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4
"""


def alert_distribution(conn: Any, *, start: datetime, end: datetime) -> pd.DataFrame:
    """Alert counts by kind, site, UTC hour of day and severity over [start, end)."""
    return fetch_df(conn, _ALERTS, {"start": start, "end": end})


_PAIRS = """
SELECT key, window_start, {x} AS x, {y} AS y
  FROM sensor_data_agg
 WHERE scope = %(scope)s
   AND (%(all_keys)s OR key = ANY(%(keys)s::text[]))
   AND window_start >= %(start)s AND window_start < %(end)s
   AND {x} IS NOT NULL AND {y} IS NOT NULL
 ORDER BY window_start DESC
 LIMIT %(limit)s
"""


def correlation_pairs(
    conn: Any,
    *,
    scope: str,
    keys: list[str] | None,
    x: str,
    y: str,
    start: datetime,
    end: datetime,
    limit: int = 5000,
) -> pd.DataFrame:
    """Window means of two measurements side by side (newest ``limit`` windows) for a scatter plot."""
    query = sql.SQL(_PAIRS).format(
        x=sql.Identifier(f"{measurement_column(x)}_mean"), y=sql.Identifier(f"{measurement_column(y)}_mean")
    )
    params = {
        "scope": check_scope(scope),
        "all_keys": keys is None,
        "keys": list(keys or []),
        "start": start,
        "end": end,
        "limit": limit,
    }
    return fetch_df(conn, query, params)


_ANY = """
SELECT EXISTS (SELECT 1 FROM sensor_data_agg
                WHERE scope = %(scope)s AND window_start >= %(start)s AND window_start < %(end)s) AS any
"""


def has_windows(conn: Any, *, scope: str, start: datetime, end: datetime) -> pd.DataFrame:
    """One row, ``any``: whether the scope has at least one window in [start, end)."""
    return fetch_df(conn, _ANY, {"scope": check_scope(scope), "start": start, "end": end})
