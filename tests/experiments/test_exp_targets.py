"""Target selection: site, type, radius (haversine), explicit ids, seeded fraction; the schedule
handed to the simulator."""

from __future__ import annotations

from pathlib import Path

from fleetsim.experiments.scenario import Target, Within, parse_scenario
from fleetsim.experiments.targets import prepare_fleet, select, write_fleet_csv
from fleetsim.kernel.contract import FaultKind
from fleetsim.kernel.faultcatalog import parse_schedule
from fleetsim.kernel.fleetfile import DeviceSpec, load_fleet, offset_point

LAT, LON = 45.76, 4.85


def dev(
    i: str, north_m: float = 0.0, east_m: float = 0.0, site: str = "s1", kind: str = "fixed"
) -> DeviceSpec:
    lat, lon = offset_point(LAT, LON, north_m, east_m)
    if kind == "mobile":
        route = ((lat, lon), offset_point(lat, lon, 500.0, 0.0))
        return DeviceSpec(i, kind, site, False, lat, lon, speed_kmh=20.0, route=route)
    return DeviceSpec(i, kind, site, True, lat, lon)


FLEET = [
    dev("center"),
    dev("n900", north_m=900),
    dev("e1900", east_m=1900, site="s2"),
    dev("n2100", north_m=2100, site="s2"),
    dev("far", north_m=10_000, site="s3", kind="mobile"),
]


def test_radius_uses_haversine_distance() -> None:
    assert select(Target(within=Within(LAT, LON, 1.0)), FLEET, 1) == ["center", "n900"]
    assert select(Target(within=Within(LAT, LON, 2.0)), FLEET, 1) == ["center", "e1900", "n900"]
    assert select(Target(within=Within(LAT, LON, 2.2)), FLEET, 1) == ["center", "e1900", "n2100", "n900"]


def test_site_type_and_ids_intersect() -> None:
    assert select(Target(site="s2"), FLEET, 1) == ["e1900", "n2100"]
    assert select(Target(type="mobile"), FLEET, 1) == ["far"]
    assert select(Target(site="s2", within=Within(LAT, LON, 2.0)), FLEET, 1) == ["e1900"]
    assert select(Target(devices=("far", "center"), site="s1"), FLEET, 1) == ["center"]


def test_fraction_is_seeded_and_rounded() -> None:
    fleet = [dev(f"d{i:02d}", north_m=i) for i in range(20)]
    a = select(Target(fraction=0.25), fleet, seed=7, salt="0")
    assert len(a) == 5
    assert a == select(Target(fraction=0.25), fleet, seed=7, salt="0")  # deterministic
    assert a != select(Target(fraction=0.25), fleet, seed=8, salt="0")  # another seed, another draw
    assert len(select(Target(fraction=0.01), fleet, seed=7)) == 1  # at least one device
    assert set(a) <= {d.device_id for d in fleet}


def test_prepare_fleet_writes_a_schedule_the_simulator_accepts(tmp_path: Path) -> None:
    text = """
[fleet]
file = "devices.csv"
interval_s = 5
scale = 2
[run]
duration = "10m"
speed = 10
[[fault]]
at = 60
kind = "drift"
duration = 120
params = { rate = 2.0 }
device = "center"
[[fault]]
at = 300
kind = "network_outage"
duration = 30
site = "s2"
"""
    src = write_fleet_csv(FLEET, tmp_path / "devices.csv")
    sc = parse_scenario(text, tmp_path / "s.toml")
    specs, injections = prepare_fleet(sc, load_fleet(src))
    assert len(specs) == 10  # scale 2
    assert {s.interval_s for s in specs} == {5.0}
    # Clones of s2 devices are targets too (the campaign applies after scaling).
    assert sorted(i.device_id for i in injections) == ["center", "e1900", "e1900-c1", "n2100", "n2100-c1"]
    by_id = {s.device_id: s for s in specs}
    (drift,) = parse_schedule(by_id["center"].fault_profile)
    assert (drift.kind, drift.start_s, drift.duration_s, drift.params) == (
        FaultKind.DRIFT,
        60.0,
        120.0,
        {"rate": 2.0},
    )
    assert by_id["far"].fault_profile == "none"
    out = write_fleet_csv(specs, tmp_path / "run" / "fleet.csv")
    again = load_fleet(out)  # the simulator's own loader accepts what we wrote
    assert [s.fault_profile for s in again] == [s.fault_profile for s in specs]
    assert again[0].lat == specs[0].lat
    assert again[4].route == specs[4].route
