"""``fleetsim experiment run|list|show|validate``: thin entry points over the experiments package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fleetsim.cli.stack import child_args, start_stack
from fleetsim.experiments.scenario import load_scenario
from fleetsim.experiments.store import get_run, list_runs
from fleetsim.experiments.targets import prepare_fleet
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ExperimentError
from fleetsim.kernel.fleetfile import load_fleet
from fleetsim.kernel.service import StopSignals


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("experiment", help="fault-injection experiments: run, list, show, validate")
    sub = p.add_subparsers(dest="experiment_command", metavar="ACTION")

    run = sub.add_parser("run", help="run a scenario against the running stack and score it")
    run.add_argument(
        "scenario", type=Path, help="scenario TOML file (e.g. scenarios/district-partition.toml)"
    )
    run.add_argument(
        "--shorten", type=float, default=1.0, metavar="FACTOR",
        help="divide every time of the scenario by FACTOR (CI runs a short version)",
    )  # fmt: skip
    run.add_argument("--no-record", action="store_true", help="do not record the run in PostgreSQL")
    run.add_argument("--no-kafka-scan", action="store_true", help="do not scan the Kafka topic for losses")
    run.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    run.add_argument(
        "--up", action="store_true",
        help="start what is not running of the stack first (every component but sim and dashboard;"
        " left running afterwards, stop with `fleetsim down`)",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="recorded runs, newest first")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one run's summary (id or unique prefix)")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print the stored report as JSON")
    show.set_defaults(func=cmd_show)

    val = sub.add_parser("validate", help="check scenario files and print their resolved campaign")
    val.add_argument("scenarios", type=Path, nargs="+")
    val.set_defaults(func=cmd_validate)


def _progress(msg: str) -> None:
    print(f"\r\033[K{msg}", end="" if msg.startswith(("simulating", "draining")) else "\n", file=sys.stderr)
    sys.stderr.flush()


def cmd_run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    # The report draws with matplotlib (~0.9 s to import): only the commands that run or show need it.
    from fleetsim.experiments.report import summary_markdown
    from fleetsim.experiments.runner import RunOptions, run_experiment

    scenario = load_scenario(args.scenario)
    if args.shorten < 1:
        raise ExperimentError("--shorten must be >= 1")
    scenario = scenario.shortened(args.shorten)
    if args.up:
        cfg = _bring_up(args, cfg)
    # SIGTERM/Ctrl-C end the simulation early and the run is recorded as failed ("interrupted").
    with StopSignals(name="the experiment") as signals:
        report, out_dir = run_experiment(
            cfg, scenario, progress=_progress,
            opts=RunOptions(record=not args.no_record, scan_kafka=not args.no_kafka_scan),
            stop=signals.stop,
        )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(summary_markdown(report))
        print(f"\nReport: {out_dir}")
    return 0


def _bring_up(args: argparse.Namespace, cfg: FleetsimConfig) -> FleetsimConfig:
    """Start the stack's missing components through the stack's own lifecycle (the experiment runs
    its own simulator, so ``sim`` is left out)."""
    argv, env = child_args(args, cfg)
    wanted = [c for c in cfg.stack.components if c not in ("sim", "dashboard")]
    up_cfg = cfg.with_overrides({"stack.components": wanted})
    up_cfg = start_stack(up_cfg, global_args=argv, child_env=env, report=_progress)
    return up_cfg.with_overrides({"stack.components": list(cfg.stack.components)})


def cmd_list(args: argparse.Namespace, cfg: FleetsimConfig) -> int:

    runs = list_runs(cfg, args.limit)
    if not runs:
        print("no experiment runs recorded")
        return 0
    print(f"{'run':<48} {'status':<7} {'devices':>7} {'detected':>9} {'recall':>7} {'prec.':>6} {'lost':>6}")
    for r in runs:
        det = f"{r['detected'] or 0}/{r['injected'] or 0}"
        rec = "-" if r["recall"] is None else f"{100 * r['recall']:.0f}%"
        pre = "-" if r["precision"] is None else f"{100 * r['precision']:.0f}%"
        print(
            f"{r['run_id']:<48} {r['status']:<7} {r['devices'] or 0:>7} {det:>9} {rec:>7} {pre:>6} "
            f"{'-' if r['lost'] is None else r['lost']:>6}"
        )
    return 0


def cmd_show(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    from fleetsim.experiments.report import summary_markdown  # matplotlib: see cmd_run

    run = get_run(cfg, args.run_id)
    if run is None:
        raise ExperimentError(f"no experiment run {args.run_id!r}; see `fleetsim experiment list`")
    report = run["report"]
    if args.json:
        print(json.dumps(report if report is not None else run, indent=2, default=str))
    elif report is None:
        print(
            f"{run['run_id']}: status {run['status']}" + (f", error: {run['error']}" if run["error"] else "")
        )
    else:
        print(summary_markdown(report))
        print(f"\nReport folder: {run['report_dir']}")
    return 0


def cmd_validate(args: argparse.Namespace, cfg: FleetsimConfig) -> int:

    for path in args.scenarios:
        sc = load_scenario(path)
        specs, injections = prepare_fleet(sc, load_fleet(sc.fleet_file))
        print(f"{path}: ok — {sc.name}: {len(specs)} devices, {sc.duration_s:g} s at speed {sc.speed}")
        for i, f in enumerate(sc.faults):
            hit = [j.device_id for j in injections if j.fault_index == i]
            if not hit:
                raise ExperimentError(f"{path}:{f.line}: this fault hits no device of the fleet")
            print(
                f"  line {f.line}: {f.kind.value} at {f.at_s:g} s for {f.duration_s:g} s"
                f" on {len(hit)} device(s)"
            )
    return 0
