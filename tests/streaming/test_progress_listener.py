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
from fleetsim.cloud.streaming.listener import ProgressListener, progress_figures, sink_figures, state_figures

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


def test_progress_and_observed_metrics_arrive_whole(spark: Any, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "1.json").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(7)))
    stream = spark.readStream.schema("n int").json(str(inbox))
    observed = stream.observe(
        OBSERVED_NAME, F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum("n"), F.lit(0)).alias("inserted")
    )
    recorder = Recorder()
    spark.streams.addListener(recorder)
    query = (
        observed.writeStream.format("noop")
        .queryName("listener-bridge")
        .trigger(processingTime="0.2 seconds")
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .start()
    )
    try:
        wait_until(lambda: any(p.numInputRows for p in list(recorder.progress)), 60, what="a batch with rows")
    finally:
        query.stop()
        spark.streams.removeListener(recorder)
    p = next(p for p in list(recorder.progress) if p.numInputRows)
    assert p.name == "listener-bridge"
    fig = progress_figures(p)
    assert fig["input_rows"] == 7
    assert fig["batch_duration_ms"] is not None and fig["batch_duration_ms"] >= 0
    assert {"addBatch", "triggerExecution"} <= set(p.durationMs)
    sink = sink_figures(p)
    assert sink is not None
    assert (sink["rows"], sink["inserted"]) == (7, sum(range(7)))
    assert sink["tasks"] is None  # not observed here: absent, not an error
    assert state_figures(p) is None  # a stateless query


def test_a_stateful_query_reports_its_state(spark: Any, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "1.json").write_text("".join(json.dumps({"n": i % 5}) + "\n" for i in range(12)))
    counts = spark.readStream.schema("n int").json(str(inbox)).groupBy("n").count()
    recorder = Recorder()
    spark.streams.addListener(recorder)
    query = (
        counts.writeStream.format("noop")
        .outputMode("update")
        .queryName("listener-state")
        .trigger(processingTime="0.2 seconds")
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .start()
    )
    try:
        wait_until(lambda: any(p.numInputRows for p in list(recorder.progress)), 60, what="a batch with rows")
    finally:
        query.stop()
        spark.streams.removeListener(recorder)
    p = next(p for p in list(recorder.progress) if p.numInputRows)
    state = state_figures(p)
    assert state is not None
    assert state["rows"] == 5  # one per distinct key
    assert state["memory_bytes"] > 0
