"""A paho-mqtt client with buffered socket reads and batched PUBACKs.

Why: stock paho 2.2 reads every packet with three ``recv`` calls (command byte, length, body)
and one ``select`` per packet, and every manual ``ack()`` costs a wake-up write on its socket
pair plus one ``send``. At 15k+ messages per second those syscalls dominate the bridge's CPU
(see docs/bridge.md, "Profile"). This subclass changes only I/O plumbing:

- :meth:`_sock_recv` serves paho's small reads from a 64 KiB user-space buffer (one ``recv``
  per ~200 telemetry messages), and :meth:`loop_read` keeps parsing while that buffer holds
  data (``select`` cannot see bytes that already left the kernel);
- :meth:`_packet_read` parses every complete QoS 0/1 PUBLISH already in that buffer in one
  loop (fixed header, length, body: plain slicing, no per-packet ``recv`` calls or ``_in_packet``
  dict traffic); a partial packet at the buffer's end or any other packet type goes through
  paho's own reader, which then refills the buffer;
- :meth:`ack_many` queues the PUBACKs of a whole confirmed batch as ONE write;
- with :attr:`FastClient.coalesce_s` set, a read that brought only a trickle is followed by a short
  pause, so the next wake-up finds many messages instead of one or two (paced traffic at 8k msg/s
  otherwise wakes the loop thread for nearly every message, and each wake-up costs a ``select``,
  a ``recv`` and paho's loop bookkeeping: docs/bridge.md, "Read coalescing").

Packet parsing, callbacks, keep-alive, reconnects and the session stay paho's. The overrides
touch private paho members, so they are enabled only on the paho version they were written and
tested against (:data:`SUPPORTED_PAHO`); any other version falls back to plain paho behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SUPPORTED_PAHO = ("2.2.0",)
READ_CHUNK = 65536
REFILLS_PER_READ = 4
"""Socket reads per ``loop_read`` call (4 x 64 KiB, ~1,100 telemetry messages)."""
SMALL_READ = READ_CHUNK // 4
"""A ``loop_read`` that brought less than this is a trickle: worth waiting for more (coalescing)."""
_PUBACK = 0x40


def fast_path_supported() -> bool:
    return getattr(paho.mqtt, "__version__", "") in SUPPORTED_PAHO and all(
        hasattr(mqtt.Client, name) for name in ("_sock_recv", "_packet_queue", "loop_read", "_handle_publish")
    )


def puback_packet(mid: int) -> bytes:
    """PUBACK for ``mid`` with the implicit success reason (identical for MQTT 3.1.1 and 5)."""
    return bytes((_PUBACK, 2, mid >> 8, mid & 0xFF))


class InMessage(mqtt.MQTTMessage):
    """An incoming message without the outgoing-only parts (``MQTTMessageInfo`` and its
    Condition): same attributes and ``topic`` property as paho's ``MQTTMessage``."""

    def __init__(
        self, mid: int, topic: bytes, payload: bytes, qos: int, dup: bool, retain: bool, props: Any
    ) -> None:
        self.timestamp = 0.0
        self.state = mqtt.mqtt_ms_invalid
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = qos
        self.dup = dup
        self.retain = retain
        self.properties = props


def _varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """MQTT variable byte integer at ``pos`` -> (value, bytes used)."""
    value, mult, used = 0, 1, 0
    while True:
        byte = buf[pos + used]
        used += 1
        value += (byte & 127) * mult
        if not byte & 128:
            return value, used
        mult *= 128
        if used == 4:
            raise ValueError("malformed variable byte integer")


def parse_publish(header: int, packet: bytes | bytearray, v5: bool) -> InMessage:
    """Decode a QoS 0/1 PUBLISH body (everything after the fixed header).

    Same result as ``paho.mqtt._packet.decode_publish`` except that an empty v5 property set
    stays ``None`` instead of costing a ``Properties`` object (~30 µs) per message.
    Raises ValueError/IndexError on a malformed packet.
    """
    qos = (header & 0x06) >> 1
    slen = (packet[0] << 8) | packet[1]
    pos = 2 + slen
    if pos > len(packet):
        raise ValueError("topic length beyond packet")
    topic = bytes(packet[2:pos])
    if not v5 and not topic:
        raise ValueError("empty topic in MQTT 3.1.1")
    mid = 0
    if qos:
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    props = None
    if v5:
        plen, used = _varint(packet, pos)
        if plen:
            props = Properties(PacketTypes.PUBLISH)
            props.unpack(packet[pos : pos + used + plen])
        pos += used + plen
    return InMessage(mid, topic, bytes(packet[pos:]), qos, bool(header & 0x08), bool(header & 0x01), props)


class FastClient(mqtt.Client):
    """paho ``Client`` with buffered reads and batched acks (see the module docstring)."""

    _fast = fast_path_supported()
    coalesce_s = 0.0
    """Pause after a small read (seconds; 0: none). Set by the bridge from
    ``bridge.read_coalesce_ms``."""

    def _rbuf_state(self) -> tuple[Any, bytes, int]:
        return getattr(self, "_fs_sock", None), getattr(self, "_fs_buf", b""), getattr(self, "_fs_pos", 0)

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._fast:
            return super()._sock_recv(bufsize)
        sock, buf, pos = self._rbuf_state()
        if sock is not self._sock:  # new connection: never serve bytes of the old one
            buf, pos = b"", 0
            self._fs_sock = self._sock
        if pos >= len(buf):
            if self._fs_refills <= 0:
                # Enough read for one loop_read: return to paho's loop so queued PUBACKs and
                # pings get written (the kernel still holds data, so select wakes at once).
                raise BlockingIOError
            self._fs_refills -= 1
            buf = super()._sock_recv(READ_CHUNK)  # BlockingIOError propagates: paho expects it
            self._fs_got += len(buf)
            pos = 0
            if not buf:
                self._fs_buf, self._fs_pos = b"", 0
                return b""  # connection closed
        end = pos + bufsize
        out = buf[pos:end]
        self._fs_buf, self._fs_pos = buf, pos + len(out)
        return out

    def buffered(self) -> int:
        """Bytes read from the socket but not yet parsed."""
        sock, buf, pos = self._rbuf_state()
        return len(buf) - pos if sock is self._sock else 0

    _fs_refills = REFILLS_PER_READ
    _fs_got = 0

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # Bounded work per call: under a continuous inbound flood an unbounded loop never
        # returned, so PUBACKs and PINGREQs were never written and the broker dropped the
        # connection for keep-alive timeout. Parsing stops only with an empty buffer, so no
        # bytes are ever left where select() cannot see them.
        self._fs_refills = REFILLS_PER_READ
        self._fs_got = 0
        rc = super().loop_read(max_packets)
        while self._fast and rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self.buffered() > 0:
            rc = super().loop_read(max_packets)
        if self.coalesce_s and rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and 0 < self._fs_got < SMALL_READ:
            # Everything read is parsed (the buffer is empty), so nothing waits unseen: the pause
            # only lets the kernel gather the next messages. A backlog's full reads never pause.
            time.sleep(self.coalesce_s)
        return rc

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        if not self._fast or self._in_packet["command"] != 0:
            return super()._packet_read()  # mid-packet on paho's path: let it finish
        sock, buf, pos = self._rbuf_state()
        if sock is not self._sock:
            return super()._packet_read()  # new connection: _sock_recv resets the buffer
        end_buf = len(buf)
        v5 = self._protocol == mqtt.MQTTv5
        handled = 0
        rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        while pos < end_buf:
            header = buf[pos]
            if header & 0xF0 != 0x30 or header & 0x06 == 0x04:
                break  # not a PUBLISH, or QoS 2 (never subscribed to): paho's path
            # Remaining length (variable byte integer, at most 4 bytes).
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end_buf or i - pos > 4:
                    length = -1
                    break
                byte = buf[i]
                i += 1
                length += (byte & 127) * mult
                if not byte & 128:
                    break
                mult *= 128
            if length < 0 or i + length > end_buf:
                break  # incomplete (or malformed: paho's reader judges it)
            pos = i + length
            self._fs_pos = pos
            try:
                message = parse_publish(header, buf[i:pos], v5)
            except (ValueError, IndexError):
                return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
            handled += 1
            rc = self._deliver(message)
            if rc:
                break
        if not handled:
            return super()._packet_read()
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        return rc

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        if not self._fast or (header & 0x06) >> 1 == 2:
            return super()._handle_publish()  # QoS 2 (never subscribed to): paho's own path
        try:
            message = parse_publish(header, self._in_packet["packet"], self._protocol == mqtt.MQTTv5)
        except (ValueError, IndexError):
            return mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        return self._deliver(message)

    def _deliver(self, message: InMessage) -> mqtt.MQTTErrorCode:
        """paho's ``_handle_publish`` tail for QoS 0/1: on_message, then the PUBACK unless manual."""
        message.timestamp = time.monotonic()
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        if message.qos == 0 or self._manual_ack:
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK every mid (QoS 1), in the given order, as one queued write."""
        if not self._fast:
            for mid in mids:
                self.ack(mid, 1)
            return
        blob = b"".join([puback_packet(m) for m in mids])
        if blob:
            self._packet_queue(_PUBACK, blob, 0, 0)
