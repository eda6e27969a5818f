"""Per-reading alert rules (pure DataFrame -> DataFrame, Spark expressions only).

Rules that need only the reading itself run here, in the stream: extreme values (thresholds from
``cfg.alerts``), WARNING/FAILURE status, low battery. Rules that need a device's history across
micro-batches (stuck, drift, offline) run as set-based SQL in the sink (:mod:`.history_sql`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetsim.cloud.streaming.schema import MEASUREMENT_NAMES
from fleetsim.kernel.config import AlertsConfig
from fleetsim.kernel.contract import Status

ALERT_COLUMNS: Final[tuple[str, ...]] = (
    "device_id", "kind", "measurement", "severity", "value", "threshold", "event_ts", "seq", "fault",
    "message",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rule:
    """One per-reading rule: fires when ``condition`` holds for a reading."""

    kind: str
    """``sensor_alerts.kind``."""
    measurement: str
    """Measurement it is about, '' for the device as a whole."""
    severity: str
    """``info`` | ``warning`` | ``critical``."""
    condition: Column
    value: Column
    """The offending value (in the measurement's unit)."""
    threshold: float | None
    """The crossed threshold (same unit), None for status rules."""
    message: Column


def row_rules(alerts: AlertsConfig) -> list[Rule]:
    """Every per-reading rule for a config. Battery uses ``low_battery_pct`` instead of extremes."""
    rules: list[Rule] = []
    for m in MEASUREMENT_NAMES:
        if m == "battery":
            continue
        col = F.col(m)
        low = getattr(alerts, f"{m}_low", None)
        high = getattr(alerts, f"{m}_high", None)
        if high is not None:
            msg = F.format_string(f"{m} %s > {high}", col)
            rules.append(Rule("extreme_high", m, "warning", col > high, col, high, msg))
        if low is not None:
            msg = F.format_string(f"{m} %s < {low}", col)
            rules.append(Rule("extreme_low", m, "warning", col < low, col, low, msg))
    status = F.col("status")
    none = F.lit(None).cast("double")
    rules.append(
        Rule(
            "status_warning",
            "",
            "warning",
            status == Status.WARNING.value,
            none,
            None,
            F.lit("device reports WARNING"),
        )
    )
    rules.append(
        Rule(
            "status_failure",
            "",
            "critical",
            status == Status.FAILURE.value,
            none,
            None,
            F.lit("device reports FAILURE"),
        )
    )
    batt = F.col("battery")
    rules.append(
        Rule(
            "low_battery", "battery", "warning", batt < alerts.low_battery_pct, batt, alerts.low_battery_pct,
            F.format_string(f"battery %s%% < {alerts.low_battery_pct}%%", batt),
        )
    )  # fmt: skip
    return rules


def _candidates(alerts: AlertsConfig) -> Column:
    """Array of alert structs (NULL where a rule does not fire), NULLs filtered out."""
    structs = [
        F.when(
            r.condition,
            F.struct(
                F.lit(r.kind).alias("kind"),
                F.lit(r.measurement).alias("measurement"),
                F.lit(r.severity).alias("severity"),
                r.value.cast("double").alias("value"),
                F.lit(r.threshold).cast("double").alias("threshold"),
                r.message.alias("message"),
            ),
        )
        for r in row_rules(alerts)
    ]
    return F.filter(F.array(*structs), lambda a: a.isNotNull())


def alert_array(alerts: AlertsConfig) -> Column:
    """Per reading: array of fired alerts as structs with :data:`ALERT_COLUMNS`, in that order."""
    return F.transform(
        _candidates(alerts),
        lambda a: F.struct(
            F.col("device_id").alias("device_id"),
            a["kind"].alias("kind"),
            a["measurement"].alias("measurement"),
            a["severity"].alias("severity"),
            a["value"].alias("value"),
            a["threshold"].alias("threshold"),
            F.col("ts").alias("event_ts"),
            F.col("seq").alias("seq"),
            F.col("fault").alias("fault"),
            a["message"].alias("message"),
        ),
    )


def row_alerts(readings: DataFrame, alerts: AlertsConfig) -> DataFrame:
    """Readings -> one row per fired rule, with :data:`ALERT_COLUMNS` (site is added by the sink)."""
    return readings.select(F.inline(alert_array(alerts)))


def with_alert_count(readings: DataFrame, alerts: AlertsConfig) -> DataFrame:
    """Adds ``n_alerts``: how many per-reading rules fire for each reading (for window counts)."""
    return readings.withColumn("n_alerts", F.size(_candidates(alerts)))
