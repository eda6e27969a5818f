"""The dashboard's database access: the reader role can read and nothing else; the pool recovers."""

from __future__ import annotations

import os
import socket

import psycopg2
import pytest
from dashboard_seed import SeedFacts

from fleetsim.cloud.dashboard.db import ReaderPool, reader_connect_kwargs
from fleetsim.cloud.dashboard.queries import live
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration

FORBIDDEN = [
    "INSERT INTO devices (device_id) VALUES ('intruder')",
    "DELETE FROM devices",
    "UPDATE device_latest SET battery = 0",
    "CREATE TABLE dashboard_was_here (x int)",
    "TRUNCATE sensor_alerts",
]


def _count(cfg: FleetsimConfig, table: str) -> int:
    from fleetsim.kernel.clients import pg_connect

    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed test table names
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_reader_session_cannot_write_or_create(
    seeded: SeedFacts, app_cfg: FleetsimConfig, statement: str
) -> None:
    conn = psycopg2.connect(**reader_connect_kwargs(app_cfg))
    conn.autocommit = True
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as info:
            cur.execute(statement)
        # Refused by privileges or by the forced read-only session, never by a syntax error.
        assert info.value.pgcode in {"42501", "25006"}, info.value.pgcode
    finally:
        conn.close()
    assert _count(app_cfg, "devices") == seeded.devices


def test_reader_role_itself_has_no_write_privilege(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    # Even with the session's read-only flag switched off, the role's grants refuse the write.
    conn = psycopg2.connect(**reader_connect_kwargs(app_cfg))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("INSERT INTO devices (device_id) VALUES ('intruder')")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CREATE TABLE public.dashboard_was_here (x int)")
    finally:
        conn.close()
    assert _count(app_cfg, "devices") == seeded.devices


def test_pool_reads_as_reader(seeded: SeedFacts, app_cfg: FleetsimConfig) -> None:
    pool = ReaderPool(app_cfg)
    try:
        user = pool.run(lambda conn: conn.get_dsn_parameters()["user"])
        row = pool.run(
            live.kpis, offline_after_s=60.0, offline_intervals=1.5, low_battery_pct=15.0, active_alert_s=300.0
        ).iloc[0]
    finally:
        pool.close()
    assert user == app_cfg.postgres.reader_user
    assert int(row.devices) == seeded.devices


def test_pool_survives_a_killed_connection_and_reports_timeouts(
    seeded: SeedFacts, app_cfg: FleetsimConfig
) -> None:
    from fleetsim.cloud.dashboard.db import QueryFailed

    pool = ReaderPool(app_cfg)
    try:
        pid = pool.run(lambda conn: conn.get_backend_pid())

        def cut(conn: object) -> None:
            # Shut the pooled connection's socket down (as a server restart or a dropped link would);
            # psycopg2 does not notice until the next query.
            sock = socket.socket(fileno=os.dup(conn.fileno()))  # type: ignore[attr-defined]
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

        pool.run(cut)
        # The pooled connection is dead now; the read is retried once on a fresh connection.
        row = pool.run(
            live.kpis, offline_after_s=60.0, offline_intervals=1.5, low_battery_pct=15.0, active_alert_s=300.0
        ).iloc[0]
        assert int(row.devices) == seeded.devices
        assert pool.run(lambda conn: conn.get_backend_pid()) != pid

        def slow(conn: object) -> None:
            with conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute("SET statement_timeout = 100")
                try:
                    cur.execute("SELECT pg_sleep(2)")
                finally:
                    cur.execute("RESET statement_timeout")

        with pytest.raises(QueryFailed, match="longer than"):
            pool.run(slow)
    finally:
        pool.close()
