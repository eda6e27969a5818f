"""Incident notifications: ``incident_events`` (the outbox) -> MQTT and an optional webhook.

A thread of the streaming job (``StreamJob.start``), with its own PostgreSQL connection and MQTT
client, so a slow or failing receiver never holds up a micro-batch. Each opened / acknowledged /
resolved event is published as JSON (QoS 1) on ``fleetsim/alerts/<site>/<device_id>`` as the
``notifier`` identity, and POSTed to ``alerts.webhook_url`` with an
``X-Fleetsim-Signature: sha256=<hex HMAC-SHA256(webhook_secret, body)>`` header. Delivery is at
least once (receivers dedupe on ``event_id``); the outcome is recorded on the event row, so a
restart resumes where it stopped. A failed POST is retried after ``webhook_backoff_s`` doubling
per attempt (capped at 10 min); after ``webhook_max_attempts`` it is ``failed`` (undelivered).

Why in the job rather than a process of its own: the job already runs for as long as incidents
change, and one more thread costs nothing; a separate component would need its own start, stop
and status wiring for a loop of a few queries a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any, Final

from fleetsim.kernel.clients import mqtt_client, mqtt_connect, pg_connect
from fleetsim.kernel.config import FleetsimConfig

log = logging.getLogger("fleetsim.stream.notify")

TOPIC_PREFIX: Final = "fleetsim/alerts"
SIGNATURE_HEADER: Final = "X-Fleetsim-Signature"
MAX_BACKOFF_S: Final = 600.0
BATCH: Final = 100
NOTIFIED: Final = ("opened", "acknowledged", "resolved")

_DUE_SQL: Final = """
SELECT e.event_id, e.action, e.actor, e.note, e.at, e.mqtt_state, e.webhook_state, e.webhook_attempts,
       i.incident_id, i.device_id, i.site, i.kind, i.measurement, i.severity, i.state, i.opened_at,
       i.last_seen, i.n_alerts, i.peak_value, i.threshold
FROM incident_events e JOIN incidents i USING (incident_id)
WHERE (e.mqtt_state = 'pending' OR e.webhook_state = 'pending') AND e.next_attempt_at <= now()
ORDER BY e.event_id LIMIT %s
"""
_INCIDENT_FIELDS: Final = (
    "incident_id", "device_id", "site", "kind", "measurement", "severity", "state", "opened_at", "last_seen",
    "n_alerts", "peak_value", "threshold",
)  # fmt: skip

UNDELIVERED_SQL: Final = """
SELECT count(*) FILTER (WHERE webhook_state = 'failed'),
       count(*) FILTER (WHERE mqtt_state = 'pending' OR webhook_state = 'pending')
FROM incident_events
"""
"""(failed for good, still pending) notifications: what ``fleetsim status`` reports."""


def topic_level(text: str | None) -> str:
    """A value as one MQTT topic level: wildcards and separators replaced, empty as ``-``."""
    if not text:
        return "-"
    return "".join("_" if c in "+#/" or ord(c) < 32 else c for c in text)


def alert_topic(site: str | None, device_id: str) -> str:
    return f"{TOPIC_PREFIX}/{topic_level(site)}/{topic_level(device_id)}"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_s(base_s: float, attempts: int) -> float:
    """Delay after the ``attempts``-th failure: base, 2 x base, 4 x base ... capped."""
    return float(min(MAX_BACKOFF_S, base_s * 2 ** max(0, attempts - 1)))


def _json_value(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def message(row: dict[str, Any]) -> bytes:
    """The notification body (JSON, UTF-8)."""
    doc = {
        "event": row["action"],
        "event_id": row["event_id"],
        "at": _json_value(row["at"]),
        "actor": row["actor"],
        "note": row["note"],
        "incident": {f: _json_value(row[f]) for f in _INCIDENT_FIELDS},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Notifier:
    """``run_once()`` delivers what is due; ``start()``/``stop()`` run it in a daemon thread."""

    def __init__(self, cfg: FleetsimConfig, metrics: Any = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self._conn: Any = None
        self._mqtt: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        a = cfg.alerts
        self._secret = a.webhook_secret.get_secret_value() if a.webhook_secret is not None else ""

    # ------------------------------------------------------------------ connections
    def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = pg_connect(self.cfg, "writer", application_name="fleetsim-stream-notifier")
        return self._conn

    def _client(self) -> Any:
        if self._mqtt is None:
            client = mqtt_client(self.cfg, "notifier", f"fleetsim-notifier-{id(self):x}")
            client.reconnect_delay_set(min_delay=1, max_delay=30)
            mqtt_connect(client)
            client.loop_start()
            self._mqtt = client
        return self._mqtt

    def close(self) -> None:
        if self._mqtt is not None:
            try:
                self._mqtt.disconnect()
            finally:
                self._mqtt.loop_stop()
            self._mqtt = None
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    # ------------------------------------------------------------------ delivery
    def _publish(self, row: dict[str, Any], body: bytes) -> bool:
        try:
            info = self._client().publish(alert_topic(row["site"], row["device_id"]), body, qos=1)
            info.wait_for_publish(timeout=5.0)
            return bool(info.is_published())
        except Exception as exc:  # broker down: the event stays pending, retried next round
            log.warning("MQTT notification of event %s not published: %s", row["event_id"], exc)
            return False

    def _post(self, body: bytes, event_id: int) -> str | None:
        """None when the receiver accepted it (2xx), else why not."""
        req = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s) by the config
            self.cfg.alerts.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self._secret, body),
                "X-Fleetsim-Event-Id": str(event_id),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.alerts.webhook_timeout_s) as resp:  # noqa: S310
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:300]

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications.labels(channel, outcome).inc()

    def run_once(self) -> int:
        """Deliver every due notification once; returns how many deliveries succeeded."""
        conn = self._db()
        a = self.cfg.alerts
        done = 0
        with conn.cursor() as cur:
            cur.execute(_DUE_SQL, (BATCH,))
            cols = [d.name for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        conn.commit()
        for row in rows:
            mqtt_state, web_state = row["mqtt_state"], row["webhook_state"]
            attempts, error, delay = row["webhook_attempts"], None, 0.0
            if row["action"] not in NOTIFIED:
                mqtt_state = web_state = "skipped"
            else:
                body = message(row)
                if mqtt_state == "pending" and self._publish(row, body):
                    mqtt_state = "sent"
                    done += 1
                    self._count("mqtt", "sent")
                if web_state == "pending" and not a.webhook_url:
                    web_state = "skipped"
                elif web_state == "pending":
                    attempts += 1
                    error = self._post(body, row["event_id"])
                    if error is None:
                        web_state = "sent"
                        done += 1
                        self._count("webhook", "sent")
                    else:
                        self._count("webhook", "error")
                        log.warning(
                            "webhook attempt %d for event %s failed: %s", attempts, row["event_id"], error
                        )
                        if attempts >= a.webhook_max_attempts:
                            web_state = "failed"
                            self._count("webhook", "failed")
                        else:
                            delay = backoff_s(a.webhook_backoff_s, attempts)
                if mqtt_state == "pending" and delay == 0.0:
                    delay = 1.0  # broker unreachable: retry soon, without spinning
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE incident_events SET mqtt_state = %s, webhook_state = %s, webhook_attempts = %s,"
                    " last_error = coalesce(%s, last_error),"
                    " next_attempt_at = now() + make_interval(secs => %s) WHERE event_id = %s",
                    (mqtt_state, web_state, attempts, error, delay, row["event_id"]),
                )
            conn.commit()
        return done

    def undelivered(self) -> tuple[int, int]:
        """(failed, pending) notifications, from the outbox."""
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute(UNDELIVERED_SQL)
            failed, pending = cur.fetchone()
        conn.commit()
        return int(failed), int(pending)

    # ------------------------------------------------------------------ thread
    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.alerts.notify_poll_s):
            try:
                self.run_once()
                if self.metrics is not None:
                    failed, pending = self.undelivered()
                    self.metrics.notifications_undelivered.labels("failed").set(failed)
                    self.metrics.notifications_undelivered.labels("pending").set(pending)
            except Exception as exc:  # PostgreSQL down, ...: log, reconnect next round
                log.warning("notifier round failed: %s", exc)
                conn, self._conn = self._conn, None
                if conn is not None and not conn.closed:
                    conn.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fleetsim-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.close()
