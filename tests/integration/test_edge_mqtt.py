"""The simulator against a real Mosquitto: complete, contract-valid streams; control topic works."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bridge_support import scrape
from waiting import wait_until, while_running

from fleetsim.edge.app import SimOptions, run_simulation
from fleetsim.edge.cli import publish_control
from fleetsim.edge.ledger import last_sent, read_ledger
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import ControlAction, ControlCommand, FaultKind, Reading, decode

pytestmark = pytest.mark.integration
HEADER = "device_id,type,site,indoor,lat,lon,interval_s,occupancy,battery_mah"


def small_fleet(path: Path, n: int) -> Path:
    rows = [f"it-{i:02d},fixed,site{i % 3},true,45.76,4.85,1,office,2600" for i in range(n)]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


class Tap:
    """Subscribes with the tool identity and decodes everything on sensors/+/telemetry; keeps the
    live (not retained) messages on sensors/+/status."""

    def __init__(self, cfg: FleetsimConfig, name: str) -> None:
        self.readings: dict[str, list[Reading]] = defaultdict(list)
        self.invalid: list[str] = []
        self.count = 0
        self.statuses: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.client = mqtt_client(cfg, "tool", name)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("sensors/+/telemetry", 1), ("sensors/+/status", 1)]
        )
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        mqtt_connect(self.client)
        self.client.loop_start()
        assert self._ready.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        device = msg.topic.split("/")[1]
        if msg.topic.endswith("/status"):
            if not msg.retain:  # a retained one is an earlier test's, sent on subscribing
                self.statuses.append((msg.topic, msg.payload))
            return
        try:
            r = decode(msg.payload, topic_device_id=device, now=datetime.now(UTC) + timedelta(days=30))
        except Exception as exc:  # recorded, asserted empty by the test
            self.invalid.append(f"{msg.topic}: {exc}")
            return
        self.readings[device].append(r)
        self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("qos", [0, 1])
def test_fleet_arrives_complete_and_valid(mosquitto: FleetsimConfig, tmp_path: Path, qos: int) -> None:
    n, m = 20, 60
    cfg = mosquitto.with_overrides(
        {
            "simulation.devices_file": str(small_fleet(tmp_path / "devices.csv", n)),
            "simulation.speed": "max",
            "simulation.duration": f"{m}s",
            "simulation.start": "2026-03-02T09:00:00Z",
            "simulation.metrics_port": 0,
            "simulation.ledger_file": str(tmp_path / "ledger.jsonl"),
            "mqtt.qos": qos,
        }
    )
    tap = Tap(cfg, f"it-tap-{qos}")
    try:
        report, totals = run_simulation(cfg, SimOptions(handle_signals=False))
        wait_until(lambda: tap.count >= n * m, 20, what=f"{n * m} readings at the tap")
    finally:
        tap.close()
    assert tap.invalid == []
    assert report.published == n * m and totals["unacknowledged_at_end"] == 0
    assert sorted(tap.readings) == [f"it-{i:02d}" for i in range(n)]
    base = int(datetime(2026, 3, 2, 9, tzinfo=UTC).timestamp() * 1000)  # seq starts at --start in ms
    for device, rs in tap.readings.items():
        assert sorted(r.seq for r in rs) == list(range(base, base + m)), device
    sent = last_sent(read_ledger(tmp_path / "ledger.jsonl"))
    assert all(rec["published"] == [[base, base + m - 1]] for rec in sent.values())


def test_fault_injected_on_the_control_topic_shows_in_next_readings(
    mosquitto: FleetsimConfig, tmp_path: Path
) -> None:
    cfg = mosquitto.with_overrides(
        {
            "simulation.devices_file": str(small_fleet(tmp_path / "devices.csv", 4)),
            "simulation.speed": "20",
            "simulation.duration": "600s",
            "simulation.metrics_port": 0,
            "simulation.ledger_file": str(tmp_path / "ledger.jsonl"),
        }
    )
    tap = Tap(cfg, "it-tap-control")
    opts = SimOptions(handle_signals=False)
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(totals=run_simulation(cfg, opts)[1]))
    worker.start()
    try:
        wait_until(lambda: tap.count >= 40, 15, what="the simulator to start publishing (40 readings)")
        cmd = ControlCommand(ControlAction.INJECT, FaultKind.STUCK, 120.0)
        publish_control(cfg, "it-01", cmd)
        injected_at = tap.count

        def stuck_readings() -> list[Reading] | None:
            stuck = [r for r in tap.readings["it-01"] if r.fault == "stuck"]
            return stuck if len(stuck) >= 10 else None

        stuck = wait_until(stuck_readings, 15, what="10 stuck readings from it-01")
        publish_control(cfg, "all", ControlCommand(ControlAction.KILL, site="site2"))
        # The kill took effect when the simulator marks it-02 offline (the ledger's "killed"
        # event is written right after, in the same step).
        wait_until(
            lambda: ("sensors/it-02/status", b"offline") in tap.statuses,
            15,
            what="it-02 offline after the kill",
        )
    finally:
        opts.stop.set()  # graceful stop, as on SIGTERM
        worker.join(30)
        tap.close()
    assert not worker.is_alive()
    assert tap.count > injected_at
    assert len(stuck) >= 10
    assert len({(r.temperature, r.co2, r.humidity) for r in stuck}) == 1
    assert all(r.fault is None for r in tap.readings["it-00"])
    records = read_ledger(tmp_path / "ledger.jsonl")
    fault = next(r for r in records if r.get("record") == "fault")
    assert (fault["device"], fault["fault"], fault["source"]) == ("it-01", "stuck", "control")
    killed = {r["device"] for r in records if r.get("event") == "killed"}
    assert killed == {"it-02"}  # it-02 is the only device of site2
    assert records[-1]["phase"] == "end"


def test_per_device_connections_last_will_fires_on_crash(mosquitto: FleetsimConfig, tmp_path: Path) -> None:
    """Per-device mode: a crash makes the *broker* publish the device's Last Will (v5 reason 4)."""
    fleet = tmp_path / "devices.csv"
    fleet.write_text(
        HEADER
        + ",fault_profile\n"
        + "pd-00,fixed,s,true,45.76,4.85,1,office,0,crash@20+20\n"
        + "pd-01,fixed,s,true,45.76,4.85,1,office,0,none\n"
    )
    cfg = mosquitto.with_overrides(
        {
            "simulation.devices_file": str(fleet),
            "simulation.speed": "10",
            "simulation.duration": "60s",
            "simulation.connections": "per-device",
            "simulation.metrics_port": 0,
            "simulation.ledger_file": str(tmp_path / "ledger.jsonl"),
        }
    )
    statuses: list[tuple[str, bytes]] = []

    def of(device: str) -> list[bytes]:
        return [p for t, p in statuses if t == f"sensors/{device}/status"]

    ready = threading.Event()
    watcher = mqtt_client(cfg, "tool", "it-status-watch")
    watcher.on_connect = lambda c, *_: c.subscribe("sensors/+/status", qos=1)
    watcher.on_subscribe = lambda *_: ready.set()
    watcher.on_message = lambda c, u, msg: statuses.append((msg.topic, msg.payload))
    mqtt_connect(watcher)
    watcher.loop_start()
    try:
        assert ready.wait(10)
        report, _ = run_simulation(cfg, SimOptions(handle_signals=False))
        # The last statuses (the stop's "offline") were acked to the simulator, maybe not yet
        # delivered to the watcher.
        wait_until(lambda: len(of("pd-00")) >= 4 and len(of("pd-01")) >= 2, 10, what="every status message")
    finally:
        watcher.disconnect()
        watcher.loop_stop()
    pd00 = of("pd-00")
    # In v5 per-device mode the simulator never publishes a crash's "offline" itself: the second
    # item can only be the broker firing the Last Will. The last is the graceful stop.
    assert pd00 == [b"online", b"offline", b"online", b"offline"]
    assert of("pd-01") == [b"online", b"offline"]
    assert report.published >= 80


def test_broker_restart_loses_nothing(fleet_cfg: FleetsimConfig, tmp_path: Path) -> None:
    """Mosquitto stopped mid-run: devices store and forward, the simulator reconnects with
    backoff and flushes; every seq arrives (a persistent-session subscriber collects them)."""
    from fleetsim.stack import dedicated

    with dedicated(fleet_cfg, tmp_path / "own", "mosquitto") as (own, svcs):
        cfg = own.with_overrides(
            {
                "simulation.devices_file": str(small_fleet(tmp_path / "devices.csv", 4)),
                "simulation.speed": "10",
                "simulation.duration": "150s",
                "simulation.metrics_port": 0,
                "simulation.ledger_file": str(tmp_path / "ledger.jsonl"),
            }
        )
        readings: dict[str, set[int]] = defaultdict(set)
        ready = threading.Event()
        tap = mqtt_client(cfg, "tool", "it-restart-tap", clean=False, session_expiry_s=600)
        tap.on_connect = lambda c, *_: c.subscribe("sensors/+/telemetry", qos=1)
        tap.on_subscribe = lambda *_: ready.set()
        tap.on_message = lambda c, u, msg: readings[msg.topic.split("/")[1]].add(
            decode(msg.payload, topic_device_id=None, now=datetime.now(UTC) + timedelta(days=1)).seq
        )
        tap.reconnect_delay_set(1, 2)
        mqtt_connect(tap)
        tap.loop_start()
        opts = SimOptions(handle_signals=False)
        result: dict[str, object] = {}
        worker = threading.Thread(target=lambda: result.update(totals=run_simulation(cfg, opts)[1]))
        try:
            assert ready.wait(10)
            worker.start()
            # The outage starts mid-run: every device is publishing (20 readings each, ~2 s).
            wait_until(
                lambda: len(readings) == 4 and min(map(len, list(readings.values()))) >= 20,
                30,
                what="every device publishing before the outage",
            )
            svcs["mosquitto"].stop()
            # Not synchronisation: the outage lasts 3 s on purpose, 30 simulated seconds of
            # readings go to the device buffers.
            time.sleep(3)
            svcs["mosquitto"].start()
            worker.join(60)
            wait_until(
                lambda: sum(map(len, list(readings.values()))) >= 4 * 150,
                15,
                what="every reading at the persistent-session tap",
            )
        finally:
            opts.stop.set()
            worker.join(30)
            tap.disconnect()
            tap.loop_stop()
    totals = result["totals"]
    assert isinstance(totals, dict)
    assert totals["mqtt_reconnects"] >= 1  # the outage really happened
    assert totals["dropped_overflow"] == 0 and totals["unsent_at_end"] == 0
    sent = last_sent(read_ledger(tmp_path / "ledger.jsonl"))
    for device, rec in sent.items():
        first = rec["published"][0][0]
        assert rec["published"] == [[first, rec["last_seq"]]]
        assert readings[device] == set(range(first, rec["last_seq"] + 1)), device


def test_cli_sim_stops_gracefully_on_sigterm(mosquitto: FleetsimConfig, tmp_path: Path) -> None:
    """``fleetsim sim`` as a process: metrics served, SIGTERM -> devices offline, ledger closed."""
    import os
    import signal
    import subprocess
    import sys

    from fleetsim.stack.process import free_ports

    (port,) = free_ports(1)
    ledger = tmp_path / "ledger.jsonl"
    env = {
        **os.environ,
        "FLEETSIM_STACK__RUN_DIR": str(mosquitto.run_dir),
        "FLEETSIM_MQTT__PORT": str(mosquitto.mqtt.port),
    }
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "fleetsim.cli", "--config", str(repo / "fleetsim.toml"), "sim"]
    cmd += ["--devices", str(small_fleet(tmp_path / "devices.csv", 3)), "--speed", "5"]
    cmd += ["--ledger", str(ledger), "--metrics-port", str(port), "--seed", "3"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:

        def online() -> bool:
            return scrape(port).get("fleetsim_sim_devices_online") == 3.0

        def published() -> bool:
            return scrape(port).get("fleetsim_sim_messages_total", 0.0) >= 30

        wait_until(
            while_running(proc, online, "fleetsim sim"),
            20,
            interval_s=0.3,
            what="fleetsim_sim_devices_online 3.0 on /metrics",
            ignoring=(OSError,),
        )
        # SIGTERM mid-run, once every device has published (30 readings: ~2 s at 5x).
        wait_until(
            while_running(proc, published, "fleetsim sim"),
            20,
            interval_s=0.3,
            what="30 readings published",
            ignoring=(OSError,),
        )
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    records = read_ledger(ledger)
    assert records[0]["phase"] == "start" and records[-1]["phase"] == "end"
    assert records[-1]["published"] > 0 and records[-1]["unacknowledged_at_end"] == 0
    assert len(last_sent(records)) == 3
