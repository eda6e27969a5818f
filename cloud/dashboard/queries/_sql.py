"""Helpers shared by the query modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from psycopg2 import sql

from fleetsim.kernel.contract import MEASUREMENTS

MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(m.name for m in MEASUREMENTS)
"""Measurement columns of sensor_data and device_latest (``<name>_mean`` etc. in sensor_data_agg)."""

ONLINE: str = (
    "coalesce(GREATEST(l.ts, l.ingest_ts) >= now() - make_interval(secs => "
    "offline_threshold_s(d.interval_s, %(offline_after_s)s, %(offline_intervals)s)), false)"
)
"""Whether a device (``l`` its device_latest row, ``d`` its registry row) was heard from within its
silence threshold: the one the streaming job's ``offline`` rule uses (migration V013), so a device
the map shows online has no open silence. Parameters ``offline_after_s`` and ``offline_intervals``."""

SCOPES: tuple[str, ...] = ("device", "site", "fleet")
"""Aggregation scopes of sensor_data_agg."""


def measurement_column(name: str) -> str:
    """``name`` if it is a known measurement, else ValueError (never interpolated unchecked)."""
    if name not in MEASUREMENT_COLUMNS:
        raise ValueError(f"unknown measurement {name!r}; expected one of {', '.join(MEASUREMENT_COLUMNS)}")
    return name


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    return scope


def fetch_df(conn: Any, query: str | sql.Composable, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run one parameterized query and return its rows as a DataFrame (columns from the cursor)."""
    with conn.cursor() as cur:
        cur.execute(query, params or {})
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    return pd.DataFrame.from_records(rows, columns=cols)


def like_pattern(text: str) -> str:
    """A case-insensitive substring pattern with LIKE wildcards in ``text`` escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
