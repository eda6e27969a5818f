"""Dashboard fixtures on top of the shared ``postgres`` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import dashboard_seed as seeding
import pytest
import streamlit as st

from fleetsim.cloud.dashboard import settings
from fleetsim.kernel.config import FleetsimConfig


@pytest.fixture
def app_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    """The shared database's config injected into the in-process app, with caches emptied."""
    # A generous offline threshold: on a busy machine seconds pass between seeding and rendering,
    # and the seeded "online" devices must stay online (dev-off-4, silent for an hour, stays offline).
    cfg = postgres.with_overrides({"alerts.offline_after_s": 900})
    st.cache_data.clear()
    settings.inject(cfg)
    try:
        yield cfg
    finally:
        settings.inject(None)
        st.cache_data.clear()


@pytest.fixture
def seeded(app_cfg: FleetsimConfig) -> seeding.SeedFacts:
    """The known small dataset, freshly written (timestamps relative to now)."""
    return seeding.seed(app_cfg)


@pytest.fixture
def empty_db(app_cfg: FleetsimConfig) -> FleetsimConfig:
    seeding.clear(app_cfg)
    return app_cfg


@pytest.fixture
def with_incidents(seeded: seeding.SeedFacts, app_cfg: FleetsimConfig) -> dict[str, int]:
    """The seeded dataset plus three incidents (open, acknowledged, resolved); ids by device."""
    return seeding.seed_incidents(app_cfg)
