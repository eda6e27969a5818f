"""Real Mosquitto with the generated config: authentication and ACLs.

Tests that assert on EVERY message seen on ``sensors/#`` use ``private_mosquitto``: on the shared
broker, other tests' publishers may be live at the same time.
"""

from __future__ import annotations

import queue
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetsim.kernel import contract
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import process
from fleetsim.stack.mosquitto import (
    Mosquitto,
    connack_ok,
    reload_identities,
    remove_device_identity,
    set_device_identity,
)

pytestmark = pytest.mark.integration


def _valid_payload(device_id: str, seq: int) -> bytes:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    obj = {
        "device_id": device_id,
        "ts": ts,
        "seq": seq,
        "temperature": 21.5,
        "humidity": 40.0,
        "co2": 600.0,
        "pressure": 1013.0,
        "battery": 88.0,
        "lat": 48.85,
        "lon": 2.35,
        "status": "OK",
    }
    import json

    return json.dumps(obj).encode()


class Collector:
    """A subscriber that queues every message it receives."""

    def __init__(self, cfg: FleetsimConfig, identity: str, topic: str) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt_client(cfg, identity, f"collector-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        mqtt_connect(self.client)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "SUBACK not received"

    def next(self, timeout: float = 5.0) -> Any:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher(cfg: FleetsimConfig, **kw: Any) -> Any:
    client = mqtt_client(cfg, "sim", f"pub-{uuid.uuid4().hex[:8]}", **kw)
    connected = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not rc.is_failure:
            connected.set()

    client.on_connect = on_connect
    mqtt_connect(client)
    client.loop_start()
    assert connected.wait(5), "publisher not accepted"
    return client


def test_contract_valid_message_arrives_with_generated_credentials(private_mosquitto: FleetsimConfig) -> None:
    sub = Collector(private_mosquitto, "bridge", "sensors/+/telemetry")
    pub = _publisher(private_mosquitto)
    try:
        payload = _valid_payload("dev-arrive", 7)
        pub.publish(contract.telemetry_topic("dev-arrive"), payload, qos=1).wait_for_publish(5)
        msg = sub.next()
        assert msg.topic == "sensors/dev-arrive/telemetry"
        reading = contract.decode(msg.payload, topic_device_id=contract.device_id_from_topic(msg.topic))
        assert reading.device_id == "dev-arrive"
        assert reading.seq == 7
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()


def test_anonymous_and_wrong_password_are_refused(mosquitto: FleetsimConfig) -> None:
    assert connack_ok(mosquitto, "tool")
    assert not connack_ok(mosquitto, "tool", username="", password=None)
    assert not connack_ok(mosquitto, "tool", username=mosquitto.mqtt.tool_user, password="wrong")
    # A bare client without any credentials at all:
    result: list[Any] = []
    done = threading.Event()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", mosquitto.mqtt.port)
    client.loop_start()
    try:
        assert done.wait(5)
        assert result[0].is_failure
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_forbidden_then_marker(pub: Any, forbidden: str, marker_topic: str) -> None:
    # Same client, QoS 1: the broker forwards in order, so once the marker arrived the
    # forbidden message would have arrived before it if the ACL had let it through.
    pub.publish(forbidden, b"must-not-arrive", qos=1).wait_for_publish(5)
    pub.publish(marker_topic, b"marker", qos=1).wait_for_publish(5)


def test_sim_identity_cannot_publish_outside_its_topics(private_mosquitto: FleetsimConfig) -> None:
    sub = Collector(private_mosquitto, "tool", "sensors/#")
    pub = _publisher(private_mosquitto)
    try:
        _publish_forbidden_then_marker(pub, "sensors/dev-x/config", "sensors/dev-x/telemetry")
        msg = sub.next()
        assert (msg.topic, msg.payload) == ("sensors/dev-x/telemetry", b"marker")
        assert sub.messages.empty()
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()


def test_device_identity_publishes_only_under_its_own_id(private_mosquitto: FleetsimConfig) -> None:
    device, other = f"dev-{uuid.uuid4().hex[:6]}", "dev-victim"
    set_device_identity(private_mosquitto, device, "device-secret-1")
    try:
        assert reload_identities(private_mosquitto)
        assert process.wait_for(
            lambda: connack_ok(private_mosquitto, "sim", username=device, password="device-secret-1"), 10
        ), "device identity not accepted after SIGHUP"
        sub = Collector(private_mosquitto, "tool", "sensors/#")
        pub = _publisher(private_mosquitto, username=device, password="device-secret-1")
        try:
            _publish_forbidden_then_marker(pub, f"sensors/{other}/telemetry", f"sensors/{device}/telemetry")
            msg = sub.next()
            assert msg.topic == f"sensors/{device}/telemetry"
            assert sub.messages.empty()
        finally:
            pub.disconnect()
            pub.loop_stop()
            sub.close()
    finally:
        remove_device_identity(private_mosquitto, device)
        reload_identities(private_mosquitto)
    assert process.wait_for(
        lambda: not connack_ok(private_mosquitto, "sim", username=device, password="device-secret-1"), 10
    ), "removed device identity still accepted"


def test_generated_files_are_private(mosquitto: FleetsimConfig) -> None:
    svc = Mosquitto(mosquitto)
    for path in (svc.passwd_file, svc.acl_file, svc.conf_file):
        assert path.stat().st_mode & 0o007 == 0, path
    assert mosquitto.secrets_file.stat().st_mode & 0o777 == 0o600
    text = svc.passwd_file.read_text()
    assert mosquitto.mqtt.sim_password is not None
    assert mosquitto.mqtt.sim_password.get_secret_value() not in text


def test_status_figure_is_measured_from_the_broker(mosquitto: FleetsimConfig) -> None:
    svc = Mosquitto(mosquitto)
    before = svc.status()
    assert before.up and before.pid == svc.pid() and before.port == mosquitto.mqtt.port
    pub = _publisher(mosquitto)
    try:
        for i in range(25):
            pub.publish(
                "sensors/dev-count/telemetry", _valid_payload("dev-count", i), qos=1
            ).wait_for_publish(5)
        # $SYS counters refresh every sys_interval (2 s): poll until they include our 25.
        assert process.wait_for(
            lambda: svc.status().metrics["messages_received"] >= before.metrics["messages_received"] + 25,
            10,
            0.5,
        )
        assert process.wait_for(lambda: svc.status().metrics["clients_connected"] >= 1, 10, 0.5)
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_private_mosquitto_is_a_separate_broker(
    private_mosquitto: FleetsimConfig, mosquitto: FleetsimConfig
) -> None:
    assert private_mosquitto.mqtt.port != mosquitto.mqtt.port
    shared = Collector(mosquitto, "tool", "sensors/#")
    private = Collector(private_mosquitto, "tool", "sensors/#")
    pub = _publisher(private_mosquitto)
    try:
        pub.publish("sensors/dev-private/telemetry", b"only-here", qos=1).wait_for_publish(5)
        assert private.next().payload == b"only-here"
        # The shared broker may carry other tests' traffic: only ours must be absent there.
        seen_shared = [shared.messages.get_nowait().payload for _ in range(shared.messages.qsize())]
        assert b"only-here" not in seen_shared
    finally:
        pub.disconnect()
        pub.loop_stop()
        shared.close()
        private.close()
