"""The cluster code path for real: ``fleetsim stream --master spark://...`` on a Spark standalone
master + worker started from the venv's pyspark (2 cores, two 1-core executors of 512 MiB), real
Kafka and PostgreSQL. Contract messages produced to Kafka must land in ``sensor_data``, written by
more than one executor (the raw sink runs in the executors, each task its own Kafka partition);
the Master UI must list the application with cores granted on the worker, and SIGTERM must stop it
cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetsim.cloud.streaming.executor_sink import WRITER_APP_PREFIX
from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.contract import KafkaHeader, Reading, telemetry_topic
from fleetsim.stack import process
from fleetsim.stack.spark_standalone import SparkStandalone, WorkerSize

# `make test-slow` (~55 s, make test's ten-minute budget), like the cluster profile's drills,
# which run the job on a standalone master and two workers.
pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

DEVICES = 24
"""Enough devices that every one of the topic's 4 partitions holds some (keyed by device id)."""
READINGS_PER_DEVICE = 4
EXECUTOR_DEFAULTS = "spark.executor.cores 1\nspark.executor.memory 512m\n"
"""Two executors on the 2-core, 1 GiB worker (the driver reads them from its spark-defaults.conf)."""
LAND_TIMEOUT_S = 300.0
"""Generous on purpose: the first micro-batch on a cluster waits for an executor JVM; on a loaded
shared 2-core machine the JVMs alone took ~2 min. An unloaded run lands in well under a minute."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkStandalone]:
    spark = SparkStandalone(tmp_path_factory.mktemp("spark-cluster"), size=WorkerSize(cores=2, memory="1g"))
    spark.start(timeout_s=90)
    try:
        yield spark
    finally:
        spark.stop()


def produce(cfg: FleetsimConfig, readings: list[Reading]) -> None:
    """Send readings the way the bridge does: keyed by device id, with the bridge's headers."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), acks="all")
    try:
        now_ms = str(int(time.time() * 1000)).encode()
        for r in readings:
            headers = [
                (KafkaHeader.SOURCE_TOPIC.value, telemetry_topic(r.device_id).encode()),
                (KafkaHeader.RECEIVED_AT.value, now_ms),
                (KafkaHeader.FORMAT.value, b"native"),
            ]
            producer.send(
                cfg.kafka.telemetry_topic, key=r.device_id.encode(), value=r.encode(), headers=headers
            )
        producer.flush(timeout=30)
    finally:
        producer.close()


def landed(cfg: FleetsimConfig, prefix: str) -> set[tuple[str, int]]:
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT device_id, seq FROM sensor_data WHERE device_id LIKE %s", (prefix + "%",))
            return {(str(d), int(s)) for d, s in cur.fetchall()}
    finally:
        conn.close()


def raw_writers(cfg: FleetsimConfig) -> set[str]:
    """Executor-side raw writers connected now (application_name: prefix + host:executor daemon pid)."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                (WRITER_APP_PREFIX + "%",),
            )
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, alive: subprocess.Popen[bytes], log: Path
) -> Any:
    """Poll ``predicate`` until truthy; fail early (with the job's log) if the job exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            pytest.fail(f"fleetsim stream exited with {alive.returncode}:\n{process.error_summary(log)}")
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    return predicate()


def test_stream_job_runs_on_a_standalone_cluster(
    cluster: SparkStandalone,
    postgres: FleetsimConfig,
    kafka_topics: Callable[..., FleetsimConfig],
    tmp_path: Path,
) -> None:
    ui_port, metrics_port = process.free_ports(2)
    cfg = kafka_topics("cluster").with_overrides(
        {
            "spark.checkpoint_dir": str(tmp_path / "checkpoints"),
            "spark.ui_port": ui_port,
            "spark.metrics_port": metrics_port,
            "spark.master_ui_url": cluster.master_ui_url,
            "spark.shuffle_partitions": 2,
            "spark.driver_memory": "512m",
            "spark.raw_sink": "executor",  # the cluster's way: every executor writes its partitions
        }
    )
    prefix = f"cluster-{uuid.uuid4().hex[:8]}-"
    start = datetime.now(UTC).replace(microsecond=0)
    readings = [
        Reading(f"{prefix}{d}", start + timedelta(seconds=10 * i), i, temperature=20.0 + i, humidity=45.0,
                co2=600.0, pressure=1013.0, battery=90.0, lat=45.76, lon=4.84)
        for d in range(DEVICES)
        for i in range(READINGS_PER_DEVICE)
    ]  # fmt: skip
    produce(cfg, readings)

    # Same command as the compose `stream` service; the config travels in the environment only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")}
    conf_dir = tmp_path / "spark-conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text(EXECUTOR_DEFAULTS, encoding="utf-8")
    env.update(config_to_env(cfg), PYSPARK_PYTHON=sys.executable, SPARK_CONF_DIR=str(conf_dir))
    log = tmp_path / "stream.log"
    with log.open("wb") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "fleetsim.cli", "stream", "--master", cluster.master_url],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        want = {(r.device_id, r.seq) for r in readings}
        writers: set[str] = set()

        def all_landed() -> bool:
            writers.update(raw_writers(cfg))  # seen while the job runs: connections of the executors
            return landed(cfg, prefix) >= want

        got = wait_until(all_landed, LAND_TIMEOUT_S, job, log)
        assert got, f"rows in sensor_data: {sorted(landed(cfg, prefix))}\n{process.error_summary(log)}"
        assert landed(cfg, prefix) == want, "exactly the produced readings, no duplicates or strays"
        writers.update(raw_writers(cfg))
        assert len(writers) >= 2, f"rows written by more than one executor, saw {writers}"

        apps = [a for a in cluster.active_apps() if a.get("name") == cfg.spark.app_name]
        assert len(apps) == 1, f"Master UI lists {cluster.active_apps()}"
        assert apps[0]["state"] == "RUNNING" and apps[0]["cores"] >= 1, apps[0]
        app_id = apps[0]["id"]
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)  # the job's own handler stops the queries, then Spark
        try:
            job.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=10)
    assert job.returncode == 0, f"graceful stop expected, got {job.returncode}:\n{process.error_summary(log)}"
    done = process.wait_for(
        lambda: any(a.get("id") == app_id for a in cluster.master_state().get("completedapps", [])), 30.0, 0.5
    )
    assert done, "the master still lists the application as active after the job stopped"
