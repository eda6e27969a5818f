"""The native local stack: Mosquitto, Kafka (KRaft) and PostgreSQL under one run directory.

Use :data:`SERVICES` / :func:`service` for the shared stack, and :func:`dedicated` for a
separate, throw-away instance with its own ports and run dir (see :mod:`fleetsim.stack.isolated`).
"""

from __future__ import annotations

from fleetsim.stack.base import Service, ServiceStatus
from fleetsim.stack.engines import ENGINES
from fleetsim.stack.engines import engine as service
from fleetsim.stack.isolated import dedicated, isolated_config
from fleetsim.stack.kafka import Kafka
from fleetsim.stack.mosquitto import Mosquitto
from fleetsim.stack.postgres import Postgres
from fleetsim.stack.secrets import ensure_secrets

SERVICES: dict[str, type[Service]] = ENGINES
"""The engine services, in start order (:mod:`fleetsim.stack.engines`); :func:`service` gives
the service object for one of them by name."""


__all__ = [
    "SERVICES",
    "Kafka",
    "Mosquitto",
    "Postgres",
    "Service",
    "ServiceStatus",
    "dedicated",
    "ensure_secrets",
    "isolated_config",
    "service",
]
