"""Each shipped scenario, shortened, runs to completion on the real stack (CI's short version).

Marked ``slow``: about a minute each on an idle 2-core machine. The figures checked are the ones a
shortened run still determines exactly (integrity); detection needs the full-length faults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.experiments.collect import read_ledger_file
from fleetsim.experiments.runner import RunOptions, run_experiment
from fleetsim.experiments.scenario import load_scenario
from fleetsim.kernel.config import FleetsimConfig

# The first test also pays for the session pipeline (Spark start: minutes on a loaded machine).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml"))
SHORTEN = 4.0


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_shortened_runs_to_completion(path: Path, exp_pipeline: FleetsimConfig) -> None:
    scenario = load_scenario(path).shortened(SHORTEN)
    report, out_dir = run_experiment(exp_pipeline, scenario, opts=RunOptions())
    assert report["run"]["drained"], report["run"]["drain_note"]
    assert {"summary.md", "report.json", "timeline.png", "detection_latency.png", "integrity.png"} <= {
        p.name for p in out_dir.iterdir()
    }
    ledger = read_ledger_file(out_dir / "ledger.jsonl")
    # Every planned injection happened (one ledger fault record per planned device and fault).
    planned = {(p["device_id"], p["kind"]) for p in report["scenario"]["campaign"]}
    assert planned <= {(f.device_id, f.kind) for f in ledger.faults}
    totals = report["integrity"]["totals"]
    edge_loss = sum(
        b - a + 1 for s in ledger.sent.values() for ranges in s.dropped.values() for a, b in ranges
    )
    # Whatever the scenario, the only readings missing from the table are the ones the edge
    # dropped on purpose (dropout) or by policy, and none vanished on the way.
    assert totals["lost"] == edge_loss
    assert totals["lost_mqtt_kafka"] == 0 and totals["lost_kafka_db"] == 0 and totals["unaccounted"] == 0
    assert totals["duplicated_db"] == 0
    if path.stem == "clock-skew-duplicates":
        assert totals["duplicated_sent"] > 0
        assert totals["duplicated_kafka"] == totals["duplicated_sent"]
        assert totals["dropped_dropout"] > 0
