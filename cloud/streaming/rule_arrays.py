"""The stuck/drift rules on arrays of many devices at once, for the loader's running state
(:mod:`.rule_memory`): the same arithmetic as the SQL paths (:mod:`.rule_state`,
:mod:`.history_sql`), so the alerts are the same to the message.

Why arrays: judged device by device in Python the rules cost ~10 µs a reading and the line parse
4-7 more, at 10,000 devices more CPU in the loader than the table-backed state saved in
PostgreSQL (bench/ANALYSIS.md). On arrays a batch's readings are judged in one pass per reading
a device has in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fleetsim.cloud.streaming.history_sql import DRIFT_MEASUREMENTS, STUCK_MEASUREMENTS
from fleetsim.cloud.streaming.rule_state import MEASUREMENTS

STUCK_IDX: Final = [MEASUREMENTS.index(m) for m in STUCK_MEASUREMENTS]
DRIFT_IDX: Final = [MEASUREMENTS.index(m) for m in DRIFT_MEASUREMENTS]
HUMIDITY_K: Final = STUCK_MEASUREMENTS.index("humidity")


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
class Slab:
    """Rows of remembered devices: their newest readings right-aligned (the newest last; the
    unused left part 0 and NaN) and the rules' running figures at the newest."""

    ts: npt.NDArray[np.int64]
    """(rows, lookback): microseconds since the epoch."""
    vals: npt.NDArray[np.float64]
    """(rows, measurements, lookback): :data:`.rule_state.MEASUREMENTS`, NaN for NULL."""
    count: npt.NDArray[np.int64]
    """Readings held (at most lookback)."""
    runs: npt.NDArray[np.int64]
    """Per stuck measurement, how many readings up to the newest hold its value (0 for NULL), at
    most ``stuck_n``; valid where :attr:`judged`."""
    flags: npt.NDArray[np.bool_]
    """Stuck per stuck measurement, then drift per drift measurement, at the newest; valid where
    :attr:`judged`."""
    judged: npt.NDArray[np.bool_]
    """Whether :attr:`runs` and :attr:`flags` hold (the row was last judged here, not rebuilt or
    extended)."""

    @classmethod
    def empty(cls, rows: int, lookback: int) -> Slab:
        return cls(
            np.zeros((rows, lookback), np.int64),
            np.full((rows, len(MEASUREMENTS), lookback), np.nan),
            np.zeros(rows, np.int64),
            np.zeros((rows, len(STUCK_IDX)), np.int64),
            np.zeros((rows, len(STUCK_IDX) + len(DRIFT_IDX)), np.bool_),
            np.zeros(rows, np.bool_),
        )

    def take(self, rows: npt.NDArray[np.intp]) -> Slab:
        """A copy of ``rows``."""
        return Slab(*(a[rows] for a in self.fields()))

    def put(self, rows: npt.NDArray[np.intp], other: Slab) -> None:
        for mine, theirs in zip(self.fields(), other.fields(), strict=True):
            mine[rows] = theirs

    def grown(self) -> Slab:
        """Twice the rows, the new ones empty."""
        more = Slab.empty(len(self.count), self.ts.shape[1])
        return Slab(*(np.concatenate([a, b]) for a, b in zip(self.fields(), more.fields(), strict=True)))

    def fields(self) -> tuple[npt.NDArray[Any], ...]:
        return (self.ts, self.vals, self.count, self.runs, self.flags, self.judged)


def seq_sum(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row sums of ``w`` added oldest first, one rounding per addition as the SQL paths do (numpy's
    own sum adds pairwise, a different float)."""
    total = w[:, 0].copy()
    for j in range(1, w.shape[1]):
        total += w[:, j]
    return total


def initial_runs(vals: npt.NDArray[np.float64], rules: Rules) -> npt.NDArray[np.int64]:
    """Per stuck measurement, how many readings up to the newest hold its value (0 for NULL),
    at most ``stuck_n``, of full rows."""
    v = vals[:, STUCK_IDX, :]
    same = v[:, :, 1:] == v[:, :, :-1]
    trailing = np.cumprod(same[:, :, ::-1], axis=2).sum(axis=2)
    return np.where(np.isnan(v[:, :, -1]), 0, np.minimum(trailing + 1, rules.stuck_n))


def flags_of(
    vals: npt.NDArray[np.float64], runs: npt.NDArray[np.int64], rules: Rules
) -> npt.NDArray[np.bool_]:
    """Stuck per stuck measurement (from ``runs``), then drift per drift measurement, at the
    newest reading of full rows."""
    r = rules
    stuck = runs >= r.stuck_n
    stuck[:, HUMIDITY_K] &= ~np.isin(vals[:, STUCK_IDX[HUMIDITY_K], -1], r.humidity_bounds)
    drift = [np.abs(a - b) > t for (a, b), t in zip(means(vals, rules), r.thresholds, strict=True)]
    return np.column_stack([stuck, *drift])


def means(
    vals: npt.NDArray[np.float64], rules: Rules
) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Per drift measurement, the mean of the newest half of the frame and of the older half
    (NaN when a value is missing: then no drift, as in SQL)."""
    n, half = rules.drift_n, rules.drift_n // 2
    out = []
    for i in DRIFT_IDX:
        w = vals[:, i, -n:]
        out.append((seq_sum(w[:, n - half :]) / float(half), seq_sum(w[:, : n - half]) / float(n - half)))
    return out
