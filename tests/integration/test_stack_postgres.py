"""Real PostgreSQL: roles, authentication, idempotent migrations."""

from __future__ import annotations

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
