"""The engine services (Mosquitto, Kafka, PostgreSQL) of the kernel's component table, by name."""

from __future__ import annotations

from fleetsim.kernel.components import ENGINE_NAMES
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.base import Service
from fleetsim.stack.kafka import Kafka
from fleetsim.stack.mosquitto import Mosquitto
from fleetsim.stack.postgres import Postgres

_CLASSES: dict[str, type[Service]] = {"mosquitto": Mosquitto, "kafka": Kafka, "postgres": Postgres}

ENGINES: dict[str, type[Service]] = {name: _CLASSES[name] for name in ENGINE_NAMES}
"""Every engine of :data:`fleetsim.kernel.components.COMPONENTS`, in start order."""


def engine(name: str, cfg: FleetsimConfig) -> Service:
    """The service object for the engine ``name`` (``mosquitto``, ``kafka``, ``postgres``)."""
    return ENGINES[name](cfg)
