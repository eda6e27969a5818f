"""``up`` / ``down`` / ``status`` over every component of the stack, engines and applications."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from fleetsim.kernel.components import COMPONENT_NAMES
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import FleetsimError
from fleetsim.stack.base import Service
from fleetsim.stack.components import AppComponent
from fleetsim.stack.engines import ENGINES
from fleetsim.stack.secrets import ensure_secrets

log = logging.getLogger("fleetsim.stack")

Component = Service | AppComponent
Report = Callable[[str], None]
AfterStart = Callable[[FleetsimConfig, Report], object]


def component(name: str, cfg: FleetsimConfig, global_args: Sequence[str] = ()) -> Component:
    if name in ENGINES:
        return ENGINES[name](cfg)
    return AppComponent(name, cfg, global_args)


WAVES: tuple[tuple[str, ...], ...] = (
    ("mosquitto", "kafka", "postgres"),
    ("stream", "bridge", "dashboard"),
    ("sim",),
)
"""Start order: the members of a wave start side by side (none needs another of its wave: the
engines need nothing, the job, the bridge and the dashboard need only engines), a wave starts once
the one before is up. The simulator comes last: a reading published before the bridge has
subscribed would reach no one."""


def up(
    cfg: FleetsimConfig,
    *,
    global_args: Sequence[str] = (),
    child_env: dict[str, str] | None = None,
    report: Report = print,
    after_start: Mapping[str, AfterStart] | None = None,
) -> FleetsimConfig:
    """Start ``cfg.stack.components`` wave by wave (:data:`WAVES`), each passing its readiness check.

    Already-running components are left alone. If one fails, the components started by THIS call
    are stopped again (reverse order) and the error is re-raised: nothing is left half-started.
    Returns the config with the generated secrets filled in. ``after_start[name]`` runs once
    component ``name`` is up, whether this call started it or it was running already (the
    operations layer passes the device-registry seeding for ``postgres`` this way), before the
    next wave starts.
    """
    cfg = ensure_secrets(cfg)
    hooks = after_start or {}
    started: list[Component] = []
    try:
        for wave in WAVES:
            names = [n for n in cfg.stack.components if n in wave]
            comps = [component(name, cfg, global_args) for name in names]
            fresh = []
            for comp in comps:
                if comp.is_running():
                    if isinstance(comp, Service):
                        comp.start()  # idempotent: re-applies topics/roles/migrations only
                    report(f"  {comp.name:<10} already running (pid {comp.pid()})")
                else:
                    report(f"  {comp.name:<10} starting ...")
                    fresh.append(comp)
            _start_side_by_side(fresh, child_env, started, report)
            for name in names:
                if name in hooks:
                    hooks[name](cfg, report)
    except Exception:
        for comp in reversed(started):
            try:
                comp.stop()
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s after a failed start: %s", comp.name, exc)
        raise
    return cfg


def _start_side_by_side(
    comps: list[Component], child_env: dict[str, str] | None, started: list[Component], report: Report
) -> None:
    """Start ``comps`` at once; each that comes up is appended to ``started`` (so a failure of
    another still gets it stopped); the first failure is raised once every start has ended."""

    def one(comp: Component) -> None:
        if isinstance(comp, AppComponent):
            comp.start(env=child_env)
        else:
            comp.start()

    with ThreadPoolExecutor(max_workers=max(len(comps), 1)) as pool:
        futures = [(comp, pool.submit(one, comp)) for comp in comps]
        errors: list[BaseException] = []
        for comp, future in futures:
            try:
                future.result()
            except Exception as exc:  # every start is waited for before one error is raised
                errors.append(exc)
                continue
            started.append(comp)
            report(f"  {comp.name:<10} up (pid {comp.pid()}, port {comp.port})")
    if errors:
        raise errors[0]


def down(cfg: FleetsimConfig, report: Report = print) -> None:
    """Stop every component (configured or not) in reverse dependency order, gracefully."""
    errors = []
    for name in reversed(COMPONENT_NAMES):
        comp = component(name, cfg)
        try:
            if comp.stop():
                report(f"  {name:<10} stopped")
        except FleetsimError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise FleetsimError("; ".join(errors))


def status(cfg: FleetsimConfig) -> list[dict[str, Any]]:
    """One row per configured component (measured in parallel); ``state`` up, down or unhealthy."""
    names = list(cfg.stack.components)

    def one(name: str) -> dict[str, Any]:
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
