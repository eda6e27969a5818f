"""The cluster profile's Kafka for real: three KRaft brokers (combined broker + controller) on
loopback ports, topics at replication factor 3 with ``min.insync.replicas=2``, the single-node
stack's SASL identities and ACLs. Losing one broker (kill -9) moves its leaderships and an
``acks=all`` producer keeps being served; losing a second one stops it (2 in-sync replicas required).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from fleetsim.kernel.clients import kafka_python_kwargs
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import isolated_config, process
from fleetsim.stack.cluster_kafka import KafkaCluster, partition_table
from fleetsim.stack.cluster_ports import ClusterPorts, free_port_base, profile_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(fleet_cfg: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    cfg = isolated_config(fleet_cfg, tmp_path_factory.mktemp("kafka-cluster"))
    cfg = profile_config(cfg.with_overrides({"cluster.port_base": free_port_base()}))
    kc = KafkaCluster(cfg, ClusterPorts.of(cfg).brokers)
    kc.start()
    try:
        yield kc
    finally:
        kc.stop()


def produce(cfg: FleetsimConfig, n: int, timeout_s: float = 30.0) -> None:
    """``n`` records as the bridge sends them (its identity, ``acks=all``); raises if not stored."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **kafka_python_kwargs(cfg, "bridge"), acks="all", retries=0, request_timeout_ms=10_000
    )
    try:
        futures = [producer.send(cfg.kafka.telemetry_topic, key=b"dev-%d" % i, value=b"x") for i in range(n)]
        producer.flush(timeout=timeout_s)
        for f in futures:
            f.get(timeout=timeout_s)
    finally:
        producer.close(timeout=5)


def test_three_brokers_replicate_every_partition_and_survive_one_loss(cluster: KafkaCluster) -> None:
    cfg = cluster.cfg
    parts = partition_table(cfg)
    assert len(parts) == 2 * cfg.kafka.partitions
    assert all(len(p.replicas) == 3 and set(p.isr) == set(p.replicas) for p in parts), parts
    assert {p.leader for p in parts} == {1, 2, 3}, "leaders are spread over the three brokers"
    text = (cluster.brokers[0].home / "server.properties").read_text()
    assert "min.insync.replicas=2\n" in text and "default.replication.factor=3\n" in text
    produce(cfg, 100)

    victim = cluster.brokers[0]
    pid = victim.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert process.wait_for(lambda: not process.pid_alive(pid), 10.0)

    def moved() -> bool:
        now = partition_table(cfg)
        return all(p.leader in (2, 3) and 1 not in p.isr for p in now)

    assert process.wait_for(moved, 60.0, 0.5), partition_table(cfg)
    produce(cfg, 100)  # 2 in-sync replicas left: acks=all is still served
    assert "not in sync" in cluster.brokers[1].status().figure

    # A second loss leaves one replica: below min.insync.replicas, acks=all must be refused.
    second = cluster.brokers[1]
    second.stop()
    with pytest.raises(Exception, match=r"NotEnoughReplicas|KafkaTimeout|Timed out"):
        produce(cfg, 1, timeout_s=15.0)

    # Both come back from their data directories and catch up into the in-sync set.
    victim.start()
    second.start()
    assert process.wait_for(lambda: all(len(p.isr) == 3 for p in partition_table(cfg)), 90.0, 1.0)


def test_bridge_identity_cannot_administer_the_cluster(cluster: KafkaCluster) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAuthorizationFailedError

    admin = KafkaAdminClient(**kafka_python_kwargs(cluster.cfg, "bridge"), request_timeout_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            admin.create_topics([NewTopic("not-allowed", 1, 3)], timeout_ms=10_000)
    finally:
        admin.close()
