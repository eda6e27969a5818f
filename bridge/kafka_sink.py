"""The bridge's Kafka producer (confluent-kafka / librdkafka).

Why not kafka-python (the design card's client): it builds record batches in pure Python and
sends ~8k msg/s from one process here, below the bridge's 15k target on its own; librdkafka
sends ~54k msg/s (figures: ``bench/bench_bridge.py``, ``docs/bridge.md``).

Settings that carry the at-least-once guarantee:

- ``acks=all`` + ``enable.idempotence``: a record is confirmed only once the in-sync replicas
  have it, and the producer's own retries neither duplicate nor reorder within a partition;
- ``message.timeout.ms`` 5 min: librdkafka keeps retrying through a Kafka outage that long; only
  then is a delivery reported failed, and the bridge produces it again (never acks it);
- key = device id with the ``murmur2_random`` partitioner (the Java client's): one device, one
  partition, the same partition any other producer of these topics would choose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Producer

from fleetsim.bridge.inflight import Send
from fleetsim.kernel.clients import confluent_kafka_config
from fleetsim.kernel.config import FleetsimConfig

log = logging.getLogger("fleetsim.bridge.kafka")

MESSAGE_TIMEOUT_MS = 300_000
"""How long librdkafka retries a record before reporting it failed (then the bridge retries)."""


class KafkaSink:
    """A thin wrapper so the runtime depends on four calls, and tests can substitute a fake."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        client_id: str,
        on_error: Callable[[Any, bool], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.on_error = on_error
        self.extra = extra or {}
        self.fatal_error: Any = None
        self._producer = self._make()

    def _make(self) -> Any:
        conf = confluent_kafka_config(self.cfg, "bridge")
        conf.update(
            {
                "client.id": self.client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": self.cfg.bridge.linger_ms,
                "message.timeout.ms": MESSAGE_TIMEOUT_MS,
                "partitioner": "murmur2_random",
                # The in-flight window bounds what is queued; this only needs to exceed it.
                "queue.buffering.max.messages": max(100_000, 4 * self.cfg.bridge.max_inflight),
                "reconnect.backoff.max.ms": 2000,
                "socket.keepalive.enable": True,
                "error_cb": self._error_cb,
                "log.connection.close": False,
                "logger": logging.getLogger("fleetsim.bridge.librdkafka"),
            }
        )
        conf.update(self.extra)
        return Producer(conf)

    def _error_cb(self, err: Any) -> None:
        fatal = bool(err.fatal())
        if fatal:
            self.fatal_error = err
        self.on_error(err, fatal)

    def produce(self, send: Send) -> None:
        """Queue one record; raises BufferError/KafkaException when it cannot be queued."""
        send.state = Send.SENT
        try:
            self._producer.produce(
                send.topic, send.value, send.key, on_delivery=send.on_delivery, headers=send.headers
            )
        except BaseException:
            send.state = Send.FAILED
            raise

    def poll(self, timeout: float) -> int:
        """Serve delivery reports and errors (callbacks run in the caller's thread)."""
        if self._producer is None:  # closed
            return 0
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Wait for outstanding records; returns how many are still unconfirmed."""
        return int(self._producer.flush(timeout))

    def replace(self) -> None:
        """Drop a producer that hit a fatal error and start a fresh one (records are re-produced
        by the caller; the old producer's reports are never polled again)."""
        log.error("Kafka producer fatal error %s: starting a new producer", self.fatal_error)
        self.fatal_error = None
        self._producer = self._make()

    def wait_ready(self, topics: Sequence[str], stop: threading.Event, interval: float = 2.0) -> bool:
        """Block until the broker answers metadata for ``topics`` (False if ``stop`` is set first)."""
        while not stop.is_set():
            try:
                md = self._producer.list_topics(timeout=5.0)
                missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None]
                if not missing:
                    return True
                log.warning("Kafka topics not available yet: %s", ", ".join(missing))
            except Exception as exc:
                log.warning("Kafka not reachable yet (%s); retrying", exc)
            stop.wait(interval)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Give outstanding records ``timeout`` seconds, drop the rest (they stay unacked on the
        MQTT side, so the broker redelivers them), then release librdkafka's threads/sockets."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        remaining = producer.flush(max(0.0, timeout))
        if remaining:
            log.warning("closing the producer with %d unconfirmed records (left unacked)", remaining)
            producer.purge()
            producer.poll(0)
        producer.close()
