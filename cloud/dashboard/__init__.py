"""Fleetsim's operator dashboard: a Streamlit multipage app over the read-only database role.

Layout: ``queries/`` holds pure functions (connection + parameters -> DataFrame), ``logic`` and
``mapview`` hold pure presentation logic, ``views/`` render one page each, ``pages/`` are the thin
page scripts Streamlit runs, ``navigation`` lists them, ``app`` is the entry script and ``cli`` the
``fleetsim dashboard`` command.
"""
