"""``fleetsim up/down/status --profile cluster``: the multi-node shape on one machine.

In start order: Mosquitto; ``cluster.brokers`` Kafka brokers (started together, topics at
``cluster.replication_factor``); PostgreSQL; the Spark master and ``cluster.spark_workers``
workers; the streaming job submitted to that master; ``cluster.bridges`` bridges in one MQTT
shared-subscription group; the simulator in ``cluster.sim_shards`` shards; the dashboard. Same
secrets file, identities and ACLs as the single-node stack (one run directory): the profile only
changes where Kafka and Spark are and how many of each process run.

``stack.components`` (``--only``) still selects by the single-node names: ``kafka`` means every
broker, ``stream`` the Spark daemons and the job, ``bridge`` every bridge, ``sim`` every shard.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fleetsim.kernel.components import COMPONENT_NAMES
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import FleetsimError
from fleetsim.stack.base import Service, ServiceStatus, logs_dir, pids_dir
from fleetsim.stack.cluster_kafka import KafkaCluster, PartitionState, partition_table
from fleetsim.stack.cluster_ports import ClusterPorts, profile_config, profile_overrides, set_args
from fleetsim.stack.cluster_spark import SparkMaster, SparkWorker
from fleetsim.stack.components import AppComponent
from fleetsim.stack.engines import engine
from fleetsim.stack.secrets import ensure_secrets

log = logging.getLogger("fleetsim.stack.cluster")

Report = Callable[[str], None]
AfterStart = Callable[[FleetsimConfig, Report], object]
Member = Service | AppComponent


class ClusterApp(AppComponent):
    """One of several instances of an application (``bridge-2``, ``sim-1``): own log and pid file."""

    def __init__(
        self,
        app: str,
        label: str,
        cfg: FleetsimConfig,
        global_args: Sequence[str],
        command_args: Sequence[str] = (),
    ) -> None:
        super().__init__(app, cfg, global_args)
        self.label = label
        self.command_args = list(command_args)

    @property
    def log_file(self) -> Path:
        return logs_dir(self.cfg) / f"{self.label}.log"

    @property
    def pid_file(self) -> Path:
        return pids_dir(self.cfg) / f"{self.label}.pid"

    def argv(self) -> list[str]:
        return [*super().argv(), *self.command_args]

    def status(self) -> ServiceStatus:
        return replace(super().status(), name=self.label)


def label(member: Member) -> str:
    return member.label if isinstance(member, ClusterApp) else member.name


class ClusterProfile:
    """Every process of the profile for ``cfg`` (the single-node config; the profile derives its own)."""

    def __init__(self, cfg: FleetsimConfig, global_args: Sequence[str] = ()) -> None:
        self.cfg = profile_config(cfg)
        self.ports = ClusterPorts.of(self.cfg)
        c = self.cfg.cluster
        # Children load the same config plus the profile's changes (bootstrap, master, group).
        args = [*global_args, *set_args(profile_overrides(cfg))]
        self.kafka = KafkaCluster(self.cfg, self.ports.brokers)
        self.spark: list[Service] = [SparkMaster(self.cfg)] + [
            SparkWorker(self.cfg, n) for n in range(1, c.spark_workers + 1)
        ]
        self.stream = ClusterApp("stream", "stream", self.cfg, args)
        self.bridges = [
            ClusterApp(
                "bridge",
                f"bridge-{i + 1}",
                self.cfg.with_overrides({"bridge.metrics_port": port}),
                args,
                ["--shared-group", c.shared_group, "--instance", str(i), "--metrics-port", str(port)],
            )
            for i, port in enumerate(self.ports.bridges)
        ]
        self.sims = []
        for i, port in enumerate(self.ports.sims):
            shard = {
                "simulation.shard": f"{i}/{c.sim_shards}",
                "simulation.metrics_port": port,
                # One ground-truth ledger per shard: two writers must not interleave in one file.
                "simulation.ledger_file": str(self.cfg.run_dir / f"ledger-shard-{i}.jsonl"),
            }
            self.sims.append(
                ClusterApp("sim", f"sim-{i + 1}", self.cfg.with_overrides(shard), [*args, *set_args(shard)])
            )
        self.dashboard = ClusterApp("dashboard", "dashboard", self.cfg, args)

    def groups(self) -> list[tuple[str, list[Member]]]:
        """``(single-node component name, its processes)`` in start order, as ``--only`` selects."""
        all_groups: list[tuple[str, list[Member]]] = [
            ("mosquitto", [engine("mosquitto", self.cfg)]),
            ("kafka", list(self.kafka.brokers)),
            ("postgres", [engine("postgres", self.cfg)]),
            ("stream", [*self.spark, self.stream]),
            ("bridge", list(self.bridges)),
            ("sim", list(self.sims)),
            ("dashboard", [self.dashboard]),
        ]
        return [(name, members) for name, members in all_groups if name in self.cfg.stack.components]

    def members(self) -> list[Member]:
        return [m for _, members in self.groups() for m in members]


def every_component(cfg: FleetsimConfig) -> FleetsimConfig:
    """``cfg`` with every component selected (``down`` stops what ``--only`` left out too)."""
    return cfg.with_overrides({"stack.components": list(COMPONENT_NAMES)})


def up(
    cfg: FleetsimConfig,
    *,
    global_args: Sequence[str] = (),
    child_env: dict[str, str] | None = None,
    report: Report = print,
    after_start: Mapping[str, AfterStart] | None = None,
) -> FleetsimConfig:
    """Start every process of the profile in order, each passing its readiness check.

    Running processes are left alone; on a failure, the processes started by THIS call are stopped
    again (reverse order) and the error re-raised. Returns the profile's config (secrets filled in).
    """
    cfg = ensure_secrets(cfg)
    profile = ClusterProfile(cfg, global_args)
    pcfg = profile.cfg
    hooks = after_start or {}
    # Executors start their Python workers with the driver's interpreter: the venv's.
    env = {**(child_env or {}), "PYSPARK_PYTHON": sys.executable}
    started: list[Member] = []
    try:
        for name, members in profile.groups():
            if name == "kafka":
                fresh = [b for b in members if not b.is_running()]
                report(f"  {'kafka':<15} starting {len(fresh)} of {len(members)} brokers together ...")
                started.extend(fresh)  # before start(): a failure still gets them stopped below
                profile.kafka.start()
                for b in members:
                    report(f"  {label(b):<15} up (pid {b.pid()}, port {b.port})")
            else:
                for m in members:
                    if m.is_running():
                        if isinstance(m, Service):
                            m.start()  # idempotent: re-applies roles/migrations only
                        report(f"  {label(m):<15} already running (pid {m.pid()})")
                        continue
                    report(f"  {label(m):<15} starting ...")
                    started.append(m)
                    if isinstance(m, AppComponent):
                        m.start(env=env)
                    else:
                        m.start()
                    report(f"  {label(m):<15} up (pid {m.pid()}, port {m.port})")
            if name in hooks:
                hooks[name](pcfg, report)
    except (FleetsimError, OSError):
        for m in reversed(started):
            try:
                m.stop()
            except Exception as exc:  # keep stopping the others
                log.warning("stopping %s after a failed start: %s", label(m), exc)
        raise
    return pcfg


def down(cfg: FleetsimConfig, report: Report = print) -> None:
    """Stop every process of the profile (configured or not), reverse order, brokers together."""
    errors = []
    every = ClusterProfile(every_component(cfg))
    for name, members in reversed(every.groups()):
        try:
            if name == "kafka":
                for stopped in every.kafka.stop():
                    report(f"  {stopped:<15} stopped")
                continue
            for m in reversed(members):
                if m.stop():
                    report(f"  {label(m):<15} stopped")
        except FleetsimError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise FleetsimError("; ".join(errors))


def status(cfg: FleetsimConfig) -> list[dict[str, Any]]:
    """One row per configured process (measured in parallel); ``state`` up, down or unhealthy."""
    members = ClusterProfile(cfg).members()

    def one(m: Member) -> dict[str, Any]:
        st = m.status()
        row = asdict(st)
        row["name"] = label(m)
        row["state"] = "up" if st.up else ("unhealthy" if st.pid else "down")
        return row

    with ThreadPoolExecutor(max_workers=max(len(members), 1)) as pool:
        return list(pool.map(one, members))


def partitions(cfg: FleetsimConfig) -> list[PartitionState]:
    """Leaders and in-sync replicas of the profile's topics (raises when no broker answers)."""
    return partition_table(profile_config(cfg))


def member_names(cfg: FleetsimConfig) -> list[str]:
    """Every process name of the profile (``fleetsim logs`` accepts these)."""
    return [label(m) for m in ClusterProfile(every_component(cfg)).members()]
