"""Session-scoped fixtures: real Mosquitto, Kafka and PostgreSQL on free ports, torn down at the end.

- ``fleet_cfg``: a :class:`FleetsimConfig` with free loopback ports for every service, a tmp run
  dir, the repo's JVM jar cache and freshly generated secrets. Nothing is started.
- ``mosquitto`` / ``kafka`` / ``postgres``: start that real service through the stack code
  (Kafka with its topics and ACLs, PostgreSQL with roles and migrations) and return ``fleet_cfg``.
- ``kafka_topics(prefix)``: a cfg copy whose telemetry/dead-letter topics are fresh, unique and
  created (with the bridge/stream ACLs) on the running broker.
- ``private_mosquitto``: function-scoped; a cfg copy (of ``fleet_cfg``: same Kafka/PostgreSQL)
  pointing at a fresh Mosquitto of its own (~0.1 s to start). Use it when a test counts every
  message on ``sensors/+/telemetry``: on the shared broker, other tests' publishers may be live.

Tests that disrupt a service (stop it, kill -9 it) must use their own instance:
``fleetsim.stack.dedicated`` (see its docstring), never these shared ones.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from fleetsim.bench.engines import fresh_topics
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.errors import MissingDependencyError
from fleetsim.stack import Kafka, Mosquitto, Postgres, isolated_config
from fleetsim.stack.base import Service
from fleetsim.stack.process import free_ports

# CI replays the same generated examples every run: a property test that finds a new bug should
# fail a developer's run (random search) and then be pinned with @example, not turn CI red at random.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `make test` runs lint, types and the engine-free tests beside the integration tests' first
    # two or three minutes: the chaos campaign, the hungriest and most timing-bound of them, last.
    items.sort(key=lambda i: i.nodeid.startswith("tests/chaos/"))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def fleet_cfg(tmp_path_factory: pytest.TempPathFactory) -> FleetsimConfig:
    # environ={}: a developer's FLEETSIM_* variables must not leak into the tests.
    base = load_config(REPO / "fleetsim.toml", environ={})
    base = base.with_overrides(
        {
            "stack.jvm_dir": str(REPO / ".cache" / "jvm"),
            "stack.start_timeout_s": 120,
            "stack.stop_timeout_s": 30,
            "simulation.devices_file": str(REPO / "devices.csv"),
        }
    )
    return isolated_config(base, tmp_path_factory.mktemp("fleet"))


def _run_service(svc: Service) -> Iterator[FleetsimConfig]:
    try:
        svc.start()
    except MissingDependencyError as exc:
        # Not a skip: a machine without the stack must say so loudly.
        pytest.fail(f"{svc.name} cannot start: {exc}", pytrace=False)
    try:
        yield svc.cfg
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def mosquitto(fleet_cfg: FleetsimConfig) -> Iterator[FleetsimConfig]:
    yield from _run_service(Mosquitto(fleet_cfg))


@pytest.fixture(scope="session")
def kafka(fleet_cfg: FleetsimConfig) -> Iterator[FleetsimConfig]:
    yield from _run_service(Kafka(fleet_cfg))


@pytest.fixture(scope="session")
def postgres(fleet_cfg: FleetsimConfig) -> Iterator[FleetsimConfig]:
    yield from _run_service(Postgres(fleet_cfg))


@pytest.fixture
def private_mosquitto(
    fleet_cfg: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetsimConfig]:
    (port,) = free_ports(1)
    # Own run dir: the broker's files (config, passwd, persistence) must not touch the shared one's.
    run_dir = tmp_path_factory.mktemp("private-mqtt")
    yield from _run_service(
        Mosquitto(fleet_cfg.with_overrides({"mqtt.port": port, "stack.run_dir": str(run_dir)}))
    )


@pytest.fixture(scope="session")
def kafka_topics(kafka: FleetsimConfig) -> Callable[..., FleetsimConfig]:
    """Factory: ``kafka_topics("bridge")`` -> cfg with fresh ``bridge.<id>.telemetry``/``.deadletter``."""

    def make(prefix: str = "test") -> FleetsimConfig:
        return fresh_topics(kafka, re.sub(r"[^A-Za-z0-9_-]", "-", prefix)[:80] or "test")

    return make
