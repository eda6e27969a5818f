"""The pipeline under test for the reliability drills, the ground-truth publisher and the checker.

- :class:`Pipeline`: dedicated Mosquitto + Kafka + PostgreSQL (``fleetsim.stack.dedicated``),
  with the bridge and the streaming job as child processes, each in its own process group so a
  drill can SIGKILL a component the way a crashed container dies (the Spark JVM included).
- :class:`TruthPublisher`: publishes readings as the simulator identity at QoS 1 over a
  persistent session and records, per device, every seq handed to the client (*sent*) and every
  seq the broker acknowledged (*acked*).
- :func:`check`: after the pipeline drained, compares the ground truth with ``sensor_data`` the
  way Jepsen counts writes: lost = acked - stored, duplicated = stored more than once,
  unexpected = stored - sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from waiting import wait_until

from fleetsim.kernel.clients import mqtt_client, mqtt_connect, pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.contract import encode_reading, format_ts_ms
from fleetsim.kernel.scrape import scrape

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ children
class Child:
    """A ``fleetsim`` component as a child process in its own process group."""

    def __init__(self, name: str, argv: list[str], cfg: FleetsimConfig, log_file: Path) -> None:
        self.name, self.argv, self.cfg, self.log_file = name, argv, cfg, log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(self.cfg)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_file.open("ab") as out:
            out.write(f"\n===== start #{self.starts + 1} at {datetime.now(UTC).isoformat()} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleetsim.cli", *self.argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log_file.parent,  # no fleetsim.toml there: the environment is the config
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_since_start(self) -> str:
        text = self.log_file.read_text(errors="replace")
        return text.rsplit("===== start #", 1)[-1]

    def kill9(self) -> None:
        """SIGKILL the whole process group (the Spark JVM dies with its driver)."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        # SIGTERM to the leader only, as a container stop signals PID 1: signalling the whole
        # group also runs the Spark JVM's shutdown hooks under the driver's graceful stop, which
        # then fails with "Cannot call methods on a stopped SparkContext" and exits 1.
        with suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _metric(port: int, name: str) -> float | None:
    try:
        return scrape(port).value(name)
    except OSError:
        return None


@dataclass
class Pipeline:
    """Dedicated engines plus the bridge and the streaming job (see the module docstring)."""

    cfg: FleetsimConfig
    services: dict[str, Any]
    logs: Path
    bridge: Child = field(init=False)
    stream: Child = field(init=False)

    def __post_init__(self) -> None:
        self.bridge = Child("bridge", ["bridge"], self.cfg, self.logs / "bridge.log")
        self.stream = Child("stream", ["stream", "--no-ui"], self.cfg, self.logs / "stream.log")

    # -- bridge
    def start_bridge(self, timeout_s: float = 60.0) -> None:
        self.bridge.start()
        self.wait_bridge_ready(timeout_s)

    def wait_bridge_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if not self.bridge.alive:
                raise RuntimeError(f"the bridge exited:\n{self.bridge.tail()}")
            return _metric(self.cfg.bridge.metrics_port, "fleetsim_bridge_state") == 0.0

        wait_until(ready, timeout_s, what="the bridge to connect to MQTT and Kafka")

    def bridge_metric(self, name: str) -> float | None:
        """One ``fleetsim_bridge_*`` value from the bridge's /metrics (None when it does not answer)."""
        return _metric(self.cfg.bridge.metrics_port, name)

    # -- streaming job
    def start_stream(self, timeout_s: float = 300.0) -> None:
        self.stream.start()
        self.wait_stream_ready(timeout_s)

    def wait_stream_ready(self, timeout_s: float = 300.0) -> None:
        def ready() -> bool:
            if not self.stream.alive:
                raise RuntimeError(f"the streaming job exited:\n{self.stream.tail()}")
            return "fleetsim.stream: streaming from" in self.stream.log_since_start()

        # Spark takes ~10 s idle, much longer on a loaded 2-core machine.
        wait_until(ready, timeout_s, what="the streaming job's queries to start", interval_s=0.5)

    def stop(self) -> None:
        for child in (self.bridge, self.stream):
            child.stop()


@contextmanager
def pipeline(
    base: FleetsimConfig,
    tmp: Path,
    overrides: dict[str, Any] | None = None,
    *,
    adjust: Callable[[FleetsimConfig], Mapping[str, Any]] | None = None,
) -> Iterator[Pipeline]:
    """Dedicated engines + bridge + streaming job; everything stopped on exit.

    ``adjust`` is passed to :func:`fleetsim.stack.dedicated`: called with the engines' config
    (ports chosen) before they start, it returns overrides (e.g. a TCP proxy's port as
    ``kafka.advertised_port``).
    """
    from fleetsim.stack import dedicated
    from fleetsim.stack.kafka import ensure_topics

    with dedicated(base, tmp / "stack", "mosquitto", "kafka", "postgres", adjust=adjust) as (base_cfg, svcs):
        cfg = base_cfg.with_overrides(
            {
                "spark.checkpoint_dir": str(tmp / "checkpoints"),
                "spark.master": "local[2]",
                "spark.trigger_interval_s": 1.0,
                "spark.agg_trigger_interval_s": 5.0,  # the drills wait for windows and dead letters
                "spark.shuffle_partitions": 2,
                "bridge.client_id": f"rel-bridge-{tmp.name}",
                **(overrides or {}),
            }
        )
        ensure_topics(cfg)
        logs = tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        p = Pipeline(cfg, svcs, logs)
        try:
            p.start_bridge()
            p.start_stream()
            yield p
        finally:
            p.stop()


# ------------------------------------------------------------------------------- ground truth
class TruthPublisher(threading.Thread):
    """Publishes one reading per device in turn at about ``rate`` msg/s until :meth:`finish`.

    QoS 1 over a persistent session with an unbounded client queue: while the broker is down,
    paho keeps the messages and sends them (and re-sends unacknowledged ones) on reconnect, as
    the simulator does. Event times are the wall clock at publish time.
    """

    def __init__(self, cfg: FleetsimConfig, prefix: str, devices: int = 10, rate: float = 200.0) -> None:
        super().__init__(daemon=True, name=f"truth-{prefix}")
        self.devices = [f"{prefix}-{i:03d}" for i in range(devices)]
        self.rate = rate
        self.sent: dict[str, set[int]] = defaultdict(set)
        self.acked: dict[str, set[int]] = defaultdict(set)
        self._pending: dict[int, tuple[str, int]] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self.error: BaseException | None = None
        self.client = mqtt_client(
            cfg, "sim", f"truth-{prefix}-{os.getpid()}", clean=False, session_expiry_s=3600
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_publish = self._on_publish
        mqtt_connect(self.client)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_a: Any) -> None:
        with self._lock:
            item = self._pending.pop(mid, None)
            if item is None:  # the ack raced ahead of publish() returning the mid
                self._early.add(mid)
            else:
                self.acked[item[0]].add(item[1])

    def run(self) -> None:
        try:
            start = time.monotonic()
            n = 0
            seq = 0
            while not self._stop_evt.is_set():
                for dev in self.devices:
                    payload = encode_reading(
                        dev, format_ts_ms(int(time.time() * 1000)), seq,
                        21.0, 45.0, 600.0, 1013.0, 80.0, 45.76, 4.84,
                    )  # fmt: skip
                    # Never publish() under self._lock: paho calls on_publish holding its
                    # out-message mutex, which publish() takes too (a lock-order deadlock that
                    # froze this thread and let the broker drop the client on keep-alive).
                    info = self.client.publish(f"sensors/{dev}/telemetry", payload, qos=1)
                    with self._lock:
                        self.sent[dev].add(seq)
                        if info.mid in self._early:
                            self._early.discard(info.mid)
                            self.acked[dev].add(seq)
                        else:
                            self._pending[info.mid] = (dev, seq)
                    n += 1
                seq += 1
                ahead = start + n / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:
            self.error = exc

    @property
    def n_sent(self) -> int:
        with self._lock:
            return sum(len(s) for s in self.sent.values())

    @property
    def n_acked(self) -> int:
        with self._lock:
            return sum(len(s) for s in self.acked.values())

    def finish(self, ack_timeout_s: float = 120.0) -> None:
        """Stop publishing and wait until the broker acknowledged everything sent."""
        self._stop_evt.set()
        self.join(timeout=30)
        if self.error is not None:
            raise RuntimeError("the truth publisher failed") from self.error
        wait_until(lambda: self.n_acked >= self.n_sent, ack_timeout_s, what="the broker to ack every publish")
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------------------------ checker
@dataclass(frozen=True)
class Verdict:
    sent: int
    acked: int
    stored: int
    lost: dict[str, list[int]]
    """Acked but not in ``sensor_data`` (device -> seqs)."""
    duplicated: dict[str, list[int]]
    """Stored more than once."""
    unexpected: dict[str, list[int]]
    """Stored but never sent."""

    @property
    def n_lost(self) -> int:
        return sum(map(len, self.lost.values()))

    @property
    def n_duplicated(self) -> int:
        return sum(map(len, self.duplicated.values()))

    @property
    def n_unexpected(self) -> int:
        return sum(map(len, self.unexpected.values()))

    def figures(self) -> dict[str, int]:
        """The counts every ``DRILL`` line reports."""
        return {
            "sent": self.sent, "acked": self.acked, "stored": self.stored, "lost": self.n_lost,
            "dup": self.n_duplicated, "unexpected": self.n_unexpected,
        }  # fmt: skip

    def summary(self) -> str:
        def first(d: dict[str, list[int]]) -> str:
            return ", ".join(f"{k}: {v[:8]}" for k, v in list(d.items())[:4])

        return (
            f"sent {self.sent}, acked {self.acked}, stored {self.stored}; "
            f"lost {self.n_lost} [{first(self.lost)}], "
            f"duplicated {self.n_duplicated} [{first(self.duplicated)}], "
            f"unexpected {self.n_unexpected} [{first(self.unexpected)}]"
        )


def query(cfg: FleetsimConfig, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement run as the reader (dashboard) role."""
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = list(cur.fetchall())
    conn.close()
    return rows


def stored_counts(cfg: FleetsimConfig, devices: list[str]) -> dict[str, dict[int, int]]:
    """device -> seq -> rows in ``sensor_data``."""
    out: dict[str, dict[int, int]] = defaultdict(dict)
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT device_id, seq, count(*) FROM sensor_data WHERE device_id = ANY(%s) GROUP BY 1, 2",
            (devices,),
        )
        for dev, seq, n in cur.fetchall():
            out[dev][int(seq)] = int(n)
    conn.close()
    return out


def check(cfg: FleetsimConfig, pub: TruthPublisher) -> Verdict:
    stored = stored_counts(cfg, pub.devices)
    lost, dup, unexp = {}, {}, {}
    for dev in pub.devices:
        have = stored.get(dev, {})
        if missing := sorted(pub.acked[dev] - set(have)):
            lost[dev] = missing
        if many := sorted(s for s, n in have.items() if n > 1):
            dup[dev] = many
        if extra := sorted(set(have) - pub.sent[dev]):
            unexp[dev] = extra
    return Verdict(pub.n_sent, pub.n_acked, sum(len(v) for v in stored.values()), lost, dup, unexp)


def drain(cfg: FleetsimConfig, pub: TruthPublisher, timeout_s: float = 180.0) -> Verdict:
    """Wait until every acked reading is stored (or nothing moved for a while), then check."""
    deadline = time.monotonic() + timeout_s
    last_stored, still_since = -1, time.monotonic()
    while True:
        v = check(cfg, pub)
        if v.n_lost == 0:
            return v
        if v.stored != last_stored:
            last_stored, still_since = v.stored, time.monotonic()
        # 60 s without a new row means the pipeline is stuck, not slow.
        if time.monotonic() > deadline or time.monotonic() - still_since > 60:
            return v
        time.sleep(1.0)


def report(name: str, **figures: Any) -> None:
    """One ``DRILL`` line with a drill's measured figures (``pytest -s`` shows them; the
    figures in docs/reliability.md come from these lines)."""
    print(f"\nDRILL {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
