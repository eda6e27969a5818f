"""PostgreSQL's data directory on a small file system that fills up: the streaming job stops
writing, says why, and resumes without loss once space returns.

The data directory sits on a tmpfs mounted for the test (``size=``; root is needed: the test is
skipped, saying so, where mounting is refused). Filling it with a file leaves PostgreSQL unable to
extend a table; removing the file gives the space back. Nothing is restarted by hand.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
from waiting import wait_until

from fleetsim.chaos.checker import TruthPublisher, drain, stored_counts
from fleetsim.chaos.pipeline import pipeline
from fleetsim.kernel.config import FleetsimConfig

pytestmark = [pytest.mark.integration, pytest.mark.spark]

SIZE_MB = 512
FULL_S = 30.0
"""How long the disk stays full while the load goes on."""


def _mount_tmpfs(where: Path, size_mb: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for PostgreSQL needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"this machine refuses to mount a tmpfs for the test: {proc.stderr.strip()}")


def _fill(fs: Path) -> Path:
    """Write a file until the file system is full (ENOSPC); returns it."""
    filler = fs / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            piece = chunk[:size]
            while True:
                try:
                    fh.write(piece)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def _rows(cfg: FleetsimConfig, devices: list[str]) -> int:
    return sum(len(v) for v in stored_counts(cfg, devices).values())


@pytest.mark.slow  # its own pipeline with Spark (~3 min): `make test-slow`
def test_disk_full_postgres_stops_the_job_writing_and_it_resumes_without_loss(
    fleet_cfg: FleetsimConfig, tmp_path: Path
) -> None:
    pg_home = tmp_path / "stack" / "postgres"
    _mount_tmpfs(pg_home, SIZE_MB)
    try:
        with pipeline(fleet_cfg, tmp_path) as p:
            pub = TruthPublisher(p.cfg, "disk-full", devices=5, rate=200)
            pub.start()
            try:
                wait_until(lambda: _rows(p.cfg, pub.devices) > 300, 300, what="rows to land")
                log_mark = len(p.stream.log_file.read_text(errors="replace"))
                filler = _fill(pg_home)
                t_full = time.monotonic()
                # Stopped writing: the row count no longer moves (give the batch in flight time).
                time.sleep(8)
                stuck_at = _rows(p.cfg, pub.devices)
                time.sleep(FULL_S - 8)
                still = _rows(p.cfg, pub.devices)
                said = p.stream.log_file.read_text(errors="replace")[log_mark:]
                filler.unlink()
                t_space = time.monotonic()
                acked_when_space_returned = pub.snapshot()

                def all_in() -> bool:
                    have = stored_counts(p.cfg, pub.devices)
                    return all(s <= set(have.get(d, {})) for d, s in acked_when_space_returned.items())

                wait_until(all_in, 300, what="the job to store what queued up while the disk was full",
                           interval_s=1.0)  # fmt: skip
                resumed_s = time.monotonic() - t_space
                time.sleep(2)
            finally:
                pub.finish()
            v = drain(p.cfg, pub, timeout_s=300)
            alive = p.stream.alive
            reason = next((line for line in said.splitlines() if "No space left on device" in line), None)
            restarts = said.count("restarting from its checkpoint")
    finally:
        subprocess.run(["umount", "-l", str(pg_home)], check=False)
    print(
        f"\nDRILL pg-disk-full: {v.figures()} full_for_s={round(t_space - t_full, 1)}"
        f" rows_at_full+8s={stuck_at} rows_at_end_of_full={still}"
        f" resumed_after_s={round(resumed_s, 1)} query_restarts={restarts}"
        f" stream_alive={alive} reason={reason!r}",
        flush=True,
    )
    assert still == stuck_at, "rows kept landing on a full disk"
    assert reason is not None, f"the job never said why it stopped writing:\n{said[-3000:]}"
    assert alive, "the streaming job exited instead of waiting for space"
    assert v.n_lost == 0 and v.n_duplicated == 0 and v.n_unexpected == 0, v.summary()
