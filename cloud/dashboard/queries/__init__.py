"""Pure query functions: ``fn(conn, **params) -> pandas.DataFrame``, parameterized SQL only.

They know nothing about Streamlit, so tests and the benchmark call them directly. Identifiers a
user can choose (a measurement column) go through a whitelist and ``psycopg2.sql.Identifier``.
"""

from fleetsim.cloud.dashboard.queries._sql import MEASUREMENT_COLUMNS, fetch_df, measurement_column

__all__ = ["MEASUREMENT_COLUMNS", "fetch_df", "measurement_column"]
