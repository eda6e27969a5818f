"""MQTT transport of the simulator (paho-mqtt 2.x): a :class:`~edge.publisher.Publisher`.

Two modes:

- ``shared`` (default, fast): one connection for the whole fleet (or shard). Device statuses are
  retained messages the simulator publishes itself: ``offline`` when a device crashes, runs out
  of battery or loses its network, ``online`` when it comes back. A connection's Last Will can
  only cover one topic, so the shared connection's will is the *fleet* status
  ``sensors/fleetsim-sim-<instance>-<i>of<n>/status`` (``online``/``offline``, retained): if the
  simulator process dies, that one topic says so, and the cloud's ``offline_after_s`` rule flags
  every device of the shard as their readings stop.

Client ids: ``<instance>`` (``simulation.instance``, default a random name per process) makes
every simulator process's client ids its own, so a second ``fleetsim sim`` or an experiment beside
the demo simulator never takes over the demo's connection. The sessions are clean (a simulator
keeps its unsent readings in the devices' own buffers, not in a broker session), so a new name per
process loses nothing. If the broker still hands the session to another client (two processes
given the same ``instance``), the simulator stops at once with a :class:`SimulationError`.
- ``per-device`` (realistic): one connection per device, each with its own Last Will on
  ``sensors/<id>/status``. A crash or an empty battery disconnects with MQTT v5 reason code 4
  ("disconnect with will message"), so the *broker* publishes the device's ``offline``. With
  3.1.1 there is no such code: the simulator publishes ``offline`` and then disconnects.

Network I/O: in shared mode the socket is driven from the simulation thread itself
(``inline``, the default): :meth:`MqttPublisher.pump` runs paho's ``loop()`` every 64 publishes,
between simulation steps and while the runner idles (``select`` with the wait as timeout), and
reconnects with backoff (1-30 s) when the connection is lost. Measured here, a paho publish loop
driven this way is ~1.5x faster than with ``loop_start()``: no GIL hand-off to paho's network
thread and no wake-up write to its socket pair for every message. Per-device mode keeps paho's
threads (one per connection). The shared connection takes a tick's readings in one
:meth:`MqttPublisher.publish_many` and writes their packets itself in one ``send``: QoS 0 in
:mod:`fleetsim.edge.mqtt_wire`, QoS 1 in :mod:`fleetsim.edge.mqtt_qos1` (within the broker's
in-flight limit, PUBACKs settled before paho's generic path, resent after a reconnect).

Back-pressure: at most ``window`` messages may be handed to paho and not yet completed (PUBACK
for QoS 1, written to the socket for QoS 0); :meth:`MqttPublisher.publish` waits beyond that.
paho's in-flight window is ``simulation.max_inflight`` (100): paho scans its whole message dict
on each acknowledgement, so a large in-flight count or an unbounded queue collapses throughput
(1,000 in flight + unlimited queue stalled at ~500 msg/s here). While the connection is down,
devices store and forward in their own bounded buffers; paho itself keeps and resends the QoS 1
messages it had already accepted.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from fleetsim.edge.mqtt_qos1 import BatchClient
from fleetsim.edge.mqtt_wire import can_write, unwritten, write_qos0_batch
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import CONTROL_FILTER, ContractError, ControlCommand, DeviceState, status_topic
from fleetsim.kernel.errors import SimulationError

log = logging.getLogger(__name__)

MAX_PER_DEVICE_CONNECTIONS: Final = 2000
"""Per-device mode opens a socket and a thread per device; beyond this, use shared mode."""
DEFAULT_WINDOW_PER_INFLIGHT: Final = 10
"""Outstanding messages allowed per in-flight slot before :meth:`publish` waits."""
SESSION_TAKEN_OVER: Final = 142
"""MQTT 5 DISCONNECT reason code: another client connected with this client id."""
TAKEOVER_WINDOW_S: Final = 2.0
TAKEOVER_REPEATS: Final = 3
"""Connections lost this many times in a row within TAKEOVER_WINDOW_S of connecting count as a
takeover (MQTT 3.1.1 gives no reason)."""

OnControl = Callable[[str, ControlCommand, str], None]


class MqttPublisher:
    """Publishes the fleet's telemetry and statuses; receives control commands."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        *,
        device_ids: Iterable[str] = (),
        mode: str = "shared",
        shard: tuple[int, int] = (0, 1),
        tls: bool = False,
        window: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._mqtt = mqtt
        self.cfg = cfg
        self.qos = int(cfg.mqtt.qos)
        self.mode = mode
        self.tls = tls
        self.stop = stop or threading.Event()
        self.window = window or cfg.simulation.max_inflight * DEFAULT_WINDOW_PER_INFLIGHT
        self.on_control: OnControl | None = None
        self.control_rejected = 0
        self.instance = cfg.simulation.instance or secrets.token_hex(3)
        self.fleet_id = f"fleetsim-sim-{self.instance}-{shard[0]}of{shard[1]}"
        self.fatal: str | None = None
        """Why the simulator must stop (the broker gave its session to another client)."""
        self._short_sessions = 0  # connections lost within TAKEOVER_WINDOW_S of their CONNACK
        self._connected_at = 0.0
        self._sent = 0  # written by the simulation thread only
        self._done = 0  # written by paho's network thread only
        self._status_mids: set[int] = set()  # the main connection's status messages in flight
        self._wakeup = threading.Event()
        self.inline = mode == "shared"
        """Drive the shared connection from the caller's thread (see the module docstring)."""
        self._since_pump = 0
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self._connecting_until = 0.0
        self._generation = 0
        self._main_connects = 0
        """CONNACKs of the main client alone (``_generation`` also counts per-device clients')."""
        self._connected = False
        self._closing = False
        self._connect_error: str | None = None
        self.main = self._make_client(self.fleet_id, status_topic(self.fleet_id), control=True)
        self.clients: dict[str, Any] = {}
        if mode == "per-device":
            ids = list(device_ids)
            if len(ids) > MAX_PER_DEVICE_CONNECTIONS:
                raise SimulationError(
                    f"--connections per-device supports at most {MAX_PER_DEVICE_CONNECTIONS} devices "
                    f"per process (got {len(ids)}); use --shard or shared mode"
                )
            for device_id in ids:
                self.clients[device_id] = self._make_client(
                    f"sim-{self.instance}-{device_id}", status_topic(device_id)
                )
        elif mode != "shared":
            raise SimulationError(f"connections {mode!r}; allowed: shared, per-device")

    # ---------------------------------------------------------------------------- clients
    def _make_client(self, client_id: str, will_topic: str, control: bool = False) -> Any:
        batch = control and self.inline  # the shared inline connection writes QoS 1 batches itself
        client = mqtt_client(
            self.cfg, "sim", client_id, tls=self.tls, client_class=BatchClient if batch else None
        )
        client.will_set(will_topic, DeviceState.OFFLINE.value, qos=1, retain=True)
        client.max_inflight_messages_set(self.cfg.simulation.max_inflight)
        # Our window bounds what we hand to paho; paho's own cap is a guard behind it.
        client.max_queued_messages_set(self.window + 100)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_publish = self._on_publish
        client.on_connect = self._on_connect_main if control else self._on_connect_device
        client.on_disconnect = self._on_disconnect_main if control else None
        if control:
            client.on_message = self._on_message
        if batch:
            client.on_acked = self._on_acked
        return client

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect (and start paho's network threads); raises SimulationError if the broker
        refuses or cannot be reached within ``timeout_s``."""
        for client in (self.main, *self.clients.values()):
            try:
                mqtt_connect(client, blocking=self.inline and client is self.main)
            except (OSError, ValueError) as exc:
                raise SimulationError(f"cannot reach MQTT broker {self.cfg.mqtt.host}: {exc}") from exc
            if not (self.inline and client is self.main):
                client.loop_start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.inline:
                self.main.loop(0.02)
            if self._connect_error:
                self.close(graceful=False)
                raise SimulationError(f"MQTT broker refused the simulator: {self._connect_error}")
            if self._connected and all(c.is_connected() for c in self.clients.values()):
                return
            # The main client's own CONNACKs: per-device clients may connect first, and that is
            # not a session the broker closed (CI once stopped a run on that race).
            if self._main_connects and not self._connected:
                # Accepted, then closed before we could start: what a broker does when another
                # live client holds the id (Mosquitto closes the socket without a reason code).
                self.fatal = self.fatal or self._takeover_message("connection closed right after connecting")
                self.close(graceful=False)
                raise SimulationError(self.fatal)
            time.sleep(0.02)
        self.close(graceful=False)
        raise SimulationError(
            f"no MQTT connection to {self.cfg.mqtt.host}:{self.cfg.mqtt.port} within {timeout_s:.0f} s"
        )

    def _on_connect_main(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            return
        if self.qos == 0:
            self._done = self._sent  # QoS 0 messages lost with the old socket never complete
        self._main_status(status_topic(self.fleet_id), DeviceState.ONLINE.value)
        client.subscribe(CONTROL_FILTER, qos=1)
        self._connected = True
        self._connected_at = time.monotonic()
        self._retry_delay = 1.0
        self._generation += 1
        self._main_connects += 1
        self._wakeup.set()

    def _on_connect_device(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            return
        self._generation += 1

    def _on_disconnect_main(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self._closing:
            self._check_takeover(reason)
        if self._connected and not self._closing and self.fatal is None:
            log.warning("MQTT connection lost (%s); devices buffer until it is back", reason)
        self._connected = False
        self._wakeup.set()

    def _check_takeover(self, reason: Any) -> None:
        """Stop the run when another client holds this client id: MQTT 5 says so (reason 142,
        session taken over); with 3.1.1 the broker only closes the socket, so connections that
        keep dying right after their CONNACK are taken as the same thing."""
        if self._connected and time.monotonic() - self._connected_at < TAKEOVER_WINDOW_S:
            self._short_sessions += 1
        elif self._connected:
            self._short_sessions = 0
        taken = getattr(reason, "value", None) == SESSION_TAKEN_OVER
        if taken or self._short_sessions >= TAKEOVER_REPEATS:
            why = "session taken over" if taken else "connection closed right after connecting"
            self.fatal = self._takeover_message(f"{why}, {max(1, self._short_sessions)} time(s)")
            self.stop.set()

    def _takeover_message(self, why: str) -> str:
        return (
            f"the MQTT broker gave client id {self.fleet_id!r} to another client ({why}); every "
            "simulator process needs its own simulation.instance (leave it empty for a random one)"
        )

    def _main_status(self, topic: str, state: str) -> Any:
        info = self.main.publish(topic, state, qos=1, retain=True)
        if info.rc in (0, self._mqtt.MQTT_ERR_NO_CONN):  # paho keeps it: a PUBACK will come
            self._status_mids.add(info.mid)  # which completes no telemetry (see _on_publish)
        return info

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if client is self.main and mid in self._status_mids:
            self._status_mids.discard(mid)  # else drain() could return one telemetry PUBACK early
            return
        self._done += 1
        # Inline, the waiter is this thread (it pumps the socket itself): no Event to set, which
        # took a lock for every message.
        if not self.inline and self._sent - self._done <= self.window // 2:
            self._wakeup.set()

    def _on_acked(self) -> None:
        self._done += 1  # a PUBACK of a batched QoS 1 message (inline: no waiter to wake)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        target = msg.topic.rsplit("/", 1)[-1]
        try:
            cmd = ControlCommand.decode(msg.payload)
        except ContractError as exc:
            self.control_rejected += 1
            log.warning("control message on %s rejected: %s", msg.topic, exc)
            return
        if self.on_control is not None:
            self.on_control(target, cmd, "control")

    # -------------------------------------------------------------------------- Publisher
    @property
    def generation(self) -> int:
        return self._generation

    @property
    def outstanding(self) -> int:
        """Messages handed to paho and not yet completed."""
        return max(0, self._sent - self._done)

    def link_ok(self, device_id: str) -> bool:
        if self.mode == "per-device":
            client = self.clients.get(device_id)
            return client is not None and client.is_connected()
        return self._connected

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        if self._sent - self._done >= self.window:
            self._wait_window()
        client = self.clients[device_id] if self.mode == "per-device" else self.main
        if self.inline:
            self._since_pump += 1
            if self._since_pump >= 64:  # read acks and control messages now and then
                self._since_pump = 0
                self.main.loop(0.0)
        info = client.publish(topic, payload, qos=self.qos)
        rc = info.rc
        if rc == 0 or (rc == self._mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
            self._sent += 1  # QoS 1 without a connection: paho keeps it and resends it
            return True
        return False  # the device keeps it in its store-and-forward buffer

    def publish_many(self, items: list[tuple[str, str, bytes]]) -> int:
        """Publish a batch of telemetry in order; returns how many were taken (a prefix).

        On the inline shared connection the PUBLISH packets are framed and written on paho's
        socket in one ``send``: QoS 0 by :mod:`fleetsim.edge.mqtt_wire`, QoS 1 by
        :mod:`fleetsim.edge.mqtt_qos1` in chunks as PUBACKs free in-flight room. Everything else
        goes through :meth:`publish` one by one."""
        client = self.main
        if self.qos == 1 and self.inline and self._connected:
            return self._publish_qos1(items)
        if (
            self.qos != 0
            or not self.inline
            or not self._connected
            or not can_write(client)  # paho has bytes of its own waiting: keep the stream in order
        ):
            for n, (device_id, topic, payload) in enumerate(items):
                if not self.publish(device_id, topic, payload):
                    return n
            return len(items)
        try:
            write_qos0_batch(client, items, v5=client.protocol == self._mqtt.MQTTv5)
        except OSError as exc:
            log.warning("MQTT socket write failed (%s); devices buffer until the connection is back", exc)
            self._connected = False
            return 0
        n = len(items)
        self._sent += n
        self._done += n  # QoS 0 completes once written (or queued behind the bytes written)
        client.loop(0.0)  # read acks and control messages, write what the socket left
        return n

    def _publish_qos1(self, items: list[tuple[str, str, bytes]]) -> int:
        """Write the batch as the in-flight limit allows, servicing the socket for PUBACKs in
        between (the back-pressure :meth:`publish` applies with its window); stops early, with
        the prefix taken, when the connection drops or the run stops."""
        client, taken = self.main, 0
        while True:
            n = client.write_batch(items, taken)
            taken += n
            self._sent += n
            self.pump(0.0 if taken == len(items) else 0.01)  # read acks, write what the socket left
            if taken == len(items) or not self._connected or self.stop.is_set():
                return taken

    def _wait_window(self) -> None:
        while self._sent - self._done >= self.window and self._connected and not self.stop.is_set():
            if self.inline:
                self.pump(0.01)
                continue
            self._wakeup.clear()
            if self._sent - self._done < self.window:
                return
            self._wakeup.wait(0.1)

    def set_status(self, device_id: str, online: bool, abrupt: bool = False) -> None:
        state = (DeviceState.ONLINE if online else DeviceState.OFFLINE).value
        if self.mode != "per-device":
            self._main_status(status_topic(device_id), state)
            return
        client = self.clients[device_id]
        if online:
            if not client.is_connected():
                mqtt_connect(client, blocking=False)
                client.loop_start()
            client.publish(status_topic(device_id), state, qos=1, retain=True)
            return
        if abrupt and client.protocol == self._mqtt.MQTTv5:
            # Reason 4: the broker publishes this client's Last Will, as after a real crash.
            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            info = client.publish(status_topic(device_id), state, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
            client.disconnect()
        _stop_after_disconnect(client)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Inline mode: service the socket (acks, control, pings) for up to ``timeout_s``, and
        reconnect with exponential backoff when the connection is gone."""
        if not self.inline:
            if timeout_s > 0:
                self.stop.wait(timeout_s)
            return
        now = time.monotonic()
        if self._connected or now < self._connecting_until:
            if self.main.loop(timeout_s) == 0:
                return
            self._connected = False
            self._connecting_until = 0.0
            return
        if now < self._retry_at:
            self.stop.wait(min(timeout_s, self._retry_at - now))
            return
        # Each attempt pushes the next one further out (1, 2, 4 ... 30 s) until a CONNACK resets it.
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(30.0, self._retry_delay * 2)
        try:
            self.main.reconnect()
        except OSError as exc:
            log.warning("MQTT reconnect failed (%s); next try in %.0f s", exc, self._retry_at - now)
            return
        self._connecting_until = now + 5.0  # wait this long for the CONNACK before retrying

    # ---------------------------------------------------------------------------- shutdown
    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted message completed; False on timeout.

        A batched QoS 0 message counts as completed once framed, but the socket may have taken
        only part of its batch: inline, the wait also lasts until paho has written the rest."""
        deadline = time.monotonic() + timeout_s
        while self._pending() and time.monotonic() < deadline:
            if not self._connected:
                return False
            if self.inline:
                self.main.loop(0.01)
            else:
                time.sleep(0.01)
        return not self._pending()

    def _pending(self) -> bool:
        return self._sent - self._done > 0 or (self.inline and unwritten(self.main))

    def close(self, graceful: bool = True) -> None:
        """Mark the fleet offline, disconnect every client and stop paho's threads."""
        clients = [self.main, *self.clients.values()]
        self._closing = True
        if graceful and self._connected:
            info = self._main_status(status_topic(self.fleet_id), DeviceState.OFFLINE.value)
            deadline = time.monotonic() + 5
            # paho raises ValueError from is_published()/wait_for_publish() when the message was
            # never queued (its outgoing queue was full): the broker's Last Will still says offline
            # once we disconnect, so this is a warning, never a crash at shutdown.
            try:
                while self.inline and not info.is_published() and time.monotonic() < deadline:
                    self.main.loop(0.01)
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("fleet offline status not confirmed before disconnect (%s)", exc)
        for client in clients:
            client.disconnect()
            if self.inline and client is self.main:
                client.loop(0.01)  # let the DISCONNECT go out
            else:
                _stop_after_disconnect(client)


def _stop_after_disconnect(client: Any, timeout_s: float = 2.0) -> None:
    """Let paho's thread send the DISCONNECT and leave on its own before joining it:
    ``loop_stop()`` right away can end the thread first, the socket then closes without a
    DISCONNECT and the broker fires the Last Will of a device that stopped cleanly."""
    thread = getattr(client, "_thread", None)  # paho keeps its network thread here
    if thread is not None:
        thread.join(timeout_s)
    client.loop_stop()
