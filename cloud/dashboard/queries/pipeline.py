"""Pipeline view: streaming-job batch metrics, dead letters, rejects and data freshness."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fleetsim.cloud.dashboard.queries._sql import fetch_df

_BATCHES = """
SELECT query_name,
       to_timestamp(floor(extract(epoch FROM recorded_at) / %(bucket_s)s) * %(bucket_s)s) AS recorded_at,
       count(*) AS batches,
       sum(input_rows)::bigint AS input_rows,
       avg(input_rate) AS input_rate,
       avg(processed_rate) AS processed_rate,
       avg(batch_duration_ms)::float8 AS batch_duration_ms,
       max(batch_duration_ms) AS batch_duration_ms_max,
       avg(latency_p50_ms) AS latency_p50_ms,
       max(latency_p95_ms) AS latency_p95_ms,
       coalesce(sum(late_rows_dropped), 0)::bigint AS late_rows_dropped
  FROM pipeline_metrics
 WHERE recorded_at >= now() - make_interval(secs => %(window_s)s)
 GROUP BY 1, 2
 ORDER BY 2
"""

CHART_POINTS = 180
"""Buckets per chart: one point per batch would be thousands of points for a busy hour."""


def batches(conn: Any, *, window_s: float) -> pd.DataFrame:
    """Micro-batch metrics of the last ``window_s`` seconds per query, in ~180 time buckets."""
    bucket_s = max(1.0, round(window_s / CHART_POINTS))
    return fetch_df(conn, _BATCHES, {"window_s": window_s, "bucket_s": bucket_s})


_SUMMARY = """
SELECT query_name,
       count(*) AS batches,
       max(recorded_at) AS last_batch_at,
       extract(epoch FROM now() - max(recorded_at))::float8 AS last_batch_age_s,
       sum(input_rows)::bigint AS input_rows,
       (sum(input_rows) / greatest(extract(epoch FROM max(recorded_at) - min(recorded_at)), 1))::float8
         AS rows_per_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY batch_duration_ms) AS batch_ms_p50,
       max(batch_duration_ms) AS batch_ms_max,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_p50_ms) AS latency_p50_ms,
       max(latency_p95_ms) AS latency_p95_ms_max,
       coalesce(sum(late_rows_dropped), 0)::bigint AS late_rows_dropped,
       coalesce(sum(malformed_rows), 0)::bigint AS malformed_rows
  FROM pipeline_metrics
 WHERE recorded_at >= now() - make_interval(secs => %(window_s)s)
 GROUP BY query_name
 ORDER BY query_name
"""


def batch_summary(conn: Any, *, window_s: float) -> pd.DataFrame:
    """Per streaming query: batches, throughput, batch duration and latency figures, drops."""
    return fetch_df(conn, _SUMMARY, {"window_s": window_s})


_DEADLETTERS = """
SELECT 'bridge' AS source, reason, count(*) AS records, max(ingest_ts) AS newest
  FROM deadletter_records
 WHERE ingest_ts >= now() - make_interval(secs => %(window_s)s)
 GROUP BY reason
UNION ALL
SELECT 'stream' AS source, reason, count(*) AS records, max(ingest_ts) AS newest
  FROM sensor_data_rejects
 WHERE ingest_ts >= now() - make_interval(secs => %(window_s)s)
 GROUP BY reason
 ORDER BY records DESC, source, reason
"""


def deadletters_by_reason(conn: Any, *, window_s: float) -> pd.DataFrame:
    """Dead-lettered (bridge) and rejected (streaming job) records per reason in the window."""
    return fetch_df(conn, _DEADLETTERS, {"window_s": window_s})


_RECENT_DEADLETTERS = """
SELECT ingest_ts, kafka_partition, kafka_offset, reason, detail, source_topic,
       encode(substring(payload FROM 1 FOR 160), 'escape') AS payload_head
  FROM deadletter_records
 ORDER BY ingest_ts DESC
 LIMIT %(limit)s
"""


def recent_deadletters(conn: Any, *, limit: int = 20) -> pd.DataFrame:
    """Newest bridge dead letters with the head of their payload."""
    return fetch_df(conn, _RECENT_DEADLETTERS, {"limit": limit})


_FRESHNESS = """
SELECT (SELECT max(ingest_ts) FROM device_latest) AS newest_row_written,
       (SELECT max(recorded_at) FROM pipeline_metrics) AS newest_batch,
       (SELECT max(detected_at) FROM sensor_alerts) AS newest_alert,
       (SELECT recorded_at FROM pipeline_metrics WHERE query_name = 'agg' AND input_rows > 0
         ORDER BY recorded_at DESC LIMIT 1) AS newest_aggregate,
       (SELECT watermark FROM pipeline_metrics WHERE query_name = 'agg' AND watermark IS NOT NULL
         ORDER BY recorded_at DESC LIMIT 1) AS agg_watermark,
       (SELECT max(ingest_ts) FROM deadletter_records) AS newest_deadletter,
       now() AS db_now
"""


def freshness(conn: Any) -> pd.DataFrame:
    """When each output table was last written (the database's view of pipeline health)."""
    return fetch_df(conn, _FRESHNESS)
