"""Session adoption on real engines: two bridge processes in one shared group on a dedicated
Mosquitto (the shared Kafka, fresh topics). Kill -9 one: the other adopts its persistent session
and forwards the whole load, so nothing waits for the dead one; restart it: it takes its session
back (reason 142) and the adopter lets go. Nothing lost; duplicates only from redelivery.

The same drill on the whole cluster profile, with PostgreSQL's ground truth, is C3 in
tests/integration/test_cluster_drills.py (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from bridge_support import BridgeProcess, consume, seqs_by_device
from test_bridge_faults import PacedPublisher
from waiting import wait_until

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated
from fleetsim.stack.kafka import end_offsets
from fleetsim.stack.process import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 300.0
GROUP = "adopt"


def unique_in_kafka(cfg: FleetsimConfig) -> int:
    topic = cfg.kafka.telemetry_topic
    records = consume(cfg, topic, end_offsets(cfg)[topic], timeout_s=30)
    return len({(d, s) for d, seqs in seqs_by_device(records).items() for s in seqs})


def forwarded(b: BridgeProcess) -> float:
    """Records this process forwarded: its own session plus the sessions it adopted."""
    m = b.metrics()
    return m.get("fleetsim_bridge_forwarded_total", 0.0) + m.get(
        "fleetsim_bridge_adopted_forwarded_total", 0.0
    )


def test_kill9_one_bridge_the_other_adopts_its_session_and_hands_it_back(
    fleet_cfg: FleetsimConfig, kafka_topics: Callable[..., FleetsimConfig], tmp_path: Path
) -> None:
    shared_kafka = kafka_topics("bridge-adopt")
    kafka_keys = {f"kafka.{k}": v for k, v in shared_kafka.kafka.model_dump().items()}
    kafka_keys = {
        k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v) for k, v in kafka_keys.items()
    }
    with dedicated(fleet_cfg, tmp_path / "own", "mosquitto") as (own, _svcs):
        base = own.with_overrides(
            {
                **kafka_keys,
                "bridge.client_id": f"adopt-{uuid.uuid4().hex[:6]}",
                "bridge.use_registry": False,
                "bridge.group_size": 2,
            }
        )
        ports = free_ports(2)
        cfgs = [base.with_overrides({"bridge.metrics_port": p}) for p in ports]
        ids = [f"{base.bridge.client_id}-{GROUP}-{i}" for i in range(2)]

        def bridge(i: int, log: str) -> BridgeProcess:
            return BridgeProcess(
                cfgs[i], tmp_path / log, "--shared-group", GROUP, "--instance", str(i),
                "--metrics-port", str(ports[i]),
            )  # fmt: skip

        dead, alive = bridge(0, "bridge-0.log"), bridge(1, "bridge-1.log")
        restarted = None
        try:
            dead.wait_subscribed()
            alive.wait_subscribed()
            peer = f"{{peer={ids[0]}}}"  # the flat scrape's label form
            wait_until(
                lambda: alive.metrics().get(f"fleetsim_bridge_peer_online{peer}") == 1.0,
                30,
                what="the survivor to see its peer online",
            )
            n, devices = int(RATE * 40), 10
            pub = PacedPublisher(base, n, devices, rate=RATE, prefix=f"ad{uuid.uuid4().hex[:4]}")
            pub.start()
            wait_until(lambda: forwarded(dead) >= RATE * 3, 60, what="the first bridge to forward")
            dead.kill9()
            t_kill = time.monotonic()
            wait_until(
                lambda: alive.metrics().get("fleetsim_bridge_adopted_sessions") == 1.0,
                15,
                what="the survivor to adopt the dead bridge's session",
            )
            adopted_after = time.monotonic() - t_kill
            time.sleep(2.0)  # lets time pass: the queued backlog flushes first, then the steady rate
            before, t0 = forwarded(alive), time.monotonic()
            time.sleep(8.0)  # the measuring window
            rate = (forwarded(alive) - before) / (time.monotonic() - t0)
            pub.finish()
            # Everything published reaches Kafka while the dead bridge is still dead: no stranding.
            seen: list[int] = []

            def all_in_kafka() -> bool:
                seen.append(n - unique_in_kafka(base))
                return seen[-1] == 0

            with contextlib.suppress(AssertionError):  # the figure is asserted below, after the handback
                wait_until(all_in_kafka, 90, what="every reading on Kafka", interval_s=2.0)
            stranded = seen[-1]

            restarted = bridge(0, "bridge-0-restarted.log")
            restarted.wait_subscribed()
            wait_until(
                lambda: (
                    alive.metrics().get("fleetsim_bridge_adopted_sessions") == 0.0
                    and alive.metrics().get(f"fleetsim_bridge_peer_online{peer}") == 1.0
                ),
                30,
                what="the adopter to hand the session back",
            )
            m = alive.metrics()
            print(
                f"\nDRILL bridge_adoption: adopted_after_s={adopted_after:.1f}, "
                f"survivor_msgs_per_s={rate:.0f}, rate={RATE:.0f}, stranded={stranded}, adopted_forwarded="
                f"{m['fleetsim_bridge_adopted_forwarded_total']:.0f}, load_avg={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            assert rate >= 0.8 * RATE, f"the survivor forwarded {rate:.0f} msg/s of {RATE:.0f}"
            assert stranded == 0
            assert restarted.terminate() == 0 and alive.terminate() == 0
        finally:
            for b in (dead, alive, restarted):
                if b is not None and b.proc.poll() is None:
                    b.kill9()
    records = consume(base, base.kafka.telemetry_topic, n)
    by_device = seqs_by_device(records)
    assert {d: sorted(set(s)) for d, s in by_device.items()} == pub.expected()  # nothing lost
    # Duplicates only from redelivery: the dead bridge's unacked window at the kill, the
    # adopter's at the handback.
    assert len(records) - n <= 2 * base.bridge.max_inflight
