"""The end-to-end benchmark's external load generator on a real Mosquitto: every reading it counts
as acknowledged reaches a subscriber, byte for byte a valid contract reading on its device's topic,
at the rate asked for."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from fleetsim.bench.loadgen import LoadGen
from fleetsim.kernel import contract
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = pytest.mark.integration


def test_loadgen_publishes_paced_contract_readings_that_the_broker_acknowledges(
    private_mosquitto: FleetsimConfig,
) -> None:
    seen: Counter[str] = Counter()
    bad: list[str] = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, msg: object) -> None:
        topic, payload = msg.topic, msg.payload  # type: ignore[attr-defined]
        try:
            reading = contract.decode(payload, topic_device_id=topic.split("/")[1])
        except Exception as exc:  # any refusal is the failure under test
            with lock:
                bad.append(f"{topic}: {exc}")
            return
        with lock:
            seen[reading.device_id] += 1

    sub = mqtt_client(private_mosquitto, "bridge", f"lg-{uuid.uuid4().hex[:8]}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    mqtt_connect(sub)
    sub.subscribe("sensors/+/telemetry", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        gen = LoadGen(private_mosquitto, "lg", devices=50, rate=2000, duration_s=2.0, connections=2)
        t0 = time.monotonic()
        gen.run()
        elapsed = time.monotonic() - t0
        summary = gen.summary()
        deadline = time.monotonic() + 10
        while sum(seen.values()) < 4000 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert summary["sent"] == 4000 and summary["acked"] == 4000, summary
    assert summary["errors"] == [] and summary["unacked_devices"] == 0
    assert bad == []
    assert sum(seen.values()) == 4000 and len(seen) == 50 and set(seen.values()) == {80}
    # Paced, not a burst: 4,000 readings at 2,000/s take about two seconds.
    assert 1.8 <= elapsed <= 4.0, elapsed
