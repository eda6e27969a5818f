"""MQTT packets the simulator writes itself: a batch of QoS 0 PUBLISH packets in one ``send`` on
paho's socket (:meth:`fleetsim.edge.mqtt.MqttPublisher.publish_many`).

paho's ``publish`` builds three objects, takes two locks and makes two system calls (the packet and
a wake-up byte to its socket pair) for every message, most of a QoS 0 message's cost. A QoS 0
PUBLISH is a fixed header, the topic and the payload (plus an empty property block in MQTT 5):
no packet id, no acknowledgement, nothing for paho to track. Written only when paho has nothing
queued itself, so the byte stream stays in order; what the socket does not take at once goes to
paho's queue as raw bytes for paho to finish. ``tests/integration/test_edge_mqtt_batch.py`` checks
a subscriber receives every message intact and in order, with both protocols.
"""

from __future__ import annotations

from typing import Any, Final

PUBLISH_QOS0: Final = 0x30
"""Fixed-header byte of a PUBLISH, QoS 0, no DUP, no RETAIN."""


def append_remaining_length(buf: bytearray, n: int) -> None:
    """Append MQTT's remaining length ``n``: 7 bits a byte, high bit = more bytes follow."""
    while True:
        byte, n = n & 0x7F, n >> 7
        buf.append(byte | 0x80 if n else byte)
        if not n:
            break


def frame_publish(buf: bytearray, topic: bytes, payload: bytes, v5: bool) -> None:
    """Append one QoS 0 PUBLISH packet to ``buf``."""
    buf.append(PUBLISH_QOS0)
    append_remaining_length(buf, 2 + len(topic) + (1 if v5 else 0) + len(payload))
    buf += len(topic).to_bytes(2, "big")
    buf += topic
    if v5:
        buf.append(0)  # property length 0
    buf += payload


def can_write(client: Any) -> bool:
    """Whether raw packets can go on ``client``'s socket now without reordering paho's bytes."""
    return not client._out_packet and client.socket() is not None


def unwritten(client: Any) -> bool:
    """Whether paho still holds bytes it has not written (a batch's tail among them)."""
    return bool(client._out_packet)


def write_qos0_batch(client: Any, items: list[tuple[str, str, bytes]], *, v5: bool) -> None:
    """Write ``(device_id, topic, payload)`` items as QoS 0 PUBLISH packets (see :func:`can_write`).
    Raises OSError when the socket fails (nothing of the batch counts as sent)."""
    buf = bytearray()
    for _, topic, payload in items:
        frame_publish(buf, topic.encode(), payload, v5)
    try:
        written = client.socket().send(buf)
    except BlockingIOError:
        written = 0
    if written < len(buf):
        queue_rest(client, PUBLISH_QOS0, bytes(buf[written:]))


def queue_rest(client: Any, command: int, rest: bytes) -> None:
    """Hand the bytes a socket did not take to paho's own queue, so its loop() finishes the write.
    "qos 1" because for a written QoS 0 PUBLISH paho fires on_publish and marks a message info we
    do not have; the packets inside are ours, settled by us."""
    client._out_packet.append(
        {
            "command": command,
            "mid": 0,
            "qos": 1,
            "pos": 0,
            "to_process": len(rest),
            "packet": rest,
            "info": None,
        }
    )
