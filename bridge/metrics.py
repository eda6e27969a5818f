"""Bridge metrics: plain counters on the hot path, exported by a Prometheus collector.

``prometheus_client`` counters take a lock per increment; at 15k+ messages per second that is a
measurable share of one core. The bridge instead bumps plain ints (each written by a single
thread) and this collector turns them into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fleetsim.kernel.contract import RejectReason

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Added-latency histogram bucket bounds, seconds (fine around the 50 ms target)."""


class State(IntEnum):
    """``fleetsim_bridge_state``."""

    OK = 0
    DEGRADED = 1
    """Holding back (window full, retries pending, Kafka not confirming) or Kafka failing."""
    DOWN = 2
    """Not connected to MQTT, or Kafka never reachable / producer unusable."""


@dataclass
class Histogram:
    """A fixed-bucket histogram without locks (single writer: the pump thread)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def quantile(self, q: float) -> float:
        """Estimated ``q`` quantile (linear interpolation inside the bucket), seconds."""
        if self.n == 0:
            return 0.0
        rank = q * self.n
        seen = 0
        lower = 0.0
        for i, c in enumerate(self.counts):
            upper = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
            if c and seen + c >= rank:
                return lower + (upper - lower) * (rank - seen) / c
            seen += c
            lower = upper
        return self.bounds[-1]

    def snapshot(self) -> tuple[list[int], float, int]:
        return list(self.counts), self.total, self.n


@dataclass
class Stats:
    """Counters of one bridge. Each field has one writer thread (noted)."""

    received: int = 0
    """MQTT messages received (network thread)."""
    redelivered: int = 0
    """Messages received with the DUP flag: a previous session got them but did not ack (network)."""
    forwarded: int = 0
    """Telemetry records Kafka confirmed (pump thread)."""
    deadlettered: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in RejectReason})
    """Dead-letter records Kafka confirmed, by reason (pump thread)."""
    internal_errors: int = 0
    """Adapter or handler exceptions other than Rejected (network thread)."""
    kafka_errors: int = 0
    """Failed deliveries plus producer-level errors (pump thread)."""
    retries: int = 0
    """Records produced again after a failed delivery (pump thread)."""
    mqtt_reconnects: int = 0
    """Successful connects after the first (network thread)."""
    acks_skipped: int = 0
    """Confirmed messages not acked because the MQTT connection changed since they arrived;
    the broker redelivers them (duplicates on Kafka, counted) (pump thread)."""
    latency: Histogram = field(default_factory=Histogram)
    """Added latency: MQTT receive -> Kafka confirmed (and PUBACK queued), seconds (pump thread)."""


class BridgeCollector(Collector):
    """Exports :class:`Stats` plus live gauges read through callables."""

    def __init__(self, stats: Stats, inflight: Callable[[], int], state: Callable[[], State]) -> None:
        self.stats = stats
        self.inflight = inflight
        self.state = state

    def collect(self) -> Iterator[Any]:
        s = self.stats
        p = "fleetsim_bridge_"
        for name, value, doc in (
            ("received", s.received, "MQTT messages received"),
            ("redelivered", s.redelivered, "MQTT messages received again (DUP flag)"),
            ("forwarded", s.forwarded, "Telemetry records confirmed by Kafka"),
            ("kafka_errors", s.kafka_errors, "Failed Kafka deliveries and producer errors"),
            ("kafka_retries", s.retries, "Records produced again after a failed delivery"),
            ("mqtt_reconnects", s.mqtt_reconnects, "MQTT reconnections"),
            ("internal_errors", s.internal_errors, "Unexpected exceptions while handling a message"),
            ("acks_skipped", s.acks_skipped, "Confirmed messages left for redelivery after a reconnect"),
        ):
            yield CounterMetricFamily(p + name, doc, value=value)
        dl = CounterMetricFamily(
            p + "deadlettered", "Dead-letter records confirmed by Kafka", labels=["reason"]
        )
        for reason, value in sorted(s.deadlettered.items()):
            dl.add_metric([reason], value)
        yield dl
        yield GaugeMetricFamily(p + "inflight", "Messages received, not yet confirmed", value=self.inflight())
        yield GaugeMetricFamily(p + "state", "0 ok, 1 degraded, 2 down", value=int(self.state()))
        counts, total, _ = s.latency.snapshot()
        buckets = []
        acc = 0
        for bound, c in zip((*s.latency.bounds, float("inf")), counts, strict=True):
            acc += c
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        yield HistogramMetricFamily(
            p + "added_latency_seconds",
            "MQTT receive to Kafka confirmation",
            buckets=buckets,
            sum_value=total,
        )


class AdoptionCollector(Collector):
    """Session adoption (:mod:`fleetsim.bridge.adoption`): peers' sessions held, what they forwarded."""

    def __init__(self, snapshot: Callable[[], Any]) -> None:
        self.snapshot = snapshot
        """Returns an ``AdoptionSnapshot`` (read once per scrape)."""

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        p = "fleetsim_bridge_"
        yield GaugeMetricFamily(
            p + "adopted_sessions", "Peers' sessions this bridge holds now", value=len(s.held)
        )
        held = GaugeMetricFamily(
            p + "adopted_session", "1 while this bridge holds the peer's session", labels=["peer"]
        )
        for peer in sorted(s.peers):
            held.add_metric([peer], 1.0 if peer in s.held else 0.0)
        yield held
        online = GaugeMetricFamily(
            p + "peer_online", "Last status seen: 1 online, 0 offline", labels=["peer"]
        )
        for peer, state in sorted(s.peers.items()):
            online.add_metric([peer], 1.0 if state == "online" else 0.0)
        yield online
        for name, value, doc in (
            ("adoptions", s.adoptions, "Peers' sessions adopted"),
            ("adopted_received", s.received, "MQTT messages received on adopted sessions"),
            ("adopted_forwarded", s.forwarded, "Telemetry records from adopted sessions confirmed by Kafka"),
        ):
            yield CounterMetricFamily(p + name, doc, value=value)
