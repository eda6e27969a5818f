"""The real-time raw flow's writer: COPY lines from ``kafka.lines_topic`` into PostgreSQL.

With ``spark.raw_sink = "realtime"`` Spark's real-time query parses, validates and evaluates the
immediate alert rules for every record as it arrives (no micro-batch floor) and writes the result
as COPY lines to the lines topic, partition for partition (so a partition still holds whole
devices). A loader is a Kafka consumer in the group :func:`group_id`: it takes what has arrived
(at most ``max_rows``; a merge starts at most every ``spark.loader_interval_s``), merges it with
:meth:`PgSink.write_raw` (one transaction: readings, latest, history rules, alerts, rejects) and
only then commits the offsets. A crash of the loader, of PostgreSQL or of the job re-reads lines
that were already merged; the merge is idempotent on the natural keys, so replays add nothing.

One loader runs as a thread of the streaming job. More loaders (processes, on any machine) join
the same group and take partitions from it: the write capacity grows with them, up to one loader
per partition.

Record layout (written by :func:`.flows.realtime_records`): key ``b"<kind>|<day>"`` (kind 0
reading, 1 alert, 2 reject; day ``YYYY-MM-DD`` for readings, empty otherwise), value one CSV line
ending in a newline.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from fleetsim.cloud.streaming.executor_sink import KIND_ALERT, KIND_READING, KIND_REJECT
from fleetsim.cloud.streaming.metrics import StreamMetrics
from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch, RawResult
from fleetsim.kernel.clients import confluent_kafka_config
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StreamingError

log = logging.getLogger("fleetsim.stream.loader")

GROUP_PREFIX: Final = "fleetsim-raw-loader"
IDLE_WAIT_S: Final = 0.25
"""Longest wait for a record on an idle topic before the loop looks at :meth:`RawLoader.stop`."""


def group_id(cfg: FleetsimConfig) -> str:
    """The loaders' consumer group: one per lines topic, so pipelines sharing a broker (tests,
    experiments beside the live stack) never rebalance or fence each other. The stream identity's
    ACLs allow ``fleetsim-`` groups."""
    return f"{GROUP_PREFIX}.{cfg.kafka.lines_topic}"


_KINDS: Final = {str(k).encode(): k for k in (KIND_READING, KIND_ALERT, KIND_REJECT)}


class LinesError(StreamingError):
    """A record on the lines topic that no real-time query wrote (bad key or value)."""


@dataclass
class LinesBatch:
    """Records taken from the lines topic, sorted into the three COPY payloads."""

    parts: dict[int, list[bytes]] = field(default_factory=lambda: {k: [] for k in _KINDS.values()})
    days: set[date] = field(default_factory=set)
    records: int = 0

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """One record; raises :class:`LinesError` naming what is wrong with it."""
        kind_text, _, day_text = (key or b"").partition(b"|")
        kind = _KINDS.get(kind_text)
        if kind is None or not value or not value.endswith(b"\n"):
            raise LinesError(
                f"lines record with key {key!r} and a {len(value or b'')}-byte value: expected "
                f"key b'<kind>|<day>' with kind in {sorted(_KINDS)} and one CSV line"
            )
        if day_text:
            try:
                self.days.add(date.fromisoformat(day_text.decode()))
            except ValueError as exc:
                raise LinesError(f"lines record with key {key!r}: day {day_text!r} is not a date") from exc
        self.parts[kind].append(value)
        self.records += 1

    def raw_batch(self) -> RawBatch:
        p = self.parts
        readings, alerts, rejects = (b"".join(p[k]) for k in (KIND_READING, KIND_ALERT, KIND_REJECT))
        return RawBatch(readings, alerts, rejects, tuple(sorted(self.days)))


def account(metrics: StreamMetrics, batch: RawBatch, result: RawResult) -> None:
    """The raw sink's Prometheus figures of one merge (shared with the driver-side sink)."""
    m = metrics
    m.rows_written.labels("sensor_data").inc(result.inserted)
    m.rows_written.labels("sensor_alerts").inc(result.alerts)
    m.rows_written.labels("sensor_data_rejects").inc(result.rejects)
    m.malformed_rows.inc(batch.rejects.count(b"\n"))
    m.last_write_ms.labels("raw").set(result.write_ms)
    if result.latency_p95_ms is not None:
        m.latency_p95_ms.set(result.latency_p95_ms)
        m.latency_p50_ms.set(result.latency_p50_ms or 0.0)


@dataclass
class MergeWindow:
    """A loader's merges since its last ``pipeline_metrics`` row: one row a second, not one per
    merge (tens a second at a few thousand msg/s), with the same fields a micro-batch's row has."""

    started: float
    merges: int = 0
    rows: int = 0
    write_ms: float = 0.0
    malformed: int = 0
    p50: list[float] = field(default_factory=list)
    p95: float | None = None
    max_ms: float | None = None

    def add(self, rows: int, batch: RawBatch, result: RawResult) -> None:
        self.merges += 1
        self.rows += rows
        self.write_ms += result.write_ms
        # Rejects stored, not lines seen: a replay after a restart re-reads lines already merged.
        self.malformed += result.rejects
        if result.latency_p50_ms is not None:
            self.p50.append(result.latency_p50_ms)
        # Over the window: the worst merge's p95 and max (a p95 of p95s is not a p95).
        if result.latency_p95_ms is not None:
            self.p95 = max(self.p95 or 0.0, result.latency_p95_ms)
        if result.latency_max_ms is not None:
            self.max_ms = max(self.max_ms or 0.0, result.latency_max_ms)

    def figures(self, now: float) -> dict[str, Any]:
        span_s = max(now - self.started, 1e-3)
        return {
            "input_rows": self.rows,
            "input_rate": self.rows / span_s,
            "processed_rate": self.rows / span_s,
            "batch_duration_ms": round(span_s * 1000),
            "write_duration_ms": round(self.write_ms),
            "latency_p50_ms": sorted(self.p50)[len(self.p50) // 2] if self.p50 else None,
            "latency_p95_ms": self.p95,
            "latency_max_ms": self.max_ms,
            "malformed_rows": self.malformed,
        }


class RawLoader:
    """Consume the lines topic and merge it into PostgreSQL until :meth:`stop`."""

    def __init__(self, cfg: FleetsimConfig, metrics: StreamMetrics, *, max_rows: int = 20_000,
                 name: str = "loader") -> None:  # fmt: skip
        self.cfg = cfg
        self.metrics = metrics
        self.max_rows = max_rows
        self.interval_s = cfg.spark.loader_interval_s
        self._next_merge_at = 0.0
        self.name = name
        # The loader alone writes its partitions' devices, so it keeps their stuck/drift running
        # state itself (rule_memory): a third of a merge's PostgreSQL time at 10,000 devices.
        self.sink = PgSink(cfg, "raw", application_name=f"fleetsim-{name}", state_in_memory=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.merges = 0
        self.records = 0
        self.bad_records = 0
        self.errors = 0
        self.metrics_every_s = 1.0
        self._window = MergeWindow(time.monotonic())

    # ------------------------------------------------------------------ consumer
    def _consumer(self) -> Any:
        # Lazy: confluent-kafka is only needed by the real-time raw flow.
        from confluent_kafka import Consumer

        group = group_id(self.cfg)
        c = Consumer(
            {
                **confluent_kafka_config(self.cfg, "stream"),
                "group.id": group,
                "client.id": f"fleetsim-{self.name}",
                # Static membership: a restarted job's loader (same host, same name) takes its
                # partitions back at once. Without it the new member waited for the killed one's
                # session to expire (45 s by default; measured 45 s to the first row after kill -9).
                "group.instance.id": f"{group}-{socket.gethostname()}-{self.name}"[:240],
                # A loader gone for good hands its partitions to the others after this long.
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                "enable.auto.commit": False,
                # The topic is this job's own hop: a new group starts at its beginning.
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 20,
                "fetch.min.bytes": 1,
            }
        )
        # A new consumer, or partitions that move, may bring devices another writer wrote meanwhile.
        self.sink.forget_state()
        c.subscribe([self.cfg.kafka.lines_topic], on_assign=self._moved, on_revoke=self._moved)
        return c

    def _moved(self, _consumer: Any, _partitions: Any) -> None:
        """Rebalance callback (runs inside ``consume``, on the loader's thread, between merges)."""
        self.sink.forget_state()

    def _take(self, consumer: Any) -> LinesBatch:
        """The next merge's records: what has arrived by ``interval_s`` after the previous merge
        started (what is there now, if that time has passed); when nothing has, the first record
        to come, within ``IDLE_WAIT_S``, with whatever came with it."""
        batch = LinesBatch()
        # consume() returns early only once it has max_rows; otherwise it waits its whole timeout.
        wait = self._next_merge_at - time.monotonic()
        msgs = consumer.consume(num_messages=self.max_rows, timeout=max(wait, 0.0))
        if not msgs:  # idle: a record that comes now is merged at once
            msgs = consumer.consume(num_messages=1, timeout=IDLE_WAIT_S)
            if msgs and self.max_rows > 1:
                msgs += consumer.consume(num_messages=self.max_rows - 1, timeout=0)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == -191:  # _PARTITION_EOF: informational
                    continue
                raise StreamingError(f"reading {self.cfg.kafka.lines_topic}: {err}")
            try:
                batch.add(msg.key(), msg.value())
            except LinesError as exc:
                # Only a real-time query writes here (ACLs): a bad record is a bug upstream, not
                # data to stall on. Counted and logged with its position, never merged.
                self.bad_records += 1
                self.metrics.batch_errors.labels("loader").inc()
                log.error("%s (partition %s offset %s): skipped", exc, msg.partition(), msg.offset())
        return batch

    def _merge(self, batch: LinesBatch) -> None:
        self._next_merge_at = time.monotonic() + self.interval_s
        raw = batch.raw_batch()
        result = self.sink.write_raw(raw, self.merges, metrics_row=False)
        account(self.metrics, raw, result)
        self.merges += 1
        self.records += batch.records
        self._window.add(raw.readings.count(b"\n"), raw, result)
        now = time.monotonic()
        if now - self._window.started >= self.metrics_every_s:
            self._record(now)

    def _record(self, now: float) -> None:
        if not self._window.merges:
            return
        # Keyed by wall-clock microseconds: several loaders (and restarts) never share a key.
        try:
            self.sink.record_progress("raw", time.time_ns() // 1000, **self._window.figures(now))
        except StreamingError:  # a metrics row is not worth stalling rows for; the next one comes
            log.warning("recording the loader's figures failed", exc_info=True)
        self._window = MergeWindow(now)

    def run(self) -> None:
        """Loop until :meth:`stop`; a failure (Kafka, PostgreSQL) re-opens the consumer after a
        back-off, from the last committed offsets: nothing merged is lost, nothing is skipped."""
        failures = 0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                while not self._stop.is_set():
                    batch = self._take(consumer)
                    if batch.records:
                        self._merge(batch)
                        consumer.commit(asynchronous=False)
                    failures = 0
                self._drain(consumer)
            except Exception as exc:  # a long-running component: back off, re-read, go on
                failures += 1
                self.errors += 1
                self.metrics.batch_errors.labels("loader").inc()
                delay = min(2.0 ** (failures - 1), 30.0)
                log.error("%s failed (%s); re-reading from the committed offsets in %.0f s",
                          self.name, str(exc).splitlines()[0][:300], delay)  # fmt: skip
                self._stop.wait(delay)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # closing a broken consumer must not hide the first error
                        log.debug("closing the consumer failed", exc_info=True)

    def _drain(self, consumer: Any, quiet_s: float = 0.5, limit_s: float = 10.0) -> None:
        """At stop: merge what has arrived until the topic stays quiet for ``quiet_s``."""
        deadline = time.monotonic() + limit_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            batch = self._take(consumer)
            if batch.records:
                self._merge(batch)
                consumer.commit(asynchronous=False)
                quiet_since = time.monotonic()
        self._record(time.monotonic())

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"fleetsim-{self.name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.sink.close()
