"""`fleetsim tap` against the real brokers (shared session fixtures)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from fleetsim.kernel.clients import kafka_python_kwargs, mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import process
from fleetsim.stack.tap import tap_kafka, tap_mqtt

pytestmark = pytest.mark.integration


def test_tap_mqtt_prints_topic_and_payload(private_mosquitto: FleetsimConfig) -> None:
    lines: list[str] = []
    tapper = threading.Thread(
        target=tap_mqtt, args=(private_mosquitto, "sensors/+/status", 1), kwargs={"out": lines.append}
    )
    tapper.start()
    pub = mqtt_client(private_mosquitto, "sim", f"tap-pub-{uuid.uuid4().hex[:6]}")
    mqtt_connect(pub)
    pub.loop_start()
    try:
        # Publish until the tap (subscribing asynchronously) has printed one message.
        assert process.wait_for(
            lambda: bool(pub.publish("sensors/dev-tap/status", b"online", qos=1)) and bool(lines), 15, 0.3
        )
        tapper.join(10)
        assert not tapper.is_alive()
        assert lines[0] == "sensors/dev-tap/status online"
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_tap_kafka_prints_partition_offset_key_value(kafka_topics: Callable[..., FleetsimConfig]) -> None:
    cfg = kafka_topics("tap")
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"))
    try:
        meta = producer.send(
            cfg.kafka.telemetry_topic, key=b"dev-tap", value=b'{"x":1}', headers=[("reason", b"none")]
        ).get(timeout=20)
    finally:
        producer.close()
    lines: list[str] = []
    assert tap_kafka(cfg, cfg.kafka.telemetry_topic, 1, from_beginning=True, out=lines.append) == 1
    assert lines == [f'{meta.partition}/{meta.offset} dev-tap {{"x":1}} [reason=none]']
