"""``up`` / ``down`` / ``status`` over every component of the stack, engines and applications."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import FleetsimError
from fleetsim.registry.seed import seed_at_startup
from fleetsim.stack.base import Service, ServiceStatus
from fleetsim.stack.components import APPS, AppComponent
from fleetsim.stack.kafka import Kafka
from fleetsim.stack.mosquitto import Mosquitto
from fleetsim.stack.postgres import Postgres
from fleetsim.stack.secrets import ensure_secrets

log = logging.getLogger("fleetsim.stack")

ENGINES: dict[str, type[Service]] = {"mosquitto": Mosquitto, "kafka": Kafka, "postgres": Postgres}
Component = Service | AppComponent
Report = Callable[[str], None]


def installed_commands() -> set[str]:
    """Sub-commands registered in this installation (an app whose command is absent is not installed)."""
    from fleetsim.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse offers no public accessor for sub-parsers
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            return set(choices)
    return set()


def component(name: str, cfg: FleetsimConfig, global_args: Sequence[str] = ()) -> Component:
    if name in ENGINES:
        return ENGINES[name](cfg)
    return AppComponent(name, cfg, global_args)


def up(
    cfg: FleetsimConfig,
    *,
    global_args: Sequence[str] = (),
    child_env: dict[str, str] | None = None,
    report: Report = print,
) -> FleetsimConfig:
    """Start ``cfg.stack.components`` in order, each passing its readiness check.

    Already-running components are left alone. If one fails, the components started by THIS call
    are stopped again (reverse order) and the error is re-raised: nothing is left half-started.
    Returns the config with the generated secrets filled in.
    """
    cfg = ensure_secrets(cfg)
    available = installed_commands()
    started: list[Component] = []
    try:
        for name in cfg.stack.components:
            if name in APPS and APPS[name].command not in available:
                report(f"  {name:<10} not installed (no `fleetsim {APPS[name].command}` command)")
                continue
            comp = component(name, cfg, global_args)
            if comp.is_running():
                if isinstance(comp, Service):
                    comp.start()  # idempotent: re-applies topics/roles/migrations only
                report(f"  {name:<10} already running (pid {comp.pid()})")
                if name == "postgres":
                    seed_at_startup(cfg, report)  # device registry from devices.csv (idempotent)
                continue
            report(f"  {name:<10} starting ...")
            if isinstance(comp, AppComponent):
                comp.start(env=child_env)
            else:
                comp.start()
            started.append(comp)
            report(f"  {name:<10} up (pid {comp.pid()}, port {comp.port})")
            if name == "postgres":
                seed_at_startup(cfg, report)  # device registry from devices.csv (idempotent)
    except (FleetsimError, OSError):
        for comp in reversed(started):
            try:
                comp.stop()
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s after a failed start: %s", comp.name, exc)
        raise
    return cfg


def down(cfg: FleetsimConfig, report: Report = print) -> None:
    """Stop every component (configured or not) in reverse dependency order, gracefully."""
    order = ["mosquitto", "kafka", "postgres", *APPS]
    errors = []
    for name in reversed(order):
        comp = component(name, cfg)
        try:
            if comp.stop():
                report(f"  {name:<10} stopped")
        except FleetsimError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise FleetsimError("; ".join(errors))


def status(cfg: FleetsimConfig) -> list[dict[str, Any]]:
    """One row per configured component (measured in parallel); ``state`` up/down/not installed."""
    available = installed_commands()
    names = list(cfg.stack.components)

    def one(name: str) -> dict[str, Any]:
        if name in APPS and APPS[name].command not in available:
            row = asdict(ServiceStatus(name, False, None, None, "not installed"))
            row["state"] = "not installed"
            return row
        st = component(name, cfg).status()
        row = asdict(st)
        row["state"] = "up" if st.up else ("unhealthy" if st.pid else "down")
        return row

    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        return list(pool.map(one, names))


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("COMPONENT", "STATE", "PID", "PORT", "LIVE")
    lines = [header] + [
        (r["name"], r["state"], str(r["pid"] or "-"), str(r["port"] or "-"), r["figure"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        "  ".join(col.ljust(widths[i]) if i < 4 else col for i, col in enumerate(line)) for line in lines
    )
