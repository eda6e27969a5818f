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
"""

from __future__ import annotations

from typing import Any, Final

from psycopg2 import sql

SIZE_CLASSES: Final = (64, 1024, 16384)
"""Upper bounds (readings) of the merge size classes below the last, open-ended one."""


def size_class(rows: int) -> int:
    """0 .. len(SIZE_CLASSES): the class of a merge of ``rows`` readings (a factor 16 apart)."""
    return next((i for i, bound in enumerate(SIZE_CLASSES) if rows <= bound), len(SIZE_CLASSES))


class PreparedStatements:
    """``run(cur, query, params)``: PREPARE on first use on this connection, then EXECUTE."""

    def __init__(self) -> None:
        self._names: dict[tuple[int, str, int], str] = {}

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
        name = self._names.get(key)
        if name is None:
            text = query.as_string(cur) if isinstance(query, sql.Composable) else query
            bound = cur.mogrify(text, params).decode() if params else text
            name = f"fleetsim_merge_{len(self._names)}"
            cur.execute(f"PREPARE {name} AS {bound}")
            self._names[key] = name
        cur.execute(f"EXECUTE {name}")
