"""Real Kafka (KRaft, SASL/PLAIN, StandardAuthorizer) started by the stack code."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from fleetsim.kernel.clients import kafka_python_kwargs
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.kafka import Kafka, end_offsets

pytestmark = pytest.mark.integration


def _consume(cfg: FleetsimConfig, topic: str, n: int, group: str) -> list:
    consumer = KafkaConsumer(
        topic,
        **kafka_python_kwargs(cfg, "stream"),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20000,
    )
    out = []
    try:
        for record in consumer:
            out.append(record)
            if len(out) >= n:
                break
    finally:
        consumer.close()
    return out


def test_keyed_record_round_trips_with_sasl(kafka_topics: Callable[..., FleetsimConfig]) -> None:
    cfg = kafka_topics("stack-roundtrip")
    topic = cfg.kafka.telemetry_topic
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), acks="all")
    value = b'{"device_id":"dev-k1","seq":1}'
    try:
        meta = producer.send(topic, key=b"dev-k1", value=value).get(timeout=20)
        producer.flush()
    finally:
        producer.close()
    records = _consume(cfg, topic, 1, f"fleetsim-test-{uuid.uuid4().hex[:6]}")
    assert len(records) == 1
    assert (records[0].key, records[0].value) == (b"dev-k1", value)
    assert (records[0].partition, records[0].offset) == (meta.partition, meta.offset)
    assert end_offsets(cfg)[topic] == 1


def test_same_key_same_partition(kafka_topics: Callable[..., FleetsimConfig]) -> None:
    cfg = kafka_topics("stack-keys")
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"))
    try:
        parts = {producer.send(cfg.kafka.telemetry_topic, key=b"dev-same", value=b"x").get(20).partition
                 for _ in range(5)}  # fmt: skip
    finally:
        producer.close()
    assert len(parts) == 1


def test_stream_identity_cannot_write(kafka_topics: Callable[..., FleetsimConfig]) -> None:
    cfg = kafka_topics("stack-acl")
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "stream"), max_block_ms=10000, retries=0)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(cfg.kafka.telemetry_topic, key=b"k", value=b"v").get(timeout=15)
    finally:
        producer.close(timeout=5)
    assert end_offsets(cfg)[cfg.kafka.telemetry_topic] == 0


def test_wrong_password_is_refused(kafka: FleetsimConfig) -> None:
    from kafka.admin import KafkaAdminClient

    good = KafkaAdminClient(**kafka_python_kwargs(kafka, "bridge"), bootstrap_timeout_ms=5000)
    good.close()
    bad = kafka.with_overrides({"kafka.bridge_password": "not-the-password"})
    # kafka-python reports a refused SASL handshake as a failed bootstrap.
    with pytest.raises(KafkaError, match="bootstrap"):
        KafkaAdminClient(**kafka_python_kwargs(bad, "bridge"), bootstrap_timeout_ms=3000)


def test_status_reports_records_from_the_broker(kafka_topics: Callable[..., FleetsimConfig]) -> None:
    cfg = kafka_topics("stack-status")
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"))
    try:
        for i in range(3):
            producer.send(cfg.kafka.deadletter_topic, key=f"d{i}".encode(), value=b"bad")
        producer.flush(20)
    finally:
        producer.close()
    status = Kafka(cfg).status()
    assert status.up and status.pid
    # The broker's heap is committed whole at start, so a soak's memory verdict cannot read G1
    # growing it as a leak.
    argv = Path(f"/proc/{status.pid}/cmdline").read_bytes().split(b"\0")
    heap = f"{cfg.kafka.heap_mb}m".encode()
    assert {b"-Xmx" + heap, b"-Xms" + heap, b"-XX:+AlwaysPreTouch"} <= set(argv), argv
    assert status.metrics["records"] == {cfg.kafka.telemetry_topic: 0, cfg.kafka.deadletter_topic: 3}
