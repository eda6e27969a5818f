"""``fleetsim`` command line: a thin dispatcher.

Each runtime registers its own sub-commands through a ``register(subparsers)`` function in its
thin ``cli`` module; the operations commands (stack, devices, alerts, experiments, bench) live beside this
file. :data:`COMMANDS` lists them all, imported here so the import graph shows every entry point.
A registered command sets ``func(args, cfg) -> int`` with ``parser.set_defaults(func=...)``.
The configuration is loaded and validated here, once, then passed down.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleetsim.bridge import cli as bridge_cli
from fleetsim.cli import alerts, bench, chaos, devices, experiments
from fleetsim.cli import stack as cli_stack
from fleetsim.cloud.dashboard import cli as dashboard_cli
from fleetsim.cloud.streaming import cli as stream_cli
from fleetsim.edge import cli as edge_cli
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.errors import FleetsimError
from fleetsim.stack import compose_support

COMMANDS = (
    cli_stack,  # up, down, status, logs, psql, tap, config, setup-check
    compose_support,  # compose-init (one-shot set-up of docker-compose.yml)
    devices,  # device add/list/show/disable/rotate-credentials
    edge_cli,  # sim, fault
    bridge_cli,  # bridge
    stream_cli,  # stream
    dashboard_cli,  # dashboard
    experiments,  # experiment
    alerts,  # alerts list/show/ack/resolve/note (incidents)
    bench,  # bench
    chaos,  # chaos (a seeded fault campaign against a dedicated pipeline)
)
"""Modules that register sub-commands, in ``--help`` order."""

log = logging.getLogger("fleetsim")


def _parse_set(values: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise FleetsimError(f"--set expects section.key=value, got {item!r}")
        out[key.strip()] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetsim",
        description="Edge-to-cloud IoT fleet simulator and streaming pipeline.",
    )
    parser.add_argument("--config", type=Path, default=None, help="config file (default ./fleetsim.toml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set mqtt.port=1884",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        cfg: FleetsimConfig = load_config(args.config, overrides=_parse_set(args.overrides))
        cli_overrides = getattr(args, "config_overrides", None)
        if callable(cli_overrides):
            extra = cli_overrides(args)
            if extra:
                cfg = cfg.with_overrides(extra)
        return int(args.func(args, cfg) or 0)
    except FleetsimError as exc:
        print(f"fleetsim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
