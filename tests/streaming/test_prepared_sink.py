"""Prepared merge statements on real PostgreSQL: planned once per connection and size class, bound
with the sink's constant values, and the merge's results unchanged."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pg_support import admin as _admin

from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.cloud.streaming.prepared import SIZE_CLASSES, PreparedStatements, size_class
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration


def test_size_classes_are_a_factor_16_apart() -> None:
    assert [size_class(n) for n in (0, 64, 65, 1024, 1025, 16384, 16385, 10**6)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(SIZE_CLASSES) == 3


def test_a_statement_is_prepared_once_per_size_class_with_its_values_bound(postgres: FleetsimConfig) -> None:
    stmts = PreparedStatements()
    conn = pg_connect(postgres, "admin")
    try:
        with conn.cursor() as cur:
            query = "SELECT %(a)s::int + %(b)s::int, '100%%'"
            for size in (0, 0, 1):
                stmts.run(cur, query, {"a": 2, "b": 3}, size)
                assert cur.fetchone() == (5, "100%")
            stmts.run(cur, query, {"a": 40, "b": 2}, 0)  # other values: another statement
            assert cur.fetchone() == (42, "100%")
            cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'fleetsim_merge_%%'")
            assert cur.fetchone() == (3,)
    finally:
        conn.close()


def test_a_plan_is_made_again_once_it_is_max_age_old(postgres: FleetsimConfig) -> None:
    """Plans follow the tables as they grow: an aged statement is deallocated and prepared anew
    (under a new name) before its next execution; a younger one is reused."""
    clock = [0.0]
    stmts = PreparedStatements(max_age_s=60.0, clock=lambda: clock[0])
    conn = pg_connect(postgres, "admin")

    def names(cur: object) -> list[str]:
        cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")  # type: ignore[attr-defined]
        return [r[0] for r in cur.fetchall()]  # type: ignore[attr-defined]

    try:
        with conn.cursor() as cur:
            for t, want in (
                (0.0, ["fleetsim_merge_0"]),
                (60.0, ["fleetsim_merge_0"]),
                (60.5, ["fleetsim_merge_1"]),
            ):
                clock[0] = t
                stmts.run(cur, "SELECT %(a)s::int * 2", {"a": 21})
                assert cur.fetchone() == (42,)
                assert names(cur) == want, t
    finally:
        conn.close()
    with pytest.raises(ValueError, match="max_age_s must be positive"):
        PreparedStatements(max_age_s=0)


def test_merges_through_prepared_statements_keep_their_results(postgres: FleetsimConfig) -> None:
    """Small, then large, then small merges on one sink connection (three plans per statement),
    then a new connection: every reading lands once, every alert once."""
    _admin(postgres, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    now = datetime.now(UTC).replace(microsecond=0)
    arrived = now.isoformat()

    def batch(devices: range, seq: int, temp: float) -> RawBatch:
        ts = now - timedelta(seconds=600 - 10 * seq)
        lines = "".join(
            f"pr-{d:04d},{seq},{ts.isoformat()},{temp},50.0,,,,,,OK,,{d % 4},{seq},{arrived},{arrived}\n"
            for d in devices
        )
        return RawBatch(lines.encode(), b"", b"", (ts.date(),))

    sink = PgSink(postgres, "raw")
    try:
        prepared = []
        for seq, devices in enumerate([range(5), range(2000), range(5)]):
            sink.write_raw(batch(devices, seq, 20.0), seq)
            with sink.conn().cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_prepared_statements")
                prepared.append(cur.fetchone()[0])
        # The same statements for the large merge, prepared apart; the second small merge reuses.
        assert prepared[0] > 5 and prepared == [prepared[0], 2 * prepared[0], 2 * prepared[0]]
        sink.close()  # a new connection prepares again
        sink.write_raw(batch(range(3), 3, 20.0), 3)
    finally:
        sink.close()
    rows = _admin(postgres, "SELECT count(*), count(DISTINCT (device_id, seq)) FROM sensor_data")
    assert rows == [(5 + 2000 + 5 + 3, 5 + 2000 + 5 + 3)]
    latest = _admin(postgres, "SELECT seq, count(*) FROM device_latest GROUP BY seq ORDER BY seq")
    assert latest == [(1, 1995), (2, 2), (3, 3)]


def _devices_scans(cfg: FleetsimConfig) -> tuple[int, int]:
    """(seq_scan, idx_scan) of ``devices`` as the statistics system has them now."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(
                "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'devices'"
            )
            seq, idx = cur.fetchone()
            return int(seq), int(idx)
    finally:
        conn.close()


def test_a_small_merge_probes_the_registry_instead_of_reading_it_whole(postgres: FleetsimConfig) -> None:
    """With 10,000 registered devices, a 20-reading merge looks its devices up by key: planned with
    the default page costs it hashed the whole registry for each of two statements (~6 ms each)."""
    from fleetsim.registry.model import DeviceRecord
    from fleetsim.registry.seed import seed_devices

    seed_devices(
        postgres,
        [
            DeviceRecord(device_id=f"pk-{d:05d}", kind="simulated", type="fixed", site=f"s{d % 50}", lat=45.0,
                         lon=4.0, payload_format="native", interval_s=10.0, indoor=bool(d % 2), placed=True)
            for d in range(10_000)
        ],
    )  # fmt: skip
    try:
        _admin(postgres, "ANALYZE devices")  # what autovacuum does once 10,000 rows arrive
        now = datetime.now(UTC).replace(microsecond=0)
        ts, arrived = (now - timedelta(seconds=30)).isoformat(), now.isoformat()
        lines = "".join(
            f"pk-{d:05d},1,{ts},21.0,50.0,,,,,,OK,,{d % 4},1,{arrived},{arrived}\n"
            for d in range(0, 10_000, 500)
        )
        seq0, idx0 = _devices_scans(postgres)
        sink = PgSink(postgres, "raw", state_in_memory=True)
        try:
            assert sink.write_raw(RawBatch(lines.encode(), b"", b"", (now.date(),)), 1).inserted == 20
        finally:
            sink.close()  # the backend's statistics are flushed as it exits
        deadline = time.monotonic() + 10
        while _devices_scans(postgres) == (seq0, idx0) and time.monotonic() < deadline:
            time.sleep(0.1)
        seq1, idx1 = _devices_scans(postgres)
        assert seq1 == seq0, f"a 20-reading merge read the whole registry {seq1 - seq0} time(s)"
        assert idx1 > idx0, "the merge's lookups into devices never reached the statistics"
    finally:
        _admin(postgres, "DELETE FROM devices WHERE device_id LIKE 'pk-%'")
