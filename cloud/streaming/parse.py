"""Kafka records -> typed readings or rejects with a reason (pure DataFrame -> DataFrame).

Validation mirrors :func:`fleetsim.kernel.contract.reading_from_obj` with Spark expressions only (no
Python UDF): every rule reads its ranges, patterns and enums from the contract. A record that fails
keeps its Kafka coordinates and raw payload and gets ``reject_reason`` (``<RejectReason>: detail``);
it is never turned into a row of nulls.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fleetsim.cloud.streaming.lateness import WINDOW_TS, is_late, window_ts
from fleetsim.cloud.streaming.schema import CORRUPT_COLUMN, MEASUREMENT_NAMES, REQUIRED_FIELDS, payload_schema
from fleetsim.kernel.contract import (
    DEFAULT_MAX_FUTURE,
    DEVICE_ID_PATTERN,
    EARLIEST_TS,
    LAT_RANGE,
    LON_RANGE,
    MAX_PAYLOAD_BYTES,
    MEASUREMENT_BY_NAME,
    FaultKind,
    KafkaHeader,
    RejectReason,
    Status,
)
from fleetsim.kernel.errors import MissingDependencyError

REJECT_PAYLOAD_CHARS: Final = 4096
"""Characters of a rejected payload kept in ``sensor_data_rejects`` (the contract's size cap)."""
# Java regex: `$` also matches before a final line terminator, so anchors are `\z` (the contract's
# `\Z`): "dev-1\n" must not pass as a device id.
_TS_OFFSET_RE: Final = r"T.*(Z|z|[+-][0-9]{2}:?[0-9]{2})\z"
_DEVICE_ID_RE: Final = rf"^{DEVICE_ID_PATTERN}\z"

_JSON_OPTIONS: Final = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT_COLUMN,
    # The contract (like loads_strict) refuses NaN/Infinity; Spark accepts them by default.
    "allowNonNumericNumbers": "false",
    # Likewise single-quoted strings: Jackson's lenient default, not JSON.
    "allowSingleQuotes": "false",
}

READING_COLUMNS: Final[tuple[str, ...]] = (
    "device_id", "seq", "ts", *MEASUREMENT_NAMES, "lat", "lon", "status", "fault",
)  # fmt: skip
KAFKA_COLUMNS: Final[tuple[str, ...]] = ("topic", "kafka_partition", "kafka_offset", "kafka_ts", "bridge_ts")


def header_value(name: str) -> Column:
    """The first Kafka header called ``name`` as a string (NULL when absent)."""
    matches = F.filter("headers", lambda h: h["key"] == F.lit(name))
    return F.get(matches, 0)["value"].cast("string")


def _reason(code: RejectReason, detail: str) -> Column:
    return F.lit(f"{code.value}: {detail}")


def _in_range(col: Column, lo: float, hi: float) -> Column:
    """NULL passes (measurements are optional); NaN never reaches here (refused by the parser)."""
    return col.isNull() | col.between(lo, hi)


def refused_by_schema(p: Column) -> Column:
    """The schema parse refused the record (not JSON, or a field of the wrong type)."""
    return p.isNull() | p[CORRUPT_COLUMN].isNotNull()


def not_a_json_object(p: Column, raw: Column) -> Column:
    """True when the record is not a JSON object at all; NULL for every record the schema parse
    accepted. The second parse (into a map) only tells invalid JSON from a schema mismatch, so it
    runs only for rows the schema parse refused (CASE short-circuits): on every valid row it
    cost as much as the schema parse itself."""
    return F.when(refused_by_schema(p), F.from_json(raw.cast("string"), "map<string,string>").isNull())


def reject_reason(
    p: Column, raw: Column, ts: Column, kafka_ts: Column, max_future: timedelta, not_object: Column
) -> Column:
    """First failed rule as ``<reason>: <detail>``, NULL for a valid reading (order = contract's).
    ``not_object``: :func:`not_a_json_object`, computed in the projection that parses (see
    :func:`parse_telemetry`)."""
    rules: list[tuple[Column, Column]] = [
        (raw.isNull(), _reason(RejectReason.INVALID_JSON, "empty record value")),
        (
            F.octet_length(raw) > MAX_PAYLOAD_BYTES,
            _reason(RejectReason.TOO_LARGE, f"> {MAX_PAYLOAD_BYTES} bytes"),
        ),
        (~F.is_valid_utf8(raw.cast("string")), _reason(RejectReason.INVALID_UTF8, "payload is not UTF-8")),
        (F.coalesce(not_object, F.lit(False)), _reason(RejectReason.INVALID_JSON, "not a JSON object")),
        (
            refused_by_schema(p),
            _reason(RejectReason.SCHEMA, "a field has the wrong type (or NaN/Infinity)"),
        ),
    ]
    rules += [(p[f].isNull(), _reason(RejectReason.SCHEMA, f"{f} missing")) for f in REQUIRED_FIELDS]
    rules += [
        (
            ~p["device_id"].rlike(_DEVICE_ID_RE),
            _reason(RejectReason.SCHEMA, f"device_id does not match {DEVICE_ID_PATTERN}"),
        ),
        (p["seq"] < 0, _reason(RejectReason.OUT_OF_RANGE, "seq < 0")),
        (
            ts.isNull() | ~p["ts"].rlike(_TS_OFFSET_RE),
            _reason(RejectReason.SCHEMA, "ts is not RFC 3339 with an offset"),
        ),
        (
            (ts < F.lit(EARLIEST_TS))
            | (ts > kafka_ts + F.expr(f"INTERVAL {int(max_future.total_seconds())} SECONDS")),
            _reason(RejectReason.OUT_OF_RANGE, "ts too far in the past or future"),
        ),
    ]
    for name in MEASUREMENT_NAMES:
        spec = MEASUREMENT_BY_NAME[name]
        rules.append(
            (
                ~_in_range(p[name], spec.valid_min, spec.valid_max),
                _reason(RejectReason.OUT_OF_RANGE, f"{name} outside [{spec.valid_min}, {spec.valid_max}]"),
            )
        )
    rules += [
        (~_in_range(p["lat"], *LAT_RANGE), _reason(RejectReason.OUT_OF_RANGE, "lat outside [-90, 90]")),
        (~_in_range(p["lon"], *LON_RANGE), _reason(RejectReason.OUT_OF_RANGE, "lon outside [-180, 180]")),
        (
            p["status"].isNotNull() & ~p["status"].isin([s.value for s in Status]),
            _reason(RejectReason.SCHEMA, "status must be one of " + ", ".join(s.value for s in Status)),
        ),
        (
            p["fault"].isNotNull() & ~p["fault"].isin([k.value for k in FaultKind]),
            _reason(RejectReason.SCHEMA, "fault is not a known fault code"),
        ),
    ]
    # A flat coalesce of CASEs (first match wins) instead of 25 nested ones: the nested form
    # overflowed the optimizer's stack inside the streaming plan.
    return F.coalesce(*(F.when(cond, reason) for cond, reason in rules), F.lit(None).cast("string"))


def parse_telemetry(kafka_df: DataFrame, max_future: timedelta = DEFAULT_MAX_FUTURE) -> DataFrame:
    """Kafka source rows -> readings + Kafka coordinates + ``payload`` + ``reject_reason``.

    ``ts`` beyond ``kafka_ts + max_future`` is out of range (the record's own broker timestamp,
    not the wall clock, so a replay decides the same way).
    """
    p = F.from_json(F.col("value").cast("string"), payload_schema(), _JSON_OPTIONS)
    received_ms = F.expr("try_cast(received_hdr AS BIGINT)")
    staged = kafka_df.select(
        F.col("value").alias("_raw"),
        p.alias("_p"),
        F.col("topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_ts"),
        header_value(KafkaHeader.RECEIVED_AT.value).alias("received_hdr"),
        # Here, beside the schema parse: ``from_json`` has no generated code (CodegenFallback),
        # so a projection holding it is not whole-stage compiled and every task re-generates its
        # code. In the rules' projection it kept all ~40 of them out of whole-stage codegen.
        not_a_json_object(p, F.col("value")).alias("_not_object"),
    ).withColumn("_ts", F.try_to_timestamp(F.col("_p.ts")))
    pc = F.col("_p")
    return staged.select(
        F.col("_p.device_id").alias("device_id"),
        F.col("_p.seq").alias("seq"),
        F.col("_ts").alias("ts"),
        *(F.col(f"_p.{m}").alias(m) for m in MEASUREMENT_NAMES),
        F.col("_p.lat").alias("lat"),
        F.col("_p.lon").alias("lon"),
        F.coalesce(F.col("_p.status"), F.lit(Status.OK.value)).alias("status"),
        F.col("_p.fault").alias("fault"),
        "topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_ts",
        F.timestamp_millis(received_ms).alias("bridge_ts"),
        reject_reason(
            pc, F.col("_raw"), F.col("_ts"), F.col("kafka_ts"), max_future, F.col("_not_object")
        ).alias("reject_reason"),
        F.col("_raw"),
    )


def _keep_if(parsed: DataFrame, cond: Column, columns: Sequence[Column | str]) -> DataFrame:
    """``parsed.where(cond).select(*columns)`` without a Filter: the optimizer pushes a Filter
    below the parsing projection and inlines ``from_json`` into every rule of the condition (79
    parses of each record, measured at ~300 us per record); a 0-or-1-element ``inline`` keeps
    the parse in one projection, evaluated once."""
    row = F.struct(*(F.col(c) if isinstance(c, str) else c for c in columns))
    return parsed.select(F.inline(F.when(cond, F.array(row))))


def valid_readings(parsed: DataFrame) -> DataFrame:
    """Rows that passed every rule, with the reading and Kafka columns only."""
    return _keep_if(parsed, F.col("reject_reason").isNull(), [*READING_COLUMNS, *KAFKA_COLUMNS])


def reject_columns() -> list[Column]:
    """Columns of a ``sensor_data_rejects`` row: UTF-8-safe, NUL-free, capped payload text."""
    text = F.make_valid_utf8(F.col("_raw").cast("string"))
    # PostgreSQL text cannot hold NUL; the reason already says what was wrong with the bytes.
    text = F.substring(F.regexp_replace(text, "\u0000", "\\\\u0000"), 1, REJECT_PAYLOAD_CHARS)
    return [
        F.col("topic"),
        F.col("kafka_partition"),
        F.col("kafka_offset"),
        F.col("kafka_ts"),
        F.col("reject_reason").alias("reason"),
        text.alias("payload"),
    ]


def rejects(parsed: DataFrame) -> DataFrame:
    """Rows that failed, as ``sensor_data_rejects`` rows."""
    return _keep_if(parsed, F.col("reject_reason").isNotNull(), reject_columns())


def deadletters(kafka_df: DataFrame) -> DataFrame:
    """Bridge dead-letter records -> ``deadletter_records`` columns (reason/detail/source from
    headers; a record without a reason header is kept with reason ``unknown``)."""
    return kafka_df.select(
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_ts"),
        F.coalesce(header_value(KafkaHeader.REASON.value), F.lit("unknown")).alias("reason"),
        header_value(KafkaHeader.DETAIL.value).alias("detail"),
        header_value(KafkaHeader.SOURCE_TOPIC.value).alias("source_topic"),
        # bytea in COPY CSV: the hex form, which needs no escaping.
        F.concat(F.lit("\\x"), F.lower(F.hex(F.col("value")))).alias("payload"),
    )


def on_time_readings(parsed: DataFrame, lateness: timedelta, max_clock_skew: timedelta) -> DataFrame:
    """Valid readings that are not late (:func:`.lateness.is_late`), with the Kafka columns and the
    windows' event time :data:`.lateness.WINDOW_TS`: the rows the windowed flow aggregates, decided
    per record exactly as the raw flow's ``late`` flag is."""
    ts, kafka_ts = F.col("ts"), F.col("kafka_ts")
    keep = F.col("reject_reason").isNull() & ~is_late(ts, kafka_ts, lateness)
    wts = window_ts(ts, kafka_ts, max_clock_skew).alias(WINDOW_TS)
    return _keep_if(parsed, keep, [*READING_COLUMNS, *KAFKA_COLUMNS, wts])


def deduplicate(
    readings: DataFrame, watermark: str, time_col: str = "ts", *, bucket_s: float | None = None
) -> DataFrame:
    """Event time watermark on ``time_col``, then drop repeats of (device_id, seq).

    ``bucket_s`` None: Spark's ``dropDuplicatesWithinWatermark`` (a key is kept until the watermark
    passes its ``time_col`` plus the delay; the whole state is read in every batch to find those).
    ``bucket_s`` set: Fleetsim's operator (``io.fleetsim.spark.ReadingDedup``, on the classpath from
    ``make setup``): the state is grouped by device and ``bucket_s`` of the device's own ``ts``, and
    a group is freed by a timer once the watermark passes its bucket's end; only the reading
    columns and ``time_col`` go through it (the Kafka columns are dropped). On a batch DataFrame
    (tests, backfills) both are a plain dropDuplicates on the same key.
    """
    if not readings.isStreaming:
        return readings.dropDuplicates(["device_id", "seq"])
    marked = readings.withWatermark(time_col, watermark)
    if bucket_s is None:
        return marked.dropDuplicatesWithinWatermark(["device_id", "seq"])
    spark = readings.sparkSession
    columns = [*READING_COLUMNS, *([time_col] if time_col not in READING_COLUMNS else [])]
    jvm_class = spark._jvm.io.fleetsim.spark.ReadingDedup  # type: ignore[union-attr]
    try:
        jdf = jvm_class.apply(
            marked.select(*columns)._jdf, "device_id", "seq", "ts", time_col, round(bucket_s * 1000)
        )
    except TypeError as exc:  # py4j: an unknown class is a JavaPackage, which cannot be called
        raise MissingDependencyError(
            'io.fleetsim.spark.ReadingDedup is not on Spark\'s classpath (spark.dedup = "buckets"): '
            "run `make setup`, which builds .cache/jvm/spark-ext"
        ) from exc
    return DataFrame(jdf, spark)
