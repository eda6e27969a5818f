"""The simulator's batched QoS 0 and QoS 1 paths write their own PUBLISH packets on paho's
socket: a broker and a plain subscriber must see every message intact, in order, also when the
socket takes only part of a batch (paho finishes the rest), with MQTT 5 and 3.1.1. At QoS 1 a
batch beyond the broker's receive maximum goes out in chunks, and a broker restart loses nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from fleetsim.edge.mqtt import MqttPublisher
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.mosquitto import MAX_INFLIGHT

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
        items = _batch("bt")
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


def _batch(prefix: str, n: int = 900) -> list[tuple[str, str, bytes]]:
    """``n`` readings of 50 devices, payloads of 1, 130 and 20,000 bytes in turn (short, 2-byte
    and 3-byte remaining lengths): ~6 MB for 900, more than a socket takes at once."""
    sizes = (1, 130, 20_000)
    return [
        (f"{prefix}-{i % 50}", f"sensors/{prefix}-{i % 50}/telemetry", b"x" * sizes[i % 3] + str(i).encode())
        for i in range(n)
    ]


def _tap(cfg: FleetsimConfig, name: str, got: list[tuple[str, bytes]], **session: Any) -> Any:
    ready = threading.Event()
    sub = mqtt_client(cfg, "tool", name, **session)
    sub.on_connect = lambda c, *_: c.subscribe("sensors/+/telemetry", qos=1)
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload))
    sub.reconnect_delay_set(1, 2)
    mqtt_connect(sub)
    sub.loop_start()
    assert ready.wait(10)
    return sub


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_batched_qos1_goes_out_in_chunks_intact_and_in_order(
    mosquitto: FleetsimConfig, protocol: str
) -> None:
    cfg = mosquitto.with_overrides({"mqtt.qos": 1, "mqtt.protocol": protocol})
    got: list[tuple[str, bytes]] = []
    sub = _tap(cfg, f"it-batch1-tap-{protocol}", got)
    pub = MqttPublisher(cfg)
    try:
        pub.start()
        # 900 messages: 9x the broker's receive maximum (beyond it Mosquitto disconnects a v5
        # client), ~6 MB: more than a socket takes at once.
        items = _batch("bq")
        assert pub.publish_many(items) == len(items)
        assert pub.main.room >= 0 and len(pub.main.unacked) <= MAX_INFLIGHT
        assert pub.publish_many(items[:10]) == 10
        assert pub.drain(30)
        # drain returned: every PUBACK is in, none of ours is left in flight
        assert pub.outstanding == 0 and not pub.main.unacked and not pub.main.refused
        assert pub.generation == 1  # the broker never disconnected us
        wait_until(lambda: len(got) >= len(items) + 10, 30, what="every batched message at the tap")
        assert got == [(t, p) for _, t, p in items + items[:10]]
    finally:
        pub.close(graceful=False)
        sub.disconnect()
        sub.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_batched_qos1_broker_restart_loses_nothing(
    fleet_cfg: FleetsimConfig, tmp_path: Path, protocol: str
) -> None:
    """Mosquitto restarted while QoS 1 batches are in flight: our unacknowledged packets are
    resent on the new connection; every message handed over reaches a persistent-session tap."""
    from fleetsim.stack import dedicated  # stack helpers only for the tests that restart a broker

    with dedicated(fleet_cfg, tmp_path / "own", "mosquitto") as (own, svcs):
        cfg = own.with_overrides({"mqtt.qos": 1, "mqtt.protocol": protocol})
        got: list[tuple[str, bytes]] = []
        sub = _tap(cfg, f"it-batch1-restart-{protocol}", got, clean=False, session_expiry_s=600)
        pub = MqttPublisher(cfg)
        handed: list[bytes] = []
        try:
            pub.start()
            i, restarted_at = 0, None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (restarted_at is None or len(handed) < 6000):
                if not pub.link_ok("x"):
                    pub.pump(0.05)  # reconnects with backoff, as the simulation's idle loop does
                    continue
                batch = [
                    (f"br-{k % 20}", f"sensors/br-{k % 20}/telemetry", b"%08d" % k) for k in range(i, i + 200)
                ]
                n = pub.publish_many(batch)
                handed += [p for _, _, p in batch[:n]]
                i += n  # what was not taken is offered again, as devices keep it
                if restarted_at is None and len(handed) >= 2000:
                    svcs["mosquitto"].stop()  # mid-batch: up to a receive maximum of ours unacked
                    restarted_at = time.monotonic()
                    svcs["mosquitto"].start()
            assert restarted_at is not None and pub.generation >= 2  # the restart really happened
            assert pub.drain(30)
            assert pub.outstanding == 0 and not pub.main.unacked
            assert pub.main.resent > 0  # the restart caught packets of ours unacknowledged
            wait_until(
                lambda: set(handed) <= {p for _, p in got}, 30, what="every handed-over message at the tap"
            )
        finally:
            pub.close(graceful=False)
            sub.disconnect()
            sub.loop_stop()
