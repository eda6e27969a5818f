"""Lateness that agrees, on real Kafka + Spark + PostgreSQL (`fleetsim stream` as a child process).

Readings arrive out of order, late, duplicated, and one device's clock runs 10 minutes ahead. Each
record carries its arrival as its Kafka timestamp. Then:

* ``sensor_data.late`` is true exactly for the readings that reached Kafka more than the lateness
  bound after their own time (the ones built late here), whatever the micro-batch cuts;
* ``sensor_data_agg`` equals a recomputation from the non-late rows of ``sensor_data`` for every
  window (device, site, fleet): the windows left out exactly the rows flagged late;
* the fast clock moves nobody else's windows: every on-time reading of the other devices is in
  its windows, and the fast device's rows keep their own ``ts`` and are windowed at arrival + bound.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until, while_running

from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.stack.process import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

LATENESS = timedelta(minutes=2)
SKEW = timedelta(seconds=60)
A0 = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
"""Arrival clock of the scenario (an hour ago: Kafka keeps the records' own timestamps)."""
SITES = {"f0": "n", "f1": "n", "f2": "s", "f3": "s", "fast": "s"}


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scenario() -> tuple[list[tuple[datetime, dict[str, Any]]], set[tuple[str, int]]]:
    """(arrival, reading) in produce order, and the (device, seq) that must be late."""
    rng = random.Random(18)
    out: list[tuple[datetime, dict[str, Any]]] = []
    late: set[tuple[str, int]] = set()
    for d in ("f0", "f1", "f2", "f3"):
        for i in range(48):  # 8 minutes, one reading every 10 s
            ts = A0 + timedelta(seconds=10 * i + 1)
            r = {"device_id": d, "seq": i, "ts": ts, "temperature": 20.0 + (i % 7) * 0.5,
                 "status": "WARNING" if i % 11 == 0 else "OK"}  # fmt: skip
            if i % 9 == 4:  # late: arrives 3 min after it was made
                arrival = ts + timedelta(minutes=3)
                late.add((d, i))
            elif i % 9 == 7:  # just in time: 119 s after it was made, out of order
                arrival = ts + timedelta(seconds=119)
            else:  # out of order within 40 s
                arrival = ts + timedelta(seconds=rng.uniform(0.1, 40))
            out.append((arrival, r))
            if i % 5 == 2 and i % 9 != 7:  # a duplicate a few seconds later (a QoS 1 redelivery)
                out.append((arrival + timedelta(seconds=3), dict(r)))
    for i in range(48):  # 10 minutes ahead, on time by its own clock
        arrival = A0 + timedelta(seconds=10 * i + 2)
        out.append((arrival, {"device_id": "fast", "seq": i, "ts": arrival + timedelta(minutes=10),
                              "temperature": 30.0, "status": "OK"}))  # fmt: skip
    # Produced in arrival order: from its first reading on, the newest event time seen is the fast
    # clock's, 10 minutes ahead of everybody else's.
    out.sort(key=lambda ar: ar[0])
    return out, late


RECOMPUTE_SQL = """
WITH r AS (
  SELECT device_id, site, status, temperature, least(ts, kafka_ts + %(skew)s::interval) AS wts
  FROM sensor_data WHERE NOT late
), w AS (
  SELECT r.*, ws FROM r CROSS JOIN LATERAL generate_series(
    date_trunc('minute', r.wts) - interval '1 minute', date_trunc('minute', r.wts), interval '1 minute') ws
), s AS (
  SELECT 'device' AS scope, device_id AS key, ws, status, temperature FROM w
  UNION ALL SELECT 'site', site, ws, status, temperature FROM w WHERE site IS NOT NULL
  UNION ALL SELECT 'fleet', 'fleet', ws, status, temperature FROM w
)
SELECT scope, key, ws, count(*), count(*) FILTER (WHERE status = 'WARNING'),
       min(temperature), max(temperature), avg(temperature)
FROM s GROUP BY scope, key, ws
"""
"""The windows (2 min sliding by 1 min) recomputed from the non-late rows of sensor_data."""


def query(cfg: FleetsimConfig, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def table(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {(s, k, ws): (n, w, lo, hi, round(mean, 9)) for s, k, ws, n, w, lo, hi, mean in rows}


@pytest.fixture(scope="module")
def late_cfg(postgres: FleetsimConfig, kafka_topics: Callable[..., FleetsimConfig],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetsimConfig]:  # fmt: skip
    ui, metrics = free_ports(2)
    cfg = kafka_topics("late").with_overrides(
        {
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.trigger_interval_s": 0.5,
            "spark.agg_trigger_interval_s": 0.5,
            "spark.max_offsets_per_trigger": 60,  # many small batches: cuts must not matter
            "spark.agg_max_offsets_per_trigger": 60,
            "spark.window": "2 minutes",
            "spark.slide": "1 minute",
            "spark.watermark": "2 minutes",
            "spark.max_clock_skew_s": SKEW.total_seconds(),
            "spark.driver_memory": "768m",
            "spark.checkpoint_dir": str(tmp_path_factory.mktemp("late-ckpt")),
            "spark.ui_port": ui,
            "spark.metrics_port": metrics,
        }
    )
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "TRUNCATE sensor_data, device_latest, sensor_alerts, sensor_data_agg, sensor_data_rejects, "
                "deadletter_records, pipeline_metrics"
            )
            for dev, site in SITES.items():
                cur.execute(
                    "INSERT INTO devices (device_id, site) VALUES (%s, %s) "
                    "ON CONFLICT (device_id) DO UPDATE SET site = EXCLUDED.site",
                    (dev, site),
                )
    finally:
        conn.close()
    yield cfg


def produce(cfg: FleetsimConfig, records: list[tuple[datetime, dict[str, Any]]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), linger_ms=5)
    try:
        for arrival, r in records:
            value = json.dumps({**r, "ts": iso(r["ts"])}).encode()
            ms = int(arrival.timestamp() * 1000)
            producer.send(cfg.kafka.telemetry_topic, value, key=r["device_id"].encode(), timestamp_ms=ms,
                          headers=[("received_at", str(ms).encode())])  # fmt: skip
        producer.flush(30)
    finally:
        producer.close()


@pytest.mark.timeout(1200)
def test_late_flags_and_windows_agree_and_a_fast_clock_moves_nobody(late_cfg: FleetsimConfig,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    cfg = late_cfg
    records, late = scenario()
    keys = {(r["device_id"], r["seq"]) for _, r in records}
    produce(cfg, records)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    env["PYSPARK_PYTHON"] = sys.executable  # executor-side Python code needs this interpreter's packages
    with (tmp_path / "job.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fleetsim.cli", "stream", "--no-ui"], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        count = lambda: query(cfg, "SELECT count(*) FROM sensor_data")[0][0]  # noqa: E731
        wait_until(while_running(proc, lambda: count() == len(keys), "the stream job"), 900,
                   interval_s=1.0, what="every reading in sensor_data")  # fmt: skip
        params = {"skew": f"{SKEW.total_seconds():g} seconds"}
        agg_sql = (
            "SELECT scope, key, window_start, n_messages, n_warnings, temperature_min, temperature_max, "
            "temperature_mean FROM sensor_data_agg"
        )
        want = table(query(cfg, RECOMPUTE_SQL, params))

        def converged() -> bool:
            return table(query(cfg, agg_sql)) == want

        try:
            wait_until(while_running(proc, converged, "the stream job"), 300, interval_s=1.0,
                       what="sensor_data_agg to equal the recomputation")  # fmt: skip
        except AssertionError as exc:
            got = table(query(cfg, agg_sql))
            diff = sorted(
                (k, got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
            )
            raise AssertionError(f"{exc}; {len(diff)} windows differ (key, got, want): {diff[:6]}") from exc
        dropped = query(cfg, "SELECT coalesce(sum(late_rows_dropped), 0) FROM pipeline_metrics "
                             "WHERE query_name = 'agg'")[0][0]  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)

    # late iff built late: the fast clock made nobody else late.
    flagged = {(d, s) for d, s in query(cfg, "SELECT device_id, seq FROM sensor_data WHERE late")}
    assert flagged == late
    # Every on-time reading of the normal devices counts in its device's windows (2 windows each).
    per_device = dict(query(cfg, "SELECT key, sum(n_messages) FROM sensor_data_agg WHERE scope = 'device' "
                                 "GROUP BY key"))  # fmt: skip
    for d in ("f0", "f1", "f2", "f3"):
        assert per_device[d] == 2 * (48 - sum(1 for dd, _ in late if dd == d)), d
    # The fast device: its own ts kept, not late, windowed at arrival + bound (not 10 min ahead).
    fast = query(cfg, "SELECT min(ts - kafka_ts), bool_or(late) FROM sensor_data WHERE device_id = 'fast'")[0]
    assert fast == (timedelta(minutes=10), False)
    latest_fast = query(cfg, "SELECT max(window_end) FROM sensor_data_agg WHERE key = 'fast'")[0][0]
    assert latest_fast <= A0 + timedelta(seconds=10 * 47 + 2) + SKEW + timedelta(minutes=2)
    # The fast clock, and only it, is named: clock_skew alerts, value = seconds ahead of the fleet.
    skewed = query(cfg, "SELECT device_id, min(value), max(value) FROM sensor_alerts "
                        "WHERE kind = 'clock_skew' GROUP BY device_id")  # fmt: skip
    assert [d for d, *_ in skewed] == ["fast"], skewed
    assert 500 < skewed[0][1] <= skewed[0][2] < 700, skewed
    # Spark's own watermark never dropped a row the rule kept.
    assert dropped == 0
