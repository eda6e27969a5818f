"""The device-registry hook: is a device id known, and is it enabled?

The registry (``fleetsim.registry``, another component) plugs in by implementing
:class:`DeviceDirectory`. ``status()`` runs on the bridge's hot path for every reading, so an
implementation must answer from memory (a cache refreshed in the background), never by a
database round trip. The default, :class:`AcceptAll`, knows every id.

What happens to an id the directory does not know is configuration (``bridge.unknown_device``):
``accept`` forwards it and calls :meth:`DeviceDirectory.note_unknown` (the registry can then
auto-register it as unplaced); ``deadletter`` refuses it with reason ``unknown_device``.
A *disabled* device is always refused (``unknown_device``, detail ``disabled``).
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class DeviceStatus(Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    UNKNOWN = "unknown"


class DeviceDirectory(Protocol):
    def status(self, device_id: str) -> DeviceStatus:
        """Answer from memory; must not block or raise."""
        ...

    def note_unknown(self, device_id: str) -> None:
        """Called (hot path, must not block) when an unknown id was accepted."""
        ...


class AcceptAll:
    """Default directory: every device is known and enabled."""

    def status(self, device_id: str) -> DeviceStatus:
        return DeviceStatus.ENABLED

    def note_unknown(self, device_id: str) -> None:
        return None


class StaticDirectory:
    """A fixed set of known ids (and disabled ones): for tests and small deployments."""

    def __init__(self, enabled: set[str], disabled: set[str] | None = None) -> None:
        self.enabled = frozenset(enabled)
        self.disabled = frozenset(disabled or ())
        self.unknown_seen: set[str] = set()

    def status(self, device_id: str) -> DeviceStatus:
        if device_id in self.disabled:
            return DeviceStatus.DISABLED
        return DeviceStatus.ENABLED if device_id in self.enabled else DeviceStatus.UNKNOWN

    def note_unknown(self, device_id: str) -> None:
        self.unknown_seen.add(device_id)
