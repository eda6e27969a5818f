"""Several simulators on one broker: a second ``fleetsim sim`` beside a running one publishes every
reading of its run; two processes given the same instance name fail at once, not silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from waiting import wait_until, while_running

from fleetsim.edge.ledger import last_sent, read_ledger
from fleetsim.edge.mqtt import MqttPublisher
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.contract import decode
from fleetsim.kernel.errors import StackError
from fleetsim.kernel.scrape import scrape
from fleetsim.stack.components import AppComponent
from fleetsim.stack.process import free_ports

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HEADER = "device_id,type,site,indoor,lat,lon,interval_s,occupancy,battery_mah"


def _fleet(path: Path, n: int) -> Path:
    rows = [f"bs-{i:02d},fixed,site{i % 2},true,45.76,4.85,1,office,0" for i in range(n)]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return path


class SeqTap:
    """Every (device_id, seq) seen on sensors/+/telemetry, with the tool identity."""

    def __init__(self, cfg: FleetsimConfig) -> None:
        self.seen: dict[str, set[int]] = defaultdict(set)
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt_client(cfg, "tool", f"beside-tap-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe("sensors/+/telemetry", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        mqtt_connect(self.client)
        self.client.loop_start()
        assert ready.wait(10), "subscription not acknowledged"

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        r = decode(msg.payload, topic_device_id=msg.topic.split("/")[1])
        with self._lock:
            self.seen[r.device_id].add(r.seq)

    def has(self, device: str, seqs: set[int]) -> bool:
        with self._lock:
            return seqs <= self.seen[device]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _sim(cfg: FleetsimConfig, tmp: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    """``fleetsim sim`` on this fleet and broker, output in ``<tmp>/<name>.log``, ledger ``<name>.jsonl``."""
    # Only this config (passwords included): a developer's FLEETSIM_* variables must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    cmd = [sys.executable, "-m", "fleetsim.cli", "--config", str(REPO / "fleetsim.toml")]
    sim_args = ["--devices", str(tmp / "devices.csv"), "--ledger", str(tmp / f"{name}.jsonl"), *args]
    global_args = [a for a in sim_args if a.startswith("simulation.")]
    sim_args = [a for a in sim_args if a not in global_args and a != "--set"]
    cmd += [x for g in global_args for x in ("--set", g)]
    with (tmp / f"{name}.log").open("wb") as out:
        return subprocess.Popen([*cmd, "sim", *sim_args], env=env, cwd=tmp, stdout=out, stderr=out)


def _log(tmp: Path, name: str) -> str:
    return (tmp / f"{name}.log").read_text(errors="replace")


def _published(records: list[dict]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for device, rec in last_sent(records).items():
        out[device] = {s for a, b in rec["published"] for s in range(a, b + 1)}
    return out


def _metric(port: int, name: str) -> float:
    return scrape(port).value(name) or 0.0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_second_simulator_beside_a_running_one_publishes_every_reading(
    private_mosquitto: FleetsimConfig, tmp_path: Path
) -> None:
    cfg = private_mosquitto
    _fleet(tmp_path / "devices.csv", 4)
    (port,) = free_ports(1)
    tap = SeqTap(cfg)
    log = tmp_path / "demo.log"
    demo = _sim(cfg, tmp_path, "demo", "--speed", "5", "--metrics-port", str(port), "--seed", "1")
    try:
        wait_until(
            while_running(demo, lambda: _metric(port, "fleetsim_sim_messages_total") >= 8, "demo", log),
            30,
            what="the demo simulator publishing",
            ignoring=(OSError,),
        )
        # The same device ids, the same shard 0/1 as the demo: before per-process client ids the
        # broker handed one session back and forth and this run published nothing.
        second = _sim(cfg, tmp_path, "second", "--speed", "max", "--duration", "10m", "--seed", "7")
        second.wait(timeout=120)
        assert second.returncode == 0, _log(tmp_path, "second")
        published = _published(read_ledger(tmp_path / "second.jsonl"))
        assert sum(map(len, published.values())) == 4 * 600, _log(tmp_path, "second")  # 1 Hz, 10 min
        for device, seqs in published.items():
            wait_until(lambda d=device, s=seqs: tap.has(d, s), 30, what=f"every reading of {device}")
        before = _metric(port, "fleetsim_sim_messages_total")
        wait_until(
            lambda: _metric(port, "fleetsim_sim_messages_total") > before,
            15,
            what="the demo simulator still publishing after the second run",
        )
        assert demo.poll() is None
    finally:
        _stop(demo)
        tap.close()
    assert demo.returncode == 0, _log(tmp_path, "demo")
    demo_seqs = _published(read_ledger(tmp_path / "demo.jsonl"))
    for device, seqs in demo_seqs.items():
        # Each process's readings are its own: no (device_id, seq) of one run reused by the other.
        assert not seqs & published[device], device


def test_two_processes_with_the_same_instance_name_fail_at_once(
    private_mosquitto: FleetsimConfig, tmp_path: Path
) -> None:
    cfg = private_mosquitto
    _fleet(tmp_path / "devices.csv", 2)
    twin = ("--speed", "5", "--metrics-port", "0", "--set", "simulation.instance=twin")
    procs = {"twin-a": _sim(cfg, tmp_path, "twin-a", *twin)}
    try:
        wait_until(
            while_running(
                procs["twin-a"], (tmp_path / "twin-a.jsonl").exists, "twin-a", tmp_path / "twin-a.log"
            ),
            20,
            what="the first twin running",
        )
        procs["twin-b"] = _sim(cfg, tmp_path, "twin-b", *twin)
        # The broker hands the one client id to whoever connected last. Either twin may lose it
        # first; the loser must stop by itself and say why, instead of reconnecting, taking the id
        # back, and leaving both publishing nothing.
        ended = wait_until(
            lambda: [name for name, p in procs.items() if p.poll() is not None],
            30,
            what="one twin stopping by itself",
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for name in ended:
        err = _log(tmp_path, name)
        assert procs[name].returncode == 1, err
        assert "gave client id 'fleetsim-sim-twin-0of1'" in err and "simulation.instance" in err, err


def test_stopping_with_a_full_outgoing_queue_does_not_crash(private_mosquitto: FleetsimConfig) -> None:
    pub = MqttPublisher(private_mosquitto, device_ids=["bs-q"])
    pub.start()
    # paho queues beyond its in-flight window; with room for one message and no pumping, the
    # fleet's offline status at close() is refused with ERR_QUEUE_SIZE (it used to raise here).
    # paho refuses both setters on a live connection: set what they set.
    pub.main._max_inflight_messages = 1
    pub.main._max_queued_messages = 1
    rcs = [pub.main.publish("sensors/bs-q/telemetry", b"{}", qos=1).rc for _ in range(5)]
    assert paho.MQTT_ERR_QUEUE_SIZE in rcs, rcs
    pub.close()  # must return: the offline status is refused, the Last Will still says offline


def test_a_long_run_shows_its_progress_in_the_log_and_in_fleetsim_status(
    private_mosquitto: FleetsimConfig, tmp_path: Path
) -> None:
    cfg = private_mosquitto
    _fleet(tmp_path / "devices.csv", 2)
    (port,) = free_ports(1)
    proc = _sim(cfg, tmp_path, "long", "--speed", "120", "--duration", "2h", "--metrics-port", str(port))
    log = tmp_path / "long.log"
    try:
        line = wait_until(
            while_running(proc, lambda: "of 2h (" in log.read_text(errors="replace"), "long run", log),
            30,
            what="a progress line on stderr",
        )
        assert line
        sim = AppComponent("sim", cfg.with_overrides({"simulation.metrics_port": port}))
        # The ETA needs a speed, i.e. two of the runner's once-a-second ticks: a status read
        # after the first (120 simulated s at --speed 120) has no ETA yet (seen in CI).
        figure, metrics = wait_until(
            lambda: (
                (live := sim.live())[1].get("simulated_s", 0) > 60
                and live[1].get("eta_s") is not None
                and live
            ),
            30,
            what="fleetsim status's figure for the simulator",
            ignoring=(OSError, StackError),
        )
        assert "messages published" in figure and "of 2h (" in figure and "ETA " in figure, figure
        assert metrics["target_s"] == 7200 and 0 < metrics["eta_s"] < 7200
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    assert "simulated " in text and " msg/s" in text, text
