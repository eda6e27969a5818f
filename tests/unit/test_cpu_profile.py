"""Where a stage's CPU went: per-thread and per-process snapshots of real processes from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fleetsim.bench.cpu_profile import (
    REAPED,
    cores_by_group,
    fold_title,
    label_backends,
    process_cpu,
    thread_cpu,
)


@pytest.mark.parametrize(
    ("argv", "group"),
    [
        (["postgres: fleetsim_write fleetsim 127.0.0.1(53412) idle"], "postgres: fleetsim_write fleetsim"),
        (["postgres: fleetsim_write fleetsim [local] INSERT"], "postgres: fleetsim_write fleetsim"),
        (["postgres: autovacuum worker fleetsim"], "postgres: autovacuum worker"),
        (["postgres: checkpointer "], "postgres: checkpointer"),
        (["/usr/lib/postgresql/15/bin/postgres", "-D", "/tmp/x"], "postmaster"),
        (["/usr/bin/java", "-Xmx1g", "kafka.Kafka"], "java"),
        ([""], "?"),
    ],
)
def test_process_titles_fold_into_stable_groups(argv: list[str], group: str) -> None:
    assert fold_title(argv) == group


def test_a_busy_child_shows_up_and_an_ended_one_is_counted_as_reaped() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", burn.format(s=5)])
    try:
        before_t, before_p = thread_cpu([busy.pid]), process_cpu([busy.pid])
        t0 = time.monotonic()
        time.sleep(0.6)
        secs = time.monotonic() - t0
        threads = cores_by_group(before_t, thread_cpu([busy.pid]), secs)
        procs = cores_by_group(before_p, process_cpu([busy.pid]), secs)
    finally:
        busy.kill()
        busy.wait()
    assert 0.5 <= next(iter(threads.values())) <= 1.2  # one thread spinning: about one core
    assert 0.5 <= procs[fold_title([sys.executable])] <= 1.2

    # A child that ends between two snapshots of its parent (this process) is the reaped group.
    me = os.getpid()
    before = process_cpu([me], reaped_of=me)
    subprocess.run([sys.executable, "-c", burn.format(s=0.5)], check=True)
    reaped = cores_by_group(before, process_cpu([me], reaped_of=me), 1.0)[REAPED]
    assert 0.4 <= reaped <= 1.5


def test_cores_need_a_positive_window() -> None:
    with pytest.raises(ValueError, match="seconds must be positive"):
        cores_by_group({}, {}, 0.0)


def test_backends_are_told_apart_by_their_application_name() -> None:
    snap = {10: ("postgres: fleetsim_writer fleetsim", 1.0), 11: ("postgres: fleetsim_writer fleetsim", 2.0),
            12: ("postgres: checkpointer", 0.5), -1: (REAPED, 0.1)}  # fmt: skip
    labelled = label_backends(snap, {10: "fleetsim-loader", 11: "fleetsim-stream-agg", 99: "gone"})
    assert labelled == {
        10: ("postgres: fleetsim_writer fleetsim [fleetsim-loader]", 1.0),
        11: ("postgres: fleetsim_writer fleetsim [fleetsim-stream-agg]", 2.0),
        12: ("postgres: checkpointer", 0.5),
        -1: (REAPED, 0.1),
    }
