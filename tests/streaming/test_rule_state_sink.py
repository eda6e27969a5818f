"""The running state of the stuck/drift rules (``rule_state.py``) on real PostgreSQL: the same
alerts, to the message, as judging every reading from ``sensor_data``, over a randomised stream
with stuck runs, drifts, missing values, saturated humidity, out-of-order, duplicated and replayed
readings and a device silent for two days, with the running state turned off for a stretch of the
stream; and the state stays the newest readings of each device."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pg_support import admin as _admin

from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
DEVICES = 16
STEPS = 70
LOOKBACK = 12


@pytest.fixture
def sink_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    _admin(postgres, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    yield postgres


def _series(rng: random.Random, dev: int) -> list[tuple[float | None, ...]]:
    """(temperature, humidity, co2, pressure) per step: random walks broken by stuck runs, ramps
    (drift), missing values and fog (humidity at 100 %)."""
    t, h, c, p = 20.0, 50.0, 600.0, 1013.0
    out: list[tuple[float | None, ...]] = []
    mode, left = "walk", 0
    for _ in range(STEPS):
        if left == 0:
            mode = rng.choice(["walk", "walk", "stuck", "ramp", "fog", "gaps"])
            left = rng.randint(4, 14)
        left -= 1
        if mode == "walk":
            t += rng.choice([-0.3, -0.1, 0.1, 0.3])
            h = min(99.0, max(1.0, h + rng.choice([-1.0, 1.0])))
            c += rng.choice([-20.0, 20.0])
            p += rng.choice([-0.5, 0.5])
        elif mode == "ramp":
            t += 1.1
            p += rng.choice([1.6, 0.2])
        row: list[float | None] = [round(t, 2), h, c, p]
        if mode == "fog":
            row[1] = 100.0
        if mode == "gaps" and rng.random() < 0.5:
            row[rng.randrange(4)] = None
        out.append(tuple(row))
    return out


def _line(dev: str, i: int, ts: datetime, v: tuple[float | None, ...]) -> str:
    t, h, c, p = ("" if x is None else x for x in v)
    return f"{dev},{i},{ts.isoformat()},{t},{h},{c},{p},80,,,OK,,0,{i},{ts.isoformat()},{ts.isoformat()}\n"


def _batches(seed: int) -> list[list[str]]:
    """Batches of COPY lines: each device sends 0-3 of its next readings a batch; some readings
    are held back and sent two batches later (out of order), some are sent again (duplicates),
    some batches are replayed whole, and device 0 goes silent for two days mid-stream."""
    rng = random.Random(seed)
    series = {f"rs-{d:02d}": _series(rng, d) for d in range(DEVICES)}
    pos = dict.fromkeys(series, 0)
    held: list[tuple[int, str]] = []
    batches: list[list[str]] = []
    n = 0
    while any(pos[d] < STEPS for d in series):
        lines: list[str] = []
        for dev, values in series.items():
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                i = pos[dev]
                if i >= STEPS:
                    break
                pos[dev] += 1
                ts = (
                    T0
                    + timedelta(minutes=i)
                    + (timedelta(days=2) if dev == "rs-00" and i >= 45 else timedelta())
                )
                line = _line(dev, i, ts, values[i])
                if rng.random() < 0.05:
                    held.append((n + 2, line))
                    continue
                lines.append(line)
                if rng.random() < 0.03:
                    lines.append(line)
        lines += [line for due, line in held if due <= n]
        held = [(due, line) for due, line in held if due > n]
        if lines and rng.random() < 0.15:
            lines.append(rng.choice(lines))  # a reading of this batch twice
        batches.append(lines)
        if rng.random() < 0.05:
            batches.append(list(lines))  # the whole batch again: a replay after a crash
        n += 1
    batches.append([line for _, line in held])
    return batches


def _run(
    cfg: FleetsimConfig, batches: list[list[str]], path: Callable[[int], str]
) -> tuple[set[tuple[Any, ...]], dict[str, int]]:
    """Every batch through the raw sink, ``path(batch index)`` choosing how stuck/drift is judged:
    ``table`` (running state in ``device_rule_state``), ``memory`` (in the sink, as a loader
    keeps it) or ``off`` (from ``sensor_data``); the stuck/drift alerts stored, and how many
    device-batches each path's running state judged (``memory_only``: merges the memory judged
    whole, skipping the sensor_data path)."""
    sinks = {
        "table": PgSink(cfg, "raw", running_state=True),
        "memory": PgSink(cfg, "raw", running_state=True, state_in_memory=True),
        "off": PgSink(cfg, "raw", running_state=False),
    }
    days = (T0.date(), (T0 + timedelta(days=2)).date())
    judged = dict.fromkeys((*sinks, "memory_only"), 0)
    last = ""
    try:
        for b, lines in enumerate(batches):
            if lines:
                now = path(b)
                if now != last:
                    # Another writer wrote these devices meanwhile: as when a loader's partitions
                    # move, its memory is no longer the stored history.
                    sinks["memory"].forget_state()
                    last = now
                res = sinks[now].write_raw(RawBatch("".join(lines).encode(), b"", b"", days), b)
                judged[now] += res.state_devices
                judged["memory_only"] += not res.sensor_path
    finally:
        for sink in sinks.values():
            sink.close()
    rows = _admin(
        cfg,
        "SELECT device_id, kind, measurement, event_ts, seq, value, threshold, message FROM sensor_alerts "
        "WHERE kind IN ('stuck', 'drift', 'offline')",
    )
    return {tuple(r) for r in rows}, judged


def test_running_state_gives_the_same_alerts_as_the_sensor_data_path(sink_cfg: FleetsimConfig) -> None:
    batches = _batches(seed=18)
    baseline, judged_base = _run(sink_cfg, batches, lambda b: "off")
    assert sum(judged_base.values()) == 0
    assert _admin(sink_cfg, "SELECT count(*) FROM device_rule_state")[0][0] == 0

    # Emptying sensor_data empties the state derived from it (the migration's trigger).
    _admin(sink_cfg, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    # On, off for a stretch (the state of the devices it touches is dropped, not left stale), on.
    third = len(batches) // 3
    state, judged = _run(sink_cfg, batches, lambda b: "off" if third <= b < 2 * third else "table")

    kinds = {(a[1], a[2]) for a in baseline}
    assert {("stuck", "temperature"), ("stuck", "humidity"), ("drift", "temperature")} <= kinds, kinds
    assert len(baseline) >= 30
    # Most device-batches took the fast path, so the comparison is about it.
    readings = sum(len(b) for b in batches)
    assert judged["table"] > readings // 6, (judged, readings)
    assert state == baseline, (sorted(state - baseline)[:5], sorted(baseline - state)[:5])

    # The state is each device's newest LOOKBACK readings, oldest first.
    mismatched = _admin(
        sink_cfg,
        """
        SELECT st.device_id FROM device_rule_state st JOIN LATERAL (
          SELECT array_agg(ts ORDER BY ts, seq) AS ts, array_agg(temperature ORDER BY ts, seq) AS t,
                 (array_agg(seq ORDER BY ts DESC, seq DESC))[1] AS seq
          FROM (SELECT * FROM sensor_data s WHERE s.device_id = st.device_id
                ORDER BY ts DESC, seq DESC LIMIT %s) x
        ) h ON true
        WHERE st.ts IS DISTINCT FROM h.ts OR st.temperature IS DISTINCT FROM h.t OR st.seq <> h.seq
        """,
        (LOOKBACK,),
    )
    assert mismatched == []
    assert _admin(sink_cfg, "SELECT count(*) FROM device_rule_state")[0][0] == DEVICES


def test_running_state_in_memory_gives_the_same_alerts(sink_cfg: FleetsimConfig) -> None:
    """The loader's in-memory running state (``rule_memory``): the same stuck, drift and gap
    (offline) alerts, to the message, as the sensor_data path, over the same stream, with the
    memory dropped twice on the way (the loader's partitions moved, or a merge failed) and a
    stretch written by another writer; the table's state is not left behind for another kind of
    writer to trust."""
    batches = _batches(seed=18)
    baseline, _ = _run(sink_cfg, batches, lambda b: "off")
    _admin(sink_cfg, "TRUNCATE incident_events, incidents, sensor_data, device_latest, sensor_alerts")
    n = len(batches)
    memory, judged = _run(
        sink_cfg,
        batches,
        lambda b: "table" if n // 3 <= b < n // 2 else "off" if b == 2 * n // 3 else "memory",
    )
    readings = sum(len(b) for b in batches)
    assert judged["memory"] > readings // 6, (judged, readings)
    # Some merges had every device judged in memory and skipped the sensor_data path.
    assert judged["memory_only"] >= 3, judged
    # Held-back readings leave gaps in event time: the gap rule's predecessor comes from memory.
    assert sum(a[1] == "offline" for a in baseline) >= 5, baseline
    assert memory == baseline, (sorted(memory - baseline)[:5], sorted(baseline - memory)[:5])
    # The devices the memory sink wrote last have no table state left to go stale.
    assert _admin(sink_cfg, "SELECT count(*) FROM device_rule_state")[0][0] == 0
