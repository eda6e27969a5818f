"""The windowed flow's rewrites of an open window stay on their page (HOT updates, V010).

Update mode re-emits a window with its full value in every batch while it is open; with
``updated_at`` indexed and full pages each rewrite touched every index (bench/bench_agg_upsert.py:
562 -> 324 ms for a 50,000-window batch). Through the sink's own write path on a fresh PostgreSQL:
rewrites overwrite (the last value wins) and most of them are HOT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.bench.engines import pg_rows
from fleetsim.cloud.streaming.pgsink import PgSink
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated

pytestmark = pytest.mark.integration

WINDOWS = 300


def _batch(version: int) -> bytes:
    lines = []
    for d in range(WINDOWS):
        start = f"2026-01-01T00:{d % 60:02d}:00+00:00"
        end = f"2026-01-01T01:{d % 60:02d}:00+00:00"
        stats = ",".join(f"{20 + version + m / 10:.1f}" for m in range(15))
        lines.append(f"device,dev-{d:04d},{start},{end},{version * 10},0,0,{version},{stats}\n")
    return "".join(lines).encode()


def test_window_rewrites_overwrite_and_are_mostly_hot(fleet_cfg: FleetsimConfig, tmp_path: Path) -> None:
    with dedicated(fleet_cfg, tmp_path / "pg", "postgres") as (cfg, _):
        sink = PgSink(cfg, "agg")
        try:
            for version in range(1, 6):
                assert sink.write_agg(_batch(version), version) == WINDOWS
        finally:
            sink.close()
        (row,) = pg_rows(
            cfg,
            "SELECT count(*), min(n_messages), max(n_messages), min(temperature_mean) FROM sensor_data_agg",
        )
        assert row == (WINDOWS, 50, 50, 25.0)
        ((upd, hot),) = pg_rows(
            cfg, "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sensor_data_agg'"
        )
    assert upd == 4 * WINDOWS
    # Not every rewrite can be HOT (a page fills before pruning frees it); before V010 none was.
    assert hot >= 0.5 * upd, (hot, upd)
