"""Streaming sink benchmark: the default sink (lines topic + loader) vs ``df.write.jdbc`` append,
with the executor-side and the former driver-side sinks, side by side in one run.

1. Sink throughput. The same Kafka-shaped micro-batches (generated once, split into Kafka-like
   partitions by device, cached in Spark) go through (a) the default raw sink
   (``spark.raw_sink = "realtime"``): parse -> Spark-built COPY CSV -> the lines topic, as the
   real-time query writes it, while a running :class:`RawLoader` COPYs them into temp tables and
   merges them with INSERT ... ON CONFLICT into sensor_data + device_latest + alerts (history rules
   and incidents included), timed to the last row; (b) the executor-side sink: the same lines
   through ``mapInArrow``, each task COPYing and merging its partition in one transaction; (c) the
   peer baseline: parse -> ``df.write.jdbc`` append into sensor_data; (d) the former driver-side
   path: the same lines collected to the driver as Arrow, one transaction over one connection.
   Each run starts from an empty sensor_data; medians of several runs.
2. Event->row latency at 5k msg/s, Kafka-direct (this bench does not start the bridge; the e2e
   bench covers the full chain): a producer writes readings stamped with the send time at a fixed
   rate while the streaming job (all three queries) runs; p50/p95 of ``ingest_ts - ts`` over the
   rows after a warm-up.

Run: ``fleetsim bench sink`` or ``python bench/bench_sink.py [--quick]`` against a running stack.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from pyspark.sql import functions as F

from fleetsim.bench.engines import fresh_topics, pg_rows
from fleetsim.cloud.streaming import flows
from fleetsim.cloud.streaming.executor_sink import STATS_DDL, RawPartitionWriter, split_raw
from fleetsim.cloud.streaming.job import StreamJob
from fleetsim.cloud.streaming.loader import RawLoader
from fleetsim.cloud.streaming.metrics import StreamMetrics
from fleetsim.cloud.streaming.parse import parse_telemetry, valid_readings
from fleetsim.cloud.streaming.pgsink import PgSink
from fleetsim.cloud.streaming.session import build_session
from fleetsim.kernel.clients import confluent_kafka_config, pg_dsn_kwargs, spark_kafka_options
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.contract import encode_reading, format_ts_ms

REPO = Path(__file__).resolve().parent.parent
SINK_TARGET = 100_000.0
RATIO_TARGET = 3.0
LATENCY_TARGET_MS = 2000.0


def _reset(cfg: FleetsimConfig) -> None:
    pg_rows(
        cfg,
        "TRUNCATE sensor_data, device_latest, sensor_alerts, sensor_data_rejects, pipeline_metrics, "
        "incident_events, incidents",
    )


KAFKA_PARTITIONS = 4
"""Partitions of the bench batch: like the telemetry topic's, each holds whole devices."""


def _kafka_batch(spark: Any, rows: int, devices: int) -> Any:
    """Kafka-shaped rows with contract JSON values, built in Spark (cached, counted once), split
    into :data:`KAFKA_PARTITIONS` partitions by device as the bridge's keyed records are."""
    base_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    r = spark.range(rows)
    ts = F.timestamp_millis(F.lit(base_ms) + (F.col("id") * 1000 / devices).cast("long"))
    payload = F.to_json(
        F.struct(
            F.format_string("dev-%05d", (F.col("id") % devices).cast("int")).alias("device_id"),
            F.date_format(ts, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("ts"),
            (F.col("id") / devices).cast("long").alias("seq"),
            (20 + (F.col("id") % 97) / 10.0).alias("temperature"),
            (40 + (F.col("id") % 89) / 10.0).alias("humidity"),
            (500 + F.col("id") % 83).cast("double").alias("co2"),
            (1000 + (F.col("id") % 79) / 10.0).alias("pressure"),
            (80 - (F.col("id") % 71) / 10.0).alias("battery"),
            F.lit(48.85).alias("lat"),
            F.lit(2.35).alias("lon"),
            F.lit("OK").alias("status"),
        )
    )
    df = r.select(
        F.lit(None).cast("binary").alias("key"),
        payload.cast("binary").alias("value"),
        F.lit("bench").alias("topic"),
        ((F.col("id") % devices) % KAFKA_PARTITIONS).cast("int").alias("partition"),
        F.col("id").alias("offset"),
        F.current_timestamp().alias("timestamp"),
        F.lit(0).alias("timestampType"),
        F.array(
            F.struct(F.lit("received_at").alias("key"), F.lit(str(base_ms)).cast("binary").alias("value"))
        ).alias("headers"),
    )
    # Exactly one Kafka partition per Spark partition, as the Kafka source reads them (range or hash
    # repartitioning of 4 values leaves some partitions empty and others double).
    by_partition = df.rdd.keyBy(lambda r: r["partition"]).partitionBy(KAFKA_PARTITIONS, lambda p: p).values()
    df = spark.createDataFrame(by_partition, df.schema).cache()
    df.count()
    return df


def _executor_run(cfg: FleetsimConfig, df: Any) -> float:
    """The job's raw sink: every task writes its own partition; only per-task figures come back."""
    t0 = time.perf_counter()
    stats = flows.raw_lines(df, cfg.alerts).mapInArrow(RawPartitionWriter(cfg), STATS_DDL).collect()
    elapsed = time.perf_counter() - t0
    inserted = sum(s["inserted"] for s in stats)
    assert inserted == df.count(), f"executor sink inserted {inserted}"
    return elapsed


def _sink_run(cfg: FleetsimConfig, df: Any, batch_id: int) -> tuple[float, float]:
    """The former driver-side sink: collect the lines as Arrow, one transaction, one connection."""
    sink = PgSink(cfg, "bench")
    try:
        t0 = time.perf_counter()
        batch = split_raw(flows.raw_lines(df, cfg.alerts).toArrow())
        t1 = time.perf_counter()
        result = sink.write_raw(batch, batch_id)
        t2 = time.perf_counter()
    finally:
        sink.close()
    assert result.inserted == df.count(), f"sink inserted {result.inserted}"
    return t2 - t0, t2 - t1


def _realtime_run(cfg: FleetsimConfig, df: Any, rows: int) -> tuple[float, float]:
    """The shipped default (``spark.raw_sink = "realtime"``): Spark turns the batch into the same
    lines records the real-time query writes to the lines topic, while the running loader merges
    them; (seconds until the last row is in sensor_data, seconds of the Spark write alone)."""
    t0 = time.perf_counter()
    records = flows.realtime_records(flows.raw_lines(df, cfg.alerts, keep_partition=True))
    (
        records.write.format("kafka")
        .options(**spark_kafka_options(cfg, "stream"))
        .option("topic", cfg.kafka.lines_topic)
        .save()
    )
    spark_s = time.perf_counter() - t0
    deadline = t0 + 300
    while pg_rows(cfg, "SELECT count(*) FROM sensor_data")[0][0] < rows:
        if time.perf_counter() > deadline:
            raise RuntimeError("the loader did not merge the batch within 300 s")
        time.sleep(0.05)
    return time.perf_counter() - t0, spark_s


def _jdbc_run(cfg: FleetsimConfig, df: Any) -> float:
    kw = pg_dsn_kwargs(cfg, "writer")
    url = f"jdbc:postgresql://{kw['host']}:{kw['port']}/{kw['dbname']}"
    props = {"user": kw["user"], "password": kw["password"], "driver": "org.postgresql.Driver"}
    readings = (
        valid_readings(parse_telemetry(df)).drop("topic").withColumn("ingest_ts", F.current_timestamp())
    )
    t0 = time.perf_counter()
    readings.write.jdbc(url, "sensor_data", mode="append", properties=props)
    return time.perf_counter() - t0


def bench_throughput(cfg: FleetsimConfig, spark: Any, rows: int, runs: int) -> dict[str, Any]:
    df = _kafka_batch(spark, rows, devices=max(rows // 100, 10))
    today = datetime.now(UTC).date()  # readings span [now - 1 h, now - 1 h + rows / devices s]
    sink = PgSink(cfg, "bench")
    sink.ensure_partitions([today - timedelta(days=1), today])
    sink.close()
    loader = RawLoader(cfg, StreamMetrics(), name="bench-loader")
    loader.start()
    _reset(cfg)
    _realtime_run(cfg, df, rows)  # warm-up: JIT, codegen, Python workers, connections
    _reset(cfg)
    _executor_run(cfg, df)
    _reset(cfg)
    _sink_run(cfg, df, 0)
    _reset(cfg)
    _jdbc_run(cfg, df)
    rt_rates, rt_spark_rates, exec_rates, sink_rates, pg_rates, jdbc_rates = [], [], [], [], [], []
    for i in range(runs):
        _reset(cfg)
        total, spark_s = _realtime_run(cfg, df, rows)
        rt_rates.append(rows / total)
        rt_spark_rates.append(rows / spark_s)
        _reset(cfg)
        exec_rates.append(rows / _executor_run(cfg, df))
        _reset(cfg)
        total, pg = _sink_run(cfg, df, i + 1)
        sink_rates.append(rows / total)
        pg_rates.append(rows / pg)
        _reset(cfg)
        jdbc_rates.append(rows / _jdbc_run(cfg, df))
        n = pg_rows(cfg, "SELECT count(*) FROM sensor_data")[0][0]
        assert n == rows, f"jdbc wrote {n} rows"
    loader.stop()
    _reset(cfg)
    df.unpersist()
    return {
        "realtime": statistics.median(rt_rates),
        "realtime_spark": statistics.median(rt_spark_rates),
        "realtime_runs": [round(x) for x in rt_rates],
        "sink": statistics.median(exec_rates),
        "driver_sink": statistics.median(sink_rates),
        "sink_pg_only": statistics.median(pg_rates),
        "jdbc": statistics.median(jdbc_rates),
        "sink_runs": [round(x) for x in exec_rates],
        "driver_runs": [round(x) for x in sink_rates],
        "jdbc_runs": [round(x) for x in jdbc_rates],
        "pg_runs": [round(x) for x in pg_rates],
    }


def bench_latency(cfg: FleetsimConfig, rate: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Run the job, produce ``rate`` msg/s stamped with the send time, measure ingest_ts - ts."""
    _reset(cfg)
    job = StreamJob(cfg, ui=False)
    job.start()
    stop = threading.Event()
    producer = Producer({**confluent_kafka_config(cfg, "bridge"), "linger.ms": 5})
    devices = 1000
    sent = 0
    try:
        time.sleep(5)  # let the three queries run their first (empty) batches
        t_start = time.time()
        while time.time() - t_start < seconds and not stop.is_set():
            tick = time.time()
            for _ in range(rate // 10):
                now_ms = int(time.time() * 1000)
                dev = sent % devices
                value = encode_reading(
                    f"lat-{dev:04d}", format_ts_ms(now_ms), sent // devices, 21.0 + (sent % 13) / 10,
                    45.0 + (sent % 11) / 10, 600.0 + sent % 17, 1013.0 + (sent % 7) / 10, 80.0, 48.85, 2.35,
                )  # fmt: skip
                producer.produce(cfg.kafka.telemetry_topic, value, headers=[("received_at", str(now_ms))])
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, 0.1 - (time.time() - tick)))
        producer.flush(30)
        produced_s = time.time() - t_start
        deadline = time.time() + 120
        while time.time() < deadline:
            if pg_rows(cfg, "SELECT count(*) FROM sensor_data")[0][0] >= sent:
                break
            time.sleep(0.5)
    finally:
        job.stop()
    cutoff = datetime.fromtimestamp(t_start + warmup_s, UTC)
    row = pg_rows(
        cfg,
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), max(ms) FROM ("
        "SELECT extract(epoch FROM ingest_ts - ts) * 1000 AS ms FROM sensor_data WHERE ts >= %s) x",
        (cutoff,),
    )[0]
    landed = pg_rows(cfg, "SELECT count(*) FROM sensor_data")[0][0]
    return {
        "sent": sent,
        "landed": landed,
        "achieved_rate": sent / produced_s,
        "measured_rows": row[0],
        "p50_ms": row[1],
        "p95_ms": row[2],
        "max_ms": row[3],
    }


def run(cfg: FleetsimConfig, quick: bool) -> dict[str, Any]:
    ckpt = Path(tempfile.mkdtemp(prefix="bench-sink-ckpt-"))
    # Fresh topics: the loader's group starts at the beginning of an empty lines topic, whatever
    # an earlier benchmark left in the stack's.
    cfg = fresh_topics(cfg, "bench-sink").with_overrides(
        {
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.checkpoint_dir": str(ckpt),
            "spark.starting_offsets": "latest",
            "spark.trigger_interval_s": 0.5,
            "spark.metrics_port": 0,
        }
    )
    rows, runs = (50_000, 1) if quick else (200_000, 3)
    spark = build_session(cfg, ui=False)
    try:
        tp = bench_throughput(cfg, spark, rows, runs)
        lat = bench_latency(cfg, 5000, 15.0 if quick else 40.0, 5.0 if quick else 10.0)
    finally:
        spark.stop()
    ratio = tp["realtime"] / tp["jdbc"]
    p95 = lat["p95_ms"]
    return {
        "title": "Streaming sink",
        "method": (
            f"{rows} Kafka-shaped readings ({rows // 100} devices, {KAFKA_PARTITIONS} partitions by "
            "device) cached in Spark local[2]; each run starts from an empty sensor_data. Default sink = "
            "parse + Spark-built COPY CSV lines written to the lines topic (what the real-time query "
            "does) while one loader (as in the job) COPYs them to temp tables + INSERT ON CONFLICT "
            "(sensor_data, device_latest, alerts incl. stuck/drift/offline SQL, incidents), timed to the "
            "last row in sensor_data. Executor-side sink = the same lines through mapInArrow: each task "
            "COPYs and merges its partition, one transaction per task. Driver-side sink (former) = the "
            "same lines collected as Arrow, one transaction. Baseline = parse + df.write.jdbc append "
            "(default batchsize 1000). "
            f"Median of {runs} run(s) each. Latency: the 3-query streaming job (default raw sink) while a "
            "librdkafka producer writes 5k msg/s stamped with the send time straight to Kafka (no bridge); "
            "p95 of ingest_ts - ts after a warm-up."
        ),
        "figures": [
            {
                "name": "sink rows/s into sensor_data (the default: lines topic + one loader, end to end)",
                "value": round(tp["realtime"]),
                "unit": "rows/s",
                "baseline_name": "df.write.jdbc append",
                "baseline": round(tp["jdbc"]),
                "ratio": round(ratio, 2),
                "target": f">= {SINK_TARGET:.0f} rows/s and >= {RATIO_TARGET}x jdbc",
                "met": tp["realtime"] >= SINK_TARGET and ratio >= RATIO_TARGET,
                "runs": tp["realtime_runs"],
            },
            {
                "name": "Spark's part of the default sink alone (lines records written to Kafka)",
                "value": round(tp["realtime_spark"]),
                "unit": "rows/s",
            },
            {
                "name": "executor-side sink rows/s (spark.raw_sink = executor: mapInArrow)",
                "value": round(tp["sink"]),
                "unit": "rows/s",
                "baseline_name": "df.write.jdbc append",
                "baseline": round(tp["jdbc"]),
                "ratio": round(tp["sink"] / tp["jdbc"], 2),
                "runs": tp["sink_runs"],
            },
            {
                "name": "former driver-side sink rows/s (Arrow collect + one transaction)",
                "value": round(tp["driver_sink"]),
                "unit": "rows/s",
                "runs": tp["driver_runs"],
            },
            {
                "name": "PostgreSQL part of the driver-side sink only (COPY + merges)",
                "value": round(tp["sink_pg_only"]),
                "unit": "rows/s",
                "runs": tp["pg_runs"],
            },
            {
                "name": "p95 event->row latency at 5k msg/s (Kafka-direct)",
                "value": round(p95) if p95 is not None else None,
                "unit": "ms",
                "target": f"<= {LATENCY_TARGET_MS:.0f} ms",
                "met": p95 is not None and p95 <= LATENCY_TARGET_MS,
            },
        ],
        "notes": [
            "Machine shared with other engineers' runs: 2 cores for Spark, PostgreSQL and Kafka together.",
            f"Latency run: sent {lat['sent']} at {lat['achieved_rate']:.0f} msg/s, landed {lat['landed']}, "
            f"p50 {lat['p50_ms']} ms, max {lat['max_ms']} ms.",
            "Latency is Kafka-direct: the bridge hop is not included (see the e2e bench).",
        ],
        "jdbc_runs": tp["jdbc_runs"],
        "latency": lat,
    }


if __name__ == "__main__":
    print(json.dumps(run(load_config(), "--quick" in sys.argv[1:]), indent=2, default=str))
