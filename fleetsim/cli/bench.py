"""``fleetsim bench [NAME ...]``: run the benchmark suite against a dedicated engine stack."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetsim.bench import harness, report
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated

ENGINES = ("mosquitto", "kafka", "postgres")
DEFAULT_TIMEOUT_S = 900.0


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="run benchmarks in bench/ and refresh BENCHMARKS.md")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all); see --list")
    p.add_argument("--quick", action="store_true", help="short runs (smoke-check the benchmarks)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each benchmark may take (default: the TIMEOUT_S the benchmark declares, else 900)",
    )
    p.add_argument("--repo", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    p.add_argument(
        "--max-load",
        type=float,
        default=harness.QUIET_LOAD,
        help="1-min load average above which figures are recorded as taken on a busy machine "
        f"(default {harness.QUIET_LOAD}; each benchmark first waits up to --quiet-wait s for it)",
    )
    p.add_argument("--quiet-wait", type=float, default=180.0, help="seconds to wait for a quiet machine")
    p.add_argument(
        "--render-only", action="store_true", help="rebuild BENCHMARKS.md from stored results, run nothing"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    repo: Path = args.repo.resolve()
    results_dir = repo / "bench" / "results"
    if args.render_only:
        _write_report(repo, results_dir)
        return 0
    available = harness.discover(repo / "bench")
    if args.list:
        for name, path in available.items():
            print(f"{name:12s} {path.relative_to(repo)}")
        return 0
    chosen = harness.select(available, args.names)
    # SIGTERM unwinds like Ctrl-C, so the running child and the dedicated engines are stopped
    # (a plain SIGTERM would leave Kafka, PostgreSQL and Mosquitto running, measured).
    signal.signal(signal.SIGTERM, _raise_exit)
    outcomes: dict[str, Any] = {}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fleetsim-bench-") as tmp,
        dedicated(cfg, Path(tmp) / "stack", *ENGINES) as (bench_cfg, _),
    ):
        print(f"engines up on free ports ({', '.join(ENGINES)}); running {len(chosen)} benchmark(s)")
        for i, (name, path) in enumerate(chosen.items(), start=1):
            print(f"[{i}/{len(chosen)}] {name} ...", flush=True)
            timeout_s = args.timeout or harness.declared_timeout(path) or DEFAULT_TIMEOUT_S
            # A figure taken on a busy machine is not a measurement: wait for quiet, and when it
            # does not come, record the figures marked as such (they never replace quiet ones).
            load_before, quiet = harness.wait_quiet(args.max_load, args.quiet_wait)
            outcome = harness.run_one(name, path, bench_cfg, args.quick, timeout_s)
            load_after = round(os.getloadavg()[0], 2)
            print(
                f"[{i}/{len(chosen)}] {name}: {outcome.status} in {outcome.duration_s} s "
                f"(load average {load_before} -> {load_after})",
                flush=True,
            )
            if not quiet:
                print(f"  NOT A MEASUREMENT: load average {load_before} > {args.max_load} before the run")
            if outcome.error:
                print(outcome.error)
            outcomes[name] = {
                "status": outcome.status,
                "duration_s": outcome.duration_s,
                "result": outcome.result,
                "error": outcome.error,
                "timeout_s": timeout_s,
                "load_before": load_before,
                "load_after": load_after,
                "quiet": quiet,
            }
    payload = {
        "started_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.monotonic() - started))
        ),
        "quick": args.quick,
        "machine": harness.machine_info(),
        "benches": outcomes,
    }
    path = harness.write_results(results_dir, payload)
    print(f"results: {path.relative_to(repo)}")
    _write_report(repo, results_dir)
    failed = [n for n, o in outcomes.items() if o["status"] != "ok"]
    if failed:
        print(f"did not finish: {', '.join(failed)}")
    return 1 if failed else 0


def _raise_exit(_sig: int, _frame: Any) -> None:
    raise SystemExit(143)


def _write_report(repo: Path, results_dir: Path) -> None:
    latest = harness.latest_results(results_dir)
    analysis = repo / "bench" / "ANALYSIS.md"
    text = analysis.read_text(encoding="utf-8") if analysis.exists() else ""
    (repo / "BENCHMARKS.md").write_text(report.render(latest, text), encoding="utf-8")
    print(f"BENCHMARKS.md refreshed from {len(latest)} benchmark(s)")
