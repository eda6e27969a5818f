"""Fleetsim's deduplication operator (io.fleetsim.spark.ReadingDedup) on a real streaming query.

A file source fed one file per micro-batch, the windowed flow's watermark and window after it:
repeats are dropped within and across batches (a clock-ahead copy with another window time too),
a group's state goes once the watermark passes its bucket, and a late row is dropped as Spark's
own deduplication drops it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

from fleetsim.cloud.streaming.parse import deduplicate

SCHEMA = StructType(
    [
        StructField("device_id", StringType()),
        StructField("seq", LongType()),
        StructField("ts", TimestampType()),
        StructField("wts", TimestampType()),
        StructField("temperature", DoubleType()),
    ]
)


def _row(device: str, seq: int, ts: str, wts: str | None = None) -> dict[str, Any]:
    return {"device_id": device, "seq": seq, "ts": ts, "wts": wts or ts, "temperature": 1.0}


class _Stream:
    def __init__(self, spark: Any, tmp: Path, bucket_s: float | None) -> None:
        self.src, self.windows = tmp / "in", {}
        self.src.mkdir()
        readings = spark.readStream.schema(SCHEMA).json(str(self.src))
        # READING_COLUMNS the operator passes on: the test's schema has only some of them.
        readings = readings.select(
            "device_id", "seq", "ts", "wts", "temperature",
            *(F.lit(None).cast("double").alias(c) for c in ("humidity", "co2", "pressure", "battery")),
            F.lit(None).cast("double").alias("lat"), F.lit(None).cast("double").alias("lon"),
            F.lit("ok").alias("status"), F.lit(None).cast("string").alias("fault"),
        )  # fmt: skip
        deduped = deduplicate(readings, "300 seconds", "wts", bucket_s=bucket_s)
        counts = deduped.groupBy("device_id", F.window("wts", "5 minutes", "1 minute")).agg(
            F.count(F.lit(1)).alias("n")
        )

        def sink(df: Any, _batch: int) -> None:
            for r in df.collect():
                self.windows[(r.device_id, r.window.start.isoformat())] = r.n

        self.query = (
            counts.writeStream.outputMode("update")
            .option("checkpointLocation", str(tmp / "ckpt"))
            .foreachBatch(sink)
            .start()
        )
        self.files = 0

    def put(self, *rows: dict[str, Any]) -> dict[str, Any]:
        self.files += 1
        path = self.src / f"{self.files:03d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.rename(path)
        self.query.processAllAvailable()
        return self.query.lastProgress

    def state(self, progress: dict[str, Any]) -> tuple[int, int]:
        """(state rows, rows dropped as late) of the deduplication operator in one batch."""
        (op,) = [o for o in progress["stateOperators"] if o["operatorName"] != "stateStoreSave"]
        return op["numRowsTotal"], op["numRowsDroppedByWatermark"]


@pytest.fixture
def stream(spark: Any, tmp_path: Path) -> Iterator[_Stream]:
    s = _Stream(spark, tmp_path, bucket_s=60)
    try:
        yield s
    finally:
        s.query.stop()


def test_repeats_are_dropped_within_and_across_batches(stream: _Stream) -> None:
    stream.put(
        _row("a", 1, "2026-01-01T00:00:10Z"),
        _row("a", 1, "2026-01-01T00:00:10Z"),
        _row("a", 2, "2026-01-01T00:00:20Z"),
        _row("b", 1, "2026-01-01T00:00:20Z"),
    )
    # a's seq 1 again (a redelivery), and a new reading in the next bucket
    stream.put(_row("a", 1, "2026-01-01T00:00:10Z"), _row("a", 3, "2026-01-01T00:01:20Z"))
    # a clock far ahead: both copies windowed at their arrival + bound, i.e. at two window times
    stream.put(
        _row("c", 7, "2026-01-01T01:00:00Z", wts="2026-01-01T00:01:30Z"),
        _row("c", 7, "2026-01-01T01:00:00Z", wts="2026-01-01T00:01:40Z"),
    )
    w = stream.windows
    assert w[("a", "2025-12-31T23:56:00")] == 2  # seq 1 and 2, once each
    assert w[("a", "2026-01-01T00:00:00")] == 3
    assert w[("b", "2026-01-01T00:00:00")] == 1
    assert w[("c", "2026-01-01T00:01:00")] == 1


def test_state_is_freed_once_the_watermark_passes_the_bucket(stream: _Stream) -> None:
    stream.put(_row("a", 1, "2026-01-01T00:00:10Z"), _row("a", 2, "2026-01-01T00:01:10Z"))
    before, _ = stream.state(stream.query.lastProgress)
    assert before == 2  # one group per (device, bucket of device time)
    # the watermark moves to 00:15 (newest 00:20 - 300 s), past both buckets' ends
    stream.put(_row("z", 1, "2026-01-01T00:20:00Z"))
    progress = stream.put(_row("z", 2, "2026-01-01T00:20:01Z"))
    rows, _ = stream.state(progress)
    assert rows == 1  # a's two groups went with their timers; z's one remains
    # a copy of a's seq 1 now is behind the watermark: dropped as late, not counted again
    progress = stream.put(_row("a", 1, "2026-01-01T00:00:10Z"))
    assert stream.state(progress)[1] == 1
    assert stream.windows[("a", "2025-12-31T23:56:00")] == 1
