"""``fleetsim chaos``: a seeded campaign of overlapping faults against a dedicated pipeline, checked
against the ground truth (thin entry point over :mod:`fleetsim.chaos`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fleetsim.chaos.runner import CampaignOptions, check_options, new_run_id, run_campaign
from fleetsim.chaos.schedule import DEFAULT_KINDS, KINDS
from fleetsim.experiments.store import record_chaos_run
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import FleetsimError
from fleetsim.kernel.timespec import parse_duration

log = logging.getLogger("fleetsim.chaos")


def _kinds(raw: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown}; known: {','.join(KINDS)}")
    return kinds


def _duration(raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "chaos",
        help="seeded overlapping faults against a dedicated pipeline; checks nothing was lost",
        description="Starts a dedicated Mosquitto, Kafka, PostgreSQL, bridge and streaming job on free ports,"
        " publishes a QoS 1 ground-truth load, injects a seeded schedule of faults (kill -9, SIGSTOP,"
        " graceful restarts, slow/cut links, PostgreSQL backend terminations, reconnect storms, device"
        " faults), then checks acknowledged - stored = {}, no duplicates, exact aggregates and the"
        " device-fault alerts. Exit code 0 only when every check passed.",
    )
    p.add_argument("--duration", type=_duration, default=_duration("5m"), help="load duration (default 5m)")
    p.add_argument("--rate", type=float, default=500.0, help="messages per second of the load (default 500)")
    p.add_argument("--seed", type=int, default=1, help="schedule seed: same seed, same schedule")
    p.add_argument(
        "--faults",
        type=_kinds,
        default=DEFAULT_KINDS,
        help=f"fault kinds, comma-separated (default all: {','.join(DEFAULT_KINDS)})",
    )
    p.add_argument("--faults-per-minute", type=float, default=2.0, help="schedule density (default 2)")
    p.add_argument("--devices", type=int, default=20, help="devices of the load (default 20)")
    p.add_argument("--storm-sessions", type=int, default=1000, help="sessions of a reconnect storm")
    p.add_argument("--out", type=Path, default=None, help="report folder (default <run dir>/chaos/<run id>)")
    p.add_argument("--keep-data", action="store_true", help="keep the dedicated stack's data after the run")
    p.add_argument("--no-record", action="store_true", help="do not list the run on the dashboard")
    p.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    p.set_defaults(func=cmd_chaos)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_chaos(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    # Command-local imports keep `fleetsim --help` and other commands' start-up cheap.
    from datetime import UTC, datetime

    # The chaos package (and through it the stack) loads only for this command.
    from fleetsim.chaos.report import summary_markdown

    opts = CampaignOptions(
        duration_s=args.duration,
        rate=args.rate,
        seed=args.seed,
        kinds=args.faults,
        devices=args.devices,
        faults_per_minute=args.faults_per_minute,
        storm_sessions=args.storm_sessions,
        keep_data=args.keep_data,
    )
    check_options(opts)
    run_id = new_run_id(opts.seed, datetime.now(UTC))
    out = args.out or cfg.run_dir / "chaos" / run_id
    report = run_campaign(cfg, out, opts, progress=_progress, run_id=run_id)
    if not args.no_record:
        # The dashboard of the *running* stack lists the run; the campaign's own stack is gone.
        try:
            record_chaos_run(cfg, report)
        except FleetsimError as exc:  # no running stack, no secrets yet: the report stands alone
            _progress(f"not listed on the dashboard ({exc}); start the stack's PostgreSQL to list runs")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(summary_markdown(report))
        print(f"Report: {out}")
    return 0 if report["passed"] else 1
