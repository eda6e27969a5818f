"""The live page's incidents: KPIs, the feed and its filters, the map's marks, and the acknowledge /
resolve / note actions, which write as the operator role (checked in PostgreSQL)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dashboard_seed import execute as _exec
from streamlit.testing.v1 import AppTest
from test_dashboard_app import APP

from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _feed(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "incident_id" in d.value.columns)


def test_kpis_feed_filters_and_map_marks(with_incidents: dict[str, int], app_cfg: FleetsimConfig) -> None:
    at = _page()
    m = {x.label: x.value for x in at.metric}
    assert (m["Open incidents"], m["Acknowledged incidents"]) == ("1", "1")
    # Default: the live ones, newest first.
    assert _feed(at)["device_id"].tolist() == ["dev-ok-1", "dev-fail-3"]
    at.multiselect(key="inc_severities").set_value(["critical"]).run()
    assert _feed(at)["device_id"].tolist() == ["dev-fail-3"]
    at.multiselect(key="inc_severities").set_value([]).run()
    at.multiselect(key="inc_states").set_value(["resolved"]).run()
    assert _feed(at)["device_id"].tolist() == ["truck-5"]
    at.multiselect(key="inc_states").set_value(["open", "acknowledged", "resolved"]).run()
    at.multiselect(key="inc_sites").set_value(["beta", "gamma"]).run()
    assert sorted(_feed(at)["device_id"]) == ["dev-fail-3", "truck-5"]
    assert not at.exception

    spec = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    layers = {layer["id"]: layer for layer in spec["layers"]}
    on_map = {p["device_id"]: p for p in layers["devices"]["data"]}
    flagged = {d for d, p in on_map.items() if p["incident"]}
    assert flagged == {"dev-ok-1", "dev-fail-3"}  # the resolved one is not marked
    assert len(layers["incident-devices"]["data"]) == 2

    # The drill-down lists the device's incident history.
    at.text_input(key="drill_device").set_value("dev-fail-3").run()
    history = next(d.value for d in at.dataframe if "acknowledged_by" in d.value.columns)
    assert history[["incident_id", "state", "acknowledged_by"]].values.tolist() == [
        [with_incidents["dev-fail-3"], "acknowledged", "bob"]
    ]


def test_acknowledge_and_resolve_from_the_dashboard(
    with_incidents: dict[str, int], app_cfg: FleetsimConfig
) -> None:
    iid = with_incidents["dev-ok-1"]
    at = _page()
    at.selectbox(key="inc_pick").set_value(iid)
    at.radio(key="inc_action").set_value("Acknowledge")
    at.text_input(key="inc_note").input("looking at the CO2 sensor")
    at.button(key="inc_apply").click().run()
    assert not at.exception
    assert f"Incident #{iid} is acknowledged." in [s.value for s in at.success]
    row = _exec(
        app_cfg,
        "admin",
        "SELECT state, acknowledged_by, ack_note FROM incidents WHERE incident_id = %s",
        (iid,),
    )
    assert row == [("acknowledged", app_cfg.alerts.operator, "looking at the CO2 sensor")]
    m = {x.label: x.value for x in at.metric}
    assert (m["Open incidents"], m["Acknowledged incidents"]) == ("0", "2")

    # No note: refused, with the reason, nothing written.
    at.selectbox(key="inc_pick").set_value(iid)
    at.radio(key="inc_action").set_value("Resolve")
    at.button(key="inc_apply").click().run()
    assert "a note is required" in " ".join(e.value for e in at.error)
    assert _exec(app_cfg, "admin", "SELECT state FROM incidents WHERE incident_id = %s", (iid,)) == [
        ("acknowledged",)
    ]
    at.selectbox(key="inc_pick").set_value(iid)
    at.radio(key="inc_action").set_value("Resolve")
    at.text_input(key="inc_note").input("sensor replaced")
    at.button(key="inc_apply").click().run()
    assert _exec(
        app_cfg,
        "admin",
        "SELECT state, resolved_by, resolve_note FROM incidents WHERE incident_id = %s",
        (iid,),
    ) == [("resolved", app_cfg.alerts.operator, "sensor replaced")]
    events = _exec(
        app_cfg,
        "admin",
        "SELECT action, actor FROM incident_events WHERE incident_id = %s ORDER BY event_id",
        (iid,),
    )
    assert events == [("acknowledged", app_cfg.alerts.operator), ("resolved", app_cfg.alerts.operator)]
