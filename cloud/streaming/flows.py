"""The three flows as pure plans (DataFrame -> DataFrame), shared by the job, tests and bench.

* raw: every Kafka record becomes COPY lines in ONE pass over the batch (no cache, no re-read
  of Kafka): a reading line (kind 0), its alert lines (kind 1), or a reject line (kind 2).
* windowed: parse -> on-time readings (:mod:`.lateness`) -> dedup (device_id, seq) -> site ->
  sliding windows per scope.
* dead letters: the bridge's dead-letter records as COPY lines.
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetsim.cloud.streaming.executor_sink import KIND_ALERT, KIND_READING, KIND_REJECT
from fleetsim.cloud.streaming.lines import CSV_OPTIONS, copy_lines
from fleetsim.cloud.streaming.parse import (
    deadletters,
    parse_telemetry,
    reject_columns,
)
from fleetsim.cloud.streaming.pgsink import DEADLETTER_COPY_COLUMNS, RAW_COPY_COLUMNS
from fleetsim.cloud.streaming.rules import alert_array, any_alert, with_device_class
from fleetsim.cloud.streaming.windows import AGG_COLUMNS, fleet_windows
from fleetsim.kernel.config import AlertsConfig, SparkConfig
from fleetsim.kernel.contract import DEFAULT_MAX_FUTURE


def _csv(struct: Column) -> Column:
    return F.concat(F.to_csv(struct, CSV_OPTIONS), F.lit("\n"))


def _entry(kind: int, day: Column, line: Column) -> Column:
    return F.struct(F.lit(kind).alias("kind"), day.alias("day"), line.alias("line"))


def raw_lines(
    kafka_df: DataFrame,
    alerts: AlertsConfig,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
    registry: DataFrame | None = None,
    *,
    keep_partition: bool = False,
) -> DataFrame:
    """Kafka batch -> (``kind``, ``day``, ``line``): COPY CSV for sensor_data, alerts and rejects.

    ``registry`` (``device_id``, ``site``, ``indoor``, ``type``) gives each reading its device class
    for the per-class alert rules; without it every device gets the fleet-wide rule. Alert lines
    carry :data:`~.rules.STAGE_ALERT_COLUMNS`. ``keep_partition`` adds the record's Kafka partition
    (``kafka_partition``) as the first column.
    """
    parsed = with_device_class(parse_telemetry(kafka_df, max_future), registry)
    no_day = F.lit(None).cast("date")
    ok = F.col("reject_reason").isNull()
    reading = _entry(KIND_READING, F.to_date("ts"), _csv(F.struct(*RAW_COPY_COLUMNS)))
    alert_entries = F.transform(alert_array(alerts), lambda a: _entry(KIND_ALERT, no_day, _csv(a)))
    reject = _entry(KIND_REJECT, no_day, _csv(F.struct(*reject_columns())))
    keep = [F.col("kafka_partition")] if keep_partition else []
    # The lines are made in a projection (generated code) and only gathered by the generator:
    # with them inside `inline`'s argument Spark evaluated the whole expression row by row,
    # interpreted, because of the alerts' higher-order functions, which now run only for the
    # readings that fire a rule.
    staged = parsed.select(
        *keep,
        F.when(ok, reading).alias("_reading"),
        F.when(ok & any_alert(alerts), alert_entries).alias("_alerts"),
        F.when(~ok, reject).alias("_reject"),
    )
    entries = (
        F.when(F.col("_reject").isNotNull(), F.array("_reject"))
        .when(F.col("_alerts").isNull(), F.array("_reading"))
        .otherwise(F.concat(F.array("_reading"), F.col("_alerts")))
    )
    return staged.select(*keep, F.inline(entries))


def realtime_records(lines: DataFrame) -> DataFrame:
    """:func:`raw_lines` (with ``keep_partition``) -> Kafka records for the lines topic: key
    ``<kind>|<day>``, value the CSV line, and the source partition, so the lines topic's partition p
    holds exactly the devices of telemetry partition p (a loader's share is whole devices, as the
    history rules need). Read back by :mod:`.loader`."""
    key = F.concat_ws("|", F.col("kind").cast("string"), F.coalesce(F.col("day").cast("string"), F.lit("")))
    return lines.select(
        key.alias("key"), F.col("line").alias("value"), F.col("kafka_partition").alias("partition")
    )


def windowed(
    kafka_stream: DataFrame, registry: DataFrame, spark_cfg: SparkConfig, alerts: AlertsConfig
) -> DataFrame:
    """Kafka stream -> sliding-window aggregates (:data:`AGG_COLUMNS`) per device, site and fleet."""
    return fleet_windows(kafka_stream, registry, spark_cfg, alerts)


def agg_lines(agg_df: DataFrame) -> DataFrame:
    """Aggregates -> COPY lines for sensor_data_agg."""
    return copy_lines(agg_df, AGG_COLUMNS)


def deadletter_lines(kafka_df: DataFrame) -> DataFrame:
    """Dead-letter Kafka batch -> COPY lines for deadletter_records."""
    return copy_lines(deadletters(kafka_df), DEADLETTER_COPY_COLUMNS)
