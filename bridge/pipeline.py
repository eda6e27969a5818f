"""The hot-path decision for one MQTT message: forward these records, or dead-letter it and why.

Pure logic (no I/O): :class:`Processor` never raises. Order of checks: size cap (before any
parsing), route, adapter (UTF-8, strict JSON, types, ranges, topic id vs payload id), then the
device directory. Anything unexpected inside an adapter is still a dead-letter record
(``unsupported_format``, flagged ``internal``) rather than a crash or a silent drop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fleetsim.bridge.adapters import Adapted
from fleetsim.bridge.directory import AcceptAll, DeviceDirectory, DeviceStatus
from fleetsim.bridge.routing import Router
from fleetsim.kernel.contract import Rejected, RejectReason, is_valid_device_id

log = logging.getLogger("fleetsim.bridge")


@dataclass(slots=True)
class Forward:
    """Valid: send ``records`` to the telemetry topic."""

    fmt: str
    """Adapter name (``format`` header)."""
    records: list[Adapted]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Invalid: send the original bytes to the dead-letter topic."""

    reason: RejectReason
    detail: str
    """Human-readable explanation (``detail`` header), at most ~200 characters."""
    device_id: str | None
    """Device id from the topic when it is a valid id (the record key), else None."""
    fmt: str
    """Adapter that refused it, or ``""`` when no route matched."""
    internal: bool = False
    """True when an adapter raised something other than Rejected (a bug worth a log line)."""


Outcome = Forward | DeadLetter


class Processor:
    """Validates and adapts messages. Never raises."""

    def __init__(
        self,
        router: Router,
        max_payload: int,
        directory: DeviceDirectory | None = None,
        unknown_device: str = "accept",
    ) -> None:
        self.router = router
        self.max_payload = max_payload
        self.directory: DeviceDirectory = directory if directory is not None else AcceptAll()
        self.deadletter_unknown = unknown_device == "deadletter"
        # The default directory knows everybody: skip the per-record calls entirely.
        self._check_directory = not isinstance(self.directory, AcceptAll)
        self._key_ids: dict[str, str | None] = {}
        """Topic device id -> itself if it is a valid id (the record key), else None (cached)."""

    def process(self, topic: str, payload: bytes, received_ms: int) -> Outcome:
        resolved = self.router.resolve(topic)
        if resolved is None:
            return DeadLetter(RejectReason.UNSUPPORTED_FORMAT, "no route for topic", None, "")
        route, topic_id = resolved
        if topic_id is None:
            key_id = None
        else:
            try:
                key_id = self._key_ids[topic_id]
            except KeyError:
                key_id = self._key_id(topic_id)
        fmt = route.adapter.name
        if len(payload) > self.max_payload:
            return DeadLetter(
                RejectReason.TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}", key_id, fmt
            )
        try:
            records = route.adapter.adapt(payload, topic_id, received_ms)
        except Rejected as exc:
            return DeadLetter(exc.reason, exc.detail[:200], key_id, fmt)
        except Exception as exc:
            log.exception("adapter %s failed on a message from %s", fmt, topic)
            detail = f"adapter error {type(exc).__name__}: {exc}"[:200]
            return DeadLetter(RejectReason.UNSUPPORTED_FORMAT, detail, key_id, fmt, internal=True)
        if self._check_directory:
            refused = self._directory_verdict(records)
            if refused is not None:
                return DeadLetter(RejectReason.UNKNOWN_DEVICE, refused, key_id, fmt)
        return Forward(fmt, records)

    def _key_id(self, topic_id: str) -> str | None:
        if len(self._key_ids) >= 200_000:
            self._key_ids.clear()  # bounded under a flood of distinct topics
        key = self._key_ids[topic_id] = topic_id if is_valid_device_id(topic_id) else None
        return key

    def _directory_verdict(self, records: list[Adapted]) -> str | None:
        for rec in records:
            try:
                status = self.directory.status(rec.device_id)
            except Exception:
                log.exception("device directory failed; treating %s as unknown", rec.device_id)
                status = DeviceStatus.UNKNOWN
            if status is DeviceStatus.DISABLED:
                return f"device {rec.device_id} is disabled"
            if status is DeviceStatus.UNKNOWN:
                if self.deadletter_unknown:
                    return f"device {rec.device_id} is not in the registry"
                try:
                    self.directory.note_unknown(rec.device_id)
                except Exception:
                    log.exception("device directory note_unknown failed for %s", rec.device_id)
        return None
