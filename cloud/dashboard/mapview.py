"""The fleet map as a pydeck Deck: one ScatterplotLayer for every device, one PathLayer for tracks.

Kept lean for 10k points: only the columns the layers and tooltip need are sent to the browser,
numbers are rounded, tooltip fields are short pre-formatted (HTML-escaped) strings, the JSON is
compact, and there is no base-map style (no tiles offline; deck.gl draws on a plain background).
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd
import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

from fleetsim.cloud.dashboard.logic import REAL_OUTLINE, STATE_COLORS, fmt_age

DEVICE_LAYER_ID = "devices"
TRACK_LAYER_ID = "tracks"
REAL_LAYER_ID = "real-devices"
INCIDENT_LAYER_ID = "incident-devices"
INCIDENT_OUTLINE = (230, 30, 30, 230)
"""Red ring around a device with an open or acknowledged incident."""


TOOLTIP_HTML = (
    "<b>{device_id}</b> · {state}{real}{incident}<br/>site {site} · last reading {age} ago<br/>"
    "T {t} · RH {rh} · CO₂ {co2} · p {p}<br/>battery {bat}{fault}"
)
"""deck.gl fills ``{field}`` from the hovered point; every field is pre-formatted and HTML-escaped."""

_POINT_COLUMNS = [
    "device_id", "lon", "lat", "fill", "radius", "state", "real", "site", "age", "t", "rh", "co2", "p", "bat",
    "fault", "incident",
]  # fmt: skip


def _fmt(values: pd.Series, pattern: str) -> list[str]:
    return ["—" if pd.isna(v) else pattern.format(v) for v in values.astype(float)]


def battery_alphas(battery: pd.Series) -> list[int]:
    """Vectorised :func:`logic.battery_alpha`."""
    b = battery.astype(float)
    return (90 + 165 * b.clip(0, 100) / 100).fillna(200).astype(int).tolist()


def battery_radii(battery: pd.Series) -> list[float]:
    """Vectorised :func:`logic.battery_radius`."""
    b = battery.astype(float)
    return (3.0 + 5.0 * b.clip(0, 100) / 100).fillna(4.0).round(1).tolist()


def map_points(fleet: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Plot-ready rows (position, colour, radius, tooltip fields) and the count of unplaced devices.

    Vectorised: 10k devices take tens of milliseconds."""
    placed = fleet.dropna(subset=["lat", "lon"])
    unplaced = len(fleet) - len(placed)
    if placed.empty:
        return pd.DataFrame(columns=_POINT_COLUMNS), unplaced
    esc = html.escape
    state = placed["state"].fillna("OFFLINE").astype(str)
    rgb = [STATE_COLORS.get(s, STATE_COLORS["OFFLINE"]) for s in state]
    alpha = battery_alphas(placed["battery"])
    age_s = placed["age_s"].astype(float)
    out = pd.DataFrame(
        {
            "device_id": placed["device_id"].astype(str).map(esc),
            "lon": placed["lon"].astype(float).round(6),
            "lat": placed["lat"].astype(float).round(6),
            "fill": [[c[0], c[1], c[2], a] for c, a in zip(rgb, alpha, strict=True)],
            "radius": battery_radii(placed["battery"]),
            "state": state.map(esc),
            "real": ["  · real device" if k == "real" else "" for k in placed["kind"]],
            "site": placed["site"].fillna("—").astype(str).map(esc),
            "age": [fmt_age(None if pd.isna(a) else float(a)) for a in age_s],
            "t": _fmt(placed["temperature"], "{:.1f} °C"),
            "rh": _fmt(placed["humidity"], "{:.0f} %"),
            "co2": _fmt(placed["co2"], "{:.0f} ppm"),
            "p": _fmt(placed["pressure"], "{:.0f} hPa"),
            "bat": _fmt(placed["battery"], "{:.0f} %"),
            "fault": [f" · fault {esc(f)}" if isinstance(f, str) and f else "" for f in placed["fault"]],
            "incident": [
                "  · open incident" if isinstance(v, bool | np.bool_) and v else ""
                for v in (placed["incident"] if "incident" in placed else [False] * len(placed))
            ],
        }
    )
    return out.reset_index(drop=True), unplaced


def track_paths(tracks: pd.DataFrame) -> pd.DataFrame:
    """One row per mobile device with at least two positions: its path ``[[lon, lat], ...]`` oldest first."""
    if tracks.empty:
        return pd.DataFrame(columns=["device_id", "path"])
    # Rows arrive ordered by device then time (see queries.live.mobile_tracks); keep that order.
    t = tracks.sort_values("device_id", kind="stable")
    ids = t["device_id"].to_numpy()
    coords = np.column_stack([t["lon"].astype(float).round(6), t["lat"].astype(float).round(6)])
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    rows = [
        {"device_id": html.escape(str(ids[s])), "path": chunk.tolist()}
        for s, chunk in zip(starts, np.split(coords, bounds), strict=True)
        if len(chunk) >= 2
    ]
    return pd.DataFrame(rows, columns=["device_id", "path"])


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


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    # Much faster than DataFrame.to_dict("records") (what pydeck does with a frame) for 10k rows.
    cols = list(df.columns)
    return [dict(zip(cols, row, strict=True)) for row in zip(*(df[c].tolist() for c in cols), strict=True)]


def build_deck(points: pd.DataFrame, paths: pd.DataFrame) -> pdk.Deck:
    """The Deck: tracks under the device markers, both pickable, tooltips from the ``tip`` column."""
    layers = []
    if not paths.empty:
        layers.append(
            pdk.Layer(
                "PathLayer",
                id=TRACK_LAYER_ID,
                data=_records(paths),
                get_path="path",
                get_color=[40, 90, 200, 160],
                width_min_pixels=2,
                pickable=False,  # the tooltip template describes devices, not tracks
            )
        )
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            id=DEVICE_LAYER_ID,
            data=_records(points),
            get_position=["lon", "lat"],
            get_fill_color="fill",
            get_line_color=[255, 255, 255, 140],
            get_radius="radius",
            radius_units='"pixels"',  # quoted: pydeck treats bare strings as JS accessors
            stroked=True,
            line_width_min_pixels=1,
            pickable=True,
            auto_highlight=True,
        )
    )
    real = points[points["real"] != ""] if not points.empty else points
    if not real.empty:
        # A ring around real (non-simulated) devices.
        layers.append(_ring_layer(REAL_LAYER_ID, real, 3, REAL_OUTLINE, 2))
    flagged = points[points["incident"] != ""] if not points.empty else points
    if not flagged.empty:
        # A red ring around devices with an open incident.
        layers.append(_ring_layer(INCIDENT_LAYER_ID, flagged, 6, INCIDENT_OUTLINE, 3))
    return CompactDeck(
        layers=layers,
        initial_view_state=view_state(points),
        map_style=None,
        tooltip={"html": TOOLTIP_HTML, "style": {"fontSize": "12px"}},
    )


class CompactDeck(pdk.Deck):
    """A Deck serialised without pydeck's ``indent=2, sort_keys=True`` (a third of the bytes)."""

    def to_json(self) -> str:
        return json.dumps(self, default=default_serialize, separators=(",", ":"))


def _ring_layer(
    layer_id: str, frame: pd.DataFrame, gap_px: int, color: tuple[int, ...], width_px: int
) -> pdk.Layer:
    """An unfilled ring ``gap_px`` outside each device's dot; not pickable, so clicks reach the device."""
    return pdk.Layer(
        "ScatterplotLayer",
        id=layer_id,
        data=_records(frame[["lon", "lat"]].assign(ring=frame["radius"] + gap_px)),
        get_position=["lon", "lat"],
        get_radius="ring",
        radius_units='"pixels"',
        filled=False,
        stroked=True,
        get_line_color=list(color),
        line_width_min_pixels=width_px,
        pickable=False,
    )
