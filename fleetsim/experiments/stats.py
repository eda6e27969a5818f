"""Small statistics helpers shared by the scorer (pure, no numpy so tests compute by hand)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` % of the values at or
    below it (``sorted(v)[ceil(q/100 * n) - 1]``); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p95, max of ``values``."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": float(max(values)) if values else None,
    }


HOPS = (
    ("device_bridge", "device ts -> bridge received_at"),
    ("bridge_kafka", "bridge received_at -> Kafka record ts"),
    ("kafka_db", "Kafka record ts -> sensor_data.ingest_ts"),
    ("bridge_db", "bridge received_at -> sensor_data.ingest_ts (end to end in the cloud)"),
)
"""Latency hops: key and meaning."""


def hop_latencies(
    rows: Sequence[tuple[float | None, float | None, float | None, float | None]],
    *,
    device_clock_is_wall: bool,
) -> dict[str, dict[str, float | int | None] | None]:
    """Per-hop latency summaries in milliseconds from ``(ts, bridge_ts, kafka_ts, ingest_ts)``
    epoch-millisecond tuples (None where unknown). The device hop is only meaningful when the
    simulated clock runs at wall speed (``device_clock_is_wall``); otherwise it is None."""
    hops: dict[str, list[float]] = {k: [] for k, _ in HOPS}
    for ts, br, ka, ing in rows:
        if device_clock_is_wall and ts is not None and br is not None:
            hops["device_bridge"].append(br - ts)
        if br is not None and ka is not None:
            hops["bridge_kafka"].append(ka - br)
        if ka is not None and ing is not None:
            hops["kafka_db"].append(ing - ka)
        if br is not None and ing is not None:
            hops["bridge_db"].append(ing - br)
    out: dict[str, dict[str, float | int | None] | None] = {}
    for key, _ in HOPS:
        if key == "device_bridge" and not device_clock_is_wall:
            out[key] = None
        else:
            out[key] = summary(hops[key])
    return out
