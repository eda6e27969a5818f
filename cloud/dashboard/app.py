"""Streamlit entry script (``streamlit run cloud/dashboard/app.py -- [--config FILE] [--set K=V]``).

Start it with ``fleetsim dashboard``; it loads the configuration once and registers the pages.
"""

from __future__ import annotations

import streamlit as st

from fleetsim.cloud.dashboard.navigation import page_specs
from fleetsim.cloud.dashboard.ui import context

st.set_page_config(page_title="Fleetsim", page_icon="🛰️", layout="wide")
_ctx = context()  # loads and validates the config once, before any page runs
pages = [
    st.Page(spec.script, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=spec.default)
    for spec in page_specs()
]
st.navigation(pages).run()
