"""The buffered paho subclass must see exactly what stock paho sees, byte for byte."""

from __future__ import annotations

import contextlib
import random
import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt._packet import decode_publish
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetsim.bridge import mqtt_fast
from fleetsim.bridge.mqtt_fast import (
    SMALL_READ,
    FastClient,
    fast_path_supported,
    parse_publish,
    puback_packet,
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (128 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(
    topic: str, payload: bytes, mid: int, qos: int, v5: bool, *, dup: bool = False, props: bytes = b""
) -> bytes:
    t = topic.encode()
    vh = len(t).to_bytes(2, "big") + t + (mid.to_bytes(2, "big") if qos else b"")
    if v5:
        vh += _varint(len(props)) + props
    body = vh + payload
    header = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes([header]) + _varint(len(body)) + body


def _user_property() -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = ("k", "v")
    return bytes(p.pack())[1:]  # pack() includes the length varint (here one byte)


def test_fast_path_is_enabled_on_the_pinned_paho() -> None:
    assert fast_path_supported(), "paho upgraded: re-check bridge/mqtt_fast.py and SUPPORTED_PAHO"


@pytest.mark.parametrize(
    ("v5", "qos", "props"),
    [(v5, qos, False) for v5 in (True, False) for qos in (0, 1)] + [(True, 0, True), (True, 1, True)],
)
def test_parse_publish_matches_paho(v5: bool, qos: int, props: bool) -> None:
    raw_props = _user_property() if props else b""
    pkt = publish_packet("sensors/d/telemetry", b'{"a":1}', 513, qos, v5, dup=True, props=raw_props)
    header, body = pkt[0], pkt[1 + len(_varint(len(pkt) - 2)) :]
    proto = mqtt.MQTTProtocolVersion.MQTTv5 if v5 else mqtt.MQTTProtocolVersion.MQTTv311
    ref = decode_publish(header, body, proto)
    got = parse_publish(header, body, v5)
    assert (got._topic, got.payload, got.mid, got.qos, got.dup, got.retain) == (
        ref.topic, ref.payload, ref.mid, ref.qos, ref.dup, ref.retain,
    )  # fmt: skip
    if raw_props:
        assert got.properties is not None and ref.properties is not None
        assert got.properties.UserProperty == ref.properties.UserProperty  # type: ignore[attr-defined]
    else:
        assert got.properties is None


def test_malformed_publish_raises_value_or_index_error() -> None:
    for body in (b"", b"\x00", b"\xff\xff abc", b"\x00\x01a"):
        with pytest.raises((ValueError, IndexError)):
            parse_publish(0x32, body, True)


def test_puback_bytes_match_paho() -> None:
    for proto in (mqtt.MQTTv311, mqtt.MQTTv5):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=proto)
        for mid in (1, 255, 256, 65535):
            c._send_puback(mid)
            assert bytes(c._out_packet.pop()["packet"]) == puback_packet(mid)


def _wired_client(
    cls: type[mqtt.Client], v5: bool
) -> tuple[mqtt.Client, socket.socket, list[mqtt.MQTTMessage]]:
    c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    c.manual_ack_set(True)
    got: list[mqtt.MQTTMessage] = []
    c.on_message = lambda _c, _u, m: got.append(m)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours  # as if connected: the read path only needs the socket
    c._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    return c, theirs, got


@pytest.mark.parametrize("v5", [True, False])
def test_buffered_reads_deliver_the_same_messages_as_stock_paho_across_split_packets(v5: bool) -> None:
    rng = random.Random(7)
    packets = [
        publish_packet(f"sensors/dev-{i % 7}/telemetry", rng.randbytes(rng.randint(0, 400)), i + 1, i % 2, v5)
        for i in range(500)
    ]
    stream = b"".join(packets)
    results = {}
    for cls in (mqtt.Client, FastClient):
        c, peer, got = _wired_client(cls, v5)
        pos = 0
        while pos < len(stream):  # feed in random chunks so packets split across reads
            step = rng.randint(1, 3000)
            peer.sendall(stream[pos : pos + step])
            pos += step
            for _ in range(50):
                c.loop_read()
        results[cls.__name__] = [(m.topic, m.payload, m.mid, m.qos) for m in got]
        peer.close()
    assert len(results["FastClient"]) == 500
    assert results["FastClient"] == results["Client"]


def test_ack_many_writes_pubacks_in_order_in_one_packet() -> None:
    c, peer, _ = _wired_client(FastClient, True)
    assert isinstance(c, FastClient)
    c.ack_many([5, 3, 300])
    c.loop_write()
    assert peer.recv(100) == puback_packet(5) + puback_packet(3) + puback_packet(300)


def test_loop_read_returns_under_a_continuous_flood_so_acks_can_be_written() -> None:
    c, peer, got = _wired_client(FastClient, True)
    peer.setblocking(False)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock = c._sock
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    packet = publish_packet("sensors/d/telemetry", b"x" * 200, 1, 1, True)
    blob = packet * 20_000  # ~4.5 MB: far more than one bounded read
    sent = 0
    with contextlib.suppress(BlockingIOError):
        while sent < len(blob):
            sent += peer.send(blob[sent : sent + 65536])
    assert sent > 5 * 65536, "the socket pair must hold a flood for this test"
    c.loop_read()
    assert 0 < len(got) < sent // len(packet)  # returned before draining everything
    for _ in range(10_000):
        if len(got) * len(packet) >= sent:
            break
        with contextlib.suppress(BlockingIOError):
            while sent < len(blob):
                sent += peer.send(blob[sent : sent + 65536])
        c.loop_read()
    assert len(got) == 20_000  # and nothing is lost across the bounded calls


def test_batched_parse_hands_other_packets_to_paho_and_keeps_keepalive_fresh() -> None:
    c, peer, got = _wired_client(FastClient, True)
    c._ping_t = 1.0  # a PINGREQ outstanding: paho's PINGRESP handler clears it
    c._last_bytes_received = 0.0
    pingresp = bytes((0xD0, 0))
    stream = (
        b"".join(publish_packet("sensors/a/telemetry", b"p%d" % i, i + 1, 1, True) for i in range(5))
        + pingresp
        + b"".join(publish_packet("sensors/b/telemetry", b"q%d" % i, i + 10, 1, True) for i in range(5))
    )
    peer.sendall(stream)
    for _ in range(5):
        c.loop_read()
    assert [m.payload for m in got] == [b"p%d" % i for i in range(5)] + [b"q%d" % i for i in range(5)]
    assert c._ping_t == 0  # the PINGRESP went through paho's handler, in stream order
    assert c._last_bytes_received > 0.0


def test_batched_parse_refuses_a_malformed_publish_like_paho() -> None:
    c, peer, got = _wired_client(FastClient, True)
    good = publish_packet("sensors/a/telemetry", b"x", 1, 1, True)
    bad = bytes((0x32, 3, 0xFF, 0xFF, 0x00))  # topic length beyond the packet
    peer.sendall(good + bad + good)
    rc = c.loop_read()
    assert [m.payload for m in got] == [b"x"]
    assert rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.mark.skipif(not fast_path_supported(), reason="coalescing is part of the fast path")
def test_a_trickle_read_pauses_after_delivering_and_a_backlog_or_nothing_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, peer, got = _wired_client(FastClient, True)
    assert isinstance(c, FastClient)
    pauses: list[tuple[float, int]] = []  # (seconds, messages delivered when the pause began)
    monkeypatch.setattr(mqtt_fast.time, "sleep", lambda s: pauses.append((s, len(got))))
    packet = publish_packet("sensors/d/telemetry", b"x" * 200, 1, 1, True)

    c.loop_read()  # nothing to read: no pause (the loop is idle in select, not here)
    peer.sendall(packet * 3)
    c.loop_read()  # a trickle with coalescing off: no pause
    assert pauses == [] and len(got) == 3

    c.coalesce_s = 0.002
    peer.sendall(packet * 3)
    c.loop_read()  # a trickle: pause once, after the three messages went to on_message
    assert pauses == [(0.002, 6)]

    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    backlog = packet * (SMALL_READ // len(packet) + 10)
    peer.sendall(backlog)
    c.loop_read()  # a backlog fills the reads: never paused
    assert pauses == [(0.002, 6)] and len(got) == 6 + SMALL_READ // len(packet) + 10
