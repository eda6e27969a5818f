"""Pure parts of the real-time raw flow: the loader's record sorting and the task-slot rule."""

from __future__ import annotations

from datetime import date

import pytest

from fleetsim.cloud.streaming.loader import LinesBatch, LinesError
from fleetsim.cloud.streaming.session import task_slots_master
from fleetsim.kernel.config import load_config


def test_lines_sorted_into_the_three_copy_payloads_in_arrival_order() -> None:
    b = LinesBatch()
    b.add(b"0|2026-12-05", b"r1\n")
    b.add(b"1|", b"a1\n")
    b.add(b"0|2026-12-06", b"r2\n")
    b.add(b"2|", b"x1\n")
    b.add(b"0|2026-12-05", b"r3\n")
    raw = b.raw_batch()
    assert raw.readings == b"r1\nr2\nr3\n"
    assert raw.alerts == b"a1\n"
    assert raw.rejects == b"x1\n"
    assert raw.days == (date(2026, 12, 5), date(2026, 12, 6))
    assert b.records == 5


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (b"7|", b"line\n", "kind"),
        (None, b"line\n", "kind"),
        (b"0|2026-12-05", b"no newline", "one CSV line"),
        (b"0|2026-12-05", None, "one CSV line"),
        (b"0|yesterday", b"line\n", "not a date"),
    ],
)
def test_a_record_no_realtime_query_wrote_is_refused_by_name(
    key: bytes | None, value: bytes | None, why: str
) -> None:
    b = LinesBatch()
    with pytest.raises(LinesError, match=why):
        b.add(key, value)
    assert b.records == 0
    assert b.raw_batch().readings == b""


def _cfg(raw_sink: str, partitions: int = 4, shuffle: int = 4):  # type: ignore[no-untyped-def]
    return load_config(None, environ={}).with_overrides(
        {"spark.raw_sink": raw_sink, "kafka.partitions": partitions, "spark.shuffle_partitions": shuffle}
    )


@pytest.mark.parametrize(
    ("master", "raw_sink", "want"),
    [
        ("local[2]", "realtime", "local[8]"),  # 4 long-running raw tasks + 4 for the windows
        ("local[2,3]", "realtime", "local[8,3]"),  # max failures kept
        ("local[16]", "realtime", "local[16]"),  # already enough
        ("local[2]", "driver", "local[2]"),  # micro-batches need no extra slots
        ("spark://127.0.0.1:7077", "realtime", "spark://127.0.0.1:7077"),  # a cluster's cores are its own
    ],
)
def test_a_local_master_gets_a_slot_per_realtime_task(master: str, raw_sink: str, want: str) -> None:
    assert task_slots_master(_cfg(raw_sink), master) == want


def test_local_star_counts_this_machines_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert task_slots_master(_cfg("realtime", partitions=6, shuffle=2), "local[*]") == "local[8]"
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert task_slots_master(_cfg("realtime"), "local[*]") == "local[*]"


def test_a_loader_records_one_metrics_row_for_its_merges_of_a_second() -> None:
    from fleetsim.cloud.streaming.loader import MergeWindow
    from fleetsim.cloud.streaming.pgsink import RawBatch, RawResult

    w = MergeWindow(started=100.0)
    for rows, p50, p95, mx, ms in (
        (10, 40.0, 80.0, 90.0, 5.0),
        (30, 60.0, 120.0, 150.0, 7.0),
        (5, 50.0, 70.0, 75.0, 3.0),
    ):
        batch = RawBatch(b"r\n" * rows, b"", b"x\nx\n", ())  # one of the two a replay
        w.add(rows, batch, RawResult(rows, 0, 1, p50, p95, mx, ms))
    f = w.figures(now=102.0)
    assert f["input_rows"] == 45
    assert f["input_rate"] == pytest.approx(22.5)
    assert f["batch_duration_ms"] == 2000
    assert f["write_duration_ms"] == 15
    assert f["latency_p50_ms"] == 50.0  # the median merge's p50
    assert f["latency_p95_ms"] == 120.0  # the worst merge's, never an average of p95s
    assert f["latency_max_ms"] == 150.0
    assert f["malformed_rows"] == 3  # stored rejects (RawResult.rejects), not lines re-read


def test_the_cluster_profile_keeps_micro_batches_when_its_workers_lack_slots() -> None:
    from fleetsim.stack.cluster_ports import profile_overrides

    small = _cfg("realtime").with_overrides({"cluster.spark_workers": 2, "cluster.worker_cores": 1})
    assert profile_overrides(small)["spark.raw_sink"] == "driver"
    big = _cfg("realtime").with_overrides({"cluster.spark_workers": 2, "cluster.worker_cores": 4})
    assert "spark.raw_sink" not in profile_overrides(big)
    executor = _cfg("executor").with_overrides({"cluster.spark_workers": 2, "cluster.worker_cores": 1})
    assert "spark.raw_sink" not in profile_overrides(executor)


def test_kafka_source_sets_the_fetch_settings_only_where_configured() -> None:
    from fleetsim.cloud.streaming.job import kafka_source_options

    base = load_config(None, environ={"FLEETSIM_KAFKA__STREAM_PASSWORD": "not-a-secret"})
    unset = base.with_overrides({"spark.fetch_max_wait_ms": None, "spark.fetch_min_bytes": None})
    plain = kafka_source_options(unset, "t", realtime=True)
    assert plain["subscribe"] == "t" and "maxOffsetsPerTrigger" not in plain
    assert not {"kafka.fetch.max.wait.ms", "kafka.fetch.min.bytes"} & set(plain)  # Kafka's defaults
    tuned = base.with_overrides({"spark.fetch_max_wait_ms": 100, "spark.fetch_min_bytes": 16384})
    opts = kafka_source_options(tuned, "t", realtime=True)
    assert opts["kafka.fetch.max.wait.ms"] == "100" and opts["kafka.fetch.min.bytes"] == "16384"
    batch = kafka_source_options(tuned, "t")  # a micro-batch reads a range already there
    assert batch["maxOffsetsPerTrigger"] == str(base.spark.max_offsets_per_trigger)
    assert not {"kafka.fetch.max.wait.ms", "kafka.fetch.min.bytes"} & set(batch)
    windowed = kafka_source_options(tuned, "t", windowed=True)
    assert windowed["maxOffsetsPerTrigger"] == str(base.spark.agg_max_offsets_per_trigger)


def test_the_default_windowed_batch_cap_sustains_the_target_rate_with_room_to_catch_up() -> None:
    # A capped batch every trigger is the windows' ceiling: 200,000 records every 30 s held them
    # at 6,667 msg/s, and the e2e soak at 8,000 left them further behind every batch.
    s = load_config(None, environ={"FLEETSIM_KAFKA__STREAM_PASSWORD": "not-a-secret"}).spark
    assert s.agg_max_offsets_per_trigger / s.agg_trigger_interval_s >= 3 * 10_000


def test_lines_sink_batches_its_records_for_the_configured_linger() -> None:
    from fleetsim.cloud.streaming.job import lines_sink_options

    base = load_config(None, environ={"FLEETSIM_KAFKA__STREAM_PASSWORD": "not-a-secret"})
    opts = lines_sink_options(base)
    assert opts["topic"] == base.kafka.lines_topic
    assert opts["kafka.linger.ms"] == str(base.spark.lines_linger_ms) == "10"
    assert opts["kafka.bootstrap.servers"] == base.kafka.bootstrap
    assert lines_sink_options(base.with_overrides({"spark.lines_linger_ms": 0}))["kafka.linger.ms"] == "0"
