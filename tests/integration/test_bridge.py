"""The bridge against the shared real Mosquitto + Kafka (fresh Kafka topics per test).

Disruptive drills (kill -9 of the bridge, Kafka stopped for 30 s) are in test_bridge_faults.py.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bridge_support import Publisher, consume, reading, scrape, seqs_by_device
from waiting import wait_until

from fleetsim.bridge.runtime import Bridge
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import KafkaHeader, Reading, decode
from fleetsim.stack.process import free_ports

pytestmark = pytest.mark.integration

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"


@contextmanager
def running_bridge(cfg: FleetsimConfig, **kw: object) -> Iterator[Bridge]:
    # A port of its own: bridge processes of other tests (pipelines, kill -9 drills) may hold the
    # session config's bridge.metrics_port while this in-process bridge runs.
    kw.setdefault("metrics_port", free_ports(1)[0])
    b = Bridge(cfg, client_id=f"test-bridge-{uuid.uuid4().hex[:8]}", **kw)  # type: ignore[arg-type]
    try:
        b.start()
        assert b.subscribed.wait(30), "bridge did not subscribe"
        yield b
    finally:
        b.stop(timeout=20)


@pytest.fixture
def topics(mosquitto: FleetsimConfig, kafka_topics: Callable[..., FleetsimConfig]) -> FleetsimConfig:
    return kafka_topics("bridge")


def test_n_in_exactly_n_out_in_per_device_order(topics: FleetsimConfig) -> None:
    devices, per_device = 10, 300
    n = devices * per_device
    pub = Publisher(topics, "bridge-order")
    try:
        with running_bridge(topics) as b:
            for seq in range(per_device):
                for d in range(devices):
                    pub.publish(f"sensors/ord-{d}/telemetry", reading(f"ord-{d}", seq))
            pub.wait_acked(n)
            wait_until(lambda: b.stats.forwarded >= n, 60, what=f"{n} records confirmed")
            wait_until(lambda: len(b.tracker) == 0, 10, what="all acks released")
            metrics = scrape(b.metrics_port)
            assert metrics["fleetsim_bridge_forwarded_total"] == n
            assert metrics["fleetsim_bridge_received_total"] == n
            assert metrics["fleetsim_bridge_state"] == 0
            assert metrics["fleetsim_bridge_added_latency_seconds_count"] == n
    finally:
        pub.close()
    records = consume(topics, topics.kafka.telemetry_topic, n)
    assert len(records) == n  # exactly N: no loss, no duplicate
    by_device = seqs_by_device(records)
    assert by_device == {f"ord-{d}": list(range(per_device)) for d in range(devices)}  # per-device order
    for r in records:
        obj = json.loads(r.value)
        assert r.value == reading(obj["device_id"], obj["seq"])  # forwarded byte for byte
        assert r.key == obj["device_id"].encode()
        assert r.headers[KafkaHeader.SOURCE_TOPIC] == f"sensors/{obj['device_id']}/telemetry".encode()
        assert r.headers[KafkaHeader.FORMAT] == b"native"
        assert r.headers[KafkaHeader.RECEIVED_AT].isdigit()
    assert len({(r.partition, r.key) for r in records}) == devices  # one partition per device


def test_hostile_corpus_is_deadlettered_with_reasons_while_good_traffic_flows(topics: FleetsimConfig) -> None:
    cases = json.loads((HOSTILE / "index.json").read_text(encoding="utf-8"))
    pub = Publisher(topics, "bridge-hostile")
    good = 0
    try:
        with running_bridge(topics) as b:
            for i, case in enumerate(cases):
                pub.publish("sensors/good-1/telemetry", reading("good-1", i))
                pub.publish(case["topic"], (HOSTILE / case["file"]).read_bytes())
                good += 1
            pub.publish("sensors/good-1/telemetry", reading("good-1", len(cases)))
            good += 1
            pub.wait_acked(good + len(cases))
            wait_until(
                lambda: b.stats.forwarded + sum(b.stats.deadlettered.values()) >= good + len(cases),
                60,
                what="every message confirmed",
            )
            assert b.stats.internal_errors == 0
            assert b.stats.deadlettered == {
                **{k: 0 for k in b.stats.deadlettered},
                **Counter(c["reason"] for c in cases),
            }
    finally:
        pub.close()
    dead = consume(topics, topics.kafka.deadletter_topic, len(cases))
    assert len(dead) == len(cases)
    got = Counter(
        (r.headers[KafkaHeader.SOURCE_TOPIC].decode(), r.value, r.headers[KafkaHeader.REASON].decode())
        for r in dead
    )
    want = Counter((c["topic"], (HOSTILE / c["file"]).read_bytes(), c["reason"]) for c in cases)
    assert got == want  # original bytes, right reason, right source topic, each exactly once
    assert all(r.headers[KafkaHeader.DETAIL] and r.headers[KafkaHeader.RECEIVED_AT].isdigit() for r in dead)
    telemetry = consume(topics, topics.kafka.telemetry_topic, good)
    assert seqs_by_device(telemetry) == {"good-1": list(range(good))}


def test_senml_and_tasmota_samples_become_contract_records(topics: FleetsimConfig) -> None:
    senml = [
        {"bn": "urn:dev:mac:0024befffe804ff1:", "bt": 1768471200, "bu": "Cel", "n": "temp", "v": 21.5},
        {"n": "hum", "u": "%RH", "v": 40},
        {"n": "co2", "u": "ppm", "v": 700},
        {"n": "pressure", "u": "hPa", "v": 1001.5},
        {"n": "battery", "u": "%EL", "v": 55},
        {"n": "temp", "u": "Cel", "v": 21.7, "t": 60},
    ]
    tasmota = {
        "Time": "2026-01-15T10:05:00",
        "BME280": {"Temperature": 19.5, "Humidity": 51.2, "DewPoint": 9.1, "Pressure": 998.4},
        "SCD40": {"CarbonDioxide": 812, "eCO2": 800, "Temperature": 21.0, "Humidity": 48.0},
        "PressureUnit": "hPa",
        "TempUnit": "C",
    }
    pub = Publisher(topics, "bridge-adapters")
    try:
        with running_bridge(topics) as b:
            pub.publish("sensors/senml-1/senml", json.dumps(senml).encode())
            pub.publish("tele/tasmota-1/SENSOR", json.dumps(tasmota).encode())
            pub.wait_acked(2)
            wait_until(lambda: b.stats.forwarded >= 3, 30, what="3 adapted records")
    finally:
        pub.close()
    records = consume(topics, topics.kafka.telemetry_topic, 3)
    assert len(records) == 3
    by_key: dict[str, list[tuple[Reading, bytes]]] = {}
    for r in records:
        reading_ = decode(r.value, topic_device_id=r.key.decode() if r.key else None)
        by_key.setdefault(reading_.device_id, []).append((reading_, r.headers[KafkaHeader.FORMAT]))
    s0, s1 = by_key["senml-1"]
    assert (s0[0].temperature, s0[0].humidity, s0[0].co2, s0[0].pressure, s0[0].battery) == (
        21.5, 40.0, 700.0, 1001.5, 55.0,
    )  # fmt: skip
    assert (s1[0].temperature, s1[0].seq - s0[0].seq) == (21.7, 60_000)
    assert s0[1] == b"senml"
    ((t, fmt),) = by_key["tasmota-1"]
    assert (t.temperature, t.humidity, t.co2, t.pressure, fmt) == (19.5, 51.2, 812.0, 998.4, b"tasmota")
    assert t.seq == 1768471500000


def test_shared_group_bridges_split_the_load_without_loss(topics: FleetsimConfig) -> None:
    n = 2000
    group = f"g{uuid.uuid4().hex[:6]}"
    pub = Publisher(topics, "bridge-shared")
    try:
        with (
            running_bridge(topics, shared_group=group, metrics_port=0) as b1,
            running_bridge(topics, shared_group=group, metrics_port=0) as b2,
        ):
            for i in range(n):
                pub.publish(f"sensors/sh-{i % 20}/telemetry", reading(f"sh-{i % 20}", i // 20))
            pub.wait_acked(n)
            wait_until(
                lambda: b1.stats.forwarded + b2.stats.forwarded >= n, 60, what="both bridges to forward"
            )
            shares = (b1.stats.forwarded, b2.stats.forwarded)
    finally:
        pub.close()
    assert min(shares) > 0, f"one bridge got nothing: {shares}"
    records = consume(topics, topics.kafka.telemetry_topic, n)
    assert len(records) == n
    assert sorted(
        json.loads(r.value)["seq"] + 1000 * int(json.loads(r.value)["device_id"][3:]) for r in records
    ) == sorted((i // 20) + 1000 * (i % 20) for i in range(n))
