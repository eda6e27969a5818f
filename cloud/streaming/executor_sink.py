"""The raw flow's sink, run by the executors: each task writes its own Kafka partition's share.

The raw query is ``raw_lines(...) -> mapInArrow(RawPartitionWriter) -> observe -> noop sink``:

* every task gets its partition's ``(kind, day, line)`` rows as Arrow, splits them into the three
  COPY payloads (:func:`split_raw`) and merges them with :meth:`PgSink.write_raw` in **one
  transaction of its own** (COPY into session temp tables, ``INSERT ... ON CONFLICT DO NOTHING`` on
  the natural keys, device_latest, alerts, stuck/drift, offline, incidents), as the writer role;
* the connection is kept in the Python worker (``spark.python.worker.reuse``, on by default), so a
  batch pays no connect; a failed write drops it and raises, and Spark re-runs the batch;
* a task emits one row of figures (rows, inserted, alerts, rejects, write time, latency, which
  writer) that ``observe`` sums into the query's progress report, where the driver's listener
  turns them into the batch's ``pipeline_metrics`` row and the Prometheus counters. Nothing is
  collected to the driver, and no per-row Python runs anywhere.

Why the partition is the unit: Kafka records are keyed by device id (bridge/kafka_sink.py, the
murmur2 partitioner), so one device's readings of a batch are all in one task; the history rules
and device_latest see a device's readings in one transaction, as with the driver-side sink.

Idempotent as before: a batch re-run after a crash merges into the same rows (primary keys on the
natural keys), so replays add nothing. Delivery to the sink is at-least-once (asynchronous progress
tracking may re-run a batch whose offsets were not logged yet), which the keys absorb.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from fleetsim.cloud.streaming.lines import string_array_bytes
from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import FleetsimConfig

log = logging.getLogger("fleetsim.stream.executor_sink")

KIND_READING: Final = 0
KIND_ALERT: Final = 1
KIND_REJECT: Final = 2
"""Row kinds of the raw flow's output (:mod:`.flows` re-exports them)."""

STATS_FIELDS: Final = (
    ("batch_id", pa.int64()),
    ("rows", pa.int64()),
    ("inserted", pa.int64()),
    ("alerts", pa.int64()),
    ("rejects", pa.int64()),
    ("malformed", pa.int64()),
    ("incident_events", pa.int64()),
    ("write_ms", pa.float64()),
    ("latency_p50_ms", pa.float64()),
    ("latency_p95_ms", pa.float64()),
    ("latency_max_ms", pa.float64()),
    ("writer", pa.string()),
)
STATS_ARROW: Final = pa.schema(list(STATS_FIELDS))
STATS_DDL: Final = (
    "batch_id long, rows long, inserted long, alerts long, rejects long, malformed long, "
    "incident_events long, write_ms double, latency_p50_ms double, latency_p95_ms double, "
    "latency_max_ms double, writer string"
)
"""One row per task: what its write did (the Spark schema of :data:`STATS_ARROW`)."""

WRITER_APP_PREFIX: Final = "fleetsim-raw-writer@"
"""``application_name`` of a partition writer's connection: prefix + host + executor's Python
daemon pid (one per executor), so ``pg_stat_activity`` tells the executors that write apart."""

_SINKS: dict[tuple[str, int, str, str], PgSink] = {}
"""Writer connections of this Python worker, kept across batches (the worker is reused)."""


def split_raw(table: pa.Table) -> RawBatch:
    """Arrow (kind, day, line) -> the three COPY payloads and the partition days."""
    parts: dict[int, bytes] = {}
    for kind in (KIND_READING, KIND_ALERT, KIND_REJECT):
        parts[kind] = string_array_bytes(table.filter(pc.equal(table["kind"], kind))["line"])
    days_col = table.filter(pc.equal(table["kind"], KIND_READING))["day"]
    days: tuple[date, ...] = tuple(d for d in pc.unique(days_col).to_pylist() if d is not None)
    return RawBatch(parts[KIND_READING], parts[KIND_ALERT], parts[KIND_REJECT], days)


def writer_id() -> str:
    """This executor's writer name: host and the pid of the executor's Python daemon."""
    return f"{socket.gethostname()[:30]}:{os.getppid()}"


def _sink(cfg: FleetsimConfig) -> PgSink:
    p = cfg.postgres
    key = (p.host, p.port, p.database, cfg.spark.watermark)
    sink = _SINKS.get(key)
    if sink is None or sink.cfg != cfg:
        if sink is not None:
            sink.close()
        sink = PgSink(cfg, "raw", application_name=f"{WRITER_APP_PREFIX}{writer_id()}"[:63])
        _SINKS[key] = sink
    return sink


def _stats(batch_id: int, rows: int, **values: Any) -> pa.RecordBatch:
    row: dict[str, Any] = {name: None for name, _ in STATS_FIELDS}
    row.update({"batch_id": batch_id, "rows": rows, "inserted": 0, "alerts": 0, "rejects": 0,
                "malformed": 0, "incident_events": 0, "write_ms": 0.0, "writer": writer_id()})  # fmt: skip
    row.update(values)
    return pa.RecordBatch.from_pylist([row], schema=STATS_ARROW)


class RawPartitionWriter:
    """``mapInArrow`` function: writes one partition of a raw micro-batch, yields its figures.

    Picklable (holds only the config); the connection lives in the worker's module state.
    """

    def __init__(self, cfg: FleetsimConfig) -> None:
        self.cfg = cfg

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Runs in the executor's Python worker, where TaskContext exists only inside a task.
        from pyspark import TaskContext

        ctx = TaskContext.get()
        prop = ctx.getLocalProperty("streaming.sql.batchId") if ctx is not None else None
        batch_id = int(prop) if prop else -1
        chunks = [b for b in batches if b.num_rows]
        if not chunks:
            yield _stats(batch_id, 0)
            return
        table = pa.Table.from_batches(chunks)
        batch = split_raw(table)
        result = _sink(self.cfg).write_raw(batch, batch_id, metrics_row=False)
        yield _stats(
            batch_id,
            table.num_rows,
            inserted=result.inserted,
            alerts=result.alerts,
            rejects=result.rejects,
            malformed=batch.rejects.count(b"\n"),
            incident_events=result.incident_events,
            write_ms=result.write_ms,
            latency_p50_ms=_num(result.latency_p50_ms),
            latency_p95_ms=_num(result.latency_p95_ms),
            latency_max_ms=_num(result.latency_max_ms),
        )


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


OBSERVED_NAME: Final = "raw_sink"
"""Name of the raw query's observed metrics (StreamingQueryProgress.observedMetrics)."""


def observed(stats_df: Any) -> Any:
    """The tasks' figures summed per batch into the query's progress (no collect to the driver).

    Latency percentiles of a batch are the largest of its tasks' (an upper bound of the batch's).
    """
    # pyspark loads only inside Spark (the driver and its executors), never on import.
    from pyspark.sql import functions as F

    return stats_df.observe(
        OBSERVED_NAME,
        F.count(F.lit(1)).alias("tasks"),
        F.coalesce(F.sum("rows"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum("inserted"), F.lit(0)).alias("inserted"),
        F.coalesce(F.sum("alerts"), F.lit(0)).alias("alerts"),
        F.coalesce(F.sum("rejects"), F.lit(0)).alias("rejects"),
        F.coalesce(F.sum("malformed"), F.lit(0)).alias("malformed"),
        F.coalesce(F.sum("incident_events"), F.lit(0)).alias("incident_events"),
        F.max("write_ms").alias("write_ms"),
        F.max("latency_p50_ms").alias("latency_p50_ms"),
        F.max("latency_p95_ms").alias("latency_p95_ms"),
        F.max("latency_max_ms").alias("latency_max_ms"),
        F.array_join(F.array_sort(F.collect_set(F.when(F.col("rows") > 0, F.col("writer")))), " ").alias(
            "writers"
        ),
    )
