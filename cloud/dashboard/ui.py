"""Streamlit glue shared by the pages: the context (config + reader pool), cached query runners and
error display. Pages call ``ctx.load(query_fn, **params)`` and wrap each section in
``with ctx.section():`` so a failing query shows a message there instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import pandas as pd
import streamlit as st

from fleetsim.cloud.dashboard.db import DatabaseUnavailable, QueryFailed, ReaderPool, pool_key
from fleetsim.cloud.dashboard.queries._sql import fetch_df
from fleetsim.cloud.dashboard.settings import app_config
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import DashboardError

Freshness = Literal["live", "slow"]

LIVE_TTL_S = 2.0
"""Cache lifetime of live-view results: several sessions refreshing at once share one query."""
SLOW_TTL_S = 30.0
"""Cache lifetime of trend and registry results (they change by the minute, not the second)."""


@st.cache_resource(show_spinner=False)
def _pool(key: str, _cfg: FleetsimConfig) -> ReaderPool:
    return ReaderPool(_cfg)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=500)
def _run_live(_pool: ReaderPool, key: str, name: str, _fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    return _pool.run(_fn, **params)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False, max_entries=500)
def _run_slow(_pool: ReaderPool, key: str, name: str, _fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    return _pool.run(_fn, **params)


def _ping(conn: Any) -> pd.DataFrame:
    return fetch_df(
        conn,
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM devices LIMIT 1) d)"
        " + (SELECT count(*) FROM (SELECT 1 FROM device_latest LIMIT 1) l) AS any_devices",
    )


def show_error(exc: Exception) -> None:
    """One clear message for an operator (no traceback)."""
    if isinstance(exc, DatabaseUnavailable):
        st.error(
            f"**Database unavailable.** {exc}\n\n"
            "Check that PostgreSQL runs (`fleetsim status`) and that the dashboard's config points at it.",
            icon=":material/power_off:",
        )
    elif isinstance(exc, QueryFailed):
        st.error(f"**Query failed.** {exc}", icon=":material/warning:")
    elif isinstance(exc, ValueError):
        st.warning(f"**Invalid input.** {exc}", icon=":material/block:")
    else:
        st.error(f"**Dashboard error.** {exc}", icon=":material/warning:")


class OfflineParams(TypedDict):
    offline_after_s: float
    offline_intervals: float


@dataclass
class Context:
    """What a page needs: the configuration and a way to run queries."""

    cfg: FleetsimConfig
    pool: ReaderPool

    @property
    def offline(self) -> OfflineParams:
        """The parameters of a query that tells online from offline (queries._sql.ONLINE)."""
        a = self.cfg.alerts
        return OfflineParams(offline_after_s=a.offline_after_s, offline_intervals=a.offline_intervals)

    def load(
        self, fn: Callable[..., pd.DataFrame], freshness: Freshness = "live", **params: Any
    ) -> pd.DataFrame:
        """Run a query function (cached for a short time); raises DashboardError or ValueError."""
        runner = _run_live if freshness == "live" else _run_slow
        name = f"{fn.__module__}.{fn.__qualname__}"
        return runner(self.pool, self.pool.key, name, fn, params)

    @contextmanager
    def section(self) -> Iterator[None]:
        """Show DashboardError/ValueError raised inside as a message and carry on with the page."""
        try:
            yield
        except (DashboardError, ValueError) as exc:
            show_error(exc)

    def require_database(self) -> bool:
        """False (after showing why) when the database is unreachable or has no schema."""
        try:
            self.pool.run(_ping)
        except DashboardError as exc:
            show_error(exc)
            return False
        return True

    def has_devices(self) -> bool:
        """True when the registry or the latest-reading table holds at least one device."""
        df = self.load(_ping)
        return bool(len(df) and int(df.iloc[0]["any_devices"]) > 0)


def context() -> Context:
    """The page context (config loaded once per process, one pool per database)."""
    cfg = app_config()
    return Context(cfg=cfg, pool=_pool(pool_key(cfg), cfg))


FAVICON = Path(__file__).with_name("favicon.png")
"""The page icon: a 32 px PNG (a device dot in a ring) shipped with the package."""


def empty_fleet_message() -> None:
    st.info(
        "**No devices and no readings yet.** Start the pipeline with `fleetsim up` (or run "
        "`fleetsim sim`), or register devices with `fleetsim device add`. This page refreshes by itself.",
        icon=":material/inbox:",
    )
