"""Native contract v1 payloads: validated with the contract, forwarded byte for byte."""

from __future__ import annotations

from fleetsim.bridge.adapters.base import Adapted
from fleetsim.kernel.contract import MAX_PAYLOAD_BYTES, validate


class NativeAdapter:
    """``sensors/<id>/telemetry``: the payload already is the contract.

    Forwarding the original bytes (no re-encode) keeps the record identical to what the device
    signed off and saves the encode on the hot path. Validation is the contract's native path
    (:func:`fleetsim.kernel.contract.validate`: msgspec, falling back to the Python validator for
    refused payloads so reasons and details stay the reference's); the :class:`Reading` is only
    built if someone asks ``Adapted.reading``.
    """

    name = "native"

    def __init__(self, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_bytes = max_bytes

    def adapt(self, payload: bytes, topic_device_id: str | None, received_ms: int) -> list[Adapted]:
        wire = validate(payload, topic_device_id=topic_device_id, max_bytes=self.max_bytes)
        return [Adapted(wire.device_id, payload, wire=wire)]
