"""Command line parsing of ``fleetsim sim`` / ``fleetsim fault`` and the replay file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetsim.cli import build_parser
from fleetsim.edge.cli import build_command, sim_overrides
from fleetsim.edge.engine import Simulation
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.publisher import MemoryPublisher
from fleetsim.edge.replay import load_replay, replay_process
from fleetsim.edge.runner import Runner
from fleetsim.kernel.contract import ControlAction, FaultKind, decode
from fleetsim.kernel.errors import FleetFileError, SimulationError
from fleetsim.kernel.timespec import parse_duration, parse_speed


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_sim_flags_become_config_overrides():
    args = parse("sim", "--speed", "max", "--duration", "10m", "--seed", "7", "--shard", "1/4", "--qos", "0")
    assert sim_overrides(args) == {
        "simulation.speed": "max",
        "simulation.duration": "10m",
        "simulation.seed": 7,
        "simulation.shard": "1/4",
        "mqtt.qos": 0,
    }


def test_fault_inject_targets():
    target, cmd = build_command(
        parse("fault", "inject", "lyon-pd-01", "drift", "--for", "2m", "--param", "rate=0.5")
    )
    assert (target, cmd.action, cmd.fault, cmd.duration_s, cmd.params) == (
        "lyon-pd-01",
        ControlAction.INJECT,
        FaultKind.DRIFT,
        120.0,
        {"rate": 0.5},
    )
    target, cmd = build_command(parse("fault", "inject", "--within", "45.76,4.85,2", "network_outage"))
    assert (target, cmd.within, cmd.fault) == ("all", (45.76, 4.85, 2.0), FaultKind.NETWORK_OUTAGE)
    target, cmd = build_command(parse("fault", "clear", "--site", "gerland"))
    assert (target, cmd.action, cmd.fault, cmd.site) == ("all", ControlAction.CLEAR, None, "gerland")
    target, cmd = build_command(parse("fault", "interval", "d1", "30s"))
    assert (target, cmd.action, cmd.interval_s) == ("d1", ControlAction.SET_INTERVAL, 30.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("fault", "inject", "d1", "gremlins"), "allowed: stuck"),
        (("fault", "inject", "d1", "drift", "--param", "speed=3"), "allowed: rate"),
        (("fault", "inject", "d1", "drift", "--for", "soon"), "duration"),
        (("fault", "inject", "drift"), "needs <device|all> <kind>"),
        (("fault", "inject", "--within", "45,4", "stuck"), "LAT,LON,KM"),
    ],
)
def test_fault_command_errors_name_the_problem(argv, message):
    with pytest.raises(SimulationError, match=message):
        build_command(parse(*argv))


def test_durations_and_speeds():
    assert [parse_duration(x) for x in ("90", "90s", "10m", "1.5h", "2d", "250ms")] == [
        90,
        90,
        600,
        5400,
        172800,
        0.25,
    ]
    assert parse_speed("max") is None and parse_speed("60") == 60.0
    for bad in ("soon", "-1m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_speed("0")


def test_replay_republishes_with_shifted_timestamps(tmp_path: Path):
    path = tmp_path / "readings.csv"
    path.write_text(
        "device_id,ts,seq,temperature,humidity,co2,pressure,battery,lat,lon,status\n"
        "r1,2025-01-01T10:00:00.000Z,5,20.5,40,600,1000,90,45.7,4.8,OK\n"
        "r1,2025-01-01T10:01:00.000Z,6,20.7,41,610,1000,90,45.7,4.8,OK\n"
        "r2,2025-01-01T10:00:30.000Z,1,,,,,,,,FAILURE\n"
    )
    readings = load_replay(path)
    pub, start = MemoryPublisher(), datetime(2026, 5, 1, 12, tzinfo=UTC)
    sim = Simulation([], pub, seed=1, start=start, ledger=Ledger(None))
    sim.env.process(replay_process(sim, readings, start, shift="start"))
    Runner(sim, speed=None, duration_s=120).run()
    got = [decode(m.payload, topic_device_id=None, now=start) for m in pub.telemetry()]
    assert [(r.device_id, r.seq, r.ts.isoformat()) for r in got] == [
        ("r1", 5, "2026-05-01T12:00:00+00:00"),
        ("r2", 1, "2026-05-01T12:00:30+00:00"),
        ("r1", 6, "2026-05-01T12:01:00+00:00"),
    ]
    assert got[1].temperature is None


def test_replay_errors_name_row_and_column(tmp_path: Path):
    path = tmp_path / "readings.csv"
    path.write_text(
        "device_id,ts,seq,humidity\nr1,2025-01-01T10:00:00Z,1,40\nr1,2025-01-01T10:01:00Z,2,140\n"
    )
    with pytest.raises(FleetFileError, match=r"row 3, column 'humidity'"):
        load_replay(path)
    path.write_text("device_id,ts,seq\nr1,2025-01-01T10:00:00Z,two\n")
    with pytest.raises(FleetFileError, match=r"row 2, column 'seq'"):
        load_replay(path)
