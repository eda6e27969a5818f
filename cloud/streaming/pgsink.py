"""Idempotent PostgreSQL sink: COPY a micro-batch into temp tables, merge with ON CONFLICT.

One transaction per micro-batch per table group: a batch Spark replays after a crash merges into
the same rows (primary keys on the natural keys), so the tables converge to exactly-once content.
Writer role only; partitions are created through the owner's ``ensure_sensor_data_partition``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from psycopg2 import errors, sql

from fleetsim.cloud.streaming import history_sql, lateness, rule_memory, rule_state
from fleetsim.cloud.streaming.parse import READING_COLUMNS
from fleetsim.cloud.streaming.prepared import PreparedStatements, size_class
from fleetsim.cloud.streaming.reading_columns import read_readings
from fleetsim.cloud.streaming.rules import ALERT_COLUMNS, STAGE_ALERT_COLUMNS
from fleetsim.cloud.streaming.windows import AGG_COLUMNS
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import SinkError

log = logging.getLogger("fleetsim.stream.sink")

RAW_COPY_COLUMNS: Final = (*READING_COLUMNS, "kafka_partition", "kafka_offset", "kafka_ts", "bridge_ts")
REJECT_COPY_COLUMNS: Final = ("topic", "kafka_partition", "kafka_offset", "kafka_ts", "reason", "payload")
DEADLETTER_COPY_COLUMNS: Final = (
    "kafka_partition", "kafka_offset", "kafka_ts", "reason", "detail", "source_topic", "payload",
)  # fmt: skip

_MEASURES = ("temperature", "humidity", "co2", "pressure", "battery")
_STAGE_DDL: Final = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_raw (
  device_id text, seq bigint, ts timestamptz,
  {", ".join(f"{m} double precision" for m in _MEASURES)},
  lat double precision, lon double precision, status text, fault text,
  kafka_partition integer, kafka_offset bigint, kafka_ts timestamptz, bridge_ts timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_alerts (
  device_id text, kind text, measurement text, severity text, value double precision,
  threshold double precision, event_ts timestamptz, seq bigint, fault text, message text,
  clear_threshold double precision, min_duration_s double precision
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_new_alerts (
  device_id text, kind text, measurement text, severity text, value double precision,
  threshold double precision, event_ts timestamptz, seq bigint, site text, fault text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_rejects (
  topic text, kafka_partition integer, kafka_offset bigint, kafka_ts timestamptz, reason text, payload text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_agg (
  scope text, key text, window_start timestamptz, window_end timestamptz,
  n_messages bigint, n_warnings bigint, n_failures bigint, n_alerts bigint,
  {", ".join(f"{m}_{s} double precision" for m in _MEASURES for s in ("mean", "min", "max"))}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_deadletter (
  kafka_partition integer, kafka_offset bigint, kafka_ts timestamptz, reason text, detail text,
  source_topic text, payload bytea
) ON COMMIT DELETE ROWS;
"""

SESSION_STAGE_DDL: Final = _STAGE_DDL + rule_state.STAGE_DDL + rule_memory.STAGE_DDL
"""Every temp table a writer session's merges use (stage tables and the running state's), created
once per connection; whoever runs :data:`INSERT_RAW` by hand needs all of them."""

# Registry fill: a reading that carries no position gets its device's registered one;
# a reading with a position (a moving unit) keeps it. Site always comes from the registry.
# Chosen over bridge-side enrichment by measurement: see docs/real-sensors.md, bench_registry.
_POSITION_FILL: Final = {
    "lat": "CASE WHEN s.lat IS NULL AND s.lon IS NULL THEN d.lat ELSE s.lat END",
    "lon": "CASE WHEN s.lat IS NULL AND s.lon IS NULL THEN d.lon ELSE s.lon END",
}
_READING_SELECT = ", ".join(_POSITION_FILL.get(c, f"s.{c}") for c in READING_COLUMNS)
INSERT_RAW: Final = f"""
WITH ins AS (
INSERT INTO sensor_data ({", ".join(READING_COLUMNS)}, site, kafka_partition, kafka_offset, kafka_ts,
                         bridge_ts, ingest_ts, late)
SELECT {_READING_SELECT}, d.site, s.kafka_partition, s.kafka_offset, s.kafka_ts, s.bridge_ts,
       statement_timestamp(),
       {lateness.LATE_SQL.format(ts="s.ts", kafka_ts="s.kafka_ts")}
FROM stage_raw s LEFT JOIN devices d ON d.device_id = s.device_id
ON CONFLICT DO NOTHING
RETURNING {", ".join(rule_state.NEW_RAW_COLUMNS)})
INSERT INTO stage_new_raw ({", ".join(rule_state.NEW_RAW_COLUMNS)}) SELECT * FROM ins
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""``late``: the per-record rule the windows apply too (:mod:`.lateness`), so they agree exactly.
The rows really inserted go to ``stage_new_raw`` for the running state of the history rules
(:mod:`.rule_state`); the statement's row count stays the number inserted."""

_LATEST_COLS = (
    "seq",
    "ts",
    *_MEASURES,
    "lat",
    "lon",
    "status",
    "fault",
    "site",
    "ingest_ts",
    "kafka_ts",
    "kafka_partition",
)
UPSERT_LATEST: Final = f"""
INSERT INTO device_latest AS l (device_id, {", ".join(_LATEST_COLS)})
SELECT DISTINCT ON (s.device_id) s.device_id, s.seq, s.ts, {", ".join(f"s.{m}" for m in _MEASURES)},
       {_POSITION_FILL["lat"]}, {_POSITION_FILL["lon"]}, s.status, s.fault, d.site, statement_timestamp(),
       s.kafka_ts, s.kafka_partition
FROM stage_raw s LEFT JOIN devices d ON d.device_id = s.device_id
ORDER BY s.device_id, s.ts DESC, s.seq DESC
ON CONFLICT (device_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _LATEST_COLS)}
WHERE (l.ts, l.seq) < (EXCLUDED.ts, EXCLUDED.seq)
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)

INSERT_ALERTS: Final = f"""
WITH ins AS (
INSERT INTO sensor_alerts ({", ".join(ALERT_COLUMNS)}, detected_at, site)
SELECT {", ".join(f"a.{c}" for c in ALERT_COLUMNS)}, statement_timestamp(), d.site
FROM stage_alerts a LEFT JOIN devices d ON d.device_id = a.device_id
ON CONFLICT DO NOTHING{history_sql.CAPTURE_NEW_ALERTS}
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""Per-reading alerts; the rows really inserted also go to ``stage_new_alerts`` for the incidents."""

INSERT_REJECTS: Final = f"""
INSERT INTO sensor_data_rejects ({", ".join(REJECT_COPY_COLUMNS)}, ingest_ts)
SELECT {", ".join(REJECT_COPY_COLUMNS)}, statement_timestamp() FROM stage_rejects
ON CONFLICT DO NOTHING
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)

INSERT_DEADLETTER: Final = f"""
INSERT INTO deadletter_records ({", ".join(DEADLETTER_COPY_COLUMNS)}, ingest_ts)
SELECT {", ".join(DEADLETTER_COPY_COLUMNS)}, statement_timestamp() FROM stage_deadletter
ON CONFLICT DO NOTHING
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)

UPSERT_AGG: Final = f"""
INSERT INTO sensor_data_agg ({", ".join(AGG_COLUMNS)}, updated_at)
SELECT {", ".join(AGG_COLUMNS)}, statement_timestamp() FROM stage_agg
ON CONFLICT (scope, key, window_start, window_end) DO UPDATE SET
  {", ".join(f"{c} = EXCLUDED.{c}" for c in AGG_COLUMNS[4:])}, updated_at = EXCLUDED.updated_at
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""Update mode re-emits a window with its full, current aggregate: overwrite, never add."""

SMALL_MERGE_CLASS: Final = 0
"""Merges of this :func:`~.prepared.size_class` or smaller (up to 64 readings: a loader's merges at
a few hundred msg/s) are planned with :data:`SMALL_MERGE_SETTINGS`."""
SMALL_MERGE_SETTINGS: Final = "SET LOCAL random_page_cost = 1.1"
"""For a small merge's transaction only: its plans are made, and cached per size class, under it.
With the default 4 the planner priced a key probe into ``devices`` (10,000 rows, every page in
shared buffers) above a scan of the whole table, and joined a 20-reading stage by hashing all of
``devices``: ~1,000 buffer hits and ~6 ms a statement for the insert into ``sensor_data`` and the
``device_latest`` upsert alike (the e2e benchmark's at-rest step). A throw-away harness (10,000
registered devices, the loader's sink, alternating, three rounds): 20-reading merges cost their
backend 8.8–13.7 ms of CPU instead of 18.2–21.8; 500-reading ones under it were unchanged within
the noise (68–90 ms against 66–103), and with it server-wide a 5,000-reading one was slower (679 ms
against 586: there the hash joins are the right plan). So small merges only."""

LATENCY_SQL: Final = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), max(ms)
FROM (SELECT extract(epoch FROM clock_timestamp() - ts) * 1000 AS ms FROM stage_raw) AS x
"""
"""Event-to-row latency of the batch, measured just before commit (ms)."""

METRICS_UPSERT: Final = """
INSERT INTO pipeline_metrics AS m (query_name, batch_id, run_id, input_rows, input_rate, processed_rate,
  batch_duration_ms, write_duration_ms, latency_p50_ms, latency_p95_ms, latency_max_ms, watermark,
  late_rows_dropped, malformed_rows)
VALUES (%(query_name)s, %(batch_id)s, %(run_id)s, %(input_rows)s, %(input_rate)s, %(processed_rate)s,
  %(batch_duration_ms)s, %(write_duration_ms)s, %(latency_p50_ms)s, %(latency_p95_ms)s, %(latency_max_ms)s,
  %(watermark)s, %(late_rows_dropped)s, %(malformed_rows)s)
ON CONFLICT (query_name, batch_id) DO UPDATE SET
  run_id = coalesce(EXCLUDED.run_id, m.run_id),
  input_rows = coalesce(EXCLUDED.input_rows, m.input_rows),
  input_rate = coalesce(EXCLUDED.input_rate, m.input_rate),
  processed_rate = coalesce(EXCLUDED.processed_rate, m.processed_rate),
  batch_duration_ms = coalesce(EXCLUDED.batch_duration_ms, m.batch_duration_ms),
  write_duration_ms = coalesce(EXCLUDED.write_duration_ms, m.write_duration_ms),
  latency_p50_ms = coalesce(EXCLUDED.latency_p50_ms, m.latency_p50_ms),
  latency_p95_ms = coalesce(EXCLUDED.latency_p95_ms, m.latency_p95_ms),
  latency_max_ms = coalesce(EXCLUDED.latency_max_ms, m.latency_max_ms),
  watermark = coalesce(EXCLUDED.watermark, m.watermark),
  late_rows_dropped = coalesce(EXCLUDED.late_rows_dropped, m.late_rows_dropped),
  malformed_rows = coalesce(EXCLUDED.malformed_rows, m.malformed_rows),
  recorded_at = now()
"""
CROSS_DEVICE_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtext('fleetsim.raw.cross_device'))"
"""Serialises, until commit, the part of a raw write that can touch devices outside its own
partition (offline rule, incidents) between concurrent partition writers."""

METRIC_FIELDS: Final = (
    "run_id", "input_rows", "input_rate", "processed_rate", "batch_duration_ms", "write_duration_ms",
    "latency_p50_ms", "latency_p95_ms", "latency_max_ms", "watermark", "late_rows_dropped", "malformed_rows",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One micro-batch of the raw flow as COPY CSV text."""

    readings: bytes
    """CSV of :data:`RAW_COPY_COLUMNS`, one line per valid reading (duplicates allowed)."""
    alerts: bytes
    """CSV of :data:`~cloud.streaming.rules.STAGE_ALERT_COLUMNS`: per-reading alerts."""
    rejects: bytes
    """CSV of :data:`REJECT_COPY_COLUMNS`: malformed records."""
    days: tuple[date, ...]
    """UTC days of the readings (the sensor_data partitions they need)."""


@dataclass(frozen=True, slots=True)
class RawResult:
    """What the merge of one raw batch did."""

    inserted: int
    """New sensor_data rows (replayed and duplicate readings excluded)."""
    alerts: int
    """New sensor_alerts rows (per-reading + history rules)."""
    rejects: int
    """New sensor_data_rejects rows."""
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    """Event-to-row latency of the batch's readings (ms)."""
    write_ms: float
    """Wall time of the PostgreSQL work (ms)."""
    incident_events: int = 0
    """Incidents opened or auto-closed by this batch (``incident_events`` rows written)."""
    state_devices: int = 0
    """Devices whose stuck/drift the running state judged (:mod:`.rule_state`); the batch's other
    devices were judged from ``sensor_data``."""
    sensor_path: bool = True
    """False: the running state in memory judged every device of the batch, and the ``sensor_data``
    path's statements were skipped."""


class PgSink:
    """A writer connection kept across micro-batches (reopened after an error)."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        query_name: str,
        application_name: str | None = None,
        *,
        running_state: bool | None = None,
        state_in_memory: bool = False,
    ) -> None:
        """``running_state`` (default ``alerts.history_state``): ``False`` judges stuck/drift of
        every device from ``sensor_data`` (the path :mod:`.rule_state` replaces where it can).
        ``state_in_memory``: the running state lives in this object (:mod:`.rule_memory`) instead
        of ``device_rule_state``; only for a writer that alone writes its devices' readings (a
        loader owning its partitions), which calls :meth:`forget_state` when they move."""
        self.cfg = cfg
        self.query_name = query_name
        self.application_name = application_name or f"fleetsim-stream-{query_name}"
        self._conn: Any = None
        self._prepared = PreparedStatements()
        self._running_state = cfg.alerts.history_state if running_state is None else running_state
        self._stuck_drift = history_sql.stuck_drift_sql(cfg.alerts.stuck_readings)
        self._fast_alerts = rule_state.fast_alerts_sql(
            cfg.alerts.stuck_readings, cfg.alerts.drift_window_readings
        )
        self._history_params = {
            **history_sql.history_params(cfg.alerts),
            **history_sql.offline_params(cfg.alerts),
        }
        self._incident_params = {"quiet_s": float(cfg.alerts.incident_quiet_s)}
        self._fleet_clock_params = history_sql.fleet_clock_params(cfg.spark.max_clock_skew_s, cfg.alerts)
        self._memory = (
            rule_memory.MemoryState(rule_memory.Rules.from_params(self._history_params))
            if self._running_state and state_in_memory
            else None
        )
        self._memory_alerts = sql.SQL(rule_memory.ONSETS_CTE) + history_sql.onset_alerts_insert()

    def forget_state(self) -> None:
        """Drop the in-memory running state (``state_in_memory``): every device's next reading is
        judged from ``sensor_data`` and its memory re-read from there."""
        if self._memory is not None:
            self._memory.clear()

    # ------------------------------------------------------------------ connection
    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = pg_connect(self.cfg, "writer", application_name=self.application_name)
            with conn.cursor() as cur:
                cur.execute(SESSION_STAGE_DDL)
                # PostgreSQL compiles a plan whose estimated cost passes jit_above_cost anew on
                # every execution (no cache across statements): 558 of 583 ms for the running
                # state's alert statement with 5,000 devices, whose estimate is off by 1,000x
                # (generate_series). A merge repeated every half second never repays it.
                cur.execute("SET jit = off")
            conn.commit()
            self._prepared.reset()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def _fail(self, what: str, exc: Exception) -> SinkError:
        # Drop the connection: the next attempt (Spark retries the batch) starts clean.
        conn, self._conn = self._conn, None
        # A failed merge (or a commit whose outcome is unknown) may leave memory unlike the table.
        self.forget_state()
        if conn is not None and not conn.closed:
            try:
                conn.rollback()
            finally:
                conn.close()
        return SinkError(f"{self.query_name}: {what} failed: {exc}")

    @staticmethod
    def _copy(cur: Any, table: str, columns: Iterable[str], data: bytes) -> None:
        if not data:
            return
        stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        cur.copy_expert(stmt.as_string(cur), io.BytesIO(data), size=1 << 20)

    # ------------------------------------------------------------------ flows
    def ensure_partitions(self, days: Iterable[date]) -> None:
        """Create missing day partitions in their own short transaction (taking the parent's lock
        only for the creation, not for the whole batch)."""
        days = sorted(set(days))
        if not days:
            return
        conn = self.conn()
        try:
            for day in days:
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT ensure_sensor_data_partition(%s)", (day,))
                    conn.commit()
                except errors.DuplicateTable:
                    # Another partition writer of the same batch created it first: the function's
                    # re-check after its advisory lock can miss a table committed meanwhile (an
                    # advisory lock does not refresh the catalog cache). The partition exists.
                    conn.rollback()
        except Exception as exc:
            raise self._fail("creating partitions", exc) from exc

    def write_raw(self, batch: RawBatch, batch_id: int, *, metrics_row: bool = True) -> RawResult:
        """Merge one raw batch (readings, latest, alerts, rejects, metrics row) in one transaction.

        ``batch`` may be one Kafka partition's share of a micro-batch (the executor-side writer,
        :mod:`.executor_sink`): the Kafka records are keyed by device id, so every statement up to
        the offline rule touches only this share's devices, and concurrent tasks of the same batch
        never wait on each other there. The offline rule and the incident statements can reach any
        device; they run after :data:`CROSS_DEVICE_LOCK` (held to commit), so two tasks never
        interleave them (no deadlock, no double count). ``metrics_row=False``: no
        ``pipeline_metrics`` row (tasks of one batch would share its key; the driver's listener
        writes it from the tasks' observed figures)."""
        self.ensure_partitions(batch.days)
        t0 = time.perf_counter()
        conn = self.conn()
        p = self._history_params
        size = size_class(batch.readings.count(b"\n"))

        def run(cur: Any, query: Any, params: dict[str, Any] | None = None) -> None:
            self._prepared.run(cur, query, params, size)

        memory, plan, rebuilt = self._memory, None, []
        try:
            if memory is not None and batch.readings:
                plan = memory.plan(read_readings(batch.readings, RAW_COPY_COLUMNS))
            # In the steady state memory judges every device of the batch: the sensor_data
            # path's statements (stuck/drift, the re-read) would find nothing, and the device
            # lists they skip by cost ~3 us a reading to COPY.
            sensor_path = plan is None or not plan.all_fast
            with conn.cursor() as cur:
                if size <= SMALL_MERGE_CLASS:
                    cur.execute(SMALL_MERGE_SETTINGS)
                self._copy(cur, "stage_raw", RAW_COPY_COLUMNS, batch.readings)
                self._copy(cur, "stage_alerts", STAGE_ALERT_COLUMNS, batch.alerts)
                self._copy(cur, "stage_rejects", REJECT_COPY_COLUMNS, batch.rejects)
                inserted = alerts = rejects = state_devices = 0
                lat: tuple[Any, ...] = (None, None, None)
                if batch.readings:
                    run(cur, INSERT_RAW, {"watermark": self.cfg.spark.watermark})
                    inserted = cur.rowcount
                    run(cur, UPSERT_LATEST)
                    if plan is not None and plan.prev:
                        self._copy(cur, "stage_rule_prev", ("device_id", "prev_us"), plan.prev_csv())
                    run(cur, history_sql.FLEET_CLOCK_SQL, self._fleet_clock_params)
                    alerts += cur.rowcount
                    if plan is not None:
                        if not plan.all_fast:
                            self._copy(cur, "stage_rule_fast", ("device_id",), plan.fast_csv())
                            self._copy(cur, "stage_rule_known", ("device_id",), plan.known_csv())
                        state_devices = len(plan.fast)
                        if plan.onsets:
                            self._copy(cur, "stage_rule_onsets", rule_memory.ONSET_COLUMNS, plan.onsets_csv())
                            run(cur, self._memory_alerts, p)
                            alerts += cur.rowcount
                    elif self._running_state:
                        run(cur, rule_state.FAST_SQL, p)
                        state_devices = cur.rowcount
                        run(cur, self._fast_alerts, p)
                        alerts += cur.rowcount
                    if sensor_path:
                        run(cur, self._stuck_drift, p)
                        alerts += cur.rowcount
                    if plan is not None and not plan.all_fast:
                        run(cur, rule_memory.REBUILD_SQL, p)
                        rebuilt = cur.fetchall()
                    # In memory mode the table's state of these devices would go stale: dropped.
                    keep_table = self._running_state and memory is None
                    run(cur, rule_state.STATE_UPSERT_SQL if keep_table else rule_state.FORGET_SQL, p)
                    run(cur, CROSS_DEVICE_LOCK)
                    run(cur, history_sql.OFFLINE_SQL, p)
                    alerts += cur.rowcount
                    run(cur, LATENCY_SQL)
                    lat = cur.fetchone()
                if batch.alerts:
                    if not batch.readings:
                        run(cur, CROSS_DEVICE_LOCK)
                    run(cur, INSERT_ALERTS)
                    alerts += cur.rowcount
                events = 0
                if batch.readings or batch.alerts:
                    for stmt in history_sql.INCIDENT_SQL:
                        run(cur, stmt, self._incident_params)
                        if stmt is not history_sql.INCIDENT_HOLD_SQL:
                            events += cur.rowcount
                if batch.rejects:
                    run(cur, INSERT_REJECTS)
                    rejects = cur.rowcount
                write_ms = (time.perf_counter() - t0) * 1000
                if metrics_row:
                    self._metrics(
                        cur,
                        batch_id,
                        write_duration_ms=round(write_ms),
                        latency_p50_ms=lat[0],
                        latency_p95_ms=lat[1],
                        latency_max_ms=lat[2],
                        malformed_rows=batch.rejects.count(b"\n") if batch.rejects else 0,
                    )
            conn.commit()
        except Exception as exc:
            raise self._fail(f"raw batch {batch_id}", exc) from exc
        if plan is not None and memory is not None:
            memory.apply(plan, rebuilt)
        return RawResult(
            inserted, alerts, rejects, lat[0], lat[1], lat[2], write_ms, events, state_devices, sensor_path
        )

    def write_agg(self, data: bytes, batch_id: int) -> int:
        """Upsert updated windows; returns rows written."""
        return self._merge("stage_agg", AGG_COLUMNS, UPSERT_AGG, data, batch_id)

    def write_deadletters(self, data: bytes, batch_id: int) -> int:
        """Mirror bridge dead letters; returns new rows."""
        return self._merge("stage_deadletter", DEADLETTER_COPY_COLUMNS, INSERT_DEADLETTER, data, batch_id)

    def _merge(self, stage: str, columns: Iterable[str], merge_sql: str, data: bytes, batch_id: int) -> int:
        t0 = time.perf_counter()
        conn = self.conn()
        try:
            with conn.cursor() as cur:
                n = 0
                if data:
                    self._copy(cur, stage, columns, data)
                    cur.execute(merge_sql)
                    n = cur.rowcount
                self._metrics(cur, batch_id, write_duration_ms=round((time.perf_counter() - t0) * 1000))
            conn.commit()
        except Exception as exc:
            raise self._fail(f"{stage} batch {batch_id}", exc) from exc
        return n

    def _metrics(self, cur: Any, batch_id: int, query_name: str | None = None, **values: Any) -> None:
        row = dict.fromkeys(METRIC_FIELDS)
        row.update(values, query_name=query_name or self.query_name, batch_id=batch_id)
        cur.execute(METRICS_UPSERT, row)

    def record_progress(self, query_name: str, batch_id: int, **values: Any) -> None:
        """Merge the listener's figures into the batch's pipeline_metrics row (own transaction)."""
        conn = self.conn()
        try:
            with conn.cursor() as cur:
                self._metrics(cur, batch_id, query_name, **values)
            conn.commit()
        except Exception as exc:
            raise self._fail(f"metrics of batch {batch_id}", exc) from exc
