"""Time-series charts with a 24-hour UTC time axis (Altair).

Streamlit's ``st.line_chart``/``st.area_chart`` let Vega-Lite label a time axis in the browser's
local zone with its default multi-format (``03 PM``), next to tables that say UTC. These helpers
draw the same charts on a UTC scale with 24-hour labels: ``HH:MM`` (``HH:MM:SS`` between whole
minutes), the date (``05 Dec``) at midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

UTC_24H_LABEL = (
    "utcseconds(datum.value) ? utcFormat(datum.value, '%H:%M:%S')"
    " : (utchours(datum.value) || utcminutes(datum.value)) ? utcFormat(datum.value, '%H:%M')"
    " : utcFormat(datum.value, '%d %b')"
)
"""Vega expression of a time tick's label: 24-hour UTC, the date at midnight."""


def utc_x(field: str, title: str | None = None) -> alt.X:
    """A temporal x encoding on a UTC scale with 24-hour labels."""
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(labelExpr=UTC_24H_LABEL, labelOverlap=True),
    )


def time_chart(
    data: pd.DataFrame,
    x: str,
    y: str | Sequence[str],
    *,
    color: str | None = None,
    kind: Literal["line", "area"] = "line",
    height: int = 250,
    x_title: str | None = "time (UTC)",
    y_title: str | None = None,
    where: DeltaGenerator | None = None,
) -> None:
    """Draw ``y`` (one column, split by ``color``; or several columns, one series each) over the
    time column ``x``. ``where``: a column or container (default: the page)."""
    chart = build_time_chart(
        data, x, y, color=color, kind=kind, height=height, x_title=x_title, y_title=y_title
    )
    (where or st).altair_chart(chart, width="stretch")


def build_time_chart(
    data: pd.DataFrame,
    x: str,
    y: str | Sequence[str],
    *,
    color: str | None = None,
    kind: Literal["line", "area"] = "line",
    height: int = 250,
    x_title: str | None = "time (UTC)",
    y_title: str | None = None,
) -> alt.Chart:
    """The chart :func:`time_chart` draws (long format: ``series``, ``value``, ``time_utc``)."""
    if isinstance(y, str) and color is not None:
        long = data[[x, y, color]].rename(columns={y: "value", color: "series"})
    else:
        cols = [y] if isinstance(y, str) else list(y)
        long = data[[x, *cols]].melt(id_vars=[x], value_vars=cols, var_name="series", value_name="value")
    long["time_utc"] = pd.to_datetime(long[x], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    mark = alt.Chart(long).mark_area(opacity=0.7) if kind == "area" else alt.Chart(long).mark_line()
    single = long["series"].nunique() <= 1 if not long.empty else True
    chart = mark.encode(
        x=utc_x(x, x_title),
        # Lines around their values (a temperature of 21-25 °C, not 0-25); areas from zero.
        y=alt.Y("value:Q", title=y_title if y_title is not None else (y if isinstance(y, str) else None),
                stack=True if kind == "area" else None, scale=alt.Scale(zero=kind == "area")),
        color=alt.Color("series:N", title=None, legend=None if single else alt.Legend(orient="bottom")),
        tooltip=[
            alt.Tooltip("time_utc:N", title=x_title or x),
            alt.Tooltip("series:N"),
            alt.Tooltip("value:Q"),
        ],
    ).properties(height=height)  # fmt: skip
    return chart
