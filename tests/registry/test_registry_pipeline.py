"""End to end with real engines: registered real devices publish with their own credentials in the
three formats through Mosquitto -> ``fleetsim bridge`` -> Kafka -> ``fleetsim stream`` (Spark)
-> PostgreSQL, and land with the registry's site and position; unknown and disabled ids are
dead-lettered ``unknown_device`` (bridge in ``deadletter`` mode)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleetsim.kernel.clients import kafka_python_kwargs, mqtt_client, mqtt_connect, pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.scrape import scrape as scrape_metrics
from fleetsim.registry import service
from fleetsim.registry.model import device_topic, validate_new_device
from fleetsim.stack import process

pytestmark = pytest.mark.integration

DEADLINE_S = 420.0
"""Spark's first micro-batch includes the JVM and session start: ~15 s on an idle 2-core machine,
2.5-4.7 min measured while the shared machine ran at load 20-30."""


def _spawn(cfg: FleetsimConfig, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleetsim.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def pipeline(
    mosquitto: FleetsimConfig,
    postgres: FleetsimConfig,
    kafka_topics: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FleetsimConfig]:
    tmp = tmp_path_factory.mktemp("registry-pipeline")
    uid = uuid.uuid4().hex[:6]
    (metrics_port,) = process.free_ports(1)
    cfg = kafka_topics("registry").with_overrides(
        {
            "bridge.unknown_device": "deadletter",
            "bridge.client_id": f"registry-bridge-{uid}",
            "bridge.metrics_port": metrics_port,
            "spark.metrics_port": 0,
            "spark.master": "local[2]",
            "spark.shuffle_partitions": 2,
            "spark.checkpoint_dir": str(tmp / "checkpoints"),
            "spark.app_name": f"registry-test-{uid}",
            # Teardown need not wait for the windowed query's first batch (~8 s, JIT): these
            # tests read only the raw flow, and a stop mid-batch loses nothing (replayed).
            "stack.stop_timeout_s": 4,
        }
    )
    bridge = _spawn(cfg, tmp / "bridge.log", "bridge")
    stream = _spawn(cfg, tmp / "stream.log", "stream", "--no-ui")
    try:
        # Readings published before the bridge's first subscription would have no session to wait
        # in: wait for its state gauge to say OK (MQTT connected and subscribed, Kafka reachable).
        assert process.wait_for(lambda: _bridge_ok(metrics_port), 90, 0.5), "bridge never became ready"
        yield cfg
    finally:
        _stop(bridge)
        _stop(stream)
        for name in ("bridge.log", "stream.log"):
            # Shown by pytest only when a test failed: the components' own account.
            print(f"--- {name} (tail)\n" + process.tail(tmp / name, 30))


def _bridge_ok(port: int) -> bool:
    return scrape_metrics(port).value("fleetsim_bridge_state") == 0.0


def _device_client(cfg: FleetsimConfig, user: str, password: str) -> Any:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311
    )
    client.username_pw_set(user, password)
    connack: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p=None: connack.put(rc)
    client.connect(cfg.mqtt.host, cfg.mqtt.port)
    client.loop_start()
    assert not connack.get(timeout=10).is_failure
    return client


def _rows(cfg: FleetsimConfig, device_ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT device_id, site, lat, lon, temperature FROM sensor_data WHERE device_id = ANY(%s) "
                "ORDER BY device_id, ts, seq",
                (device_ids,),
            )
            out: dict[str, list[tuple[Any, ...]]] = {}
            for row in cur.fetchall():
                out.setdefault(row[0], []).append(row[1:])
            return out
    finally:
        conn.close()


def _deadletters(cfg: FleetsimConfig, wanted: set[str], timeout_s: float) -> dict[str, str]:
    """``source_topic -> reason`` of dead-letter records for the wanted MQTT topics."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        cfg.kafka.deadletter_topic,
        **kafka_python_kwargs(cfg, "admin"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not wanted <= set(found):
            for rec in consumer:
                headers = {k: v.decode() for k, v in rec.headers}
                if headers.get("source_topic") in wanted:
                    found[headers["source_topic"]] = headers.get("reason", "")
    finally:
        consumer.close()
    return found


def _telemetry_keys(cfg: FleetsimConfig) -> set[str]:
    """Keys (device ids: the bridge keys records by device) of every record in the pipeline's
    telemetry topic."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        cfg.kafka.telemetry_topic,
        **kafka_python_kwargs(cfg, "admin"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return {rec.key.decode() for rec in consumer if rec.key}
    finally:
        consumer.close()


def test_real_devices_in_three_formats_get_registry_site_and_position(pipeline: FleetsimConfig) -> None:
    cfg = pipeline
    uid = uuid.uuid4().hex[:6]
    specs = {
        "native": (f"real-n-{uid}", "balcony", 45.7001, 4.8001),
        "senml": (f"real-s-{uid}", "garden", 45.7002, 4.8002),
        "tasmota": (f"real-t-{uid}", "garage", 45.7003, 4.8003),
    }
    passwords: dict[str, str] = {}
    for fmt, (dev, site, lat, lon) in specs.items():
        result = service.add_device(
            cfg, validate_new_device(cfg, dev, site=site, lat=lat, lon=lon, payload_format=fmt)
        )
        assert result.broker_reloaded and result.password
        passwords[dev] = result.password
    # The broker applies the new identities on SIGHUP, asynchronously: wait until each logs in.
    from fleetsim.stack.mosquitto import connack_ok

    for dev, pw in passwords.items():

        def accepted(d: str = dev, p: str = pw) -> bool:
            return connack_ok(cfg, username=d, password=p)

        assert process.wait_for(accepted, 10)

    now = datetime.now(UTC)
    ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    native_dev, senml_dev, tasmota_dev = (specs[f][0] for f in ("native", "senml", "tasmota"))
    payloads = {
        native_dev: [
            # No position: the registry's is filled in.
            json.dumps({"device_id": native_dev, "ts": ts, "seq": 1, "temperature": 20.5}),
            # A reported position (a device on the move) is kept.
            json.dumps(
                {"device_id": native_dev, "ts": ts, "seq": 2, "temperature": 20.6, "lat": 46.5, "lon": 6.6}
            ),
        ],
        senml_dev: [
            json.dumps(
                [
                    {
                        "bn": f"urn:dev:{senml_dev}:",
                        "bt": now.timestamp(),
                        "n": "temperature",
                        "u": "Cel",
                        "v": 21.5,
                    },
                    {"n": "humidity", "u": "%RH", "v": 40},
                ]
            )
        ],
        tasmota_dev: [
            json.dumps(
                {"Time": now.strftime("%Y-%m-%dT%H:%M:%S"), "BME280": {"Temperature": 22.5, "Humidity": 41.0}}
            )
        ],
    }
    for fmt, (dev, *_rest) in specs.items():
        client = _device_client(cfg, dev, passwords[dev])
        try:
            for body in payloads[dev]:
                client.publish(device_topic(dev, fmt), body, qos=1).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

    want = {native_dev: 2, senml_dev: 1, tasmota_dev: 1}
    rows: dict[str, list[tuple[Any, ...]]] = {}

    def arrived() -> bool:
        nonlocal rows
        rows = _rows(cfg, list(want))
        return all(len(rows.get(d, [])) >= n for d, n in want.items())

    assert process.wait_for(arrived, DEADLINE_S, 1.0), f"rows so far: {rows}"
    for _fmt, (dev, site, lat, lon) in specs.items():
        first = rows[dev][0]
        assert first[:3] == (site, lat, lon), (dev, first)
    assert rows[native_dev][1][:3] == ("balcony", 46.5, 6.6)  # its own position wins
    assert [r[3] for r in rows[native_dev]] == [20.5, 20.6]
    assert rows[senml_dev][0][3] == 21.5
    assert rows[tasmota_dev][0][3] == 22.5


def test_unknown_and_disabled_ids_are_deadlettered_unknown_device(pipeline: FleetsimConfig) -> None:
    cfg = pipeline
    uid = uuid.uuid4().hex[:6]
    stranger = f"stranger-{uid}"
    gone = f"gone-{uid}"
    service.add_device(cfg, validate_new_device(cfg, gone, site="s", lat=1.0, lon=2.0))
    service.disable_device(cfg, gone)
    # The simulator's identity may publish for any id: only the registry stops these readings.
    sim = mqtt_client(cfg, "sim", f"registry-test-{uid}")
    mqtt_connect(sim)
    sim.loop_start()
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        for dev in (stranger, gone):
            body = json.dumps({"device_id": dev, "ts": ts, "seq": 1, "temperature": 20.0})
            sim.publish(f"sensors/{dev}/telemetry", body, qos=1).wait_for_publish(10)
    finally:
        sim.disconnect()
        sim.loop_stop()
    wanted = {f"sensors/{stranger}/telemetry", f"sensors/{gone}/telemetry"}
    found = _deadletters(cfg, wanted, timeout_s=60)
    assert found == dict.fromkeys(wanted, "unknown_device")
    # Not forwarded either: nothing for them in the telemetry topic this pipeline's streaming job
    # reads. (Not "no row in sensor_data": the experiments' session-wide pipeline, an accept-mode
    # bridge on the same broker writing to the same database, stores its own copy of any reading.)
    assert not {stranger, gone} & _telemetry_keys(cfg)


def test_accept_mode_forwards_and_auto_registers_unknown_ids_as_unplaced(
    mosquitto: FleetsimConfig, postgres: FleetsimConfig, kafka_topics: Any, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:6]
    (metrics_port,) = process.free_ports(1)
    cfg = kafka_topics("registry-accept").with_overrides(
        {
            "bridge.unknown_device": "accept",
            "bridge.client_id": f"registry-accept-{uid}",
            "bridge.metrics_port": metrics_port,
        }
    )
    bridge = _spawn(cfg, tmp_path / "bridge.log", "bridge")
    newcomer = f"newcomer-{uid}"
    try:
        assert process.wait_for(lambda: _bridge_ok(metrics_port), 90, 0.5), process.tail(
            tmp_path / "bridge.log"
        )
        sim = mqtt_client(cfg, "sim", f"registry-accept-sim-{uid}")
        mqtt_connect(sim)
        sim.loop_start()
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            body = json.dumps({"device_id": newcomer, "ts": ts, "seq": 1, "temperature": 19.0})
            sim.publish(f"sensors/{newcomer}/telemetry", body, qos=1).wait_for_publish(10)
        finally:
            sim.disconnect()
            sim.loop_stop()

        def registered() -> tuple[Any, ...] | None:
            conn = pg_connect(cfg, "reader")
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT kind, placed, enabled, lat, lon FROM devices WHERE device_id = %s",
                        (newcomer,),
                    )
                    return cur.fetchone()
            finally:
                conn.close()

        assert process.wait_for(lambda: registered() is not None, 30, 0.5)
        assert registered() == ("real", False, True, None, None)
        # Forwarded, not dropped: the reading is on the telemetry topic.
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            cfg.kafka.telemetry_topic,
            **kafka_python_kwargs(cfg, "admin"),
            auto_offset_reset="earliest",
            consumer_timeout_ms=5000,
        )
        try:
            keys = [rec.key for rec in consumer]
        finally:
            consumer.close()
        assert newcomer.encode() in keys
    finally:
        _stop(bridge)
