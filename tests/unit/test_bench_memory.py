"""The soak's memory verdict (fleetsim/bench/memory.py): growth judged on the settled half, and
the sampler's PSS of a real process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fleetsim.bench.memory import MIB, MemSampler, children_map, growing_label, growth, metric_sum, tree


def _series(
    minutes: float, every_s: float, mib: Callable[[float], float]
) -> list[tuple[float, dict[str, int]]]:
    n = int(minutes * 60 / every_s) + 1
    return [(i * every_s, {"stage": int(mib(i * every_s / 60) * MIB)}) for i in range(n)]


def test_a_process_that_settles_is_bounded_and_a_leak_is_not() -> None:
    # Warms up (0 -> 400 MiB in the first 3 minutes), then flat with +-3 MiB of noise.
    settled = growth(_series(10, 10, lambda m: min(m, 3) / 3 * 400 + (3 if int(m * 6) % 2 else -3)))
    assert settled["stage"]["bounded"] is True
    assert settled["stage"]["peak_mib"] >= 400
    # 4 MiB a minute on 300 MiB: 40 MiB per 10 min, over max(5 % of 300, 16) = 16.
    leak = growth(_series(10, 10, lambda m: 300 + 4 * m))
    assert leak["stage"]["bounded"] is False
    assert abs(leak["stage"]["slope_mib_per_min"] - 4) < 0.05
    # A small process wobbling by a few MiB is under the floor, not a leak.
    small = growth(_series(10, 10, lambda m: 30 + 0.5 * m))
    assert small["stage"]["bounded"] is True


def test_a_run_too_short_is_not_judged() -> None:
    assert growth(_series(1.5, 10, lambda m: 100 + 50 * m))["stage"]["bounded"] is None
    assert growth([]) == {}


def test_sampler_sees_a_child_process_grow(tmp_path: Path) -> None:
    # The root is a shell; the Python that allocates is its child, so only the tree walk sees it.
    # bytearray(n) zero-fills, so its pages are touched (resident) at once. The child says when
    # it has allocated: on a loaded CI machine the zero-fill outlasted a fixed sleep (46 of 64 MiB).
    grown = tmp_path / "grown"
    code = (
        "import pathlib, time; time.sleep(0.4); b = bytearray(64 << 20); "
        f"pathlib.Path('{grown}').touch(); time.sleep(30)"
    )
    proc = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{code}"; true'])
    try:
        sampler = MemSampler({"load": proc.pid}, every_s=0.2).start()
        deadline = time.monotonic() + 30
        while not grown.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grown.exists(), "the child never allocated"
        time.sleep(1.0)  # a few samples of the grown process, even on a loaded machine
        samples = sampler.stop()
    finally:
        for pid in tree(proc.pid, children_map())[1:]:  # the interpreter; sh then ends
            os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=10)
    values = [by["load"] / MIB for _, by in samples]
    assert len(values) >= 3, values  # before, and grown
    assert values[0] < 40, values
    assert max(values) - values[0] >= 50, values


def test_a_split_stage_says_which_of_its_processes_grows(tmp_path: Path) -> None:
    # The child says when it has allocated: fixed sleeps missed the allocation on a loaded
    # machine (CI), where the interpreter alone took longer to start than the sampling lasted.
    grown = tmp_path / "grown"
    code = (
        "import pathlib, time; time.sleep(0.6); b = bytearray(64 << 20); "
        f"pathlib.Path('{grown}').touch(); time.sleep(30)"
    )
    proc = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{code}"; true'])
    try:
        sampler = MemSampler({"load": proc.pid}, every_s=0.2, split=frozenset({"load"})).start()
        deadline = time.monotonic() + 30
        while not grown.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grown.exists(), "the child never allocated"
        time.sleep(0.6)  # a few samples of the grown process
        samples = sampler.stop()
    finally:
        for pid in tree(proc.pid, children_map())[1:]:  # the interpreter; sh then ends
            os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=10)
    for _, by in samples:  # the parts add up to the stage
        assert sum(v for k, v in by.items() if k.startswith("load/")) == by["load"], by
    verdict = growth(samples)
    parts = {k: v["peak_mib"] - v["first_mib"] for k, v in verdict.items() if k.startswith("load/")}
    assert parts.get("load/sh", 0) < 5, parts
    grown = [k for k, mib in parts.items() if mib >= 50]
    assert len(grown) == 1 and grown[0].startswith("load/python"), parts


def test_a_growing_stage_is_named_with_its_parts_slopes() -> None:
    mem = {
        "spark": {"slope_mib_per_min": 16.6},
        "spark/java": {"slope_mib_per_min": 15.04},
        "spark/python3": {"slope_mib_per_min": -0.3},
        "sparkle/java": {"slope_mib_per_min": 9.0},
        "kafka": {"slope_mib_per_min": 0.1},
    }
    assert growing_label("spark", mem) == "spark (java +15.0, python3 -0.3 MiB/min)"
    assert growing_label("kafka", mem) == "kafka"


def test_a_stage_reports_figures_of_its_own_beside_its_pss() -> None:
    calls = iter(
        [{"me/state stores": 5 * MIB}, RuntimeError("endpoint restarting"), {"me/state stores": 7 * MIB}]
    )

    def gauges() -> dict[str, int]:
        got = next(calls)
        if isinstance(got, Exception):
            raise got
        return got

    sampler = MemSampler({"me": os.getpid()}, every_s=10, gauges=gauges)
    samples = [sampler.sample() for _ in range(3)]
    assert [s.get("me/state stores") for s in samples] == [5 * MIB, None, 7 * MIB]
    assert all(s["me"] > 0 for s in samples)  # a failed gauge costs only its own figure


def test_metric_sum_adds_a_metric_over_its_labels_from_a_live_endpoint() -> None:
    registry = CollectorRegistry()
    g = Gauge("fleetsim_stream_state_memory_bytes", "state", ["query"], registry=registry)
    g.labels("agg").set(3 * MIB)
    g.labels("deadletter").set(1 * MIB)
    Gauge("fleetsim_other_bytes", "other", registry=registry).set(99)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert metric_sum(url, "fleetsim_stream_state_memory_bytes") == 4 * MIB
        assert metric_sum(url, "fleetsim_absent") == 0
    finally:
        server.shutdown()
        thread.join(timeout=5)
