"""The simulator's only door to the outside: a publisher object passed into the SimPy world.

Devices never touch the network. They call :meth:`Publisher.publish` for telemetry and
:meth:`Publisher.set_status` for the retained ``online``/``offline`` status, and ask
:meth:`Publisher.link_ok` whether their uplink is up (when it is not, they store and forward).
``edge.mqtt`` implements it over paho; :class:`MemoryPublisher` records in memory for tests.
A publisher may also have ``publish_many(items: list[(device_id, topic, payload)]) -> int``: a
tick's readings in one call, in order, returning how many it took (a prefix; the devices keep the
rest). The sampler uses it when present, else :meth:`Publisher.publish` one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fleetsim.kernel.contract import DeviceState, status_topic


class Publisher(Protocol):
    """What the simulation needs from a transport."""

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        """Send one telemetry message (may block briefly for back-pressure). False when the
        transport could not take it (the device then keeps it in its buffer)."""

    def set_status(self, device_id: str, online: bool, abrupt: bool = False) -> None:
        """Retained device status; ``abrupt`` means the device died (its Last Will fires)."""

    def link_ok(self, device_id: str) -> bool:
        """Whether the device's connection to the broker is up right now."""

    @property
    def generation(self) -> int:
        """Incremented on every (re)connection, so the engine knows when to flush buffers."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One message the memory publisher received."""

    topic: str
    payload: bytes
    retain: bool


class MemoryPublisher:
    """Records every message in order; ``up`` simulates the broker link (tests)."""

    def __init__(self) -> None:
        self.messages: list[Sent] = []
        self.up = True
        self._generation = 1

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        if not self.up:
            return False
        self.messages.append(Sent(topic, payload, False))
        return True

    def publish_many(self, items: list[tuple[str, str, bytes]]) -> int:
        if not self.up:
            return 0
        self.messages.extend(Sent(topic, payload, False) for _, topic, payload in items)
        return len(items)

    def set_status(self, device_id: str, online: bool, abrupt: bool = False) -> None:
        state = DeviceState.ONLINE if online else DeviceState.OFFLINE
        self.messages.append(Sent(status_topic(device_id), state.value.encode(), True))

    def link_ok(self, device_id: str) -> bool:
        return self.up

    @property
    def generation(self) -> int:
        return self._generation

    def set_up(self, up: bool) -> None:
        """Simulate the broker connection dropping (False) or coming back (True)."""
        if up and not self.up:
            self._generation += 1
        self.up = up

    def telemetry(self) -> list[Sent]:
        return [m for m in self.messages if m.topic.endswith("/telemetry")]
