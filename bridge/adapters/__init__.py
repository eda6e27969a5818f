"""Payload adapters, one module each, selected by topic filter (``[bridge] routes``).

Adding a format: write ``bridge/adapters/<name>.py`` with a class that has ``name`` and
``adapt(payload, topic_device_id, received_ms) -> list[Adapted]`` raising only ``Rejected``,
register it in :func:`build_adapter`, and add the name to ``AdapterRoute.format`` in the config.
"""

from __future__ import annotations

from fleetsim.bridge.adapters.base import Adapted, Adapter
from fleetsim.bridge.adapters.native import NativeAdapter
from fleetsim.bridge.adapters.senml import SenmlAdapter
from fleetsim.bridge.adapters.tasmota import TasmotaAdapter

FORMATS: tuple[str, ...] = ("native", "senml", "tasmota")


def build_adapter(fmt: str, max_bytes: int) -> Adapter:
    """The adapter for a configured ``format`` name."""
    if fmt == "native":
        return NativeAdapter(max_bytes)
    if fmt == "senml":
        return SenmlAdapter()
    if fmt == "tasmota":
        return TasmotaAdapter()
    raise ValueError(f"unknown adapter format {fmt!r}; allowed: {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "Adapted",
    "Adapter",
    "NativeAdapter",
    "SenmlAdapter",
    "TasmotaAdapter",
    "build_adapter",
]
