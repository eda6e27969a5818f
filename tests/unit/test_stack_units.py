"""Pure parts of the local stack: generated files, hashes, migration discovery, port probe."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import subprocess
from pathlib import Path

import pytest

from fleetsim.cli.stack import COMPONENTS as CLI_COMPONENTS
from fleetsim.kernel import components as table
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ConfigError, MigrationError, PortInUseError
from fleetsim.stack import SERVICES, lifecycle, process
from fleetsim.stack.components import APPS, AppComponent
from fleetsim.stack.isolated import PORT_KEYS
from fleetsim.stack.kafka import server_properties
from fleetsim.stack.migrations import discover
from fleetsim.stack.mosquitto import acl_text, hash_password

CFG = FleetsimConfig().with_overrides(
    {
        "kafka.admin_password": "a-pw",
        "kafka.bridge_password": "b-pw",
        "kafka.stream_password": "s-pw",
        "kafka.bootstrap": "127.0.0.1:19092",
        "kafka.controller_port": 19093,
    }
)


def test_password_hash_is_mosquitto_pbkdf2_format() -> None:
    salt = b"0123456789ab"
    h = hash_password("secret", salt=salt)
    _, alg, iterations, salt_b64, digest_b64 = h.split("$")
    assert (alg, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)
    assert hash_password("secret") != hash_password("secret")  # random salt


def test_password_hash_verifies_with_mosquitto_passwd_format(tmp_path: Path) -> None:
    # mosquitto_passwd writes the same $7$ layout: check ours parses like one of its lines.
    f = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "u", "pw"], check=True, capture_output=True)
    theirs = f.read_text().strip().split(":", 1)[1].split("$")
    ours = hash_password("pw", salt=base64.b64decode(theirs[3])).split("$")
    assert ours == theirs


def test_acl_least_privilege_per_identity() -> None:
    text = acl_text(CFG)
    blocks = {b.splitlines()[0]: b for b in text.split("\n\n") if b.startswith("user ")}
    sim = blocks[f"user {CFG.mqtt.sim_user}"]
    bridge = blocks[f"user {CFG.mqtt.bridge_user}"]
    tool = blocks[f"user {CFG.mqtt.tool_user}"]
    assert "topic write sensors/+/telemetry" in sim and "topic read fleetsim/control/#" in sim
    assert "sensors/#" not in sim  # the simulator cannot read telemetry
    assert "topic read sensors/#" in bridge and "$share/+/sensors/#" in bridge
    # The bridge writes only its group's presence (session adoption); nobody else may touch it.
    assert [ln for ln in bridge.splitlines() if "write" in ln] == ["topic readwrite fleetsim/bridge/+/status"]
    assert text.count("fleetsim/bridge/") == 1
    assert "topic write fleetsim/control/#" in tool and "topic write sensors" not in tool
    assert "pattern write sensors/%u/#" in text  # device identities: own topics only


def test_kafka_properties_bind_loopback_and_require_sasl() -> None:
    props = dict(
        line.split("=", 1) for line in server_properties(CFG, Path("/x")).splitlines() if "=" in line
    )
    assert props["listeners"] == "CLIENT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "CLIENT:SASL_PLAINTEXT",
        "CONTROLLER:SASL_PLAINTEXT",
    }
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == f"User:{CFG.kafka.admin_user}"
    jaas = props["listener.name.client.plain.sasl.jaas.config"]
    assert f'user_{CFG.kafka.bridge_user}="b-pw"' in jaas and f'user_{CFG.kafka.stream_user}="s-pw"' in jaas


def test_kafka_advertises_its_own_port_unless_told_a_proxy_port() -> None:
    def advertised(cfg: FleetsimConfig) -> str:
        lines = server_properties(cfg, Path("/x")).splitlines()
        return next(line.split("=", 1)[1] for line in lines if line.startswith("advertised.listeners="))

    assert advertised(CFG) == "CLIENT://127.0.0.1:19092"
    proxied = CFG.with_overrides({"kafka.advertised_port": 29092})
    assert advertised(proxied) == "CLIENT://127.0.0.1:29092"
    assert "CLIENT://127.0.0.1:19092" in server_properties(proxied, Path("/x"))  # still binds its own
    with pytest.raises(ConfigError):
        CFG.with_overrides({"kafka.advertised_port": 70000})


def test_migration_discovery_orders_and_rejects_bad_names(tmp_path: Path) -> None:
    (tmp_path / "V010__later.sql").write_text("SELECT 1;")
    (tmp_path / "V002__first.sql").write_text("SELECT 2;")
    assert [m.version for m in discover(tmp_path)] == [2, 10]
    (tmp_path / "V2__dup.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="version 2 also used"):
        discover(tmp_path)
    (tmp_path / "V2__dup.sql").unlink()
    (tmp_path / "V3-bad name.sql").write_text("")
    with pytest.raises(MigrationError, match=r"V<NNN>__<name>\.sql"):
        discover(tmp_path)


def test_repo_migrations_are_discoverable() -> None:
    versions = [m.version for m in discover()]
    assert versions[0] == 1 and versions == sorted(set(versions))


def test_port_probe_and_port_in_use_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert process.port_in_use(port)
        with pytest.raises(PortInUseError, match="FLEETSIM_POSTGRES__PORT=<port>"):
            process.check_ports_free({"postgres.port": port}, grace_s=0.5)
    assert not process.port_in_use(port)


def test_missing_kafka_jars_say_run_make_setup_and_start_nothing(tmp_path: Path) -> None:
    from fleetsim.kernel.errors import MissingDependencyError
    from fleetsim.stack import Kafka

    cfg = CFG.with_overrides(
        {"stack.jvm_dir": str(tmp_path / "nojars"), "stack.run_dir": str(tmp_path / "run")}
    )
    svc = Kafka(cfg)
    with pytest.raises(MissingDependencyError, match=r"Kafka broker jars not found .*run `make setup`"):
        svc.start()
    assert not svc.is_running() and not svc.pid_file.exists()


def test_missing_java_says_run_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fleetsim.kernel.errors import MissingDependencyError
    from fleetsim.stack import Kafka

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(MissingDependencyError, match=r"`java` not found.*run `make setup`"):
        Kafka(CFG).check_dependencies()


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    import socket

    from fleetsim.stack.process import _ephemeral_low, free_ports

    ports = free_ports(12)
    assert len(set(ports)) == 12
    # Outside the range the kernel hands to outgoing sockets: no client can self-connect on them.
    assert all(1024 <= p < _ephemeral_low() for p in ports), ports
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


# ------------------------------------------------------------------------------ component table
def test_stack_tables_build_on_the_kernel_component_table(tmp_path: Path) -> None:
    assert tuple(SERVICES) == table.ENGINE_NAMES and tuple(APPS) == table.APP_NAMES
    assert CLI_COMPONENTS == table.COMPONENT_NAMES
    assert {c.port_key for c in table.COMPONENTS} <= set(PORT_KEYS)
    cfg = FleetsimConfig().with_overrides({"stack.run_dir": str(tmp_path), "bridge.metrics_port": 19102})
    for name in table.COMPONENT_NAMES:
        comp = lifecycle.component(name, cfg)
        assert comp.port == table.endpoint(cfg, name)[1], name
    assert AppComponent("bridge", cfg).url() == "http://127.0.0.1:19102/metrics"
    stopped: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lifecycle, "component", lambda name, _cfg: _Stopper(name, stopped))
        lifecycle.down(cfg, report=lambda _line: None)
    assert stopped == list(reversed(table.COMPONENT_NAMES))


class _Stopper:
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.name, self.stopped = name, stopped

    def stop(self) -> bool:
        self.stopped.append(self.name)
        return False


def test_start_waves_hold_every_component_once_and_the_simulator_after_the_bridge() -> None:
    from fleetsim.kernel.components import COMPONENT_NAMES, COMPONENTS
    from fleetsim.stack.lifecycle import WAVES

    flat = [name for wave in WAVES for name in wave]
    assert sorted(flat) == sorted(COMPONENT_NAMES) and len(flat) == len(set(flat))
    wave_of = {name: i for i, wave in enumerate(WAVES) for name in wave}
    # Every app starts after every engine; the simulator after the bridge that forwards it.
    engines = [c.name for c in COMPONENTS if c.kind == "engine"]
    apps = [c.name for c in COMPONENTS if c.kind == "app"]
    assert max(wave_of[e] for e in engines) < min(wave_of[a] for a in apps)
    assert wave_of["sim"] > wave_of["bridge"]


def test_group_alive_counts_live_members_not_a_zombie_leader() -> None:
    import os
    import signal
    import sys

    # A leader in its own group with a child, like a component and its Spark JVM.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        assert process.wait_for(lambda: len(_group(leader.pid)) == 2, 10, 0.05)
        assert process.group_alive(leader.pid)
        os.kill(leader.pid, signal.SIGKILL)  # not reaped: a zombie, as a leader PID 1 has not reaped yet
        assert process.wait_for(lambda: _state(leader.pid) == "Z", 10, 0.05)
        assert process.group_alive(leader.pid), "its child still runs"
        os.killpg(leader.pid, signal.SIGKILL)
        assert process.wait_for(lambda: not process.group_alive(leader.pid), 10, 0.05)
        os.killpg(leader.pid, 0)  # the zombie leader keeps the group "signallable": the old check
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)


def _state(pid: int) -> str:
    fields = process.stat_fields(pid)
    return fields[0] if fields else ""


def _group(pgid: int) -> list[int]:
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and (f := process.stat_fields(e.name)) and int(f[2]) == pgid
    ]
