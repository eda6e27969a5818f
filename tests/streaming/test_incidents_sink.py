"""Incident grouping in the raw sink on real PostgreSQL: grouping, hysteresis, minimum duration,
auto-close after the quiet time, and replays that add nothing (no Spark: the batches are the COPY
text the raw flow would hand the sink)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pg_support import admin

from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
QUIET_S = 600.0


@pytest.fixture
def sink_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    cfg = postgres.with_overrides({"alerts.incident_quiet_s": QUIET_S})
    admin(
        cfg,
        "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts, pipeline_metrics",
    )
    for dev in ("d1", "d2", "d3"):
        admin(
            cfg,
            "INSERT INTO devices (device_id, site, indoor) VALUES (%s, 'lab', true) "
            "ON CONFLICT (device_id) DO UPDATE SET site = 'lab', indoor = true",
            (dev,),
        )
    yield cfg


def _iso(t: datetime) -> str:
    return t.isoformat()


def batch(rows: list[tuple[str, int, float]], *, clear: float = 80.0, min_d: float = 0.0) -> RawBatch:
    """Readings ``(device, minute, humidity)`` every minute from T0; humidity > 85 is an alert (as the
    raw flow would flag it with the indoor rule: threshold 85, clear bound ``clear``)."""
    readings, alerts = [], []
    for dev, minute, hum in rows:
        ts = _iso(T0 + timedelta(minutes=minute))
        readings.append(f"{dev},{minute},{ts},,{hum},,,,,,OK,,0,{minute},{ts},{ts}\n")
        if hum > 85.0:
            msg = f"humidity {hum} > 85"
            alerts.append(
                f"{dev},extreme_high,humidity,warning,{hum},85.0,{ts},{minute},,{msg},{clear},{min_d}\n"
            )
    days: tuple[date, ...] = ((T0 + timedelta(minutes=max(m for _, m, _ in rows))).date(), T0.date())
    return RawBatch("".join(readings).encode(), "".join(alerts).encode(), b"", days)


def incidents(cfg: FleetsimConfig, device: str) -> list[dict[str, Any]]:
    cols = ("incident_id", "state", "opened_at", "last_seen", "n_alerts", "peak_value", "resolved_by", "site")
    rows = admin(
        cfg,
        f"SELECT {', '.join(cols)} FROM incidents "  # noqa: S608 - fixed column names
        "WHERE device_id = %s AND kind = 'extreme_high' ORDER BY incident_id",
        (device,),
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def events(cfg: FleetsimConfig, device: str) -> list[tuple[str, str]]:
    rows = admin(
        cfg,
        "SELECT e.action, e.actor FROM incident_events e JOIN incidents i USING (incident_id) "
        "WHERE i.device_id = %s AND i.kind = 'extreme_high' ORDER BY e.event_id",
        (device,),
    )
    return [(a, b) for a, b in rows]


def test_grouping_hysteresis_auto_close_and_replays(sink_cfg: FleetsimConfig) -> None:
    sink = PgSink(sink_cfg, "raw")
    try:
        # 5 humid minutes: one incident, not five.
        b1 = batch([("d1", m, 90.0 + m) for m in range(5)])
        r1 = sink.write_raw(b1, 1)
        assert r1.incident_events == 1
        (inc,) = incidents(sink_cfg, "d1")
        assert inc["state"] == "open" and inc["n_alerts"] == 5 and inc["peak_value"] == 94.0
        assert inc["opened_at"] == T0 and inc["last_seen"] == T0 + timedelta(minutes=4)
        assert inc["site"] == "lab"
        # A replayed micro-batch (crash after the PostgreSQL commit) adds nothing.
        assert sink.write_raw(b1, 1).incident_events == 0
        assert incidents(sink_cfg, "d1") == [inc]
        assert events(sink_cfg, "d1") == [("opened", "system")]

        # Hysteresis: 83 % is below the alarm (85) but above the clear bound (80): still going,
        # 15 minutes later it has not closed although no alert came for longer than the quiet time.
        sink.write_raw(batch([("d1", m, 83.0) for m in range(5, 20)]), 2)
        (inc,) = incidents(sink_cfg, "d1")
        assert inc["state"] == "open" and inc["n_alerts"] == 5
        assert inc["last_seen"] == T0 + timedelta(minutes=19)

        # Below the clear bound for the quiet time (10 min of the device's event time): closed by system.
        b3 = batch([("d1", m, 60.0) for m in range(20, 31)])
        assert sink.write_raw(b3, 3).incident_events == 1
        (inc,) = incidents(sink_cfg, "d1")
        assert inc["state"] == "resolved" and inc["resolved_by"] == "system"
        assert sink.write_raw(b3, 3).incident_events == 0
        assert events(sink_cfg, "d1") == [("opened", "system"), ("resolved", "system")]

        # The condition again: a new incident; raw alert rows all kept.
        sink.write_raw(batch([("d1", 31, 88.0)]), 4)
        states = [i["state"] for i in incidents(sink_cfg, "d1")]
        assert states == ["resolved", "open"]
        n_raw = admin(
            sink_cfg, "SELECT count(*) FROM sensor_alerts WHERE device_id = 'd1' AND kind = 'extreme_high'"
        )
        assert n_raw == [(6,)]
    finally:
        sink.close()


def test_minimum_duration_pending_expired_and_promoted(sink_cfg: FleetsimConfig) -> None:
    sink = PgSink(sink_cfg, "raw")
    try:
        # d2: 2 humid minutes (< 5 min minimum) then dry for the quiet time: never opened, no event.
        # d3: humid for 3 minutes in this batch: pending.
        rows = [("d2", m, 90.0 if m < 2 else 50.0) for m in range(14)]
        rows += [("d3", m, 90.0) for m in range(3)]
        sink.write_raw(batch(rows, min_d=300.0), 10)
        assert [i["state"] for i in incidents(sink_cfg, "d2")] == ["expired"]
        assert events(sink_cfg, "d2") == []
        assert [i["state"] for i in incidents(sink_cfg, "d3")] == ["pending"]
        # d3 still humid at minute 5: the condition lasted 5 min, the incident opens (one event).
        sink.write_raw(batch([("d3", m, 91.0) for m in range(3, 6)], min_d=300.0), 11)
        (inc,) = incidents(sink_cfg, "d3")
        assert inc["state"] == "open" and inc["n_alerts"] == 6 and inc["opened_at"] == T0
        assert events(sink_cfg, "d3") == [("opened", "system")]
    finally:
        sink.close()


def test_registry_seed_gives_devices_their_class(postgres: FleetsimConfig) -> None:
    # The per-class rules need devices.indoor: seeded from the fleet file's `indoor` column.
    from fleetsim.registry.seed import seed_from_csv

    seed_from_csv(postgres)
    rows = dict(
        admin(
            postgres,
            "SELECT device_id, indoor FROM devices WHERE device_id IN ('lyon-pd-01', 'lyon-out-tete-dor-1')",
        )
    )
    assert rows == {"lyon-pd-01": True, "lyon-out-tete-dor-1": False}
