"""Time axes in 24-hour UTC (issue 21, item 8): Vega-Lite's default labels a time axis in the
browser's zone with a 12-hour multi-format (``03 PM``) next to tables that say UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from fleetsim.cloud.dashboard.charts import UTC_24H_LABEL, build_time_chart, utc_x

T0 = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)


def test_time_axis_is_a_utc_scale_with_24_hour_labels() -> None:
    df = pd.DataFrame(
        {
            "ts": [T0, T0 + timedelta(minutes=1)] * 2,
            "temperature": [1.0, 2.0, 3.0, 4.0],
            "device_id": list("aabb"),
        }
    )
    spec = build_time_chart(df, "ts", "temperature", color="device_id").to_dict()
    x = spec["encoding"]["x"]
    assert x["type"] == "temporal" and x["scale"] == {"type": "utc"}
    assert x["axis"]["labelExpr"] == UTC_24H_LABEL
    assert spec["encoding"]["y"]["scale"] == {"zero": False}  # lines around their values
    assert "%H:%M" in UTC_24H_LABEL and "%I" not in UTC_24H_LABEL and "%p" not in UTC_24H_LABEL
    assert "utcFormat" in UTC_24H_LABEL and "timeFormat" not in UTC_24H_LABEL
    # The tooltip's time is a UTC string made here, not the browser's local rendering.
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["time_utc"] == "2026-12-05 13:00:00" and {r["series"] for r in rows} == {"a", "b"}


def test_wide_columns_become_one_series_each() -> None:
    df = pd.DataFrame({"t": [T0, T0 + timedelta(hours=1)], "p50": [1.0, 2.0], "p95": [3.0, 4.0]})
    spec = build_time_chart(df, "t", ["p50", "p95"], kind="area").to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert sorted({r["series"] for r in rows}) == ["p50", "p95"] and len(rows) == 4
    assert spec["mark"]["type"] == "area"
    assert utc_x("t").to_dict()["scale"] == {"type": "utc"}
