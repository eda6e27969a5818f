"""Pipeline view: is the pipeline healthy and keeping up? Throughput, event-to-row latency, batch
durations, watermark drops, dead letters, and per-component health measured from here (TCP connect,
metrics scrape) plus what the database proves."""

from __future__ import annotations

import streamlit as st

from fleetsim.cloud.dashboard import charts, health, logic
from fleetsim.cloud.dashboard.queries import pipeline as qpipe
from fleetsim.cloud.dashboard.ui import Context
from fleetsim.kernel.config import FleetsimConfig

WINDOWS = {"Last 15 minutes": 900, "Last hour": 3600, "Last 6 hours": 21600, "Last 24 hours": 86400}


@st.cache_data(ttl=10.0, show_spinner=False)
def _measured_health(_cfg: FleetsimConfig, key: str) -> list[health.ComponentHealth]:
    return health.measured_health(_cfg)


def _health(ctx: Context) -> None:
    st.subheader("Components")
    fresh = ctx.load(qpipe.freshness).iloc[0].to_dict()
    now = fresh.get("db_now") or logic.utc_now()
    stale_after = max(30.0, 10 * ctx.cfg.spark.trigger_interval_s)
    s = ctx.cfg.spark
    db_rows = health.database_health(fresh, now, stale_after)
    db_rows.append(health.windows_health(fresh, s.state_delay_s, s.windows_behind_after_s))
    rows = health.merge(_measured_health(ctx.cfg, ctx.pool.key), db_rows)
    st.dataframe(
        [{"component": r.name, "state": r.state, "detail": r.detail, "source": r.source} for r in rows],
        hide_index=True,
        column_config={"detail": st.column_config.TextColumn(width="large")},
    )
    links = [f"[Spark application UI](http://127.0.0.1:{ctx.cfg.spark.ui_port})"]
    if ctx.cfg.spark.master_ui_url:
        links.append(f"[Spark master UI]({ctx.cfg.spark.master_ui_url})")
    st.markdown(" · ".join(links) + " (the application UI answers only while the streaming job runs)")
    ages = {
        k: logic.fmt_age(logic.age_seconds(fresh.get(k), now))
        for k in (
            "newest_row_written",
            "newest_batch",
            "newest_alert",
            "newest_aggregate",
            "newest_deadletter",
        )
    }
    st.caption(
        f"Last written — reading: {ages['newest_row_written']} ago · "
        f"batch metrics: {ages['newest_batch']} ago · "
        f"alert: {ages['newest_alert']} ago · aggregate: {ages['newest_aggregate']} ago · dead letter: "
        f"{ages['newest_deadletter']} ago"
    )


def _batches(ctx: Context, window_s: int) -> None:
    st.subheader("Streaming job")
    summary = ctx.load(qpipe.batch_summary, window_s=float(window_s))
    if summary.empty:
        st.info(
            "No micro-batch metrics in this window: the streaming job is not running or has not "
            "recorded a batch yet (`fleetsim stream`)."
        )
        return
    total = summary.sum(numeric_only=True)
    c = st.columns(5)
    c[0].metric(
        "Throughput",
        logic.fmt_num(summary["rows_per_s"].max(), 0, "rows/s"),
        help="Input rows per second of the busiest query over the window.",
    )
    c[1].metric(
        "Latency p50",
        logic.fmt_num(summary["latency_p50_ms"].median(), 0, "ms"),
        help="Event-to-row latency, median of the batches' p50.",
    )
    c[2].metric("Latency p95 (max)", logic.fmt_num(summary["latency_p95_ms_max"].max(), 0, "ms"))
    c[3].metric("Batch duration p50", logic.fmt_num(summary["batch_ms_p50"].median(), 0, "ms"))
    c[4].metric(
        "Late rows dropped",
        int(total.get("late_rows_dropped", 0)),
        help="Rows behind the watermark, dropped by the aggregation.",
    )
    st.dataframe(summary, hide_index=True)
    b = ctx.load(qpipe.batches, window_s=float(window_s))
    cols = st.columns(3)
    cols[0].caption("Throughput (rows/s)")
    charts.time_chart(
        b, "recorded_at", "processed_rate", color="query_name", height=220, y_title="", where=cols[0]
    )
    cols[1].caption("Event-to-row latency p50 / p95 (ms)")
    lat = b.groupby("recorded_at", as_index=False)[["latency_p50_ms", "latency_p95_ms"]].max()
    charts.time_chart(
        lat, "recorded_at", ["latency_p50_ms", "latency_p95_ms"], height=220, y_title="", where=cols[1]
    )
    cols[2].caption("Batch duration (ms)")
    charts.time_chart(
        b, "recorded_at", "batch_duration_ms", color="query_name", height=220, y_title="", where=cols[2]
    )


def _deadletters(ctx: Context, window_s: int) -> None:
    st.subheader("Dead letters and rejects")
    by_reason = ctx.load(qpipe.deadletters_by_reason, window_s=float(window_s))
    if by_reason.empty:
        st.success("No dead-lettered or rejected records in this window.")
    else:
        cols = st.columns([2, 3])
        cols[0].metric("Records", int(by_reason["records"].sum()))
        cols[0].dataframe(by_reason, hide_index=True)
        cols[1].bar_chart(
            by_reason.pivot_table(index="reason", columns="source", values="records", aggfunc="sum"),
            height=240,
            horizontal=True,
        )
    recent = ctx.load(qpipe.recent_deadletters, limit=20)
    if not recent.empty:
        with st.expander("Newest dead letters"):
            st.dataframe(recent, hide_index=True)


def render(ctx: Context) -> None:
    st.title("Pipeline")
    if not ctx.require_database():
        return
    window = st.selectbox("Window", list(WINDOWS), index=1, key="pipe_window")
    paused = st.toggle("Pause auto-refresh", key="pipe_paused")

    @st.fragment(run_every=None if paused else ctx.cfg.dashboard.refresh_s)
    def panel() -> None:
        with ctx.section():
            _health(ctx)
        with ctx.section():
            _batches(ctx, WINDOWS[window])
        with ctx.section():
            _deadletters(ctx, WINDOWS[window])

    panel()
