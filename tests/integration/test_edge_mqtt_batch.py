"""The simulator's batched QoS 0 path writes its own PUBLISH packets on paho's socket: a broker
and a plain subscriber must see every message intact, in order, also when the socket takes only
part of a batch (paho finishes the rest), with MQTT 5 and 3.1.1."""

from __future__ import annotations

import threading

import pytest
from waiting import wait_until

from fleetsim.edge.mqtt import MqttPublisher
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_batched_qos0_publishes_arrive_intact_and_in_order(mosquitto: FleetsimConfig, protocol: str) -> None:
    cfg = mosquitto.with_overrides({"mqtt.qos": 0, "mqtt.protocol": protocol})
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    sub = mqtt_client(cfg, "tool", f"it-batch-tap-{protocol}")
    sub.on_connect = lambda c, *_: c.subscribe("sensors/+/telemetry", qos=0)
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload))
    mqtt_connect(sub)
    sub.loop_start()
    pub = MqttPublisher(cfg)
    try:
        assert ready.wait(10)
        pub.start()
        # ~6 MB in one call: far more than a socket takes at once, so paho writes the rest.
        sizes = (1, 130, 20_000)  # short, 2-byte and 3-byte remaining lengths
        items = [
            (f"bt-{i % 50}", f"sensors/bt-{i % 50}/telemetry", b"x" * sizes[i % 3] + str(i).encode())
            for i in range(900)
        ]
        assert pub.publish_many(items) == len(items)
        assert pub.publish_many(items[:10]) == 10  # paho may still hold bytes: the slow path
        # Inline, nothing writes paho's leftover bytes but the caller's pump: drain must (a slow
        # tap fills the socket, and CI once waited 30 s here for bytes nobody wrote).
        assert pub.drain(30)
        wait_until(lambda: len(got) >= len(items) + 10, 30, what="every batched message at the tap")
        assert got == [(t, p) for _, t, p in items + items[:10]]
    finally:
        pub.close(graceful=False)
        sub.disconnect()
        sub.loop_stop()
