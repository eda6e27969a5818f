"""The one table of the stack's components: names, dependency order, and how each is measured.

Everything that lists components builds on :data:`COMPONENTS` (``stack.components`` in the
configuration, ``fleetsim up``/``down``/``status``/``--only``, the stack's application table, the
dashboard's health view). The stack adds how to run each one; runtimes (the dashboard) only need
what is here: which port to reach, and for the applications which counter is their live figure.

API:

``ComponentName``
    ``Literal`` of the seven names (the type of ``stack.components``).
``ComponentInfo(name, kind, port_key, counter="", unit="")``
    ``kind`` is ``"engine"`` (mosquitto, kafka, postgres: measured by a TCP connect to their
    configured port) or ``"app"`` (stream, bridge, sim, dashboard: ``port_key`` is their metrics
    port, or the dashboard's HTTP port; ``counter`` is the Prometheus sample whose sum is their
    live figure, ``unit`` what it counts).
``COMPONENTS``
    Every component in dependency order (start order; stop in reverse).
``COMPONENT_NAMES``, ``ENGINE_NAMES``, ``APP_NAMES``
    Their names, in the same order.
``info(name) -> ComponentInfo``
``endpoint(cfg, name) -> tuple[str, int]``
    ``(host, port)`` the component serves on (port 0: the application's metrics are disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from fleetsim.kernel.config import FleetsimConfig

ComponentName = Literal["mosquitto", "kafka", "postgres", "stream", "bridge", "sim", "dashboard"]


@dataclass(frozen=True)
class ComponentInfo:
    """What any layer may know about one component."""

    name: ComponentName
    kind: Literal["engine", "app"]
    port_key: str
    """Dotted config key of the port it serves (engines: the client port; apps: the metrics port,
    the dashboard: its HTTP port)."""
    counter: str = ""
    """Apps: the Prometheus sample summed for the live figure ('' for the dashboard)."""
    unit: str = ""
    """What ``counter`` counts, for status lines."""


COMPONENTS: tuple[ComponentInfo, ...] = (
    ComponentInfo("mosquitto", "engine", "mqtt.port"),
    ComponentInfo("kafka", "engine", "kafka.bootstrap"),
    ComponentInfo("postgres", "engine", "postgres.port"),
    ComponentInfo(
        "stream", "app", "spark.metrics_port", "fleetsim_stream_rows_written_total", "rows written"
    ),
    ComponentInfo(
        "bridge", "app", "bridge.metrics_port", "fleetsim_bridge_forwarded_total", "records forwarded"
    ),
    ComponentInfo(
        "sim", "app", "simulation.metrics_port", "fleetsim_sim_messages_total", "messages published"
    ),
    ComponentInfo("dashboard", "app", "dashboard.port"),
)
"""Every component, in dependency order."""

COMPONENT_NAMES: tuple[ComponentName, ...] = tuple(c.name for c in COMPONENTS)
ENGINE_NAMES: tuple[ComponentName, ...] = tuple(c.name for c in COMPONENTS if c.kind == "engine")
APP_NAMES: tuple[ComponentName, ...] = tuple(c.name for c in COMPONENTS if c.kind == "app")
_BY_NAME = {c.name: c for c in COMPONENTS}
assert set(COMPONENT_NAMES) == set(get_args(ComponentName)), "COMPONENTS must list every ComponentName"


def info(name: str) -> ComponentInfo:
    try:
        return _BY_NAME[name]  # type: ignore[index]
    except KeyError:
        raise KeyError(f"unknown component {name!r}; known: {', '.join(COMPONENT_NAMES)}") from None


def endpoint(cfg: FleetsimConfig, name: str) -> tuple[str, int]:
    """``(host, port)`` of ``name`` under ``cfg`` (kafka: the first bootstrap address)."""
    c = info(name)
    section, _, key = c.port_key.partition(".")
    value = getattr(getattr(cfg, section), key)
    if c.port_key == "kafka.bootstrap":
        host, _, port = str(value).split(",")[0].strip().rpartition(":")
        return host or "127.0.0.1", int(port)
    host = {"mosquitto": cfg.mqtt.host, "postgres": cfg.postgres.host, "dashboard": cfg.dashboard.host}.get(
        name, "127.0.0.1"
    )
    return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), int(value)
