"""The windowed flow's PostgreSQL upsert into sensor_data_agg: the table as V001/V005 laid it out
against the layout V010 gives it, side by side in one run.

Update mode re-emits every window a micro-batch touched with its full value, so a window is
rewritten about ten times while it is open (5-minute windows, 30 s windowed trigger). Before
V010 every rewrite was a non-HOT update: ``updated_at`` is indexed (V005, for the dashboard's
freshness figure) and the pages had no free space, so each rewrite added an entry to all three
indexes. V010 drops that index and leaves 30 % of each page free (fillfactor 70): a rewrite can
stay on its page with no index entry (a HOT update).

Both layouts are built as copies of ``sensor_data_agg``'s columns with the same statement the sink
runs (``pgsink.UPSERT_AGG``, only the table name changed), fed the same stream: a fleet at 0.25
reading per device per second, one windowed batch every 30 s of stream time, each batch re-emitting
every window (device, site, fleet scopes; 5-minute windows sliding 1 minute) that its readings fall
in. Staged with COPY as the sink stages, then the timed upsert and its commit. The first batches
only insert; figures are medians over the batches after the table holds a full window span (the
steady state), the layouts alternating order batch to batch. Also: each layout's share of HOT
updates (pg_stat_user_tables) and its size at the end.

Run: ``fleetsim bench agg_upsert`` or ``python bench/bench_agg_upsert.py [--quick]`` (starts its
own PostgreSQL). docs/streaming.md, "Where a windowed batch's seconds go".
"""

from __future__ import annotations

import io
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetsim.bench.engines import run_standalone
from fleetsim.cloud.streaming import pgsink
from fleetsim.cloud.streaming.windows import AGG_COLUMNS
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900
TRIGGER_S = 30
WINDOW_S, SLIDE_S = 300, 60
SITES = 20
LAYOUTS = {
    "V010: no updated_at index, fillfactor 70": ("", "WITH (fillfactor = 70)"),
    "V001/V005: updated_at indexed, fillfactor 100": ("CREATE INDEX ON {t} (updated_at DESC);", ""),
}


def _create(cur: Any, table: str, extra_index: str, storage: str) -> None:
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(
        f"CREATE TABLE {table} (LIKE sensor_data_agg INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        f"PRIMARY KEY (scope, key, window_start, window_end)) {storage}"
    )
    cur.execute(f"CREATE INDEX ON {table} (scope, window_start)")
    if extra_index:
        cur.execute(extra_index.format(t=table))


def _windows(t: float) -> list[float]:
    """Starts of the sliding windows a reading at ``t`` (epoch s) falls in."""
    last = t // SLIDE_S * SLIDE_S
    return [last - k * SLIDE_S for k in range(WINDOW_S // SLIDE_S) if last - k * SLIDE_S + WINDOW_S > t]


def _batch_csv(b: int, devices: int, t0: float, rng: random.Random) -> tuple[bytes, int]:
    """The windows batch ``b`` re-emits, as the sink's COPY CSV of AGG_COLUMNS."""
    lo, hi = t0 + b * TRIGGER_S, t0 + (b + 1) * TRIGGER_S
    starts = sorted({w for t in (lo, hi - 0.001) for w in _windows(t)})
    buf = io.StringIO()

    def emit(scope: str, key: str, start: float, count: int) -> None:
        s = datetime.fromtimestamp(start, UTC)
        vals = [f"{rng.uniform(15, 30):.3f}" for _ in range(15)]
        buf.write(
            f"{scope},{key},{s.isoformat()},{(s + timedelta(seconds=WINDOW_S)).isoformat()},"
            f"{count},{count // 20},0,{count // 50},{','.join(vals)}\n"
        )

    seen = int((hi - t0) * 0.25)
    for d in range(devices):
        for start in starts:
            emit("device", f"dev-{d:05d}", start, min(seen, 75))
    for s in range(SITES):
        for start in starts:
            emit("site", f"site-{s:02d}", start, min(seen, 75) * devices // SITES)
    for start in starts:
        emit("fleet", "fleet", start, min(seen, 75) * devices)
    return buf.getvalue().encode(), len(starts) * (devices + SITES + 1)


def run(cfg: FleetsimConfig, quick: bool) -> dict[str, Any]:
    devices, batches = (2_000, 16) if quick else (10_000, 24)
    steady_from = WINDOW_S // TRIGGER_S  # a full window span in the table before measuring
    tables = {name: f"bench_agg_{i}" for i, name in enumerate(LAYOUTS)}
    conn = pg_connect(cfg, "admin", application_name="fleetsim-bench-agg-upsert")
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    rows_per_batch: list[int] = []
    try:
        with conn.cursor() as cur:
            for name, (extra_index, storage) in LAYOUTS.items():
                _create(cur, tables[name], extra_index, storage)
            cur.execute(pgsink.SESSION_STAGE_DDL)
            cur.execute("SET jit = off")  # as the sink's writer session
        conn.commit()
        t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
        rng = random.Random(7)
        for b in range(batches):
            data, n = _batch_csv(b, devices, t0, rng)
            rows_per_batch.append(n)
            order = list(LAYOUTS) if b % 2 == 0 else list(reversed(LAYOUTS))
            for name in order:
                sql = pgsink.UPSERT_AGG.replace("INTO sensor_data_agg", f"INTO {tables[name]}", 1)
                with conn.cursor() as cur:
                    cur.copy_expert(
                        f"COPY stage_agg ({', '.join(AGG_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                        io.BytesIO(data),
                    )
                    t = time.perf_counter()
                    cur.execute(sql)
                    if cur.rowcount != n:
                        raise RuntimeError(f"{name}: upserted {cur.rowcount} of {n} windows")
                conn.commit()
                if b >= steady_from:
                    times[name].append((time.perf_counter() - t) * 1000)
            print(f"batch {b + 1}/{batches}: {n:,} windows", file=sys.stderr, flush=True)
        stats: dict[str, dict[str, Any]] = {}
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_force_next_flush()")
            conn.commit()
            for name, table in tables.items():
                cur.execute(
                    "SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) "
                    "FROM pg_stat_user_tables WHERE relname = %s",
                    (table,),
                )
                upd, hot, size = cur.fetchone()
                stats[name] = {"updates": upd, "hot_share": round(hot / upd, 3) if upd else None,
                               "size_mib": round(size / 2**20, 1)}  # fmt: skip
            for table in tables.values():
                cur.execute(f"DROP TABLE {table}")
        conn.commit()
    finally:
        conn.close()
    new, old = list(LAYOUTS)
    med = statistics.median
    per_row = med(rows_per_batch[steady_from:])
    return {
        "title": "Windowed flow's upsert into sensor_data_agg: V010 layout vs V001/V005",
        "method": (
            f"pgsink.UPSERT_AGG into two copies of sensor_data_agg, {devices:,} devices + {SITES} sites + "
            f"fleet, a windowed batch every {TRIGGER_S} s of stream time re-emitting every window its "
            f"readings fall in (~{per_row:,.0f} windows a batch), staged by COPY; {batches} batches, "
            f"the {batches - steady_from} after the first {steady_from} timed (upsert + commit), layouts "
            "alternating order batch to batch; medians."
        ),
        "figures": [
            {
                "name": f"upsert of a windowed batch (~{per_row:,.0f} windows, {devices:,} devices): {new}",
                "value": round(med(times[new])),
                "unit": "ms",
                "baseline_name": old,
                "baseline": round(med(times[old])),
                "ratio": round(med(a / b for a, b in zip(times[new], times[old], strict=True)), 2),
                "runs": [round(x) for x in times[new]],
            },
            {
                "name": f"per window: {new}",
                "value": round(med(times[new]) * 1000 / per_row, 1),
                "unit": "µs/window",
                "baseline_name": old,
                "baseline": round(med(times[old]) * 1000 / per_row, 1),
            },
        ],
        "layouts": stats,
    }


if __name__ == "__main__":
    raise SystemExit(run_standalone(REPO, "agg_upsert", ("postgres",), run, "--quick" in sys.argv[1:], 120))
