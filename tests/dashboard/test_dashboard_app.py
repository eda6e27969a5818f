"""Streamlit AppTest runs of every page over a seeded, an empty and an unreachable database."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import SeedFacts
from prometheus_client import CollectorRegistry, Counter, Gauge
from streamlit.testing.v1 import AppTest

from fleetsim.cloud.dashboard import settings
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.service import serve_metrics

pytestmark = pytest.mark.integration

APP = str(Path(__file__).resolve().parents[2] / "cloud" / "dashboard" / "app.py")
HOSTILE = [
    "x' OR '1'='1",
    "'; DROP TABLE devices; --",
    "dev-ok-1'; DELETE FROM device_latest; --",
    "%",
    "dev_ok",
    "\\",
    "<script>alert(1)</script>",
    "💥" * 20,
]


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, Any]:
    return {m.label: m.value for m in at.metric}


def admin_scalar(cfg: FleetsimConfig, query: str) -> Any:
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()[0]
    finally:
        conn.close()


def table_counts(cfg: FleetsimConfig) -> tuple[int, int, int]:
    return (
        admin_scalar(cfg, "SELECT count(*) FROM devices"),
        admin_scalar(cfg, "SELECT count(*) FROM device_latest"),
        admin_scalar(cfg, "SELECT count(*) FROM sensor_data"),
    )


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


# ----------------------------------------------------------------------------------------- live
def test_live_kpis_map_and_feed_match_database(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    last_min = "SELECT count(*) FROM sensor_data WHERE ts >= now() - interval '1 minute' AND ts < now()"
    before = admin_scalar(app_cfg, last_min)
    at = run_page()
    after = admin_scalar(app_cfg, last_min)
    m = metrics(at)
    assert m["Devices online"] == f"{seeded.online} / {seeded.devices}"
    assert m["Devices offline"] == str(seeded.offline)
    assert m["Low battery"] == str(seeded.low_battery)
    assert m["Active alerts"] == str(seeded.active_alerts)
    assert m["Mean temperature"] == f"{seeded.temperature_mean:.1f} °C"
    assert m["Mean humidity"] == f"{seeded.humidity_mean:.1f} %RH"
    assert m["Mean CO₂"] == f"{seeded.co2_mean:.0f} ppm"
    # Rows only leave the last-minute window as time passes: the shown count lies between the two.
    assert after <= int(m["Readings / min"]) <= before
    alerts = next(mt for mt in at.metric if mt.label == "Active alerts")
    assert float(alerts.delta) == seeded.active_alerts - seeded.previous_alerts

    decks = at.get("deck_gl_json_chart")
    assert len(decks) == 1
    spec = json.loads(decks[0].proto.json)
    layers = {layer["id"]: layer for layer in spec["layers"]}
    assert layers["devices"]["@@type"] == "ScatterplotLayer"
    assert layers["tracks"]["@@type"] == "PathLayer"
    on_map = {p["device_id"]: p for p in layers["devices"]["data"]}
    assert len(on_map) == seeded.devices
    assert on_map["dev-fail-3"]["state"] == "FAILURE"
    assert on_map["dev-off-4"]["state"] == "OFFLINE"
    assert on_map["never-7"]["state"] == "OFFLINE"
    assert "real device" in on_map["real-6"]["real"]
    assert on_map["dev-ok-1"]["real"] == ""
    assert len(layers["real-devices"]["data"]) == len(seeded.real_devices)
    assert on_map["dev-warn-2"]["bat"] == "10 %"
    assert [t["device_id"] for t in layers["tracks"]["data"]] == list(seeded.mobile_devices)

    # The raw alert rows (under the incident feed, which is empty here: the seed has no incidents).
    feed = next(d.value for d in at.dataframe if "event_ts" in d.value.columns)
    assert len(feed) == admin_scalar(app_cfg, "SELECT count(*) FROM sensor_alerts")
    assert feed.iloc[0]["device_id"] == "dev-fail-3"  # newest alert first


def test_live_drill_down_known_unknown_and_hostile(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    at = run_page()
    at.text_input(key="drill_device").set_value("dev-warn-2").run()
    assert not at.exception
    m = metrics(at)
    assert m["Temperature"] == "23.0 °C"
    assert m["Battery"] == "10 %"
    counts = table_counts(app_cfg)
    for bad in ["no-such-device", *HOSTILE]:
        at.text_input(key="drill_device").set_value(bad).run()
        assert not at.exception, bad
        assert "Unknown device" in texts(at, "warning"), bad
    assert table_counts(app_cfg) == counts


# --------------------------------------------------------------------------------------- trends
def test_trends_window_means_and_alerts_match_database(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    oracle = (
        "SELECT avg(temperature_mean) FROM sensor_data_agg WHERE scope = 'site' AND key = 'alpha' "
        "AND window_start >= date_trunc('minute', now()) + interval '1 minute' - interval '1 hour'"
    )
    before = admin_scalar(app_cfg, oracle)
    at = run_page("trends")
    after = admin_scalar(app_cfg, oracle)
    summary = at.dataframe[0].value.set_index("key")
    assert list(summary.index) == list(seeded.sites)
    shown = float(summary.loc["alpha", "temperature_mean"])
    assert min(before, after) - 1e-9 <= shown <= max(before, after) + 1e-9
    alerts_last_hour = admin_scalar(
        app_cfg, "SELECT count(*) FROM sensor_alerts WHERE event_ts >= now() - interval '1 hour'"
    )
    assert f"{alerts_last_hour} alerts in the period" in texts(at, "caption")
    assert "Pearson r (temperature vs co2, window means)" in metrics(at)
    assert len(at.get("arrow_line_chart") or at.get("vega_lite_chart")) >= 1


def test_trends_per_device_and_fleet_scopes(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    at = run_page("trends")
    at.radio(key="trend_scope").set_value("Device").run()
    assert not at.exception
    assert list(at.dataframe[0].value["key"]) == ["dev-ok-1", "dev-warn-2"]
    at.radio(key="trend_scope").set_value("Fleet").run()
    assert not at.exception
    assert list(at.dataframe[0].value["key"]) == ["all"]


# ------------------------------------------------------------------------------------- pipeline
def test_pipeline_figures_and_truthful_health(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    # Known components where the configuration points: a bridge metrics endpoint (42 forwarded,
    # state ok), a listening "kafka", nothing on the mosquitto and sim ports, stream metrics off.
    registry = CollectorRegistry()
    Counter("fleetsim_bridge_forwarded", "f", registry=registry).inc(42)
    Gauge("fleetsim_bridge_state", "s", registry=registry).set(0)
    kafka = socket.create_server(("127.0.0.1", 0))
    bridge_port, mqtt_port, sim_port = _free_ports(3)
    cfg = app_cfg.with_overrides(
        {
            "bridge.metrics_port": bridge_port,
            "kafka.bootstrap": f"127.0.0.1:{kafka.getsockname()[1]}",
            "mqtt.port": mqtt_port,
            "simulation.metrics_port": sim_port,
            "spark.metrics_port": 0,
        }
    )
    settings.inject(cfg)
    with kafka, serve_metrics(registry, bridge_port):
        at = run_page("pipeline")
    m = metrics(at)
    assert m["Late rows dropped"] == str(seeded.late_rows_dropped)
    assert m["Records"] == str(sum(seeded.deadletters.values()) + sum(seeded.rejects.values()))
    assert m["Latency p50"] == "150 ms"
    # From the windowed query's newest batch that had input (pipeline_metrics), not a table scan.
    assert "aggregate: 2.0 d ago" in texts(at, "caption"), texts(at, "caption")
    health = at.dataframe[0].value.set_index("component")
    # Measured, never assumed: each state is what the component's port answered just now.
    assert health.loc["bridge", "state"] == "up" and "42 records forwarded" in health.loc["bridge", "detail"]
    assert health.loc["kafka", "state"] == "up"
    assert health.loc["postgres", "state"] == "up"
    assert health.loc["mosquitto", "state"] == "down"
    assert health.loc["sim", "state"] == "down"
    assert health.loc["stream", "state"] == "unknown"  # metrics off: cannot be measured
    assert health.loc["dashboard", "state"] == "down"  # AppTest serves no HTTP
    # Database evidence is added apart: batch metrics were written seconds ago.
    assert health.loc["stream (db)", "state"] == "up"
    assert health.loc["postgres (db)", "state"] == "up"
    # The windowed query's watermark is two days older than the newest reading written.
    assert health.loc["windows", "state"] == "behind", health.loc["windows", "detail"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    try:
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# -------------------------------------------------------------------------------------- devices
def test_devices_page_lists_registry_and_survives_hostile_search(
    seeded: SeedFacts, app_cfg: FleetsimConfig
) -> None:
    at = run_page("devices")
    m = metrics(at)
    assert m["Devices"] == str(seeded.devices)
    assert m["Real devices"] == str(len(seeded.real_devices))
    rows = at.dataframe[0].value
    assert len(rows) == seeded.devices
    assert rows.iloc[0]["device_id"] == "real-6" and rows.iloc[0]["real"] == "★ real"
    at.text_input(key="dev_search").set_value("truck").run()
    assert list(at.dataframe[0].value["device_id"]) == ["truck-5"]
    counts = table_counts(app_cfg)
    for bad in HOSTILE:
        at.text_input(key="dev_search").set_value(bad[:64]).run()
        assert not at.exception, bad
        # LIKE wildcards are escaped: "%" and "dev_ok" match no id literally.
        assert not at.dataframe or len(at.dataframe[0].value) == 0, bad
        assert "No device matches" in texts(at, "info"), bad
    assert table_counts(app_cfg) == counts


# ------------------------------------------------------------------------------ empty / unreachable
@pytest.mark.parametrize("page", [None, "trends", "pipeline", "devices"])
def test_empty_database_explains_itself(empty_db: FleetsimConfig, page: str | None) -> None:
    at = run_page(page)
    assert not at.error
    shown = texts(at, "info")
    expected = {
        None: "No devices and no readings yet",
        "trends": "No aggregated windows per site in this period",
        "pipeline": "No micro-batch metrics",
        "devices": "No devices and no readings yet",
    }[page]
    assert expected in shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("page", [None, "trends", "pipeline", "devices"])
def test_unreachable_database_shows_message(fleet_cfg: FleetsimConfig, page: str | None) -> None:
    import streamlit as st

    from fleetsim.cloud.dashboard import settings

    st.cache_data.clear()
    settings.inject(fleet_cfg.with_overrides({"postgres.port": _free_port()}))
    try:
        at = run_page(page)
    finally:
        settings.inject(None)
    assert "Database unavailable" in texts(at, "error")
    assert not at.metric


def _age_fleet(cfg: FleetsimConfig, seconds: int, interval_s: float | None) -> None:
    """Every device's latest reading ``seconds`` older; every registered device reporting every
    ``interval_s``."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE devices SET interval_s = %s", (interval_s,))
            cur.execute(
                "UPDATE device_latest SET ts = ts - make_interval(secs => %s), "
                "ingest_ts = ingest_ts - make_interval(secs => %s)",
                (seconds, seconds),
            )
    finally:
        conn.close()


STALE = "the pipeline is stopped"


def test_stale_feed_banner_follows_each_devices_own_silence_threshold(
    seeded: SeedFacts, app_cfg: FleetsimConfig
) -> None:
    """The floor is 900 s (app_cfg) and alerts.offline_intervals 1.5: a device registered to report
    every 1,200 s is silent for 1,800 s before it is offline."""
    import streamlit as st

    assert STALE not in texts(run_page(), "warning")
    # Slow reporters 1,000 s after their last reading: past the fleet-wide floor, within their own.
    _age_fleet(app_cfg, 1000, 1200.0)
    st.cache_data.clear()
    at = run_page()
    assert int(metrics(at)["Devices online"].split(" / ")[0]) > 0
    assert STALE not in texts(at, "warning")
    # 1,000 s more: every device past its threshold, the feed is stale.
    _age_fleet(app_cfg, 1000, 1200.0)
    st.cache_data.clear()
    at = run_page()
    assert metrics(at)["Devices online"].startswith("0 / ")
    assert STALE in texts(at, "warning")
