"""Scenario loader: valid files load; every error names the line and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.experiments.scenario import load_scenario, parse_duration, parse_scenario
from fleetsim.kernel.contract import FaultKind
from fleetsim.kernel.errors import ExperimentError

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
[scenario]
name = "demo"
description = "two faults"

[fleet]
file = "devices.csv"
interval_s = 10

[run]
duration = "10m"
speed = "max"
seed = 7

[scoring]
grace_s = 60
stuck_window_s = "2m"

[[fault]]
at = "1m30s"
kind = "stuck"
duration = 120
site = "part-dieu"
fraction = 0.5

[[fault]]
at = 300
kind = "drift"
duration = "3m"
params = { rate = 1.5 }
within = { lat = 45.76, lon = 4.85, km = 2.0 }
"""


def parse(text: str) -> object:
    return parse_scenario(text, REPO / "scenarios" / "x.toml")


def test_good_scenario_loads_with_units_resolved() -> None:
    sc = parse_scenario(GOOD, REPO / "scenarios" / "x.toml")
    assert sc.name == "demo"
    assert sc.duration_s == 600.0
    assert sc.speed == "max"
    assert sc.interval_s == 10.0
    assert sc.fleet_file == (REPO / "scenarios" / "devices.csv").resolve()
    assert sc.scoring.grace_s == 60.0
    assert sc.scoring.stuck_window_s == 120.0
    stuck, drift = sc.faults
    assert (stuck.kind, stuck.at_s, stuck.duration_s, stuck.line) == (FaultKind.STUCK, 90.0, 120.0, 18)
    assert stuck.target.site == "part-dieu" and stuck.target.fraction == 0.5
    assert (drift.kind, drift.at_s, drift.duration_s, drift.line) == (FaultKind.DRIFT, 300.0, 180.0, 25)
    assert drift.params == {"rate": 1.5}
    assert drift.target.within is not None and drift.target.within.km == 2.0


@pytest.mark.parametrize(
    ("old", "new", "line", "needle"),
    [
        ('kind = "drift"', 'kind = "melt"', 27, "allowed: stuck, drift, spike"),
        ("params = { rate = 1.5 }", "params = { speed = 1.5 }", 29, "allowed: rate"),
        ("fraction = 0.5", "fraction = 1.5", 23, "outside [0.0, 1.0]"),
        ('speed = "max"', 'speed = "fast"', 11, 'a number > 0 or "max"'),
        ("seed = 7", "seed = 7\ncolour = 3", 13, "allowed: duration, speed, seed, start"),
        ('site = "part-dieu"', 'site = "part-dieu"\ntype = "flying"', 23, "allowed: fixed, mobile"),
        ("km = 2.0", "km = -1", 30, "within.km=-1"),
        ("at = 300", 'at = "5 parsecs"', 26, "not a duration"),
        ("at = 300", "at = 3600", 25, "after the run's 600 s"),
    ],
)
def test_errors_name_the_line_and_allowed_values(old: str, new: str, line: int, needle: str) -> None:
    assert old in GOOD
    with pytest.raises(ExperimentError) as err:
        parse(GOOD.replace(old, new, 1))
    msg = str(err.value)
    assert f"x.toml:{line}:" in msg, msg
    assert needle in msg, msg


def test_missing_target_names_the_fault_header() -> None:
    text = GOOD.replace('site = "part-dieu"\nfraction = 0.5\n', "")
    with pytest.raises(ExperimentError, match=r"x\.toml:18: a fault needs a target"):
        parse(text)


def test_toml_syntax_error_keeps_tomllib_position() -> None:
    with pytest.raises(ExperimentError, match=r"invalid TOML: .*line 3"):
        parse('[run]\nduration = "1m"\nspeed = = 3\n')


def test_unknown_table_is_named() -> None:
    with pytest.raises(ExperimentError, match=r"x\.toml:18: unknown table or key 'faults'"):
        parse(GOOD.replace('[[fault]]\nat = "1m30s"', '[faults]\nat = "1m30s"', 1))


@pytest.mark.parametrize(
    ("raw", "seconds"), [(90, 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("2.5", 2.5)]
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "m", "-5", True, "5 minutes"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_shortened_divides_every_time() -> None:
    sc = parse_scenario(GOOD, REPO / "scenarios" / "x.toml").shortened(4)
    assert sc.duration_s == 150.0
    assert [(f.at_s, f.duration_s) for f in sc.faults] == [(22.5, 30.0), (75.0, 45.0)]
    assert sc.name == "demo-short"


def test_every_shipped_scenario_is_valid_and_hits_devices() -> None:
    from fleetsim.experiments.targets import prepare_fleet
    from fleetsim.kernel.fleetfile import load_fleet

    paths = sorted((REPO / "scenarios").glob("*.toml"))
    assert len(paths) >= 4
    for path in paths:
        sc = load_scenario(path)
        assert sc.faults, path
        _specs, injections = prepare_fleet(sc, load_fleet(sc.fleet_file))
        for i, f in enumerate(sc.faults):
            assert any(j.fault_index == i for j in injections), f"{path}:{f.line} hits no device"
        # The budget: <= 5 min at the scenario's speed (plus the drain).
        assert sc.speed != "max" and sc.duration_s / float(sc.speed) <= 300, path
