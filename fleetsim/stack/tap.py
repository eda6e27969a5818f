"""``fleetsim tap``: print live messages from MQTT or Kafka (tool/admin identities)."""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

from fleetsim.kernel.clients import kafka_python_kwargs, mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StackError

Printer = Callable[[str], None]


def _text(raw: bytes | None) -> str:
    if raw is None:
        return "null"
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def tap_mqtt(cfg: FleetsimConfig, topic_filter: str, count: int | None, out: Printer = print) -> int:
    """Print ``<topic> <payload>`` for each message on ``topic_filter``; stop after ``count``."""
    messages: queue.Queue[Any] = queue.Queue()
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = mqtt_client(cfg, "tool", f"fleetsim-tap-{uuid.uuid4().hex[:8]}")
    client.on_connect = on_connect
    client.on_message = lambda _c, _u, msg: messages.put(msg)
    try:
        mqtt_connect(client)
    except OSError as exc:
        raise StackError(
            f"cannot reach MQTT at {cfg.mqtt.host}:{cfg.mqtt.port} ({exc}): is the stack up (`fleetsim up`)?"
        ) from exc
    client.loop_start()
    seen = 0
    try:
        if not connected.wait(10) or refused:
            raise StackError(f"MQTT broker refused the tool identity: {refused[0] if refused else 'timeout'}")
        client.subscribe(topic_filter, qos=1)
        while count is None or seen < count:
            msg = messages.get()
            out(f"{msg.topic} {_text(msg.payload)}")
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
    return seen


def tap_kafka(
    cfg: FleetsimConfig, topic: str, count: int | None, *, from_beginning: bool = False, out: Printer = print
) -> int:
    """Print ``<partition>/<offset> <key> <value>`` for each record; stop after ``count``."""
    # Lazy: kafka-python costs ~0.1 s to import; only the commands that talk to Kafka pay it.
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            topic,
            **kafka_python_kwargs(cfg, "admin"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            bootstrap_timeout_ms=10000,
        )
    except KafkaError as exc:
        raise StackError(f"cannot reach Kafka at {cfg.kafka.bootstrap} ({exc}): is the stack up?") from exc
    seen = 0
    try:
        for record in consumer:
            headers = ",".join(f"{k}={_text(v)}" for k, v in (record.headers or []))
            line = f"{record.partition}/{record.offset} {_text(record.key)} {_text(record.value)}"
            out(line + (f" [{headers}]" if headers else ""))
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return seen
