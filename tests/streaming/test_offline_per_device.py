"""A device's silence threshold follows its registered reporting interval (V013): both offline rules
of the raw sink and the dashboard's online state use max(offline_after_s, offline_intervals ×
interval_s), on real PostgreSQL (batches as the raw flow's COPY text, no Spark)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pg_support import admin as _admin

from fleetsim.cloud.dashboard.queries import live
from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

REF = [f"iv-ref-{i}" for i in range(3)]  # unregistered, every 10 s: the partition's clock


@pytest.fixture
def sink_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    _admin(postgres, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    _admin(postgres, "DELETE FROM devices WHERE device_id LIKE 'iv-%%'")
    _admin(
        postgres,
        "INSERT INTO devices (device_id, site, interval_s) VALUES "
        "('iv-300', 'iv', 300), ('iv-60', 'iv', 60), ('iv-30', 'iv', 30)",
    )
    yield postgres.with_overrides({"alerts.offline_after_s": 60.0, "alerts.offline_intervals": 1.5})
    _admin(postgres, "DELETE FROM devices WHERE device_id LIKE 'iv-%%'")


def _batch(readings: list[tuple[str, int, datetime]]) -> RawBatch:
    """(device, seq, ts) readings of partition 0, each reaching Kafka a second after its stamp (no
    clock looks skewed)."""
    lines = [
        f"{d},{seq},{ts.isoformat()},20.0,50.0,,,,,,OK,,0,{seq},{(ts + timedelta(seconds=1)).isoformat()},\n"
        for d, seq, ts in readings
    ]
    return RawBatch("".join(lines).encode(), b"", b"", tuple({ts.date() for *_, ts in readings}))


def _alerts(cfg: FleetsimConfig) -> list[tuple[str, float, float, datetime]]:
    rows = _admin(
        cfg,
        "SELECT device_id, value, threshold, event_ts FROM sensor_alerts WHERE kind = 'offline' "
        'ORDER BY device_id COLLATE "C", event_ts',
    )
    return [(r[0], round(float(r[1])), float(r[2]), r[3]) for r in rows]


def test_each_device_is_silent_after_its_own_threshold(sink_cfg: FleetsimConfig) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at: Callable[[int], datetime] = lambda s: now - timedelta(seconds=s)  # noqa: E731
    seq = iter(range(10_000))

    def every(device: str, start_s: int, end_s: int, step_s: int) -> list[tuple[str, int, datetime]]:
        return [(device, next(seq), at(s)) for s in range(start_s, end_s - 1, -step_s)]

    first = [r for d in REF for r in every(d, 1400, 400, 10)]
    first += every("iv-300", 1400, 800, 300)  # 300 s apart: under its 450 s
    first += every("iv-60", 520, 400, 60)  # 60 s apart: under its 90 s
    first += every("iv-30", 520, 400, 90)  # 90 s apart: over its 60 s (1.5 x 30 s is under the floor)
    first += every("iv-unreg", 520, 400, 120)  # no registered interval: the 60 s floor
    sink = PgSink(sink_cfg, "raw")
    try:
        sink.write_raw(_batch(first), batch_id=0)
        # iv-300 has been silent 400 s at the partition's clock (-400 s): not yet overdue.
        assert _alerts(sink_cfg) == [
            ("iv-30", 90, 60.0, at(520) + timedelta(seconds=60)),
            ("iv-unreg", 120, 60.0, at(520) + timedelta(seconds=60)),
        ]
        second = [r for d in REF for r in every(d, 390, 0, 10)]
        second += every("iv-300", 200, 200, 1)  # a 600 s gap: one reading missed
        sink.write_raw(_batch(second), batch_id=1)
    finally:
        sink.close()
    # The gap rule for iv-300 (its threshold is the alert's), the silence rule for the others.
    assert sorted(_alerts(sink_cfg)) == [
        ("iv-30", 90, 60.0, at(520) + timedelta(seconds=60)),
        ("iv-30", 430, 60.0, at(430) + timedelta(seconds=60)),
        ("iv-300", 600, 450.0, at(800) + timedelta(seconds=450)),
        ("iv-60", 400, 90.0, at(400) + timedelta(seconds=90)),
        ("iv-unreg", 120, 60.0, at(520) + timedelta(seconds=60)),
        ("iv-unreg", 400, 60.0, at(400) + timedelta(seconds=60)),
    ]

    # The dashboard's online state uses the same thresholds. Last heard: its newest event time.
    _admin(sink_cfg, "UPDATE device_latest SET ingest_ts = ts")
    conn = pg_connect(sink_cfg, "admin")
    try:
        online = {
            intervals: dict(
                live.fleet_map(conn, offline_after_s=60.0, offline_intervals=intervals, limit=100)
                .set_index("device_id")["online"]
                .items()
            )
            for intervals in (1.5, 0.0)
        }
    finally:
        conn.close()
    # iv-300 last heard 200 s ago: online within its 450 s, offline under the fleet's 60 s alone.
    assert online[1.5]["iv-300"] and not online[0.0]["iv-300"]
    assert not online[1.5]["iv-60"] and not online[1.5]["iv-unreg"]
    assert all(online[1.5][d] for d in REF)
