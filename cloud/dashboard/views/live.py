"""Live view: "what is happening now?" KPIs, map, incident feed, drill-down and fine-grained series;
below them the incident actions (acknowledge, resolve, note) as the operator role.

Everything below the pause toggle is a fragment re-run every ``dashboard.refresh_s`` seconds (no
page reload, the rest of the page and the widget states stay put).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fleetsim.cloud.dashboard import charts, incidents, logic, mapview
from fleetsim.cloud.dashboard.incidents import LIVE_STATES, SEVERITIES
from fleetsim.cloud.dashboard.incidents import VISIBLE_STATES as INCIDENT_STATES
from fleetsim.cloud.dashboard.queries import MEASUREMENT_COLUMNS
from fleetsim.cloud.dashboard.queries import devices as qdev
from fleetsim.cloud.dashboard.queries import live as qlive
from fleetsim.cloud.dashboard.ui import Context, empty_fleet_message
from fleetsim.kernel.clients import pg_connect

SERIES_WINDOWS = {"Last 5 minutes": 300, "Last 15 minutes": 900, "Last hour": 3600, "Last 6 hours": 21600}
TRACK_WINDOW_S = 1800.0
"""Mobile-device tracks cover the last 30 minutes."""
DRILL_KEY = "drill_device"
"""Session-state key of the device being drilled into (set by the map, the Devices page or the input)."""


def _on_map_select() -> None:
    sel: Any = st.session_state.get("fleet_map")
    try:
        objects = sel["selection"]["objects"]
    except (KeyError, TypeError):
        return
    for layer in (mapview.DEVICE_LAYER_ID, mapview.TRACK_LAYER_ID):
        picked = objects.get(layer) or []
        if picked:
            st.session_state[DRILL_KEY] = str(picked[0].get("device_id", ""))
            return


def _kpis(ctx: Context) -> None:
    a = ctx.cfg.alerts
    row = ctx.load(
        qlive.kpis,
        **ctx.offline,
        low_battery_pct=a.low_battery_pct,
        active_alert_s=ctx.cfg.dashboard.active_alert_s,
    ).iloc[0]
    prev: dict[str, Any] = st.session_state.get("kpi_prev", {})
    cur = {k: row[k] for k in row.index}

    def since(key: str, digits: int = 0) -> float | int | None:
        return logic.delta(cur.get(key), prev.get(key), digits)

    c = st.columns(4)
    c[0].metric(
        "Devices online",
        f"{int(row.online)} / {int(row.devices)}",
        since("online"),
        help=(
            "Heard from within its silence threshold (alerts.offline_after_s, or alerts.offline_intervals "
            "times its registered interval when longer); delta since the previous refresh."
        ),
    )
    c[1].metric(
        "Devices offline",
        int(row.offline),
        since("offline"),
        delta_color="inverse",
        help="Registered or reporting devices not heard from recently.",
    )
    c[2].metric(
        "Readings / min",
        int(row.messages_last_min),
        logic.delta(row.messages_last_min, row.messages_prev_min),
        help="Readings stamped in the last 60 s (event time); delta vs the minute before.",
    )
    c[3].metric(
        "Active alerts",
        int(row.active_alerts),
        logic.delta(row.active_alerts, row.previous_alerts),
        delta_color="inverse",
        help=f"Alerts raised in the last {ctx.cfg.dashboard.active_alert_s:.0f} s; delta vs the "
        "window before.",
    )
    c = st.columns(4)
    c[0].metric(
        "Mean temperature",
        logic.fmt_num(row.temperature_mean, 1, "°C"),
        since("temperature_mean", 1),
        delta_color="off",
        help="Online devices' latest readings.",
    )
    c[1].metric(
        "Mean humidity",
        logic.fmt_num(row.humidity_mean, 1, "%RH"),
        since("humidity_mean", 1),
        delta_color="off",
    )
    c[2].metric("Mean CO₂", logic.fmt_num(row.co2_mean, 0, "ppm"), since("co2_mean"), delta_color="off")
    c[3].metric(
        "Low battery",
        int(row.low_battery),
        since("low_battery"),
        delta_color="inverse",
        help=f"Latest battery below {ctx.cfg.alerts.low_battery_pct:.0f} %.",
    )
    c = st.columns(4)
    c[0].metric(
        "Open incidents",
        int(row.open_incidents),
        since("open_incidents"),
        delta_color="inverse",
        help="Incidents nobody has acknowledged yet (see the incident feed).",
    )
    c[1].metric(
        "Acknowledged incidents",
        int(row.acknowledged_incidents),
        since("acknowledged_incidents"),
        delta_color="off",
        help="Incidents someone is on, not resolved yet.",
    )
    st.caption(
        f"Status of online devices: {int(row.warning)} WARNING · {int(row.failure)} FAILURE. "
        f"Deltas of counts and means are since the previous refresh."
    )
    st.session_state["kpi_prev"] = cur
    newest_age = logic.age_seconds(row.newest_reading, logic.utc_now())
    # Stale when no device is within its own silence threshold, not when the newest reading is
    # older than the fleet-wide floor: a fleet of devices registered to report every 20 minutes
    # is silent for 19 of them, and calling that "the pipeline is stopped" was a false alarm.
    if newest_age is not None and newest_age > ctx.cfg.alerts.offline_after_s and int(row.online) == 0:
        st.warning(
            f"The newest reading is {logic.fmt_age(newest_age)} old: the pipeline is stopped or the data "
            "is historic. Figures above describe that last known state.",
            icon=":material/pause_circle:",
        )


def _map(ctx: Context) -> None:
    fleet = ctx.load(
        qlive.fleet_map,
        **ctx.offline,
        limit=ctx.cfg.dashboard.max_map_points,
    )
    # Tracks move slowly and cost one index descent per device: refreshed every 30 s, not every 5 s.
    tracks = ctx.load(qlive.mobile_tracks, "slow", window_s=TRACK_WINDOW_S)
    points, unplaced = mapview.map_points(fleet)
    paths = mapview.track_paths(tracks)
    counts = points["state"].value_counts() if not points.empty else pd.Series(dtype=int)
    legend = " · ".join(
        f"<span style='color:rgb{logic.STATE_COLORS[s]}'>●</span> {s} {int(counts.get(s, 0))}"
        for s in logic.STATES
    )
    st.markdown(
        f"{legend} · <span style='color:rgb(20,20,230)'>◯</span> real device · "
        "<span style='color:rgb(230,30,30)'>◯</span> open incident · size/opacity = battery",
        unsafe_allow_html=True,
    )
    st.pydeck_chart(
        mapview.build_deck(points, paths),
        height=460,
        key="fleet_map",
        on_select=_on_map_select,
        selection_mode="single-object",
    )
    notes = [f"{len(points)} devices on the map"]
    if unplaced:
        notes.append(f"{unplaced} without a location")
    if len(fleet) >= ctx.cfg.dashboard.max_map_points:
        notes.append(f"capped at dashboard.max_map_points={ctx.cfg.dashboard.max_map_points}")
    if not paths.empty:
        notes.append(
            f"{len(paths)} mobile tracks (last {TRACK_WINDOW_S / 60:.0f} min, newest 60 positions each, "
            "first 100 mobile devices by id)"
        )
    st.caption(" · ".join(notes) + ". Click a device to drill down.")


FEED_COLUMNS = (
    "incident_id", "state", "severity", "device_id", "site", "kind", "measurement", "opened_at", "last_seen",
    "n_alerts", "peak_value",
)  # fmt: skip


def _alert_feed(ctx: Context) -> None:
    st.subheader("Incidents")
    sites_df = ctx.load(qlive.incident_sites, "slow")
    sites = sites_df["site"].tolist() if not sites_df.empty else []
    f = st.columns(3)
    states = f[0].multiselect("State", list(INCIDENT_STATES), default=list(LIVE_STATES), key="inc_states")
    severities = f[1].multiselect("Severity", list(SEVERITIES), key="inc_severities")
    chosen_sites = f[2].multiselect("Site", sites, key="inc_sites")
    feed = ctx.load(
        qlive.incident_feed, states=states or list(INCIDENT_STATES), severities=severities, sites=chosen_sites
    )
    if feed.empty:
        st.info("No incidents match." if (states or severities or chosen_sites) else "No incidents.")
    else:
        st.dataframe(
            feed[list(FEED_COLUMNS)],
            hide_index=True,
            height=300,
            column_config={
                "opened_at": st.column_config.DatetimeColumn("opened (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                "last_seen": st.column_config.DatetimeColumn("last seen (UTC)", format="HH:mm:ss"),
            },
        )
    with st.expander("Raw alerts (every alert row)"):
        raw = ctx.load(qlive.alert_feed, limit=50)
        if raw.empty:
            st.info("No alerts yet.")
        else:
            st.dataframe(
                raw[["event_ts", "device_id", "kind", "measurement", "severity", "value", "site"]],
                hide_index=True,
                height=300,
                column_config={
                    "event_ts": st.column_config.DatetimeColumn("event time (UTC)", format="HH:mm:ss")
                },
            )


ACTIONS = {"Acknowledge": incidents.acknowledge, "Resolve": incidents.resolve, "Add note": incidents.add_note}


def _incident_actions(ctx: Context) -> None:
    """Acknowledge / resolve / note, as the operator role (the only writes the dashboard makes).
    Outside the auto-refreshing fragment, in a form: a refresh never eats a half-typed note."""
    flash = st.session_state.pop("inc_flash", None)
    if flash:
        st.success(flash)
    live = ctx.load(qlive.incident_feed, states=list(LIVE_STATES), severities=None, sites=None, limit=200)
    if live.empty:
        return
    labels = {
        int(r.incident_id): f"#{int(r.incident_id)} · {r.device_id} · {r.kind} {r.measurement} · {r.state}"
        for r in live.itertuples()
    }
    with st.form("incident_action", clear_on_submit=True):
        st.markdown(f"**Act on an incident** (recorded as *{ctx.cfg.alerts.operator}*, `[alerts] operator`)")
        cols = st.columns([3, 2])
        chosen = cols[0].selectbox("Incident", list(labels), format_func=labels.__getitem__, key="inc_pick")
        action = cols[1].radio("Action", list(ACTIONS), horizontal=True, key="inc_action")
        note = st.text_input("Note (required)", key="inc_note", max_chars=incidents.MAX_NOTE)
        submitted = st.form_submit_button("Apply", key="inc_apply")
    if not submitted or chosen is None:
        return
    try:
        conn = pg_connect(ctx.cfg, "operator", options="-c TimeZone=UTC -c statement_timeout=5000")
    except Exception as exc:
        st.error(f"Cannot reach the database as the operator role: {exc}")
        return
    try:
        inc = ACTIONS[str(action)](conn, int(chosen), ctx.cfg.alerts.operator, note or "")
    except incidents.IncidentError as exc:
        st.error(str(exc))
        return
    finally:
        conn.close()
    # Rerun so the KPIs, feed and map above (drawn before this form) show the new state at once.
    st.cache_data.clear()
    st.session_state["inc_flash"] = f"Incident #{inc.incident_id} is {inc.state}."
    st.rerun()


def _drill_down(ctx: Context) -> None:
    device_id = str(st.session_state.get(DRILL_KEY, "")).strip()
    if not device_id:
        st.caption("Select a device on the map or type its id to see its details.")
        return
    detail = ctx.load(qdev.device_detail, device_id=device_id, **ctx.offline)
    if detail.empty:
        st.warning(
            f"Unknown device {device_id!r}: it is neither registered nor reporting.", icon=":material/help:"
        )
        return
    d = detail.iloc[0]
    state = ("online" if d.online else "offline") + (f", {d.status}" if isinstance(d.status, str) else "")
    real = " · **real device**" if d.kind == "real" else ""
    st.markdown(
        f"**{device_id}** — {d['name'] or 'unnamed'} · {state}{real} · site {d.site or d.home_site or '—'}"
    )
    c = st.columns(6)
    c[0].metric("Temperature", logic.fmt_num(d.temperature, 1, "°C"))
    c[1].metric("Humidity", logic.fmt_num(d.humidity, 1, "%RH"))
    c[2].metric("CO₂", logic.fmt_num(d.co2, 0, "ppm"))
    c[3].metric("Pressure", logic.fmt_num(d.pressure, 1, "hPa"))
    c[4].metric("Battery", logic.fmt_num(d.battery, 0, "%"))
    c[5].metric("Last seen", logic.fmt_age(logic.age_seconds(d.last_seen, logic.utc_now())))
    if isinstance(d.fault, str) and d.fault:
        st.caption(f"Injected fault active at the last reading: {d.fault}")
    history = ctx.load(qdev.device_incidents, device_id=device_id, limit=20)
    if not history.empty:
        st.caption("Incidents of this device")
        st.dataframe(history, hide_index=True, height=200)
    alerts = ctx.load(qdev.device_alerts, device_id=device_id, limit=20)
    if not alerts.empty:
        st.dataframe(alerts, hide_index=True, height=200)


def _series(ctx: Context, chosen: list[str], window_s: int, measurement: str) -> None:
    if not chosen:
        st.caption("Choose devices to plot their raw readings.")
        return
    raw = ctx.load(qlive.device_series, device_ids=chosen, window_s=float(window_s))
    if raw.empty:
        st.info("No readings from these devices in that window.")
        return
    # Long format: devices report at different instants, a wide pivot would leave NaN gaps (no lines).
    charts.time_chart(
        raw, "ts", measurement, color="device_id", height=280, y_title=measurement, x_title="event time (UTC)"
    )


def _controls(ctx: Context) -> tuple[list[str], int, str]:
    ids_df = ctx.load(qdev.device_ids, "slow")
    ids = ids_df["device_id"].tolist() if not ids_df.empty else []
    cols = st.columns([2, 3, 2, 2])
    cols[0].text_input("Device id", key=DRILL_KEY, placeholder="click a device on the map")
    drilled = st.session_state.get(DRILL_KEY)
    fleet = ctx.load(
        qlive.fleet_map,
        **ctx.offline,
        limit=ctx.cfg.dashboard.max_map_points,
    )
    online = fleet.loc[fleet["online"], "device_id"].tolist() if not fleet.empty else []
    default = [drilled] if drilled in ids else (online or ids)[:3]
    chosen = cols[1].multiselect(
        "Devices to plot", ids, default=default, key="series_devices", max_selections=12
    )
    window = cols[2].selectbox("Window", list(SERIES_WINDOWS), key="series_window")
    measurement = cols[3].selectbox("Measurement", list(MEASUREMENT_COLUMNS), key="series_measurement")
    return chosen, SERIES_WINDOWS[window], measurement


def render(ctx: Context) -> None:
    st.title("Live fleet")
    if not ctx.require_database():
        return
    request = st.session_state.pop("drill_request", None)
    if request:
        # Set by another page (Devices) before switching here; the widget is not drawn yet.
        st.session_state[DRILL_KEY] = request
    top = st.columns([2, 5])
    paused = top[0].toggle("Pause auto-refresh", key="live_paused")
    top[1].caption(
        "Paused: figures frozen until you resume."
        if paused
        else f"Refreshing every {ctx.cfg.dashboard.refresh_s:g} s without reloading the page."
    )

    @st.fragment(run_every=None if paused else ctx.cfg.dashboard.refresh_s)
    def live_panel() -> None:
        if not ctx.has_devices():
            empty_fleet_message()
            return
        with ctx.section():
            _kpis(ctx)
        left, right = st.columns([3, 2])
        with left, ctx.section():
            _map(ctx)
        with right, ctx.section():
            _alert_feed(ctx)
        st.subheader("Drill-down")
        with ctx.section():
            chosen, window_s, measurement = _controls(ctx)
            _drill_down(ctx)
            _series(ctx, chosen, window_s, measurement)

    live_panel()
    with ctx.section():
        _incident_actions(ctx)
