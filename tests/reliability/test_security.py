"""Security checks on a full pipeline run that the component tests do not already make.

Already covered elsewhere (not repeated here): anonymous and wrong-password MQTT refused
(tests/integration/test_stack_mqtt.py, tests/registry/test_registry_mqtt.py on TLS); a device
identity's publish on another device's telemetry topic is dropped by the broker
(test_stack_mqtt.py::test_device_identity_publishes_only_under_its_own_id); the reader role
refused INSERT/UPDATE/DELETE/CREATE/TRUNCATE (tests/dashboard/test_dashboard_reader_role.py);
``status --json`` and ``config show`` without passwords (test_stack_lifecycle.py); the
dashboard's argv (tests/dashboard/test_dashboard_logic.py).

Here: device A's attempts on device B go nowhere end to end (every B topic refused with
NOT_AUTHORIZED, B's id inside A's own topic dead-lettered ``id_mismatch``, no row for B); the
reader role cannot run the SECURITY DEFINER partition functions or take another role; the
dashboard started with the default configuration listens on 127.0.0.1 only; no secret in any
log of the run nor in ``fleetsim status`` / ``status --json`` / ``config show``; Mosquitto's
generated configuration states its size, queue and in-flight limits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from waiting import wait_until

from fleetsim.chaos import mqtt_raw
from fleetsim.chaos.checker import query
from fleetsim.chaos.pipeline import Pipeline
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import DashboardConfig, FleetsimConfig, config_to_env
from fleetsim.kernel.contract import encode_reading, format_ts_ms
from fleetsim.stack import Mosquitto
from fleetsim.stack.mosquitto import MAX_INFLIGHT, reload_identities, set_device_identity
from fleetsim.stack.process import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.spark]

DEVICE_A, DEVICE_B = "sec-dev-a", "sec-dev-b"
DEVICE_A_PASSWORD = "device-a-secret-9f3c1e"


def reading(device: str, seq: int) -> bytes:
    now = format_ts_ms(int(time.time() * 1000))
    return encode_reading(device, now, seq, 21.0, 45.0, 600.0, 1013.0, 80.0, 45.76, 4.84)


def secrets_of(cfg: FleetsimConfig) -> dict[str, str]:
    out = {DEVICE_A: DEVICE_A_PASSWORD}
    for section in ("mqtt", "kafka", "postgres"):
        for key, value in getattr(cfg, section):
            if key.endswith("_password") and value is not None:
                out[f"{section}.{key}"] = value.get_secret_value()
    return out


def cli(cfg: FleetsimConfig, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    return subprocess.run(
        [sys.executable, "-m", "fleetsim.cli", *argv], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- MQTT
def test_device_a_cannot_write_for_device_b_end_to_end(pipe: Pipeline) -> None:
    cfg = pipe.cfg
    set_device_identity(cfg, DEVICE_A, DEVICE_A_PASSWORD)
    assert reload_identities(cfg)
    login = {"username": DEVICE_A, "password": DEVICE_A_PASSWORD}

    def code(topic: str, payload: bytes) -> int:
        return mqtt_raw.puback_code(cfg, topic, payload, **login)

    wait_until(lambda: _accepted(lambda: code(f"sensors/{DEVICE_A}/telemetry", reading(DEVICE_A, 1))), 15,
               what="device A's identity after SIGHUP")  # fmt: skip
    foreign = [f"sensors/{DEVICE_B}/telemetry", f"sensors/{DEVICE_B}/senml", f"tele/{DEVICE_B}/SENSOR",
               f"sensors/{DEVICE_B}/status", "fleetsim/control/all"]  # fmt: skip
    assert {t: code(t, reading(DEVICE_B, 1)) for t in foreign} == dict.fromkeys(
        foreign, mqtt_raw.NOT_AUTHORIZED
    )
    # Allowed topic, B's id in the payload: the broker routes it, the bridge must refuse it.
    assert code(f"sensors/{DEVICE_A}/telemetry", reading(DEVICE_B, 2)) in (
        0,
        mqtt_raw.NO_MATCHING_SUBSCRIBERS,
    )
    assert code(f"sensors/{DEVICE_A}/telemetry", reading(DEVICE_A, 3)) in (
        0,
        mqtt_raw.NO_MATCHING_SUBSCRIBERS,
    )

    def stored(device: str) -> list[int]:
        return [
            s for (s,) in query(cfg, "SELECT seq FROM sensor_data WHERE device_id = %s ORDER BY 1", (device,))
        ]

    wait_until(lambda: stored(DEVICE_A) == [1, 3], 120, what="device A's own readings stored")
    dead = "SELECT reason, source_topic FROM deadletter_records WHERE source_topic LIKE %s"
    wait_until(lambda: bool(query(cfg, dead, ("%sec-dev-%",))), 60, what="the spoofed reading dead-lettered")
    assert query(cfg, dead, ("%sec-dev-%",)) == [("id_mismatch", f"sensors/{DEVICE_A}/telemetry")]
    assert stored(DEVICE_B) == []
    assert query(cfg, "SELECT count(*) FROM device_latest WHERE device_id = %s", (DEVICE_B,)) == [(0,)]


def _accepted(publish: Any) -> bool:
    try:
        return publish() in (0, mqtt_raw.NO_MATCHING_SUBSCRIBERS)
    except ConnectionRefusedError:
        return False


def test_mosquitto_config_states_its_limits(pipe: Pipeline) -> None:
    m = pipe.cfg.mqtt
    lines = Mosquitto(pipe.cfg).conf_file.read_text(encoding="utf-8").splitlines()
    for line in (
        f"listener {m.port} 127.0.0.1",
        "allow_anonymous false",
        f"message_size_limit {m.broker_max_payload}",
        f"max_queued_messages {m.max_queued_messages}",
        f"max_inflight_messages {MAX_INFLIGHT}",
    ):
        assert line in lines, line
    # Enforced, not just written: one byte over the limit is refused by the running broker.
    over = b"x" * (m.broker_max_payload + 1)
    assert mqtt_raw.puback_code(pipe.cfg, "sensors/sec-size/telemetry", over) == mqtt_raw.PACKET_TOO_LARGE


# ------------------------------------------------------------------------------------ database
READER_REFUSED = [
    "SELECT drop_old_sensor_data_partitions(0)",  # SECURITY DEFINER: would drop every partition
    "SELECT ensure_sensor_data_partition(current_date + 400)",
    "INSERT INTO sensor_data (device_id, seq, ts, status) VALUES ('x', 1, now(), 'OK')",
    "UPDATE sensor_data SET temperature = 0",
    "DELETE FROM deadletter_records",
    "TRUNCATE sensor_data",
    "CREATE SCHEMA dashboard_was_here",
    "ALTER TABLE devices ADD COLUMN x int",
    "DROP TABLE sensor_alerts",
]


@pytest.mark.parametrize("statement", READER_REFUSED)
def test_reader_role_cannot_change_anything(pipe: Pipeline, statement: str) -> None:
    conn = pg_connect(pipe.cfg, "reader")
    conn.autocommit = True
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as info:
            cur.execute(statement)
        assert info.value.pgcode == "42501", (info.value.pgcode, str(info.value))  # insufficient_privilege
    finally:
        conn.close()


def test_reader_role_cannot_become_another_role(pipe: Pipeline) -> None:
    pg = pipe.cfg.postgres
    conn = pg_connect(pipe.cfg, "reader")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in (pg.writer_user, pg.admin_user):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(f'SET ROLE "{role}"')
            cur.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False)
    finally:
        conn.close()


# ----------------------------------------------------------------------------------- dashboard
def _listening(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (IPv4 and IPv6, from /proc/net)."""
    out: set[str] = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            # /proc/net prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            if len(words) == 4:
                out.add(".".join(map(str, words)))
            elif words[:12] == bytes(10) + b"\xff\xff":  # IPv4-mapped IPv6
                out.add("::ffff:" + ".".join(map(str, words[12:])))
            else:
                out.add(words.hex(":", 2))
    return out


def test_dashboard_listens_on_loopback_by_default(pipe: Pipeline, tmp_path: Path) -> None:
    assert DashboardConfig().host == "127.0.0.1"
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(pipe.cfg)
    env.pop("FLEETSIM_DASHBOARD__HOST")  # the default, not the value the test config carries
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetsim.cli", "dashboard", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: bool(_listening(port)) or proc.poll() is not None, 120, what="the dashboard to listen"
        )
        assert proc.poll() is None, log.read_text()
        assert _listening(port) == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------- secrets
def test_no_secret_in_logs_status_or_config_show(pipe: Pipeline, tmp_path: Path) -> None:
    cfg = pipe.cfg
    secrets = secrets_of(cfg)
    assert len(secrets) >= 10 and all(len(v) >= 12 for v in secrets.values())
    # Something worth logging: a refused login with a real password of another identity.
    with pytest.raises(ConnectionRefusedError):
        mqtt_raw.puback_code(
            cfg, "sensors/x/telemetry", b"{}", cfg.mqtt.tool_user, secrets["mqtt.sim_password"]
        )
    outputs = {}
    for argv in (["status"], ["status", "--json"], ["config", "show"]):
        done = cli(cfg, *argv, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs[" ".join(argv)] = done.stdout + done.stderr
    assert "mosquitto" in outputs["status"] and "********" in outputs["config show"]
    logs = [p for d in (pipe.logs, cfg.run_dir / "logs") for p in d.rglob("*") if p.is_file()]
    logs += [p for p in cfg.run_dir.rglob("*.log") if p not in logs]
    assert {p.name for p in logs} >= {
        "bridge.log",
        "stream.log",
        "mosquitto.log",
        "kafka.log",
        "postgres.log",
    }
    texts = {str(p): p.read_bytes().decode(errors="replace") for p in logs} | outputs
    leaks = [
        (where, name) for where, text in texts.items() for name, value in secrets.items() if value in text
    ]
    print(f"\nsecrets: {len(secrets)} values checked in {len(logs)} log files "
          f"({sum(map(len, texts.values())) // 1024} KiB) and 3 command outputs")  # fmt: skip
    assert leaks == []
