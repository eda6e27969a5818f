"""Stuck and drift rules of the raw sink on real PostgreSQL (no Spark: batches as the raw flow's
COPY text): drift judged on temperature (and pressure) with their own thresholds, not on relative
humidity, and a humidity sensor saturated at 100 % is not stuck."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pg_support import admin as _admin

from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


@pytest.fixture
def sink_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    _admin(postgres, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    yield postgres


def _batch(series: dict[str, list[tuple[float | None, float | None]]]) -> RawBatch:
    """``{device: [(temperature, humidity), ...]}``, one reading a minute from T0, no alert rows."""
    lines = []
    for dev, values in series.items():
        for i, (temp, hum) in enumerate(values):
            ts = (T0 + timedelta(minutes=i)).isoformat()
            t = "" if temp is None else temp
            h = "" if hum is None else hum
            lines.append(f"{dev},{i},{ts},{t},{h},,,,,,OK,,0,{i},{ts},{ts}\n")
    return RawBatch("".join(lines).encode(), b"", b"", (T0.date(),))


def _alerts(cfg: FleetsimConfig) -> set[tuple[str, str, str]]:
    rows = _admin(
        cfg, "SELECT device_id, kind, measurement FROM sensor_alerts WHERE kind IN ('stuck', 'drift')"
    )
    return {(r[0], r[1], r[2]) for r in rows}


def test_drift_thresholds_are_per_measurement_and_saturated_humidity_is_not_stuck(
    sink_cfg: FleetsimConfig,
) -> None:
    rise = range(12)
    series = {
        # +1 °C a reading: the newest half's mean is 6 °C above the oldest half's (threshold 5 °C).
        "hr-temp": [(15.0 + i, 50.0 + (i % 2)) for i in rise],
        # +2 % a reading: 12 % between the halves, a room filling up; relative humidity is not
        # judged for drift (the old shared threshold of 5 made it a drift incident).
        "hr-hum": [(20.0 + (i % 2) * 0.1, 40.0 + 2 * i) for i in rise],
        # Fog: 100 % for 12 readings is a saturated sensor, not a stuck one ...
        "hr-fog": [(8.0 + (i % 2) * 0.1, 100.0) for i in rise],
        # ... but 55 % for 12 readings is stuck.
        "hr-stuck": [(18.0 + (i % 2) * 0.1, 55.0) for i in rise],
    }
    sink = PgSink(sink_cfg, "raw")
    try:
        sink.write_raw(_batch(series), batch_id=1)
    finally:
        sink.close()
    assert _alerts(sink_cfg) == {("hr-temp", "drift", "temperature"), ("hr-stuck", "stuck", "humidity")}


# `make test-slow` (~25 s, make test's ten-minute budget): the executor-side writer is the cluster
# setting (`spark.raw_sink = executor`); make test keeps the driver sink's rules, the default.
@pytest.mark.slow
def test_partition_writer_detects_the_same_as_the_driver_sink_and_a_replay_adds_nothing(
    sink_cfg: FleetsimConfig, spark: Any
) -> None:
    """The executor-side writer (one transaction per Spark partition, partitions split by device as
    Kafka's keying does): same rows and same stuck/drift detections as the one-transaction driver
    sink above; the same batch again (a replay after a crash) adds no row."""
    from fleetsim.cloud.streaming.executor_sink import STATS_DDL, RawPartitionWriter

    rise = range(12)
    series = {
        "hp-temp": [(15.0 + i, 50.0 + (i % 2)) for i in rise],
        "hp-fog": [(8.0 + (i % 2) * 0.1, 100.0) for i in rise],
        "hp-stuck": [(18.0 + (i % 2) * 0.1, 55.0) for i in rise],
        "hp-calm": [(20.0 + (i % 2) * 0.1, 50.0 + (i % 3)) for i in rise],
    }
    lines = _batch(series).readings.decode().splitlines(keepends=True)
    devices = sorted(series)
    rows = [(devices.index(ln.split(",")[0]) % 2, 0, T0.date(), ln) for ln in lines]
    schema = "part int, kind int, day date, line string"
    df = spark.createDataFrame(rows, schema).repartitionByRange(2, "part").drop("part")
    assert df.rdd.getNumPartitions() == 2
    writer = RawPartitionWriter(sink_cfg)

    stats = df.mapInArrow(writer, STATS_DDL).collect()
    assert sum(s["inserted"] for s in stats) == len(lines)
    assert len([s for s in stats if s["rows"]]) == 2, "both partitions wrote their own share"
    assert _alerts(sink_cfg) == {("hp-temp", "drift", "temperature"), ("hp-stuck", "stuck", "humidity")}

    again = df.mapInArrow(writer, STATS_DDL).collect()
    assert sum(s["inserted"] for s in again) == 0
    assert sum(s["alerts"] for s in again) == 0
    assert _admin(sink_cfg, "SELECT count(*) FROM sensor_data")[0][0] == len(lines)


def test_partition_created_by_a_concurrent_writer_is_not_an_error(sink_cfg: FleetsimConfig) -> None:
    """Two partition writers of one batch need the same new day partition: the one that waited for
    the other's creation must carry on (it used to fail with 'relation already exists')."""
    import random
    import threading
    from datetime import date

    from fleetsim.kernel.clients import pg_connect

    day = date(2031, 1, 1) + timedelta(days=random.randrange(3000))
    first = pg_connect(sink_cfg, "writer")
    sink = PgSink(sink_cfg, "raw")
    errors: list[Exception] = []

    def second() -> None:
        try:
            sink.ensure_partitions([day])
        except Exception as exc:  # the assertion below reports it
            errors.append(exc)

    try:
        with first.cursor() as cur:
            cur.execute("SELECT ensure_sensor_data_partition(%s)", (day,))  # created, not committed
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(1.0)  # blocked on the creator's lock
        first.commit()
        waiter.join(30.0)
        assert not waiter.is_alive()
        assert errors == []
        part = f"sensor_data_{day:%Y%m%d}"
        assert _admin(sink_cfg, "SELECT to_regclass(%s) IS NOT NULL", (part,)) == [(True,)]
    finally:
        first.close()
        sink.close()
        _admin(sink_cfg, f"DROP TABLE IF EXISTS sensor_data_{day:%Y%m%d}")
