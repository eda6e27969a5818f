"""Trend view: "what is the trend?" Stable window means from sensor_data_agg, alert distributions,
period comparison and correlations. Results are cached for 30 s; the period end is rounded to the
minute so the cache is shared."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from fleetsim.cloud.dashboard import charts, logic
from fleetsim.cloud.dashboard.queries import MEASUREMENT_COLUMNS
from fleetsim.cloud.dashboard.queries import devices as qdev
from fleetsim.cloud.dashboard.queries import trends as qtr
from fleetsim.cloud.dashboard.ui import Context

SCOPES = {"Site": "site", "Device": "device", "Fleet": "fleet"}


def _period() -> logic.Period:
    cols = st.columns([2, 3])
    choice = cols[0].selectbox("Period", [*logic.PRESETS, "Custom days"], key="trend_period")
    now = logic.utc_now()
    if choice != "Custom days":
        return logic.preset_period(choice, now)
    today = now.date()
    picked = cols[1].date_input("Days (UTC)", (today - timedelta(days=1), today), key="trend_days")
    if not isinstance(picked, tuple | list) or len(picked) != 2:
        raise ValueError("pick a first and a last day")
    return logic.day_period(picked[0], picked[1])


def _keys(ctx: Context, scope: str, period: logic.Period) -> list[str] | None:
    if scope == "fleet":
        return None  # one fleet-wide key, whatever the job calls it
    if scope == "site":
        options = ctx.load(qdev.sites, "slow")["site"].tolist()
    else:
        # From the registry, not DISTINCT over the aggregate table (that scans every window).
        options = ctx.load(qdev.device_ids, "slow")["device_id"].tolist()
    label = "Sites" if scope == "site" else "Devices"
    default = options[:5]
    chosen = st.multiselect(label, options, default=default, key=f"trend_keys_{scope}", max_selections=20)
    return list(chosen)


def _window_means(
    ctx: Context, scope: str, keys: list[str] | None, measurement: str, period: logic.Period
) -> None:
    st.subheader(f"Window means of {measurement}")
    series = ctx.load(
        qtr.window_series,
        "slow",
        scope=scope,
        keys=keys,
        measurement=measurement,
        start=period.start,
        end=period.end,
    )
    if series.empty:
        st.info("No aggregated windows for this choice and period (the streaming job writes them).")
        return
    charts.time_chart(
        series,
        "window_end",
        "mean",
        color="key",
        height=300,
        x_title="window end (UTC)",
        y_title=f"{measurement} (window mean)",
    )
    summary = ctx.load(qtr.window_summary, "slow", scope=scope, keys=keys, start=period.start, end=period.end)
    st.dataframe(summary, hide_index=True)


def _fleet_evolution(ctx: Context, period: logic.Period) -> None:
    st.subheader("Fleet evolution")
    fleet = ctx.load(qtr.fleet_evolution, "slow", start=period.start, end=period.end)
    if fleet.empty:
        st.info("No fleet-wide windows in this period.")
        return
    cols = st.columns(len(MEASUREMENT_COLUMNS))
    for col, m in zip(cols, MEASUREMENT_COLUMNS, strict=True):
        col.caption(m)
        charts.time_chart(fleet, "window_end", f"{m}_mean", height=160, x_title=None, y_title="", where=col)
    st.caption("Messages per window and readings flagged WARNING/FAILURE")
    charts.time_chart(
        fleet, "window_end", ["n_messages", "n_warnings", "n_failures"], kind="area", height=160,
        x_title="window end (UTC)", y_title="",
    )  # fmt: skip


def _alerts(ctx: Context, period: logic.Period) -> None:
    st.subheader("Alert distribution")
    dist = ctx.load(qtr.alert_distribution, "slow", start=period.start, end=period.end)
    if dist.empty:
        st.info("No alerts in this period.")
        return
    st.caption(f"{int(dist['alerts'].sum())} alerts in the period")
    cols = st.columns(3)
    cols[0].caption("by kind and severity")
    cols[0].bar_chart(
        dist.pivot_table(index="kind", columns="severity", values="alerts", aggfunc="sum"), height=260
    )
    cols[1].caption("by site")
    cols[1].bar_chart(dist.groupby("site")["alerts"].sum(), height=260, horizontal=True)
    cols[2].caption("by hour of day (UTC)")
    hours = dist.groupby("hour_utc")["alerts"].sum().reindex(range(24), fill_value=0)
    cols[2].bar_chart(hours, height=260)


def _compare(
    ctx: Context, scope: str, keys: list[str] | None, measurement: str, period: logic.Period
) -> None:
    st.subheader("Compare two periods")
    mode_label = st.radio("Compare with", list(logic.COMPARISONS), horizontal=True, key="trend_compare")
    other = logic.comparison_period(period, logic.COMPARISONS[mode_label])
    a = ctx.load(
        qtr.window_series,
        "slow",
        scope=scope,
        keys=keys,
        measurement=measurement,
        start=period.start,
        end=period.end,
    )
    b = ctx.load(
        qtr.window_series,
        "slow",
        scope=scope,
        keys=keys,
        measurement=measurement,
        start=other.start,
        end=other.end,
    )
    both = logic.align_periods(a, b, period.start, other.start)
    if both.dropna(how="all").empty:
        st.info("Nothing to compare in these periods.")
        return
    st.line_chart(both, height=260, x_label="minutes since period start", y_label=measurement)
    means = {name: df["mean"].mean() for name, df in (("current", a), ("compared", b)) if not df.empty}
    cols = st.columns(2)
    cols[0].metric("Current period mean", logic.fmt_num(means.get("current"), 2))
    cols[1].metric(
        f"{mode_label} mean",
        logic.fmt_num(means.get("compared"), 2),
        logic.delta(means.get("compared"), means.get("current"), 2),
        delta_color="off",
    )


def _correlation(ctx: Context, scope: str, keys: list[str] | None, period: logic.Period) -> None:
    st.subheader("Correlation")
    cols = st.columns(2)
    x = cols[0].selectbox(
        "x", MEASUREMENT_COLUMNS, index=MEASUREMENT_COLUMNS.index("temperature"), key="corr_x"
    )
    y = cols[1].selectbox("y", MEASUREMENT_COLUMNS, index=MEASUREMENT_COLUMNS.index("co2"), key="corr_y")
    pairs = ctx.load(
        qtr.correlation_pairs, "slow", scope=scope, keys=keys, x=x, y=y, start=period.start, end=period.end
    )
    if pairs.empty:
        st.info("No windows with both measurements.")
        return
    r = logic.pearson(pairs)
    st.metric(f"Pearson r ({x} vs {y}, window means)", logic.fmt_num(r, 2), help=f"{len(pairs)} windows")
    st.scatter_chart(
        pairs.rename(columns={"x": x, "y": y}),
        x=x,
        y=y,
        color="key" if scope != "fleet" else None,
        height=320,
    )


def render(ctx: Context) -> None:
    st.title("Trends")
    if not ctx.require_database():
        return
    with ctx.section():
        period = _period()
        cols = st.columns([1, 1, 3])
        scope = SCOPES[cols[0].radio("Per", list(SCOPES), key="trend_scope", horizontal=True)]
        measurement = cols[1].selectbox("Measurement", MEASUREMENT_COLUMNS, key="trend_measurement")
        any_windows = ctx.load(qtr.has_windows, "slow", scope=scope, start=period.start, end=period.end)
        if not bool(any_windows.iloc[0]["any"]):
            st.info(
                f"No aggregated windows per {scope} in this period: the streaming job writes them into "
                "sensor_data_agg once readings flow (`fleetsim up`). Try a longer period.",
                icon=":material/inbox:",
            )
            _alerts(ctx, period)
            return
        with cols[2]:
            keys = _keys(ctx, scope, period)
        st.caption(
            f"{period.start:%Y-%m-%d %H:%M} → {period.end:%Y-%m-%d %H:%M} UTC · sliding windows from "
            "sensor_data_agg"
        )
        chosen = keys is None or len(keys) > 0
        if not chosen:
            st.info("Choose at least one site or device.")
        tabs = st.tabs(["Window means", "Fleet evolution", "Alerts", "Compare periods", "Correlation"])
        with tabs[0], ctx.section():
            if chosen:
                _window_means(ctx, scope, keys, measurement, period)
        with tabs[1], ctx.section():
            _fleet_evolution(ctx, period)
        with tabs[2], ctx.section():
            _alerts(ctx, period)
        with tabs[3], ctx.section():
            if chosen:
                _compare(ctx, scope, keys, measurement, period)
        with tabs[4], ctx.section():
            _correlation(ctx, scope, keys if chosen else None, period)
