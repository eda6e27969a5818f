"""Benchmarks that run the sink's SQL by hand keep working against the real schema.

``bench_registry`` executes the sink's ``INSERT_RAW`` variants itself. When the running state of
the history rules added a temp table that statement writes, ``make bench`` failed there and no
test noticed: this one runs that benchmark's PostgreSQL part, small, on its own PostgreSQL.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"bench_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_registry_sink_variants_run_against_the_real_schema(
    fleet_cfg: FleetsimConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _load("registry")
    monkeypatch.setattr(bench, "RUNS", 1)
    with dedicated(fleet_cfg, tmp_path / "pg", "postgres") as (cfg, _):
        times = bench._sink_times(cfg, 200, [f"bench-sql-{i:02d}" for i in range(20)])
    # _sink_times itself checks each variant inserted all 200 rows.
    assert set(times) == {"no_join", "join_site", "join_site_latlon"}
    assert all(len(v) == 1 and v[0] > 0 for v in times.values()), times
