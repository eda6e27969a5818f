"""Unit tests of the dashboard's pure parts: formatting, periods, map payload, health, CLI command."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from fleetsim.cloud.dashboard import health, logic, mapview, navigation, settings
from fleetsim.cloud.dashboard.cli import streamlit_command
from fleetsim.cloud.dashboard.queries._sql import check_scope, like_pattern, measurement_column
from fleetsim.kernel.config import load_config

NOW = datetime(2026, 3, 1, 12, 30, 45, tzinfo=UTC)


def _fleet(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {
        "device_id": "d", "kind": "simulated", "site": "s", "lat": 1.0,
        "lon": 2.0, "age_s": 30.0, "online": True, "state": "OK",
        "fault": None, "battery": 50.0, "temperature": 20.0, "humidity": 40.0, "co2": 600.0,
        "pressure": 1000.0,
    }  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in rows])


# ------------------------------------------------------------------------------------ formatting
@pytest.mark.parametrize(
    ("value", "digits", "unit", "expected"),
    [(21.04, 1, "°C", "21.0 °C"), (None, 1, "°C", "—"), (float("nan"), 0, "", "—"), ("x", 0, "", "—")],
)
def test_fmt_num(value: object, digits: int, unit: str, expected: str) -> None:
    assert logic.fmt_num(value, digits, unit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "never"), (42, "42 s"), (300, "5 min"), (7200, "2.0 h"), (259200, "3.0 d")],
)
def test_fmt_age(seconds: float | None, expected: str) -> None:
    assert logic.fmt_age(seconds) == expected


def test_delta_only_between_numbers() -> None:
    assert logic.delta(5, 3) == 2
    assert logic.delta(5, None) is None
    assert logic.delta(float("nan"), 1) is None


def test_delta_rounded_to_the_shown_precision() -> None:
    # Streamlit prints a float delta with repr(): 17 digits of a mean's noise on the live page.
    got = logic.delta(55.28960459183673528, 55.1, 1)
    assert got == 0.2 and str(got) == "0.2"
    assert str(logic.delta(0.1 + 0.2, 0.0, 2)) == "0.3"
    counts = logic.delta(12.0, 5.0)
    assert counts == 7 and isinstance(counts, int)
    assert str(logic.delta(5.01, 5.04, 1)) == "0.0"  # not "-0.0" (a down arrow for no change)


def test_battery_scales_are_bounded_and_vectorised_alike() -> None:
    values = pd.Series([-5.0, 0.0, 15.0, 100.0, 140.0, None], dtype="float64")
    assert mapview.battery_radii(values) == [round(logic.battery_radius(v), 1) for v in values]
    assert mapview.battery_alphas(values) == [logic.battery_alpha(v) for v in values]
    assert logic.battery_radius(0) == 3.0 and logic.battery_radius(100) == 8.0
    assert logic.battery_alpha(None) == 200


# --------------------------------------------------------------------------------------- periods
def test_preset_period_ends_on_next_minute() -> None:
    p = logic.preset_period("Last hour", NOW)
    assert p.end == datetime(2026, 3, 1, 12, 31, tzinfo=UTC)
    assert p.length == timedelta(hours=1)
    with pytest.raises(ValueError, match="unknown period"):
        logic.preset_period("'; DROP TABLE x; --", NOW)


def test_day_period_and_comparisons() -> None:
    p = logic.day_period(date(2026, 3, 1), date(2026, 3, 2))
    assert (p.start, p.end) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert logic.comparison_period(p, "previous").end == p.start
    assert logic.comparison_period(p, "week").start == p.start - timedelta(days=7)
    with pytest.raises(ValueError):
        logic.day_period(date(2026, 3, 2), date(2026, 3, 1))
    with pytest.raises(ValueError):
        logic.comparison_period(p, "year")


def test_align_periods_overlays_by_offset() -> None:
    a = pd.DataFrame({"window_start": [NOW, NOW + timedelta(minutes=1)], "mean": [1.0, 2.0]})
    b = pd.DataFrame({"window_start": [NOW - timedelta(days=1)], "mean": [5.0]})
    both = logic.align_periods(a, b, NOW, NOW - timedelta(days=1))
    assert both.loc[0.0, "current"] == 1.0 and both.loc[0.0, "compared"] == 5.0
    assert math.isnan(both.loc[1.0, "compared"])


def test_pearson() -> None:
    df = pd.DataFrame({"x": [1, 2, 3, 4], "y": [2, 4, 6, 8.5]})
    assert logic.pearson(df) == pytest.approx(0.998, abs=1e-3)
    assert logic.pearson(df.head(2)) is None
    assert logic.pearson(pd.DataFrame({"x": [1, 1, 1], "y": [1, 2, 3]})) is None


# ----------------------------------------------------------------------------------- SQL guards
@pytest.mark.parametrize("bad", ["co2; DROP TABLE devices", "temperature_mean", "", "CO2"])
def test_measurement_whitelist_rejects_anything_else(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown measurement"):
        measurement_column(bad)
    assert measurement_column("co2") == "co2"


def test_scope_whitelist() -> None:
    with pytest.raises(ValueError):
        check_scope("site' OR 1=1")
    assert check_scope("fleet") == "fleet"


def test_like_pattern_escapes_wildcards() -> None:
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"


# ------------------------------------------------------------------------------------------- map
def test_map_points_colours_states_counts_unplaced_and_escapes() -> None:
    fleet = _fleet([
        {"device_id": "ok", "state": "OK", "battery": 100.0},
        {"device_id": "bad", "state": "FAILURE", "battery": 0.0, "fault": "<b>spike</b>"},
        {"device_id": "gone", "state": "OFFLINE", "kind": "real", "site": "<img src=x onerror=alert(1)>"},
        {"device_id": "nowhere", "lat": None, "lon": None},
    ])  # fmt: skip
    points, unplaced = mapview.map_points(fleet)
    assert unplaced == 1
    by_id = points.set_index("device_id")
    assert by_id.loc["ok", "fill"] == [*logic.STATE_COLORS["OK"], 255]
    assert by_id.loc["bad", "fill"] == [*logic.STATE_COLORS["FAILURE"], 90]
    assert by_id.loc["ok", "radius"] == 8.0 and by_id.loc["bad", "radius"] == 3.0
    assert by_id.loc["gone", "real"] != "" and by_id.loc["ok", "real"] == ""
    assert "<img" not in by_id.loc["gone", "site"] and "&lt;img" in by_id.loc["gone", "site"]
    assert "<b>" not in by_id.loc["bad", "fault"]
    assert by_id.loc["ok", "age"] == "30 s"
    assert by_id.loc["ok", "t"] == "20.0 °C"


def test_deck_json_is_compact_and_has_three_layers() -> None:
    fleet = _fleet([{"device_id": "r", "kind": "real"}, {"device_id": "s"}])
    tracks = pd.DataFrame({"device_id": ["m", "m", "m", "lonely"], "lon": [1.0, 1.1, 1.2, 3.0],
                           "lat": [2.0, 2.1, 2.2, 4.0]})  # fmt: skip
    points, _ = mapview.map_points(fleet)
    paths = mapview.track_paths(tracks)
    assert paths["device_id"].tolist() == ["m"]  # a single position is no track
    assert paths.iloc[0]["path"] == [[1.0, 2.0], [1.1, 2.1], [1.2, 2.2]]
    text = mapview.build_deck(points, paths).to_json()
    assert "\n" not in text
    spec = json.loads(text)
    ids = [layer["id"] for layer in spec["layers"]]
    assert ids == [mapview.TRACK_LAYER_ID, mapview.DEVICE_LAYER_ID, mapview.REAL_LAYER_ID]
    device_layer = spec["layers"][1]
    assert device_layer["radiusUnits"] == "pixels"  # not an accessor expression
    assert len(device_layer["data"]) == 2
    assert len(spec["layers"][2]["data"]) == 1


def test_empty_map() -> None:
    points, unplaced = mapview.map_points(_fleet([{"lat": None, "lon": None}]))
    assert points.empty and unplaced == 1
    spec = json.loads(mapview.build_deck(points, mapview.track_paths(pd.DataFrame())).to_json())
    assert [layer["id"] for layer in spec["layers"]] == [mapview.DEVICE_LAYER_ID]


# ---------------------------------------------------------------------------------------- health
def test_database_health_and_merge_never_invent_running() -> None:
    fresh = {"newest_batch": NOW - timedelta(seconds=5), "newest_row_written": NOW - timedelta(seconds=90)}
    db_rows = health.database_health(fresh, NOW, stale_after_s=30)
    states = {r.name: r.state for r in db_rows}
    assert states == {"postgres": "up", "stream": "up"}
    stale = health.database_health({"newest_batch": NOW - timedelta(hours=1)}, NOW, stale_after_s=30)
    assert {r.name: r.state for r in stale}["stream"] == "stale"
    nothing = health.database_health({}, NOW, stale_after_s=30)
    assert {r.name: r.state for r in nothing}["stream"] == "unknown"

    merged = {r.name: r for r in health.merge(None, db_rows)}
    assert merged["mosquitto"].state == "unknown" and "unavailable" in merged["mosquitto"].detail
    stack = [health.ComponentHealth("mosquitto", "down", "down", "fleetsim status"),
             health.ComponentHealth("stream", "up", "pid 1", "fleetsim status")]  # fmt: skip
    merged2 = health.merge(stack, db_rows)
    names = [r.name for r in merged2]
    assert names[:2] == ["mosquitto", "stream"] and "stream (db)" in names
    assert {r.name: r.state for r in merged2}["kafka"] == "unknown"


def test_windows_health_compares_the_windows_with_the_raw_rows_not_the_clock() -> None:
    delay, limit = 300.0, 120.0
    newest = NOW - timedelta(hours=2)  # the fleet stopped two hours ago: quiet, not behind
    keeping_up = {"newest_row_written": newest, "agg_watermark": newest - timedelta(seconds=delay + 45)}
    w = health.windows_health(keeping_up, delay, limit)
    assert (w.name, w.state) == ("windows", "up") and "45 s" in w.detail
    behind = {"newest_row_written": NOW, "agg_watermark": NOW - timedelta(seconds=delay + 600)}
    w = health.windows_health(behind, delay, limit)
    assert w.state == "behind" and "600 s" in w.detail
    assert health.windows_health({"newest_row_written": NOW}, delay, limit).state == "unknown"


# ----------------------------------------------------------------------------- pages and launch
def test_navigation_lists_every_page_and_a_missing_script_is_an_error(tmp_path: Path) -> None:
    titles = [p.title for p in navigation.page_specs()]
    assert titles == ["Live", "Trends", "Pipeline", "Devices", "Experiments"]
    (tmp_path / "pages").mkdir()
    for spec in navigation.PAGES:
        (tmp_path / spec.script).write_text("", encoding="utf-8")
    assert [p.title for p in navigation.page_specs(tmp_path)] == titles
    (tmp_path / "pages" / "experiments.py").unlink()
    with pytest.raises(FileNotFoundError):
        navigation.page_specs(tmp_path)


def test_streamlit_command_binds_configured_address_headless_without_stats() -> None:
    cfg = load_config(None, environ={}).with_overrides({"dashboard.port": 8611})
    cmd = streamlit_command(cfg, ["--config", "/x/fleetsim.toml"])
    joined = " ".join(cmd)
    assert "--server.address 127.0.0.1" in joined
    assert "--server.port 8611" in joined
    assert "--server.headless true" in joined
    assert "--browser.gatherUsageStats false" in joined
    assert cmd[cmd.index("--") + 1 :] == ["--config", "/x/fleetsim.toml"]
    assert not any("password" in part.lower() for part in cmd)


def test_app_args_rebuild_the_same_config(tmp_path: Path) -> None:
    config = tmp_path / "fleetsim.toml"
    config.write_text("[dashboard]\nrefresh_s = 7\n[postgres]\nport = 5555\n", encoding="utf-8")
    argv = settings.app_args(config, ["dashboard.port=8700"])
    cfg = settings._load(tuple(argv))
    assert (cfg.dashboard.refresh_s, cfg.postgres.port, cfg.dashboard.port) == (7.0, 5555, 8700)
    settings.inject(cfg.with_overrides({"dashboard.port": 8800}))
    try:
        assert settings.app_config(argv).dashboard.port == 8800
    finally:
        settings.inject(None)


def test_a_stream_whose_windows_were_held_back_is_degraded() -> None:
    import socket

    from prometheus_client import CollectorRegistry, Counter, Gauge

    from fleetsim.kernel.config import load_config
    from fleetsim.kernel.service import serve_metrics

    registry = CollectorRegistry()
    Counter("fleetsim_stream_rows_written", "w", ["table"], registry=registry).labels("sensor_data").inc(7)
    backlog = Gauge("fleetsim_stream_backlog_records", "b", ["query"], registry=registry)
    backlog.labels("raw").set(0)
    backlog.labels("agg").set(0)
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = int(s.getsockname()[1])
    cfg = load_config(None, environ={}).with_overrides({"spark.metrics_port": port})
    with serve_metrics(registry, port):
        assert health.probe_app(cfg, "stream").state == "up"
        backlog.labels("agg").set(40_000)
        row = health.probe_app(cfg, "stream")
    assert row.state == "degraded" and "40,000 records behind" in row.detail
