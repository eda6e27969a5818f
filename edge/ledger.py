"""Ground truth: what was injected and what was sent, as JSON lines.

Record types (the ``record`` key), each one line:

- ``fault``: ``{"record":"fault","device":..,"fault":..,"start":ts,"end":ts,"params":{..},
  "source":"schedule|control|api","counters":{..},"truncated":bool}``, written when a fault
  ends (``truncated`` when the run stopped while it was active). Counters depend on the kind:
  ``buffered``, ``dropped_overflow``, ``dropped``, ``duplicates``, ``spikes``.
- ``event``: ``{"record":"event","device":..,"event":"battery_low|battery_depleted|
  battery_replaced|killed|revived","ts":ts}``.
- ``sent``: per device, cumulative: ``{"record":"sent","device":..,"published":[[a,b],..],
  "dropped":{"overflow":[[a,b]],"dropout":[..],"shutdown":[..]},"duplicates":n,"last_seq":n,
  "at":ts}``. Seq ranges are inclusive. Written periodically for devices that changed and at the
  end; the LAST ``sent`` line of a device is authoritative. "Published" means handed to the MQTT
  client; a graceful stop waits until the broker acknowledged every QoS 1 message.
- ``run``: first and last line, with the seed, start instant, fleet size and totals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any


class SeqRanges:
    """Inclusive ranges of integers, appended in (mostly) increasing order; compact for runs."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def add(self, n: int) -> None:
        r = self.ranges
        if r and r[-1][1] + 1 == n:
            r[-1][1] = n
        elif r and r[-1][0] <= n <= r[-1][1]:
            return
        else:
            r.append([n, n])

    def count(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)

    def __contains__(self, n: int) -> bool:
        return any(a <= n <= b for a, b in self.ranges)


class SeqLog:
    """What one device sent and what it lost on purpose (dropout) or by policy (overflow)."""

    __slots__ = ("dirty", "dropped", "duplicates", "last_seq", "published")

    def __init__(self) -> None:
        self.published = SeqRanges()
        self.dropped: dict[str, SeqRanges] = {}
        self.duplicates = 0
        self.last_seq = -1
        self.dirty = False

    def sent(self, seq: int) -> None:
        self.published.add(seq)
        self.dirty = True

    def drop(self, reason: str, seq: int) -> None:
        ranges = self.dropped.get(reason)
        if ranges is None:
            ranges = self.dropped[reason] = SeqRanges()
        ranges.add(seq)
        self.dirty = True

    def as_record(self, device_id: str, at: str) -> dict[str, Any]:
        return {
            "record": "sent",
            "device": device_id,
            "published": self.published.ranges,
            "dropped": {k: v.ranges for k, v in sorted(self.dropped.items())},
            "duplicates": self.duplicates,
            "last_seq": self.last_seq,
            "at": at,
        }


class Ledger:
    """Append-only JSON-lines writer (one process, one file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")
        self.records: list[dict[str, Any]] | None = [] if path is None else None
        """In-memory copy when there is no file (unit tests)."""

    def write(self, record: dict[str, Any]) -> None:
        if self.records is not None:
            self.records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """All records of a ledger file (for experiments, reliability checks and tests)."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def last_sent(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The authoritative ``sent`` record per device."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("record") == "sent":
            out[r["device"]] = r
    return out
