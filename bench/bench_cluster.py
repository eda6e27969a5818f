"""Cluster-profile benchmark: the MQTT -> Kafka hop on the single-node Kafka vs the cluster
profile's three brokers (replication factor 3, ``min.insync.replicas=2``), with one and with two
bridges, measured in the same run.

``run(cfg, quick)`` uses the harness's Mosquitto and single Kafka in ``cfg`` and starts the cluster
profile's brokers itself (``fleetsim.stack.cluster_kafka``, throw-away run dir, free port block).
Each variant is bench_bridge's drain: ``N`` readings queued on Mosquitto for the bridges'
persistent sessions (``mosquitto_pub -l``, not timed), then the real ``fleetsim bridge`` processes
drain them; the rate is the sum of their Kafka-confirmed ``forwarded_total`` between the 10 % and
90 % marks. Variants, alternating per round:

- ``single, 1 bridge``: one broker, RF 1 (the single-node stack);
- ``single, 2 bridges``: the same, two bridges in one shared subscription;
- ``cluster, 1 bridge``: three brokers, RF 3 (the cost of replication with ``acks=all``);
- ``cluster, 2 bridges``: three brokers, two bridges (the cluster profile's shape).

One vs two Spark workers is ``bench_workers.py`` (a Spark session and executors per variant cost
minutes on a 2-core machine, so it is a benchmark of its own). On one machine
every process shares the same cores: the figures compare shapes, they do not predict separate
machines (docs/scale-out.md).

Full: 3 rounds x 100k readings; quick: 1 round x 20k.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleetsim.bench.engines import run_standalone  # noqa: E402
from fleetsim.kernel.config import FleetsimConfig  # noqa: E402
from fleetsim.stack.cluster_kafka import KafkaCluster  # noqa: E402
from fleetsim.stack.cluster_ports import ClusterPorts, free_port_base, profile_config  # noqa: E402

TIMEOUT_S = 1_800
VARIANTS = ("single, 1 bridge", "single, 2 bridges", "cluster, 1 bridge", "cluster, 2 bridges")


def _bench_bridge() -> Any:
    """bench_bridge's drain (same directory; the harness runs each benchmark as a script)."""
    spec = importlib.util.spec_from_file_location("bench_bridge", Path(__file__).with_name("bench_bridge.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_bridge"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cluster_config(cfg: FleetsimConfig, run_dir: Path) -> FleetsimConfig:
    """The harness's config with the cluster's brokers (same identities and passwords)."""
    return profile_config(
        cfg.with_overrides({"stack.run_dir": str(run_dir), "cluster.port_base": free_port_base()})
    )


def run(cfg: FleetsimConfig, quick: bool) -> dict[str, Any]:
    bb = _bench_bridge()
    cfg = cfg.with_overrides({"bridge.use_registry": False, "bridge.max_inflight": bb.WINDOW})
    rounds = 1 if quick else 3
    n = 20_000 if quick else 100_000
    load_before = os.getloadavg()
    drains: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp_s:
        tmp = Path(tmp_s)
        ccfg = cluster_config(cfg, tmp / "cluster")
        kc = KafkaCluster(ccfg, ClusterPorts.of(ccfg).brokers)
        kc.start()
        try:
            for _ in range(rounds):  # alternate so load changes hit every variant alike
                drains["single, 1 bridge"].append(bb.drain_bridges(cfg, n, tmp, 1))
                drains["cluster, 1 bridge"].append(bb.drain_bridges(ccfg, n, tmp, 1))
                drains["single, 2 bridges"].append(bb.drain_bridges(cfg, n, tmp, 2))
                drains["cluster, 2 bridges"].append(bb.drain_bridges(ccfg, n, tmp, 2))
        finally:
            kc.stop()
    rate = {k: statistics.median(r["rate"] for r in v) for k, v in drains.items()}

    def fig(name: str, variant: str, baseline: str) -> dict[str, Any]:
        return {
            "name": name,
            "value": round(rate[variant]),
            "unit": "msg/s",
            "baseline_name": baseline,
            "baseline": round(rate[baseline]),
            "ratio": round(rate[variant] / rate[baseline], 2) if rate[baseline] else None,
            "runs": [round(r["rate"]) for r in drains[variant]],
        }

    return {
        "title": "Cluster profile: MQTT -> Kafka on one broker (RF 1) vs three (RF 3), one vs two bridges",
        "method": (
            f"{n:,} readings queued on Mosquitto per variant, drained by real `fleetsim bridge` "
            f"processes (acks=all, idempotent) into a fresh topic; rate between the 10 % and 90 % marks "
            f"of the bridges' summed forwarded_total. Single: one broker, RF 1; cluster: three KRaft "
            f"brokers, RF 3, min.insync.replicas 2. {rounds} alternating round(s), medians; every "
            f"process on the same 2-core machine."
        ),
        "figures": [
            fig("cluster profile (3 brokers RF 3, 2 bridges)", "cluster, 2 bridges", "single, 1 bridge"),
            fig("replication cost: 1 bridge into RF 3", "cluster, 1 bridge", "single, 1 bridge"),
            fig("second bridge on the single-node broker", "single, 2 bridges", "single, 1 bridge"),
            fig("second bridge on the cluster", "cluster, 2 bridges", "cluster, 1 bridge"),
        ],
        "rates": {k: round(v) for k, v in rate.items()},
        "missing_readings": {k: [n - r["distinct"] for r in v] for k, v in drains.items()},
        "extra_kafka_records": {k: [r["kafka_records"] - n for r in v] for k, v in drains.items()},
        "cpu_us_per_msg": {
            k: round(statistics.median(r["cpu_us_per_msg"] for r in v), 1) for k, v in drains.items()
        },
        "notes": [
            "missing_readings must be 0 (a reading with no Kafka record); extra_kafka_records counts "
            "duplicates the idempotent producer did not absorb (0 expected).",
            "One vs two Spark workers: bench_workers.py (its own section).",
        ],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    return run_standalone(REPO, "cluster", ("mosquitto", "kafka"), run, args.quick, start_timeout_s=240)


if __name__ == "__main__":
    raise SystemExit(main())
