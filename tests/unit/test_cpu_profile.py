"""Where a stage's CPU went: per-thread and per-process snapshots of real processes from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

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
    # The child burns a fixed 0.5 s of CPU between two handshakes, so the snapshots must see
    # that much CPU however busy the machine is (make test runs this beside the engines).
    handshake = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    handshake += burn.format(s=0.5) + "print('done', flush=True)\nsys.stdin.readline()\n"
    busy = subprocess.Popen(
        [sys.executable, "-c", handshake], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert busy.stdin is not None and busy.stdout is not None
    try:
        assert busy.stdout.readline().strip() == "ready"
        before_t, before_p = thread_cpu([busy.pid]), process_cpu([busy.pid])
        busy.stdin.write("go\n")
        busy.stdin.flush()
        assert busy.stdout.readline().strip() == "done"
        threads = cores_by_group(before_t, thread_cpu([busy.pid]), 1.0)
        procs = cores_by_group(before_p, process_cpu([busy.pid]), 1.0)
    finally:
        busy.kill()
        busy.wait()
    assert 0.45 <= next(iter(threads.values())) <= 0.8  # 0.5 CPU-seconds in a 1-s window
    assert 0.45 <= procs[fold_title([sys.executable])] <= 0.8

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
