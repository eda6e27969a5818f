"""A bare MQTT v5 publish over a socket, to read the broker's own PUBACK reason code.

paho cannot be used for this: Mosquitto 2.0 answers an oversized PUBLISH with PUBACK 0x95
("packet too large"), a code MQTT 5 does not list for PUBACK, and paho 2.2 treats it as a
protocol error, drops the connection and re-sends the message on reconnect.
"""

from __future__ import annotations

import socket
import time

from fleetsim.kernel.clients import mqtt_credentials
from fleetsim.kernel.config import FleetsimConfig

PACKET_TOO_LARGE = 0x95
NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10


def varint(n: int) -> bytes:
    """MQTT variable-byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: str) -> bytes:
    """MQTT UTF-8 string: two-byte length, then the bytes."""
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def puback_code(
    cfg: FleetsimConfig, topic: str, payload: bytes, username: str | None = None, password: str | None = None
) -> int:
    """CONNECT (the simulator identity unless given), PUBLISH once at QoS 1, return the PUBACK code."""
    if username is None or password is None:
        username, password = mqtt_credentials(cfg, "sim")
    connect = (
        mqtt_string("MQTT") + bytes([5, 0xC2]) + (30).to_bytes(2, "big") + varint(0)
        + mqtt_string(f"raw-{time.monotonic_ns() % 10**9}") + mqtt_string(username) + mqtt_string(password)
    )  # fmt: skip
    publish = mqtt_string(topic) + (1).to_bytes(2, "big") + varint(0) + payload
    with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=10) as sock:
        sock.sendall(b"\x10" + varint(len(connect)) + connect)
        connack = sock.recv(64)
        if connack[:1] != b"\x20" or connack[3] != 0:
            raise ConnectionRefusedError(f"CONNACK {connack!r}")
        sock.sendall(b"\x32" + varint(len(publish)) + publish)
        puback = sock.recv(64)
    if puback[:1] != b"\x40" or puback[2:4] != (1).to_bytes(2, "big"):
        raise ConnectionError(f"expected PUBACK for packet 1, got {puback!r}")
    return puback[4] if puback[1] > 2 else 0


# ------------------------------------------------------------------- packets for many sessions
def connect_packet(client_id: str, username: str, password: str, *, session_expiry_s: int = 0,
                   keepalive_s: int = 60) -> bytes:  # fmt: skip
    """CONNECT (MQTT 5) with credentials; clean start only when ``session_expiry_s`` is 0."""
    flags = 0xC0 | (0x02 if session_expiry_s == 0 else 0x00)
    props = b"\x11" + session_expiry_s.to_bytes(4, "big") if session_expiry_s else b""
    body = (
        mqtt_string("MQTT") + bytes([5, flags]) + keepalive_s.to_bytes(2, "big") + varint(len(props)) + props
        + mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    )  # fmt: skip
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1 without properties."""
    body = mqtt_string(topic) + packet_id.to_bytes(2, "big") + varint(0) + payload
    return b"\x32" + varint(len(body)) + body


DISCONNECT = b"\xe0\x00"


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One whole packet: (first header byte, body). ``ConnectionError`` when the peer closed."""

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return buf

    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        digit = exactly(1)[0]
        length |= (digit & 0x7F) << shift
        if not digit & 0x80:
            break
        shift += 7
    return first, exactly(length)
