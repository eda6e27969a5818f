"""Three (``cluster.brokers``) KRaft Kafka brokers on loopback ports, for the cluster profile.

Each broker is a combined broker + controller and every one of them is a controller voter, so the
metadata quorum survives losing any single node. They share the single-node broker's settings
(SASL/PLAIN on both listeners, the StandardAuthorizer with deny-by-default, the same identities
and ACLs) and differ only in their node id, ports, data directory, and the replication settings:
``default.replication.factor`` and the internal topics at ``cluster.replication_factor``,
``min.insync.replicas`` at ``cluster.min_insync_replicas``, so an ``acks=all`` producer (the
bridge) is told "stored" only once that many replicas have the record.

The brokers start together (a lone voter of three never becomes ready: it waits for a quorum),
then the topics and ACLs are created once through all three bootstrap addresses.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fleetsim.kernel.clients import kafka_python_kwargs
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StackError
from fleetsim.stack import process
from fleetsim.stack.kafka import Kafka, _cluster_id, broker_properties, ensure_topics, render_properties

log = logging.getLogger("fleetsim.stack.cluster")


@dataclass(frozen=True)
class BrokerAddr:
    """Where one broker of the cluster listens."""

    node_id: int
    """KRaft node id (1-based, also the broker's number in its name ``kafka-<n>``)."""
    port: int
    """Client (SASL) listener port on 127.0.0.1."""
    controller_port: int
    """Controller listener port on 127.0.0.1."""


class KafkaBroker(Kafka):
    """One broker of the cluster: ``kafka-<n>`` with its own home, log and pid file."""

    def __init__(self, cfg: FleetsimConfig, me: BrokerAddr, all_brokers: tuple[BrokerAddr, ...]) -> None:
        # The broker's own view: bootstrap on itself only (its readiness probe must ask IT), its
        # own controller port, and the cluster's (small) broker heap.
        own = cfg.with_overrides(
            {
                "kafka.bootstrap": f"127.0.0.1:{me.port}",
                "kafka.controller_port": me.controller_port,
                "kafka.heap_mb": cfg.cluster.broker_heap_mb,
                "kafka.advertised_port": None,
            }
        )
        super().__init__(own)
        self.me = me
        self.all_brokers = all_brokers
        self.name = f"kafka-{me.node_id}"

    def properties(self) -> str:
        c = self.cfg.cluster
        props = broker_properties(self.cfg, self.data_dir)
        rf, isr = str(c.replication_factor), str(c.min_insync_replicas)
        voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in self.all_brokers)
        props.update(
            {
                "node.id": str(self.me.node_id),
                "controller.quorum.voters": voters,
                "default.replication.factor": rf,
                "min.insync.replicas": isr,
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": isr,
                "share.coordinator.state.topic.replication.factor": rf,
                "share.coordinator.state.topic.min.isr": isr,
                # A replica that restarts after a kill -9 must not become leader with less data.
                "unclean.leader.election.enable": "false",
            }
        )
        return render_properties(props)

    def cluster_id(self) -> str:
        # Every broker's storage must carry the same cluster id: kept once beside the brokers.
        # Created exclusively: brokers formatting at the same time must not each write their own.
        path = self.cfg.run_dir / "kafka-cluster.id"
        # Written aside, then linked into place: a reader never sees a half-written file.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{self.me.node_id}.tmp")
        tmp.write_text(_cluster_id() + "\n", encoding="ascii")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
        return path.read_text(encoding="ascii").strip()

    def after_ready(self) -> None:
        """Nothing per broker: topics and ACLs are made once for the cluster (:meth:`KafkaCluster.start`)."""

    def live(self) -> tuple[str, dict[str, Any]]:
        parts = partition_table(self.cfg)
        led = [p for p in parts if p.leader == self.me.node_id]
        hosted = [p for p in parts if self.me.node_id in p.replicas]
        behind = [p for p in hosted if self.me.node_id not in p.isr]
        figure = (
            f"leader of {len(led)}/{len(parts)} partitions, replica of {len(hosted)}, "
            f"{len(behind)} not in sync"
        )
        return figure, {"leader_of": len(led), "replica_of": len(hosted), "not_in_sync": len(behind)}


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata reports it."""

    topic: str
    partition: int
    leader: int
    """Node id of the leader (-1: none, the partition is offline)."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    """In-sync replicas."""


def partition_table(cfg: FleetsimConfig) -> list[PartitionState]:
    """Leaders, replicas and in-sync replicas of the telemetry and dead-letter topics."""
    # Lazy: kafka-python costs ~0.1 s to import; only the commands that talk to Kafka pay it.
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        **kafka_python_kwargs(cfg, "admin"), request_timeout_ms=5000, bootstrap_timeout_ms=5000
    )
    try:
        described = admin.describe_topics([cfg.kafka.telemetry_topic, cfg.kafka.deadletter_topic])
    finally:
        admin.close()
    out = []
    for topic in described:  # kafka-python 3 hands the MetadataResponse fields in snake case
        if topic.get("error_code"):
            raise StackError(f"describing topic {topic.get('name')}: error {topic['error_code']}")
        for p in topic["partitions"]:
            out.append(
                PartitionState(
                    topic["name"],
                    p["partition_index"],
                    p["leader_id"],
                    tuple(p["replica_nodes"]),
                    tuple(p["isr_nodes"]),
                )
            )
    return sorted(out, key=lambda p: (p.topic, p.partition))


def format_partitions(parts: list[PartitionState]) -> str:
    lines = [("TOPIC", "PARTITION", "LEADER", "REPLICAS", "IN-SYNC")]
    for p in parts:
        leader = f"kafka-{p.leader}" if p.leader >= 0 else "NONE (offline)"
        lines.append(
            (p.topic, str(p.partition), leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)))
        )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join("  ".join(col.ljust(widths[i]) for i, col in enumerate(line)).rstrip() for line in lines)


class KafkaCluster:
    """Start/stop the brokers together; ``cfg`` is the profile's config (bootstrap on all of them)."""

    def __init__(self, cfg: FleetsimConfig, brokers: tuple[BrokerAddr, ...]) -> None:
        self.cfg = cfg
        self.brokers = [KafkaBroker(cfg, b, brokers) for b in brokers]

    def start(self) -> None:
        """Start every broker (in parallel: each waits for the quorum), then topics and ACLs.

        A failure stops every broker this call started before the error is raised.
        """
        fresh = [b for b in self.brokers if not b.is_running()]
        self.brokers[0].cluster_id()  # made once, before the brokers format their storage
        with ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            results = list(pool.map(_start_one, self.brokers))
        errors = [e for e in results if e is not None]
        try:
            if errors:
                raise errors[0]
            ensure_topics(self.cfg)
            for b in self.brokers:
                self._wait_acls_applied(b)
        except Exception:
            for b in fresh:
                b.stop()
            raise

    @staticmethod
    def _wait_acls_applied(broker: KafkaBroker) -> None:
        # ensure_topics waits until ONE broker applies the new ACLs; each broker applies the
        # metadata log on its own, and a bridge refused by a lagging one would see "not
        # authorized". A fresh client asks its bootstrap broker first: ask each one as the bridge.
        from kafka import KafkaConsumer

        def described() -> bool:
            consumer = KafkaConsumer(**kafka_python_kwargs(broker.cfg, "bridge"), request_timeout_ms=5000)
            try:
                return bool(consumer.partitions_for_topic(broker.cfg.kafka.telemetry_topic))
            finally:
                consumer.close()

        if not process.wait_for(described, 30.0, 0.3):
            raise StackError(f"{broker.name} does not apply the bridge's ACLs after 30 s")

    def stop(self) -> list[str]:
        """Stop every broker at once; the names of those that were running.

        In parallel on purpose: one by one, the last broker's controlled shutdown waits for a
        quorum that has already left, until it is killed after ``stop_timeout_s``.
        """
        with ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            stopped = list(pool.map(lambda b: b.stop(), self.brokers))
        return [b.name for b, was in zip(self.brokers, stopped, strict=True) if was]


def _start_one(broker: KafkaBroker) -> Exception | None:
    try:
        broker.start()
    except Exception as exc:  # collected: the caller raises the first one after stopping the rest
        log.warning("%s failed to start: %s", broker.name, exc)
        return exc
    return None
