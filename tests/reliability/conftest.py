"""One pipeline for the whole reliability suite, and a supervisor between its tests.

Starting dedicated engines plus a Spark job costs 30-60 s; the drills, the hostile-input and
the security checks share one (``pipe``), each on its own devices. Kafka advertises the port of
a TCP proxy (``kafka.advertised_port``), so every Kafka client goes through it: the link drill
slows or cuts it, every other test sees bytes forwarded unchanged.

Between tests, :func:`supervise` restarts whatever a failed drill left down, as a restart
policy would, so one failure does not cascade into the next test. Tests marked
``ends_pipeline`` (they leave the job stopped on purpose) run after every other test here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from fleetsim.chaos.link import LinkProxy
from fleetsim.chaos.pipeline import Pipeline, pipeline
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.kafka import kafka_port

log = logging.getLogger(__name__)
HERE = "tests/reliability/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep the suite's items contiguous (the package fixture is set up once) and put the
    # pipeline-ending tests last among them.
    mine = [i for i in items if HERE in i.nodeid]
    if not mine:
        return
    last = [i for i in mine if i.get_closest_marker("ends_pipeline")]
    ordered = [i for i in mine if i not in last] + last
    first = items.index(mine[0])
    rest = [i for i in items if HERE not in i.nodeid]
    items[:] = rest[:first] + ordered + rest[first:]


@pytest.fixture(scope="package")
def proxy() -> Iterator[LinkProxy]:
    link = LinkProxy()
    try:
        yield link
    finally:
        link.close()


@pytest.fixture(scope="package")
def pipe(
    fleet_cfg: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory, proxy: LinkProxy
) -> Iterator[Pipeline]:
    def through_proxy(cfg: FleetsimConfig) -> dict[str, Any]:
        proxy.upstream_port = kafka_port(cfg)
        return {"kafka.advertised_port": proxy.port}

    with pipeline(fleet_cfg, tmp_path_factory.mktemp("rel"), adjust=through_proxy) as p:
        yield p


@pytest.fixture(autouse=True)
def supervise(request: pytest.FixtureRequest, proxy: LinkProxy) -> Iterator[None]:
    yield
    if "pipe" not in request.fixturenames:
        return
    p: Pipeline = request.getfixturevalue("pipe")
    proxy.delay_s = 0.0
    if proxy.cutting:
        proxy.heal()
    for name in ("mosquitto", "kafka", "postgres"):
        svc = p.services[name]
        if not svc.is_running():
            log.warning("supervisor: restarting %s left down by %s", name, request.node.name)
            svc.start()
    if not p.bridge.alive:
        log.warning("supervisor: restarting the bridge left down by %s", request.node.name)
        p.start_bridge()
    if not p.stream.alive and not request.node.get_closest_marker("ends_pipeline"):
        log.warning("supervisor: restarting the streaming job left down by %s", request.node.name)
        p.start_stream()
