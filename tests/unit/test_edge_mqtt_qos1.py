"""The batched QoS 1 path's pure parts: PUBLISH framing (MQTT 5 and 3.1.1) and PUBACK parsing,
checked byte for byte and against paho's own PUBACK decoder; the PUBACK handler on fake packets."""

from __future__ import annotations

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetsim.edge.mqtt_qos1 import BatchClient, frame_publish_qos1, parse_puback

MQTTv5, MQTTv311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def test_v5_packet_bytes() -> None:
    buf = bytearray()
    frame_publish_qos1(buf, b"a/b", 0x1234, b"hi", v5=True)
    # header, remaining length 10 = 2 + 3 (topic) + 2 (packet id) + 1 (no properties) + 2
    assert bytes(buf) == b"\x32\x0a\x00\x03a/b\x12\x34\x00hi"


def test_v311_packet_bytes_and_dup_flag() -> None:
    buf = bytearray()
    frame_publish_qos1(buf, b"t", 7, b"", v5=False)
    frame_publish_qos1(buf, b"t", 7, b"", v5=False, dup=True)
    assert bytes(buf) == b"\x32\x05\x00\x01t\x00\x07" + b"\x3a\x05\x00\x01t\x00\x07"


@pytest.mark.parametrize(
    ("remaining", "encoded"),
    [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ],
)
@pytest.mark.parametrize("v5", [True, False])
def test_remaining_length_edges(remaining: int, encoded: bytes, v5: bool) -> None:
    topic = b"sensors/x/telemetry"
    payload = b"p" * (remaining - 4 - len(topic) - (1 if v5 else 0))
    buf = bytearray()
    frame_publish_qos1(buf, topic, 65535, payload, v5=v5)
    assert bytes(buf[1 : 1 + len(encoded)]) == encoded
    assert len(buf) == 1 + len(encoded) + remaining
    body = bytes(buf[1 + len(encoded) :])
    assert body[2 + len(topic) : 4 + len(topic)] == b"\xff\xff"
    assert body.endswith(payload)


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311])
def test_puback_parse_matches_paho(protocol: MQTTProtocolVersion) -> None:
    for body in (
        [b"\x01\x02"] if protocol == MQTTv311 else [b"\x01\x02", b"\x01\x02\x00", b"\x01\x02\x10\x00"]
    ):
        mid, reason = parse_puback(body)
        ref = _packet.decode_puback(0x40, body, protocol)
        assert (mid, reason) == (ref.mid, ref.reason.value)


def test_puback_refusal_and_short_packet() -> None:
    assert parse_puback(b"\xff\xfe\x87\x00") == (0xFFFE, 0x87)
    with pytest.raises(ValueError):
        parse_puback(b"\x01")


def _client(protocol: MQTTProtocolVersion) -> BatchClient:
    client = BatchClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    acked: list[int] = []
    client.on_acked = lambda: acked.append(1)
    client.acked = acked  # type: ignore[attr-defined]
    return client


def test_puback_of_ours_completes_it_and_a_refusal_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _client(MQTTv5)
    client.unacked = {5: (b"t", b"a"), 6: (b"t", b"b"), 7: (b"t", b"c")}
    client._inflight_messages = 3
    for body in (b"\x00\x05", b"\x00\x06\x87\x00", b"\x00\x07\x87"):
        client._in_packet["packet"] = bytearray(body)
        client._handle_pubackcomp("PUBACK")
    assert client.unacked == {} and client._inflight_messages == 0
    assert client.acked == [1, 1, 1]  # type: ignore[attr-defined]
    assert client.refused == {0x87: 2}
    assert [r.getMessage() for r in caplog.records].count(
        "MQTT broker refused a QoS 1 message: reason 0x87 Not authorized (logged once per reason)"
    ) == 1


def test_puback_not_ours_goes_to_paho() -> None:
    client = _client(MQTTv311)
    client.unacked = {5: (b"t", b"a")}
    client._inflight_messages = 1
    client._in_packet["packet"] = bytearray(b"\x00\x09")  # unknown to both: paho ignores it
    client._handle_pubackcomp("PUBACK")
    assert client.unacked == {5: (b"t", b"a")} and client._inflight_messages == 1
    assert client.acked == []  # type: ignore[attr-defined]
