"""The job's listener bridge on real Spark: progress events cross py4j as one JSON string
(listener.ProgressListener), and what the job reads from them survives the trip: input rows,
phase durations, and the executor-side sink's observed metrics (a Row per observation)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from fleetsim.cloud.streaming.executor_sink import OBSERVED_NAME
from fleetsim.cloud.streaming.listener import (
    ProgressListener,
    backlog_records,
    progress_figures,
    sink_figures,
    state_figures,
    state_timings,
)

pytestmark = [pytest.mark.integration, pytest.mark.spark]


class Recorder(ProgressListener):
    def __init__(self) -> None:
        self.progress: list[Any] = []
        self.lock = threading.Lock()

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        with self.lock:
            self.progress.append(event.progress)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass


def test_progress_observed_metrics_and_state_arrive_whole(spark: Any, tmp_path: Path) -> None:
    """Two queries side by side (one batch of Spark's fixed cost, not two): a stateless one with
    observed metrics, and a stateful one whose state stores report their rows and memory."""
    from pyspark.sql import functions as F

    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "1.json").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(7)))
    stream = spark.readStream.schema("n int").json(str(inbox))
    observed = stream.observe(
        OBSERVED_NAME, F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum("n"), F.lit(0)).alias("inserted")
    )
    counts = stream.groupBy((F.col("n") % 5).alias("k")).count()
    recorder = Recorder()
    spark.streams.addListener(recorder)
    queries = [
        df.writeStream.format("noop")
        .outputMode(mode)
        .queryName(name)
        .trigger(processingTime="0.2 seconds")
        .option("checkpointLocation", str(tmp_path / name))
        .start()
        for df, name, mode in ((observed, "listener-bridge", "append"), (counts, "listener-state", "update"))
    ]

    def first(name: str) -> Any:
        return next((p for p in list(recorder.progress) if p.name == name and p.numInputRows), None)

    try:
        wait_until(lambda: first("listener-bridge") and first("listener-state"), 60, what="a batch of each")
    finally:
        for q in queries:
            q.stop()
        spark.streams.removeListener(recorder)
    p = first("listener-bridge")
    fig = progress_figures(p)
    assert fig["input_rows"] == 7
    assert fig["batch_duration_ms"] is not None and fig["batch_duration_ms"] >= 0
    assert {"addBatch", "triggerExecution"} <= set(p.durationMs)
    sink = sink_figures(p)
    assert sink is not None
    assert (sink["rows"], sink["inserted"]) == (7, sum(range(7)))
    assert sink["tasks"] is None  # not observed here: absent, not an error
    assert state_figures(p) is None  # a stateless query
    state = state_figures(first("listener-state"))
    assert state is not None
    assert state["rows"] == 5  # one per distinct key
    assert state["memory_bytes"] > 0
    assert state_timings(p) == {}  # stateless: no operator to time
    timings = state_timings(first("listener-state"))
    # A groupBy's state is one operator, timed in its three phases (each may round to 0 ms).
    assert list(timings) == ["stateStoreSave"], timings
    assert set(timings["stateStoreSave"]) == {"updates", "removals", "commit"}
    assert all(isinstance(ms, int) and ms >= 0 for ms in timings["stateStoreSave"].values())


def test_a_capped_kafka_batch_reports_what_it_left_unread(
    spark: Any, kafka_topics: Any, tmp_path: Path
) -> None:
    """The windowed query's backlog gauge on real Kafka: a batch cap of 4 over 10 records leaves
    the rest for later batches (what a query falling behind looks like), and the batch that
    catches up leaves nothing."""
    from kafka import KafkaProducer

    from fleetsim.cloud.streaming.job import kafka_source_options
    from fleetsim.kernel.clients import kafka_python_kwargs

    cfg = kafka_topics("backlog").with_overrides({"spark.agg_max_offsets_per_trigger": 4})
    topic = cfg.kafka.telemetry_topic
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), acks="all")
    for i in range(10):
        producer.send(topic, key=f"dev-{i % 3}".encode(), value=b"{}")
    producer.flush()
    producer.close()
    options = kafka_source_options(cfg, topic, windowed=True)
    stream = spark.readStream.format("kafka").options(**options).load()
    recorder = Recorder()
    spark.streams.addListener(recorder)
    query = (
        stream.writeStream.format("noop")
        .queryName("listener-backlog")
        .trigger(processingTime="0.2 seconds")
        .option("checkpointLocation", str(tmp_path / "backlog"))
        .start()
    )

    def batches() -> list[Any]:
        return [p for p in list(recorder.progress) if p.name == "listener-backlog" and p.numInputRows]

    try:
        wait_until(lambda: sum(p.numInputRows for p in batches()) >= 10, 90, what="all 10 records read")
    finally:
        query.stop()
        spark.streams.removeListener(recorder)
    done = batches()
    first, last = done[0], done[-1]
    assert first.numInputRows <= 4
    assert backlog_records(first) == 10 - first.numInputRows  # what the cap left, not a guess
    assert backlog_records(last) == 0
