"""Disruptive drills on DEDICATED engines (the shared session fixtures stay untouched):

- the bridge process is killed with SIGKILL mid-stream and restarted: nothing is lost, and the
  only duplicates are messages that were in flight (unacked) at the kill, which the restarted
  bridge counts as redelivered;
- Kafka is stopped for 30 s mid-stream and restarted: nothing is lost, the bridge reports
  itself degraded meanwhile and holds back (the broker keeps the session queue).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from bridge_support import BridgeProcess, Publisher, consume, reading, seqs_by_device
from waiting import wait_until

from fleetsim.bridge.metrics import State
from fleetsim.bridge.runtime import Bridge
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated
from fleetsim.stack.kafka import end_offsets

# `slow` (make test-slow): tests/reliability repeats both drills end to end in make test
# (bridge kill -9 x3; Kafka paused 30 s then killed), with the ground truth in PostgreSQL.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


class PacedPublisher(threading.Thread):
    """Publishes ``n`` readings round-robin over ``devices`` at about ``rate`` per second."""

    def __init__(self, cfg: FleetsimConfig, n: int, devices: int, rate: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.pub = Publisher(cfg, prefix)
        self.n, self.devices, self.rate, self.prefix = n, devices, rate, prefix
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i in range(self.n):
                d = i % self.devices
                self.pub.publish(
                    f"sensors/{self.prefix}-{d}/telemetry", reading(f"{self.prefix}-{d}", i // self.devices)
                )
                self.sent = i + 1
                ahead = start + self.sent / self.rate - time.monotonic()
                if ahead > 0.005:
                    time.sleep(ahead)
            self.pub.wait_acked(self.n, timeout_s=120)
        except BaseException as exc:
            self.error = exc

    def expected(self) -> dict[str, list[int]]:
        per = self.n // self.devices
        return {f"{self.prefix}-{d}": list(range(per)) for d in range(self.devices)}

    def finish(self) -> None:
        self.join(timeout=180)
        self.pub.close()
        assert self.error is None, self.error


def first_occurrences(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]


def test_kill9_of_the_bridge_loses_nothing_and_counts_its_duplicates(
    fleet_cfg: FleetsimConfig, kafka_topics: Callable[..., FleetsimConfig], tmp_path: Path
) -> None:
    shared_kafka = kafka_topics("bridge-kill9")
    kafka_keys = {f"kafka.{k}": v for k, v in shared_kafka.kafka.model_dump().items()}
    kafka_keys = {
        k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v) for k, v in kafka_keys.items()
    }
    # Own Mosquitto (its persistent session survives the bridge's death); the shared Kafka only
    # receives records on this test's fresh topics.
    with dedicated(fleet_cfg, tmp_path / "own", "mosquitto") as (own, _svcs):
        cfg = own.with_overrides(
            {
                **kafka_keys,
                "bridge.client_id": f"kill9-{uuid.uuid4().hex[:6]}",
                "bridge.use_registry": False,  # no PostgreSQL here: every id is known
            }
        )
        n, devices = 12_000, 20
        first = BridgeProcess(cfg, tmp_path / "bridge-1.log")
        first.wait_subscribed()
        pub = PacedPublisher(cfg, n, devices, rate=1000, prefix="k9")
        pub.start()
        wait_until(
            lambda: first.metrics().get("fleetsim_bridge_forwarded_total", 0) >= 2000,
            60,
            what="2000 forwarded",
        )
        at_kill = first.metrics()
        first.kill9()
        # Mid-stream: part forwarded, the rest still being published or queued on the broker.
        assert at_kill["fleetsim_bridge_forwarded_total"] < n
        second = BridgeProcess(cfg, tmp_path / "bridge-2.log")
        try:
            second.wait_subscribed()
            pub.finish()

            def drained() -> bool:
                m = second.metrics()
                return m["fleetsim_bridge_inflight"] == 0 and end_offsets(cfg)[cfg.kafka.telemetry_topic] >= n

            wait_until(drained, 90, what="every message on Kafka", interval_s=0.5)
            after = second.metrics()
            assert second.terminate() == 0  # graceful SIGTERM exit
        finally:
            if second.proc.poll() is None:
                second.kill9()
    records = consume(cfg, cfg.kafka.telemetry_topic, n)
    by_device = seqs_by_device(records)
    assert {d: sorted(set(s)) for d, s in by_device.items()} == pub.expected()  # nothing lost
    for d, seqs in by_device.items():
        assert first_occurrences(seqs) == sorted(set(seqs)), f"order broken for {d}"
    duplicates = len(records) - n
    redelivered = after["fleetsim_bridge_redelivered_total"]
    # Duplicates only for messages in flight (unacked) at the kill: each came back flagged DUP.
    assert duplicates <= redelivered <= cfg.bridge.max_inflight, (duplicates, redelivered)


def test_kafka_stopped_for_30s_mid_stream_loses_nothing(fleet_cfg: FleetsimConfig, tmp_path: Path) -> None:
    with dedicated(fleet_cfg, tmp_path / "own", "mosquitto", "kafka") as (own, svcs):
        cfg = own.with_overrides({"bridge.max_inflight": 500})
        n, devices = 6_000, 30
        bridge = Bridge(cfg, client_id=f"outage-{uuid.uuid4().hex[:6]}", metrics_port=0)
        bridge.start()
        try:
            assert bridge.subscribed.wait(30)
            pub = PacedPublisher(cfg, n, devices, rate=150, prefix="ko")
            pub.start()
            wait_until(lambda: bridge.stats.forwarded >= 500, 30, what="flow before the outage")
            svcs["kafka"].stop()
            stopped_at = time.monotonic()
            states, inflight = set(), 0
            while time.monotonic() - stopped_at < 30:
                states.add(bridge.state())
                inflight = max(inflight, len(bridge.tracker))
                time.sleep(0.2)
            forwarded_during = bridge.stats.forwarded
            svcs["kafka"].start()
            pub.finish()
            wait_until(
                lambda: bridge.stats.forwarded >= n, 120, what="everything forwarded after Kafka returned"
            )
            wait_until(lambda: len(bridge.tracker) == 0, 30, what="all acked")
            assert bridge.state() is State.OK
        finally:
            bridge.stop(timeout=20)
        assert State.DEGRADED in states  # holding back, reported as such, not "ok"
        assert inflight <= cfg.bridge.max_inflight  # back-pressure: the broker kept the rest
        assert bridge.stats.kafka_errors > 0
        assert bridge.stats.mqtt_reconnects == 0  # holding back kept the MQTT session alive
        assert forwarded_during < n  # the outage really interrupted the flow
        records = consume(cfg, cfg.kafka.telemetry_topic, n)
    by_device = seqs_by_device(records)
    assert {d: sorted(set(s)) for d, s in by_device.items()} == pub.expected()  # 0 lost
    assert len(records) == n  # idempotent producer: its own retries wrote no duplicate
    for d, seqs in by_device.items():
        assert seqs == sorted(seqs), f"order broken for {d}"
    assert json.loads(records[0].value)["device_id"].startswith("ko-")
