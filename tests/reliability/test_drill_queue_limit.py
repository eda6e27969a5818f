"""The bridge held back past Mosquitto's ``max_queued_messages``: what is lost is exactly what the
broker counts as dropped (``$SYS/broker/publish/messages/dropped``), and nothing with the limit
raised. No Spark: the bridge's output is read back from Kafka.

The bridge is frozen (SIGSTOP, shorter than its keep-alive) while the ground-truth publisher goes
on: the broker acknowledges every publish (QoS 1, to the publisher) and queues what it cannot hand
to the frozen bridge, beyond ``max_inflight_messages`` (100), up to ``max_queued_messages``; past
that it drops, counts and logs ("Outgoing messages are being dropped for client ...").
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from reliability_support import report
from waiting import wait_until

from fleetsim.chaos.checker import TruthPublisher, broker_counter
from fleetsim.chaos.pipeline import Child, _metric
from fleetsim.kernel.clients import confluent_kafka_config
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import dedicated
from fleetsim.stack.kafka import ensure_topics

pytestmark = pytest.mark.integration

RATE = 1000.0
HELD_S = 4.0
"""Seconds the bridge is frozen: 4,000 messages, four times a limit of 1,000 (and its keep-alive
of 30 s is not reached, so the session stays connected: the limit is the connected-queue one)."""


def _in_kafka(cfg: FleetsimConfig) -> set[tuple[str, int]]:
    """(device_id, seq) of every record in the telemetry topic, read from the beginning to the end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = cfg.kafka.telemetry_topic
    conf = confluent_kafka_config(cfg, "admin") | {
        "group.id": f"drill-q-{time.monotonic_ns()}", "enable.auto.commit": False,
    }  # fmt: skip
    consumer = Consumer(conf)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        seen: set[tuple[str, int]] = set()
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 120
        while len(done) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            r = json.loads(msg.value())
            seen.add((r["device_id"], int(r["seq"])))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return seen
    finally:
        consumer.close()


# `make test` keeps the exact-equality case; the raised limit (0 and 0) runs in `make test-slow`.
@pytest.mark.parametrize(
    "limit", [1000, pytest.param(200_000, marks=pytest.mark.slow)], ids=["limit-1000", "limit-raised"]
)
def test_bridge_held_back_past_the_queue_limit_loses_exactly_what_the_broker_dropped(
    fleet_cfg: FleetsimConfig, tmp_path: Path, limit: int
) -> None:
    base = fleet_cfg.with_overrides({"mqtt.max_queued_messages": limit})
    with dedicated(base, tmp_path / "stack", "mosquitto", "kafka", "postgres") as (engines, svcs):
        cfg = engines.with_overrides({"bridge.client_id": f"q-bridge-{tmp_path.name}"})
        ensure_topics(cfg)
        bridge = Child("bridge", ["bridge"], cfg, tmp_path / "bridge.log")
        bridge.start()
        try:
            wait_until(lambda: _metric(cfg.bridge.metrics_port, "fleetsim_bridge_state") == 0.0, 90,
                       what="the bridge to connect")  # fmt: skip
            dropped0 = broker_counter(cfg)
            pub = TruthPublisher(cfg, f"q{limit}", devices=10, rate=RATE)
            pub.start()
            try:
                time.sleep(1.0)  # flowing before the freeze
                bridge.signal_group(signal.SIGSTOP)
                try:
                    time.sleep(HELD_S)  # the outage: the load goes on meanwhile
                finally:
                    bridge.signal_group(signal.SIGCONT)
                time.sleep(1.0)
            finally:
                pub.finish()
            acked = {(d, s) for d, seqs in pub.acked.items() for s in seqs}

            def forwarded_settled() -> bool:
                a = _metric(cfg.bridge.metrics_port, "fleetsim_bridge_forwarded_total")
                time.sleep(2.0)
                return a is not None and a == _metric(
                    cfg.bridge.metrics_port, "fleetsim_bridge_forwarded_total"
                )

            wait_until(forwarded_settled, 120, what="the bridge to forward what the broker kept")
            time.sleep(3.0)  # $SYS is refreshed every 2 s
            dropped = broker_counter(cfg) - dropped0
            in_kafka = _in_kafka(cfg)
            lost = acked - in_kafka
            mosq_log = svcs["mosquitto"].log_file.read_text(errors="replace")
            logged = mosq_log.count("Outgoing messages are being dropped")
        finally:
            bridge.stop()
    report(
        f"mqtt-queue-limit-{limit}", sent=pub.n_sent, acked=len(acked), in_kafka=len(in_kafka & acked),
        lost=len(lost), broker_dropped=dropped, drop_log_lines=logged, held_s=HELD_S, rate=RATE,
    )  # fmt: skip
    assert len(acked) == pub.n_sent
    assert len(lost) == dropped, f"lost {len(lost)} but the broker counted {dropped} dropped"
    if limit >= 200_000:
        assert dropped == 0 and not lost and logged == 0
    else:
        assert dropped > 0 and logged >= 1
