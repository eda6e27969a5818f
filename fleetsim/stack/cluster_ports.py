"""The cluster profile's loopback ports and the config its processes run with.

Every port of the profile's own processes is ``cluster.port_base`` plus a fixed offset, so one
setting moves the whole block (and a test picks a free block with :func:`free_port_base`).
Mosquitto, PostgreSQL, the streaming job's driver and the dashboard keep their own sections' ports:
there is one of each in the cluster shape too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StackError
from fleetsim.stack import process
from fleetsim.stack.cluster_kafka import BrokerAddr

BROKER_OFFSET = 0
CONTROLLER_OFFSET = 10
MASTER_OFFSET = 20
MASTER_UI_OFFSET = 21
WORKER_OFFSET = 22
"""Worker ``i`` (1-based): RPC at ``WORKER_OFFSET + 2 (i - 1)``, web UI one above."""
BRIDGE_OFFSET = 40
SIM_OFFSET = 50
SPAN = 70
"""Ports the block may use (offsets 0..SPAN-1)."""


@dataclass(frozen=True)
class ClusterPorts:
    """Every port of the profile's own processes."""

    brokers: tuple[BrokerAddr, ...]
    master: int
    master_ui: int
    workers: tuple[tuple[int, int], ...]
    """``(rpc, web UI)`` per worker."""
    bridges: tuple[int, ...]
    """Metrics port per bridge."""
    sims: tuple[int, ...]
    """Metrics port per simulator shard."""

    @classmethod
    def of(cls, cfg: FleetsimConfig) -> ClusterPorts:
        c = cfg.cluster
        base = c.port_base
        return cls(
            brokers=tuple(
                BrokerAddr(n, base + BROKER_OFFSET + n - 1, base + CONTROLLER_OFFSET + n - 1)
                for n in range(1, c.brokers + 1)
            ),
            master=base + MASTER_OFFSET,
            master_ui=base + MASTER_UI_OFFSET,
            workers=tuple(
                (base + WORKER_OFFSET + 2 * i, base + WORKER_OFFSET + 2 * i + 1)
                for i in range(c.spark_workers)
            ),
            bridges=tuple(base + BRIDGE_OFFSET + i for i in range(c.bridges)),
            sims=tuple(base + SIM_OFFSET + i for i in range(c.sim_shards)),
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{b.port}" for b in self.brokers)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master}"

    @property
    def master_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.master_ui}"


def profile_overrides(cfg: FleetsimConfig) -> dict[str, Any]:
    """What the cluster shape changes in the single-node config (for this process and children)."""
    ports = ClusterPorts.of(cfg)
    over: dict[str, Any] = {}
    slots = cfg.cluster.spark_workers * cfg.cluster.worker_cores
    if cfg.spark.raw_sink == "realtime" and slots < cfg.kafka.partitions + cfg.spark.shuffle_partitions:
        # A real-time query holds a slot per Kafka partition for as long as it runs: on workers
        # with fewer cores than that plus the windows' tasks it would never start. Micro-batches.
        over["spark.raw_sink"] = "driver"
    return {
        **over,
        "kafka.bootstrap": ports.bootstrap,
        "kafka.replication_factor": cfg.cluster.replication_factor,
        "kafka.advertised_port": None,
        "spark.master": ports.master_url,
        "spark.master_ui_url": ports.master_ui_url,
        "bridge.shared_group": cfg.cluster.shared_group,
        "bridge.group_size": cfg.cluster.bridges,  # each bridge knows its peers' sessions
    }


def profile_config(cfg: FleetsimConfig) -> FleetsimConfig:
    """``cfg`` as the cluster profile's processes see it (bootstrap on every broker, the master)."""
    return cfg.with_overrides(profile_overrides(cfg))


def set_args(overrides: dict[str, Any]) -> list[str]:
    """``--set key=value`` flags for a child ``fleetsim`` process (None values: left unset)."""
    out: list[str] = []
    for key, value in overrides.items():
        if value is not None:
            out += ["--set", f"{key}={value}"]
    return out


def free_port_base(attempts: int = 200) -> int:
    """A ``cluster.port_base`` whose whole block is free now (below the ephemeral range; tests)."""
    high = process._ephemeral_low() - SPAN - 1
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(max(1024, high - 12_000), high)
        if not any(process.port_in_use(base + off) for off in range(SPAN)):
            return base
    raise StackError(f"no block of {SPAN} free loopback ports found")
