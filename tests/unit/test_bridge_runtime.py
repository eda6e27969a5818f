"""Bridge runtime logic with a scripted Kafka sink and a recording MQTT client (no I/O).

The real engines are exercised by tests/integration/test_bridge*.py; here the ordering and
ack rules are driven step by step: confirmations out of order, failed deliveries, reconnects,
shutdown.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fleetsim.bridge.inflight import Send
from fleetsim.bridge.metrics import State
from fleetsim.bridge.runtime import Bridge
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import KafkaHeader, encode_reading, format_ts_ms

T0_MS = 1768471200000


class FakeSink:
    """Records produced sends; ``poll`` confirms or fails them per ``verdict``."""

    def __init__(self) -> None:
        self.produced: list[Send] = []
        self.pending: list[Send] = []
        self.verdict: Callable[[Send], Any] = lambda s: None  # None = confirmed
        self.hold = False  # True: Kafka confirms nothing
        self.fatal_error: Any = None
        self.replaced = 0
        self.raise_on_produce: Exception | None = None

    def produce(self, send: Send) -> None:
        if self.raise_on_produce is not None:
            send.state = Send.FAILED
            raise self.raise_on_produce
        send.state = Send.SENT
        self.produced.append(send)
        self.pending.append(send)

    def poll(self, timeout: float) -> int:
        if self.hold:
            return 0
        batch, self.pending = self.pending, []
        for s in batch:
            s.on_delivery(self.verdict(s))
        return len(batch)

    def confirm_only(self, values: set[bytes]) -> None:
        keep = []
        for s in self.pending:
            if s.value in values:
                s.on_delivery(None)
            else:
                keep.append(s)
        self.pending = keep

    def replace(self) -> None:
        self.fatal_error = None
        self.replaced += 1
        self.pending = []

    def wait_ready(self, topics: list[str], stop: threading.Event) -> bool:
        return True

    def flush(self, timeout: float) -> int:
        return len(self.pending)

    def close(self, timeout: float = 5.0) -> None:
        return None


class FakeClient:
    protocol = 5

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.subscribed: list[Any] = []

    def ack_many(self, mids: list[int]) -> None:
        self.acked.extend(mids)

    def subscribe(self, subs: Any) -> None:
        self.subscribed.append(subs)


Rig = tuple[Bridge, FakeSink, FakeClient]


def payload(device: str, seq: int) -> bytes:
    return encode_reading(device, format_ts_ms(T0_MS + seq), seq, 21.0, 40.0, 500.0, 1000.0, 90.0, None, None)


def msg(device: str, seq: int, mid: int, *, raw: bytes | None = None, qos: int = 1, dup: bool = False) -> Any:
    topic = f"sensors/{device}/telemetry"
    return SimpleNamespace(
        topic=topic, _topic=topic.encode(), payload=raw or payload(device, seq), mid=mid, qos=qos, dup=dup
    )


@pytest.fixture
def bridge() -> Rig:
    cfg = FleetsimConfig().with_overrides({"bridge.max_inflight": 50})
    sink = FakeSink()
    b = Bridge(cfg, metrics_port=0, sink=sink)
    client = FakeClient()
    b._client = client
    b._kafka_ready = True
    ok = SimpleNamespace(is_failure=False)
    b._on_connect(client, None, SimpleNamespace(session_present=False), ok)
    b._on_subscribe(client, None, 1, [SimpleNamespace(is_failure=False, value=1)] * len(b.routes))
    return b, sink, client


def test_subscribes_every_route_on_each_connect(bridge: Rig) -> None:
    b, _, client = bridge
    b._on_connect(client, None, SimpleNamespace(session_present=True), SimpleNamespace(is_failure=False))
    assert len(client.subscribed) == 2  # again after the reconnect, session present or not
    assert [s for s, _ in client.subscribed[1]] == [r.topic_filter for r in b.routes]
    assert b.stats.mqtt_reconnects == 1


def test_acks_only_after_confirmation_and_in_receive_order(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, client = bridge
    sink.hold = True
    for i in range(1, 6):
        b._on_message(None, None, msg("dev-1", i, mid=i))
    assert [s.value for s in sink.produced] == [payload("dev-1", i) for i in range(1, 6)]
    assert all(s.key == b"dev-1" and s.topic == b.telemetry_topic for s in sink.produced)
    b.pump_once(0)
    assert client.acked == []
    sink.confirm_only({payload("dev-1", 3), payload("dev-1", 2)})
    b.pump_once(0)
    assert client.acked == []  # message 1 is not confirmed: nothing behind it may be acked
    sink.confirm_only({payload("dev-1", 1)})
    b.pump_once(0)
    assert client.acked == [1, 2, 3]
    sink.hold = False
    b.pump_once(0)
    assert client.acked == [1, 2, 3, 4, 5]
    assert b.stats.forwarded == 5 and b.stats.received == 5 and len(b.tracker) == 0


def test_headers_carry_source_topic_receive_time_and_format(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, _ = bridge
    b._on_message(None, None, msg("dev-1", 1, mid=1))
    headers = dict(sink.produced[0].headers)
    assert headers[KafkaHeader.SOURCE_TOPIC] == b"sensors/dev-1/telemetry"
    assert headers[KafkaHeader.FORMAT] == b"native"
    assert abs(int(headers[KafkaHeader.RECEIVED_AT]) / 1000 - __import__("time").time()) < 60


def test_invalid_payload_goes_to_deadletter_with_original_bytes(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, client = bridge
    raw = b'{"device_id":"dev-1","temperature":NaN}'
    b._on_message(None, None, msg("dev-1", 0, mid=7, raw=raw))
    (s,) = sink.produced
    assert s.topic == b.deadletter_topic and s.value == raw and s.key == b"dev-1"
    headers = dict(s.headers)
    assert headers[KafkaHeader.REASON] == b"invalid_json"
    assert headers[KafkaHeader.DETAIL]
    assert headers[KafkaHeader.SOURCE_TOPIC] == b"sensors/dev-1/telemetry"
    assert b.stats.deadlettered["invalid_json"] == 0  # counted once Kafka confirmed it
    b.pump_once(0)
    assert client.acked == [7] and b.stats.deadlettered["invalid_json"] == 1


def test_failed_delivery_is_never_acked_and_retried_before_newer_records(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, client = bridge
    sink.verdict = lambda s: "broker down" if s.value == payload("dev-1", 2) else None
    for i in (1, 2, 3):
        b._on_message(None, None, msg("dev-1", i, mid=i))
    b.pump_once(0)
    assert client.acked == [1]
    assert b.state() is State.DEGRADED and b.stats.kafka_errors == 1
    b._on_message(None, None, msg("dev-1", 4, mid=4))  # arrives while a retry is pending: deferred
    assert sink.produced[-1].value == payload("dev-1", 3)
    sink.verdict = lambda s: None
    b._retry_at = 0.0
    b.pump_once(0)  # produces the retry, then the deferred record, in receive order
    assert [s.value for s in sink.produced[-2:]] == [payload("dev-1", 2), payload("dev-1", 4)]
    b.pump_once(0)
    assert client.acked == [1, 2, 3, 4]
    assert b.stats.retries == 1 and b.stats.forwarded == 4
    assert b.state() is State.OK


def test_produce_exception_is_a_failed_send_not_a_crash(bridge: Rig) -> None:
    b, sink, client = bridge
    sink.raise_on_produce = BufferError("queue full")
    b._on_message(None, None, msg("dev-1", 1, mid=1))
    assert b.tracker.holding and client.acked == []
    sink.raise_on_produce = None
    b.pump_once(0)  # notices the failure, schedules the retry after a back-off
    assert b.stats.kafka_errors == 1 and client.acked == []
    b._retry_at = 0.0  # back-off elapsed
    b.pump_once(0)
    b.pump_once(0)
    assert client.acked == [1] and b.stats.retries == 1


def test_messages_of_a_previous_connection_are_not_acked(bridge: Rig) -> None:
    b, sink, client = bridge
    sink.hold = True
    b._on_message(None, None, msg("dev-1", 1, mid=1))
    b._on_disconnect(None, None, None, "lost")
    assert b.state() is State.DOWN
    b._on_connect(client, None, SimpleNamespace(session_present=True), SimpleNamespace(is_failure=False))
    b._on_message(None, None, msg("dev-1", 1, mid=1, dup=True))  # the broker redelivers it
    sink.hold = False
    b.pump_once(0)
    assert client.acked == [1]  # once, for the copy received on the current connection
    assert b.stats.acks_skipped == 1 and b.stats.redelivered == 1 and b.stats.forwarded == 2


def test_qos0_messages_are_forwarded_without_ack(bridge: Rig) -> None:
    b, _, client = bridge
    b._on_message(None, None, msg("dev-1", 1, mid=0, qos=0))
    b.pump_once(0)
    assert b.stats.forwarded == 1 and client.acked == []


def test_fatal_producer_error_replaces_the_producer_and_resends(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, client = bridge
    sink.hold = True
    b._on_message(None, None, msg("dev-1", 1, mid=1))
    sink.fatal_error = "fenced"
    b.pump_once(0)
    assert sink.replaced == 1 and b.tracker.holding
    sink.hold = False
    b._retry_at = 0.0
    b.pump_once(0)
    b.pump_once(0)
    assert client.acked == [1] and len(sink.produced) == 2


def test_handler_exceptions_never_escape(bridge: Rig) -> None:
    b, _, _ = bridge
    b._on_message(None, None, object())  # not even a message
    assert b.stats.internal_errors == 1


def test_stop_acks_what_was_confirmed_and_drops_nothing_silently(
    bridge: tuple[Bridge, FakeSink, FakeClient],
) -> None:
    b, sink, client = bridge
    sink.hold = True
    b._on_message(None, None, msg("dev-1", 1, mid=1))
    b._on_message(None, None, msg("dev-1", 2, mid=2))
    sink.confirm_only({payload("dev-1", 1)})
    b._pump_thread = threading.Thread(target=b._pump, daemon=True)
    b._pump_thread.start()
    b._client = None  # stop() must not try to disconnect the fake
    b.stop(timeout=0.3)
    assert client.acked == [1]  # message 2 was never confirmed: left for redelivery
    assert len(b.tracker) == 1
    b._on_message(None, None, msg("dev-1", 3, mid=3))
    assert b.stats.received == 3 and len(sink.produced) == 2  # after stop: neither sent nor acked


def test_released_messages_are_freed_without_the_cyclic_gc(bridge: Rig) -> None:
    """Send <-> InFlight is a reference cycle; the release breaks it, so a message's objects go
    with their last reference instead of piling up for (long, all-threads) GC passes."""
    b, sink, client = bridge
    gc.collect()
    gc.disable()
    try:
        for i in range(1, 21):
            b._on_message(None, None, msg("dev-1", i, mid=i))
        b.pump_once(0)
        assert client.acked == list(range(1, 21))
        sink.produced.clear()  # the fake sink's own references
        assert [o for o in gc.get_objects() if isinstance(o, Send)] == []
    finally:
        gc.enable()
