"""The fleet map as a pydeck Deck: one ScatterplotLayer for every device, one PathLayer for tracks.

Kept lean for 10k points: only the columns the layers and tooltip need are sent to the browser,
numbers are rounded, the tooltip is one pre-rendered (HTML-escaped) string per point, and there is
no base-map style (no tiles offline; deck.gl still draws the layers on a plain background).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd
import pydeck as pdk

from cloud.dashboard.logic import (
    REAL_OUTLINE,
    STATE_COLORS,
    battery_alpha,
    battery_radius,
    fmt_num,
)

DEVICE_LAYER_ID = "devices"
TRACK_LAYER_ID = "tracks"


def _tooltip_row(row: Any) -> str:
    esc = html.escape
    kind = " · real device" if row.kind == "real" else ""
    return (
        f"<b>{esc(str(row.device_id))}</b> {esc(str(row.state))}{esc(kind)}<br/>"
        f"site {esc(str(row.site or '—'))} · last {esc(str(row.ts_text))}<br/>"
        f"T {fmt_num(row.temperature, 1, '°C')} · RH {fmt_num(row.humidity, 0, '%')} · "
        f"CO₂ {fmt_num(row.co2, 0, 'ppm')} · p {fmt_num(row.pressure, 0, 'hPa')}<br/>"
        f"battery {fmt_num(row.battery, 0, '%')}"
        + (f" · fault {esc(str(row.fault))}" if isinstance(row.fault, str) and row.fault else "")
    )


def map_points(fleet: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Plot-ready rows (device_id, lon, lat, fill, line, radius, tip) and the count of unplaced devices."""
    placed = fleet.dropna(subset=["lat", "lon"])
    unplaced = len(fleet) - len(placed)
    if placed.empty:
        cols = ["device_id", "lon", "lat", "fill", "line", "radius", "tip", "state"]
        return pd.DataFrame(columns=cols), unplaced
    p = placed.copy()
    p["ts_text"] = pd.to_datetime(p["ts"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S UTC").fillna("never")
    p["fill"] = [
        [*STATE_COLORS.get(s, STATE_COLORS["OFFLINE"]), battery_alpha(b)]
        for s, b in zip(p["state"], p["battery"], strict=True)
    ]
    p["line"] = [list(REAL_OUTLINE) if k == "real" else [255, 255, 255, 120] for k in p["kind"]]
    p["radius"] = [
        round(battery_radius(b) + (2 if k == "real" else 0), 1)
        for b, k in zip(p["battery"], p["kind"], strict=True)
    ]
    p["tip"] = [_tooltip_row(r) for r in p.itertuples(index=False)]
    p["lon"] = p["lon"].astype(float).round(6)
    p["lat"] = p["lat"].astype(float).round(6)
    return p[["device_id", "lon", "lat", "fill", "line", "radius", "tip", "state"]].reset_index(
        drop=True
    ), unplaced


def track_paths(tracks: pd.DataFrame) -> pd.DataFrame:
    """One row per mobile device: its path as ``[[lon, lat], ...]`` oldest first, and a tooltip."""
    if tracks.empty:
        return pd.DataFrame(columns=["device_id", "path", "tip"])
    rows = []
    for device_id, g in tracks.sort_values(["device_id", "ts"]).groupby("device_id", sort=True):
        path = [[round(float(lo), 6), round(float(la), 6)] for lo, la in zip(g["lon"], g["lat"], strict=True)]
        if len(path) >= 2:
            rows.append(
                {"device_id": device_id, "path": path, "tip": f"<b>{html.escape(str(device_id))}</b> track"}
            )
    return pd.DataFrame(rows, columns=["device_id", "path", "tip"])


def view_state(points: pd.DataFrame) -> pdk.ViewState:
    """Centre on the fleet; zoom from its extent (roughly fits it in a ~1000 px map)."""
    if points.empty:
        return pdk.ViewState(latitude=0, longitude=0, zoom=1)
    lat, lon = points["lat"].astype(float), points["lon"].astype(float)
    span = max(float(lat.max() - lat.min()), float(lon.max() - lon.min()), 1e-3)
    zoom = max(1.0, min(15.0, 8.5 - math.log2(span)))
    return pdk.ViewState(
        latitude=float(lat.median()), longitude=float(lon.median()), zoom=round(zoom, 2), pitch=0
    )


def build_deck(points: pd.DataFrame, paths: pd.DataFrame) -> pdk.Deck:
    """The Deck: tracks under the device markers, both pickable, tooltips from the ``tip`` column."""
    layers = []
    if not paths.empty:
        layers.append(
            pdk.Layer(
                "PathLayer",
                id=TRACK_LAYER_ID,
                data=paths,
                get_path="path",
                get_color=[40, 90, 200, 160],
                width_min_pixels=2,
                pickable=True,
            )
        )
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            id=DEVICE_LAYER_ID,
            data=points,
            get_position=["lon", "lat"],
            get_fill_color="fill",
            get_line_color="line",
            get_radius="radius",
            radius_units='"pixels"',  # quoted: pydeck treats bare strings as JS accessors
            stroked=True,
            line_width_min_pixels=1,
            pickable=True,
            auto_highlight=True,
        )
    )
    return pdk.Deck(
        layers=layers,
        initial_view_state=view_state(points),
        map_style=None,
        tooltip={"html": "{tip}", "style": {"fontSize": "12px"}},
    )
