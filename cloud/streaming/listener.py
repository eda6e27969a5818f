"""StreamingQueryListener -> pipeline_metrics rows + Prometheus gauges.

The windowed and dead-letter handlers write what only they know (write time) inside their batch
transaction; the raw flow's writers run in the executors, one transaction per task, and report their
figures (rows written, write time, event-to-row latency, malformed rows) through the query's observed
metrics, which this listener turns into the batch's row and the Prometheus counters. It also merges
Spark's own figures into the same row (input rows and rates, trigger duration, watermark, rows
dropped by the watermark).
"""

from __future__ import annotations

import ast
import json
import logging
import math
from datetime import UTC, datetime
from typing import Any, ClassVar

from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import (
    QueryIdleEvent,
    QueryProgressEvent,
    QueryStartedEvent,
    QueryTerminatedEvent,
    StreamingQueryProgress,
)

from fleetsim.cloud.streaming.executor_sink import OBSERVED_NAME
from fleetsim.cloud.streaming.metrics import StreamMetrics
from fleetsim.cloud.streaming.pgsink import PgSink

log = logging.getLogger("fleetsim.stream.listener")


class _JsonBridge:
    """The Java-facing side of a :class:`ProgressListener`: each progress event crosses py4j once,
    as its JSON. PySpark's own bridge rebuilds the progress field by field over py4j (dozens of
    round trips per batch, and class lookups that scan every jar on the classpath): ~0.1 core of
    the driver's JVM at one raw batch per second (JFR profile, docs/streaming.md)."""

    def __init__(self, listener: StreamingQueryListener) -> None:
        self.listener = listener

    def onQueryStarted(self, jevent: Any) -> None:
        self.listener.onQueryStarted(QueryStartedEvent.fromJObject(jevent))

    def onQueryProgress(self, jevent: Any) -> None:
        progress = StreamingQueryProgress.fromJson(json.loads(jevent.progress().json()))
        self.listener.onQueryProgress(QueryProgressEvent(progress))

    def onQueryIdle(self, jevent: Any) -> None:
        self.listener.onQueryIdle(QueryIdleEvent.fromJObject(jevent))

    def onQueryTerminated(self, jevent: Any) -> None:
        self.listener.onQueryTerminated(QueryTerminatedEvent.fromJObject(jevent))

    class Java:
        implements: ClassVar[list[str]] = ["org.apache.spark.sql.streaming.PythonStreamingQueryListener"]


class ProgressListener(StreamingQueryListener):
    """A StreamingQueryListener whose progress events arrive through :class:`_JsonBridge`."""

    @property
    def _jlistener(self) -> Any:
        # Lazy: SparkContext is only there once a session runs (as in PySpark's own property).
        from pyspark import SparkContext

        if not hasattr(self, "_jlistenerobj"):
            jvm: Any = SparkContext._jvm
            self._jlistenerobj = jvm.PythonStreamingQueryListenerWrapper(_JsonBridge(self))
        return self._jlistenerobj


def progress_figures(progress: Any) -> dict[str, Any]:
    """The pipeline_metrics columns found in a StreamingQueryProgress."""
    durations = progress.durationMs or {}
    event_time = progress.eventTime or {}
    watermark = event_time.get("watermark")
    dropped = sum(int(op.numRowsDroppedByWatermark or 0) for op in (progress.stateOperators or []))
    wm = None
    if watermark:
        wm = datetime.fromisoformat(watermark.replace("Z", "+00:00")).astimezone(UTC)
    return {
        "run_id": str(progress.runId),
        "input_rows": int(progress.numInputRows or 0),
        "input_rate": _finite(progress.inputRowsPerSecond),
        "processed_rate": _finite(progress.processedRowsPerSecond),
        "batch_duration_ms": durations.get("triggerExecution"),
        "watermark": wm,
        "late_rows_dropped": dropped,
    }


def state_figures(progress: Any) -> dict[str, int] | None:
    """Rows and memory of a query's state stores (summed over its stateful operators), or None for
    a stateless query. RocksDB's memory (memtables, block cache, index and filter blocks) lives
    outside the JVM's heap: this is the figure to hold beside the job's resident size."""
    ops = progress.stateOperators or []
    if not ops:
        return None
    return {
        "rows": sum(int(op.numRowsTotal or 0) for op in ops),
        "memory_bytes": sum(int(op.memoryUsedBytes or 0) for op in ops),
    }


STATE_PHASES = {"updates": "allUpdatesTimeMs", "removals": "allRemovalsTimeMs", "commit": "commitTimeMs"}
"""Phase label -> the StateOperatorProgress field holding its time in the batch, in milliseconds."""


def state_timings(progress: Any) -> dict[str, dict[str, int]]:
    """``{operator: {phase: ms}}`` of a batch's stateful operators (:data:`STATE_PHASES`; an
    operator that appears twice, e.g. two aggregations, is summed). Where a slow windowed batch
    spent its time: ``removals`` grows with the rows in the store (Spark scans it whole to evict),
    ``updates`` with the batch's rows, ``commit`` with what the checkpoint writes. ``{}`` for a
    stateless query."""
    out: dict[str, dict[str, int]] = {}
    for op in progress.stateOperators or []:
        phases = out.setdefault(str(op.operatorName or "unknown"), dict.fromkeys(STATE_PHASES, 0))
        for phase, field in STATE_PHASES.items():
            phases[phase] += int(getattr(op, field, 0) or 0)
    return out


def backlog_records(progress: Any) -> int | None:
    """Records the query's Kafka sources held that this batch left for the next ones: the newest
    offsets Spark saw when it planned the batch minus where the batch ended, summed over topics
    and partitions. 0 when the batch took everything there was; above 0 when its batch cap
    (``maxOffsetsPerTrigger``) held it back, which, batch after batch, is a query falling behind.
    None when no source reports both offsets (a first batch, a real-time query)."""
    total, seen = 0, False
    for src in progress.sources or []:
        end, latest = _offsets(src.endOffset), _offsets(src.latestOffset)
        if end is None or latest is None:
            continue
        seen = True
        for topic, parts in latest.items():
            done = end.get(topic, {})
            total += sum(max(int(off) - int(done.get(part, off)), 0) for part, off in parts.items())
    return total if seen else None


def _offsets(text: Any) -> dict[str, dict[str, Any]] | None:
    """A Kafka source's offsets, ``{topic: {partition: offset}}``. PySpark hands them over as the
    ``str()`` of the decoded JSON (a Python literal), or ``"None"``."""
    try:
        value = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        return None
    return value


def sink_figures(progress: Any) -> dict[str, Any] | None:
    """The executor-side raw sink's figures of a batch (observed metrics ``raw_sink``: sums over
    its tasks), or None when the query has none (the other queries, the driver-side sink)."""
    observed = getattr(progress, "observedMetrics", None) or {}
    row = observed.get(OBSERVED_NAME)
    if row is None:
        return None
    d = row.asDict() if hasattr(row, "asDict") else dict(row)
    return {k: d.get(k) for k in ("tasks", "rows", "inserted", "alerts", "rejects", "malformed",
                                  "incident_events", "write_ms", "latency_p50_ms", "latency_p95_ms",
                                  "latency_max_ms", "writers")}  # fmt: skip


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _round(x: Any) -> int | None:
    return None if x is None else round(float(x))


class MetricsListener(ProgressListener):
    """Records every completed micro-batch of this job's queries; never raises into Spark."""

    def __init__(self, sink: PgSink, metrics: StreamMetrics, unrecorded: set[str] | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        # Queries whose batches get no pipeline_metrics row (their writer records its own).
        self.unrecorded = unrecorded or set()

    def onQueryStarted(self, event: Any) -> None:
        log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        name = p.name or "unnamed"
        try:
            fig = progress_figures(p)
            # Where a batch's time went (latestOffset, queryPlanning, addBatch, walCommit, ...):
            # the first thing to read when the job falls behind (`fleetsim -vv stream`).
            log.debug("%s batch %s: %s rows, %s", name, p.batchId, fig["input_rows"], p.durationMs)
            m = self.metrics
            m.last_batch_id.labels(name).set(p.batchId)
            m.input_rows.labels(name).inc(fig["input_rows"])
            m.late_rows_dropped.labels(name).inc(fig["late_rows_dropped"])
            if fig["batch_duration_ms"] is not None:
                m.last_batch_duration_ms.labels(name).set(fig["batch_duration_ms"])
            if fig["input_rate"] is not None:
                m.input_rate.labels(name).set(fig["input_rate"])
            if fig["watermark"] is not None:
                m.watermark_s.labels(name).set(fig["watermark"].timestamp())
            if (backlog := backlog_records(p)) is not None:
                m.backlog_records.labels(name).set(backlog)
            if (state := state_figures(p)) is not None:
                m.state_rows.labels(name).set(state["rows"])
                m.state_memory_bytes.labels(name).set(state["memory_bytes"])
                timings = state_timings(p)
                for op, phases in timings.items():
                    for phase, ms in phases.items():
                        m.state_op_ms.labels(name, op, phase).set(ms)
                if log.isEnabledFor(logging.DEBUG):
                    # RocksDB's own counters too (load, flush, compaction, block cache, bytes
                    # read by the eviction's iterator): what a slow restore is made of.
                    custom = {op.operatorName: dict(op.customMetrics or {}) for op in p.stateOperators}
                    log.debug(
                        "%s batch %s state: %s rows, %s, %s", name, p.batchId, state["rows"], timings, custom
                    )
            sink = sink_figures(p)
            if sink is not None and sink["rows"]:
                self._record_sink(sink)
                fig.update(
                    write_duration_ms=_round(sink["write_ms"]),
                    latency_p50_ms=sink["latency_p50_ms"],
                    latency_p95_ms=sink["latency_p95_ms"],
                    latency_max_ms=sink["latency_max_ms"],
                    malformed_rows=int(sink["malformed"] or 0),
                )
                log.debug("%s batch %s written by %s", name, p.batchId, sink["writers"])
            if (fig["input_rows"] or fig["late_rows_dropped"]) and name not in self.unrecorded:
                self.sink.record_progress(name, p.batchId, **fig)
        except Exception:  # a metrics hiccup must never stop the pipeline
            log.exception("recording progress of %s batch %s failed", name, p.batchId)

    def _record_sink(self, sink: dict[str, Any]) -> None:
        m = self.metrics
        m.rows_written.labels("sensor_data").inc(int(sink["inserted"] or 0))
        m.rows_written.labels("sensor_alerts").inc(int(sink["alerts"] or 0))
        m.rows_written.labels("sensor_data_rejects").inc(int(sink["rejects"] or 0))
        m.malformed_rows.inc(int(sink["malformed"] or 0))
        if sink["write_ms"] is not None:
            m.last_write_ms.labels("raw").set(float(sink["write_ms"]))
        if sink["latency_p95_ms"] is not None:
            m.latency_p95_ms.set(float(sink["latency_p95_ms"]))
            m.latency_p50_ms.set(float(sink["latency_p50_ms"] or 0.0))

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            log.error("query %s terminated with an error: %s", event.id, event.exception)
        else:
            log.info("query %s stopped", event.id)
