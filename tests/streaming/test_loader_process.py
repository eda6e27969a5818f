"""``fleetsim stream --loader-only`` on real Kafka and PostgreSQL: a loader process (no Spark) merges
the lines topic, skips what no real-time query could have written, stops cleanly on SIGTERM, and
refuses to start when the raw flow does not run in real-time mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until, while_running

from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.stack.process import free_ports

pytestmark = pytest.mark.integration


def _env(cfg: FleetsimConfig) -> dict[str, str]:
    own = config_to_env(cfg)
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | own


def _rows(cfg: FleetsimConfig, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def _line(device: str, seq: int, ts: datetime) -> bytes:
    arrived = (ts + timedelta(milliseconds=50)).isoformat()
    return f"{device},{seq},{ts.isoformat()},20.0,50.0,,,,,,OK,,0,{seq},{arrived},{arrived}\n".encode()


def test_a_loader_process_merges_the_lines_topic(
    postgres: FleetsimConfig, kafka_topics: Any, tmp_path: Path
) -> None:
    (metrics_port,) = free_ports(1)
    cfg = kafka_topics("loader").with_overrides(
        {"spark.raw_sink": "realtime", "spark.metrics_port": metrics_port}
    )
    dev = f"ld-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    records = [(f"0|{now.date()}".encode(), _line(dev, k, now - timedelta(seconds=10 - k))) for k in range(3)]
    records.insert(1, (b"9|", b"not a line the real-time query writes\n"))

    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_kwargs(cfg, "stream"))
    try:
        for key, value in records:
            producer.send(cfg.kafka.lines_topic, value, key=key, partition=0)
        producer.flush(30)
    finally:
        producer.close()

    with (tmp_path / "loader.log").open("wb") as log:
        argv = [sys.executable, "-m", "fleetsim.cli", "stream", "--loader-only"]
        proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(cfg), stdout=log, stderr=subprocess.STDOUT)
        try:
            count = lambda: _rows(cfg, "SELECT count(*) FROM sensor_data WHERE device_id = %s", (dev,))[0][0]  # noqa: E731
            wait_until(while_running(proc, lambda: count() == 3, "the loader"), 120, interval_s=0.3,
                       what="the three readings in sensor_data")  # fmt: skip
            latest = _rows(cfg, "SELECT seq, kafka_partition FROM device_latest WHERE device_id = %s", (dev,))
            assert latest == [(2, 0)]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    text = (tmp_path / "loader.log").read_text(errors="replace")
    assert "expected key b'<kind>|<day>'" in text, text[-2000:]  # the bad record, named and skipped


def test_loader_only_refuses_a_micro_batch_raw_flow(kafka_topics: Any, tmp_path: Path) -> None:
    cfg = kafka_topics("loader").with_overrides({"spark.raw_sink": "driver"})
    argv = [sys.executable, "-m", "fleetsim.cli", "stream", "--loader-only"]
    done = subprocess.run(argv, check=False, cwd=tmp_path, env=_env(cfg), capture_output=True, timeout=60)
    assert done.returncode != 0
    assert b"spark.raw_sink = 'realtime'" in done.stdout + done.stderr


@pytest.mark.parametrize(("interval_s", "low", "high"), [(1.0, 2, 4), (0.0, 12, 40)])
def test_the_merge_cadence_follows_loader_interval_s(
    postgres: FleetsimConfig, kafka_topics: Any, interval_s: float, low: int, high: int
) -> None:
    """40 readings evenly over 2 s. Every 1 s: the first merged at once (the topic was idle), then
    one merge a second (2-4 merges). 0: each merged as it comes (one to a few per merge)."""
    from kafka import KafkaProducer

    from fleetsim.cloud.streaming.loader import RawLoader
    from fleetsim.cloud.streaming.metrics import StreamMetrics

    cfg = kafka_topics("cadence").with_overrides(
        {"spark.raw_sink": "realtime", "spark.loader_interval_s": interval_s}
    )
    dev = f"lc-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    loader = RawLoader(cfg, StreamMetrics(), name=f"cadence-{dev}")
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "stream"))
    loader.start()
    try:
        # The loader's group has its partitions (its first records merged) before the clock runs.
        producer.send(
            cfg.kafka.lines_topic,
            _line(dev, 0, now - timedelta(seconds=60)),
            key=f"0|{now.date()}".encode(),
            partition=0,
        )
        producer.flush(30)
        count = lambda: _rows(cfg, "SELECT count(*) FROM sensor_data WHERE device_id = %s", (dev,))[0][0]  # noqa: E731
        wait_until(lambda: count() == 1, 60, interval_s=0.2, what="the first reading merged")
        first = loader.merges
        for k in range(1, 41):
            ts = now - timedelta(seconds=50) + timedelta(milliseconds=50 * k)
            producer.send(
                cfg.kafka.lines_topic, _line(dev, k, ts), key=f"0|{ts.date()}".encode(), partition=0
            )
            producer.flush(10)
            time.sleep(0.05)
        wait_until(lambda: count() == 41, 30, interval_s=0.2, what="the 40 readings merged")
    finally:
        producer.close()
        loader.stop()
    assert low <= loader.merges - first <= high, loader.merges - first
