"""Stuck and drift judged from a loader's memory of each device's newest readings, instead of
``device_rule_state`` (:mod:`.rule_state`).

Why: with 10,000 devices at 5,000 msg/s the table-backed running state cost a merge of 19,000
readings 1.04 s of its 3.4 s in PostgreSQL (building the arrays 525 ms, storing them back 398 ms,
judging 119 ms; ``pg_stat_statements``, bench/ANALYSIS.md): a row version and index entries per
device per merge, to keep twelve readings the writer had just seen. A loader owns its Kafka
partitions, so it can keep them itself: the same twelve readings per device, in rows of numpy
arrays (a device's slot; :class:`.rule_arrays.Slab`), judged for all the batch's devices at once
with the same arithmetic (:mod:`.rule_arrays`), and only the onsets (a few per merge) go to
PostgreSQL. The batch's lines are read by Arrow (:mod:`.reading_columns`). Judged device by device
in Python (the first version) the writer spent 29-39 µs a reading at 10,000 devices; now ~3.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fleetsim.cloud.streaming.history_sql import DRIFT_MEASUREMENTS, STUCK_MEASUREMENTS
from fleetsim.cloud.streaming.reading_columns import Readings
from fleetsim.cloud.streaming.rule_arrays import (
    STUCK_IDX,
    Rules,
    Slab,
    flags_of,
    initial_runs,
    means,
)
from fleetsim.cloud.streaming.rule_state import MEASUREMENTS

SPAN_US: Final = 86_400_000_000
""":data:`.history_sql.LOOKBACK_SPAN` (1 day) in microseconds (the same bound, checked in Python)."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)

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

_NEVER: Final = np.iinfo(np.int64).max


def micros(ts: datetime) -> int:
    """A timestamp as integer microseconds since the epoch (exact, totally ordered)."""
    return (ts - _EPOCH) // _US


def _iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()


@dataclass
class Plan:
    """What memory judged in one batch, before the merge commits."""

    fast: list[str] = field(default_factory=list)
    """Devices judged here (every other device of the batch goes the ``sensor_data`` path)."""
    known: list[str] = field(default_factory=list)
    """Devices left to the ``sensor_data`` path whose memory is extended without a re-read."""
    onsets: list[list[str]] = field(default_factory=list)
    """Rows of :data:`ONSET_COLUMNS` as COPY CSV fields."""
    prev: list[tuple[str, int]] = field(default_factory=list)
    """(device, newest stored ``ts`` in microseconds) for each device of :attr:`fast` and
    :attr:`known` whose newest stored reading is within the look-back span of the batch's first:
    the predecessor of the device's first reading in the batch (all of them are newer)."""
    devices: int = 0
    """Distinct devices of the batch."""
    generation: int | None = None
    """The memory's :attr:`MemoryState.generation` when planned (None: a plan of rebuilt devices
    only)."""
    slots: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))
    """Memory slots of the :attr:`fast` and :attr:`known` devices."""
    after: Slab | None = None
    """Their rows once the merge commits (:meth:`MemoryState.apply`)."""

    @property
    def all_fast(self) -> bool:
        """Every device of the batch judged here: the ``sensor_data`` path has nothing to judge or
        re-read, so the merge skips it (and the device lists it would read)."""
        return len(self.fast) == self.devices

    def fast_csv(self) -> bytes:
        return _csv(((d,) for d in self.fast), quote_text=True)

    def known_csv(self) -> bytes:
        return _csv(((d,) for d in self.known), quote_text=True)

    def prev_csv(self) -> bytes:
        return _csv(self.prev, quote_text=True)

    def onsets_csv(self) -> bytes:
        # Minimal quoting: an empty unquoted field is COPY's NULL (a missing value, a mean of one).
        return _csv(self.onsets, quote_text=False)


class MemoryState:
    """Each remembered device's newest stored readings (at most ``lookback``), in slots of arrays:
    a slot's row holds them right-aligned (the newest last), so a new reading is one shift of
    every judged row at once, whether the device is judged or only extended."""

    def __init__(self, rules: Rules, capacity: int = 1024) -> None:
        self.rules = rules
        self._capacity = capacity
        self.generation = 0
        self.clear()

    def clear(self) -> None:
        """Forget every device (a failed merge, the loader's partitions moved)."""
        n, big_l = self._capacity, self.rules.lookback
        self._slot: dict[str, int] = {}
        self._free = list(range(n - 1, -1, -1))
        self._m = Slab.empty(n, big_l)
        self._newest_seen = 0
        self.generation += 1

    def __len__(self) -> int:
        return len(self._slot)

    def history(self, device: str) -> tuple[list[int], list[list[float]]] | None:
        """A remembered device's readings, oldest first: their ``ts`` (µs) and, per
        :data:`.rule_state.MEASUREMENTS`, their values (NaN for NULL); None when not remembered."""
        s = self._slot.get(device)
        if s is None:
            return None
        n = int(self._m.count[s])
        return self._m.ts[s, -n:].tolist(), [v[-n:].tolist() for v in self._m.vals[s]]

    def plan(self, batch: Readings) -> Plan:
        """Judge the devices memory can judge (see the module docstring); the rest are left to
        the ``sensor_data`` path."""
        big_l = self.rules.lookback
        slot_of = np.fromiter((self._slot.get(d, -1) for d in batch.devices), np.intp, len(batch.devices))
        # Sorted by device, time, seq; stable, so of two identical (ts, seq) the batch's first stays
        # first, and it is the one the insert stores (the other conflicts).
        order = np.lexsort((batch.seq, batch.ts, batch.device))
        dev, ts, seq = batch.device[order], batch.ts[order], batch.seq[order]
        step = np.ones(len(order), np.bool_)
        step[1:] = (dev[1:] != dev[:-1]) | (ts[1:] != ts[:-1]) | (seq[1:] != seq[:-1])
        rows = order[step]  # the batch's distinct readings, by device and time
        dev = batch.device[rows]
        starts = np.flatnonzero(np.r_[True, dev[1:] != dev[:-1]])
        group_dev = dev[starts]
        per_dev = np.diff(np.r_[starts, len(rows)])
        first = batch.ts[rows[starts]]
        slots = slot_of[group_dev]
        safe = np.maximum(slots, 0)
        m = self._m
        newest = np.where(slots >= 0, m.ts[safe, big_l - 1], _NEVER)
        # Remembered, and every reading of the batch newer than the newest remembered.
        eligible = first > newest
        fast = eligible & (m.count[safe] >= big_l) & (m.ts[safe, 0] >= first - SPAN_US)
        e = np.flatnonzero(eligible)
        plan = Plan(devices=len(group_dev), generation=self.generation, slots=slots[e])
        names = batch.devices
        plan.fast = [names[d] for d in group_dev[e[fast[e]]]]
        plan.known = [names[d] for d in group_dev[e[~fast[e]]]]
        near = e[newest[e] >= first[e] - SPAN_US]
        plan.prev = list(zip([names[d] for d in group_dev[near]], newest[near].tolist(), strict=True))
        if not len(e):
            return plan
        self._advance(plan, batch, fast[e], rows, starts[e], per_dev[e])
        return plan

    def _advance(
        self,
        plan: Plan,
        batch: Readings,
        fast: npt.NDArray[np.bool_],
        rows: npt.NDArray[np.intp],
        starts: npt.NDArray[np.intp],
        per_dev: npt.NDArray[np.intp],
    ) -> None:
        """The eligible devices' rows after the batch, into ``plan``; onsets of the fast ones.
        Round j takes every device's j-th new reading at once."""
        r, big_l, s = self.rules, self.rules.lookback, plan.slots
        rows_after = self._m.take(s)
        ts, vals, count, runs, flags = (
            rows_after.ts,
            rows_after.vals,
            rows_after.count,
            rows_after.runs,
            rows_after.flags,
        )
        fresh = np.flatnonzero(fast & ~rows_after.judged)
        if len(fresh):
            # First judged here (rebuilt or extended before): the run and flags at the newest.
            runs[fresh] = initial_runs(vals[fresh], self.rules)
            flags[fresh] = flags_of(vals[fresh], runs[fresh], self.rules)
        for j in range(int(per_dev.max())):
            a = np.flatnonzero(per_dev > j)
            src = rows[starts[a] + j]
            ts[a, :-1] = ts[a, 1:]
            ts[a, -1] = batch.ts[src]
            vals[a, :, :-1] = vals[a, :, 1:]
            vals[a, :, -1] = batch.values[src]
            count[a] = np.minimum(count[a] + 1, big_l)
            f = a[fast[a]]
            if not len(f):
                continue
            stuck = vals[f][:, STUCK_IDX, :]
            new, before = stuck[:, :, -1], stuck[:, :, -2]
            # Equality is transitive for non-NaN floats, so "equal to each of its stuck_n - 1
            # predecessors" is "the newest stuck_n are one run".
            run = np.where(new == before, np.minimum(runs[f] + 1, r.stuck_n), np.where(np.isnan(new), 0, 1))
            now = flags_of(vals[f], run, self.rules)
            for i in np.flatnonzero((now & ~flags[f]).any(axis=1)):
                plan.onsets.append(
                    self._onset_row(batch, int(rows[starts[f[i]] + j]), vals[f[i]], now[i], flags[f[i]])
                )
            runs[f], flags[f] = run, now
        rows_after.judged[:] = fast
        plan.after = rows_after

    def _onset_row(
        self, batch: Readings, src: int, vals: npt.NDArray[np.float64],
        now: npt.NDArray[np.bool_], prev: npt.NDArray[np.bool_],
    ) -> list[str]:  # fmt: skip
        fault = batch.fault[src].as_py()
        row: dict[str, Any] = {
            "device_id": batch.devices[batch.device[src]],
            "seq": int(batch.seq[src]),
            "ts": _iso(int(batch.ts[src])),
            "fault": fault or "",
        }
        row.update(zip(MEASUREMENTS, vals[:, -1].tolist(), strict=True))
        n_stuck = len(STUCK_IDX)
        for k, m in enumerate(STUCK_MEASUREMENTS):
            row[f"{m}_stuck"], row[f"{m}_stuck_prev"] = bool(now[k]), bool(prev[k])
        for k, (m, (dnew, dold)) in enumerate(
            zip(DRIFT_MEASUREMENTS, means(vals[None], self.rules), strict=True)
        ):
            row[f"{m}_dnew"], row[f"{m}_dold"] = float(dnew[0]), float(dold[0])
            row[f"{m}_drift"], row[f"{m}_drift_prev"] = bool(now[n_stuck + k]), bool(prev[n_stuck + k])
        return [_field(row[c]) for c in ONSET_COLUMNS]

    def apply(self, plan: Plan, rebuilt: Iterable[Sequence[Any]]) -> None:
        """After the merge committed: the judged and extended devices' new rows, and the rebuilt
        devices' (rows of :data:`REBUILD_SQL`, newest first); devices silent for over the span let
        go. A plan made before :meth:`clear` is ignored (its slots may hold other devices now)."""
        if plan.generation not in (None, self.generation):
            return
        m, after = self._m, plan.after
        if after is not None:
            m.put(plan.slots, after)
        fresh: dict[str, list[Sequence[Any]]] = {}
        for row in rebuilt:
            fresh.setdefault(row[0], []).append(row)
        newest = int(after.ts[:, -1].max()) if after is not None and len(after.count) else 0
        for dev, rows in fresh.items():
            slot = self._slot.get(dev)
            if slot is None:
                slot = self._take(dev)
                m = self._m  # grown, perhaps
            rows.reverse()
            n = len(rows)
            m.ts[slot] = 0
            m.ts[slot, -n:] = [micros(row[1]) for row in rows]
            m.vals[slot] = np.nan
            m.vals[slot, :, -n:] = np.array(
                [[np.nan if v is None else v for v in row[3:]] for row in rows], np.float64
            ).T
            m.count[slot], m.judged[slot] = n, False
            newest = max(newest, int(m.ts[slot, -1]))
        if newest > self._newest_seen + SPAN_US:
            # At most once a (simulated or real) day: let go of devices silent for the span.
            self._newest_seen = newest
            for dev, slot in list(self._slot.items()):
                if m.ts[slot, -1] < newest - SPAN_US:
                    self._release(dev, slot)

    def _take(self, dev: str) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slot[dev] = slot
        return slot

    def _release(self, dev: str, slot: int) -> None:
        del self._slot[dev]
        self._m.count[slot], self._m.judged[slot] = 0, False
        self._free.append(slot)

    def _grow(self) -> None:
        n = len(self._m.count)
        self._m = self._m.grown()
        self._free += range(2 * n - 1, n - 1, -1)


def _csv(rows: Iterable[Sequence[Any]], *, quote_text: bool) -> bytes:
    """COPY CSV of ``rows``; ``quote_text``: every text field quoted (numbers never)."""
    buf = io.StringIO()
    if quote_text:
        csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    else:
        csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def _field(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)
