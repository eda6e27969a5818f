"""Separate, throw-away service instances for tests that disrupt a service.

A test that stops Kafka for 30 s or kill -9s Mosquitto must not break the shared session
fixtures; it starts its own instance with fresh ports, run dir and credentials::

    from fleetsim.stack import dedicated

    def test_bridge_survives_broker_crash(fleet_cfg, tmp_path):
        with dedicated(fleet_cfg, tmp_path / "own", "mosquitto", "kafka") as (cfg, svcs):
            ...                       # cfg: ports/run dir/secrets of the dedicated instances
            svcs["kafka"].stop()      # disrupt freely
            svcs["kafka"].start()     # same data dir: data survives
        # everything stopped here, even on failure

Services not listed are not started (``cfg`` still has free ports for them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fleetsim.kernel.components import COMPONENTS
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import process
from fleetsim.stack.base import Service
from fleetsim.stack.engines import engine
from fleetsim.stack.secrets import ensure_secrets

PORT_KEYS = (
    *(c.port_key for c in COMPONENTS),  # each component's own port (kafka: its bootstrap address)
    "mqtt.tls_port",
    "kafka.controller_port",
    "spark.ui_port",
)


def isolated_config(base: FleetsimConfig, run_dir: Path) -> FleetsimConfig:
    """A copy of ``base`` with free loopback ports for every service, ``run_dir``, and fresh secrets.

    Passwords of ``base`` are dropped so the new instance gets its own (in ``run_dir``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = process.free_ports(len(PORT_KEYS))
    overrides: dict[str, object] = {}
    for key, port in zip(PORT_KEYS, ports, strict=True):
        overrides[key] = f"127.0.0.1:{port}" if key == "kafka.bootstrap" else port
    overrides["stack.run_dir"] = str(run_dir)
    overrides["kafka.advertised_port"] = None  # a port of base's setup (a proxy), not of this one
    overrides["spark.checkpoint_dir"] = None
    overrides["simulation.ledger_file"] = None
    for section, model in type(base).model_fields.items():
        for key in getattr(model.annotation, "model_fields", {}):
            if key.endswith("_password"):
                overrides[f"{section}.{key}"] = None
    return ensure_secrets(base.with_overrides(overrides))


@contextlib.contextmanager
def dedicated(
    base: FleetsimConfig,
    run_dir: Path,
    *names: str,
    adjust: Callable[[FleetsimConfig], Mapping[str, Any]] | None = None,
) -> Iterator[tuple[FleetsimConfig, dict[str, Service]]]:
    """Start dedicated instances of ``names`` (all at once); stop them all on exit.

    ``adjust``, when given, is called with the isolated config (its ports chosen) before any
    service starts and returns overrides for it, e.g. ``kafka.advertised_port`` of a TCP proxy
    that must know the broker's port first.
    """
    cfg = isolated_config(base, run_dir)
    if adjust is not None:
        cfg = cfg.with_overrides(adjust(cfg))
    # Every one, before any starts: a failed start still gets the others stopped below.
    started: dict[str, Service] = {name: engine(name, cfg) for name in names}
    try:
        # The engines do not need each other to start, and each start mostly waits (a JVM
        # booting, initdb, a readiness probe): side by side, a stack is up in the time of its
        # slowest engine instead of the sum (Kafka's ~8 s and PostgreSQL's ~4 s here).
        with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
            for future in [pool.submit(svc.start) for svc in started.values()]:
                future.result()
        yield cfg, started
    finally:
        for svc in reversed(list(started.values())):
            with contextlib.suppress(Exception):
                svc.stop()
