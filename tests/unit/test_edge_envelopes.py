"""A simulated week of the default fleet stays inside the envelopes of real buildings (slow: ~20 s
of CPU). ``python -m fleetsim.edge.calibration`` prints the same figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.edge.calibration import DEFAULT_START, envelopes, simulate
from fleetsim.kernel.fleetfile import load_fleet

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_week_of_the_default_fleet_stays_inside_real_building_envelopes():
    specs = load_fleet(ROOT / "devices.csv")
    rows = simulate(specs, DEFAULT_START, 7.0)
    assert len(rows) > 500_000
    missed = [e.line() for e in envelopes(specs, rows, DEFAULT_START, 7.0) if not e.ok]
    assert missed == []
