"""A run's latency as a time series, and what else ran in each bucket: where its stalls sit.

A step's p95/p99 over ten minutes says that some readings waited, not when, nor beside what. The
series cuts the run into ``bucket_s`` buckets of event time (the readings' ``ts``; the simulator and
the load generator stamp with this machine's clock), each with its row count, its p95 and max
event->row and its p95 Kafka->row, from the rows themselves; beside each bucket, how many seconds
of it the windowed query's batches ran (from their ``pipeline_metrics`` rows: a batch ran from
``recorded_at - batch_duration_ms`` to ``recorded_at``). :func:`stalls` then lists the buckets
over a limit and says how many of them overlapped a windowed batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

BUCKET_S = 10

SERIES_SQL = """
SELECT floor(extract(epoch FROM ts) / %(bucket)s) * %(bucket)s AS b,
       count(*),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingest_ts - ts)),
       max(extract(epoch FROM ingest_ts - ts)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingest_ts - kafka_ts))
FROM sensor_data
WHERE device_id LIKE %(prefix)s AND ts >= %(since)s
GROUP BY 1 ORDER BY 1
"""

# The windowed query's batches that ended after the run's start (a batch that began before it
# may still overlap its first bucket).
AGG_BATCHES_SQL = """
SELECT extract(epoch FROM recorded_at), batch_duration_ms
FROM pipeline_metrics
WHERE query_name = 'agg' AND recorded_at >= %(since)s AND batch_duration_ms IS NOT NULL
ORDER BY recorded_at
"""


ROW_FIELDS = [
    "s from step start", "rows", "p95 event->row s", "max event->row s", "p95 Kafka->row s",
    "s of a windowed batch",
]  # fmt: skip
"""What each :meth:`Bucket.as_row` field is, in order (stored beside the rows)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One ``bucket_s`` of event time."""

    start_s: float
    """Bucket start, epoch seconds (UTC)."""
    rows: int
    """Rows stamped in the bucket."""
    p95_s: float | None
    """p95 event->row (``ingest_ts - ts``), seconds."""
    max_s: float | None
    """Largest event->row, seconds."""
    kafka_p95_s: float | None
    """p95 Kafka->row (``ingest_ts - kafka_ts``), seconds."""
    agg_busy_s: float
    """Seconds of the bucket during which a windowed batch ran."""

    def as_row(self, t0: float) -> list[Any]:
        """Compact JSON row (:data:`ROW_FIELDS`), its time in seconds from ``t0``."""
        return [
            round(self.start_s - t0), self.rows, _r2(self.p95_s), _r2(self.max_s),
            _r2(self.kafka_p95_s), round(self.agg_busy_s, 1),
        ]  # fmt: skip


def _r2(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def overlap_s(start: float, end: float, spans: Sequence[tuple[float, float]]) -> float:
    """Seconds of [start, end) covered by ``spans`` (assumed not to overlap one another: one
    windowed query runs one batch at a time)."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)


def build(
    rows: Sequence[tuple[float, int, float | None, float | None, float | None]],
    agg_spans: Sequence[tuple[float, float]],
    bucket_s: float = BUCKET_S,
) -> list[Bucket]:
    """Buckets from the series query's rows and the windowed batches' (start, end) spans."""
    return [
        Bucket(
            start_s=float(b), rows=int(n),
            p95_s=None if p95 is None else float(p95),
            max_s=None if mx is None else float(mx),
            kafka_p95_s=None if kp95 is None else float(kp95),
            agg_busy_s=overlap_s(float(b), float(b) + bucket_s, agg_spans),
        )
        for b, n, p95, mx, kp95 in rows
    ]  # fmt: skip


def stalls(buckets: Sequence[Bucket], limit_s: float, t0: float | None = None) -> dict[str, Any]:
    """The buckets whose p95 event->row exceeds ``limit_s``, and how many of them a windowed batch
    overlapped (against the share of all buckets it overlapped: a cause would stand out). Times in
    seconds from ``t0`` (default: the first bucket's start), as :meth:`Bucket.as_row` gives them."""
    known = [b for b in buckets if b.p95_s is not None]
    over = [b for b in known if b.p95_s is not None and b.p95_s > limit_s]
    if t0 is None:
        t0 = buckets[0].start_s if buckets else 0.0
    worst = max(over, key=lambda b: b.p95_s or 0.0) if over else None
    return {
        "buckets": len(known),
        "over": len(over),
        "over_with_agg_batch": sum(1 for b in over if b.agg_busy_s > 0),
        "all_with_agg_batch": sum(1 for b in known if b.agg_busy_s > 0),
        "worst_p95_s": None if worst is None else round(worst.p95_s or 0.0, 2),
        "worst_at_s": None if worst is None else round(worst.start_s - t0),
        "over_at_s": [round(b.start_s - t0) for b in over],
    }


def fetch(cfg: FleetsimConfig, prefix: str, since: datetime, bucket_s: float = BUCKET_S) -> list[Bucket]:
    """The series of the devices ``prefix-*`` from ``since`` on, with the windowed batches beside it."""
    with pg_connect(cfg, "admin") as conn, conn.cursor() as cur:
        cur.execute(SERIES_SQL, {"bucket": bucket_s, "prefix": prefix + "-%", "since": since})
        rows = cur.fetchall()
        cur.execute(AGG_BATCHES_SQL, {"since": since})
        spans = [(float(end) - float(ms) / 1000.0, float(end)) for end, ms in cur.fetchall()]
    return build(rows, spans, bucket_s)
