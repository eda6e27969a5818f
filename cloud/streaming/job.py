"""Wiring: Kafka sources -> flows -> sinks, listener, metrics, graceful stop.

Three queries share one SparkSession (each with its own checkpoint sub-directory):

* ``raw``: every record, no stateful operator (so late rows still land, flagged ``late``) ->
  sensor_data, device_latest, sensor_alerts, sensor_data_rejects. By default (``spark.raw_sink =
  "realtime"``) in Spark's real-time mode to the lines topic, merged by :mod:`.loader`; or in
  micro-batches written by the driver (foreachBatch) or by the executors (:mod:`.executor_sink`).
* ``agg``: watermark + dedup + sliding windows in update mode -> sensor_data_agg.
* ``deadletter``: the bridge's dead-letter topic -> deadletter_records.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetsim.cloud.streaming import flows
from fleetsim.cloud.streaming.executor_sink import STATS_DDL, RawPartitionWriter, observed, split_raw
from fleetsim.cloud.streaming.lines import string_array_bytes
from fleetsim.cloud.streaming.listener import MetricsListener
from fleetsim.cloud.streaming.loader import RawLoader, account
from fleetsim.cloud.streaming.metrics import StreamMetrics
from fleetsim.cloud.streaming.notify import Notifier
from fleetsim.cloud.streaming.pgsink import PgSink
from fleetsim.cloud.streaming.registry_cache import RegistryCache
from fleetsim.cloud.streaming.session import build_session
from fleetsim.kernel.clients import spark_kafka_options
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import KafkaDataLossError, StreamingError

log = logging.getLogger("fleetsim.stream")

QUERY_NAMES = ("raw", "agg", "deadletter")
RESTART_WINDOW_S = 600.0
"""Failures of a query older than this no longer lengthen its restart back-off."""
MAX_BACKOFF_S = 60.0
STOP_RESERVE_S = 5.0
"""Of a graceful stop's budget, what the real-time raw query's wait leaves for the micro-batch
queries to finish their running batch (a windowed batch takes 1-10 s; one cut short is re-run)."""


def restart_delay_s(recent_failures: int) -> float:
    """Seconds before restarting a query that failed ``recent_failures`` times recently."""
    return min(MAX_BACKOFF_S, 2.0 ** max(recent_failures - 1, 0))


def realtime_checkpoint_due_s(
    last_progress: dict[str, Any] | None, now: datetime, batch_s: float
) -> float | None:
    """Seconds from ``now`` (UTC) until the running real-time batch checkpoints, from the last
    finished batch's progress: its trigger started at ``timestamp``, took ``triggerExecution``
    ms, and the next one lasts ``batch_s``. None before the first batch has finished (its start
    is not reported), or when the progress lacks those fields."""
    if not last_progress:
        return None
    try:
        started = datetime.fromisoformat(str(last_progress["timestamp"]).replace("Z", "+00:00"))
        took_ms = float(last_progress["durationMs"]["triggerExecution"])
    except (KeyError, TypeError, ValueError):
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    due = started + timedelta(milliseconds=took_ms) + timedelta(seconds=batch_s)
    return max((due - now).total_seconds(), 0.0)


_DATA_LOSS_REASON = re.compile(r"Reason:\s*(.+?)\s*(?:SQLSTATE|JVM stacktrace|\n\s*at |$)", re.DOTALL)


def data_loss_detail(error_text: str) -> str | None:
    """The reason line of a Spark Kafka-source data-loss failure (names the topic partition and
    offsets), or None when ``error_text`` is another failure."""
    if "KAFKA_DATA_LOSS" not in error_text and "failOnDataLoss" not in error_text:
        return None
    found = _DATA_LOSS_REASON.search(error_text)
    detail = found.group(1) if found else error_text.splitlines()[0]
    return " ".join(detail.split())[:500].rstrip(".")


def kafka_source_options(
    cfg: FleetsimConfig, topic: str, *, realtime: bool = False, windowed: bool = False
) -> dict[str, str]:
    """Options of Spark's Kafka source for ``topic``. The real-time raw query's consumers, which
    poll without end, take the configured fetch settings; a micro-batch reads an offset range
    already there, and a broker holding its last fetch for more bytes would only delay it. The
    windowed and dead-letter queries (``windowed``, long triggers) have their own batch cap."""
    s = cfg.spark
    opts = spark_kafka_options(cfg, "stream") | {
        "subscribe": topic,
        "startingOffsets": s.starting_offsets,
        "failOnDataLoss": "true",
        "includeHeaders": "true",
    }
    if not realtime:  # a real-time query has no batch size to cap (Spark refuses the option)
        cap = s.agg_max_offsets_per_trigger if windowed else s.max_offsets_per_trigger
        return opts | {"maxOffsetsPerTrigger": str(cap)}
    for key, value in (("fetch.max.wait.ms", s.fetch_max_wait_ms), ("fetch.min.bytes", s.fetch_min_bytes)):
        if value is not None:
            opts[f"kafka.{key}"] = str(value)
    return opts


def lines_sink_options(cfg: FleetsimConfig) -> dict[str, str]:
    """Options of the real-time raw query's Kafka sink (the lines topic). A producer that sends
    each record as soon as it can costs the broker a produce request for every one or two
    records; ``spark.lines_linger_ms`` lets it batch them."""
    return spark_kafka_options(cfg, "stream") | {
        "topic": cfg.kafka.lines_topic,
        "kafka.linger.ms": str(cfg.spark.lines_linger_ms),
    }


class StreamJob:
    """The streaming job: ``start()``, then ``run_until(stop_event)`` or ``stop()``."""

    async_progress: bool = True
    """Asynchronous progress tracking for the executor-side raw query (offset and commit logs
    written off the batch's critical path; replays after a crash are absorbed by the keys)."""

    def __init__(self, cfg: FleetsimConfig, master: str | None = None, ui: bool = True,
                 spark: Any = None, metrics: StreamMetrics | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.master = master
        self.ui = ui
        self.spark = spark
        self.metrics = metrics or StreamMetrics()
        self.queries: list[Any] = []
        self.listener: MetricsListener | None = None
        self._sinks = {name: PgSink(cfg, name) for name in QUERY_NAMES}
        self.notifier = Notifier(cfg, self.metrics)
        self._registry: RegistryCache | None = None
        self.loader: RawLoader | None = None

    @property
    def realtime(self) -> bool:
        """The raw flow runs in Spark's real-time mode and a loader writes it (``spark.raw_sink``)."""
        return self.cfg.spark.raw_sink == "realtime"

    # ------------------------------------------------------------------ sources
    def kafka_stream(self, topic: str, *, realtime: bool = False, windowed: bool = False) -> Any:
        options = kafka_source_options(self.cfg, topic, realtime=realtime, windowed=windowed)
        return self.spark.readStream.format("kafka").options(**options).load()

    def registry(self) -> Any:
        """The device registry as the flows join it: one cached copy for both queries, re-read when
        the table changes (:mod:`.registry_cache`), so sites and device classes follow registry
        edits without a restart."""
        if self._registry is None:
            self._registry = RegistryCache(self.spark, self.cfg)
            self._registry.start()
        return self._registry.frame

    # ------------------------------------------------------------------ handlers
    def handle_raw(self, batch_df: Any, batch_id: int) -> None:
        """The driver-side raw sink (``spark.raw_sink = "driver"``): collect the batch as Arrow, one
        transaction over one connection. Kept for comparison (bench) and as a fallback."""
        table = batch_df.toArrow()
        batch = split_raw(table)
        try:
            result = self._sinks["raw"].write_raw(batch, batch_id)
        except StreamingError:
            self.metrics.batch_errors.labels("raw").inc()
            raise
        account(self.metrics, batch, result)

    def handle_agg(self, batch_df: Any, batch_id: int) -> None:
        data = string_array_bytes(batch_df.toArrow()["line"])
        self._write("agg", "sensor_data_agg", self._sinks["agg"].write_agg, data, batch_id)

    def handle_deadletter(self, batch_df: Any, batch_id: int) -> None:
        data = string_array_bytes(batch_df.toArrow()["line"])
        self._write(
            "deadletter", "deadletter_records", self._sinks["deadletter"].write_deadletters, data, batch_id
        )

    def _write(self, query: str, table: str, fn: Any, data: bytes, batch_id: int) -> None:
        t0 = time.perf_counter()
        try:
            n = fn(data, batch_id)
        except StreamingError:
            self.metrics.batch_errors.labels(query).inc()
            raise
        self.metrics.rows_written.labels(table).inc(n)
        self.metrics.last_write_ms.labels(query).set((time.perf_counter() - t0) * 1000)

    # ------------------------------------------------------------------ lifecycle
    def checkpoint(self, name: str) -> str:
        path: Path = self.cfg.checkpoint_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path.resolve())

    def checkpoint_name(self, name: str) -> str:
        """A query's checkpoint sub-directory. The windowed query's state differs with
        ``spark.dedup`` (Spark refuses a checkpoint whose operators differ), so each way has its own."""
        if name == "agg" and self.cfg.spark.dedup == "buckets":
            return "agg-buckets"
        return name

    def _plan(self, name: str) -> tuple[Any, Any, str]:
        """(streaming DataFrame, batch handler, output mode) of one query."""
        k = self.cfg.kafka
        if name == "raw":
            # The registry gives each reading its device class for the per-class alert rules.
            raw = flows.raw_lines(
                self.kafka_stream(k.telemetry_topic, realtime=self.realtime),
                self.cfg.alerts,
                registry=self.registry(),
                keep_partition=self.realtime,
            )
            if self.realtime:  # Spark's Kafka sink writes the lines; the loader merges them
                return flows.realtime_records(raw), None, "update"
            if self.cfg.spark.raw_sink == "driver":
                return raw, self.handle_raw, "append"
            # No shuffle before the writer: a task is one Kafka partition, i.e. whole devices.
            return observed(raw.mapInArrow(RawPartitionWriter(self.cfg), STATS_DDL)), None, "append"
        if name == "agg":
            stream = self.kafka_stream(k.telemetry_topic, windowed=True)
            windows = flows.windowed(stream, self.registry(), self.cfg.spark, self.cfg.alerts)
            return flows.agg_lines(windows), self.handle_agg, "update"
        dead = flows.deadletter_lines(self.kafka_stream(k.deadletter_topic, windowed=True))
        return dead, self.handle_deadletter, "append"

    def trigger_s(self, name: str) -> float:
        """Only the raw flow needs the short trigger (low latency, immediate alerts)."""
        s = self.cfg.spark
        return s.trigger_interval_s if name == "raw" else s.agg_trigger_interval_s

    def _start_query(self, name: str) -> Any:
        df, handler, mode = self._plan(name)
        # A query runs its jobs in the pool of the thread that started it.
        self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", name)
        writer = df.writeStream.queryName(name).outputMode(mode)
        if name == "raw" and self.realtime:
            return self._start_realtime(writer, name)
        if handler is None:  # the executors wrote the rows: nothing to hand to a sink
            writer = writer.format("noop")
            if self.async_progress:
                writer = writer.option("asyncProgressTrackingEnabled", "true")
        else:
            writer = writer.foreachBatch(handler)
        return (
            writer.trigger(processingTime=f"{self.trigger_s(name)} seconds")
            .option("checkpointLocation", self.checkpoint(self.checkpoint_name(name)))
            .start()
        )

    def _start_realtime(self, writer: Any, name: str) -> Any:
        """The raw query in real-time mode: long-running tasks (one per Kafka partition, each holding
        a task slot) stream records to the lines topic; a checkpoint every ``realtime_batch_s``."""
        writer = (
            writer.format("kafka")
            .options(**lines_sink_options(self.cfg))
            # Its own checkpoint: a micro-batch sink's checkpoint does not carry over.
            .option("checkpointLocation", self.checkpoint(f"{name}-realtime"))
        )
        # PySpark 4.1.1's trigger() has no realTime keyword (SPARK-54660 adds it): the JVM's.
        trigger = self.spark._jvm.org.apache.spark.sql.streaming.Trigger.RealTime(
            int(self.cfg.spark.realtime_batch_s * 1000)
        )
        writer._jwrite = writer._jwrite.trigger(trigger)
        return writer.start()

    def start(self) -> list[Any]:
        if self.spark is None:
            self.spark = build_session(self.cfg, self.master, self.ui)
        # In real-time mode the loader's merges are the raw flow's rows of record in
        # pipeline_metrics; the real-time query's minute-long "batches" would only blur them.
        unrecorded = {"raw"} if self.realtime else set()
        self.listener = MetricsListener(PgSink(self.cfg, "listener"), self.metrics, unrecorded=unrecorded)
        self.spark.streams.addListener(self.listener)
        for name in QUERY_NAMES:
            self.queries.append(self._start_query(name))
            log.info("started query %s", name)
        if self.realtime:
            self.loader = RawLoader(self.cfg, self.metrics)
            self.loader.start()
        self.notifier.start()
        return self.queries

    def ui_url(self) -> str:
        if self.spark is None or not self.ui:
            return ""
        return str(self.spark.sparkContext.uiWebUrl or "")

    def run_until(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Block until ``stop`` is set. A query that dies is restarted from its checkpoint (the
        sink is idempotent, so the replayed batch converges) after a back-off that doubles with
        each failure of that query in the last ``RESTART_WINDOW_S`` (1 s, 2 s, … up to
        ``MAX_BACKOFF_S``): a PostgreSQL or Kafka outage of any length degrades the job, it does
        not end it. A Kafka data-loss failure (records aged out or deleted before the job read
        them; ``failOnDataLoss`` is on) is never restarted: it raises
        :class:`KafkaDataLossError` naming the topic partition and offsets.

        Why restart at all: besides transient PostgreSQL/Kafka errors, Spark 4.1.1's Kafka source
        throws an NPE while reporting progress of the first batch after a restart whose last
        batch was planned but not committed (SPARK-55271); the batch itself has run by then.
        """
        failures: dict[str, list[float]] = {}
        due: dict[str, float] = {}  # query name -> when to restart it

        def schedule(name: str, reason: str, now: float) -> None:
            recent = [t for t in failures.get(name, []) if now - t < RESTART_WINDOW_S] + [now]
            failures[name] = recent
            delay = restart_delay_s(len(recent))
            due[name] = now + delay
            self.metrics.batch_errors.labels(name).inc()
            log.error(
                "query %s failed (%s); restarting from its checkpoint in %.0f s (failure %d in %.0f min)",
                name, reason, delay, len(recent), RESTART_WINDOW_S / 60,
            )  # fmt: skip

        while not stop.wait(poll_s):
            if self._registry is not None:
                self._registry.poll()
            if self.loader is not None and not self.loader.alive:  # it backs off on errors itself
                log.error("the raw loader ended unexpectedly; starting it again")
                self.metrics.batch_errors.labels("loader").inc()
                self.loader.start()
            now = time.monotonic()
            for i, q in enumerate(self.queries):
                if q.name in due:
                    if now >= due[q.name]:
                        del due[q.name]
                        try:
                            self.queries[i] = self._start_query(q.name)
                        except Exception as start_exc:  # e.g. the registry's JDBC
                            # relation resolves its schema at start: PostgreSQL still down.
                            first = str(start_exc).splitlines()[0][:300]
                            schedule(q.name, f"restart failed: {first}", now)
                            continue
                        log.info("restarted query %s from its checkpoint", q.name)
                    continue
                if q.isActive:
                    continue
                exc = q.exception()
                lost = data_loss_detail(str(exc)) if exc is not None else None
                if lost is not None:
                    # A restart would resume from the same checkpoint and fail the same way; and
                    # skipping the gap would be silent loss: stop, naming what is gone.
                    raise KafkaDataLossError(
                        f"query {q.name}: Kafka no longer has records the job has not read "
                        f"(aged out by retention or deleted): {lost}. Nothing was skipped; replay "
                        "the readings or accept the gap explicitly before restarting the job"
                    )
                # Only stop() ends a query on purpose; one that ended by itself (no exception
                # reported, seen while PostgreSQL restarted) is restarted like a failed one.
                schedule(q.name, str(exc).splitlines()[0] if exc else "stopped without an error", now)

    def _stop_after_checkpoint(self, q: Any, deadline: float) -> None:
        """Stop the real-time query ``q`` right after its running batch's checkpoint, if that
        comes before ``deadline`` (monotonic); its records are in Kafka as they are made, so
        stopping mid-batch loses nothing either way, it only costs the restart a re-read."""
        last = q.lastProgress if q.isActive else None
        due_s = realtime_checkpoint_due_s(last, datetime.now(UTC), self.cfg.spark.realtime_batch_s)
        left_s = deadline - time.monotonic()
        if last is None or due_s is None or due_s > left_s:
            log.info(
                "stopping the real-time raw query mid-batch (its checkpoint is due in %s, the stop "
                "budget has %.0f s left): the restart reads again what it read since the last one",
                "an unknown time" if due_s is None else f"{due_s:.0f} s", left_s,
            )  # fmt: skip
        else:
            log.info("stopping the real-time raw query at its next checkpoint, due in %.0f s", due_s)
            batch = last["batchId"]
            while q.isActive and time.monotonic() < deadline:
                now = q.lastProgress
                if now is not None and now["batchId"] != batch:
                    break
                time.sleep(0.05)
            else:
                if q.isActive:  # not when it ended by itself (run_until restarts those)
                    log.warning("the real-time raw query's checkpoint did not come within the stop budget")
        q.stop()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let each query finish its running micro-batch (up to ``timeout_s``), then stop it.

        The real-time raw query goes first: its batch lasts ``realtime_batch_s`` and a stop
        interrupts it, after which the restart reads again everything since its last checkpoint
        (up to a minute of readings, queued ahead of new ones). So it is stopped just after its
        next checkpoint when that is due within the budget (less ``STOP_RESERVE_S`` for the other
        queries' running batches), and at once otherwise. Every query keeps running meanwhile."""
        deadline = time.monotonic() + timeout_s
        realtime = [q for q in self.queries if self.realtime and q.name == "raw"]
        for q in realtime:
            self._stop_after_checkpoint(q, deadline - STOP_RESERVE_S)
        for q in [q for q in self.queries if q not in realtime]:
            while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
                time.sleep(0.05)
            q.stop()
        self.queries.clear()
        if self.loader is not None:  # after the queries: it merges what they wrote last
            self.loader.stop(timeout_s=max(deadline - time.monotonic(), 5.0))
            self.loader = None
        # Last: incidents the raw flow opened while it ran on (up to the checkpoint wait) are
        # announced now rather than after the restart (the outbox would keep them until then).
        self.notifier.stop(timeout_s=min(max(deadline - time.monotonic(), 2.0), 10.0))
        if self.listener is not None and self.spark is not None:
            self.spark.streams.removeListener(self.listener)
            self.listener.sink.close()
            self.listener = None
        for sink in self._sinks.values():
            sink.close()
        if self._registry is not None:
            self._registry.close()
            self._registry = None
