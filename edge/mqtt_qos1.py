"""QoS 1 PUBLISH packets the simulator writes itself, a tick's batch in one ``send``, on the shared
inline connection (:meth:`fleetsim.edge.mqtt.MqttPublisher.publish_many`).

paho's ``publish`` costs, per QoS 1 message, an MQTTMessage, a MessageInfo, locks and two system
calls; each PUBACK a Properties and a ReasonCode (MQTT 5) and a scan of paho's in-flight dict.
Profiled at 100k devices in real time that was ~70 % of the process. :class:`BatchClient` is a
paho client that frames the packets itself (packet ids from paho's own allocator, so they never
collide with paho's messages: statuses, control subscriptions) and settles their PUBACKs before
paho's generic handler.

Flow control: our packets are counted in paho's own ``_inflight_messages``, so paho's cap
(``simulation.max_inflight``, lowered to the broker's Receive Maximum when an MQTT 5 CONNACK gives
one) bounds ours and paho's together: beyond the broker's limit Mosquitto disconnects the client.
paho's own publishes then queue behind ours, and a PUBACK of ours lets paho send them first.

Reconnect: paho drops its output queue and resends its unacknowledged QoS 1 messages after the
CONNACK; ours are resent too (same packet id, DUP set), in order, before any new one, so nothing
handed over is lost (the pipeline dedupes the duplicates on (device_id, seq)).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from fleetsim.edge.mqtt_wire import append_remaining_length, queue_rest

log = logging.getLogger(__name__)

PUBLISH_QOS1: Final = 0x32
"""Fixed-header byte of a PUBLISH, QoS 1, no DUP, no RETAIN."""
DUP: Final = 0x08
REFUSED: Final = 0x80
"""PUBACK reason codes from here up are refusals (MQTT 5): the broker did not take the message."""


def frame_publish_qos1(
    buf: bytearray, topic: bytes, mid: int, payload: bytes, v5: bool, dup: bool = False
) -> None:
    """Append one QoS 1 PUBLISH packet to ``buf``."""
    buf.append(PUBLISH_QOS1 | DUP if dup else PUBLISH_QOS1)
    # topic length + topic + packet id (+ v5 property length) + payload
    append_remaining_length(buf, 4 + len(topic) + (1 if v5 else 0) + len(payload))
    buf += len(topic).to_bytes(2, "big")
    buf += topic
    buf += mid.to_bytes(2, "big")
    if v5:
        buf.append(0)  # property length 0
    buf += payload


def parse_puback(body: bytes | bytearray) -> tuple[int, int]:
    """``(packet id, reason code)`` of a PUBACK's variable header (3.1.1 and a short MQTT 5
    PUBACK carry no reason code: 0, success)."""
    if len(body) < 2:
        raise ValueError(f"PUBACK of {len(body)} bytes")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


class BatchClient(mqtt.Client):
    """paho client of the shared inline connection: batched QoS 1 writes, its own PUBACKs.

    Not thread-safe for our packets: the simulation thread alone writes batches and runs
    ``loop()`` (inline mode), so paho's locks are not taken for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacked: dict[int, tuple[bytes, bytes]] = {}
        """Our packets not yet acknowledged, packet id -> (topic, payload), in send order."""
        self.unsent: deque[int] = deque()
        """Packet ids of ``unacked`` to resend on the new connection (in order, before new ones)."""
        self.on_acked: Callable[[], None] | None = None
        """Called once per PUBACK of ours (the publisher's completion count)."""
        self.refused: dict[int, int] = {}
        """Refused messages per PUBACK reason code."""
        self.resent = 0
        """Packets of ours sent again on a new connection."""
        self._own_max: int | None = None

    @property
    def room(self) -> int:
        """QoS 1 packets that may go out now without exceeding the in-flight limit."""
        return self._max_inflight_messages - self._inflight_messages

    def write_batch(self, items: list[tuple[str, str, bytes]], start: int) -> int:
        """Write ``items[start:]`` (``(device_id, topic, payload)``) as QoS 1 PUBLISH packets, as
        many as the in-flight limit allows, after any resend still due; returns how many new items
        went out (handed over: a broken socket only delays them to the next connection). Writes
        nothing while paho has bytes queued (the byte stream stays in order)."""
        room = self.room
        if room <= 0 or self._out_packet or self._sock is None:
            return 0
        v5 = self._protocol == mqtt.MQTTv5
        buf = bytearray()
        unsent, unacked = self.unsent, self.unacked
        while unsent and room > 0:
            mid = unsent.popleft()
            topic, payload = unacked[mid]
            frame_publish_qos1(buf, topic, mid, payload, v5, dup=True)
            room -= 1
            self.resent += 1
        end = min(len(items), start + max(0, room))
        for _, topic_s, payload in items[start:end]:
            mid = self._mid_generate()
            topic = topic_s.encode()
            unacked[mid] = (topic, payload)
            frame_publish_qos1(buf, topic, mid, payload, v5)
        self._inflight_messages = self._max_inflight_messages - room + (end - start)
        self._send_raw(bytes(buf), direct=True)
        return end - start

    def _send_raw(self, buf: bytes, *, direct: bool) -> None:
        written = 0
        if direct:
            try:
                written = self._sock_send(buf)
            except BlockingIOError:
                written = 0
            except OSError:
                # The connection is gone; paho's next loop() finds out. The packets are ours
                # already (in ``unacked``): resent after reconnecting, never counted twice.
                return
        if written < len(buf):
            queue_rest(self, PUBLISH_QOS1, bytes(buf[written:]))

    # ------------------------------------------------------------------ paho's handlers
    def loop_read(self, max_packets: int = 1) -> Any:
        """paho reads as many packets per call as it has messages in flight; ours are not among
        them, so without this one ``loop()`` would settle a single PUBACK of a batch (and the
        next chunk would go out one packet per ``send``)."""
        if self._sock is None:
            return mqtt.MQTT_ERR_NO_CONN
        for _ in range(max(len(self._out_messages) + len(self._in_messages) + len(self.unacked), 1)):
            if self._sock is None:
                return mqtt.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTT_ERR_AGAIN:
                break
        return mqtt.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Any) -> Any:
        if cmd == "PUBACK" and len(self._in_packet["packet"]) >= 2:  # else paho reports it malformed
            mid, reason = parse_puback(self._in_packet["packet"])
            if self.unacked.pop(mid, None) is not None:
                self._inflight_messages -= 1
                if reason >= REFUSED:
                    self._refused(reason)
                if self.on_acked is not None:
                    self.on_acked()
                if self.unsent:  # resends still due after a reconnect take the freed slot
                    self._resend()
                if len(self._out_messages) and self._inflight_messages < self._max_inflight_messages:
                    with self._out_message_mutex:  # paho's own queued QoS 1 messages go first
                        return self._update_inflight()
                return mqtt.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    def _refused(self, reason: int) -> None:
        """A refusal completes the message (a graceful stop must not wait for it forever) but is
        counted and logged, never taken for delivered."""
        first = reason not in self.refused
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if first:
            name = ReasonCode(PacketTypes.PUBACK, identifier=reason).getName()
            log.error(
                "MQTT broker refused a QoS 1 message: reason 0x%02x %s (logged once per reason)", reason, name
            )

    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()  # paho's in-flight count restarts from 0
        self.unsent = deque(self.unacked)

    def _handle_connack(self) -> Any:
        if self._own_max is None:
            self._own_max = self._max_inflight_messages
        if self._protocol == mqtt.MQTTv5:
            result = _packet.decode_connack(
                self._in_packet["command"], self._in_packet["packet"], self._protocol
            )
            most = getattr(result.properties, "ReceiveMaximum", None) if result.properties else None
            self._max_inflight_messages = min(self._own_max, most) if most else self._own_max
        rc = super()._handle_connack()
        if self.is_connected() and self.unsent:
            # Resend what the old connection did not get acknowledged, queued behind paho's own
            # packets of this CONNACK (status, subscription, its resends); the rest as acks free room.
            self._resend()
        return rc

    def _resend(self) -> None:
        v5 = self._protocol == mqtt.MQTTv5
        buf = bytearray()
        room = self.room
        while self.unsent and room > 0:
            mid = self.unsent.popleft()
            topic, payload = self.unacked[mid]
            frame_publish_qos1(buf, topic, mid, payload, v5, dup=True)
            room -= 1
            self.resent += 1
            self._inflight_messages += 1
        if buf:
            self._send_raw(bytes(buf), direct=False)
