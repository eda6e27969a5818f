"""Dashboard fixtures on top of the shared ``postgres`` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import dashboard_seed as seeding
import pytest
import streamlit as st

from cloud.dashboard import settings
from fleetsim.config import FleetsimConfig


@pytest.fixture
def app_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    """The shared database's config injected into the in-process app, with caches emptied."""
    st.cache_data.clear()
    settings.inject(postgres)
    try:
        yield postgres
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
