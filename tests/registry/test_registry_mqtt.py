"""Onboarding on a real Mosquitto with the TLS listener on a loopback alias (127.0.0.2 plays the
public address): printed settings work over TLS, ACL confinement, disable/enable/rotate."""

from __future__ import annotations

import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.stack import Mosquitto, process
from fleetsim.stack.mosquitto import connack_ok

pytestmark = pytest.mark.integration

PUBLIC = "127.0.0.2"
"""Loopback alias standing in for the machine's public address (no traffic leaves the host)."""


@pytest.fixture(scope="module")
def tls_broker(
    postgres: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetsimConfig]:
    """Its own Mosquitto with ``mqtt.listen = 127.0.0.2`` (the shared one has no TLS listener),
    sharing the session's PostgreSQL and credentials."""
    port, tls_port = process.free_ports(2)
    cfg = postgres.with_overrides(
        {
            "stack.run_dir": str(tmp_path_factory.mktemp("tlsrun")),
            "mqtt.port": port,
            "mqtt.tls_port": tls_port,
            "mqtt.listen": PUBLIC,
        }
    )
    svc = Mosquitto(cfg)
    svc.start()
    try:
        yield cfg
    finally:
        svc.stop()


def fleetsim(cfg: FleetsimConfig, *args: str) -> subprocess.CompletedProcess[str]:
    """``fleetsim ARGS`` as a real child process (the installed entry point, config via env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    # The device commands must work from the run dir's state alone: no --listen on this command.
    env.pop("FLEETSIM_MQTT__LISTEN", None)
    return subprocess.run(
        [sys.executable, "-m", "fleetsim.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def cli(cfg: FleetsimConfig, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``fleetsim ARGS`` in this process (same code path after argument parsing, ~3 s cheaper)."""
    from unittest import mock

    from fleetsim.cli import main

    env = config_to_env(cfg)
    env.pop("FLEETSIM_MQTT__LISTEN", None)
    capsys.readouterr()
    with mock.patch.dict(os.environ, env):
        os.environ.pop("FLEETSIM_MQTT__LISTEN", None)
        rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _settings(output: str) -> dict[str, str]:
    user = re.search(r"username : (\S+)", output)
    pw = re.search(r"password : (\S+)", output)
    tls = re.search(r"TLS\s+: (\S+):(\d+)\s+CA file: (\S+)", output)
    topic = re.search(r"topic    : (\S+)", output)
    assert user and pw and tls and topic, output
    return {
        "username": user.group(1),
        "password": pw.group(1),
        "host": tls.group(1),
        "port": tls.group(2),
        "ca": tls.group(3),
        "topic": topic.group(1),
    }


class Device:
    """A device-side paho client (what a real sensor's firmware does)."""

    def __init__(self, host: str, port: int, user: str, password: str, ca: str | None) -> None:
        self.connack: queue.Queue[Any] = queue.Queue()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{uuid.uuid4().hex[:4]}",
            protocol=mqtt.MQTTv311,  # what Tasmota and most firmwares speak
        )
        self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = lambda _c, _u, _f, rc, _p=None: self.connack.put(rc)
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def accepted(self, timeout: float = 5.0) -> bool:
        return not self.connack.get(timeout=timeout).is_failure

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Collector:
    def __init__(self, cfg: FleetsimConfig, topic: str) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt_client(cfg, "tool", f"collector-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        mqtt_connect(self.client)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def next(self, timeout: float = 5.0) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_printed_settings_connect_over_tls_and_confine_the_device(tls_broker: FleetsimConfig) -> None:
    dev = f"tls-{uuid.uuid4().hex[:6]}"
    out = fleetsim(tls_broker, "device", "add", dev, "--site", "roof", "--lat", "45.1", "--lon", "4.2")
    assert out.returncode == 0, out.stderr
    s = _settings(out.stdout)
    assert (s["username"], s["host"], s["port"], s["topic"]) == (
        dev,
        PUBLIC,
        str(tls_broker.mqtt.tls_port),
        f"sensors/{dev}/telemetry",
    )
    assert Path(s["ca"]).is_file()
    assert s["password"] not in (tls_broker.run_dir / "mosquitto" / "device_passwd").read_text()
    sub = Collector(tls_broker, "sensors/#")
    device = Device(s["host"], int(s["port"]), s["username"], s["password"], s["ca"])
    try:
        assert device.accepted()
        # Another device's topic first, then its own, on one connection with QoS 1: the broker keeps
        # the order, so the forbidden message would arrive before the marker if it got through.
        device.client.publish("sensors/someone-else/telemetry", b"forbidden", qos=1).wait_for_publish(5)
        device.client.publish(s["topic"], b"mine", qos=1).wait_for_publish(5)
        assert sub.next() == (s["topic"], b"mine")
        assert sub.messages.empty()
    finally:
        device.close()
        sub.close()


def test_plain_and_unverified_connections_on_the_public_address_are_refused(
    tls_broker: FleetsimConfig,
) -> None:
    # The plain listener is bound to 127.0.0.1 only.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((PUBLIC, tls_broker.mqtt.port), timeout=3).close()
    # Plain MQTT against the TLS port: no CONNACK ever comes.
    plain = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    plain.username_pw_set(tls_broker.mqtt.tool_user, tls_broker.mqtt.tool_password.get_secret_value())  # type: ignore[union-attr]
    got: queue.Queue[Any] = queue.Queue()
    plain.on_connect = lambda *_a: got.put("connack")
    plain.connect(PUBLIC, tls_broker.mqtt.tls_port)
    plain.loop_start()
    try:
        with pytest.raises(queue.Empty):
            got.get(timeout=3)
    finally:
        plain.loop_stop()
    # TLS without our CA: the server certificate does not verify.
    ctx = ssl.create_default_context()
    with (
        socket.create_connection((PUBLIC, tls_broker.mqtt.tls_port), timeout=3) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(raw, server_hostname=PUBLIC)


def test_anonymous_is_refused_on_the_tls_listener(tls_broker: FleetsimConfig) -> None:
    from fleetsim.stack import tls

    ca = str(tls.files(tls_broker).ca_cert)
    anon = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    anon.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    got: queue.Queue[Any] = queue.Queue()
    anon.on_connect = lambda _c, _u, _f, rc, _p=None: got.put(rc)
    anon.connect(PUBLIC, tls_broker.mqtt.tls_port)
    anon.loop_start()
    try:
        assert got.get(timeout=5).is_failure
    finally:
        anon.loop_stop()


def test_disable_drops_the_live_session_and_refuses_new_ones_enable_and_rotate(
    tls_broker: FleetsimConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = f"life-{uuid.uuid4().hex[:6]}"
    rc, out, err = cli(
        tls_broker,
        capsys,
        "device",
        "add",
        dev,
        "--site",
        "s",
        "--lat",
        "1",
        "--lon",
        "2",
        "--format",
        "tasmota",
    )
    assert rc == 0, err
    s = _settings(out)
    assert s["topic"] == f"tele/{dev}/SENSOR"
    live = Device("127.0.0.1", tls_broker.mqtt.port, dev, s["password"], None)
    try:
        assert live.accepted()
        rc, out, err = cli(tls_broker, capsys, "device", "disable", dev)
        assert rc == 0, err
        assert "broker reloaded" in out
        # Mosquitto 2.0 re-checks connected clients on SIGHUP: the live session is closed.
        assert live.disconnected.wait(5), "live session survived the revocation"
    finally:
        live.client.loop_stop()
    assert not connack_ok(tls_broker, username=dev, password=s["password"])

    rc, out, err = cli(tls_broker, capsys, "device", "enable", dev)
    assert rc == 0, err
    assert process.wait_for(lambda: connack_ok(tls_broker, username=dev, password=s["password"]), 5)

    rc, out, err = cli(tls_broker, capsys, "device", "rotate-credentials", dev)
    assert rc == 0, err
    new = _settings(out)
    assert new["password"] != s["password"]
    assert process.wait_for(lambda: connack_ok(tls_broker, username=dev, password=new["password"]), 5)
    assert not connack_ok(tls_broker, username=dev, password=s["password"])


def test_cli_errors_are_clear(tls_broker: FleetsimConfig, capsys: pytest.CaptureFixture[str]) -> None:
    dev = f"dup-{uuid.uuid4().hex[:6]}"
    assert cli(tls_broker, capsys, "device", "add", dev, "--site", "s", "--lat", "1", "--lon", "2")[0] == 0
    rc, _, err = cli(tls_broker, capsys, "device", "add", dev, "--site", "s", "--lat", "1", "--lon", "2")
    assert rc == 1
    assert "already exists" in err
    rc, _, err = cli(
        tls_broker, capsys, "device", "add", "no/slash", "--site", "s", "--lat", "1", "--lon", "2"
    )
    assert rc == 1
    assert "invalid" in err
    rc, out, _ = cli(tls_broker, capsys, "device", "show", dev)
    assert rc == 0
    assert "mqtt_identity   active" in out
    rc, out, _ = cli(tls_broker, capsys, "device", "list", "--kind", "real")
    assert rc == 0
    assert dev in out
    rc, _, err = cli(tls_broker, capsys, "device", "disable", "never-added")
    assert rc == 1
    assert "no device" in err
