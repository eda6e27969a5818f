"""One statement on the test database as a given role: the helper the PostgreSQL tests share."""

from __future__ import annotations

from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig


def execute(cfg: FleetsimConfig, role: str, stmt: str, params: Any = None) -> list[tuple[Any, ...]]:
    """One statement as ``role``, committed; its rows (if any)."""
    conn = pg_connect(cfg, role)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(stmt, params)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def admin(cfg: FleetsimConfig, stmt: str, params: Any = None) -> list[tuple[Any, ...]]:
    """:func:`execute` as the schema owner."""
    return execute(cfg, "admin", stmt, params)
