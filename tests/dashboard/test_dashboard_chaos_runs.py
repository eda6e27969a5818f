"""The experiments page lists chaos campaigns (``fleetsim chaos``) and shows a chosen one's verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fleetsim.chaos.report import write
from fleetsim.experiments.store import record_chaos_run
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

APP = str(Path(__file__).resolve().parents[2] / "cloud" / "dashboard" / "app.py")


def _report(run_id: str, out: Path, *, lost: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    faults = [
        {"at_s": 10.0, "duration_s": 5.0, "kind": "kill", "target": "kafka", "params": {}},
        {"at_s": 12.0, "duration_s": 8.0, "kind": "link", "target": "mqtt-link", "params": {"mode": "cut"}},
    ]
    rep: dict[str, Any] = {
        "run_id": run_id,
        "kind": "chaos",
        "passed": lost == 0,
        "wall_start": (now - timedelta(minutes=3)).isoformat(),
        "wall_end": now.isoformat(),
        "loadavg": "1.00",
        "options": {"duration_s": 60.0, "rate": 100.0, "seed": 5, "kinds": ["kill", "link"], "devices": 4},
        "schedule": {"faults": 2, "overlapping": 2, "by_kind": {"kill": 1, "link": 1}, "faults_list": faults},
        "events": [{"fault": 0, "t": 10.0, "phase": "inject", "label": "kill kafka"}],
        "unplanned_restarts": [],
        "nemesis_errors": [],
        "checker": {
            "sent": 6000,
            "acked": 6000,
            "stored": 6000 - lost,
            "lost": lost,
            "dup": 0,
            "unexpected": 0,
        },
        "checker_summary": f"lost {lost}",
        "aggregates": {
            "windows": 20,
            "matched": 20,
            "missing": 0,
            "extra": 0,
            "mismatched": 0,
            "late_rows": 0,
            "exact": True,
        },
        "alerts": {"injected": 1, "found": 1, "missing": []},
        "drain_s": 3.0,
        "throughput": {"stored_mean": 100.0},
        "latency": {"p95_median_ms": 900, "p95_max_ms": 4000},
        "series": {
            "acked_t": [1.0, 2.0],
            "acked_rate": [100.0, 100.0],
            "stored_t": [5.0],
            "stored_rate": [99.0],
            "p50_ms": [500.0],
            "p95_ms": [900.0],
        },
    }
    write(rep, out)
    rep["report_dir"] = str(out)
    return rep


def test_chaos_runs_listed_with_their_verdict_and_timeline(app_cfg: FleetsimConfig, tmp_path: Path) -> None:
    tag = datetime.now(UTC).strftime("%H%M%S%f")
    good = _report(f"chaos-test-{tag}-ok", tmp_path / "ok", lost=0)
    bad = _report(f"chaos-test-{tag}-bad", tmp_path / "bad", lost=7)
    record_chaos_run(app_cfg, good)
    record_chaos_run(app_cfg, bad)
    record_chaos_run(app_cfg, good)  # recording twice keeps one row

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/experiments.py").run()
    assert not at.exception, [e.value for e in at.exception]
    listed = at.dataframe[0].value
    rows = listed[listed["run_id"].isin([good["run_id"], bad["run_id"]])]
    assert sorted(rows["status"]) == ["failed", "scored"]
    assert set(rows["scenario"]) == {"chaos"}

    at.selectbox(key="exp_run").set_value(good["run_id"]).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Readings lost"] == "0" and shown["Duplicated"] == "0"
    assert shown["Aggregates"] == "exact" and shown["Fault alerts"] == "1/1"
    assert shown["Faults"] == "2 (2 overlapping)"
    assert len(at.get("image")) == 1  # the timeline PNG

    at.selectbox(key="exp_run").set_value(bad["run_id"]).run()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Readings lost"] == "7"
    assert "Campaign failed" in "\n".join(str(e.value) for e in at.error)
