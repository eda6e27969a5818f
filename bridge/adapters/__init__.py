"""Payload adapters, one module each, selected by topic filter (``[bridge] routes``).

Adding a format: write ``bridge/adapters/<name>.py`` with a class that has ``name`` and
``adapt(payload, topic_device_id, received_ms) -> list[Adapted]`` raising only ``Rejected``,
add it to ``_BUILDERS`` below, and add its name to :data:`fleetsim.kernel.contract.PayloadFormat`:
the one list of format names, which the config and the registry validate against. This module
refuses to import when its adapters and that list differ.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetsim.bridge.adapters.base import Adapted, Adapter
from fleetsim.bridge.adapters.native import NativeAdapter
from fleetsim.bridge.adapters.senml import SenmlAdapter
from fleetsim.bridge.adapters.tasmota import TasmotaAdapter
from fleetsim.kernel.contract import PAYLOAD_FORMATS

_BUILDERS: dict[str, Callable[[int], Adapter]] = {
    NativeAdapter.name: NativeAdapter,
    SenmlAdapter.name: lambda _max_bytes: SenmlAdapter(),
    TasmotaAdapter.name: lambda _max_bytes: TasmotaAdapter(),
}
"""Adapter name -> factory taking the payload size cap (only the native adapter enforces it)."""

if sorted(_BUILDERS) != sorted(PAYLOAD_FORMATS):
    raise RuntimeError(
        f"bridge adapters {sorted(_BUILDERS)} do not match the contract's payload formats "
        f"{sorted(PAYLOAD_FORMATS)} (fleetsim.kernel.contract.PayloadFormat)"
    )


def build_adapter(fmt: str, max_bytes: int) -> Adapter:
    """The adapter for a configured ``format`` name."""
    try:
        builder = _BUILDERS[fmt]
    except KeyError:
        raise ValueError(f"unknown adapter format {fmt!r}; allowed: {', '.join(PAYLOAD_FORMATS)}") from None
    return builder(max_bytes)


__all__ = [
    "Adapted",
    "Adapter",
    "NativeAdapter",
    "SenmlAdapter",
    "TasmotaAdapter",
    "build_adapter",
]
