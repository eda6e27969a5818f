"""Edge simulator in simulated time: physics, determinism, every fault mode, battery, buffering."""

from __future__ import annotations

import itertools
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetsim.edge.engine import Simulation
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.publisher import MemoryPublisher
from fleetsim.edge.runner import Runner
from fleetsim.kernel.contract import ControlAction, ControlCommand, FaultKind, Reading, Status, decode
from fleetsim.kernel.fleetfile import COLUMNS, DeviceSpec, haversine_km, load_fleet, scale_fleet, shard_fleet

START = datetime(2026, 7, 15, 0, 0, tzinfo=UTC)  # a Wednesday in summer
ROOT = Path(__file__).resolve().parents[2]


def office(i: int = 1, **kw) -> DeviceSpec:
    base = dict(device_id=f"off-{i}", type="fixed", site="hq", indoor=True, lat=45.76, lon=4.85)
    base.update(occupancy="office", interval_s=60.0)
    base.update(kw)
    return DeviceSpec(**base)


def outdoor(i: int = 1, **kw) -> DeviceSpec:
    base = dict(device_id=f"out-{i}", type="fixed", site="park", indoor=False, lat=45.777, lon=4.855)
    base.update(interval_s=60.0)
    base.update(kw)
    return DeviceSpec(**base)


def run(specs, seconds, *, seed=42, before=None, buffer_size=1000, start=START):
    pub, ledger = MemoryPublisher(), Ledger(None)
    sim = Simulation(specs, pub, seed=seed, start=start, ledger=ledger, buffer_size=buffer_size)
    if before:
        before(sim)
    Runner(sim, speed=None, duration_s=seconds).run()
    sim.finish()
    return sim, pub, ledger.records


def readings(pub: MemoryPublisher, device_id: str | None = None) -> list[Reading]:
    out = []
    for m in pub.telemetry():
        r = decode(m.payload, topic_device_id=m.topic.split("/")[1], now=datetime(2030, 1, 1, tzinfo=UTC))
        if device_id is None or r.device_id == device_id:
            out.append(r)
    return out


def inject_at(t, device_id, kind, duration=None, **params):
    """A ``before`` hook scheduling an injection at simulated time ``t``."""

    def hook(sim: Simulation) -> None:
        def proc():
            yield sim.env.timeout(t)
            cmd = ControlCommand(ControlAction.INJECT, kind, duration, None, params)
            assert sim.apply(device_id, cmd) == 1

        sim.env.process(proc())

    return hook


# ------------------------------------------------------------------------------- fleet file
def test_default_fleet_loads_and_is_one_city():
    fleet = load_fleet(ROOT / "devices.csv")
    assert 50 <= len(fleet) <= 80
    assert {d.type for d in fleet} == {"fixed", "mobile"}
    assert any(d.indoor and d.occupancy == "meeting" for d in fleet)
    lyon = (45.7640, 4.8357)
    assert all(haversine_km(*lyon, d.lat, d.lon) < 15 for d in fleet)


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("bad id!,fixed,s,true,45,4,,60,,,,,,,", "device_id"),
        ("d1,flying,s,true,45,4,,60,,,,,,,", "type"),
        ("d1,fixed,s,true,95,4,,60,,,,,,,", "lat"),
        ("d1,fixed,s,true,45,4,,abc,,,,,,,", "interval_s"),
        ("d1,fixed,s,maybe,45,4,,60,,,,,,,", "indoor"),
        ("d1,fixed,s,true,45,4,,60,,,office,,,,gremlins", "fault_profile"),
        ("d1,mobile,s,false,45,4,,60,,,,,12,45:4,", "route"),
        ("d1,mobile,s,false,45,4,,60,,,,,,45:4;45.1:4.1,", "speed_kmh"),
        ("d1,fixed,s,true,45,4,,60,,,sauna,,,,", "occupancy"),
    ],
)
def test_fleet_errors_name_row_and_column(tmp_path, line, column):
    from fleetsim.kernel.errors import FleetFileError

    header = ",".join(COLUMNS)
    ok = "d0,fixed,s,true,45,4,,60,,,,,,,"
    path = tmp_path / "devices.csv"
    path.write_text(f"{header}\n{ok}\n{line}\n")
    with pytest.raises(FleetFileError) as exc:
        load_fleet(path)
    assert "row 3" in str(exc.value)
    assert f"column {column!r}" in str(exc.value)


def test_duplicate_ids_and_unknown_columns_are_refused(tmp_path):
    from fleetsim.kernel.errors import FleetFileError

    path = tmp_path / "devices.csv"
    path.write_text("device_id,type,site,lat,lon,interval_s\nd1,fixed,s,45,4,60\nd1,fixed,s,45,4,60\n")
    with pytest.raises(FleetFileError, match=r"row 3, column 'device_id': duplicate of row 2"):
        load_fleet(path)
    path.write_text("device_id,type,site,lat,lon,interval_s,colour\n")
    with pytest.raises(FleetFileError, match="unknown column"):
        load_fleet(path)


def test_scale_and_shard_partition_the_fleet():
    fleet = load_fleet(ROOT / "devices.csv")
    big = scale_fleet(fleet, 3, seed=1)
    assert len(big) == 3 * len(fleet) and len({d.device_id for d in big}) == len(big)
    clone = next(d for d in big if d.device_id == f"{fleet[0].device_id}-c2")
    assert 0 < haversine_km(fleet[0].lat, fleet[0].lon, clone.lat, clone.lon) < 0.4
    shards = [shard_fleet(big, i, 4) for i in range(4)]
    assert sorted(d.device_id for s in shards for d in s) == sorted(d.device_id for d in big)
    assert all(s for s in shards)


# ---------------------------------------------------------------------------------- physics
def test_outdoor_diurnal_cycle_and_humidity_anticorrelated():
    _, pub, _ = run([outdoor()], 2 * 86400)
    rs = readings(pub)
    temps = [r.temperature for r in rs]
    hums = [r.humidity for r in rs]
    assert statistics.correlation(temps, hums) < -0.6
    by_hour = {}
    for r in rs:
        by_hour.setdefault((r.ts + timedelta(hours=2)).hour, []).append(r.temperature)  # CEST
    assert statistics.mean(by_hour[16]) > statistics.mean(by_hour[5]) + 4
    assert all(390 < r.co2 < 500 for r in rs)


def test_indoor_co2_follows_occupancy():
    _, pub, _ = run([office(), office(2, occupancy="meeting")], 86400)
    office_rs = readings(pub, "off-1")
    local = {r.ts: (r.ts + timedelta(hours=2)).hour for r in office_rs}
    night = [r.co2 for r in office_rs if local[r.ts] in (2, 3, 4)]
    work = [r.co2 for r in office_rs if local[r.ts] in (10, 11, 15, 16)]
    assert 400 < statistics.mean(night) < 450
    assert statistics.mean(work) > statistics.mean(night) + 350
    meeting_peak = max(r.co2 for r in readings(pub, "off-2"))
    assert meeting_peak > 1500  # a full meeting room crosses the alert line


def test_pressure_falls_with_altitude():
    _, pub, _ = run([outdoor(1, altitude_m=170), outdoor(2, altitude_m=290)], 3600)
    low = statistics.mean(r.pressure for r in readings(pub, "out-1"))
    high = statistics.mean(r.pressure for r in readings(pub, "out-2"))
    assert 12 < low - high < 16  # ~1 hPa per 8.5 m near the ground


def test_mobile_unit_moves_along_its_route_at_plausible_speed():
    route = ((45.7605, 4.853), (45.749, 4.827), (45.733, 4.818))
    spec = outdoor(1, type="mobile", route=route, speed_kmh=18.0, interval_s=30.0)
    _, pub, _ = run([spec], 3600)
    rs = readings(pub)
    steps = [haversine_km(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(rs)]
    speeds = [s / (30 / 3600) for s in steps]
    assert statistics.median(speeds) == pytest.approx(18.0, rel=0.1)
    lats = [r.lat for r in rs]
    assert min(lats) < 45.74 and max(lats) > 45.755


def test_same_seed_gives_byte_identical_stream_and_other_seed_does_not():
    fleet = load_fleet(ROOT / "devices.csv")
    streams = []
    for seed in (7, 7, 8):
        _, pub, _ = run(fleet, 6 * 3600, seed=seed)
        streams.append([(m.topic, m.payload, m.retain) for m in pub.messages])
    assert len(streams[0]) > 20_000
    assert streams[0] == streams[1]
    assert streams[0] != streams[2]


# ------------------------------------------------------------------------------------- faults
def test_stuck_value_is_constant_then_recovers():
    _, pub, ledger = run([outdoor()], 7200, before=inject_at(1800, "out-1", FaultKind.STUCK, 1800))
    rs = readings(pub)
    stuck = [r for r in rs if r.fault == "stuck"]
    assert len(stuck) >= 29
    assert len({(r.temperature, r.humidity, r.co2, r.pressure) for r in stuck}) == 1
    after = [r.temperature for r in rs if r.ts > stuck[-1].ts]
    assert len(set(after)) > 10
    (rec,) = [x for x in ledger if x["record"] == "fault"]
    assert (rec["fault"], rec["device"], rec["truncated"]) == ("stuck", "out-1", False)


def test_drift_is_monotone_against_the_clean_signal():
    _, clean, _ = run([outdoor()], 7200)
    _, drift, _ = run([outdoor()], 7200, before=inject_at(600, "out-1", FaultKind.DRIFT, 3600, rate=0.2))
    base = {r.seq: r.temperature for r in readings(clean)}
    offsets = [r.temperature - base[r.seq] for r in readings(drift) if r.fault == "drift"]
    assert len(offsets) >= 59
    assert all(b >= a - 0.011 for a, b in itertools.pairwise(offsets))  # rounding only
    assert offsets[-1] == pytest.approx(0.2 * 60, abs=0.3)


def test_spike_and_noise_burst_disturb_only_while_active():
    _, clean, _ = run([outdoor()], 7200)
    base = {r.seq: r for r in readings(clean)}
    _, spiky, _ = run([outdoor()], 7200, before=inject_at(600, "out-1", FaultKind.SPIKE, 3600, prob=0.5))
    jumps = [abs(r.temperature - base[r.seq].temperature) for r in readings(spiky) if r.fault == "spike"]
    assert sum(j > 20 for j in jumps) >= 15 and sum(j < 0.01 for j in jumps) >= 15
    _, noisy, _ = run([outdoor()], 7200, before=inject_at(600, "out-1", FaultKind.NOISE, 3600, sigma=3.0))
    diffs = [r.temperature - base[r.seq].temperature for r in readings(noisy) if r.fault == "noise"]
    assert 2.0 < statistics.stdev(diffs) < 4.5
    untouched = [r for r in readings(noisy) if r.fault is None]
    assert all(r.temperature == base[r.seq].temperature for r in untouched)


def test_dropout_consumes_seq_and_records_the_gap():
    _, pub, ledger = run([outdoor()], 3600, before=inject_at(600, "out-1", FaultKind.DROPOUT, 600))
    seqs = [r.seq for r in readings(pub)]
    missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
    assert 9 <= len(missing) <= 11
    sent = next(x for x in ledger if x["record"] == "sent")
    assert sent["dropped"]["dropout"] == [[missing[0], missing[-1]]]
    assert sum(b - a + 1 for a, b in sent["published"]) == len(seqs)


def test_sensor_failure_sends_nulls_with_failure_status():
    _, pub, _ = run([outdoor()], 3600, before=inject_at(600, "out-1", FaultKind.SENSOR_FAILURE, 600))
    failed = [r for r in readings(pub) if r.fault == "sensor_failure"]
    assert len(failed) >= 9
    assert all(r.status is Status.FAILURE and r.temperature is None and r.co2 is None for r in failed)
    assert all(r.lat is not None for r in failed)


def test_crash_goes_offline_and_reboots_with_seq_continuing():
    _, pub, _ = run([outdoor()], 3600, before=inject_at(900, "out-1", FaultKind.CRASH, 600))
    rs = readings(pub)
    seqs = [r.seq for r in rs]
    assert seqs == list(range(len(seqs)))  # no reading made while down: no gap
    gaps = [(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(rs)]
    assert max(gaps) >= 600
    statuses = [m.payload for m in pub.messages if m.topic == "sensors/out-1/status"]
    assert statuses[:3] == [b"online", b"offline", b"online"]


def test_network_outage_buffers_then_flushes_in_seq_order_with_original_timestamps():
    _, pub, ledger = run([outdoor()], 3600, before=inject_at(900, "out-1", FaultKind.NETWORK_OUTAGE, 600))
    rs = readings(pub)
    assert [r.seq for r in rs] == list(range(len(rs)))  # nothing lost, published in seq order
    buffered = [r for r in rs if r.fault == "network_outage"]
    assert 9 <= len(buffered) <= 11
    ts = [r.ts for r in rs]
    assert ts == sorted(ts)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ts)]
    assert max(gaps) < 61  # original event times, not the flush time
    # ...but they arrived late: all after the last pre-outage message, in one burst at reconnection.
    tel = pub.telemetry()
    first_late = next(i for i, m in enumerate(tel) if b"network_outage" in m.payload)
    assert all(b"network_outage" in m.payload for m in tel[first_late : first_late + len(buffered)])
    rec = next(x for x in ledger if x["record"] == "fault")
    assert rec["counters"] == {"buffered": len(buffered)}


def test_buffer_overflow_drops_oldest_and_counts_exactly():
    _, pub, ledger = run(
        [outdoor()], 7200, buffer_size=5, before=inject_at(600, "out-1", FaultKind.NETWORK_OUTAGE, 1800)
    )
    rs = readings(pub)
    seqs = [r.seq for r in rs]
    missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
    during = [r for r in rs if r.fault == "network_outage"]
    assert len(during) == 5  # the newest five survived
    assert missing and max(missing) < min(r.seq for r in during)  # the oldest went
    rec = next(x for x in ledger if x["record"] == "fault")
    assert rec["counters"]["dropped_overflow"] == len(missing)
    assert rec["counters"]["buffered"] == len(missing) + 5
    sent = next(x for x in ledger if x["record"] == "sent")
    assert sum(b - a + 1 for a, b in sent["dropped"]["overflow"]) == len(missing)
    end = next(x for x in ledger if x.get("phase") == "end")
    assert end["dropped_overflow"] == len(missing)


def test_clock_skew_and_duplicates():
    _, clean, _ = run([outdoor()], 3600)
    base = {r.seq: r.ts for r in readings(clean)}
    _, skewed, _ = run(
        [outdoor()], 3600, before=inject_at(600, "out-1", FaultKind.CLOCK_SKEW, 600, offset_s=300)
    )
    shifts = {(r.ts - base[r.seq]).total_seconds() for r in readings(skewed) if r.fault == "clock_skew"}
    assert shifts == {300.0}
    _, dup, ledger = run([outdoor()], 3600, before=inject_at(600, "out-1", FaultKind.DUPLICATE, 600))
    tel = [m.payload for m in dup.telemetry()]
    doubled = [p for p in set(tel) if tel.count(p) == 2]
    assert 9 <= len(doubled) <= 11 and all(b'"duplicate"' in p for p in doubled)
    assert next(x for x in ledger if x["record"] == "sent")["duplicates"] == len(doubled)


def test_heatwave_and_battery_drain_factor():
    _, clean, _ = run([outdoor(battery_mah=100)], 3600)
    base = {r.seq: r for r in readings(clean)}
    _, hot, _ = run(
        [outdoor(battery_mah=100)], 3600, before=inject_at(0, "out-1", FaultKind.HEATWAVE, None, delta=8)
    )
    rs = readings(hot)
    assert all(r.temperature - base[r.seq].temperature == pytest.approx(8, abs=0.02) for r in rs)
    _, drained, _ = run(
        [outdoor(battery_mah=100)],
        3600,
        before=inject_at(0, "out-1", FaultKind.BATTERY_DRAIN, None, factor=4),
    )
    used_clean = 100 - readings(clean)[-1].battery
    used_fast = 100 - readings(drained)[-1].battery
    assert used_fast == pytest.approx(4 * used_clean, rel=0.05)


def test_battery_reaches_zero_then_device_is_silent_and_offline():
    _, pub, ledger = run([outdoor(battery_mah=2.0, interval_s=30)], 86400)
    rs = readings(pub)
    assert rs and rs[-1].ts < START + timedelta(hours=5)
    assert rs[-1].battery < 2 and rs[-1].status is Status.WARNING
    assert [r.battery for r in rs] == sorted((r.battery for r in rs), reverse=True)
    statuses = [m.payload for m in pub.messages if m.topic.endswith("/status")]
    assert statuses[-1] == b"offline"
    events = [x["event"] for x in ledger if x["record"] == "event"]
    assert events == ["battery_low", "battery_depleted"]


def test_battery_is_drained_faster_in_the_cold():
    winter = datetime(2026, 1, 15, tzinfo=UTC)
    _, cold, _ = run([outdoor(battery_mah=100, temp_offset_c=-12)], 86400, start=winter)
    _, mild, _ = run([outdoor(battery_mah=100, temp_offset_c=0)], 86400)
    assert 100 - readings(cold)[-1].battery > 1.2 * (100 - readings(mild)[-1].battery)


def test_battery_replacement_brings_the_device_back():
    spec = outdoor(battery_mah=1.0, interval_s=30, replace_after_s=3600)
    _, pub, ledger = run([spec], 6 * 3600)
    events = [x["event"] for x in ledger if x["record"] == "event"]
    assert events[:3] == ["battery_low", "battery_depleted", "battery_replaced"]
    rs = readings(pub)
    assert [r.seq for r in rs] == list(range(len(rs)))
    assert max(r.battery for r in rs[len(rs) // 2 :]) > 90


def test_broker_link_loss_buffers_and_runner_flushes_on_reconnect():
    pub, ledger = MemoryPublisher(), Ledger(None)
    sim = Simulation([outdoor()], pub, seed=1, start=START, ledger=ledger)
    Runner(sim, speed=None, duration_s=600, generation=lambda: pub.generation).run()
    pub.set_up(False)
    Runner(sim, speed=None, duration_s=1200, generation=lambda: pub.generation).run()
    assert sim.stats.buffered >= 9
    pub.set_up(True)
    Runner(sim, speed=None, duration_s=1260, generation=lambda: pub.generation).run()
    rs = readings(pub)
    assert [r.seq for r in rs] == list(range(len(rs))) and sim.stats.buffered == 0


def test_control_selectors_kill_revive_and_interval():
    specs = [outdoor(1), outdoor(2, site="other", lat=45.70, lon=4.90), office(3)]

    def hook(sim: Simulation) -> None:
        def proc():
            yield sim.env.timeout(600)
            heat = ControlCommand(
                ControlAction.INJECT, FaultKind.HEATWAVE, 600.0, None, {}, None, (45.777, 4.855, 1.0)
            )
            assert sim.apply("all", heat) == 1  # only out-1 is within 1 km
            assert sim.apply("all", ControlCommand(ControlAction.KILL, site="other")) == 1
            assert sim.apply("off-3", ControlCommand(ControlAction.SET_INTERVAL, interval_s=10.0)) == 1
            bad = ControlCommand(ControlAction.INJECT, FaultKind.DRIFT, params={"bogus": 1.0})
            assert sim.apply("all", bad) == 0 and sim.control_rejected == 1
            yield sim.env.timeout(1200)
            assert sim.apply("out-2", ControlCommand(ControlAction.REVIVE)) == 1

        sim.env.process(proc())

    _, pub, ledger = run(specs, 3600, before=hook)
    assert {r.device_id for r in readings(pub) if r.fault == "heatwave"} == {"out-1"}
    out2 = readings(pub, "out-2")
    gaps = [(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(out2)]
    assert max(gaps) >= 1200
    off3 = readings(pub, "off-3")
    assert sum(r.ts > START + timedelta(seconds=700) for r in off3) > 250
    assert [x["event"] for x in ledger if x["record"] == "event"] == ["killed", "revived"]


def test_scheduled_profile_faults_are_in_the_ledger_and_the_readings():
    spec = outdoor(fault_profile="stuck@600+300|heatwave@1200+300?delta=5")
    _, pub, ledger = run([spec], 3600)
    faults = [(x["fault"], x["start"], x["params"]) for x in ledger if x["record"] == "fault"]
    assert faults == [
        ("stuck", "2026-07-15T00:10:00.000Z", {}),
        ("heatwave", "2026-07-15T00:20:00.000Z", {"delta": 5.0}),
    ]
    assert {r.fault for r in readings(pub)} == {None, "stuck", "heatwave"}


def test_seq_base_keeps_seqs_increasing_across_restarts():
    first = Simulation(
        [outdoor()], MemoryPublisher(), seed=1, start=START, ledger=Ledger(None), seq_base=1000
    )
    Runner(first, speed=None, duration_s=600).run()
    assert first.devices["out-1"].seq == 1010


def test_advance_leaves_no_event_due_now():
    # simpy 4.1 re-queues run(until)'s stop event at `now`; left there, peek() == now and a paced
    # runner never sleeps.
    sim = Simulation([office(1), office(2)], MemoryPublisher(), seed=1, start=START, ledger=Ledger(None))
    for until in (0.5, 1.25, 61.0, 61.5):
        sim.advance(until)
        assert sim.env.now == until
        assert sim.env.peek() > sim.env.now


def test_paced_runner_sleeps_between_events():
    sim = Simulation([office(1)], MemoryPublisher(), seed=1, start=START, ledger=Ledger(None))
    calls: list[float] = []

    def io(timeout_s: float) -> None:  # what the MQTT pump does: wait on its socket
        calls.append(timeout_s)
        time.sleep(timeout_s)

    # 30 simulated s at 60x = 0.5 wall s with one reading: a sleeping loop wakes a few dozen
    # times (waits are capped at 50 ms); the spinning one called io ~10,000 times.
    Runner(sim, speed=60.0, duration_s=30.0, io=io).run()
    assert sim.env.now == 30.0
    assert len(calls) < 200, f"{len(calls)} io calls in 0.5 s: the paced loop spins"
    assert sum(calls) > 0.3


def test_outdoor_minimum_near_sunrise_and_maximum_mid_afternoon():
    from fleetsim.edge.physics import Climate, sunrise_solar_hour

    lat, lon = 45.76, 4.85
    for start, days in ((datetime(2026, 11, 1, tzinfo=UTC), 14), (datetime(2026, 6, 10, tzinfo=UTC), 14)):
        climate = Climate(7, start, lon, lat=lat)
        profile: dict[int, list[float]] = {}
        for minute in range(0, days * 1440, 10):
            t = minute * 60.0
            solar = ((start.timestamp() + t) / 3600.0 + lon / 15.0) % 24.0
            profile.setdefault(int(solar * 4), []).append(climate.at(t).temp_c)  # quarter hours
        mean = {q: statistics.mean(v) for q, v in profile.items()}
        coldest, warmest = min(mean, key=mean.get) / 4, max(mean, key=mean.get) / 4
        doy = start.timetuple().tm_yday + days / 2
        sunrise = sunrise_solar_hour(lat, doy)
        assert abs(coldest - sunrise) <= 0.75, (start, coldest, sunrise)
        assert 13.5 <= warmest <= 15.5, (start, warmest)
    # Lyon: sunrise ~7 h solar in November, ~4.3 h in June; the old cosine put both minima at 3 h.
    assert 6.5 < sunrise_solar_hour(lat, 310) < 7.5 and 4.0 < sunrise_solar_hour(lat, 161) < 4.6


def test_sent_snapshots_go_out_in_slices_and_cover_every_changed_device():
    # The runner writes a slice per step (a whole-fleet snapshot stalled 100k devices ~0.3 s).
    ledger = Ledger(None)
    sim = Simulation([office(i) for i in range(1, 8)], MemoryPublisher(), seed=1, start=START, ledger=ledger)
    sim.advance(600.0)
    assert ledger.records is not None
    ledger.records.clear()
    assert [sim.snapshot_some(3), sim.snapshot_some(3)] == [3, 3]
    assert sim.snapshot_some(3) == 1  # the 7th, then the pass wraps onto devices already written
    written = [r["device"] for r in ledger.records if r["record"] == "sent"]
    assert sorted(written) == sorted(sim.devices) and len(set(written)) == 7
    assert sim.snapshot_some(50) == 0  # nothing changed since
    sim.advance(1200.0)
    assert sim.snapshot_some(50) == 7  # a count beyond the fleet is one pass, never a duplicate


class _TimedPublisher(MemoryPublisher):
    """Notes the wall clock at each batch it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[tuple[float, bytes]] = []

    def publish_many(self, items: list[tuple[str, str, bytes]]) -> int:
        now = time.time()
        self.sent_at.extend((now, payload) for _, _, payload in items)
        return super().publish_many(items)


def test_a_run_started_now_stamps_readings_when_they_are_sent_whatever_the_set_up_took():
    # The start instant is taken before the fleet is built and the broker connected; here that
    # set-up "took" 0.8 s. Anchored, readings are sent when their timestamp says; unanchored,
    # every reading went out 0.8 s after its own timestamp (0.3-0.5 s with 10,000 devices).
    setup_s = 0.8
    start = datetime.now(UTC) - timedelta(seconds=setup_s)
    pub = _TimedPublisher()
    sim = Simulation(
        [office(i, interval_s=0.1) for i in range(5)], pub, seed=1, start=start, ledger=Ledger(None)
    )
    Runner(sim, speed=1.0, duration_s=setup_s + 0.6, anchor=start.timestamp()).run()
    waits = []
    for sent, payload in pub.sent_at:
        ts = decode(payload, topic_device_id=None, now=datetime(2030, 1, 1, tzinfo=UTC)).ts
        if ts.timestamp() > start.timestamp() + setup_s + 0.05:  # due after the run began
            waits.append(sent - ts.timestamp())
    assert len(waits) >= 10
    waits.sort()
    assert waits[len(waits) // 2] < 0.1, f"median send - ts {waits[len(waits) // 2]:.3f} s"
    # ... and nothing is sent before its timestamp.
    assert waits[0] > -0.01
