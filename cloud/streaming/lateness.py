"""When a reading is late, and which event time the windows use (pure Column functions + SQL twins).

One rule decides both flows, per record, from the record alone, so the raw table's ``late`` flag and
the windows agree exactly whatever the micro-batch boundaries (the two queries cut Kafka into
different batches), and a replay decides the same way:

* **arrival** = the record's Kafka timestamp (``kafka_ts``, stamped once when the bridge produced it);
* **window time** ``wts = least(ts, kafka_ts + max_clock_skew)``: the device's own ``ts``, capped at
  its arrival plus the skew bound, so a clock that runs ahead cannot carry a reading (nor the
  watermark) further than ``max_clock_skew`` into the future. ``sensor_data.ts`` keeps the device's
  own time; ``wts`` is recomputable from ``sensor_data`` (``ts``, ``kafka_ts``);
* **late** ``ts < kafka_ts - watermark``: the reading reached Kafka more than the watermark delay
  after its own timestamp. A late reading lands in ``sensor_data`` with ``late = true`` and the
  windowed flow leaves it out; every other reading is in every window its ``wts`` falls in.

Spark's own watermark then only evicts state: it runs on ``wts`` with a delay of
``SparkConfig.state_delay_s`` (watermark + skew bound + a margin of one watermark delay for Kafka timestamps
out of order), long enough that it never drops a reading the rule keeps (proof in
docs/streaming.md). A row it drops anyway shows as ``pipeline_metrics.late_rows_dropped > 0``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pyspark.sql import Column
from pyspark.sql import functions as F

WINDOW_TS: Final = "wts"
"""Column of the event time the windows (and Spark's watermark) use."""


def _interval(seconds: float) -> Column:
    return F.make_dt_interval(secs=F.lit(seconds))


def window_ts(ts: Column, kafka_ts: Column, max_clock_skew: timedelta) -> Column:
    """``least(ts, kafka_ts + max_clock_skew)``: the device's time, no further ahead than the bound."""
    return F.least(ts, kafka_ts + _interval(max_clock_skew.total_seconds()))


def is_late(ts: Column, kafka_ts: Column, watermark: timedelta) -> Column:
    """The reading arrived more than ``watermark`` after its own timestamp (never NULL)."""
    return F.coalesce(ts < kafka_ts - _interval(watermark.total_seconds()), F.lit(False))


LATE_SQL: Final = "coalesce({ts} < {kafka_ts} - %(watermark)s::interval, false)"
"""PostgreSQL twin of :func:`is_late` (format ``ts``/``kafka_ts`` in, bind ``watermark``)."""
WINDOW_TS_SQL: Final = "least({ts}, {kafka_ts} + %(max_clock_skew)s::interval)"
"""PostgreSQL twin of :func:`window_ts` (for recomputing the windows from ``sensor_data``)."""
