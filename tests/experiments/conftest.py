"""Experiment fixtures on top of the shared stack fixtures (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st

from fleetsim.config import FleetsimConfig


@pytest.fixture
def app_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    """The shared database's config injected into the in-process dashboard, caches emptied."""
    from cloud.dashboard import settings

    st.cache_data.clear()
    settings.inject(postgres)
    try:
        yield postgres
    finally:
        settings.inject(None)
        st.cache_data.clear()
