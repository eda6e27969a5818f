"""Streamlit entry script (``streamlit run cloud/dashboard/app.py -- [--config FILE] [--set K=V]``).

Start it with ``fleetsim dashboard``; it loads the configuration once and registers the pages.
"""

from __future__ import annotations

import streamlit as st

from fleetsim.cloud.dashboard.navigation import page_specs
from fleetsim.cloud.dashboard.ui import FAVICON, context

# An image, not an emoji (drawn with the machine's emoji font: an empty box without one) nor a
# :material/...: icon (Streamlit fetches a favicon of that kind from fonts.gstatic.com).
st.set_page_config(page_title="Fleetsim", page_icon=FAVICON, layout="wide")
_ctx = context()  # loads and validates the config once, before any page runs
pages = [
    st.Page(spec.script, title=spec.title, icon=spec.icon, url_path=spec.url_path, default=spec.default)
    for spec in page_specs()
]
st.navigation(pages).run()
