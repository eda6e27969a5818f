"""Cost of the stuck/drift statement alone: PostgreSQL backend CPU (less load-sensitive than wall).

Starts its own PostgreSQL, stores ``--history`` readings for each of ``--devices`` devices through
the raw sink, then runs the stuck/drift statement of a ``--new``-readings batch ``--rounds`` times
(each in a rolled-back transaction) and reports the backend's CPU per statement, read from
/proc/<backend pid>/stat. docs/streaming.md, "Cost of stuck/drift".

Run: ``python bench/bench_history_sql.py [--devices 2000] [--history 12] [--new 5] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetsim.cloud.streaming import pgsink
from fleetsim.cloud.streaming.pgsink import PgSink, RawBatch
from fleetsim.kernel.config import load_config
from fleetsim.stack import dedicated

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
TICK = os.sysconf("SC_CLK_TCK")


def batch(devices: int, start: int, n: int) -> RawBatch:
    lines = []
    for d in range(devices):
        for i in range(start, start + n):
            ts = (T0 + timedelta(seconds=10 * i)).isoformat()
            lines.append(
                f"hb-{d:05d},{i},{ts},{20 + (i % 3) * 0.1},{50 + (d % 5)},{600 + i % 7},1013,80,,,OK,,0,{i},"
                f"{ts},{ts}\n"
            )
    return RawBatch("".join(lines).encode(), b"", b"", (T0.date(),))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--history", type=int, default=12)
    ap.add_argument("--new", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    base = load_config(REPO / "fleetsim.toml", environ={}).with_overrides(
        {"stack.jvm_dir": str(REPO / ".cache" / "jvm"), "stack.start_timeout_s": 120}
    )
    with dedicated(base, Path(tempfile.mkdtemp(prefix="bench-history-")), "postgres") as (cfg, _):
        sink = PgSink(cfg, "raw")
        sink.write_raw(batch(args.devices, 0, args.history), 0)
        new = batch(args.devices, args.history, args.new)
        sink.write_raw(new, 1)  # the batch's rows are stored; each round re-stages them
        conn = sink.conn()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = int(cur.fetchone()[0])
        conn.commit()
        total = 0.0
        for _ in range(args.rounds):
            with conn.cursor() as cur:
                sink._copy(cur, "stage_raw", pgsink.RAW_COPY_COLUMNS, new.readings)
                c0 = cpu_s(pid)
                cur.execute(sink._stuck_drift, sink._history_params)
                total += cpu_s(pid) - c0
            conn.rollback()
        sink.close()
    rows = args.devices * args.new
    ms = total / args.rounds * 1000
    print(
        f"stuck/drift statement: {ms:.0f} ms backend CPU for {rows} new rows ({args.devices} devices), "
        f"{ms * 1000 / rows:.1f} us/row; load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
