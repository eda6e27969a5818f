"""Experiments page queries (tables of ``V004__experiments.sql``), reader role, parameterized."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from fleetsim.cloud.dashboard.queries._sql import fetch_df


def runs(conn: Any, *, limit: int = 200) -> pd.DataFrame:
    """Recorded runs, newest first, with their headline scores."""
    return fetch_df(
        conn,
        """
        SELECT run_id, scenario, status, wall_start, wall_end, sim_start, sim_end, devices, injected,
               detected, false_alarms, precision, recall, ttd_p50_s, ttd_p95_s, lost, duplicated, late,
               report_dir, error
          FROM experiment_runs
         ORDER BY wall_start DESC
         LIMIT %(limit)s
        """,
        {"limit": limit},
    )


def scores(conn: Any, *, run_id: str) -> pd.DataFrame:
    """Per fault kind scores of one run."""
    return fetch_df(
        conn,
        """
        SELECT fault_kind, injected, detected, missed, precision, recall, ttd_p50_s, ttd_p95_s, false_alarms
          FROM experiment_scores WHERE run_id = %(run_id)s ORDER BY fault_kind
        """,
        {"run_id": run_id},
    )


def faults(conn: Any, *, run_id: str, limit: int = 5000) -> pd.DataFrame:
    """The faults injected during one run (event time), for the annotations."""
    return fetch_df(
        conn,
        """
        SELECT device_id, fault, start_ts, end_ts, detected, ttd_s
          FROM experiment_faults WHERE run_id = %(run_id)s
         ORDER BY start_ts, device_id
         LIMIT %(limit)s
        """,
        {"run_id": run_id, "limit": limit},
    )


def activity(conn: Any, *, start: datetime, end: datetime) -> pd.DataFrame:
    """Readings and alerts per minute of event time over ``[start, end]`` (long format:
    ``minute, series, n``)."""
    return fetch_df(
        conn,
        """
        SELECT date_trunc('minute', ts) AS minute, 'readings' AS series, count(*) AS n
          FROM sensor_data WHERE ts >= %(start)s AND ts <= %(end)s GROUP BY 1
        UNION ALL
        SELECT date_trunc('minute', event_ts), 'alerts: ' || kind, count(*)
          FROM sensor_alerts WHERE event_ts >= %(start)s AND event_ts <= %(end)s GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        {"start": start, "end": end},
    )


def report(conn: Any, *, run_id: str) -> pd.DataFrame:
    """One run's stored report (``report`` jsonb: a dict per row), for the chaos campaigns' figures."""
    return fetch_df(conn, "SELECT report FROM experiment_runs WHERE run_id = %(run_id)s", {"run_id": run_id})
