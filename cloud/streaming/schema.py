"""Spark schemas derived from the wire contract (``fleetsim.kernel.contract.FIELDS``): one source of truth."""

from __future__ import annotations

from typing import Final

from pyspark.sql.types import DataType, DoubleType, LongType, StringType, StructField, StructType

from fleetsim.kernel.contract import FIELDS, MEASUREMENTS, FieldSpec

_SPARK_TYPES: Final[dict[str, DataType]] = {
    "string": StringType(),
    "integer": LongType(),
    "number": DoubleType(),
    # Parsed after from_json (try_to_timestamp plus an explicit-offset check), so a bad ts is a
    # counted reject with a reason instead of a silent null.
    "timestamp": StringType(),
}

CORRUPT_COLUMN: Final = "_corrupt"
"""from_json's corrupt-record column: set when the JSON is invalid or a value has the wrong type."""

MEASUREMENT_NAMES: Final[tuple[str, ...]] = tuple(m.name for m in MEASUREMENTS)
REQUIRED_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in FIELDS if f.required)


def spark_type(spec: FieldSpec) -> DataType:
    """The Spark type a contract field is read as."""
    try:
        return _SPARK_TYPES[spec.type]
    except KeyError as exc:  # a new contract type must be mapped here on purpose
        raise ValueError(f"contract field {spec.name} has unmapped type {spec.type!r}") from exc


def payload_schema() -> StructType:
    """The telemetry payload as read by ``from_json`` (every field nullable: required-ness is
    checked afterwards so a missing field becomes a reject with a reason), plus the corrupt column."""
    fields = [StructField(f.name, spark_type(f), True) for f in FIELDS]
    fields.append(StructField(CORRUPT_COLUMN, StringType(), True))
    return StructType(fields)
