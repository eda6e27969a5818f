"""The one place that says which alert detects which injected fault.

Detection faults are scored against ``sensor_alerts``; integrity faults (duplicates, dropout) are
not meant to raise alerts: they are scored in the integrity section (seq accounting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fleetsim.kernel.contract import FaultKind


@dataclass(frozen=True, slots=True)
class Expectation:
    """The alerts that count as detecting one fault kind."""

    alert_kinds: frozenset[str]
    """``sensor_alerts.kind`` values that detect it."""
    measurement: str | None = None
    """If set, only alerts on this measurement count (``''`` is a device-level alert)."""
    consequences: frozenset[str] = frozenset()
    """Other alert kinds the fault explains (not false alarms) without counting as its detection,
    e.g. the ``offline`` of a battery drained to empty."""


EXPECTED: Final[dict[FaultKind, Expectation]] = {
    FaultKind.SENSOR_FAILURE: Expectation(frozenset({"status_failure"})),
    FaultKind.STUCK: Expectation(frozenset({"stuck"})),
    FaultKind.DRIFT: Expectation(frozenset({"drift"})),
    # Warmer air at the same moisture: relative humidity falls and may cross its low threshold.
    FaultKind.HEATWAVE: Expectation(frozenset({"extreme_high"}), "temperature", frozenset({"extreme_low"})),
    # A battery drained to empty switches the device off: its offline alert is a consequence.
    FaultKind.BATTERY_DRAIN: Expectation(
        frozenset({"low_battery"}), None, frozenset({"offline", "status_warning"})
    ),
    # A spike on a reading may also trip the drift rule's window.
    FaultKind.SPIKE: Expectation(frozenset({"extreme_high", "extreme_low"}), None, frozenset({"drift"})),
    # A clock behind stops device_latest from advancing: the offline rule sees a silence too.
    FaultKind.CLOCK_SKEW: Expectation(frozenset({"clock_skew"}), None, frozenset({"offline"})),
    # Store and forward: a device that flushes its buffer may look behind the fleet for a batch.
    FaultKind.NETWORK_OUTAGE: Expectation(frozenset({"offline"}), None, frozenset({"clock_skew"})),
    FaultKind.CRASH: Expectation(frozenset({"offline"})),
}
"""Detection faults and their expected alerts."""

INTEGRITY_FAULTS: Final = frozenset({FaultKind.DUPLICATE, FaultKind.DROPOUT})
"""Faults scored by the integrity section (lost/duplicated/late), not by alerts."""

UNSCORED_FAULTS: Final = frozenset({FaultKind.NOISE})
"""Faults no rule is designed to catch: reported as injected, never as missed."""

NOT_DETECTABLE: Final[dict[FaultKind, str]] = {
    FaultKind.NOISE: "no rule targets it: noisier readings stay within every threshold",
}
"""Why the monitoring cannot detect each of :data:`UNSCORED_FAULTS` (listed as "not detectable"
in the reports, never scored as 0)."""


def expectation(kind: str) -> Expectation | None:
    """The expectation of a fault code, or None for integrity and unscored faults."""
    try:
        return EXPECTED.get(FaultKind(kind))
    except ValueError:
        return None


def not_detectable_reason(kind: str) -> str | None:
    """Why the monitoring cannot detect fault ``kind``, or None if it claims to (or it is an
    integrity fault, scored by seq accounting instead)."""
    try:
        return NOT_DETECTABLE.get(FaultKind(kind))
    except ValueError:
        return None


def alert_matches_kind(kind: str, alert_kind: str, measurement: str) -> bool:
    """Whether an alert of ``alert_kind``/``measurement`` is one that detects fault ``kind``."""
    exp = expectation(kind)
    if exp is None or alert_kind not in exp.alert_kinds:
        return False
    return exp.measurement is None or exp.measurement == measurement


def explains(kind: str, alert_kind: str) -> bool:
    """Whether fault ``kind`` explains an alert of ``alert_kind`` as a consequence."""
    exp = expectation(kind)
    return exp is not None and alert_kind in exp.consequences


def explaining_faults(alert_kind: str, measurement: str) -> list[FaultKind]:
    """Fault kinds an alert of this kind could detect (to tell false alarms from true ones)."""
    return [k for k in EXPECTED if alert_matches_kind(k.value, alert_kind, measurement)]


def check_complete() -> None:
    """Every contract fault kind is classified exactly once (a test calls this)."""
    seen = set(EXPECTED) | INTEGRITY_FAULTS | UNSCORED_FAULTS
    missing = set(FaultKind) - seen
    overlap = (set(EXPECTED) & INTEGRITY_FAULTS) | (set(EXPECTED) & UNSCORED_FAULTS)
    if set(NOT_DETECTABLE) != UNSCORED_FAULTS:
        raise AssertionError("every unscored fault kind needs a not-detectable reason")
    if missing or overlap:
        raise AssertionError(f"fault mapping incomplete: missing={missing} overlap={overlap}")
