"""``fleetsim compose-init``: the broker files it writes work with a real Mosquitto, and the
compose stack refuses the placeholder passwords of ``.env.example``."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.errors import ConfigError
from fleetsim.stack import process
from fleetsim.stack.base import require_binary
from fleetsim.stack.compose_support import PLACEHOLDER, refuse_placeholders, write_mqtt_files
from fleetsim.stack.mosquitto import acl_text, connack_ok

REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {
    "mqtt.bridge_password": "b-secret-1",
    "mqtt.sim_password": "s-secret-2",
    "mqtt.tool_password": "t-3",
    "mqtt.notifier_password": "n-4",
}


@pytest.fixture
def cfg(tmp_path: Path) -> FleetsimConfig:
    (port,) = process.free_ports(1)
    base = load_config(REPO / "fleetsim.toml", environ={})
    return base.with_overrides({**PASSWORDS, "mqtt.port": port, "stack.run_dir": str(tmp_path / "run")})


def test_mqtt_files_hold_hashes_acl_and_the_configured_limits(cfg: FleetsimConfig, tmp_path: Path) -> None:
    passwd, acl, conf = write_mqtt_files(
        cfg, tmp_path / "out", Path("/mosquitto/auth"), Path("/mosquitto/data")
    )
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(users) == {cfg.mqtt.bridge_user, cfg.mqtt.sim_user, cfg.mqtt.tool_user, cfg.mqtt.notifier_user}
    assert all(h.startswith("$7$") for h in users.values())
    everything = passwd.read_text() + acl.read_text() + conf.read_text()
    assert not [p for p in PASSWORDS.values() if p in everything], "a clear password was written"
    assert acl.read_text() == acl_text(cfg)
    lines = conf.read_text().splitlines()
    assert f"listener {cfg.mqtt.port}" in lines
    assert "allow_anonymous false" in lines
    assert "password_file /mosquitto/auth/passwd" in lines
    assert f"message_size_limit {cfg.mqtt.broker_max_payload}" in lines
    assert f"max_queued_messages {cfg.mqtt.max_queued_messages}" in lines
    assert oct(passwd.stat().st_mode & 0o777) == "0o640"


@pytest.fixture
def broker(cfg: FleetsimConfig, tmp_path: Path) -> Iterator[FleetsimConfig]:
    """A real Mosquitto started from exactly the files compose-init wrote (loopback listener)."""
    out = tmp_path / "auth"
    data = tmp_path / "data"
    data.mkdir()
    write_mqtt_files(cfg, out, out, data, listen_address="127.0.0.1")
    if process.is_root():  # the broker drops to the mosquitto user, as in the container
        process.grant_traverse(out)
        os.chown(out, 0, process.user_ids("mosquitto")[1])
        os.chmod(out, 0o750)  # noqa: S103 - root plus the broker's group, as the entrypoint does
        process.chown_tree(data, "mosquitto")
    proc = process.spawn([require_binary("mosquitto", "mosquitto"), "-c", str(out / "mosquitto.conf")],
                         tmp_path / "mosquitto.log")  # fmt: skip
    try:
        up = process.wait_for(lambda: process.tcp_connectable(cfg.mqtt.port), 15.0)
        assert up, process.tail(tmp_path / "mosquitto.log")
        yield cfg
    finally:
        process.terminate(proc.pid, 10.0)
        proc.wait(timeout=5)


@pytest.mark.integration
def test_real_mosquitto_accepts_the_generated_identities_only(broker: FleetsimConfig) -> None:
    for identity in ("bridge", "sim", "tool"):
        assert connack_ok(broker, identity), f"{identity} refused by the generated password file"
    assert not connack_ok(broker, "tool", username=broker.mqtt.tool_user, password="wrong")
    assert not connack_ok(broker, "tool", username="nobody", password="x")


def test_placeholder_passwords_are_refused(cfg: FleetsimConfig) -> None:
    refuse_placeholders(cfg)  # real values pass
    bad = cfg.with_overrides({"mqtt.sim_password": PLACEHOLDER, "kafka.stream_password": PLACEHOLDER})
    with pytest.raises(ConfigError) as err:
        refuse_placeholders(bad)
    assert "FLEETSIM_MQTT__SIM_PASSWORD" in str(err.value) and "FLEETSIM_KAFKA__STREAM_PASSWORD" in str(
        err.value
    )
    assert "FLEETSIM_MQTT__BRIDGE_PASSWORD" not in str(err.value)


@pytest.fixture
def pg_server(postgres: FleetsimConfig) -> Iterator[tuple[FleetsimConfig, dict[str, str]]]:
    """Fresh database/role names on the shared server, a TCP superuser (like the postgres image's)
    and a CREATEROLE/CREATEDB non-superuser (like a managed service's admin). All dropped after."""
    from psycopg2 import sql

    from fleetsim.stack.postgres import Postgres

    uid = uuid.uuid4().hex[:8]
    users = {f"su_{uid}": "SUPERUSER", f"mgr_{uid}": "CREATEROLE CREATEDB"}
    passwords = {name: f"pw-{name}" for name in users}
    cfg = postgres.with_overrides(
        {
            "postgres.database": f"compose_{uid}",
            "postgres.admin_user": f"adm_{uid}",
            "postgres.writer_user": f"wri_{uid}",
            "postgres.reader_user": f"rea_{uid}",
        }
    )
    conn = Postgres(postgres).superuser_connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        for name, attrs in users.items():
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN " + attrs + " PASSWORD %s").format(sql.Identifier(name)),
                (passwords[name],),
            )
    try:
        yield cfg, passwords
    finally:
        with conn.cursor() as cur:
            db = sql.Identifier(cfg.postgres.database)
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
            pg = cfg.postgres
            for role in (pg.reader_user, pg.writer_user, pg.admin_user, *users):
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.close()


@pytest.mark.integration
def test_postgres_step_creates_least_privilege_roles_and_migrates_once(
    pg_server: tuple[FleetsimConfig, dict[str, str]],
) -> None:
    import psycopg2

    from fleetsim.kernel.clients import pg_connect
    from fleetsim.stack.compose_support import setup_postgres
    from fleetsim.stack.migrations import discover

    cfg, passwords = pg_server
    su = next(name for name in passwords if name.startswith("su_"))
    assert setup_postgres(cfg, su, passwords[su], timeout_s=30) == [m.version for m in discover()]
    assert setup_postgres(cfg, su, passwords[su], timeout_s=30) == [], "a second run must change nothing"
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False)
            cur.execute("SELECT count(*) FROM sensor_data")
            assert cur.fetchone() == (0,)
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("INSERT INTO devices (device_id) VALUES ('x')")
    finally:
        conn.close()


@pytest.mark.integration
def test_postgres_step_refuses_a_non_superuser_with_directions(
    pg_server: tuple[FleetsimConfig, dict[str, str]],
) -> None:
    from fleetsim.stack.compose_support import setup_postgres

    cfg, passwords = pg_server
    mgr = next(name for name in passwords if name.startswith("mgr_"))
    with pytest.raises(ConfigError, match="compose-init migrate"):
        setup_postgres(cfg, mgr, passwords[mgr], timeout_s=10)


def doc_sql_blocks() -> list[str]:
    """The ```sql blocks of the managed-PostgreSQL section of docs/scale-out.md, in order."""
    text = (REPO / "docs" / "scale-out.md").read_text(encoding="utf-8")
    section = text[text.index("**Managed services**") : text.index("`sensor_data` is partitioned")]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


@pytest.mark.integration
def test_managed_postgres_recipe_in_the_docs_works(pg_server: tuple[FleetsimConfig, dict[str, str]]) -> None:
    """Run the guide's SQL as a CREATEROLE/CREATEDB non-superuser, then `compose-init migrate`."""
    import psycopg2

    from fleetsim.kernel.clients import pg_connect
    from fleetsim.stack.compose_support import retry
    from fleetsim.stack.migrations import apply_migrations, discover

    cfg, passwords = pg_server
    mgr = next(name for name in passwords if name.startswith("mgr_"))
    pg = cfg.postgres
    names = {
        "fleetsim_admin": pg.admin_user,
        "fleetsim_writer": pg.writer_user,
        "fleetsim_reader": pg.reader_user,
    }
    secrets = {pg.admin_user: cfg.postgres.admin_password, pg.writer_user: cfg.postgres.writer_password,
               pg.reader_user: cfg.postgres.reader_password}  # fmt: skip

    def adapt(block: str) -> list[str]:
        out = []
        for raw in re.sub(r"--[^\n]*", "", block).split(";"):
            stmt = raw.strip()
            for old, new in names.items():
                stmt = re.sub(rf"\b{old}\b", new, stmt)
            stmt = re.sub(r"\bDATABASE fleetsim\b", f"DATABASE {pg.database}", stmt)
            for user, pw in secrets.items():
                if f"ROLE {user} " in stmt and pw is not None:
                    stmt = stmt.replace("'...'", "'" + pw.get_secret_value() + "'")
            if stmt:
                out.append(stmt)
        return out

    as_manager, as_admin = doc_sql_blocks()[:2]
    conn = psycopg2.connect(host=pg.host, port=pg.port, user=mgr, password=passwords[mgr], dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for stmt in adapt(as_manager):
                if re.match(r"CREATE ROLE fleetsim_(write|read) NOLOGIN", stmt):
                    continue  # the shared test server has the group roles already
                cur.execute(stmt)
    finally:
        conn.close()
    conn = pg_connect(cfg, "admin")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for stmt in adapt(as_admin):
                cur.execute(stmt)
    finally:
        conn.close()
    applied = retry("migrate", lambda: apply_migrations(cfg), 30.0)
    assert applied == [m.version for m in discover()]
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM sensor_data_agg")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
