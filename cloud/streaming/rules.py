"""Per-reading alert rules (pure DataFrame -> DataFrame, Spark expressions only).

Rules that need only the reading itself run here, in the stream: extreme values (thresholds from
``cfg.alerts``: the fleet-wide ``<m>_low/_high`` refined per device class by ``alerts.rules``, the
class coming from the registry), WARNING/FAILURE status, low battery. Rules that need a device's
history across micro-batches (stuck, drift, offline) or the fleet's clock (clock_skew) run as set-based
SQL in the sink (:mod:`.history_sql`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
from typing import Final

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetsim.cloud.streaming.schema import MEASUREMENT_NAMES
from fleetsim.kernel.config import AlertRule, AlertsConfig
from fleetsim.kernel.contract import Status

ALERT_COLUMNS: Final[tuple[str, ...]] = (
    "device_id", "kind", "measurement", "severity", "value", "threshold", "event_ts", "seq", "fault",
    "message",
)  # fmt: skip
STAGE_ALERT_COLUMNS: Final[tuple[str, ...]] = (*ALERT_COLUMNS, "clear_threshold", "min_duration_s")
"""What the raw flow hands the sink: the alert row plus what incident grouping needs from its rule
(hysteresis bound, minimum duration); ``sensor_alerts`` stores :data:`ALERT_COLUMNS`."""
CLASS_COLUMNS: Final[dict[str, str]] = {"site": "string", "device_indoor": "boolean", "device_type": "string"}
"""Device class of a reading, from the registry (NULL when unknown: the fleet-wide rule applies)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One per-reading rule: fires when ``condition`` holds for a reading."""

    kind: str
    """``sensor_alerts.kind``."""
    measurement: str
    """Measurement it is about, '' for the device as a whole."""
    severity: Column
    """``info`` | ``warning`` | ``critical``."""
    condition: Column
    value: Column
    """The offending value (in the measurement's unit)."""
    threshold: Column
    """The crossed threshold (same unit), NULL for status rules."""
    message: Column
    clear_threshold: Column
    """Hysteresis bound of the incident (NULL: none)."""
    min_duration_s: Column
    """How long the condition must hold before its incident opens."""


def with_device_class(readings: DataFrame, registry: DataFrame | None) -> DataFrame:
    """Adds :data:`CLASS_COLUMNS` from the registry (``device_id`` plus any of ``site``, ``indoor``,
    ``type``); NULL for unregistered devices or when ``registry`` is None."""
    if registry is None:
        return _class_columns(readings)
    reg = registry
    for col, dtype in (("site", "string"), ("indoor", "boolean"), ("type", "string")):
        if col not in reg.columns:
            reg = reg.withColumn(col, F.lit(None).cast(dtype))
    reg = reg.select(
        "device_id", "site", F.col("indoor").alias("device_indoor"), F.col("type").alias("device_type")
    )
    return readings.join(F.broadcast(reg), on="device_id", how="left")


def _class_columns(df: DataFrame) -> DataFrame:
    for col, dtype in CLASS_COLUMNS.items():
        if col not in df.columns:
            df = df.withColumn(col, F.lit(None).cast(dtype))
    return df


def _matches(rule: AlertRule) -> Column:
    cond = F.lit(True)
    if rule.indoor is not None:
        cond = cond & (F.col("device_indoor") == F.lit(rule.indoor))
    if rule.type is not None:
        cond = cond & (F.col("device_type") == F.lit(rule.type))
    if rule.site is not None:
        cond = cond & (F.col("site") == F.lit(rule.site))
    return cond


def base_rule(alerts: AlertsConfig, measurement: str) -> AlertRule | None:
    """The fleet-wide rule of a measurement from ``<m>_low``/``<m>_high`` (None: no thresholds)."""
    low = getattr(alerts, f"{measurement}_low", None)
    high = getattr(alerts, f"{measurement}_high", None)
    if low is None and high is None:
        return None
    return AlertRule.model_validate({"measurement": measurement, "low": low, "high": high})


def rules_by_priority(alerts: AlertsConfig, measurement: str) -> list[AlertRule]:
    """Class rules of a measurement, the one to apply first: most selectors, later in the list first."""
    ranked = [(r.selectors, i, r) for i, r in enumerate(alerts.rules) if r.measurement == measurement]
    return [r for _, _, r in sorted(ranked, key=lambda t: (t[0], t[1]), reverse=True)]


def resolve_rule(alerts: AlertsConfig, measurement: str, indoor: bool | None = None,
                 type: str | None = None, site: str | None = None) -> AlertRule | None:  # fmt: skip
    """The rule a device of this class gets (pure Python twin of the Spark expression, for docs/tests)."""
    for r in rules_by_priority(alerts, measurement):
        if (
            (r.indoor is None or r.indoor == indoor)
            and (r.type is None or r.type == type)
            and (r.site is None or r.site == site)
        ):
            return r
    return base_rule(alerts, measurement)


def _pick(alerts: AlertsConfig, measurement: str, field: str) -> Column:
    """``field`` of the rule that applies to each reading's device, as one CASE expression."""
    base = base_rule(alerts, measurement)
    default = F.lit(getattr(base, field) if base is not None else None)
    chain: Column | None = None
    for r in rules_by_priority(alerts, measurement):
        value = F.lit(getattr(r, field))
        chain = F.when(_matches(r), value) if chain is None else chain.when(_matches(r), value)
    return default if chain is None else chain.otherwise(default)


def row_rules(alerts: AlertsConfig) -> list[Rule]:
    """Every per-reading rule for a config. Battery uses ``low_battery_pct`` instead of extremes.

    Extremes take their thresholds from the rule of the reading's device class
    (:data:`CLASS_COLUMNS` must be on the DataFrame, see :func:`with_device_class`).
    """
    rules: list[Rule] = []
    none = F.lit(None).cast("double")
    zero = F.lit(0.0)
    for m in MEASUREMENT_NAMES:
        if m == "battery":
            continue
        if base_rule(alerts, m) is None and not rules_by_priority(alerts, m):
            continue
        col = F.col(m)
        severity = _pick(alerts, m, "severity")
        min_d = _pick(alerts, m, "min_duration_s").cast("double")
        high = _pick(alerts, m, "high").cast("double")
        clear_high = F.coalesce(_pick(alerts, m, "clear_high").cast("double"), high)
        rules.append(
            Rule("extreme_high", m, severity, col > high, col, high,
                 F.format_string(f"{m} %s > %s", col, high), clear_high, min_d)
        )  # fmt: skip
        low = _pick(alerts, m, "low").cast("double")
        clear_low = F.coalesce(_pick(alerts, m, "clear_low").cast("double"), low)
        rules.append(
            Rule("extreme_low", m, severity, col < low, col, low,
                 F.format_string(f"{m} %s < %s", col, low), clear_low, min_d)
        )  # fmt: skip
    status = F.col("status")
    rules.append(
        Rule("status_warning", "", F.lit("warning"), status == Status.WARNING.value, none, none,
             F.lit("device reports WARNING"), none, zero)
    )  # fmt: skip
    rules.append(
        Rule("status_failure", "", F.lit("critical"), status == Status.FAILURE.value, none, none,
             F.lit("device reports FAILURE"), none, zero)
    )  # fmt: skip
    batt = F.col("battery")
    rules.append(
        Rule(
            "low_battery", "battery", F.lit("warning"), batt < alerts.low_battery_pct, batt,
            F.lit(alerts.low_battery_pct),
            F.format_string(f"battery %s%% < {alerts.low_battery_pct}%%", batt), none, zero,
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
                r.severity.alias("severity"),
                r.value.cast("double").alias("value"),
                r.threshold.cast("double").alias("threshold"),
                r.message.alias("message"),
                r.clear_threshold.cast("double").alias("clear_threshold"),
                r.min_duration_s.cast("double").alias("min_duration_s"),
            ),
        )
        for r in row_rules(alerts)
    ]
    return F.filter(F.array(*structs), lambda a: a.isNotNull())


def _fires(alerts: AlertsConfig) -> list[Column]:
    return [F.coalesce(r.condition, F.lit(False)) for r in row_rules(alerts)]


def any_alert(alerts: AlertsConfig) -> Column:
    """True where at least one per-reading rule fires. Spark evaluates higher-order functions
    (:func:`alert_array`'s ``filter`` and ``transform``) row by row outside its generated code;
    this guard is generated code, so the array is built only for the few readings that fire."""
    return reduce(operator.or_, _fires(alerts))


def alert_array(alerts: AlertsConfig) -> Column:
    """Per reading: array of fired alerts as structs with :data:`STAGE_ALERT_COLUMNS`, in that order
    (the DataFrame needs :data:`CLASS_COLUMNS`)."""
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
            a["clear_threshold"].alias("clear_threshold"),
            a["min_duration_s"].alias("min_duration_s"),
        ),
    )


def row_alerts(readings: DataFrame, alerts: AlertsConfig, *, stage: bool = False) -> DataFrame:
    """Readings -> one row per fired rule, with :data:`ALERT_COLUMNS` (site is added by the sink),
    or :data:`STAGE_ALERT_COLUMNS` with ``stage``. Readings without :data:`CLASS_COLUMNS` get the
    fleet-wide rule."""
    out = _class_columns(readings).select(F.inline(alert_array(alerts)))
    return out if stage else out.select(*ALERT_COLUMNS)


def with_alert_count(readings: DataFrame, alerts: AlertsConfig) -> DataFrame:
    """Adds ``n_alerts``: how many per-reading rules fire for each reading (for window counts).
    Class columns it had to add as NULL (no registry join before) are not kept."""
    added = [c for c in CLASS_COLUMNS if c not in readings.columns]
    # A sum of CASEs, not size(alert_array): generated code instead of a higher-order function.
    n_alerts = reduce(operator.add, [F.when(f, 1).otherwise(0) for f in _fires(alerts)])
    return _class_columns(readings).withColumn("n_alerts", n_alerts).drop(*added)
