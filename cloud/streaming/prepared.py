"""Server-side prepared statements for the merges a writer session repeats (one cache per connection).

A loader merges every ~50 ms, and each merge runs about fifteen statements whose parameters are
the configuration's (thresholds, intervals), the same for the life of the sink. PostgreSQL planned
them all again on every merge: ~5 ms of planning in a 20 ms merge of five readings with 10,000
devices (EXPLAIN ANALYZE; the fast-rule statement alone plans in 2 ms and runs in 0.2). Prepared
once per connection, with the constant parameters bound by psycopg2's quoting (``mogrify``, the
same client-side binding ``execute`` does), they are planned once.

A statement without parameters keeps the plan of its first execution, and the planner sizes the
stage tables (temp tables, never analysed) by their pages at that moment: a plan made for a
5,000-reading merge ran a 5-reading one in 11 ms instead of 0.6 (measured). So each statement is
prepared once per size class of the merge (:func:`size_class`: up to 64 readings, 1,024, 16,384,
more), planned at the first merge of that class; PostgreSQL still re-plans by itself after DDL (a
new day partition) or an ANALYZE of a table the plan reads.

A plan also ages as the tables grow under it: a loader's connection lives for days, and plans
made in its first seconds (empty ``device_latest``, no incidents) ran 5-reading merges at 10.5 ms
once 10,000 devices and their history were in, against 5.9 ms for the same statements planned then
(medians of 300 merges). So a statement is planned again once it is :data:`MAX_AGE_S` old: a
re-plan a minute per statement and size class costs a few ms a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from psycopg2 import sql

MAX_AGE_S: Final = 60.0
"""A prepared statement older than this is planned again before its next execution."""

SIZE_CLASSES: Final = (64, 1024, 16384)
"""Upper bounds (readings) of the merge size classes below the last, open-ended one."""


def size_class(rows: int) -> int:
    """0 .. len(SIZE_CLASSES): the class of a merge of ``rows`` readings (a factor 16 apart)."""
    return next((i for i, bound in enumerate(SIZE_CLASSES) if rows <= bound), len(SIZE_CLASSES))


class PreparedStatements:
    """``run(cur, query, params)``: PREPARE on first use on this connection (and again once the
    plan is ``max_age_s`` old), then EXECUTE."""

    def __init__(self, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s!r}")
        self.max_age_s = max_age_s
        self._clock = clock
        self._names: dict[tuple[int, str, int], tuple[str, float]] = {}
        self._serial = 0

    def reset(self) -> None:
        """Forget every statement: call with each new connection (prepared statements are
        per session)."""
        self._names.clear()

    def run(
        self, cur: Any, query: str | sql.Composable, params: dict[str, Any] | None = None, size: int = 0
    ) -> None:
        """``size``: the merge's :func:`size_class`."""
        # Keyed by the statement object and its bound values: the module-level SQL constants live
        # as long as the process, and a sink binds each of them with values fixed at start-up.
        key = (id(query), repr(sorted(params.items())) if params else "", size)
        now = self._clock()
        entry = self._names.get(key)
        if entry is not None and now - entry[1] > self.max_age_s:
            # Forgotten before DEALLOCATE and re-made under a new name: a failure in between
            # leaves no entry pointing at a statement that is gone.
            del self._names[key]
            cur.execute(f"DEALLOCATE {entry[0]}")
            entry = None
        if entry is None:
            text = query.as_string(cur) if isinstance(query, sql.Composable) else query
            bound = cur.mogrify(text, params).decode() if params else text
            entry = (f"fleetsim_merge_{self._serial}", now)
            self._serial += 1
            cur.execute(f"PREPARE {entry[0]} AS {bound}")
            self._names[key] = entry
        cur.execute(f"EXECUTE {entry[0]}")
