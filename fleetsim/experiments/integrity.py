"""Data integrity from seq numbers: what each device made, and where along the path it went missing.

Per device, with ``S`` = the seqs it made (``first_seq..last_seq``), ``P`` = published (handed to MQTT,
ledger), ``K`` = distinct seqs in the Kafka telemetry topic, ``D`` = distinct seqs in
``sensor_data``:

- ``dropped_overflow`` / ``dropped_dropout`` / ``dropped_shutdown``: lost at the edge on purpose
  (full store-and-forward buffer, injected dropout, unsent at shutdown) -- from the ledger;
- ``lost_mqtt_kafka`` = ``|P - K|``: published but never reached Kafka (MQTT broker or bridge);
- ``dropped_watermark``: in Kafka, not in ``sensor_data``, and older than the running maximum
  event time minus the watermark when it arrived (the job's lateness policy);
- ``lost_kafka_db``: the rest of ``K - D`` (streaming job or sink);
- ``lost`` = ``|S - D|``: everything the device made that is not in ``sensor_data``; equals the
  sum of the parts above when Kafka was scanned (``unaccounted`` holds any difference);
- ``duplicated_*``: extra copies beyond the first (sent on purpose, in Kafka, in the table);
- ``late``: rows the job stored but flagged ``late``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SentLog:
    """A device's authoritative ledger ``sent`` record."""

    published: tuple[tuple[int, int], ...]
    """Inclusive seq ranges handed to the MQTT client."""
    dropped: dict[str, tuple[tuple[int, int], ...]]
    """Reason (``overflow``, ``dropout``, ``shutdown``) -> inclusive seq ranges."""
    duplicates: int
    """Readings the device sent twice on purpose."""
    last_seq: int
    """Highest seq made (-1: none)."""

    @property
    def first_seq(self) -> int:
        """Lowest seq made: the run's seq base (every made seq is published or dropped)."""
        starts = [a for a, _ in self.published]
        starts += [a for ranges in self.dropped.values() for a, _ in ranges]
        return min(starts, default=self.last_seq + 1)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> SentLog:
        return cls(
            tuple((int(a), int(b)) for a, b in rec.get("published", [])),
            {k: tuple((int(a), int(b)) for a, b in v) for k, v in (rec.get("dropped") or {}).items()},
            int(rec.get("duplicates", 0)),
            int(rec.get("last_seq", -1)),
        )


@dataclass(slots=True)
class StageSeqs:
    """Seqs of one device observed at one stage (Kafka topic or table)."""

    counts: Counter[int] = field(default_factory=Counter)
    """seq -> copies seen."""
    late: set[int] = field(default_factory=set)
    """Seqs judged late at this stage (Kafka: behind the watermark; table: ``late`` flag)."""


@dataclass(slots=True)
class DeviceIntegrity:
    device_id: str
    made: int = 0
    """Readings made (``last_seq - first_seq + 1``)."""
    published: int = 0
    dropped_overflow: int = 0
    dropped_dropout: int = 0
    dropped_shutdown: int = 0
    in_kafka: int | None = None
    """Distinct seqs in Kafka; None when Kafka was not scanned."""
    lost_mqtt_kafka: int | None = None
    dropped_watermark: int | None = None
    lost_kafka_db: int | None = None
    in_db: int = 0
    lost: int = 0
    unaccounted: int | None = None
    """``lost`` minus the sum of its explained parts (0 when everything is accounted for)."""
    duplicated_sent: int = 0
    duplicated_kafka: int | None = None
    duplicated_db: int = 0
    late: int = 0
    unexpected: int = 0
    """Seqs in the table the device never published (should be 0)."""


def _expand(ranges: Iterable[tuple[int, int]]) -> set[int]:
    out: set[int] = set()
    for a, b in ranges:
        out.update(range(a, b + 1))
    return out


def device_integrity(
    device_id: str, sent: SentLog | None, kafka: StageSeqs | None, db: StageSeqs
) -> DeviceIntegrity:
    """The integrity record of one device (see the module docstring)."""
    r = DeviceIntegrity(device_id)
    if sent:
        first, last = sent.first_seq, sent.last_seq
    else:  # no ledger record: judge by what was stored
        first, last = (min(db.counts), max(db.counts)) if db.counts else (0, -1)
    # Seqs count from the run's start instant in epoch ms, not from 0: only this run's span.
    made = set(range(first, last + 1))
    published = _expand(sent.published) if sent else set(db.counts)
    r.made, r.published = len(made), len(published)
    if sent:
        r.dropped_overflow = len(_expand(sent.dropped.get("overflow", ())))
        r.dropped_dropout = len(_expand(sent.dropped.get("dropout", ())))
        r.dropped_shutdown = len(_expand(sent.dropped.get("shutdown", ())))
        r.duplicated_sent = sent.duplicates
    # Another process publishing the same ids (a demo simulator beside the run) stores other seqs.
    in_db = {s for s in db.counts if first <= s <= last} if sent else set(db.counts)
    r.in_db = len(in_db & made)
    r.unexpected = len(in_db - published)
    r.lost = len(made - in_db)
    r.duplicated_db = sum(c - 1 for c in db.counts.values() if c > 1)
    r.late = len(db.late & in_db)
    edge = r.dropped_overflow + r.dropped_dropout + r.dropped_shutdown
    if kafka is not None:
        in_k = set(kafka.counts)
        r.in_kafka = len(in_k)
        r.lost_mqtt_kafka = len(published - in_k)
        missing_db = in_k - in_db
        r.dropped_watermark = len(missing_db & kafka.late)
        r.lost_kafka_db = len(missing_db) - r.dropped_watermark
        r.duplicated_kafka = sum(c - 1 for c in kafka.counts.values() if c > 1)
        r.unaccounted = r.lost - (edge + r.lost_mqtt_kafka + r.dropped_watermark + r.lost_kafka_db)
    return r


def score_integrity(
    device_ids: Iterable[str],
    sent: Mapping[str, SentLog],
    kafka: Mapping[str, StageSeqs] | None,
    db: Mapping[str, StageSeqs],
) -> list[DeviceIntegrity]:
    """Integrity per device, sorted by id (devices seen anywhere are included)."""
    ids = set(device_ids) | set(sent) | set(db) | (set(kafka) if kafka else set())
    return [
        device_integrity(
            d, sent.get(d), None if kafka is None else kafka.get(d, StageSeqs()), db.get(d, StageSeqs())
        )
        for d in sorted(ids)
    ]


TOTAL_FIELDS = (
    "made", "published", "dropped_overflow", "dropped_dropout", "dropped_shutdown", "in_kafka",
    "lost_mqtt_kafka", "dropped_watermark", "lost_kafka_db", "in_db", "lost", "unaccounted",
    "duplicated_sent", "duplicated_kafka", "duplicated_db", "late", "unexpected",
)  # fmt: skip


def totals(rows: Iterable[DeviceIntegrity]) -> dict[str, int | None]:
    """Fleet sums (None for a stage that was not observed)."""
    out: dict[str, int | None] = dict.fromkeys(TOTAL_FIELDS, 0)
    for r in rows:
        for name in TOTAL_FIELDS:
            v = getattr(r, name)
            cur = out[name]
            out[name] = None if v is None or cur is None else cur + v
    return out


def as_dicts(rows: Iterable[DeviceIntegrity]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
