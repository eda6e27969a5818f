"""Experiments view: "does our monitoring catch what we inject?" Recorded fault-injection runs
(``fleetsim experiment run``), their scores, a trend of recall/precision across runs, and the
chosen run's activity with the injected faults drawn over it. Chaos campaigns (``fleetsim chaos``,
scenario ``chaos``) are listed with them: their detail is the checker's verdict and timeline."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from fleetsim.cloud.dashboard import charts
from fleetsim.cloud.dashboard.queries import experiments as qx
from fleetsim.cloud.dashboard.ui import Context

CHAOS = "chaos"
"""``experiment_runs.scenario`` of a chaos campaign (``fleetsim.experiments.store.CHAOS_SCENARIO``)."""


def _pct(v: object) -> str:
    return "–" if v is None or pd.isna(v) else f"{100 * float(v):.0f} %"  # type: ignore[arg-type]


def _trend(runs: pd.DataFrame) -> None:
    scored = runs[(runs["status"] == "scored") & (runs["scenario"] != CHAOS)].copy()
    if len(scored) < 2:
        return
    st.subheader("Scores across runs")
    long = scored.melt(
        id_vars=["wall_start", "scenario"], value_vars=["recall", "precision"], var_name="score"
    )
    chart = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=charts.utc_x("wall_start", "run start (UTC)"),
            y=alt.Y("value:Q", title="score", scale=alt.Scale(domain=[0, 1])),
            color="score:N",
            strokeDash="scenario:N",
            tooltip=["scenario", "score", "value", "wall_start"],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, width="stretch")


def _chaos_detail(ctx: Context, run: pd.Series) -> None:
    """A chaos campaign: faults injected against what the checker found lost, duplicated, wrong."""
    rid = str(run["run_id"])
    st.subheader(f"Chaos campaign {rid}")
    rows = ctx.load(qx.report, "slow", run_id=rid)
    rep = rows.iloc[0]["report"] if not rows.empty else None
    if not isinstance(rep, dict):
        st.warning(f"Status **{run['status']}**" + (f": {run['error']}" if run["error"] else ""))
        return
    c, a, al = rep["checker"], rep["aggregates"], rep["alerts"]
    cols = st.columns(6)
    cols[0].metric("Faults", f"{rep['schedule']['faults']} ({rep['schedule']['overlapping']} overlapping)")
    cols[1].metric("Acked", int(c["acked"]))
    cols[2].metric("Readings lost", int(c["lost"]))
    cols[3].metric("Duplicated", int(c["dup"]))
    cols[4].metric(
        "Aggregates", "exact" if a["exact"] else f"{a['missing'] + a['extra'] + a['mismatched']} off"
    )
    cols[5].metric("Fault alerts", f"{al['found']}/{al['injected']}")
    if run["status"] != "scored":
        st.error(f"Campaign failed: {run['error'] or 'see the report'}")
    png = Path(str(run["report_dir"] or "")) / "timeline.png"
    if run["report_dir"] and png.is_file():
        st.image(str(png), caption="Faults against throughput and event-to-row latency")
    faults = pd.DataFrame(rep["schedule"]["faults_list"])
    with st.expander(f"Injected faults ({len(faults)})"):
        st.dataframe(faults, hide_index=True)
    if run["report_dir"]:
        st.caption(f"Full report (summary.md, report.json, timeline.png): `{run['report_dir']}`")


def _run_detail(ctx: Context, run: pd.Series) -> None:
    if run["scenario"] == CHAOS:
        _chaos_detail(ctx, run)
        return
    rid = str(run["run_id"])
    st.subheader(f"Run {rid}")
    cols = st.columns(5)
    cols[0].metric("Detected", f"{int(run['detected'] or 0)}/{int(run['injected'] or 0)}")
    cols[1].metric("Recall", _pct(run["recall"]))
    cols[2].metric("Precision", _pct(run["precision"]))
    cols[3].metric("False alarms", int(run["false_alarms"] or 0))
    cols[4].metric("Readings lost", "–" if pd.isna(run["lost"]) else int(run["lost"]))
    if run["status"] != "scored":
        st.warning(f"Status **{run['status']}**" + (f": {run['error']}" if run["error"] else ""))
        return
    scores = ctx.load(qx.scores, "slow", run_id=rid)
    st.dataframe(scores, hide_index=True)
    faults = ctx.load(qx.faults, "slow", run_id=rid)
    act = ctx.load(qx.activity, "slow", start=run["sim_start"], end=run["sim_end"])
    st.caption("Readings and alerts per minute (event time); shaded: injected faults (red when missed)")
    if act.empty:
        st.info("No readings of this run are left in the database.")
        return
    lines = (
        alt.Chart(act)
        .mark_line()
        .encode(
            x=charts.utc_x("minute", "event time (UTC)"),
            y=alt.Y("n:Q", title="per minute"),
            color=alt.Color("series:N", title=None),
        )
    )
    layers: list[alt.Chart] = []
    if not faults.empty:
        spans = (
            faults.assign(missed=faults["detected"].eq(False))
            .groupby(["fault", "start_ts", "end_ts", "missed"], as_index=False)
            .agg(devices=("device_id", "count"))
        )
        layers.append(
            alt.Chart(spans)
            .mark_rect(opacity=0.18)
            .encode(
                x=charts.utc_x("start_ts"),
                x2="end_ts:T",
                color=alt.condition("datum.missed", alt.value("#d62728"), alt.value("#7f7f7f")),
                tooltip=["fault", "devices", "start_ts", "end_ts", "missed"],
            )
        )
        layers.append(
            alt.Chart(spans.drop_duplicates(["fault", "start_ts"]))
            .mark_rule(strokeDash=[4, 3])
            .encode(x=charts.utc_x("start_ts"), tooltip=["fault", "devices", "start_ts"])
        )
    st.altair_chart(alt.layer(*layers, lines).properties(height=300), width="stretch")
    with st.expander(f"Injected faults ({len(faults)})"):
        st.dataframe(faults, hide_index=True)
    if run["report_dir"]:
        st.caption(f"Full report (summary.md, report.json, plots): `{run['report_dir']}`")


def render(ctx: Context) -> None:
    st.title("Experiments")
    if not ctx.require_database():
        return
    with ctx.section():
        runs = ctx.load(qx.runs, "slow")
        if runs.empty:
            st.info(
                "**No experiment runs yet.** Run one with `fleetsim experiment run scenarios/<name>.toml`.",
                icon=":material/science:",
            )
            return
        view = runs.assign(recall=runs["recall"].map(_pct), precision=runs["precision"].map(_pct))
        st.dataframe(
            view[["run_id", "scenario", "status", "wall_start", "devices", "injected", "detected", "recall",
                  "precision", "false_alarms", "lost", "duplicated", "late"]],
            hide_index=True,
        )  # fmt: skip
        _trend(runs)
        chosen = st.selectbox("Run", runs["run_id"].tolist(), key="exp_run")
        if chosen is not None:
            _run_detail(ctx, runs[runs["run_id"] == chosen].iloc[0])
