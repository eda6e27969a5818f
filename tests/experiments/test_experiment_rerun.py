"""One scenario run twice in a row beside a running "demo" simulator of the same device ids, on
the real stack: both runs score the same, every injected fault detected, nothing lost, no
``(device_id, seq)`` stored twice.

Before the simulator had one assembly, an experiment restarted ``seq`` at 0 for the same ids on
every run, and shared the demo simulator's MQTT client id: the rerun scored recall 0 with every
reading "lost", and a run beside ``fleetsim up`` could not even connect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_until, while_running

from fleetsim.experiments.runner import RunOptions, run_experiment
from fleetsim.experiments.scenario import load_scenario
from fleetsim.experiments.targets import write_fleet_csv
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.fleetfile import DeviceSpec

# `make test-slow` (~95 s, make test's ten-minute budget): make test keeps the end-to-end
# experiment (tests/experiments/test_experiment_e2e.py), which scores a scenario on the real stack.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

IDS = ["rr-f1", "rr-f2", "rr-s1", "rr-n1"]
SCENARIO = """
[scenario]
name = "rerun"
description = "the same faults, run twice beside a demo simulator"

[fleet]
file = "fleet.csv"
interval_s = 5

[run]
duration = "120s"
speed = 12
seed = 3

[scoring]
grace_s = 40
stuck_window_s = 60
drain_timeout_s = 300

[[fault]]
at = 20
kind = "sensor_failure"
duration = 40
devices = ["rr-f1", "rr-f2"]

[[fault]]
at = 25
kind = "stuck"
duration = 70
device = "rr-s1"
"""


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("exp-rerun")
    # Mains-powered indoor sensors a few metres apart: no natural alert is expected from them.
    fleet = [
        DeviceSpec(d, "fixed", "rr-site", True, 45.76 + i * 1e-4, 4.85, occupancy="none")
        for i, d in enumerate(IDS)
    ]
    write_fleet_csv(fleet, tmp / "fleet.csv")
    (tmp / "scenario.toml").write_text(SCENARIO)
    return tmp


@pytest.fixture(scope="module")
def demo_sim(exp_pipeline: FleetsimConfig, fleet_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``fleetsim sim`` as ``fleetsim up`` starts it (default client ids, real time), publishing
    the very device ids the experiment uses, for as long as the module runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(exp_pipeline)
    cmd = [sys.executable, "-m", "fleetsim.cli", "sim", "--devices", str(fleet_dir / "fleet.csv")]
    cmd += ["--ledger", str(fleet_dir / "demo.jsonl"), "--metrics-port", "0"]
    with (fleet_dir / "demo.log").open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=fleet_dir, stdout=out, stderr=out)
    try:
        # Running and stored, as after `fleetsim up`: the experiments below start while it publishes.
        wait_until(
            while_running(proc, lambda: _stored(exp_pipeline, "rr-n1") > 0, "demo", fleet_dir / "demo.log"),
            300,
            what="the demo simulator's readings in sensor_data",
        )
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _stored(cfg: FleetsimConfig, device_id: str) -> int:
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM sensor_data WHERE device_id = %s", (device_id,))
        (n,) = cur.fetchone()
    conn.close()
    return int(n)


def _run(cfg: FleetsimConfig, fleet_dir: Path) -> dict:
    report, _ = run_experiment(cfg, load_scenario(fleet_dir / "scenario.toml"), opts=RunOptions(settle_s=5.0))
    return report


def _score(report: dict) -> dict:
    kinds = report["detection"]["kinds"]
    totals = report["integrity"]["totals"]
    return {
        "detected": {k: (v["injected"], v["detected"]) for k, v in kinds.items() if v["injected"]},
        "lost": totals["lost"],
        "duplicated_db": totals["duplicated_db"],
        "unexpected": totals["unexpected"],
    }


def test_the_same_scenario_twice_beside_a_demo_simulator_scores_the_same(
    exp_pipeline: FleetsimConfig, fleet_dir: Path, demo_sim: subprocess.Popen[bytes]
) -> None:
    first = _run(exp_pipeline, fleet_dir)
    second = _run(exp_pipeline, fleet_dir)
    assert demo_sim.poll() is None, (fleet_dir / "demo.log").read_text(errors="replace")
    for report in (first, second):
        assert report["run"]["drained"], report["run"]["drain_note"]
        score = _score(report)
        assert score["detected"] == {"sensor_failure": (2, 2), "stuck": (1, 1)}, report["detection"]["faults"]
        assert (score["lost"], score["duplicated_db"], score["unexpected"]) == (0, 0, 0), (
            report["run_id"],
            report["integrity"]["devices"],
        )
        for row in report["integrity"]["devices"]:
            assert row["made"] == row["in_db"] > 15, row
    assert _score(first) == _score(second)
    with pg_connect(exp_pipeline, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT device_id, seq, count(*) FROM sensor_data WHERE device_id = ANY(%s)"
            " GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5",
            (IDS,),
        )
        twice = cur.fetchall()
        cur.execute("SELECT count(DISTINCT seq) FROM sensor_data WHERE device_id = 'rr-n1'")
        (stored,) = cur.fetchone()
    conn.close()
    assert twice == []
    # The demo's readings of the same ids were stored too, beside both runs' (none overwritten).
    assert stored > sum(
        r["in_db"]
        for rep in (first, second)
        for r in rep["integrity"]["devices"]
        if r["device_id"] == "rr-n1"
    )
