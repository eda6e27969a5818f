"""Sliding event-time windows per device, per site and fleet-wide (pure DataFrame -> DataFrame).

Each reading is fanned out to its three scopes first, so one ``groupBy(scope, key, window)``
serves all of them: a single stateful operator (one state store) instead of three queries.
"""

from __future__ import annotations

from typing import Final

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetsim.cloud.streaming.lateness import WINDOW_TS
from fleetsim.cloud.streaming.parse import deduplicate, on_time_readings, parse_telemetry
from fleetsim.cloud.streaming.rules import with_alert_count, with_device_class
from fleetsim.cloud.streaming.schema import MEASUREMENT_NAMES
from fleetsim.kernel.config import AlertsConfig, SparkConfig
from fleetsim.kernel.contract import Status

FLEET_KEY: Final = "fleet"
"""``sensor_data_agg.key`` of the fleet-wide scope."""

AGG_COLUMNS: Final[tuple[str, ...]] = (
    "scope", "key", "window_start", "window_end", "n_messages", "n_warnings", "n_failures", "n_alerts",
    *(f"{m}_{stat}" for m in MEASUREMENT_NAMES for stat in ("mean", "min", "max")),
)  # fmt: skip


def fleet_windows(
    kafka_stream: DataFrame, registry: DataFrame, spark_cfg: SparkConfig, alerts: AlertsConfig
) -> DataFrame:
    """Kafka stream -> :data:`AGG_COLUMNS` per device, site and fleet: the on-time readings (the
    same per-record rule as the raw flow's ``late``, :mod:`.lateness`), deduplicated on
    (device_id, seq) as ``SparkConfig.dedup`` says, in sliding windows of their window time.
    Spark's watermark runs on that time with ``SparkConfig.state_delay_s``: it only evicts state,
    it never drops a kept reading."""
    on_time = on_time_readings(parse_telemetry(kafka_stream), spark_cfg.lateness, spark_cfg.max_clock_skew)
    delay = f"{spark_cfg.state_delay_s:g} seconds"
    bucket_s = spark_cfg.dedup_bucket_s if spark_cfg.dedup == "buckets" else None
    readings = deduplicate(on_time, delay, WINDOW_TS, bucket_s=bucket_s)
    # One registry join gives the windows their site and the alert count its device class.
    enriched = with_alert_count(with_device_class(readings, registry), alerts)
    return window_aggregates(enriched, spark_cfg.window, spark_cfg.slide, WINDOW_TS)


def attach_site(readings: DataFrame, registry: DataFrame) -> DataFrame:
    """Adds ``site`` from the registry (``device_id``, ``site``); NULL for unregistered devices."""
    reg = registry.select("device_id", "site")
    return readings.join(F.broadcast(reg), on="device_id", how="left")


def fan_out_scopes(readings: DataFrame) -> DataFrame:
    """One row per (reading, scope): ``device``/id, ``site``/site (skipped when NULL), ``fleet``."""
    scopes = F.array(
        F.struct(F.lit("device").alias("scope"), F.col("device_id").alias("key")),
        F.struct(F.lit("site").alias("scope"), F.col("site").alias("key")),
        F.struct(F.lit("fleet").alias("scope"), F.lit(FLEET_KEY).alias("key")),
    )
    return readings.withColumn("_s", F.explode(scopes)).where(F.col("_s.key").isNotNull())


def _count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("long")


def window_aggregates(readings: DataFrame, window: str, slide: str, time_col: str = "ts") -> DataFrame:
    """Readings with ``time_col``, ``site``, ``status``, ``n_alerts`` and the measurements ->
    :data:`AGG_COLUMNS` per (scope, key, sliding window of ``time_col``). Means/min/max ignore NULL
    values."""
    aggs: list[Column] = [
        F.count(F.lit(1)).alias("n_messages"),
        _count_if(F.col("status") == Status.WARNING.value).alias("n_warnings"),
        _count_if(F.col("status") == Status.FAILURE.value).alias("n_failures"),
        F.sum("n_alerts").cast("long").alias("n_alerts"),
    ]
    for m in MEASUREMENT_NAMES:
        aggs += [F.avg(m).alias(f"{m}_mean"), F.min(m).alias(f"{m}_min"), F.max(m).alias(f"{m}_max")]
    grouped = fan_out_scopes(readings).groupBy(
        F.col("_s.scope").alias("scope"),
        F.col("_s.key").alias("key"),
        F.window(time_col, window, slide).alias("w"),
    )
    return grouped.agg(*aggs).select(
        "scope",
        "key",
        F.col("w.start").alias("window_start"),
        F.col("w.end").alias("window_end"),
        *AGG_COLUMNS[4:],
    )
