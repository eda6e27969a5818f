"""Stack sub-commands: up, down, status, logs, psql, tap, config show, setup-check.

Thin entry points: the work is in :mod:`fleetsim.stack.lifecycle`, :mod:`fleetsim.stack.tap` and
the service modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleetsim.cloud.streaming.session import connector_jars
from fleetsim.kernel.clients import pg_url
from fleetsim.kernel.components import COMPONENT_NAMES, ENGINE_NAMES
from fleetsim.kernel.config import ENV_DELIMITER, ENV_PREFIX, FleetsimConfig, secret
from fleetsim.kernel.errors import FleetsimError, MissingDependencyError, StackError
from fleetsim.registry.seed import seed_at_startup
from fleetsim.stack import cluster, lifecycle, tap, tls
from fleetsim.stack.cluster_kafka import format_partitions
from fleetsim.stack.postgres import pg_binary

COMPONENTS = COMPONENT_NAMES
PROFILES = ("single", "cluster")
"""``--profile``: ``single`` (one process per component) or ``cluster`` (docs/scale-out.md)."""


def _quiet_kafka_client() -> None:
    # kafka-python logs every refused connection while a broker starts; our own messages say
    # what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def child_args(args: argparse.Namespace, cfg: FleetsimConfig) -> tuple[list[str], dict[str, str]]:
    """Global flags and environment so the app components load exactly this configuration."""
    argv: list[str] = []
    if getattr(args, "config", None):
        argv += ["--config", str(Path(args.config).resolve())]
    for item in getattr(args, "overrides", []) or []:
        argv += ["--set", item]
    # The run dir decides where the secrets file is read from: pass it as the environment does.
    env = {f"{ENV_PREFIX}STACK{ENV_DELIMITER}RUN_DIR": str(cfg.run_dir.resolve())}
    return argv, env


def start_stack(
    cfg: FleetsimConfig,
    *,
    global_args: Sequence[str] = (),
    child_env: dict[str, str] | None = None,
    report: lifecycle.Report = print,
    profile: str = "single",
) -> FleetsimConfig:
    """:func:`lifecycle.up` (or :func:`cluster.up`) with the device registry seeded from the fleet
    file once PostgreSQL is up."""
    start = cluster.up if profile == "cluster" else lifecycle.up
    return start(
        cfg,
        global_args=global_args,
        child_env=child_env,
        report=report,
        after_start={"postgres": seed_at_startup},
    )


# ------------------------------------------------------------------------------------ commands
def run_up(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    _quiet_kafka_client()
    global_args, env = child_args(args, cfg)
    profile = args.profile
    print(f"fleetsim up --profile {profile}: {', '.join(cfg.stack.components)} (run dir {cfg.run_dir})")
    cfg = start_stack(cfg, global_args=global_args, child_env=env, profile=profile)
    print(f"secrets: {cfg.secrets_file} (mode 0600)")

    if tls.tls_enabled(cfg) and "mosquitto" in cfg.stack.components:
        print(f"Devices (TLS): {tls.public_host(cfg)}:{cfg.mqtt.tls_port}, CA file {tls.files(cfg).ca_cert}")
    dash = lifecycle.component("dashboard", cfg)
    if profile == "cluster":
        print(f"Spark master UI: {cfg.spark.master_ui_url}; Kafka: {cfg.kafka.bootstrap}")
    if "dashboard" in cfg.stack.components and dash.is_running():
        print(f"Dashboard: http://{cfg.dashboard.host}:{cfg.dashboard.port}/")
    else:
        print("Dashboard: not running (see `fleetsim status`)")
    return 0


def run_down(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    if args.profile != "cluster":
        lifecycle.down(cfg)
    # Either way, every process of the cluster profile too: a plain `down` must not leave brokers,
    # Spark daemons or extra bridges running because the stack was started with --profile cluster.
    cluster.down(cfg)
    print(f"fleetsim down --profile {args.profile}: everything stopped")
    return 0


def _urls(cfg: FleetsimConfig) -> dict[str, str]:

    return {
        "mqtt": f"mqtt://{cfg.mqtt.tool_user}@{cfg.mqtt.host}:{cfg.mqtt.port}",
        "kafka": f"kafka+sasl://{cfg.kafka.admin_user}@{cfg.kafka.bootstrap}",
        "postgres": pg_url(cfg, "admin"),
        "postgres_writer": pg_url(cfg, "writer"),
        "postgres_reader": pg_url(cfg, "reader"),
        "dashboard": f"http://{cfg.dashboard.host}:{cfg.dashboard.port}/",
    }


def run_status(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    _quiet_kafka_client()
    if args.profile != "cluster":
        rows = lifecycle.status(cfg)
        if args.json:
            doc = {
                "run_dir": str(cfg.run_dir),
                "secrets_file": str(cfg.secrets_file),
                "urls": _urls(cfg),
                "components": rows,
            }
            print(json.dumps(doc, indent=2, default=str))
        else:
            print(lifecycle.format_table(rows))
        return 0
    rows = cluster.status(cfg)
    parts: list[Any] = []
    parts_error = ""
    if not any(r["state"] == "up" for r in rows if r["name"].startswith("kafka-")):
        parts_error = "no Kafka broker is up: no partition table"
    else:
        try:
            parts = cluster.partitions(cfg)
        except Exception as exc:  # no broker answers: say so, the process table tells the rest
            parts_error = f"no Kafka broker answers: {exc}"
    pcfg = cluster.profile_config(cfg)
    if args.json:
        cdoc: dict[str, Any] = {
            "profile": "cluster",
            "run_dir": str(cfg.run_dir),
            "secrets_file": str(cfg.secrets_file),
            "urls": {**_urls(pcfg), "spark_master_ui": pcfg.spark.master_ui_url},
            "components": rows,
            "partitions": [asdict(p) for p in parts],
            "partitions_error": parts_error,
        }
        print(json.dumps(cdoc, indent=2, default=str))
    else:
        print(lifecycle.format_table(rows))
        print()
        print(parts_error or format_partitions(parts))
    return 0


def run_logs(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    allowed = cluster.member_names(cfg) if args.profile == "cluster" else list(COMPONENTS)
    if args.component not in allowed:
        raise FleetsimError(
            f"logs: unknown component {args.component!r} for --profile {args.profile}; "
            f"allowed: {', '.join(allowed)}"
        )
    path = cfg.run_dir / "logs" / f"{args.component}.log"
    if not path.is_file():
        raise StackError(f"no log for {args.component} yet ({path}): start it with `fleetsim up`")
    if args.follow:
        tail = shutil.which("tail")
        if tail is None:
            raise MissingDependencyError("`tail` not found (coreutils)")
        sys.stdout.flush()
        os.execv(tail, [tail, "-n", str(args.lines), "-F", str(path)])  # noqa: S606 - fixed binary
    lines = path.read_bytes()[-2_000_000:].decode(errors="replace").splitlines()[-args.lines :]
    print("\n".join(lines))
    return 0


def run_psql(args: argparse.Namespace, cfg: FleetsimConfig) -> int:

    try:
        psql = shutil.which("psql") or pg_binary("psql")
    except MissingDependencyError as exc:
        raise MissingDependencyError("psql not found: run `make setup`") from exc
    pg = cfg.postgres
    role = args.role
    user = getattr(pg, f"{role}_user")
    env = {
        **os.environ,
        # The environment of our own child only (same OS user), never the command line.
        "PGPASSWORD": secret(getattr(pg, f"{role}_password"), f"postgres.{role}_password"),
        "PGSSLMODE": pg.sslmode,
        "PGAPPNAME": "fleetsim-psql",
    }
    argv = [psql, "-h", pg.host, "-p", str(pg.port), "-U", user, "-d", pg.database, "-v", "ON_ERROR_STOP=1"]
    if args.command:
        argv += ["-c", args.command]
    sys.stdout.flush()
    os.execve(psql, argv, env)  # noqa: S606 - psql with fixed arguments
    return 0  # pragma: no cover - execve does not return


def _print_flush(line: str) -> None:
    print(line, flush=True)


def run_tap(args: argparse.Namespace, cfg: FleetsimConfig) -> int:

    _quiet_kafka_client()
    count = args.count
    if args.source == "mqtt":
        tap.tap_mqtt(cfg, args.target, count, out=lambda s: print(s, flush=True))
    else:
        tap.tap_kafka(
            cfg, args.target, count, from_beginning=args.from_beginning, out=lambda s: print(s, flush=True)
        )
    return 0


def run_config_show(_args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    print(json.dumps(cfg.redacted(), indent=2, default=str))
    return 0


def run_setup_check(_args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    """Report every missing binary or jar at once (each from the service that needs it)."""
    problems = []
    for name in ENGINE_NAMES:
        try:
            lifecycle.component(name, cfg).check_dependencies()  # type: ignore[union-attr]
        except MissingDependencyError as exc:
            problems.append(f"{name}: {exc}")
    try:
        connector_jars(cfg)  # the job's own rule: the Kafka connector, and the extension if needed
    except MissingDependencyError as exc:
        problems.append(f"stream: {exc}")
    for line in problems:
        print(line)
    if problems:
        return 1
    print("everything the local stack needs is installed")
    return 0


# ------------------------------------------------------------------------------------ parsers
def _components_override(args: argparse.Namespace) -> dict[str, Any]:
    listen = {"mqtt.listen": args.listen} if getattr(args, "listen", None) else {}
    if not getattr(args, "only", None):
        return listen
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise FleetsimError(f"--only: unknown component {unknown[0]!r}; allowed: {', '.join(COMPONENTS)}")
    return {"stack.components": [n for n in COMPONENTS if n in names], **listen}


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="single",
        help="single: one process per component (default); cluster: 3 Kafka brokers (RF 3), a Spark "
        "master + workers, 2 bridges, 2 simulator shards ([cluster] settings, docs/scale-out.md)",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("up", help="start the local stack (engines, then the app components)")
    _add_profile(p)
    p.add_argument("--only", metavar="A,B", help=f"start only these components (of {', '.join(COMPONENTS)})")
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help="also accept remote devices: a TLS-only MQTT listener on ADDR:<mqtt.tls_port> with a "
        "generated CA (the plain listener stays on loopback); see docs/real-sensors.md",
    )
    p.set_defaults(func=run_up, config_overrides=_components_override)

    p = subparsers.add_parser("down", help="stop every component gracefully (reverse order)")
    _add_profile(p)
    p.set_defaults(func=run_down)

    p = subparsers.add_parser("status", help="up/down, pid, port and a live figure per component")
    _add_profile(p)
    p.add_argument(
        "--json", action="store_true", help="machine-readable, with connection URLs and secrets path"
    )
    p.set_defaults(func=run_status)

    p = subparsers.add_parser("logs", help="show a component's log")
    _add_profile(p)
    p.add_argument(
        "component",
        help=f"one of {', '.join(COMPONENTS)}; with --profile cluster: kafka-1, spark-master, "
        "spark-worker-1, bridge-2, sim-1, ... (see `fleetsim status --profile cluster`)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=100, help="lines to show (default 100)")
    p.set_defaults(func=run_logs)

    p = subparsers.add_parser("psql", help="open psql on the stack's database (admin role by default)")
    p.add_argument("-c", dest="command", metavar="SQL", help="run one command and exit")
    p.add_argument("--role", choices=["admin", "writer", "reader"], default="admin")
    p.set_defaults(func=run_psql)

    p = subparsers.add_parser("tap", help="print live messages: tap mqtt <filter> | tap kafka <topic>")
    p.add_argument("source", choices=["mqtt", "kafka"])
    p.add_argument("target", help="MQTT topic filter (e.g. 'sensors/#') or Kafka topic")
    p.add_argument("-n", dest="count", type=int, default=None, help="stop after N messages")
    p.add_argument("--from-beginning", action="store_true", help="kafka: start at the earliest offset")
    p.set_defaults(func=run_tap)

    p = subparsers.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the effective configuration (secrets masked)")
    show.set_defaults(func=run_config_show)

    p = subparsers.add_parser("setup-check", help="say what `make setup` still has to install")
    p.set_defaults(func=run_setup_check)
