"""Session adoption without a broker: the rule (who adopts whom), the manager's reactions to
statuses and takeovers (scripted sessions), presence hooks, config and metrics.
The real thing runs in tests/integration/test_bridge_session_adoption.py and the cluster drill C3."""

from __future__ import annotations

import argparse
import itertools
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fleetsim.bridge import adoption
from fleetsim.bridge.adoption import Adopted, Adoption, Presence, adopter_of, plan, to_adopt
from fleetsim.bridge.cli import identity
from fleetsim.bridge.metrics import AdoptionCollector
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import DeviceState
from fleetsim.kernel.errors import ConfigError

ON, OFF = DeviceState.ONLINE, DeviceState.OFFLINE
CFG = FleetsimConfig().with_overrides(
    {"bridge.group_size": 3, "bridge.shared_group": "g", "mqtt.bridge_password": "pw"}
)
PEERS = ["b-g-0", "b-g-1", "b-g-2"]


# ------------------------------------------------------------------------------ the rule
def test_the_next_online_bridge_in_the_ring_adopts() -> None:
    assert adopter_of(0, {0: OFF, 1: ON}, 2) == 1
    assert adopter_of(1, {0: ON, 1: OFF}, 2) == 0
    assert adopter_of(2, {0: ON, 1: OFF, 2: OFF}, 3) == 0  # wraps, skips the offline one
    assert adopter_of(0, {0: OFF, 1: OFF, 2: ON}, 3) == 2


def test_nobody_adopts_an_online_or_unknown_peer_or_without_a_live_bridge() -> None:
    assert adopter_of(0, {0: ON, 1: ON}, 2) is None
    assert adopter_of(0, {1: ON}, 2) is None  # never announced: maybe starting right now
    assert adopter_of(0, {0: OFF, 1: OFF}, 2) is None


def test_a_bridge_adopts_only_once_its_own_online_is_seen() -> None:
    assert to_adopt(1, {0: OFF, 1: ON}, 2) == {0}
    assert to_adopt(1, {0: OFF}, 2) == frozenset()  # the others do not count it yet either
    assert to_adopt(0, {0: OFF, 1: ON}, 2) == frozenset()


def test_every_offline_peer_has_exactly_one_adopter_whatever_the_statuses() -> None:
    states = (ON, OFF, None)
    for combo in itertools.product(states, repeat=4):
        statuses = {i: s for i, s in enumerate(combo) if s is not None}
        holders: dict[int, list[int]] = {}
        for me in range(4):
            for peer in to_adopt(me, statuses, 4):
                holders.setdefault(peer, []).append(me)
        for peer, state in statuses.items():
            expect = 1 if state is OFF and ON in statuses.values() else 0
            assert len(holders.get(peer, [])) == expect, (statuses, holders)
        assert all(statuses[me] is ON for hs in holders.values() for me in hs)


def test_status_payloads() -> None:
    assert adoption.parse_status(b"online") is ON
    assert adoption.parse_status(b"offline\n") is OFF
    assert adoption.parse_status(b"\xff") is None and adoption.parse_status(b"gone") is None


# ------------------------------------------------------------------------------ config
def test_plan_names_the_same_sessions_the_bridges_use() -> None:
    peers = plan(CFG, 1, "g", None)
    ids = [identity(argparse.Namespace(shared_group="g", instance=i, client_id=None, metrics_port=0), CFG)[0]
           for i in range(3)]  # fmt: skip
    assert peers == ids == ["fleetsim-bridge-g-0", "fleetsim-bridge-g-1", "fleetsim-bridge-g-2"]


def test_plan_is_off_without_peers_a_group_the_flag_or_mqtt5() -> None:
    assert plan(FleetsimConfig(), 0, "g", None) is None  # group_size 1
    assert plan(CFG, 0, "", None) is None
    assert plan(CFG.with_overrides({"bridge.adopt_peers": False}), 0, "g", None) is None
    assert plan(CFG, 0, "g", "explicit-id") is None
    assert plan(CFG.with_overrides({"mqtt.protocol": "3.1.1"}), 0, "g", None) is None


def test_plan_refuses_an_instance_outside_the_group_naming_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"instance 3 is outside bridge.group_size 3; allowed: 0..2"):
        plan(CFG, 3, "g", None)


def test_config_errors_name_the_bad_value_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"adopt_peers 'maybe' is not a boolean; allowed: true, false"):
        CFG.with_overrides({"bridge.adopt_peers": "maybe"})
    with pytest.raises(ConfigError, match="group_size"):
        CFG.with_overrides({"bridge.group_size": 9})
    assert CFG.with_overrides({"bridge.adopt_peers": "false"}).bridge.adopt_peers is False


# ------------------------------------------------------------------------------ hooks
class RecordingClient:
    def __init__(self) -> None:
        self.will: tuple[Any, ...] | None = None
        self.published: list[tuple[str, str, int, bool]] = []

    def will_set(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        self.will = (topic, payload, qos, retain)

    def publish(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        self.published.append((topic, payload, qos, retain))


def test_presence_sets_a_retained_will_and_says_online_then_offline() -> None:
    c, hooks = RecordingClient(), Presence("b-g-0")
    hooks.configure(c)
    hooks.connected(c)
    hooks.stopping(c)
    topic = "fleetsim/bridge/b-g-0/status"
    assert c.will == (topic, "offline", 1, True)
    assert c.published == [(topic, "online", 1, True), (topic, "offline", 1, True)]


def test_an_adopted_session_has_no_will_says_nothing_and_does_not_reconnect() -> None:
    c, hooks = RecordingClient(), Adopted(threading.Event())
    hooks.configure(c)
    hooks.connected(c)
    hooks.stopping(c)
    assert c.will is None and c.published == [] and hooks.reconnect is False


def test_the_runtime_builds_the_adopted_client_without_reconnect() -> None:
    from fleetsim.bridge.runtime import Bridge  # paho and confluent_kafka: only this test needs them

    hooks = Adopted(threading.Event())
    b = Bridge(CFG, client_id="b-g-0", metrics_port=0, sink=SimpleNamespace(), hooks=hooks)
    client = b._make_client()
    assert client._reconnect_on_failure is False and client._will is False
    b._on_disconnect(client, None, None, SimpleNamespace(value=142))
    assert hooks.ended.is_set() and hooks.taken_over


# ------------------------------------------------------------------------------ the manager
class FakeSession:
    def __init__(self, peer_id: str, hooks: adoption.SessionHooks) -> None:
        self.peer_id = peer_id
        self.hooks = hooks
        self.stats = SimpleNamespace(forwarded=0, received=0)
        self.started = threading.Event()
        self.stopped = False

    def start(self) -> None:
        self.started.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped = True


class Rig:
    def __init__(self, me: int) -> None:
        self.made: list[FakeSession] = []
        self.mgr = Adoption(CFG, me, PEERS, self.make)

    def make(self, peer_id: str, hooks: adoption.SessionHooks) -> FakeSession:
        s = FakeSession(peer_id, hooks)
        self.made.append(s)
        return s

    def status(self, **states: str) -> None:
        for name, state in states.items():
            self.mgr.note_status(f"b-g-{name[1]}", state.encode())
        self.mgr.reconcile()

    def held(self) -> tuple[str, ...]:
        return self.mgr.snapshot().held


def test_adopts_a_peer_that_goes_offline_and_hands_it_back_when_it_returns() -> None:
    rig = Rig(me=1)
    rig.status(b0="online", b1="online", b2="online")
    assert rig.made == []
    rig.status(b0="offline")
    assert [s.peer_id for s in rig.made] == ["b-g-0"] and rig.held() == ("b-g-0",)
    rig.made[0].started.wait(5)
    rig.made[0].stats.forwarded = 40
    # b0 restarted and resumed its session: Mosquitto 2.0.11 just drops our connection.
    rig.made[0].hooks.disconnected(SimpleNamespace(value=0x80))
    rig.mgr.reconcile()
    rig.mgr.reconcile()
    assert rig.made[0].stopped and rig.held() == () and len(rig.made) == 1  # its "online" is due
    rig.status(b0="online")
    rig.status(b0="offline")  # a new outage after it was back
    assert len(rig.made) == 2 and rig.held() == ("b-g-0",)
    snap = rig.mgr.snapshot()
    assert snap.adoptions == 2 and snap.forwarded == 40


def test_a_peer_seen_online_again_is_released_even_before_its_takeover_arrives() -> None:
    rig = Rig(me=2)
    rig.status(b0="online", b2="online", b1="offline")
    assert rig.held() == ("b-g-1",)
    rig.status(b1="online")
    assert rig.made[0].stopped and rig.held() == ()


def test_a_new_offline_after_the_end_is_adopted_at_once() -> None:
    rig = Rig(me=1)
    rig.status(b1="online", b0="offline")
    rig.made[0].hooks.disconnected(SimpleNamespace(value=142))
    rig.mgr.reconcile()
    assert rig.held() == ()
    rig.status(b0="offline")  # e.g. the broker restarted: the watcher gets the retained status again
    assert len(rig.made) == 2 and rig.held() == ("b-g-0",)


def test_an_end_without_any_new_status_is_adopted_again_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(adoption, "RETRY_S", 0.0)
    rig = Rig(me=0)
    rig.status(b0="online", b1="online", b2="offline")
    rig.made[0].hooks.disconnected(SimpleNamespace(value=0x88))
    rig.mgr.reconcile()  # releases
    rig.mgr.reconcile()  # the pause (0 here) is over and b2 is still offline
    assert rig.made[0].stopped and len(rig.made) == 2 and rig.held() == ("b-g-2",)


def test_only_the_ring_successor_adopts_and_a_dead_adopters_peers_move_on() -> None:
    rigs = [Rig(me) for me in range(3)]
    for rig in rigs:
        rig.status(b0="online", b1="online", b2="online")
        rig.status(b0="offline")
    assert [len(r.made) for r in rigs] == [0, 1, 0]
    for rig in rigs:
        rig.status(b1="offline")  # the adopter dies too: bridge 2 now holds both
    assert rigs[2].held() == ("b-g-0", "b-g-1")


def test_stop_hands_every_held_session_back() -> None:
    rig = Rig(me=1)
    rig.status(b1="online", b0="offline", b2="offline")
    rig.mgr.stop()
    assert [s.stopped for s in rig.made] == [True, True] and rig.held() == ()


def test_metrics_show_held_sessions_peers_and_forwarded() -> None:
    rig = Rig(me=1)
    rig.status(b1="online", b2="online", b0="offline")
    rig.made[0].stats.forwarded, rig.made[0].stats.received = 7, 9
    reg = CollectorRegistry()
    reg.register(AdoptionCollector(rig.mgr.snapshot))
    text = generate_latest(reg).decode()
    assert "fleetsim_bridge_adopted_sessions 1.0" in text
    assert 'fleetsim_bridge_adopted_session{peer="b-g-0"} 1.0' in text
    assert 'fleetsim_bridge_adopted_session{peer="b-g-2"} 0.0' in text
    assert 'fleetsim_bridge_peer_online{peer="b-g-0"} 0.0' in text
    assert "fleetsim_bridge_adopted_forwarded_total 7.0" in text
    assert "fleetsim_bridge_adopted_received_total 9.0" in text
    assert "fleetsim_bridge_adoptions_total 1.0" in text


# ------------------------------------------------------------------------------ real paho, fake broker
class TakeoverBroker:
    """Accepts MQTT 5 connections on a free loopback port, grants each a session, then ends it
    the way Mosquitto does when the owner resumes it: DISCONNECT with reason 142."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(4096)  # CONNECT
                conn.sendall(bytes((0x20, 3, 0x01, 0x00, 0x00)))  # CONNACK: session present, success
                time.sleep(0.3)
                conn.sendall(bytes((0xE0, 2, 142, 0x00)))  # DISCONNECT: session taken over
                time.sleep(0.2)

    def close(self) -> None:
        self.sock.close()


def test_a_taken_over_adopted_session_ends_without_reconnecting() -> None:
    from fleetsim.bridge.runtime import Bridge  # paho and confluent_kafka: only these tests need them

    broker = TakeoverBroker()
    sink = SimpleNamespace(
        wait_ready=lambda topics, stop: True,
        poll=time.sleep,
        fatal_error=None,
        close=lambda timeout: None,
    )
    hooks = Adopted(threading.Event())
    cfg = CFG.with_overrides({"mqtt.port": broker.port, "mqtt.host": "127.0.0.1"})
    b = Bridge(cfg, client_id="b-g-0", shared_group="g", metrics_port=0, sink=sink, hooks=hooks)
    try:
        b.start()
        assert hooks.ended.wait(5), "the takeover was not reported"
        time.sleep(2.5)  # lets time pass: paho's reconnect delay is 1 s; nothing may come
        assert hooks.taken_over and broker.connections == 1
    finally:
        b.stop(timeout=2)
        broker.close()
