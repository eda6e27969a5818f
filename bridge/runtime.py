"""The running bridge: MQTT in, Kafka out, at least once, with back-pressure.

Threads and what each owns:

- paho's network thread: reads PUBLISHes, runs :meth:`Bridge._on_message` (route, validate,
  adapt, produce) and writes the PUBACKs queued by the pump;
- the pump thread: the only caller of ``producer.poll`` (so every delivery report runs there),
  re-produces failed records, pops the confirmed prefix of the in-flight queue and acks it;
- librdkafka's own threads (outside the GIL) batch and send.

Back-pressure: the MQTT v5 Receive Maximum is ``bridge.max_inflight``, so the broker itself stops
sending once that many messages are unacknowledged and keeps the rest in the persistent session.
Nothing is acked before Kafka confirmed it, so a Kafka outage fills the window, the bridge stops
receiving, and the session queue (``mqtt.max_queued_messages``) buffers; when Kafka returns the
confirmations release acks and the flow resumes. With MQTT 3.1.1 the broker's own window applies
and the network thread additionally waits while the tracker is full.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry

from fleetsim.bridge.adoption import SessionHooks
from fleetsim.bridge.directory import DeviceDirectory
from fleetsim.bridge.inflight import Tracker
from fleetsim.bridge.kafka_sink import KafkaSink
from fleetsim.bridge.metrics import BridgeCollector, State, Stats
from fleetsim.bridge.mqtt_fast import FastClient
from fleetsim.bridge.pipeline import DeadLetter, Processor
from fleetsim.bridge.routing import Router, build_routes
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import KafkaHeader, RejectReason
from fleetsim.kernel.service import MetricsServer

log = logging.getLogger("fleetsim.bridge")

STALL_S = 2.0
"""Oldest unconfirmed message older than this: Kafka is not keeping up -> degraded."""
ERROR_HOLD_S = 10.0
"""A Kafka error keeps the state degraded this long (unless confirmations resumed since)."""
RETRY_BACKOFF_S = (0.5, 30.0)
# Header names as plain str: Enum .value costs a descriptor call per use on the hot path.
H_SOURCE, H_RECEIVED, H_FORMAT = (
    KafkaHeader.SOURCE_TOPIC.value,
    KafkaHeader.RECEIVED_AT.value,
    KafkaHeader.FORMAT.value,
)
H_REASON, H_DETAIL = KafkaHeader.REASON.value, KafkaHeader.DETAIL.value
"""First and maximum wait before producing failed records again (doubling)."""


class Bridge:
    """One bridge process. ``start()``, then ``stop()`` (idempotent, acks only confirmed data)."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        *,
        client_id: str | None = None,
        shared_group: str | None = None,
        directory: DeviceDirectory | None = None,
        metrics_port: int | None = None,
        sink: Any = None,
        hooks: SessionHooks | None = None,
    ) -> None:
        self.cfg = cfg
        self.hooks = hooks or SessionHooks()
        b = cfg.bridge
        self.client_id = client_id or b.client_id
        self.shared_group = b.shared_group if shared_group is None else shared_group
        self.metrics_port = b.metrics_port if metrics_port is None else metrics_port
        self.routes = build_routes(b.routes, b.max_payload)
        self.processor = Processor(Router(self.routes), b.max_payload, directory, b.unknown_device)
        self.max_inflight = b.max_inflight
        self.telemetry_topic = cfg.kafka.telemetry_topic
        self.deadletter_topic = cfg.kafka.deadletter_topic
        self.stats = Stats()
        self.tracker = Tracker()
        self.registry = CollectorRegistry()
        self.registry.register(BridgeCollector(self.stats, lambda: len(self.tracker), self.state))
        self.sink = sink or KafkaSink(cfg, self.client_id, self._on_kafka_error)
        self._lock = threading.Lock()  # produce-or-defer decision vs. retries (order keeping)
        self._conn_lock = threading.Lock()  # connection epoch vs. acks
        self._room = threading.Condition()
        self._epoch = 0
        self._connected = False
        self._connects = 0
        self._kafka_ready = False
        self._subscribe_refused = False
        self.subscribed = threading.Event()
        """Set once the broker granted every subscription of the current connection."""
        self._last_kafka_error = 0.0
        self._last_confirm = time.monotonic()
        self._full_since: float | None = None
        self._retry_at = 0.0
        self._retry_wait = RETRY_BACKOFF_S[0]
        self._stopping = False
        self._stop = threading.Event()
        self._life_lock = threading.Lock()
        self._pump_thread: threading.Thread | None = None
        self.metrics_server = MetricsServer(self.registry, self.metrics_port)
        """``/metrics`` on 127.0.0.1:``metrics_port`` (0: off) from ``start()`` to the end of ``stop()``."""
        self._client: Any = None
        self._v5 = cfg.mqtt.protocol == "5"
        self._topic_str: dict[bytes, str] = {}
        """Topic bytes -> decoded name (``source_topic`` header is the original bytes)."""
        self._fmt_header: dict[str, tuple[str, bytes]] = {}
        """Adapter name -> its ``format`` header (built once, shared by every record)."""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.metrics_server.start().running:
            log.info("bridge metrics on %s", self.metrics_server.url)
        log.info("waiting for Kafka topics %s, %s", self.telemetry_topic, self.deadletter_topic)
        if not self.sink.wait_ready([self.telemetry_topic, self.deadletter_topic], self._stop):
            return
        with self._life_lock:
            if self._stop.is_set():
                return
            self._kafka_ready = True
            self._pump_thread = threading.Thread(target=self._pump, name="bridge-pump", daemon=True)
            self._pump_thread.start()
            self._client = self._make_client()
            mqtt_connect(self._client, blocking=False)
            self._client.loop_start()

    def _make_client(self) -> Any:
        c = mqtt_client(
            self.cfg,
            "bridge",
            self.client_id,
            clean=False,
            session_expiry_s=self.cfg.bridge.session_expiry_s,
            receive_maximum=min(self.max_inflight, 65535),
            client_class=FastClient,
            reconnect=self.hooks.reconnect,
        )
        self.hooks.configure(c)
        c.coalesce_s = self.cfg.bridge.read_coalesce_ms / 1000
        c.manual_ack_set(True)
        self._v5 = c.protocol == 5
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: take no new messages, wait for Kafka to confirm what is in flight, ack
        exactly the confirmed prefix, disconnect (the session and its queue stay on the broker)."""
        if self._stopping:
            return
        self._stopping = True
        with self._room:
            self._room.notify_all()
        deadline = time.monotonic() + timeout
        while self.tracker.queue and time.monotonic() < deadline and self._pump_thread:
            time.sleep(0.02)
        if self.tracker.queue:
            log.warning(
                "stopping with %d messages unconfirmed: left unacked for redelivery", len(self.tracker)
            )
        self._stop.set()
        with self._life_lock:
            self._shutdown(deadline)

    def _shutdown(self, deadline: float) -> None:
        if self._pump_thread:
            self._pump_thread.join(timeout=5)
        if self._client is not None:
            self.hooks.stopping(self._client)
            self._client.disconnect()  # queued after the PUBACKs: they go out first
            end = time.monotonic() + 5.0
            while self._connected and time.monotonic() < end:
                time.sleep(0.01)
            self._client.loop_stop()
        self.sink.close(timeout=max(1.0, deadline - time.monotonic()))
        self.metrics_server.stop()

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(self, client: Any, _u: Any, flags: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        self.subscribed.clear()
        with self._conn_lock:
            self._epoch += 1
            self._connected = True
        self._connects += 1
        if self._connects > 1:
            self.stats.mqtt_reconnects += 1
        # Always subscribe again, session present or not: a broker that lost the session (or a
        # changed route list) must never leave the bridge connected and deaf.
        subs = [(r.subscription(self.shared_group), self._sub_options()) for r in self.routes]
        client.subscribe(subs)
        log.info(
            "MQTT connected (session present: %s); subscribed %s", flags.session_present, [s for s, _ in subs]
        )
        self.hooks.connected(client)

    def _sub_options(self) -> Any:
        if self._client is not None and self._client.protocol == mqtt.MQTTv5:
            # Retained messages only on a brand-new subscription: a re-subscribe must not replay them.
            return SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return 1

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any = None) -> None:
        refused = [r for r in reasons if r.is_failure or int(r.value) < 1]
        self._subscribe_refused = bool(refused)
        if refused:
            log.error("MQTT subscription refused or downgraded below QoS 1: %s", refused)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any = None) -> None:
        with self._conn_lock:
            self._epoch += 1  # PUBACKs for messages of the old connection are no longer valid
            self._connected = False
        if not self._stopping:
            log.warning(
                "MQTT disconnected (%s)%s", reason, "; paho reconnects" if self.hooks.reconnect else ""
            )
        self.hooks.disconnected(reason)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            self._handle(msg)
        except Exception:
            # Never let an exception kill paho's network thread. The message stays unacked (the
            # broker redelivers it on the next session) and the error is counted.
            self.stats.internal_errors += 1
            log.exception("unexpected error handling an MQTT message")

    def _handle(self, msg: Any) -> None:
        t0 = time.perf_counter()
        stats = self.stats
        stats.received += 1
        if msg.dup:
            stats.redelivered += 1
        if self._stopping:
            return  # not acked: redelivered to the next session
        received_ms = time.time_ns() // 1_000_000
        payload = msg.payload
        topic_b = msg._topic
        topic = self._topic_str.get(topic_b)
        if topic is None:
            try:
                topic = self._remember_topic(topic_b)
            except UnicodeDecodeError:
                topic = None
        tracker = self.tracker
        inflight = tracker.new(msg.mid if msg.qos else 0, self._epoch, t0)
        if topic is None:
            out: Any = DeadLetter(RejectReason.INVALID_UTF8, "topic is not UTF-8", None, "")
            src = repr(topic_b).encode()[:1024]
        else:
            out = self.processor.process(topic, payload, received_ms)
            src = topic_b
        at = str(received_ms).encode()
        if out.__class__ is DeadLetter:
            if out.internal:
                stats.internal_errors += 1
            headers = [
                (H_REASON, out.reason.value.encode()),
                (H_DETAIL, out.detail.encode("utf-8", "replace")),
                (H_SOURCE, src),
                (H_RECEIVED, at),
                (H_FORMAT, out.fmt.encode()),
            ]
            key = out.device_id.encode() if out.device_id else None
            tracker.record(inflight, self.deadletter_topic, key, payload, headers, out.reason.value)
        else:
            fmt_h = self._fmt_header.get(out.fmt)
            if fmt_h is None:
                fmt_h = self._fmt_header[out.fmt] = (H_FORMAT, out.fmt.encode())
            headers = [(H_SOURCE, src), (H_RECEIVED, at), fmt_h]
            for rec in out.records:
                tracker.record(inflight, self.telemetry_topic, rec.device_id.encode(), rec.value, headers)
        with self._lock:
            if tracker.failed or tracker.deferred:  # holding: keep receive order behind retries
                tracker.deferred.extend(inflight.sends)
            else:
                produce = self.sink.produce
                for send in inflight.sends:
                    try:
                        produce(send)
                    except Exception as exc:
                        send.error = exc
                        tracker.failed.append(send)
            tracker.queue.append(inflight)
        if not self._v5 and len(tracker.queue) > self.max_inflight:
            self._wait_for_room()

    def _remember_topic(self, topic_b: bytes) -> str:
        """Decode (strictly: a non-UTF-8 topic raises) and cache a topic name."""
        topic = topic_b.decode("utf-8")
        if len(self._topic_str) > 200_000:
            self._topic_str.clear()  # bounded under a flood of distinct topics
        self._topic_str[topic_b] = topic
        return topic

    def _wait_for_room(self) -> None:
        # MQTT 3.1.1 only, when the broker's window exceeds ours: stop reading the socket. (With
        # v5 the broker honours our Receive Maximum; blocking this thread there would also stop
        # keep-alive pings, and a long Kafka outage would cost a reconnect and redeliveries.)
        with self._room:
            while len(self.tracker) >= self.max_inflight and not self._stopping:
                self._room.wait(0.1)

    # ------------------------------------------------------------------ Kafka side
    def _on_kafka_error(self, err: Any, fatal: bool) -> None:
        self.stats.kafka_errors += 1
        self._last_kafka_error = time.monotonic()
        log.warning("Kafka %serror: %s", "FATAL " if fatal else "", err)

    def pump_once(self, timeout: float = 0.05) -> None:
        """One pump step: serve delivery reports, retry, release acks (the pump thread's loop)."""
        self.sink.poll(timeout)
        if self.sink.fatal_error is not None:
            self._replace_producer()
        if self.tracker.holding:
            self._retry()
        self._release()
        self._note_window()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump_once()
            except Exception:
                self.stats.internal_errors += 1
                log.exception("bridge pump error")
                time.sleep(0.1)

    def _replace_producer(self) -> None:
        with self._lock:
            n = self.tracker.fail_unconfirmed(self.sink.fatal_error)
            self.sink.replace()
        self._last_kafka_error = time.monotonic()
        log.warning("%d unconfirmed records will be produced again", n)

    def _retry(self) -> None:
        now = time.monotonic()
        failed_now = [s for s in self.tracker.failed if s.error is not None]
        if failed_now:
            self.stats.kafka_errors += len(failed_now)
            for s in failed_now:
                log.warning("Kafka delivery to %s failed (%s); will retry", s.topic, s.error)
                s.error = None
            self._last_kafka_error = now
            # Back off before producing again: a failure after librdkafka's own retries means
            # Kafka has been unusable for a while, not a blip.
            self._retry_at = max(self._retry_at, now + self._retry_wait)
        if now < self._retry_at:
            return
        with self._lock:
            batch = self.tracker.take_retries()
            for i, send in enumerate(batch):
                was_failed = send.state != send.NEW
                try:
                    self.sink.produce(send)
                except Exception as exc:
                    log.warning("cannot queue Kafka record (%s); backing off", exc)
                    self.tracker.put_back(batch[i:])
                    self._retry_at = now + self._retry_wait
                    self._retry_wait = min(self._retry_wait * 2, RETRY_BACKOFF_S[1])
                    return
                if was_failed:
                    self.stats.retries += 1
        self._retry_at = now + self._retry_wait
        self._retry_wait = min(self._retry_wait * 2, RETRY_BACKOFF_S[1])

    def _note_window(self) -> None:
        if len(self.tracker) >= self.max_inflight:
            if self._full_since is None:
                self._full_since = time.monotonic()
        else:
            self._full_since = None

    def _release(self) -> None:
        done = self.tracker.pop_confirmed()
        if not done:
            return
        now = time.perf_counter()
        self._last_confirm = time.monotonic()
        self._retry_wait = RETRY_BACKOFF_S[0]
        stats = self.stats
        latency = stats.latency
        client = self._client
        with self._conn_lock:
            epoch, connected = self._epoch, self._connected
            mids = [m.mid for m in done if m.mid and m.epoch == epoch and connected]
            if mids:
                client.ack_many(mids)
            stats.acks_skipped += sum(1 for m in done if m.mid) - len(mids)
        for m in done:
            latency.observe(now - m.t0)
            for s in m.sends:
                if s.reason is None:
                    stats.forwarded += 1
                else:
                    stats.deadlettered[s.reason] += 1
            # Send.msg -> InFlight -> sends -> Send is a reference cycle: break it so the message's
            # objects go with their last reference, not with a cyclic-GC pass (fewer, shorter pauses).
            m.sends.clear()
        with self._room:
            self._room.notify_all()

    # ------------------------------------------------------------------ health
    def state(self) -> State:
        if not (self._kafka_ready and self._connected and self.subscribed.is_set()):
            return State.DOWN
        if self.sink.fatal_error is not None:
            return State.DOWN
        now = time.monotonic()
        oldest = self.tracker.oldest_t0()
        stalled = oldest is not None and time.perf_counter() - oldest > STALL_S
        full_since = self._full_since
        erroring = now - self._last_kafka_error < ERROR_HOLD_S and self._last_kafka_error > self._last_confirm
        if (
            stalled
            or erroring
            or self.tracker.holding
            or self._subscribe_refused
            or (full_since is not None and now - full_since > 1.0)
        ):
            return State.DEGRADED
        return State.OK
