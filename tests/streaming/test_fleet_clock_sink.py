"""The fleet-clock rules of the raw sink on real PostgreSQL (no Spark: batches as the raw flow's COPY
text): ``clock_skew`` for a clock ahead or behind the fleet's, ``offline`` for a gap in a device's own
event time, and neither for a lone straggler nor for a catch-up batch holding minutes of everyone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pg_support import admin as _admin
from psycopg2 import sql
from waiting import wait_until

from fleetsim.cloud.streaming import history_sql
from fleetsim.cloud.streaming.pgsink import INSERT_RAW, RAW_COPY_COLUMNS, UPSERT_LATEST, PgSink, RawBatch
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def sink_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    _admin(postgres, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    yield postgres


def _batch(readings: list[tuple[str, int, datetime]]) -> RawBatch:
    """(device, seq, ts) readings, each arriving (Kafka timestamp) now."""
    now = datetime.now(UTC).isoformat()
    lines = [
        f"{d},{seq},{ts.isoformat()},20.0,50.0,,,,,,OK,,0,{seq},{now},{now}\n" for d, seq, ts in readings
    ]
    return RawBatch("".join(lines).encode(), b"", b"", tuple({ts.date() for _, _, ts in readings}))


@pytest.fixture(params=["sensor_data", "memory"])
def memory(request: pytest.FixtureRequest) -> bool:
    """Whether the writer remembers its devices' newest readings (a loader's ``rule_memory``), which
    then give the gap rule its predecessor."""
    return bool(request.param == "memory")


def _write(cfg: FleetsimConfig, *batches: RawBatch, memory: bool = False) -> list[tuple[str, str, float]]:
    sink = PgSink(cfg, "raw", state_in_memory=memory)
    try:
        for i, b in enumerate(batches):
            sink.write_raw(b, batch_id=i)
    finally:
        sink.close()
    rows = _admin(
        cfg,
        "SELECT device_id, kind, value FROM sensor_alerts WHERE kind IN ('clock_skew', 'offline') "
        "ORDER BY device_id, kind",
    )
    return [(r[0], r[1], float(r[2])) for r in rows]


def test_a_clock_ahead_or_behind_the_fleets_is_named(sink_cfg: FleetsimConfig) -> None:
    now = datetime.now(UTC)
    readings = [(f"cs-{i}", 1, now - timedelta(seconds=2 + i)) for i in range(5)]
    readings += [("cs-ahead", 1, now + timedelta(minutes=10)), ("cs-behind", 1, now - timedelta(minutes=5))]
    # (The clock behind also looks silent to the device_latest offline rule: the scorer counts that
    # offline as a consequence of the skew.)
    got = [a for a in _write(sink_cfg, _batch(readings)) if a[1] == "clock_skew"]
    assert [(d, k) for d, k, _ in got] == [("cs-ahead", "clock_skew"), ("cs-behind", "clock_skew")]
    ahead, behind = got[0][2], got[1][2]
    assert 590 < ahead < 610 and -310 < behind < -290
    # The rows stay visible, with the device's own time.
    ts = _admin(sink_cfg, "SELECT ts FROM sensor_data WHERE device_id = 'cs-ahead'")[0][0]
    assert ts == readings[5][2]


def test_the_fleets_clock_comes_from_other_writers_merges_and_each_device_counts_once(
    sink_cfg: FleetsimConfig,
) -> None:
    """A merge of one device has no fleet of its own: its reference is the lags other merges (here
    another writer's, as another loader's partitions) stored in the last few seconds. A device
    seen in several of those merges counts once, so a chatty device cannot outvote the fleet."""
    now = datetime.now(UTC)
    fleet = [(f"fc-{i}", 1, now - timedelta(seconds=2)) for i in range(6)]
    # A chatty device 5 minutes ahead, in three merges of its own, one more than the fleet has.
    chatty = [_batch([("fc-chatty", k, now + timedelta(minutes=5, seconds=k))]) for k in range(7)]
    _write(sink_cfg, _batch(fleet), *chatty)
    stored = _admin(sink_cfg, "SELECT count(*), sum(cardinality(devices)) FROM fleet_clock_lag")[0]
    assert stored == (8, 13), stored
    got = [a for a in _write(sink_cfg, _batch([("fc-alone", 1, now + timedelta(minutes=10))]))]
    skew = {d: v for d, k, v in got if k == "clock_skew"}
    # The chatty device was named against the fleet in each of its merges, and fc-alone too.
    assert set(skew) == {"fc-chatty", "fc-alone"}, got
    assert 590 < skew["fc-alone"] < 610, skew
    # Old lags go: a merge deletes what is older than LAG_KEEP_S, whoever stored it.
    _admin(sink_cfg, "UPDATE fleet_clock_lag SET written_at = written_at - interval '2 minutes'")
    _write(sink_cfg, _batch([("fc-0", 2, now - timedelta(seconds=1))]))
    assert _admin(sink_cfg, "SELECT count(*) FROM fleet_clock_lag")[0][0] == 1


def test_a_small_merge_is_topped_up_from_the_newest_merges_only_to_ref_min_devices(
    sink_cfg: FleetsimConfig,
) -> None:
    """A merge of one device reads stored lags, newest merge first, only until its reference holds
    ``REF_MIN_DEVICES`` devices: reading on to ``REF_DEVICES`` cost small merges more than V017's
    cheaper upsert saved them (bench/ANALYSIS.md, twenty-fifth round)."""
    n_new, n_old = history_sql.REF_MIN_DEVICES, history_sql.REF_DEVICES - history_sql.REF_MIN_DEVICES
    assert n_old > n_new  # read whole, the older merges would outvote the newest ones
    insert = "INSERT INTO fleet_clock_lag (written_at, devices, lags) VALUES (now() - %s::interval, %s, %s)"
    # An older merge of devices stamped 600 s before arrival, then a newer one of devices on time.
    _admin(sink_cfg, insert, ("2 seconds", [f"old-{i}" for i in range(n_old)], [600.0] * n_old))
    _admin(sink_cfg, insert, ("1 second", [f"new-{i}" for i in range(n_new)], [0.0] * n_new))
    now = datetime.now(UTC)
    # On time (lag ~0): the newest merges' clock, so no skew; against all 1,000 it would be 600 s ahead.
    assert _write(sink_cfg, _batch([("tu-on-time", 1, now)])) == []
    # Stamped 600 s before arrival: 600 s behind the newest merges' clock.
    got = _write(sink_cfg, _batch([("tu-behind", 1, now - timedelta(seconds=600))]))
    assert [(d, k) for d, k, _ in got] == [("tu-behind", "clock_skew")], got


def test_a_readings_update_of_device_latest_is_hot(sink_cfg: FleetsimConfig) -> None:
    """No index of device_latest covers a column every reading changes (V017): the next reading
    of a device rewrites its row in place (HOT), without an entry in every index."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    # Both readings of a device in one 30 s bucket of ts (the silence rule's index column).
    base = datetime.fromtimestamp(start.timestamp() // 30 * 30 + 5, UTC)
    devices = [f"hot-{i}" for i in range(200)]
    _write(sink_cfg, _batch([(d, 1, base) for d in devices]))

    def counts() -> tuple[int, int]:
        # A new connection: a fresh statistics snapshot, after the sink's backend flushed (closed).
        row = _admin(
            sink_cfg,
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'device_latest'",
        )[0]
        return int(row[0]), int(row[1])

    upd0, hot0 = counts()
    _write(sink_cfg, _batch([(d, 2, base + timedelta(seconds=10)) for d in devices]))
    # The project's poll helper, not a spin loop hammering PostgreSQL while its statistics flush.
    wait_until(lambda: counts()[0] - upd0 >= len(devices), 10, what="the updates in pg_stat_user_tables")
    upd, hot = counts()
    assert (upd - upd0, hot - hot0) == (len(devices), len(devices)), (upd - upd0, hot - hot0)


def test_a_straggler_and_a_catch_up_batch_are_not_offline(sink_cfg: FleetsimConfig) -> None:
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    fleet = ["st-1", "st-2", "st-3", "st-4"]
    b0 = [(d, k, at(190 - 10 * k)) for d in fleet for k in range(12)]  # -190 .. -80 s
    b1 = [(d, k, at(190 - 10 * k)) for d in fleet for k in range(12, 20)]  # -70 .. 0 s
    b1.append(("st-1", 100, at(95)))  # a lone straggler, delivered 95 s late
    assert _write(sink_cfg, _batch(b0), _batch(b1)) == []
    # Catch-up: one batch with 12 minutes of every device's readings, one a minute.
    _admin(sink_cfg, "TRUNCATE sensor_data, device_latest, sensor_alerts")
    catch_up = [(d, k, at(720 - 60 * k)) for d in fleet for k in range(13)]
    assert _write(sink_cfg, _batch(catch_up)) == []


def test_a_gap_in_a_devices_own_time_is_offline_once(sink_cfg: FleetsimConfig, memory: bool) -> None:
    """An outage whose buffer overflowed: the readings resume 90 s (of the device's own time) after
    the last one: offline at that last one + offline_after_s, the key the device_latest rule gives
    the same silence, so a second look adds nothing."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    first = [("gp-1", k, at(200 - 10 * k)) for k in range(5)]  # -200 .. -160 s
    second = [("gp-1", k, at(120 - 10 * k)) for k in range(5, 12)]  # from -70 s: a 90 s gap
    assert _write(sink_cfg, _batch(first), _batch(second), memory=memory) == [("gp-1", "offline", 90.0)]
    assert _write(sink_cfg, _batch(second), memory=memory) == [("gp-1", "offline", 90.0)]
    event_ts = _admin(sink_cfg, "SELECT event_ts FROM sensor_alerts WHERE kind = 'offline'")[0][0]
    assert event_ts == at(160) + timedelta(seconds=60)


def _partitioned(readings: list[tuple[str, int, int, datetime]]) -> RawBatch:
    """(device, partition, seq, ts) readings, each reaching Kafka a second after it was stamped."""
    arrive = lambda ts: (ts + timedelta(seconds=1)).isoformat()  # noqa: E731
    lines = [
        f"{d},{seq},{ts.isoformat()},20.0,50.0,,,,,,OK,,{p},{seq},{arrive(ts)},\n"
        for d, p, seq, ts in readings
    ]
    return RawBatch("".join(lines).encode(), b"", b"", tuple({ts.date() for *_, ts in readings}))


def test_silence_is_judged_within_the_devices_own_partition(sink_cfg: FleetsimConfig) -> None:
    """Partitions reach the sink at different event times while a job or the real-time loaders catch
    up: a device is silent only once its own partition (an ordered log) moved on without it."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    devices = {"pp-0a": 0, "pp-0b": 0, "pp-1a": 1, "pp-1b": 1}
    first = [(d, p, k, at(300 - 10 * k)) for d, p in devices.items() for k in range(10)]  # -300 .. -210 s
    # Partition 0 delivers the next 200 s; partition 1 is behind and has sent nothing yet.
    ahead = [(d, 0, k, at(300 - 10 * k)) for d in ("pp-0a", "pp-0b") for k in range(10, 31)]  # .. 0 s
    # Partition 1 catches up, but only pp-1a: pp-1b stayed silent in its own partition's time.
    caught_up = [("pp-1a", 1, k, at(300 - 10 * k)) for k in range(10, 31)]
    got = _write(sink_cfg, _partitioned(first), _partitioned(ahead))
    assert [a for a in got if a[1] == "offline"] == []  # before V011 pp-1a and pp-1b were offline here
    got = _write(sink_cfg, _partitioned(caught_up))
    assert [(d, k) for d, k, _ in got] == [("pp-1b", "offline")]


def test_a_gap_starts_at_the_newest_stored_reading_before_it(sink_cfg: FleetsimConfig, memory: bool) -> None:
    """An out-of-order reading can reach a later batch than its successor (the real-time loaders
    merge whatever has arrived): the gap before the next reading starts at the newest reading
    stored before it, not at the batch's own previous one."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    first = [("oo-1", k, at(1000 - 10 * k)) for k in range(6)] + [("oo-1", 7, at(930))]  # k=6 comes later
    second = [("oo-1", 6, at(940)), ("oo-1", 8, at(400))]
    got = [a for a in _write(sink_cfg, _batch(first), _batch(second), memory=memory) if a[1] == "offline"]
    assert got == [("oo-1", "offline", 530.0)]  # from seq 7 (-930 s), not from seq 6 (-940 s)
    event = _admin(sink_cfg, "SELECT event_ts FROM sensor_alerts WHERE kind = 'offline'")[0][0]
    assert event == at(930) + timedelta(seconds=60)


def test_a_silent_device_is_judged_once_per_silence(sink_cfg: FleetsimConfig) -> None:
    """The silence rule marks a device it judged (V012) and skips it until it reports again, so a
    silent fleet costs later merges nothing; a new silence after it came back is a new alert."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    live = ["sm-a", "sm-b", "sm-c"]

    def span(devices: list[str], start_s: int, end_s: int) -> RawBatch:
        return _partitioned(
            [(d, 0, 1000 - s // 10, at(s)) for d in devices for s in range(start_s, end_s, -10)]
        )

    offline = "SELECT event_ts FROM sensor_alerts WHERE device_id = 'sm-d' AND kind = 'offline' ORDER BY 1"
    _write(sink_cfg, span([*live, "sm-d"], 600, 500), span(live, 500, 300))
    assert [r[0] for r in _admin(sink_cfg, offline)] == [at(510) + timedelta(seconds=60)]
    marks = dict(
        _admin(sink_cfg, "SELECT device_id, offline_for FROM device_latest WHERE device_id LIKE 'sm-%'")
    )
    assert marks == {"sm-a": None, "sm-b": None, "sm-c": None, "sm-d": at(510)}
    # Judged already: with its alert gone, a later merge does not look at it again.
    _admin(sink_cfg, "DELETE FROM sensor_alerts WHERE device_id = 'sm-d'")
    _write(sink_cfg, span(live, 300, 200))
    assert _admin(sink_cfg, offline) == []
    # It comes back (the gap rule names that silence once more), then falls silent again.
    _write(sink_cfg, span([*live, "sm-d"], 200, 190), span(live, 190, 0))
    got = [r[0] for r in _admin(sink_cfg, offline)]
    assert got == [at(510) + timedelta(seconds=60), at(200) + timedelta(seconds=60)]


def _offline_plan(cfg: FleetsimConfig, batch: RawBatch) -> dict[str, Any]:
    """The silence rule's plan with its buffer counts, run on ``batch`` in the sink's own session
    (temp stage tables, prepared-statement settings) and rolled back."""
    sink = PgSink(cfg, "raw")
    try:
        conn = sink.conn()
        with conn.cursor() as cur:
            PgSink._copy(cur, "stage_raw", RAW_COPY_COLUMNS, batch.readings)
            # What the merge runs before the rule: the batch's devices are no longer silent.
            cur.execute(INSERT_RAW, {"watermark": cfg.spark.watermark})
            cur.execute(UPSERT_LATEST)
            explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + history_sql.OFFLINE_SQL
            cur.execute(explain, history_sql.offline_params(cfg.alerts))
            plan: dict[str, Any] = cur.fetchone()[0][0]["Plan"]
        conn.rollback()
    finally:
        sink.close()
    return plan


def _scans(node: dict[str, Any], relation: str) -> Iterator[dict[str, Any]]:
    if node.get("Relation Name") == relation and "Scan" in node["Node Type"]:
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child, relation)


def _vacuum(cfg: FleetsimConfig, table: str) -> None:
    conn = pg_connect(cfg, "admin")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    finally:
        conn.close()


def _fleet(cfg: FleetsimConfig, prefix: str, n: int, ts: datetime, partitions: int, judged: bool) -> None:
    """``n`` devices ``<prefix>1..n`` whose latest reading is at ``ts``, spread over ``partitions``
    Kafka partitions; ``judged``: already marked silent (``offline_for`` = ``ts``)."""
    _admin(
        cfg,
        "INSERT INTO device_latest (device_id, seq, ts, status, kafka_partition, offline_for, ingest_ts) "
        "SELECT %s || i, 1, %s, 'OK', i %% %s, %s, %s FROM generate_series(1, %s) i",
        (prefix, ts, partitions, ts if judged else None, ts, n),
    )


def test_a_judged_silent_fleet_costs_the_silence_rule_a_few_pages(sink_cfg: FleetsimConfig) -> None:
    """20,000 devices silent and already judged (a replaced fleet) beside 1,000 live ones whose
    rows were updated many times (one non-HOT update per reading): per partition of the batch, the
    rule looks up the unjudged devices silent long enough (``device_latest_silent_idx``,
    V015, V017) and reads a few pages, not the table (4,300 buffer hits a merge in bench_e2e's at-rest
    step before)."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    _fleet(sink_cfg, "old-", 20000, at(7200), partitions=3, judged=True)
    live = [(f"lv-{i}", i % 3, 1, at(30)) for i in range(1000)]
    quiet = [("lq-0", 0, 1, at(80)), ("lq-1", 1, 1, at(80)), ("lq-2", 2, 1, at(80))]
    _write(sink_cfg, _partitioned(live + quiet))
    bump = (
        "UPDATE device_latest SET ts = ts + interval '1 ms', ingest_ts = now() WHERE device_id LIKE 'lv-%%'"
    )
    for _ in range(20):
        _admin(sink_cfg, bump)
    _vacuum(sink_cfg, "device_latest")
    pages = _admin(sink_cfg, "SELECT relpages FROM pg_class WHERE relname = 'device_latest'")[0][0]
    # Partitions 0 and 1 report; lq-2's partition (2) sent nothing, so it is not judged yet.
    fresh = _partitioned([(d, p, 2, at(1)) for d, p, _, _ in live[:60] if p != 2])
    plan = _offline_plan(sink_cfg, fresh)
    scans = list(_scans(plan, "device_latest"))
    read = sum(n["Shared Hit Blocks"] + n["Shared Read Blocks"] for n in scans)
    # Before V015: ~490 of them (the whole heap, 489 pages here), ~2,000 with 10,000 live devices.
    assert pages > 400 and read < 40, (read, pages, [(n["Node Type"], n.get("Index Name")) for n in scans])
    got = _write(sink_cfg, fresh)
    assert [(d, k) for d, k, _ in got if k == "offline"] == [("lq-0", "offline"), ("lq-1", "offline")]


def test_a_live_fleet_costs_the_silence_rule_a_few_pages(sink_cfg: FleetsimConfig) -> None:
    """20,000 devices all reporting (none judged, so all in the partial index): the rule's walk
    per partition stays a range lookup of the index, not a scan of the table. With the bound on
    ``ts`` computed from the batch, the planner took a third of each partition for a match and
    read the whole heap once per partition (7,700 buffer hits, 25 ms a merge, in bench_e2e's
    at-rest step after the soak). Reporting: their newest reading 25 s old, within the 30 s the
    index's bucket of ``ts`` (V017) leaves below ``offline_after_s`` (60 s)."""
    now = datetime.now(UTC)
    at = lambda s: now - timedelta(seconds=s)  # noqa: E731
    _fleet(sink_cfg, "lf-", 20000, at(25), partitions=4, judged=False)
    _write(sink_cfg, _partitioned([("lf-quiet", 1, 1, at(400))]))
    # Updates that leave the heap and the index larger than their live rows (a soak's, before
    # V017 made a reading's update HOT) are what priced the index out.
    for _ in range(8):
        _admin(sink_cfg, "UPDATE device_latest SET ts = ts + interval '1 ms' WHERE device_id LIKE 'lf-%%'")
    _vacuum(sink_cfg, "device_latest")
    pages = _admin(sink_cfg, "SELECT relpages FROM pg_class WHERE relname = 'device_latest'")[0][0]
    fresh = _partitioned([(f"lf-{i}", i % 4, 2, at(1)) for i in range(1, 41)])
    plan = _offline_plan(sink_cfg, fresh)
    scans = list(_scans(plan, "device_latest"))
    read = sum(n["Shared Hit Blocks"] + n["Shared Read Blocks"] for n in scans)
    kinds = [(n["Node Type"], n.get("Index Name")) for n in scans]
    assert pages > 200 and read < 40 and all(k != "Seq Scan" for k, _ in kinds), (read, pages, kinds)
    # Planned as the narrow range it is, whatever the heap's size: the estimate, not this small
    # table's luck, is what keeps the plan after a soak (1,658 rows of a partition's ~5,000 before).
    estimated = max(
        n["Plan Rows"]
        for n in scans
        if n["Node Type"] != "Index Scan" or n.get("Index Name") != "device_latest_pkey"
    )
    assert estimated < 200, (estimated, kinds)
    got = _write(sink_cfg, fresh)
    assert [(d, k) for d, k, _ in got if k == "offline"] == [("lf-quiet", "offline")]
