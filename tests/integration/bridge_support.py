"""Helpers for the bridge's integration tests: publish as the simulator identity, read Kafka back,
run the bridge as a real process, read its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waiting import wait_until, while_running

from fleetsim.kernel.clients import kafka_python_kwargs, mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.contract import encode_reading, format_ts_ms
from fleetsim.kernel.scrape import scrape as kernel_scrape

REPO = Path(__file__).resolve().parents[2]
T0_MS = 1768471200000  # 2026-01-15T10:00:00Z: fixed, valid event times


def reading(device: str, seq: int) -> bytes:
    return encode_reading(
        device, format_ts_ms(T0_MS + seq * 1000), seq, 20.0 + seq % 10, 40.0, 500.0, 1000.0, 90.0, 45.7, 4.8
    )


class Publisher:
    """QoS 1 publisher as the simulator's MQTT identity (counts broker acks)."""

    def __init__(self, cfg: FleetsimConfig, name: str) -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt_client(cfg, "sim", f"{name}-{os.getpid()}-{time.monotonic_ns() % 10**6}")
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        mqtt_connect(self.client)
        self.client.loop_start()

    def _on_publish(self, *_a: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != 0:
            raise RuntimeError(f"publish failed: rc={info.rc}")

    def wait_acked(self, n: int, timeout_s: float = 60.0) -> None:
        wait_until(
            lambda: self.acked >= n, timeout_s, interval_s=0.02, what=f"the broker to ack {n} publishes"
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


def consume(cfg: FleetsimConfig, topic: str, n: int, timeout_s: float = 60.0) -> list[Record]:
    """Read ``topic`` from the beginning until ``n`` records (or the timeout: returns what it has).

    No consumer group (partitions assigned directly), so the stream identity needs only READ.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_kwargs(cfg, "stream"), enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                for r in batch:
                    out.append(Record(r.key, r.value, dict(r.headers or []), r.partition, r.offset))
        # A short extra poll: more than n would be a bug the caller must see.
        for batch in consumer.poll(timeout_ms=300).values():
            out.extend(Record(r.key, r.value, dict(r.headers or []), r.partition, r.offset) for r in batch)
        return out
    finally:
        consumer.close()


# ------------------------------------------------------------------------- bridge as a process
class BridgeProcess:
    """``python -m fleetsim.cli bridge`` with ``cfg``, its log in ``log_file``."""

    def __init__(self, cfg: FleetsimConfig, log_file: Path, *args: str) -> None:
        self.cfg = cfg
        self.log_file = log_file
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")}
        env.update(config_to_env(cfg))
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_file, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleetsim.cli", "bridge", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=log_file.parent,  # no fleetsim.toml there: the environment is the config
            )

    @property
    def port(self) -> int:
        return self.cfg.bridge.metrics_port

    def metrics(self) -> dict[str, float]:
        return scrape(self.port)

    def wait_subscribed(self, timeout_s: float = 60.0) -> None:
        def ok() -> bool:
            return (
                self.metrics().get("fleetsim_bridge_state") == 0 and "subscribed" in self.log_file.read_text()
            )

        wait_until(
            while_running(self.proc, ok, "the bridge", self.log_file),
            timeout_s,
            what="the bridge to connect and subscribe",
            ignoring=(OSError,),
        )

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=timeout_s)


def scrape(port: int) -> dict[str, float]:
    """``{"name{label=value}": value}`` from a Prometheus endpoint on 127.0.0.1 (the kernel's scraper)."""
    return kernel_scrape(port).flat()


def seqs_by_device(records: Iterable[Record]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        obj = json.loads(r.value)
        out.setdefault(obj["device_id"], []).append(obj["seq"])
    return out
