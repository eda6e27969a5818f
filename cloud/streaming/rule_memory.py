"""Stuck and drift judged from a loader's memory of each device's newest readings, instead of
``device_rule_state`` (:mod:`.rule_state`).

Why: with 10,000 devices at 5,000 msg/s the table-backed running state cost a merge of 19,000
readings 1.04 s of its 3.4 s in PostgreSQL (building the arrays 525 ms, storing them back 398 ms,
judging 119 ms; ``pg_stat_statements``, bench/ANALYSIS.md): a row version and index entries per
device per merge, to keep twelve readings the writer had just seen. A loader owns its Kafka
partitions, so it can keep them itself: the same twelve readings per device in a dict, judged in
Python with the same arithmetic, and only the onsets (a few per merge) go to PostgreSQL.

The rules and the fast-path conditions are :mod:`.rule_state`'s, so the alerts are the same to
the message (tests/streaming/test_rule_state_sink.py runs all three paths over one stream): a
device is judged here only when its memory holds ``lookback`` readings, every reading of it in
the batch (duplicates included) is newer than the newest remembered, and the oldest remembered
is within :data:`.history_sql.LOOKBACK_SPAN` of the batch's first. Every other device goes the
``sensor_data`` path in the same transaction; its memory is extended with the batch's readings
when they are all newer than the newest remembered, else re-read from ``sensor_data`` afterwards
(:data:`REBUILD_SQL`).

Memory must equal the stored history, so it changes only after the transaction commits
(:meth:`MemoryState.apply`), is dropped whole when a merge fails or the loader's partitions move
(:meth:`MemoryState.clear`), and a device silent for longer than the look-back span is let go.
A freshly started loader judges each device's first reading from ``sensor_data``.
"""

from __future__ import annotations

import csv
import io
import math
import operator
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any, Final

from fleetsim.cloud.streaming.history_sql import DRIFT_MEASUREMENTS, STUCK_MEASUREMENTS
from fleetsim.cloud.streaming.rule_state import MEASUREMENTS

SPAN_US: Final = 86_400_000_000
""":data:`.history_sql.LOOKBACK_SPAN` (1 day) in microseconds (the same bound, checked in Python)."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_NULL: Final = math.nan
"""A missing value in memory. The contract refuses NaN readings, so NaN can stand for NULL; it
compares unequal to everything and turns a sum NaN, which is how NULL behaves in both rules."""

ONSET_COLUMNS: Final = (
    "device_id", "seq", "ts", "fault", *MEASUREMENTS,
    *(f"{m}_{s}" for m in STUCK_MEASUREMENTS for s in ("stuck", "stuck_prev")),
    *(f"{m}_{s}" for m in DRIFT_MEASUREMENTS for s in ("dnew", "dold", "drift", "drift_prev")),
)  # fmt: skip
"""What :func:`.history_sql.onset_alerts_insert` reads from its CTE ``f``, one row per onset."""


def _sql_type(column: str) -> str:
    if column.endswith(("_stuck", "_stuck_prev", "_drift", "_drift_prev")):
        return "boolean"
    return {"device_id": "text", "fault": "text", "seq": "bigint", "ts": "timestamptz"}.get(
        column, "double precision"
    )


STAGE_DDL: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_rule_onsets ("
    + ", ".join(f"{c} {_sql_type(c)}" for c in ONSET_COLUMNS)
    + ") ON COMMIT DELETE ROWS;\n"
    "CREATE TEMP TABLE IF NOT EXISTS stage_rule_known (device_id text) ON COMMIT DELETE ROWS;\n"
    "CREATE TEMP TABLE IF NOT EXISTS stage_rule_prev (device_id text, prev_us bigint)"
    " ON COMMIT DELETE ROWS;\n"
)
"""``stage_rule_onsets``: the onsets memory found, for the shared alert insert.
``stage_rule_known``: devices the ``sensor_data`` path judges but whose memory stays exact
without a re-read (every reading of the batch newer than the newest remembered).
``stage_rule_prev``: per remembered device, its newest stored reading's ``ts`` (microseconds since
the epoch), the predecessor the gap rule (:data:`.history_sql.FLEET_CLOCK_SQL`) would otherwise
probe ``sensor_data`` for; empty for every writer without memory."""

ONSETS_CTE: Final = f"WITH f AS (SELECT {', '.join(ONSET_COLUMNS)} FROM stage_rule_onsets)"  # noqa: S608

_COLS = ", ".join(f"s.{m}" for m in MEASUREMENTS)
REBUILD_SQL: Final = f"""
SELECT b.device_id, h.ts, h.seq, {", ".join(f"h.{m}" for m in MEASUREMENTS)}
FROM (SELECT DISTINCT device_id FROM stage_new_raw
      WHERE device_id NOT IN (SELECT device_id FROM stage_rule_fast)
        AND device_id NOT IN (SELECT device_id FROM stage_rule_known)) b
CROSS JOIN LATERAL (
  SELECT s.ts, s.seq, {_COLS} FROM sensor_data s
  WHERE s.device_id = b.device_id ORDER BY s.ts DESC, s.seq DESC LIMIT %(lookback)s
) h
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""The newest ``lookback`` stored readings of every device the batch added readings to whose memory
it cannot simply extend (not remembered, or a reading not newer than the newest remembered),
newest first: their memory after this merge. Re-reading every device the fast path could not
judge (one with fewer than ``lookback`` readings, every reading of a new fleet's first minutes)
sent up to twelve rows a reading back to Python: slower than the table it replaces."""

_STUCK_IDX: Final = tuple(MEASUREMENTS.index(m) for m in STUCK_MEASUREMENTS)
_DRIFT_IDX: Final = tuple(MEASUREMENTS.index(m) for m in DRIFT_MEASUREMENTS)
_HUMIDITY: Final = MEASUREMENTS.index("humidity")
_ROUNDING: Final = 1e-12
"""Relative bound on the rounding of a mean of a frame's values (n * 2**-53 for n in the tens)."""


def micros(ts: datetime) -> int:
    """A timestamp as integer microseconds since the epoch (exact, totally ordered)."""
    return (ts - _EPOCH) // _US


@dataclass(frozen=True, slots=True)
class Rules:
    """The stuck/drift parameters (:func:`.history_sql.history_params`)."""

    lookback: int
    stuck_n: int
    drift_n: int
    thresholds: tuple[float, ...]
    """Drift threshold per measurement of :data:`.history_sql.DRIFT_MEASUREMENTS`."""
    humidity_bounds: tuple[float, ...]

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Rules:
        return cls(
            lookback=int(p["lookback"]),
            stuck_n=int(p["stuck_n"]),
            drift_n=int(p["drift_n"]),
            thresholds=tuple(float(p[f"drift_threshold_{m}"]) for m in DRIFT_MEASUREMENTS),
            humidity_bounds=tuple(float(b) for b in p["humidity_bounds"]),
        )


@dataclass(slots=True)
class Line:
    """The fields of one ``stage_raw`` line the rules read (texts kept as PostgreSQL will parse them)."""

    device_id: str
    ts: int
    """Microseconds since the epoch."""
    seq: int
    values: tuple[float, ...]
    """:data:`.rule_state.MEASUREMENTS`, NaN for NULL."""
    ts_text: str
    fault: str


@dataclass(slots=True)
class Device:
    """A device's newest readings (at most ``lookback``, oldest first), column by column."""

    ts: list[int]
    """Microseconds since the epoch."""
    cols: tuple[array[float], ...]
    """One ``array('d')`` per :data:`.rule_state.MEASUREMENTS`, NaN for NULL."""
    flags: tuple[bool, ...] | None = None
    """Stuck per :data:`.history_sql.STUCK_MEASUREMENTS`, then drift per
    :data:`.history_sql.DRIFT_MEASUREMENTS`, at the newest reading; None until judged here."""
    runs: tuple[int, ...] | None = None
    """Per stuck measurement, how many readings up to the newest hold its value (0 for NULL),
    at most ``stuck_n``; None until judged here."""


@dataclass
class Plan:
    """What memory judged in one batch, before the merge commits."""

    fast: list[str] = field(default_factory=list)
    """Devices judged here (every other device of the batch goes the ``sensor_data`` path)."""
    known: list[str] = field(default_factory=list)
    """Devices left to the ``sensor_data`` path whose memory is extended without a re-read."""
    onsets: list[list[str]] = field(default_factory=list)
    """Rows of :data:`ONSET_COLUMNS` as COPY CSV fields."""
    updates: dict[str, Device] = field(default_factory=dict)
    """Each judged device's memory once the merge commits."""
    prev: list[tuple[str, int]] = field(default_factory=list)
    """(device, newest stored ``ts`` in microseconds) for each device of :attr:`fast` and
    :attr:`known` whose newest stored reading is within the look-back span of the batch's first:
    the predecessor of the device's first reading in the batch (all of them are newer)."""

    def fast_csv(self) -> bytes:
        return _ids_csv(self.fast)

    def known_csv(self) -> bytes:
        return _ids_csv(self.known)

    def prev_csv(self) -> bytes:
        return "".join(f"{_quoted(d)},{us}\n" for d, us in self.prev).encode()

    def onsets_csv(self) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(self.onsets)
        return buf.getvalue().encode()


def parse_lines(readings: bytes, columns: Sequence[str]) -> list[Line]:
    """The ``stage_raw`` COPY CSV of a batch (``columns`` in order) as :class:`Line` s."""
    i_dev, i_seq, i_ts, i_fault = (columns.index(c) for c in ("device_id", "seq", "ts", "fault"))
    vi = [columns.index(m) for m in MEASUREMENTS]
    text = readings.decode()
    # Spark quotes a field only when it holds a comma, a quote or a line break: none of these
    # fields ever does, but the CSV parser takes over for any line with a quote in it.
    rows = csv.reader(io.StringIO(text)) if '"' in text else (ln.split(",") for ln in text.splitlines())
    out = []
    for f in rows:
        ts = f[i_ts]
        out.append(
            Line(f[i_dev], micros(datetime.fromisoformat(ts)), int(f[i_seq]),
                 tuple(float(f[i]) if f[i] else _NULL for i in vi), ts, f[i_fault])
        )  # fmt: skip
    return out


def _mean(v: array[float], lo: int, hi: int) -> float:
    """Mean of ``v[lo..hi]`` (inclusive), summed oldest first as the SQL paths do (one rounding per
    addition, so the same float); NaN if any is missing."""
    return reduce(operator.add, v[lo : hi + 1]) / float(hi - lo + 1)


class MemoryState:
    """Each device's newest ``lookback`` stored readings."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.devices: dict[str, Device] = {}
        self._newest_seen = 0

    def clear(self) -> None:
        self.devices.clear()

    def plan(self, lines: Iterable[Line]) -> Plan:
        """Judge the devices memory can judge (see the module docstring); the rest are left to
        the ``sensor_data`` path."""
        lookback = self.rules.lookback
        by_dev: dict[str, list[Line]] = {}
        for line in lines:
            by_dev.setdefault(line.device_id, []).append(line)
        plan = Plan()
        for dev, rows in by_dev.items():
            mem = self.devices.get(dev)
            if mem is None:
                continue
            first = min(x.ts for x in rows)
            if first <= mem.ts[-1]:
                continue
            new = rows
            if len(rows) > 1:
                fresh: dict[tuple[int, int], Line] = {}
                for x in rows:
                    fresh.setdefault((x.ts, x.seq), x)  # a duplicate: the first line is the one stored
                new = [fresh[k] for k in sorted(fresh)]
            if mem.ts[-1] >= first - SPAN_US:
                plan.prev.append((dev, mem.ts[-1]))
            if len(mem.ts) >= lookback and mem.ts[0] >= first - SPAN_US:
                plan.fast.append(dev)
                plan.updates[dev] = self._judge(dev, mem, new, plan.onsets)
            else:
                # Too little history (or too old) to judge here, but memory plus these readings is
                # still the stored history: extended, not re-read.
                plan.known.append(dev)
                plan.updates[dev] = _extend(mem, new, lookback)
        return plan

    def _judge(self, dev: str, mem: Device, new: list[Line], onsets: list[list[str]]) -> Device:
        """Judge ``new`` after ``mem`` (the rules of :func:`.rule_state.fast_alerts_sql`), append
        the onsets' rows, and return the device's memory with ``new`` in it.

        ``mem`` holds exactly ``lookback`` readings (the fast path's condition), so each new reading
        shifts the oldest out and is judged at the last position: no copy of the history but the
        shift itself (this runs once per reading at several thousand a second)."""
        r = self.rules
        cols, ts = mem.cols, mem.ts
        last = len(ts) - 1
        runs = (
            list(mem.runs) if mem.runs is not None else [_run(cols[i], last, r.stuck_n) for i in _STUCK_IDX]
        )
        prev = mem.flags if mem.flags is not None else self._flags(cols, last, runs)
        for x in new:
            shifted = []
            for old, v in zip(cols, x.values, strict=True):
                c = old[1:]
                c.append(v)
                shifted.append(c)
            cols = tuple(shifted)
            ts = [*ts[1:], x.ts]
            for k, i in enumerate(_STUCK_IDX):
                v = cols[i][last]
                # Equality is transitive for non-NaN floats, so "equal to each of its stuck_n - 1
                # predecessors" is "the newest stuck_n are one run".
                runs[k] = (
                    min(runs[k] + 1, r.stuck_n) if v == cols[i][last - 1] else (0 if math.isnan(v) else 1)
                )
            now = self._flags(cols, last, runs)
            if now != prev and any(a and not b for a, b in zip(now, prev, strict=True)):
                onsets.append(self._onset_row(dev, x, cols, last, now, prev))
            prev = now
        return Device(ts, cols, prev, tuple(runs))

    def _flags(self, cols: tuple[array[float], ...], p: int, runs: Sequence[int]) -> tuple[bool, ...]:
        """Stuck per stuck measurement (from ``runs``), then drift per drift measurement, at ``p``."""
        r = self.rules
        out = [
            n >= r.stuck_n and (i != _HUMIDITY or cols[i][p] not in r.humidity_bounds)
            for n, i in zip(runs, _STUCK_IDX, strict=True)
        ]
        half = r.drift_n // 2
        for k, i in enumerate(_DRIFT_IDX):
            v = cols[i]
            w = v[p - r.drift_n + 1 : p + 1]
            total = sum(w)
            if math.isnan(total):  # a NULL in the frame: no mean, no drift
                out.append(False)
                continue
            hi, lo = max(w), min(w)
            # Both means lie within [lo, hi] up to a few roundings: a frame whose spread is below
            # the threshold cannot drift, and most frames are decided without the exact means.
            if hi - lo + _ROUNDING * max(abs(hi), abs(lo)) < r.thresholds[k]:
                out.append(False)
                continue
            moved = abs(_mean(v, p - half + 1, p) - _mean(v, p - r.drift_n + 1, p - half))
            out.append(moved > r.thresholds[k])
        return tuple(out)

    def _onset_row(
        self, dev: str, x: Line, cols: tuple[array[float], ...], p: int,
        now: tuple[bool, ...], prev: tuple[bool, ...],
    ) -> list[str]:  # fmt: skip
        r = self.rules
        half = r.drift_n // 2
        row: dict[str, Any] = {"device_id": dev, "seq": x.seq, "ts": x.ts_text, "fault": x.fault}
        row.update(zip(MEASUREMENTS, x.values, strict=True))
        n_stuck = len(_STUCK_IDX)
        for k, m in enumerate(STUCK_MEASUREMENTS):
            row[f"{m}_stuck"], row[f"{m}_stuck_prev"] = now[k], prev[k]
        for k, (m, i) in enumerate(zip(DRIFT_MEASUREMENTS, _DRIFT_IDX, strict=True)):
            row[f"{m}_dnew"] = _mean(cols[i], p - half + 1, p)
            row[f"{m}_dold"] = _mean(cols[i], p - r.drift_n + 1, p - half)
            row[f"{m}_drift"], row[f"{m}_drift_prev"] = now[n_stuck + k], prev[n_stuck + k]
        return [_field(row[c]) for c in ONSET_COLUMNS]

    def apply(self, plan: Plan, rebuilt: Iterable[Sequence[Any]]) -> None:
        """After the merge committed: the judged devices' new memory, and the rebuilt devices'
        (rows of :data:`REBUILD_SQL`, newest first); devices silent for over the span let go."""
        self.devices.update(plan.updates)
        fresh: dict[str, list[Sequence[Any]]] = {}
        for row in rebuilt:
            fresh.setdefault(row[0], []).append(row)
        for dev, rows in fresh.items():
            rows.reverse()
            self.devices[dev] = Device(
                [micros(row[1]) for row in rows],
                tuple(
                    array("d", (_NULL if row[3 + i] is None else row[3 + i] for row in rows))
                    for i in range(len(MEASUREMENTS))
                ),
            )
        newest = max(
            (d.ts[-1] for d in (*plan.updates.values(), *(self.devices[k] for k in fresh))), default=0
        )
        if newest > self._newest_seen + SPAN_US:
            # At most once a (simulated or real) day: let go of the devices memory could not judge.
            self._newest_seen = newest
            cut = newest - SPAN_US
            self.devices = {d: m for d, m in self.devices.items() if m.ts[-1] >= cut}


def _quoted(device_id: str) -> str:
    return '"' + device_id.replace('"', '""') + '"'


def _ids_csv(ids: Iterable[str]) -> bytes:
    return "".join(f"{_quoted(d)}\n" for d in ids).encode()


def _extend(mem: Device, new: list[Line], lookback: int) -> Device:
    """``mem`` with ``new`` (newer, deduplicated, in order) appended, cut to ``lookback``."""
    ts = [*mem.ts, *(x.ts for x in new)][-lookback:]
    cols = []
    for i, old in enumerate(mem.cols):
        c = old + array("d", [x.values[i] for x in new])
        cols.append(c[len(c) - len(ts) :])
    return Device(ts, tuple(cols))


def _run(v: array[float], p: int, cap: int) -> int:
    """How many readings up to ``v[p]`` hold its value (0 if it is NULL), at most ``cap``."""
    cur, n = v[p], 0
    while n < cap and p - n >= 0 and v[p - n] == cur:
        n += 1
    return n


def _field(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)
