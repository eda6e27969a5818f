"""The cluster profile's pure parts: its [cluster] settings, port block and derived config."""

from __future__ import annotations

import argparse

import pytest

from fleetsim.cli import build_parser
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.errors import ConfigError, FleetsimError
from fleetsim.stack.cluster import member_names
from fleetsim.stack.cluster_ports import SPAN, ClusterPorts, profile_config


def cfg(**cluster: object) -> FleetsimConfig:
    return load_config(environ={}).with_overrides({f"cluster.{k}": v for k, v in cluster.items()})


def test_ports_are_distinct_and_inside_the_block() -> None:
    c = cfg(port_base=30000, brokers=5, replication_factor=3, spark_workers=8, bridges=8, sim_shards=16)
    ports = ClusterPorts.of(c)
    flat = [p for b in ports.brokers for p in (b.port, b.controller_port)]
    flat += [
        ports.master,
        ports.master_ui,
        *[p for w in ports.workers for p in w],
        *ports.bridges,
        *ports.sims,
    ]
    assert len(flat) == len(set(flat))
    assert all(30000 <= p < 30000 + SPAN for p in flat)


def test_profile_config_points_every_client_at_the_cluster() -> None:
    p = profile_config(cfg(port_base=30000))
    assert p.kafka.bootstrap == "127.0.0.1:30000,127.0.0.1:30001,127.0.0.1:30002"
    assert p.kafka.replication_factor == 3
    assert p.spark.master == "spark://127.0.0.1:30020"
    assert p.bridge.shared_group == "fleetsim-cluster"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"brokers": 2}, "replication_factor 3 needs as many brokers; allowed: 1..brokers (2)"),
        ({"min_insync_replicas": 4}, "min_insync_replicas 4 exceeds replication_factor 3; allowed: 1..3"),
        ({"worker_memory": "lots"}, "worker_memory 'lots' is not a JVM size; allowed: <n>k, <n>m or <n>g"),
        ({"shared_group": "a/b"}, "shared_group 'a/b' is not allowed"),
        ({"spark_workers": 9}, "cluster.spark_workers"),
    ],
)
def test_bad_settings_name_the_value_and_the_allowed_ones(settings: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        cfg(**settings)


def test_logs_accepts_the_profile_process_names_only() -> None:
    names = member_names(cfg())
    assert names[:5] == ["mosquitto", "kafka-1", "kafka-2", "kafka-3", "postgres"]
    assert {"spark-master", "spark-worker-2", "bridge-2", "sim-2", "stream", "dashboard"} <= set(names)
    args: argparse.Namespace = build_parser().parse_args(["logs", "--profile", "cluster", "kafka-9"])
    with pytest.raises(
        FleetsimError, match="unknown component 'kafka-9' for --profile cluster; allowed: mosquitto, kafka-1"
    ):
        args.func(args, cfg())
