"""Runs are recorded in PostgreSQL (writer role) and the dashboard's Experiments page shows them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_exp_report import synthetic_report

from fleetsim.experiments import store
from fleetsim.experiments.scenario import parse_scenario
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

APP = str(Path(__file__).resolve().parents[2] / "cloud" / "dashboard" / "app.py")


def record(cfg: FleetsimConfig) -> dict[str, object]:
    report = synthetic_report()
    report["run_id"] = f"page-test-{uuid.uuid4().hex[:8]}"
    sc = parse_scenario(
        '[run]\nduration = "10m"\n[[fault]]\nat=1\nkind="stuck"\nduration=1\nsite="x"\n', Path("s.toml")
    )
    store.record_start(cfg, str(report["run_id"]), sc, report["run"]["wall_start"], 2)  # type: ignore[index]
    store.record_result(cfg, report, "/tmp/report-dir")
    return report


def test_runs_are_recorded_listed_and_shown(app_cfg: FleetsimConfig) -> None:
    report = record(app_cfg)
    rid = str(report["run_id"])
    listed = {r["run_id"]: r for r in store.list_runs(app_cfg)}
    assert listed[rid]["status"] == "scored"
    assert (listed[rid]["injected"], listed[rid]["detected"], listed[rid]["lost"]) == (2, 1, 10)
    got = store.get_run(app_cfg, rid[:-2])  # a unique prefix is enough
    assert got is not None and got["report"]["detection"]["kinds"]["stuck"]["missed"] == 1

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/experiments.py").run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [df.value for df in at.dataframe]
    assert any(rid in set(f.get("run_id", [])) for f in frames), "the run is not listed"
    at.selectbox(key="exp_run").set_value(rid).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Detected"] == "1/2"
    assert metrics["Recall"] == "50 %"
    assert metrics["Readings lost"] == "10"
    scores = [f for f in (df.value for df in at.dataframe) if "fault_kind" in f.columns]
    assert scores and scores[0].iloc[0]["fault_kind"] == "stuck"


def test_reader_role_cannot_write_runs(postgres: FleetsimConfig) -> None:
    import psycopg2

    from fleetsim.kernel.clients import pg_connect

    conn = pg_connect(postgres, "reader")
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("UPDATE experiment_runs SET status = 'failed'")
    finally:
        conn.close()
    conn = pg_connect(postgres, "writer")
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("DELETE FROM experiment_runs")
    finally:
        conn.close()
