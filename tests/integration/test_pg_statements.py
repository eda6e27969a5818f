"""The benchmarks' per-statement PostgreSQL profile (``fleetsim.bench.pg_statements``) on a real,
private PostgreSQL: the extension is preloaded by a restart, a window starts at ``reset`` and
each statement is reported with its own calls, time and WAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.bench import pg_statements
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated
from fleetsim.stack.postgres import Postgres

pytestmark = pytest.mark.integration


def test_a_window_names_each_statement_with_its_calls_and_wal(
    fleet_cfg: FleetsimConfig, tmp_path: Path
) -> None:
    with dedicated(fleet_cfg, tmp_path / "pg", "postgres") as (cfg, svcs):
        pg = svcs["postgres"]
        assert isinstance(pg, Postgres)
        db = cfg.postgres.database
        pg_statements.enable(pg, db, {"shared_buffers": "32MB"})
        conn = pg_connect(cfg, "admin")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW shared_buffers")
                assert cur.fetchone()[0] == "32MB"
                cur.execute("CREATE TABLE probe (k int PRIMARY KEY, v text)")
                cur.execute("SELECT count(*) FROM devices")  # before the window: not counted
                pg_statements.reset(pg, db)
                before = pg_statements.server_counters(pg)
                for k in range(40):
                    cur.execute("INSERT INTO probe VALUES (%s, repeat('x', 500))", (k,))
                for _ in range(3):
                    cur.execute("SELECT count(*) FROM probe")
        finally:
            conn.close()
        after = pg_statements.server_counters(pg)
        top = pg_statements.top(pg, db, seconds=2.0)
    by_query = {e["query"]: e for e in top}
    insert = by_query["INSERT INTO probe VALUES ($1, repeat($2, $3))"]
    assert insert["calls"] == 40 and insert["rows_per_call"] == 1.0 and insert["wal_kb_per_call"] > 0.4
    assert by_query["SELECT count(*) FROM probe"]["calls"] == 3
    assert not any("devices" in q for q in by_query)
    assert all(e["role"] == cfg.postgres.admin_user for e in top if "probe" in e["query"])
    assert after["wal_bytes"] - before["wal_bytes"] > 40 * 500
