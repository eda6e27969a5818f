"""Incident notifications on real Mosquitto and PostgreSQL, with a local webhook receiver that
fails and then recovers (or never does): MQTT messages, HMAC signatures, retries with back-off,
undelivered counts in the outbox and in `fleetsim status`'s PostgreSQL figure, the notifier's ACL."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pg_support import execute as _exec
from waiting import wait_until

from fleetsim.cloud.dashboard import incidents
from fleetsim.cloud.streaming.notify import SIGNATURE_HEADER, Notifier
from fleetsim.kernel.clients import mqtt_client, mqtt_connect, pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import Postgres, dedicated
from fleetsim.stack.process import free_ports

pytestmark = pytest.mark.integration
SECRET = "webhook-test-secret"


class Receiver:
    """An HTTP receiver answering 500 to the first ``fail_first`` POSTs, 204 afterwards."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(500)
                else:
                    outer.accepted.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def own_engines(
    fleet_cfg: FleetsimConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetsimConfig]:
    """A Mosquitto and a PostgreSQL of this module's own: on the shared database a streaming job
    of another test (the experiments' pipeline runs for the whole session) has a notifier thread
    too, which would deliver these events first."""
    with dedicated(fleet_cfg, tmp_path_factory.mktemp("notify"), "mosquitto", "postgres") as (cfg, _):
        yield cfg


@pytest.fixture
def notify_cfg(own_engines: FleetsimConfig) -> FleetsimConfig:
    cfg = own_engines
    _exec(cfg, "admin", "TRUNCATE incident_events, incidents")
    # As the sink opens one: the incident and its 'opened' event (writer role).
    (iid,) = _exec(
        cfg,
        "writer",
        "INSERT INTO incidents (device_id, kind, measurement, site, severity, state, opened_at, last_seen,"
        " n_alerts, peak_value, threshold) VALUES ('nt-1', 'extreme_high', 'co2', 'gerland', 'warning',"
        " 'open', now(), now(), 3, 2100, 1500) RETURNING incident_id",
    )[0]
    _exec(
        cfg,
        "writer",
        "INSERT INTO incident_events (incident_id, action, actor) VALUES (%s, 'opened', 'system')",
        (iid,),
    )
    return cfg


@pytest.fixture
def alerts_feed(notify_cfg: FleetsimConfig) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    subscribed = threading.Event()
    client = mqtt_client(notify_cfg, "tool", "test-alerts-feed")
    client.on_message = lambda _c, _u, msg: got.append((msg.topic, json.loads(msg.payload)))
    client.on_subscribe = lambda *a: subscribed.set()
    mqtt_connect(client)
    client.subscribe([("fleetsim/alerts/#", 1), ("sensors/#", 1), ("fleetsim/control/#", 1)])
    client.loop_start()
    assert subscribed.wait(5)
    yield got
    client.disconnect()
    client.loop_stop()


def _ack(cfg: FleetsimConfig, note: str = "on it") -> int:
    conn = pg_connect(cfg, "operator")
    try:
        (inc,) = incidents.list_incidents(conn)
        incidents.acknowledge(conn, inc.incident_id, "alice", note)
        incidents.add_note(conn, inc.incident_id, "alice", "notes are not notified")
        return inc.incident_id
    finally:
        conn.close()


def test_mqtt_and_webhook_with_a_receiver_outage(
    notify_cfg: FleetsimConfig, alerts_feed: list[tuple[str, dict[str, Any]]]
) -> None:
    receiver = Receiver(fail_first=3)
    cfg = notify_cfg.with_overrides(
        {
            "alerts.webhook_url": receiver.url,
            "alerts.webhook_secret": SECRET,
            "alerts.webhook_backoff_s": 0.2,
            "alerts.webhook_max_attempts": 10,
        }
    )
    iid = _ack(cfg)
    notifier = Notifier(cfg)
    try:
        t0 = time.monotonic()
        notifier.run_once()
        # The outage costs the notifier one quick failed POST per due event, nothing more.
        assert time.monotonic() - t0 < 5
        assert notifier.undelivered() == (0, 2)

        def delivered() -> bool:
            notifier.run_once()
            return len(receiver.accepted) == 2

        wait_until(delivered, timeout_s=30, interval_s=0.1, what="webhook deliveries after the outage")
        assert notifier.undelivered() == (0, 0)
    finally:
        notifier.close()
        receiver.close()
    assert receiver.attempts >= 5  # 3 refused, then the 2 accepted
    bodies = []
    for headers, body in receiver.accepted:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == expected
        bodies.append(json.loads(body))
    assert sorted(b["event"] for b in bodies) == ["acknowledged", "opened"]
    ack = next(b for b in bodies if b["event"] == "acknowledged")
    assert (ack["actor"], ack["note"], ack["incident"]["incident_id"], ack["incident"]["state"]) == (
        "alice", "on it", iid, "acknowledged",
    )  # fmt: skip
    wait_until(lambda: len(alerts_feed) >= 2, timeout_s=10, what="MQTT notifications")
    time.sleep(0.3)
    assert [(t, m["event"]) for t, m in alerts_feed] == [
        ("fleetsim/alerts/gerland/nt-1", "opened"),
        ("fleetsim/alerts/gerland/nt-1", "acknowledged"),
    ]
    states = _exec(
        cfg, "admin", "SELECT action, mqtt_state, webhook_state FROM incident_events ORDER BY event_id"
    )
    assert states == [
        ("opened", "sent", "sent"),
        ("acknowledged", "sent", "sent"),
        ("note", "skipped", "skipped"),
    ]


def test_receiver_down_for_good_is_counted_undelivered(
    notify_cfg: FleetsimConfig, alerts_feed: list[tuple[str, dict[str, Any]]]
) -> None:
    (closed_port,) = free_ports(1)
    cfg = notify_cfg.with_overrides(
        {
            "alerts.webhook_url": f"http://127.0.0.1:{closed_port}/hook",
            "alerts.webhook_secret": SECRET,
            "alerts.webhook_backoff_s": 0.1,
            "alerts.webhook_max_attempts": 3,
        }
    )
    notifier = Notifier(cfg)
    try:

        def gave_up() -> bool:
            notifier.run_once()
            return notifier.undelivered() == (1, 0)

        wait_until(gave_up, timeout_s=30, interval_s=0.1, what="the webhook notification to fail for good")
    finally:
        notifier.close()
    row = _exec(cfg, "admin", "SELECT mqtt_state, webhook_attempts, last_error FROM incident_events")
    assert row[0][0] == "sent" and row[0][1] == 3 and "Connection refused" in row[0][2]
    figure, metrics = Postgres(cfg).live()
    assert "notifications undelivered: 1 failed, 0 pending" in figure
    assert metrics["notifications_failed"] == 1
    wait_until(lambda: len(alerts_feed) == 1, timeout_s=10, what="the MQTT notification")


def test_notifier_identity_may_publish_only_under_fleetsim_alerts(
    notify_cfg: FleetsimConfig, alerts_feed: list[tuple[str, dict[str, Any]]]
) -> None:
    client = mqtt_client(notify_cfg, "notifier", "test-notifier-acl")
    mqtt_connect(client)
    client.loop_start()
    try:
        for topic in ("sensors/nt-1/telemetry", "fleetsim/control/all", "fleetsim/alerts/x/y"):
            client.publish(topic, b'{"event":"probe"}', qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    wait_until(lambda: len(alerts_feed) >= 1, timeout_s=10, what="the allowed publish")
    time.sleep(0.5)
    assert [t for t, _ in alerts_feed] == ["fleetsim/alerts/x/y"]
