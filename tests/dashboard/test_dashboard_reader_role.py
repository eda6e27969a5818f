"""The dashboard's database role can read and nothing else."""

from __future__ import annotations

import psycopg2
import pytest
from dashboard_seed import SeedFacts

from cloud.dashboard.db import ReaderPool, reader_connect_kwargs
from cloud.dashboard.queries import live
from fleetsim.config import FleetsimConfig

pytestmark = pytest.mark.integration

FORBIDDEN = [
    "INSERT INTO devices (device_id) VALUES ('intruder')",
    "DELETE FROM devices",
    "UPDATE device_latest SET battery = 0",
    "CREATE TABLE dashboard_was_here (x int)",
    "TRUNCATE sensor_alerts",
]


def _count(cfg: FleetsimConfig, table: str) -> int:
    from fleetsim.clients import pg_connect

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
        row = pool.run(live.kpis, offline_after_s=60.0, low_battery_pct=15.0, active_alert_s=300.0).iloc[0]
    finally:
        pool.close()
    assert user == app_cfg.postgres.reader_user
    assert int(row.devices) == seeded.devices
