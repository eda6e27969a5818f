"""Read the evidence of a run: the simulator's ledger, the PostgreSQL tables and the Kafka topic.

Everything is scoped to the run: the fleet's device ids and an event-time window around the
simulated interval (widened by the largest injected clock skew), so earlier runs on the same
stack do not leak in. Queries run as the reader role (SELECT only).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from fleetsim.edge.ledger import read_ledger
from fleetsim.experiments.detection import AlertRow, FaultInstance, IncidentRow
from fleetsim.experiments.integrity import SentLog, StageSeqs
from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import parse_ts
from fleetsim.kernel.errors import ExperimentError

log = logging.getLogger(__name__)

_INTERVAL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_UNIT = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def spark_interval_s(text: str) -> float:
    """``"2 minutes"`` -> 120.0 (the subset of Spark interval strings the config uses)."""
    m = _INTERVAL_RE.match(text)
    if not m:
        raise ExperimentError(f"cannot read the interval {text!r}; expected e.g. '2 minutes'")
    return float(m.group(1)) * _UNIT[m.group(2).lower()]


@dataclass(slots=True)
class GroundTruth:
    """The parsed ground truth of one run (read from the simulator's ledger file)."""

    faults: list[FaultInstance] = field(default_factory=list)
    sent: dict[str, SentLog] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    run: list[dict[str, Any]] = field(default_factory=list)


def parse_ledger(records: Sequence[dict[str, Any]]) -> GroundTruth:
    """Ledger records (``edge.ledger`` format) -> faults, last ``sent`` per device, events."""
    out = GroundTruth()
    for r in records:
        kind = r.get("record")
        if kind == "fault":
            out.faults.append(
                FaultInstance(
                    r["device"],
                    r["fault"],
                    parse_ts(r["start"]),
                    parse_ts(r["end"]),
                    dict(r.get("params") or {}),
                    dict(r.get("counters") or {}),
                    bool(r.get("truncated")),
                )
            )
        elif kind == "sent":
            out.sent[r["device"]] = SentLog.from_record(r)
        elif kind == "event":
            out.events.append(r)
        elif kind == "run":
            out.run.append(r)
    return out


def read_ledger_file(path: Path) -> GroundTruth:
    """The ground truth of a run from its ledger file (an :class:`ExperimentError` if unreadable)."""
    try:
        return parse_ledger(read_ledger(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ExperimentError(f"{path}: unreadable ledger: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Window:
    """The event-time window and devices of one run."""

    start: datetime
    end: datetime
    devices: tuple[str, ...]
    since: datetime
    """Wall-clock start of the run: rows ingested (alerts detected) before it belong to earlier
    runs, whose devices and seqs may coincide with this one's."""
    seq_from: int = 0
    seq_to: int = 2**63 - 1
    """The run's seqs, first to last: a simulator running beside it (the demo's, another
    experiment's) may publish the same device ids in the same event-time window, always with
    other seqs (each process counts from its own start instant in epoch ms), so rows and alerts
    outside them are not this run's."""

    def sql_params(self) -> dict[str, Any]:
        """The window as named query parameters (``%(start)s`` ... ``%(seq_to)s``)."""
        return {
            "start": self.start,
            "end": self.end,
            "devices": list(self.devices),
            "since": self.since,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
        }


# ------------------------------------------------------------------------------------ postgres
def latest_event_ts(cfg: FleetsimConfig) -> datetime | None:
    """Newest event time on the stack: stored readings, and the simulated end of recorded runs
    (whose readings may still be in flight). A new run starts after it, so runs never overlap."""
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute("SELECT max(ts) FROM sensor_data")
        row = cur.fetchone()
        latest = row[0] if row else None
        cur.execute("SELECT to_regclass('experiment_runs') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute(
                "SELECT max(coalesce(sim_end, wall_start + make_interval(secs => duration_s)))"
                " FROM experiment_runs"
            )
            ran = cur.fetchone()[0]
            if ran is not None and (latest is None or ran > latest):
                latest = ran
    conn.close()
    return latest


def count_rows(cfg: FleetsimConfig, w: Window) -> tuple[int, int]:
    """``(sensor_data rows, sensor_alerts rows)`` of the run so far (drain polling)."""
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM sensor_data WHERE ts >= %s AND ts <= %s AND device_id = ANY(%s)"
            " AND ingest_ts >= %s AND seq BETWEEN %s AND %s",
            (w.start, w.end, list(w.devices), w.since, w.seq_from, w.seq_to),
        )
        rows = int(cur.fetchone()[0])
        cur.execute(
            "SELECT count(*) FROM sensor_alerts"
            " WHERE event_ts >= %s AND event_ts <= %s AND device_id = ANY(%s) AND detected_at >= %s"
            " AND (seq IS NULL OR seq BETWEEN %s AND %s)",
            (w.start, w.end, list(w.devices), w.since, w.seq_from, w.seq_to),
        )
        alerts = int(cur.fetchone()[0])
    conn.close()
    return rows, alerts


def fetch_alerts(cfg: FleetsimConfig, w: Window) -> list[AlertRow]:
    """The run's alerts, each with the bridge receive time of the reading it was raised on."""
    sql = """
    SELECT a.device_id, a.kind, a.measurement, a.event_ts, a.detected_at, a.fault, d.bridge_ts
    FROM sensor_alerts a
    LEFT JOIN LATERAL (
      SELECT s.bridge_ts FROM sensor_data s
      WHERE s.device_id = a.device_id AND s.ts <= a.event_ts AND s.ts >= %(start)s
        AND s.ingest_ts >= %(since)s AND s.seq BETWEEN %(seq_from)s AND %(seq_to)s
        AND (a.seq IS NULL OR s.seq = a.seq)
      ORDER BY s.ts DESC LIMIT 1
    ) d ON true
    WHERE a.event_ts >= %(start)s AND a.event_ts <= %(end)s AND a.device_id = ANY(%(devices)s)
      AND a.detected_at >= %(since)s AND (a.seq IS NULL OR a.seq BETWEEN %(seq_from)s AND %(seq_to)s)
    ORDER BY a.event_ts
    """
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            sql,
            w.sql_params(),
        )
        rows = cur.fetchall()
    conn.close()
    return [AlertRow(r[0], r[1], r[2] or "", r[3], r[4], r[5], r[6]) for r in rows]


def fetch_incidents(cfg: FleetsimConfig, w: Window) -> list[IncidentRow]:
    """The incidents of the run's devices whose span meets its event-time window (any state),
    each with the wall-clock instant of its ``opened`` event and the bridge receive time of the
    run's reading that opened it.

    Incidents carry no seq: one that a run beside this one (same device ids) opened is told apart
    by event time only. An incident still open from an earlier run of the same devices (within
    ``alerts.incident_quiet_s``) that this run's alerts extend is included: it is the incident
    the operator sees."""
    sql = """
    SELECT i.incident_id, i.device_id, i.kind, i.measurement, i.opened_at, i.last_seen, i.n_alerts,
           i.min_duration_s, i.fault, ev.at, d.bridge_ts, i.state
    FROM incidents i
    LEFT JOIN LATERAL (
      SELECT e.at FROM incident_events e
      WHERE e.incident_id = i.incident_id AND e.action = 'opened' ORDER BY e.event_id LIMIT 1
    ) ev ON true
    LEFT JOIN LATERAL (
      SELECT s.bridge_ts FROM sensor_data s
      WHERE s.device_id = i.device_id AND s.ts >= %(start)s
        AND s.ts <= i.opened_at + make_interval(secs => i.min_duration_s)
        AND s.ingest_ts >= %(since)s AND s.seq BETWEEN %(seq_from)s AND %(seq_to)s
      ORDER BY s.ts DESC LIMIT 1
    ) d ON true
    WHERE i.device_id = ANY(%(devices)s) AND i.last_seen >= %(start)s AND i.opened_at <= %(end)s
    ORDER BY i.opened_at, i.incident_id
    """
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            sql,
            w.sql_params(),
        )
        rows = cur.fetchall()
    conn.close()
    return [
        IncidentRow(
            r[0], r[1], r[2], r[3] or "", r[4], r[5], int(r[6]), float(r[7] or 0.0), r[8], r[9], r[10], r[11]
        )
        for r in rows
    ]


def fetch_incident_events(
    cfg: FleetsimConfig, incident_ids: Sequence[int]
) -> list[tuple[int, str, datetime]]:
    """``(incident_id, action, at)`` of every event of these incidents."""
    if not incident_ids:
        return []
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT incident_id, action, at FROM incident_events WHERE incident_id = ANY(%s)"
            " ORDER BY event_id",
            (list(incident_ids),),
        )
        rows = cur.fetchall()
    conn.close()
    return [(int(r[0]), str(r[1]), r[2]) for r in rows]


def fetch_table_seqs(
    cfg: FleetsimConfig, w: Window
) -> tuple[dict[str, StageSeqs], list[tuple[float | None, float | None, float | None, float | None]]]:
    """Per-device seqs (and late flags) in ``sensor_data``, and per-row hop timestamps (epoch ms)."""
    sql = """
    SELECT device_id, seq, late,
           extract(epoch FROM ts) * 1000, extract(epoch FROM bridge_ts) * 1000,
           extract(epoch FROM kafka_ts) * 1000, extract(epoch FROM ingest_ts) * 1000
    FROM sensor_data WHERE ts >= %s AND ts <= %s AND device_id = ANY(%s) AND ingest_ts >= %s
      AND seq BETWEEN %s AND %s
    """
    out: dict[str, StageSeqs] = {}
    hops: list[tuple[float | None, float | None, float | None, float | None]] = []
    with pg_connect(cfg, "reader") as conn, conn.cursor(name="exp_rows") as cur:
        cur.itersize = 20_000
        cur.execute(sql, (w.start, w.end, list(w.devices), w.since, w.seq_from, w.seq_to))
        for dev, seq, late, ts, br, ka, ing in cur:
            st = out.get(dev)
            if st is None:
                st = out[dev] = StageSeqs()
            st.counts[int(seq)] += 1
            if late:
                st.late.add(int(seq))
            hops.append(tuple(None if v is None else float(v) for v in (ts, br, ka, ing)))  # type: ignore[arg-type]
    conn.close()
    return out, hops


def pipeline_figures(cfg: FleetsimConfig, wall_start: datetime, wall_end: datetime) -> dict[str, Any]:
    """Streaming-job figures recorded during the run (``pipeline_metrics``)."""
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(late_rows_dropped), 0), coalesce(sum(malformed_rows), 0), count(*) "
            "FROM pipeline_metrics WHERE recorded_at >= %s AND recorded_at <= %s",
            (wall_start, wall_end),
        )
        late, malformed, batches = cur.fetchone()
    conn.close()
    return {
        "late_rows_dropped_by_windows": int(late),
        "malformed_rows": int(malformed),
        "batches": int(batches),
    }


# --------------------------------------------------------------------------------------- kafka
def scan_kafka(
    cfg: FleetsimConfig, w: Window, wall_start: datetime, watermark_s: float, timeout_s: float = 60.0
) -> dict[str, StageSeqs] | None:
    """Seqs per device in the telemetry topic (records since ``wall_start``); each record is
    marked late when its event time is older than the running maximum minus the watermark.
    None when Kafka cannot be read (the report then says the stage was not observed)."""
    topic = cfg.kafka.telemetry_topic
    devices = set(w.devices)
    start_ms, end_ms = w.start.timestamp() * 1000, w.end.timestamp() * 1000
    try:
        consumer = KafkaConsumer(
            **kafka_python_kwargs(cfg, "admin"),
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
            client_id="fleetsim-experiment-scan",
        )
    except KafkaError as exc:
        log.warning("Kafka scan skipped: %s", exc)
        return None
    out: dict[str, StageSeqs] = {}
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return None
        consumer.assign(tps)
        since = int((wall_start - timedelta(seconds=5)).timestamp() * 1000)
        offsets = consumer.offsets_for_times(dict.fromkeys(tps, since))
        ends = consumer.end_offsets(tps)
        for tp in tps:
            o = offsets.get(tp)
            consumer.seek(tp, o.offset if o is not None else ends[tp])
        remaining = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        records: list[tuple[int, str, int, float]] = []  # (kafka ts, device, seq, event ms)
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        while remaining and datetime.now(UTC) < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=50_000)
            for tp, msgs in batch.items():
                for m in msgs:
                    try:
                        obj = json.loads(m.value)
                        dev, seq = obj["device_id"], int(obj["seq"])
                        ev = parse_ts(obj["ts"]).timestamp() * 1000
                    except (ValueError, KeyError, TypeError):
                        continue
                    if dev in devices and start_ms <= ev <= end_ms:
                        records.append((m.timestamp, dev, seq, ev))
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            log.warning("Kafka scan incomplete after %.0f s (%d partitions left)", timeout_s, len(remaining))
    except KafkaError as exc:
        log.warning("Kafka scan failed: %s", exc)
        return None
    finally:
        consumer.close()
    # The job's watermark follows the newest event time it has seen; arrival order ~ Kafka ts.
    newest = float("-inf")
    for _kts, dev, seq, ev in sorted(records):
        st = out.get(dev)
        if st is None:
            st = out[dev] = StageSeqs()
        st.counts[seq] += 1
        if ev < newest - watermark_s * 1000:
            st.late.add(seq)
        newest = max(newest, ev)
    return out
