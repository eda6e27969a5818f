"""Small helpers the benchmark scripts share to talk to the harness's engines."""

from __future__ import annotations

import uuid
from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.kafka import ensure_topics


def fresh_topics(cfg: FleetsimConfig, prefix: str = "bench") -> FleetsimConfig:
    """``cfg`` with new, created ``<prefix>.<id>.telemetry`` and ``.deadletter`` topics (ACLs
    included): a variant or test that starts from an empty log, whatever ran before it."""
    uid = uuid.uuid4().hex[:10]
    out = cfg.with_overrides(
        {
            "kafka.telemetry_topic": f"{prefix}.{uid}.telemetry",
            "kafka.deadletter_topic": f"{prefix}.{uid}.deadletter",
        }
    )
    ensure_topics(out)
    return out


def pg_rows(cfg: FleetsimConfig, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement as the admin role; its rows (none for a statement without a result)."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
