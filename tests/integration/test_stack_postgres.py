"""Real PostgreSQL: roles, authentication, idempotent migrations."""

from __future__ import annotations

import re

import psycopg2
import pytest

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.migrations import apply_migrations, discover
from fleetsim.stack.postgres import Postgres, cluster_user

pytestmark = pytest.mark.integration


def _catalog(cfg: FleetsimConfig) -> list[tuple]:
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT table_name, column_name, data_type FROM information_schema.columns
                   WHERE table_schema = 'public' ORDER BY 1, 2"""
            )
            cols = cur.fetchall()
            cur.execute("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")
            return cols + cur.fetchall()
    finally:
        conn.close()


def test_migrations_apply_twice_without_error_or_change(postgres: FleetsimConfig) -> None:
    before = _catalog(postgres)
    versions = [m.version for m in discover()]
    assert [row[0] for row in before if isinstance(row[0], int)] == versions
    assert apply_migrations(postgres) == []
    assert apply_migrations(postgres) == []
    assert _catalog(postgres) == before


def test_roles_have_least_privilege(postgres: FleetsimConfig) -> None:
    conn = pg_connect(postgres, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM devices")
            assert cur.fetchone()[0] >= 0
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("INSERT INTO sensor_alerts DEFAULT VALUES")
    finally:
        conn.close()
    conn = pg_connect(postgres, "writer")
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TABLE writer_should_not_create (x int)")
    finally:
        conn.close()


def test_wrong_password_and_superuser_over_tcp_are_refused(postgres: FleetsimConfig) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg_connect(postgres.with_overrides({"postgres.reader_password": "wrong"}), "reader")
    with pytest.raises(psycopg2.OperationalError, match="rejects connection"):
        psycopg2.connect(
            host="127.0.0.1", port=postgres.postgres.port, user=cluster_user(), dbname="postgres"
        )


def test_status_counts_rows_in_sensor_data(postgres: FleetsimConfig) -> None:
    svc = Postgres(postgres)
    before = svc.status()
    assert before.up and before.pid == svc.pid()
    conn = pg_connect(postgres, "writer")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT ensure_sensor_data_partition(current_date)")
            cur.execute(
                """INSERT INTO sensor_data (device_id, seq, ts, status)
                   VALUES ('dev-status', 1, now(), 'OK'), ('dev-status', 2, now(), 'OK')"""
            )
    finally:
        conn.close()
    after = svc.status()
    assert after.metrics["sensor_data_rows"] == before.metrics["sensor_data_rows"] + 2


def test_sensor_data_key_serves_per_device_lookups(postgres: FleetsimConfig) -> None:
    """V016: two B-trees per reading, not three. The key in (device_id, ts, seq) order still
    rejects a replayed reading and serves "a device's newest readings" (the stuck/drift state's
    warm-up) with a backward index scan and no sort."""
    conn = pg_connect(postgres, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x
                   JOIN pg_class i ON i.oid = x.indexrelid
                   WHERE x.indrelid = 'sensor_data'::regclass ORDER BY 1"""
            )
            indexes = dict(cur.fetchall())
            assert sorted(indexes) == ["sensor_data_pkey", "sensor_data_ts_idx"], indexes
            assert "(device_id, ts, seq)" in indexes["sensor_data_pkey"]
            # Two day partitions, as a running stack has: the lookup then spans both.
            cur.execute("SELECT ensure_sensor_data_partition(current_date - 1)")
            cur.execute("SELECT ensure_sensor_data_partition(current_date)")
            insert = """INSERT INTO sensor_data (device_id, seq, ts, status)
                        SELECT 'dev-key', g, date_trunc('day', now()) + g * interval '1 s', 'OK'
                        FROM generate_series(1, 50) g ON CONFLICT DO NOTHING"""
            cur.execute(insert)
            assert cur.rowcount == 50
            cur.execute(insert)
            assert cur.rowcount == 0, "a replayed reading must be dropped by the key"
            # Whatever the statistics left by other tests say (a scan of the (ts) index and an
            # incremental sort can look cheaper for LIMIT 12): a plan without a sort must exist.
            for knob in ("seqscan", "bitmapscan", "sort", "incremental_sort"):
                cur.execute(f"SET LOCAL enable_{knob} = off")
            cur.execute(
                """EXPLAIN (COSTS OFF) SELECT seq, ts, temperature FROM sensor_data
                   WHERE device_id = 'dev-key' ORDER BY ts DESC, seq DESC LIMIT 12"""
            )
            plan = "\n".join(r[0] for r in cur.fetchall())
            assert "Index Scan Backward using sensor_data_" in plan and "_pkey" in plan, plan
            # A Merge Append over several day partitions prints "Sort Key": only a sort node counts.
            assert not re.search(r"(^|->)\s*(Incremental )?Sort(?! Key)", plan, re.M), plan
    finally:
        conn.rollback()
        conn.close()
