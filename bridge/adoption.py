"""Session adoption: a live bridge resumes a dead peer's persistent MQTT session until it returns.

Why: bridges in one shared subscription hold persistent sessions (nothing is lost across a
restart), and Mosquitto 2.0 keeps dispatching a dead member's share of the group into its offline
session. Killed with -9, a bridge's share would wait there until it restarts (docs/reliability.md,
drill C3). Adoption puts a consumer back on that session at once:

- presence: each bridge's own session has a retained Last Will ``offline`` (delay 0) on
  ``fleetsim/bridge/<client id>/status`` and publishes a retained ``online`` on every connect
  (``offline`` on a graceful stop), so the broker announces a kill -9 at once (connection reset)
  and a hang after 1.5 x keep-alive;
- every bridge watches all statuses (its own small clean-start connection) and applies the same
  pure rule, :func:`adopter_of`: a peer that is ``offline`` is adopted by the first ``online``
  bridge after it in the ring of instance numbers. Everyone sees the same retained statuses, so
  exactly one bridge adopts once they settle;
- the adopter opens a second session with the peer's client id and ``clean_start=False``: the
  broker hands it the queued messages and the peer's share of the group. It is a full
  :class:`~fleetsim.bridge.runtime.Bridge` with its own Kafka producer, so the same rule holds:
  PUBACK only after Kafka confirmed. It has no Will and never publishes the peer's status;
- when the peer restarts it resumes its own session and Mosquitto drops the adopter's connection
  (MQTT 5 defines reason 142, session taken over; Mosquitto 2.0.11 queues that DISCONNECT and
  closes the socket at once, so the adopter mostly sees a plain connection loss). The adopted
  session never reconnects by itself (it would take the session back), and after any end the
  adopter waits for a new status of that peer (its ``online``) before adopting it again; only if
  none comes within :data:`RETRY_S` and it is still ``offline`` (a lost connection, not a
  takeover) does it adopt again.
  What the adopter had received but not acked is redelivered to the peer; the rows it may
  duplicate in Kafka are absorbed by ``sensor_data``'s key (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import BRIDGE_STATUS_FILTER, DeviceState, bridge_status_topic
from fleetsim.kernel.errors import ConfigError

log = logging.getLogger("fleetsim.bridge.adoption")

SESSION_TAKEN_OVER = 142
"""MQTT 5 DISCONNECT reason: another connection resumed this client id's session."""
RETRY_S = 10.0
"""After an adopted connection ended without a new status of that peer: wait this long before
adopting it again (a returning owner says ``online`` within milliseconds of its takeover)."""
STOP_TIMEOUT_S = 10.0
"""Graceful stop of an adopted session: wait this long for Kafka to confirm what is in flight."""


# ---------------------------------------------------------------------------- the pure rule
def session_id(base_client_id: str, group: str, instance: int) -> str:
    """The stable client id (session name) of instance ``instance`` of a shared group's bridges."""
    return f"{base_client_id}-{group}-{instance}"


def adopter_of(peer: int, statuses: Mapping[int, DeviceState], size: int) -> int | None:
    """The instance that adopts ``peer``'s session: the first ``online`` one after it in the ring
    ``0..size-1``; None while ``peer`` is not known ``offline`` or nobody is ``online``."""
    if statuses.get(peer) is not DeviceState.OFFLINE:
        return None
    for step in range(1, size):
        candidate = (peer + step) % size
        if statuses.get(candidate) is DeviceState.ONLINE:
            return candidate
    return None


def to_adopt(me: int, statuses: Mapping[int, DeviceState], size: int) -> frozenset[int]:
    """The peers whose sessions instance ``me`` should hold now. ``me`` counts only once its own
    ``online`` is seen, as the others see it: all apply the same rule to the same statuses."""
    return frozenset(j for j in range(size) if j != me and adopter_of(j, statuses, size) == me)


def parse_status(payload: bytes) -> DeviceState | None:
    """A status payload (``online``/``offline``); None for anything else (ignored)."""
    try:
        return DeviceState(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def plan(cfg: FleetsimConfig, instance: int, group: str, explicit_client_id: str | None) -> list[str] | None:
    """The group's session names (index = instance) when this bridge takes part in adoption.

    None when adoption is off: ``bridge.adopt_peers`` false, no shared group, ``group_size`` 1,
    an explicit ``--client-id`` (the peers' names cannot be derived) or MQTT 3.1.1 (no reason 142:
    a returning peer and its adopter could not tell a takeover from a network error).
    """
    b = cfg.bridge
    if not (b.adopt_peers and group and b.group_size >= 2):
        return None
    if not 0 <= instance < b.group_size:
        raise ConfigError(
            f"bridge instance {instance} is outside bridge.group_size {b.group_size}; "
            f"allowed: 0..{b.group_size - 1}"
        )
    if explicit_client_id is not None:
        log.warning("--client-id given: peer session names unknown, session adoption off")
        return None
    if cfg.mqtt.protocol != "5":
        log.warning("mqtt.protocol %s: session adoption needs MQTT 5, off", cfg.mqtt.protocol)
        return None
    return [session_id(b.client_id, group, k) for k in range(b.group_size)]


# ---------------------------------------------------------------------------- session hooks
class SessionHooks:
    """What a bridge's MQTT session adds around its connection (the base does nothing)."""

    reconnect = True
    """Reconnect after a lost connection (paho's loop)."""

    def configure(self, client: Any) -> None:
        """Before the first connect (a Last Will goes here)."""

    def connected(self, client: Any) -> None:
        """After each successful connect and re-subscribe (network thread)."""

    def disconnected(self, reason: Any) -> None:
        """After each lost or closed connection (network thread)."""

    def stopping(self, client: Any) -> None:
        """Graceful stop, just before DISCONNECT is queued."""


class Presence(SessionHooks):
    """A bridge's own session: retained ``online`` on connect, Last Will and graceful ``offline``."""

    def __init__(self, client_id: str) -> None:
        self.topic = bridge_status_topic(client_id)

    def configure(self, client: Any) -> None:
        # No Will Delay Interval: a kill -9 must be announced at once, not after a grace period.
        client.will_set(self.topic, DeviceState.OFFLINE.value, qos=1, retain=True)

    def connected(self, client: Any) -> None:
        client.publish(self.topic, DeviceState.ONLINE.value, qos=1, retain=True)

    def stopping(self, client: Any) -> None:
        # A normal DISCONNECT discards the Will: say it ourselves, so a peer adopts the session
        # (its share of the group keeps queueing there while this bridge is stopped).
        client.publish(self.topic, DeviceState.OFFLINE.value, qos=1, retain=True)


class Adopted(SessionHooks):
    """A peer's session held by this bridge: no Will, no status, no reconnect."""

    reconnect = False

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self.ended = threading.Event()
        """Set when the connection ended (taken over, lost, or our own stop)."""
        self.taken_over = False
        """The peer (or another adopter) resumed the session: reason 142."""

    def disconnected(self, reason: Any) -> None:
        # Sticky: paho may report one lost connection twice (the broker's DISCONNECT, then the
        # closed socket with a generic reason).
        self.taken_over = self.taken_over or getattr(reason, "value", reason) == SESSION_TAKEN_OVER
        self.ended.set()
        self._wake.set()


class Session(Protocol):
    """What adoption needs of a bridge (:class:`~fleetsim.bridge.runtime.Bridge`)."""

    stats: Any

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


# ---------------------------------------------------------------------------- the manager
@dataclass
class _Held:
    peer: int
    bridge: Session
    hooks: Adopted
    thread: threading.Thread
    since: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class AdoptionSnapshot:
    """What the metrics endpoint shows (see :class:`fleetsim.bridge.metrics.AdoptionCollector`)."""

    held: tuple[str, ...]
    """Client ids of the peers' sessions held now."""
    peers: Mapping[str, DeviceState]
    """Last status seen per peer client id (only peers ever seen)."""
    adoptions: int
    """Sessions adopted since start."""
    forwarded: int
    """Telemetry records Kafka confirmed from adopted sessions, since start."""
    received: int
    """MQTT messages received on adopted sessions, since start."""


class Adoption:
    """Watches the group's statuses and holds the sessions :func:`to_adopt` gives this bridge."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        me: int,
        peers: list[str],
        factory: Callable[[str, SessionHooks], Session],
    ) -> None:
        self.cfg = cfg
        self.me = me
        self.peers = peers
        self._index = {cid: i for i, cid in enumerate(peers)}
        self._factory = factory
        self._statuses: dict[int, DeviceState] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held: dict[int, _Held] = {}
        self._seq: dict[int, int] = {}
        """Status messages seen per peer (a new one lifts a block)."""
        self._blocked: dict[int, tuple[int, float]] = {}
        """Peer -> (status count when its adopted connection ended, until when): not adopted again
        before a new status of it or that time."""
        self._adoptions = 0
        self._forwarded_done = 0
        self._received_done = 0
        self._thread: threading.Thread | None = None
        self._watcher: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        c = mqtt_client(self.cfg, "bridge", f"{self.peers[self.me]}-watch", clean=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        self._watcher = c
        mqtt_connect(c, blocking=False)
        c.loop_start()
        self._thread = threading.Thread(target=self._run, name="bridge-adoption", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and hand back every held session (acks what Kafka confirmed)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S + 10)
        for peer in list(self._held):
            self._release(peer)
        if self._watcher is not None:
            self._watcher.disconnect()
            self._watcher.loop_stop()

    # ------------------------------------------------------------------ statuses (paho thread)
    def _on_connect(self, client: Any, _u: Any, _flags: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            log.error("status watcher connect refused: %s", reason)
            return
        client.subscribe(BRIDGE_STATUS_FILTER, qos=1)  # clean start: the retained statuses come now

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        peer = self._index.get(parts[2]) if len(parts) == 4 else None
        state = parse_status(msg.payload)
        if peer is None or state is None:
            return
        with self._lock:
            self._statuses[peer] = state
            self._seq[peer] = self._seq.get(peer, 0) + 1
        self._wake.set()

    def note_status(self, client_id: str, payload: bytes) -> None:
        """Feed one status message as the watcher would (tests)."""
        self._on_message(None, None, _Msg(bridge_status_topic(client_id), payload))

    # ------------------------------------------------------------------ decisions (own thread)
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except Exception:
                log.exception("session adoption step failed")

    def reconcile(self) -> None:
        """Release what should no longer be held, adopt what should be."""
        with self._lock:
            want = to_adopt(self.me, self._statuses, len(self.peers))
            seq = dict(self._seq)
        for peer, held in list(self._held.items()):
            ended = held.hooks.ended.is_set()
            if peer in want and not ended:
                continue
            if ended:
                # Taken over by the returning owner (its "online" follows) or lost: never take it
                # back on our own before a new status says the owner is (still) gone.
                self._blocked[peer] = (seq.get(peer, 0), time.monotonic() + RETRY_S)
                how = "taken over (142)" if held.hooks.taken_over else "closed"
                log.info("adopted session of %s %s", self.peers[peer], how)
            self._release(peer)
        now = time.monotonic()
        for peer in sorted(want - set(self._held)):
            blocked = self._blocked.get(peer)
            if blocked is not None and blocked[0] == seq.get(peer, 0) and now < blocked[1]:
                continue
            self._blocked.pop(peer, None)
            self._adopt(peer)

    def _adopt(self, peer: int) -> None:
        cid = self.peers[peer]
        hooks = Adopted(self._wake)
        bridge = self._factory(cid, hooks)
        # start() waits for Kafka's metadata: not on this thread, which must keep deciding.
        thread = threading.Thread(target=bridge.start, name=f"bridge-adopt-{peer}", daemon=True)
        with self._lock:
            self._held[peer] = _Held(peer, bridge, hooks, thread)
            self._adoptions += 1
        log.warning("peer %s is offline: adopting its session", cid)
        thread.start()

    def _release(self, peer: int) -> None:
        held = self._held[peer]
        held.bridge.stop(timeout=STOP_TIMEOUT_S)
        held.thread.join(timeout=5)
        st = held.bridge.stats
        with self._lock:  # one step, so the exported counters never go back
            del self._held[peer]
            self._forwarded_done += st.forwarded
            self._received_done += st.received
        log.info(
            "released %s after %.1f s: %d received, %d forwarded",
            self.peers[peer],
            time.monotonic() - held.since,
            st.received,
            st.forwarded,
        )

    # ------------------------------------------------------------------ metrics
    def snapshot(self) -> AdoptionSnapshot:
        with self._lock:
            held = list(self._held.values())
            return AdoptionSnapshot(
                held=tuple(self.peers[h.peer] for h in held if not h.hooks.ended.is_set()),
                peers={self.peers[i]: s for i, s in self._statuses.items() if i != self.me},
                adoptions=self._adoptions,
                forwarded=self._forwarded_done + sum(h.bridge.stats.forwarded for h in held),
                received=self._received_done + sum(h.bridge.stats.received for h in held),
            )


@dataclass
class _Msg:
    topic: str
    payload: bytes
