"""End to end on real Kafka + Spark + PostgreSQL: `fleetsim stream` as a child process.

A known set of records (duplicates, out-of-order, late, malformed, dead letters) must yield
exactly the expected sensor_data rows, alerts and window aggregates; a kill -9 mid-stream and a
restart from the checkpoint must leave the same tables (0 lost, 0 duplicated); SIGTERM stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until, while_running

from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import AlertsConfig, FleetsimConfig, config_to_env
from fleetsim.kernel.scrape import scrape as scrape_metrics
from fleetsim.stack.process import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.spark]

WINDOW = timedelta(minutes=2)
SLIDE = timedelta(minutes=1)
T0 = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
C_DEVICES = 30
C_READINGS = 100


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rec(dev: str, seq: int, ts: datetime, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "device_id": dev, "seq": seq, "ts": ts, "temperature": 20.0 + seq * 0.1,
        "humidity": 40.0 + seq * 0.1, "co2": 500.0 + seq, "pressure": 1000.0 + seq * 0.1, "battery": 80.0,
        "lat": 1.0, "lon": 2.0, "status": "OK",
    }  # fmt: skip
    r.update(kw)
    return r


def set_a() -> list[dict[str, Any]]:
    a = [rec("a", i + 1, T0 + timedelta(seconds=10 * i)) for i in range(8)]
    a[4]["temperature"] = 45.0  # a5: extreme_high
    b = [rec("b", i + 1, T0 + timedelta(seconds=10 * i), temperature=18.0) for i in range(6)]  # stuck at b6
    b[0]["battery"] = 10.0  # b1: low_battery
    out = [*a[:6], a[2], a[7], a[6], *b]  # a3 duplicated, a8 before a7
    out.append(rec("a", 9, T0 + timedelta(minutes=10)))  # moves the watermark to T0+8min
    return out


def set_b() -> list[dict[str, Any]]:
    return [
        rec("a", 10, T0 + timedelta(minutes=12)),
        rec("c", 1, T0 + timedelta(minutes=12)),
        rec("b", 7, T0 + timedelta(minutes=1), temperature=19.0, status="WARNING"),  # late
    ]


def set_c() -> list[dict[str, Any]]:
    out = []
    for k in range(C_READINGS):
        for d in range(C_DEVICES):
            out.append(
                rec(
                    f"d{d:02d}", k, T0 + timedelta(minutes=14, seconds=k * 0.25),
                    temperature=20 + (k % 10) * 0.1 + d * 0.01, humidity=40 + (k % 9) * 0.1, co2=500.0 + k,
                    pressure=1000 + (k % 11) * 0.1,
                )
            )  # fmt: skip
    return out


def encode(r: dict[str, Any]) -> bytes:
    return json.dumps({**r, "ts": iso(r["ts"])}).encode()


# ----------------------------------------------------------------------------- reference model
def expected_aggs(
    readings: list[dict[str, Any]], sites: dict[str, str]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Hand-computable oracle of sensor_data_agg: 2-min windows sliding by 1 min, three scopes."""
    alerts = AlertsConfig()
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in readings:
        ts = r["ts"]
        first = ts.replace(second=0, microsecond=0) - WINDOW + SLIDE
        start = first
        while start <= ts:
            if ts < start + WINDOW:
                for scope, key in (
                    ("device", r["device_id"]),
                    ("site", sites.get(r["device_id"])),
                    ("fleet", "fleet"),
                ):
                    if key is not None:
                        groups[(scope, key, start)].append(r)
            start += SLIDE
    out = {}
    for k, rows in groups.items():
        n_alerts = sum(
            (x["temperature"] > alerts.temperature_high) + (x["battery"] < alerts.low_battery_pct)
            + (x["status"] == "WARNING")
            for x in rows
        )  # fmt: skip
        temps = [x["temperature"] for x in rows]
        out[k] = {
            "n_messages": len(rows),
            "n_warnings": sum(x["status"] == "WARNING" for x in rows),
            "n_alerts": n_alerts,
            "temperature_mean": sum(temps) / len(temps),
            "temperature_min": min(temps),
            "temperature_max": max(temps),
            "co2_max": max(x["co2"] for x in rows),
        }
    return out


# ------------------------------------------------------------------------------------ helpers
def query(cfg: FleetsimConfig, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = pg_connect(cfg, "admin")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def arrival_ms(r: dict[str, Any]) -> int:
    """When a reading of the scenario reaches Kafka (its Kafka timestamp): a second after its own
    time, b7 ten minutes after (late: lateness is judged on arrival, docs/streaming.md)."""
    delay = timedelta(minutes=11) if (r["device_id"], r["seq"]) == ("b", 7) else timedelta(seconds=1)
    return int((r["ts"] + delay).timestamp() * 1000)


def _device_key(value: bytes) -> bytes | None:
    """The bridge's record key: the device id (one device, one partition; the executor-side sink
    relies on it), or none for a record that has no readable one (it is rejected anyway)."""
    try:
        dev = json.loads(value).get("device_id")
    except (ValueError, AttributeError):
        return None
    return dev.encode() if isinstance(dev, str) else None


def produce(
    cfg: FleetsimConfig,
    topic: str,
    records: list[bytes],
    headers: list[tuple[str, bytes]] | None = None,
    timestamps_ms: list[int] | None = None,
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), linger_ms=5)
    try:
        for i, value in enumerate(records):
            producer.send(
                topic,
                value,
                key=_device_key(value),
                headers=headers or [("received_at", str(int(time.time() * 1000)).encode())],
                timestamp_ms=timestamps_ms[i] if timestamps_ms else None,
            )
        producer.flush(30)
    finally:
        producer.close()


def partition_ends(cfg: FleetsimConfig, topic: str) -> dict[int, int]:
    """End offset of each partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_kwargs(cfg, "admin"), request_timeout_ms=10000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def realtime_committed(cfg: FleetsimConfig) -> dict[int, int]:
    """Telemetry offsets up to which the real-time raw query's checkpoint holds a committed batch
    (in real-time mode a batch's offset-log entry is written at its end, then its commit)."""
    ckpt = cfg.checkpoint_dir / "raw-realtime"
    last = max(int(f.name) for f in (ckpt / "commits").iterdir() if f.name.isdigit())
    offsets = json.loads((ckpt / "offsets" / str(last)).read_text().splitlines()[2])
    return {int(p): off for p, off in offsets[cfg.kafka.telemetry_topic].items()}


@pytest.fixture(scope="module")
def stream_cfg(postgres: FleetsimConfig, kafka_topics: Callable[..., FleetsimConfig],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetsimConfig]:  # fmt: skip
    ui, metrics = free_ports(2)
    cfg = kafka_topics("stream").with_overrides(
        {
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.trigger_interval_s": 0.5,
            "spark.agg_trigger_interval_s": 0.5,
            # The real-time raw query checkpoints every 5 s: the kill lands after a checkpoint,
            # so the restart resumes from one (and re-reads up to 5 s that the loader merged).
            "spark.realtime_batch_s": 5,
            "spark.max_offsets_per_trigger": 1000,
            "spark.agg_max_offsets_per_trigger": 1000,
            "spark.window": "2 minutes",
            "spark.slide": "1 minute",
            "spark.watermark": "2 minutes",
            "spark.driver_memory": "768m",
            "spark.checkpoint_dir": str(tmp_path_factory.mktemp("stream-ckpt")),
            "spark.ui_port": ui,
            "spark.metrics_port": metrics,
        }
    )
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            # Other suites share this database: start from empty pipeline tables.
            cur.execute(
                "TRUNCATE sensor_data, device_latest, sensor_alerts, sensor_data_agg, sensor_data_rejects, "
                "deadletter_records, pipeline_metrics"
            )
            sites = {"a": "s1", "b": "s1", "c": "s2", **{f"d{d:02d}": "s3" for d in range(C_DEVICES)}}
            for dev, site in sites.items():
                cur.execute(
                    "INSERT INTO devices (device_id, site) VALUES (%s, %s) "
                    "ON CONFLICT (device_id) DO UPDATE SET site = EXCLUDED.site",
                    (dev, site),
                )
    finally:
        conn.close()
    yield cfg


def jvm_argv(driver_pid: int) -> list[str]:
    """Command line of the Spark JVM the job's Python driver launched (its child process)."""
    from fleetsim.bench.memory import children_map, tree

    for pid in tree(driver_pid, children_map()):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        if any(a.endswith("SparkSubmit") for a in argv):
            return argv
    raise AssertionError(f"no Spark JVM under pid {driver_pid}")


def start_job(cfg: FleetsimConfig, workdir: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **config_to_env(cfg)}
    env = {k: v for k, v in env.items() if not (k.startswith("FLEETSIM_") and k not in config_to_env(cfg))}
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "fleetsim.cli", "stream"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


# Two Spark driver starts plus ~10 micro-batches: ~3 min on a quiet 2-core machine, far more when
# it is shared, hence a longer timeout than the suite's default.
@pytest.mark.timeout(1500)
def test_exact_tables_then_kill_and_restart(stream_cfg: FleetsimConfig, tmp_path: Path) -> None:
    cfg = stream_cfg
    k = cfg.kafka
    a, b, c = set_a(), set_b(), set_c()
    now_ms = int(time.time() * 1000)
    produce(
        cfg,
        k.telemetry_topic,
        [encode(r) for r in a] + [b"{oops", json.dumps({"device_id": "a"}).encode()],
        timestamps_ms=[arrival_ms(r) for r in a] + [now_ms, now_ms],
    )
    produce(cfg, k.deadletter_topic, [b"\x00raw"], [("reason", b"too_large"), ("detail", b"5000 bytes"),
                                                    ("source_topic", b"sensors/z/telemetry")])  # fmt: skip
    sites = {"a": "s1", "b": "s1", "c": "s2", **{f"d{d:02d}": "s3" for d in range(C_DEVICES)}}
    proc = start_job(cfg, tmp_path, "run1")
    try:
        # ---- set A: exact rows, rejects, dead letters, alerts, windows
        a_keys = {(r["device_id"], r["seq"]) for r in a}
        count = lambda: query(cfg, "SELECT count(*) FROM sensor_data")[0][0]  # noqa: E731
        wait_until(
            while_running(proc, lambda: count() == len(a_keys), "the stream job"),
            900,
            interval_s=0.5,
            what="set A in sensor_data",
        )
        wait_until(
            while_running(
                proc, lambda: query(cfg, "SELECT count(*) FROM sensor_data_agg")[0][0] > 0, "the stream job"
            ),
            120,
            interval_s=0.5,
            what="set A windows",
        )
        rows = query(cfg, "SELECT device_id, seq, late, site, bridge_ts IS NOT NULL FROM sensor_data")
        assert {(d, s) for d, s, *_ in rows} == a_keys
        # Memory bounded by construction (the soak's verdict): the whole heap reserved at start,
        # every RocksDB store inside one native budget.
        argv = jvm_argv(proc.pid)
        assert {"-Xms768m", "-Xmx768m", "-XX:+AlwaysPreTouch"} <= set(argv), argv
        assert "spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage=true" in argv
        assert f"spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB={cfg.spark.state_memory_mb}" in argv
        assert any(
            a.startswith("spark.sql.streaming.checkpointFileManagerClass=")
            and a.endswith(".FileSystemBasedCheckpointFileManager")
            for a in argv
        ), argv
        assert all(not late and bridge for _, _, late, _, bridge in rows)
        assert {d: site for d, _, _, site, _ in rows} == {"a": "s1", "b": "s1"}
        rejects = query(cfg, "SELECT reason FROM sensor_data_rejects ORDER BY kafka_offset")
        assert sorted(r[0].split(":")[0] for r in rejects) == ["invalid_json", "schema"]
        wait_until(
            while_running(
                proc,
                lambda: query(cfg, "SELECT count(*) FROM deadletter_records")[0][0] == 1,
                "the stream job",
            ),
            60,
            interval_s=0.5,
            what="dead letter",
        )
        assert query(cfg, "SELECT reason, detail, source_topic FROM deadletter_records") == [
            ("too_large", "5000 bytes", "sensors/z/telemetry")
        ]
        # ---- set B: the late row lands (flagged) but stays out of the windows
        produce(cfg, k.telemetry_topic, [encode(r) for r in b], timestamps_ms=[arrival_ms(r) for r in b])
        wait_until(
            while_running(proc, lambda: count() == len(a_keys) + len(b), "the stream job"),
            120,
            interval_s=0.5,
            what="set B in sensor_data",
        )
        assert query(cfg, "SELECT late FROM sensor_data WHERE device_id = 'b' AND seq = 7") == [(True,)]
        # The windows see set B before set C comes (c1's window), so the kill interrupts set C only.
        c1_window = "SELECT count(*) FROM sensor_data_agg WHERE scope = 'device' AND key = 'c'"
        wait_until(
            while_running(proc, lambda: query(cfg, c1_window)[0][0] >= 1, "the stream job"),
            120,
            interval_s=0.5,
            what="set B in the windows",
        )
        # ---- set C: kill -9 mid-stream
        produce(cfg, k.telemetry_topic, [encode(r) for r in c], timestamps_ms=[arrival_ms(r) for r in c])
        wait_until(
            while_running(proc, lambda: count() > len(a_keys) + len(b) + 1000, "the stream job"),
            300,
            interval_s=0.5,
            what="part of set C",
        )
        killed_at = count()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # No UI the second time: the killed driver's JVM may hold the UI port for a moment.
        proc = start_job(cfg, tmp_path, "run2", "--no-ui")
        total = len(a_keys) + len(b) + len(c)
        wait_until(
            while_running(proc, lambda: count() >= total, "the stream job"),
            300,
            interval_s=0.5,
            what="all of set C after the restart",
        )

        accepted = {(r["device_id"], r["seq"]): r for r in [*a, *b, *c]}
        on_time = [r for r in accepted.values() if not (r["device_id"] == "b" and r["seq"] == 7)]
        want_aggs = expected_aggs(on_time, sites)

        def agg_rows() -> dict[tuple[Any, ...], dict[str, Any]]:
            got = query(
                cfg,
                "SELECT scope, key, window_start, window_end, n_messages, n_warnings, n_alerts, "
                "temperature_mean, temperature_min, temperature_max, co2_max FROM sensor_data_agg",
            )
            return {
                (s, key, ws): {"n_messages": n, "n_warnings": w, "n_alerts": na, "temperature_mean": tm,
                               "temperature_min": tmin, "temperature_max": tmax, "co2_max": cmax,
                               "span": we - ws}
                for s, key, ws, we, n, w, na, tm, tmin, tmax, cmax in got
            }  # fmt: skip

        want_counts = {key: v["n_messages"] for key, v in want_aggs.items()}
        try:
            wait_until(
                while_running(
                    proc,
                    lambda: {key: v["n_messages"] for key, v in agg_rows().items()} == want_counts,
                    "the stream job",
                ),
                600,
                interval_s=0.5,
                what="window counts to converge",
            )
        except AssertionError as exc:  # say how far off, not just "timed out"
            got_counts = {key: v["n_messages"] for key, v in agg_rows().items()}
            diff = sorted(
                (key, got_counts.get(key), want_counts.get(key))
                for key in set(got_counts) | set(want_counts)
                if got_counts.get(key) != want_counts.get(key)
            )
            msg = f"{exc}; {len(diff)} windows differ (key, got, want): {diff[:8]}"
            raise AssertionError(msg) from exc
        # Metrics endpoint of the restarted job.
        exported = scrape_metrics(cfg.spark.metrics_port, timeout_s=5)
        assert (
            "fleetsim_stream_rows_written_total" in exported and "fleetsim_stream_last_batch_id" in exported
        )

        # SIGTERM while the real-time raw query's running batch holds records it has read (set D:
        # malformed, so they change no reading, window or alert): a graceful stop lets that batch
        # reach its checkpoint, so a restart has nothing to read again (before, it re-read up to
        # spark.realtime_batch_s of records: bench/ANALYSIS.md, twenty-first round).
        d = [f"{{oops-{i}".encode() for i in range(5)]
        produce(cfg, k.telemetry_topic, d)
        rejects_n = lambda: query(cfg, "SELECT count(*) FROM sensor_data_rejects")[0][0]  # noqa: E731
        wait_until(
            while_running(proc, lambda: rejects_n() == 2 + len(d), "the stream job"),
            60,
            interval_s=0.1,
            what="set D merged",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
        assert realtime_committed(cfg) == partition_ends(cfg, k.telemetry_topic), (
            "the graceful stop left records read but not checkpointed"
        )
        assert b"at its next checkpoint" in (tmp_path / "run2.log").read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    # 0 lost, 0 duplicated, nothing extra: exactly the accepted readings.
    assert 0 < killed_at - len(a_keys) - len(b) < len(c), "the kill did not land mid-stream"
    keys = query(cfg, "SELECT device_id, seq FROM sensor_data")
    assert len(keys) == len(set(keys)) == len(accepted)
    assert set(keys) == set(accepted)
    got_aggs = agg_rows()
    assert set(got_aggs) == set(want_aggs)
    for key, want in want_aggs.items():
        got = got_aggs[key]
        assert got["span"] == WINDOW
        for field in (
            "n_messages",
            "n_warnings",
            "n_alerts",
            "temperature_min",
            "temperature_max",
            "co2_max",
        ):
            assert got[field] == pytest.approx(want[field]), (key, field)
        assert got["temperature_mean"] == pytest.approx(want["temperature_mean"], rel=1e-9), key

    alerts = {
        (d, kind, m, ts)
        for d, kind, m, ts in query(cfg, "SELECT device_id, kind, measurement, event_ts FROM sensor_alerts")
    }
    # b goes quiet after T0+50s, but its late reading at T0+1min arrives later. Whether that
    # reading is already stored when a batch checks for silence depends on how Kafka records were
    # cut into micro-batches, so b's "overdue since" instant is T0+110s, T0+120s, or both (a
    # second silence after the late reading is a new episode). Anything else is a bug.
    b_offline = {a for a in alerts if a[:3] == ("b", "offline", "")}
    # Which batch found each silence, against what: the first thing to read when this fails.
    clock_alerts = query(
        cfg,
        "SELECT device_id, kind, event_ts, value, seq, detected_at FROM sensor_alerts "
        "WHERE kind IN ('offline', 'clock_skew') ORDER BY detected_at",
    )
    assert b_offline, "b's silence was not detected"
    assert {ts for *_, ts in b_offline} <= {T0 + timedelta(seconds=110), T0 + timedelta(seconds=120)}, (
        T0,
        clock_alerts,
    )
    # b7, delivered 11 minutes after it was made by a device not heard from otherwise, looks like a
    # clock behind the fleet's when its batch has enough devices for a reference (docs/streaming.md).
    b_skew = {a for a in alerts if a[:3] == ("b", "clock_skew", "")}
    assert b_skew <= {("b", "clock_skew", "", T0 + timedelta(minutes=1))}
    assert alerts - b_offline - b_skew == {
        ("a", "extreme_high", "temperature", T0 + timedelta(seconds=40)),
        ("b", "low_battery", "battery", T0),
        ("b", "stuck", "temperature", T0 + timedelta(seconds=50)),
        ("b", "status_warning", "", T0 + timedelta(minutes=1)),
        ("a", "offline", "", T0 + timedelta(minutes=13)),
        # Gaps in a's own event time (a8 -> a9, a9 -> a10): silences the readings themselves show.
        ("a", "offline", "", T0 + timedelta(seconds=130)),
        ("a", "offline", "", T0 + timedelta(minutes=11)),
        ("c", "offline", "", T0 + timedelta(minutes=13)),
    }, (T0, clock_alerts)
    fault_sites = query(cfg, "SELECT DISTINCT site FROM sensor_alerts WHERE device_id = 'b'")
    assert fault_sites == [("s1",)]
    metrics = query(
        cfg,
        "SELECT max(latency_p95_ms) FILTER (WHERE query_name = 'raw'), "
        "sum(late_rows_dropped) FILTER (WHERE query_name = 'agg'), "
        "sum(malformed_rows) FILTER (WHERE query_name = 'raw') FROM pipeline_metrics",
    )[0]
    assert metrics[0] is not None and metrics[0] > 0
    agg_progress = query(
        cfg,
        "SELECT batch_id, input_rows, watermark, late_rows_dropped FROM pipeline_metrics "
        "WHERE query_name = 'agg' ORDER BY recorded_at",
    )
    # b7 left out by the lateness rule (not by Spark's watermark, which only evicts state).
    assert metrics[1] == 0, agg_progress
    assert metrics[2] == 2 + 5  # the two of set A, set D
