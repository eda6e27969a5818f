"""The benchmark harness's pure parts: discovery, result selection and BENCHMARKS.md rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetsim.bench import harness, report


def _store(results: Path, stamp: str, quick: bool, status: str, value: float, quiet: bool = True) -> None:
    payload = {
        "quick": quick,
        "machine": {"cores": 2},
        "benches": {
            "sim": {
                "status": status,
                "duration_s": 1.0,
                "result": {
                    "title": "Simulator",
                    "figures": [
                        {
                            "name": "rate",
                            "value": value,
                            "unit": "msg/s",
                            "target": ">= 25k",
                            "met": value >= 25e3,
                        }
                    ],
                }
                if status == "ok"
                else {},
                "error": "" if status == "ok" else "boom",
                "quiet": quiet,
                "load_before": 0.4 if quiet else 7.9,
                "load_after": 0.5,
            }
        },
    }
    (results / f"{stamp}.json").write_text(json.dumps(payload))


def test_full_results_beat_later_quick_and_failed_runs(tmp_path: Path) -> None:
    _store(tmp_path, "20260101T000000Z", quick=False, status="ok", value=30_000.0)
    _store(tmp_path, "20260102T000000Z", quick=True, status="ok", value=1_000.0)
    _store(tmp_path, "20260103T000000Z", quick=False, status="failed", value=0.0)
    latest = harness.latest_results(tmp_path)
    assert latest["sim"]["result"]["figures"][0]["value"] == 30_000.0
    _store(tmp_path, "20260104T000000Z", quick=False, status="ok", value=20_000.0)
    assert harness.latest_results(tmp_path)["sim"]["result"]["figures"][0]["value"] == 20_000.0


def test_figures_from_a_busy_machine_never_replace_quiet_ones_and_say_so(tmp_path: Path) -> None:
    _store(tmp_path, "20260101T000000Z", quick=False, status="ok", value=30_000.0)
    _store(tmp_path, "20260102T000000Z", quick=False, status="ok", value=9_000.0, quiet=False)
    latest = harness.latest_results(tmp_path)
    assert latest["sim"]["result"]["figures"][0]["value"] == 30_000.0
    busy = tmp_path / "busy"
    busy.mkdir()
    _store(busy, "20260102T000000Z", quick=False, status="ok", value=9_000.0, quiet=False)
    text = report.render_bench("sim", harness.latest_results(busy)["sim"])
    assert "not a measurement" in text and "7.9" in text


def test_wait_quiet_waits_for_the_load_to_fall_and_says_when_it_did_not() -> None:
    loads = iter([3.0, 2.0, 1.2])
    said: list[str] = []
    assert harness.wait_quiet(
        1.5, 60, loadavg=lambda: next(loads), sleep=lambda _: None, report=said.append
    ) == (
        1.2,
        True,
    )
    assert len(said) == 1 and "3.00 > 1.5" in said[0]
    assert harness.wait_quiet(1.5, 0, loadavg=lambda: 4.0, sleep=lambda _: None, report=said.append) == (
        4.0,
        False,
    )


def test_report_lists_targets_with_verdicts(tmp_path: Path) -> None:
    _store(tmp_path, "20260101T000000Z", quick=False, status="ok", value=20_000.0)
    text = report.render(harness.latest_results(tmp_path))
    assert "| sim | rate | 20,000 msg/s | – | >= 25k | **missed** | 2026-01-01, load 0.4 |" in text
    _store(tmp_path, "20260102T000000Z", quick=False, status="ok", value=26_000.0)
    text = report.render(harness.latest_results(tmp_path))
    assert "| sim | rate | 26,000 msg/s | – | >= 25k | met | 2026-01-02, load 0.4 |" in text


def test_failed_benchmark_is_reported_as_missed(tmp_path: Path) -> None:
    _store(tmp_path, "20260101T000000Z", quick=False, status="timeout", value=0.0)
    text = report.render(harness.latest_results(tmp_path))
    assert "did not finish: timeout" in text
    assert "boom" in text


def test_discover_and_select(tmp_path: Path) -> None:
    (tmp_path / "bench_sim.py").write_text("def run(cfg, quick):\n    return {}\n")
    (tmp_path / "helper.py").write_text("def run(cfg, quick):\n    return {}\n")
    # A bench_ script without run() is a tool run by hand: the suite must not try to run it.
    (tmp_path / "bench_tool.py").write_text("def main():\n    pass  # def run( in text only\n")
    found = harness.discover(tmp_path)
    assert list(found) == ["sim"]
    with pytest.raises(harness.BenchError, match="available: sim"):
        harness.select(found, ["nope"])
    with pytest.raises(harness.BenchError, match="no benchmark directory"):
        harness.discover(tmp_path / "missing")


def test_child_gets_the_whole_config_through_env() -> None:
    from fleetsim.kernel.config import config_to_env, load_config, parse_env

    cfg = load_config(None, environ={}, overrides={"mqtt.port": 1999, "kafka.admin_password": "s3cret"})
    env = config_to_env(cfg)
    assert env["FLEETSIM_MQTT__PORT"] == "1999"
    assert env["FLEETSIM_KAFKA__ADMIN_PASSWORD"] == "s3cret"
    back = load_config(None, environ=env)
    assert back.mqtt.port == 1999
    assert back.bridge.routes == cfg.bridge.routes
    assert parse_env(env)["kafka"]["admin_password"] == "s3cret"


def test_declared_timeout_is_read_without_importing_the_module(tmp_path: Path) -> None:
    from fleetsim.bench.harness import declared_timeout

    (tmp_path / "bench_a.py").write_text('import does_not_exist\nTIMEOUT_S = 1_800\n"""doc"""\n')
    (tmp_path / "bench_b.py").write_text("NAIVE_TIMEOUT_S = 5\n")
    assert declared_timeout(tmp_path / "bench_a.py") == 1800.0
    assert declared_timeout(tmp_path / "bench_b.py") is None


def test_hand_written_analysis_follows_the_targets_table() -> None:
    latest = {"sim": {"status": "ok", "result": {"title": "Simulator", "figures": []}}}
    text = report.render(latest, "## Where the time goes\n\nSpark's raw batch.\n")
    assert text.index("## Targets") < text.index("## Where the time goes") < text.index("## Simulator")
    assert "## Where the time goes" not in report.render(latest)


def test_targets_table_shows_the_same_run_baseline_and_a_quick_run() -> None:
    fig = {"name": "rate", "value": 99_084, "unit": "msg/s", "baseline": 42_219,
           "baseline_name": "bare paho loop", "target": ">= 25k", "met": True}  # fmt: skip
    outcome = {"status": "ok", "file": "20261205T061835Z.json", "quick": True, "load_before": 0.82,
               "load_after": 0.83, "result": {"title": "Simulator", "figures": [fig]}}  # fmt: skip
    latest = {"sim": outcome}
    row = (
        "| sim | rate | 99,084 msg/s | 42,219 msg/s (bare paho loop) | >= 25k | met "
        "| 2026-12-05, load 0.82, quick |"
    )
    assert row in report.render(latest)


def test_repo_suite_leaves_out_the_hand_run_tools() -> None:
    found = harness.discover(Path(__file__).resolve().parents[2] / "bench")
    assert "batch_cost" not in found
    assert {"e2e", "sink", "history_sql"} <= set(found)


def test_interrupted_run_ends_the_benchmark_child_group(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C) while a benchmark runs: its child (and what it spawned) must not
    outlive the harness. The child here spawns a grandchild and sleeps; SIGTERM goes through the
    handler ``fleetsim bench`` installs. (Not SIGINT: a shell starts background jobs with SIGINT
    ignored, and Python then never raises KeyboardInterrupt.)"""
    import os
    import signal
    import threading
    import time

    from fleetsim.cli.bench import _raise_exit
    from fleetsim.kernel.config import load_config

    pidfile = tmp_path / "grandchild.pid"
    bench = tmp_path / "bench_sleepy.py"
    bench.write_text(
        "import os, pathlib, subprocess, time\n"
        "def run(cfg, quick):\n"
        "    p = subprocess.Popen(['sleep', '300'])\n"
        # Written whole, then renamed: the watcher below must never see the file empty (CI did).
        f"    pathlib.Path({str(pidfile)!r} + '.tmp').write_text(str(p.pid))\n"
        f"    os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})\n"
        "    time.sleep(300)\n"
        "    return {}\n"
    )
    deadline = time.monotonic() + 30

    def interrupt_when_started() -> None:
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        threading.Thread(target=interrupt_when_started, daemon=True).start()
        with pytest.raises(SystemExit):
            harness.run_one("sleepy", bench, load_config(None, environ={}), False, 60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the benchmark's grandchild outlived the interrupted harness")


def test_a_series_of_points_is_one_row_and_other_lists_are_unfolded() -> None:
    flat: list[tuple[str, object]] = []
    report._flatten("", {"raw": {"series": [[-10, 0.29], [0, None], [10, 77.6]]}, "xs": [1, 2]}, flat)
    report._flatten("", {"runs": [{"a": 1}, {"a": 2}], "wide": [[1, 2, 3, 4]]}, flat)
    assert flat == [
        ("raw.series", "-10 / 0.29, 0 / –, 10 / 77.6"),
        ("xs", "1, 2"),
        ("runs[0].a", 1),
        ("runs[1].a", 2),
        ("wide[0]", "1, 2, 3, 4"),  # four numbers are no point: the list is unfolded as before
    ]
