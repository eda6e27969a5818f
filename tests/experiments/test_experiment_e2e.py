"""A small scenario end to end on the real stack: simulator (MQTT) -> bridge -> Kafka -> Spark ->
PostgreSQL, then the report checked against the known injection."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fleetsim.experiments import store
from fleetsim.experiments.collect import read_ledger_file
from fleetsim.experiments.runner import RunOptions, run_experiment
from fleetsim.experiments.scenario import load_scenario
from fleetsim.experiments.targets import write_fleet_csv
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.fleetfile import DeviceSpec

# The first test also pays for the session pipeline (Spark start: minutes on a loaded machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

INTERVAL_S = 5.0
BUFFER = 4
OUTAGE_S = 100.0
# Outage of 100 s at one reading per 5 s: 20 readings made while cut off, the buffer keeps the
# newest 4, so exactly 16 are lost (oldest first) -- the figure the report must give. The ~85 s
# gap in the device's own readings is longer than alerts.offline_after_s (60 s): `offline`.
EXPECTED_OVERFLOW = int(OUTAGE_S / INTERVAL_S) - BUFFER

SCENARIO = f"""
[scenario]
name = "e2e-small"
description = "failure, stuck sensor, buffer overflow on purpose"

[fleet]
file = "fleet.csv"
interval_s = {INTERVAL_S}
buffer_size = {BUFFER}

[run]
duration = "150s"
speed = 6
seed = 1

[scoring]
grace_s = 40
stuck_window_s = 60
drain_timeout_s = 300

[[fault]]
at = 20
kind = "sensor_failure"
duration = 40
devices = ["exp-f1", "exp-f2"]

[[fault]]
at = 25
kind = "stuck"
duration = 70
device = "exp-s1"

[[fault]]
at = 32
kind = "network_outage"
duration = {OUTAGE_S}
device = "exp-o1"
"""


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def e2e_run(exp_pipeline: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("exp-e2e")
    ids = ["exp-f1", "exp-f2", "exp-s1", "exp-o1", "exp-n1", "exp-n2"]
    # Mains-powered indoor sensors a few metres apart: no natural alert is expected from them.
    fleet = [
        DeviceSpec(d, "fixed", "exp-site", True, 45.76 + i * 1e-4, 4.85, occupancy="none")
        for i, d in enumerate(ids)
    ]
    write_fleet_csv(fleet, tmp / "fleet.csv")
    (tmp / "scenario.toml").write_text(SCENARIO)
    scenario = load_scenario(tmp / "scenario.toml")
    return run_experiment(exp_pipeline, scenario, opts=RunOptions(settle_s=5.0))


def test_every_failure_detected_and_stuck_within_window(e2e_run: tuple[dict, Path]) -> None:
    report, _ = e2e_run
    assert report["run"]["drained"], report["run"]["drain_note"]
    kinds = report["detection"]["kinds"]
    assert kinds["sensor_failure"]["injected"] == 2
    assert kinds["sensor_failure"]["detected"] == 2, report["detection"]["faults"]
    assert kinds["stuck"]["detected"] == 1
    assert kinds["stuck"]["within_window"] == 1, kinds["stuck"]
    assert kinds["stuck"]["ttd_p50_s"] <= 60
    # Scored on incidents (issue 21): each detection is an incident, one per fault; the raw alert
    # rows (dozens per failure) stay a secondary score.
    assert report["detection"]["unit"] == "incident"
    for f in report["detection"]["faults"]:
        if f["kind"] in ("sensor_failure", "stuck"):
            assert f["incident_id"] is not None, f
    ids = {f["incident_id"] for f in report["detection"]["faults"] if f["kind"] == "sensor_failure"}
    assert len(ids) == 2  # one incident per failed device, not one per alert row
    assert kinds["sensor_failure"]["precision"] == 1.0
    assert report["alert_detection"]["kinds"]["sensor_failure"]["detected"] == 2
    assert report["alert_detection"]["total_alerts"] > report["detection"]["total_alerts"]
    # Every incident opened during the run notified once (opened); nobody acknowledged anything.
    notif = report["detection"]["notifications"]
    assert notif["by_action"]["opened"] >= 3 and notif["by_action"]["acknowledged"] == 0, notif
    # The outage is detected as `offline` at 6x speed: the gap in the device's own event time
    # decides it, not the wall clock nor how the job cut its batches. Its ground truth: the 20
    # readings made while cut off, 16 of them overflowed.
    (outage,) = [f for f in report["detection"]["faults"] if f["kind"] == "network_outage"]
    assert kinds["network_outage"]["injected"] == 1
    assert kinds["network_outage"]["detected"] == 1, outage
    assert outage["counters"] == {
        "buffered": int(OUTAGE_S / INTERVAL_S),
        "dropped_overflow": EXPECTED_OVERFLOW,
    }


def test_loss_counted_exactly_where_the_buffer_overflowed(e2e_run: tuple[dict, Path]) -> None:
    report, out_dir = e2e_run
    devices = {r["device_id"]: r for r in report["integrity"]["devices"]}
    ledger = read_ledger_file(out_dir / "ledger.jsonl")
    overflow = sum(b - a + 1 for a, b in ledger.sent["exp-o1"].dropped.get("overflow", ()))
    assert overflow == EXPECTED_OVERFLOW
    o1 = devices["exp-o1"]
    assert o1["lost"] == EXPECTED_OVERFLOW
    assert o1["dropped_overflow"] == EXPECTED_OVERFLOW
    assert (o1["lost_mqtt_kafka"], o1["lost_kafka_db"], o1["unaccounted"]) == (0, 0, 0)
    # Nothing else should be lost, anywhere along the path.
    for dev, r in devices.items():
        if dev != "exp-o1":
            assert r["lost"] == 0 and r["made"] == r["in_db"] > 20, r
    assert report["integrity"]["totals"]["lost"] == EXPECTED_OVERFLOW
    assert report["integrity"]["totals"]["lost_mqtt_kafka"] == 0


def test_report_folder_plots_and_record(e2e_run: tuple[dict, Path], exp_pipeline: FleetsimConfig) -> None:
    report, out_dir = e2e_run
    data = json.loads((out_dir / "report.json").read_text())
    assert data["run_id"] == report["run_id"]
    summary = (out_dir / "summary.md").read_text()
    assert "| sensor_failure | 2 | 2 | 0 |" in summary
    assert "**Notifications** an operator received during the run:" in summary
    for name in ("timeline.png", "detection_latency.png", "integrity.png"):
        w, h = png_size(out_dir / name)
        assert 400 <= w <= 3000 and 250 <= h <= 3000
    hops = report["latency_ms"]
    assert hops["device_bridge"] is None  # accelerated: the device clock is not wall time
    assert hops["bridge_db"]["n"] > 100 and hops["bridge_db"]["p50"] >= 0
    got = store.get_run(exp_pipeline, report["run_id"])
    assert got is not None and got["status"] == "scored" and got["lost"] == EXPECTED_OVERFLOW
