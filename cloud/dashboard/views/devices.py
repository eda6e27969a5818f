"""Devices page: the registry (and unregistered reporters) with last-seen state; real devices marked."""

from __future__ import annotations

import streamlit as st

from fleetsim.cloud.dashboard import logic
from fleetsim.cloud.dashboard.queries import devices as qdev
from fleetsim.cloud.dashboard.ui import Context, empty_fleet_message

ALL = "(all)"
KINDS = [ALL, "simulated", "real", "unregistered"]


def render(ctx: Context) -> None:
    st.title("Devices")
    if not ctx.require_database():
        return
    with ctx.section():
        counts = ctx.load(qdev.device_counts, "live", **ctx.offline)
        if counts.empty:
            empty_fleet_message()
            return
        c = st.columns(4)
        c[0].metric("Devices", int(counts["devices"].sum()))
        c[1].metric("Online", int(counts["online"].sum()))
        c[2].metric("Real devices", int(counts.loc[counts["kind"] == "real", "devices"].sum()))
        c[3].metric("Mobile", int(counts.loc[counts["type"] == "mobile", "devices"].sum()))

        cols = st.columns([3, 2, 2])
        search = cols[0].text_input("Search id or name", key="dev_search", max_chars=64)
        sites = [ALL, *ctx.load(qdev.sites, "slow")["site"].tolist()]
        site = cols[1].selectbox("Site", sites, key="dev_site")
        kind = cols[2].selectbox("Kind", KINDS, key="dev_kind")
        rows = ctx.load(
            qdev.device_list,
            **ctx.offline,
            search=search.strip(),
            site=None if site == ALL else site,
            kind=None if kind == ALL else kind,
        )
        if rows.empty:
            st.info("No device matches these filters.")
            return
        rows.insert(0, "real", rows["kind"].eq("real").map({True: "★ real", False: ""}))
        rows.insert(
            2,
            "state",
            [
                ("online" if on else "offline") + (f" · {s}" if on and isinstance(s, str) else "")
                for on, s in zip(rows["online"], rows["status"], strict=True)
            ],
        )
        now = logic.utc_now()
        rows["last_seen_ago"] = [logic.fmt_age(logic.age_seconds(t, now)) for t in rows["last_seen"]]
        st.caption(f"{len(rows)} devices shown (max 1000); real devices first.")
        event = st.dataframe(
            rows.drop(columns=["online", "status"]),
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key="dev_table",
        )
        picked = event.selection.rows if event is not None else []
        if picked:
            device_id = str(rows.iloc[picked[0]]["device_id"])
            if st.button(f"Show {device_id} on the live view", key="dev_open"):
                st.session_state["drill_request"] = device_id
                st.switch_page("pages/live.py")
