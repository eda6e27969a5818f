"""Ground truth and the checks: what the broker acknowledged against what PostgreSQL stored.

- :class:`TruthPublisher`: publishes readings as the simulator identity at QoS 1 over a
  persistent session and records, per device, every seq handed to the client (*sent*) and every
  seq the broker acknowledged (*acked*). It can mark a reading as a device fault (a temperature
  spike, a FAILURE status) whose alert must then be stored.
- :func:`check`: after the pipeline drained, compares the ground truth with ``sensor_data`` the
  way Jepsen counts writes: lost = acked - stored, duplicated = stored more than once,
  unexpected = stored - sent.
- :func:`check_aggregates`: ``sensor_data_agg`` (device scope) against a recomputation from the
  non-late rows of ``sensor_data``; :func:`check_alerts`: an alert for every injected device fault.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetsim.chaos import ChaosError
from fleetsim.chaos.pipeline import wait_until
from fleetsim.kernel.clients import mqtt_client, mqtt_connect, pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import encode_reading, format_ts_ms

DEVICE_FAULTS: dict[str, tuple[str, str]] = {
    "spike": ("extreme_high", "temperature"),
    "sensor_failure": ("status_failure", ""),
}
"""Injectable device faults -> the ``sensor_alerts`` (kind, measurement) each one must raise."""


class Truth(Protocol):
    """What a checker needs of a ground-truth source."""

    devices: list[str]
    sent: dict[str, set[int]]
    acked: dict[str, set[int]]


@dataclass
class Ledger:
    """Ground truth merged from several sources (the publisher, the reconnect storm's sessions)."""

    devices: list[str] = field(default_factory=list)
    sent: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    acked: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, *sources: Truth) -> Ledger:
        out = cls()
        for src in sources:
            for dev in src.devices:
                if dev not in out.sent:
                    out.devices.append(dev)
                out.sent[dev] |= src.sent.get(dev, set())
                out.acked[dev] |= src.acked.get(dev, set())
        return out


MAX_OUTSTANDING = 50_000
"""Publishes handed to paho and not yet acknowledged, at most. paho numbers messages 1..65535 and
reuses a number without checking, and keys its out-queue by it: past 65,535 outstanding (33 s of a
2k msg/s load queued through an outage) a new publish silently replaces an old one in the queue,
which is then never sent nor acknowledged. The publisher waits instead, as a device whose buffer is
full would (found by the 30-minute campaign: the load ended with publishes that were never acked)."""


class TruthPublisher(threading.Thread):
    """Publishes one reading per device in turn at about ``rate`` msg/s until :meth:`finish`.

    QoS 1 over a persistent session with an unbounded client queue: while the broker is down,
    paho keeps the messages and sends them (and re-sends unacknowledged ones) on reconnect, as
    the simulator does. Event times are the wall clock at publish time. ``vary`` makes the values
    move with seq (in a band no drift or stuck rule reacts to) so aggregates are worth checking.
    """

    def __init__(
        self, cfg: FleetsimConfig, prefix: str, devices: int = 10, rate: float = 200.0, *, vary: bool = False
    ) -> None:
        super().__init__(daemon=True, name=f"truth-{prefix}")
        self.devices = [f"{prefix}-{i:03d}" for i in range(devices)]
        self.rate = rate
        self.vary = vary
        self.sent: dict[str, set[int]] = defaultdict(set)
        self.acked: dict[str, set[int]] = defaultdict(set)
        self.device_faults: list[tuple[str, int, str]] = []
        """(device, seq, fault) of every reading published as a device fault."""
        self._fault_queue: list[str] = []
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

    def inject_device_fault(self, fault: str) -> None:
        """The next reading of one device (round robin) carries ``fault`` (a key of DEVICE_FAULTS)."""
        if fault not in DEVICE_FAULTS:
            raise ValueError(f"unknown device fault {fault!r}")
        with self._lock:
            self._fault_queue.append(fault)

    def _payload(self, dev: str, seq: int, fault: str | None) -> bytes:
        ts = format_ts_ms(int(time.time() * 1000))
        temp, hum, co2, batt = 21.0, 45.0, 600.0, 80.0
        if self.vary:  # steps of 0.1 over a band of 0.4: no stuck run, no drift
            k = seq % 5
            temp, hum, co2, batt = 21.0 + k / 10, 45.0 + k / 5, 600.0 + 3 * k, 80.0 - k / 10
        status = "OK"
        if fault == "spike":
            temp = 60.0
        elif fault == "sensor_failure":
            status = "FAILURE"
        return encode_reading(dev, ts, seq, temp, hum, co2, 1013.0, batt, 45.76, 4.84, status, fault)

    def run(self) -> None:
        try:
            start = time.monotonic()
            n = 0
            seq = 0
            while not self._stop_evt.is_set():
                for dev in self.devices:
                    while len(self._pending) >= MAX_OUTSTANDING and not self._stop_evt.is_set():
                        time.sleep(0.05)  # backpressure: see MAX_OUTSTANDING
                    fault = None
                    if self._fault_queue:
                        with self._lock:
                            fault = self._fault_queue.pop(0) if self._fault_queue else None
                    payload = self._payload(dev, seq, fault)
                    # Never publish() under self._lock: paho calls on_publish holding its
                    # out-message mutex, which publish() takes too (a lock-order deadlock that
                    # froze this thread and let the broker drop the client on keep-alive).
                    info = self.client.publish(f"sensors/{dev}/telemetry", payload, qos=1)
                    with self._lock:
                        self.sent[dev].add(seq)
                        if fault is not None:
                            self.device_faults.append((dev, seq, fault))
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

    def snapshot(self) -> dict[str, set[int]]:
        """What the broker has acked so far (a copy)."""
        with self._lock:
            return {dev: set(seqs) for dev, seqs in self.acked.items()}

    def finish(self, ack_timeout_s: float = 120.0, *, strict: bool = True) -> int:
        """Stop publishing and wait until the broker acknowledged everything sent; returns how many
        publishes stayed unacknowledged. ``strict``: that must be none (a drill's precondition); a
        campaign passes ``strict=False`` and reports them (the promise covers acked readings only)."""
        self._stop_evt.set()
        self.join(timeout=30)
        if self.error is not None:
            raise RuntimeError("the truth publisher failed") from self.error
        try:
            wait_until(
                lambda: self.n_acked >= self.n_sent, ack_timeout_s, what="the broker to ack every publish"
            )
        except ChaosError:
            if strict:
                raise
        self.client.disconnect()
        self.client.loop_stop()
        return self.n_sent - self.n_acked


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

    @property
    def clean(self) -> bool:
        return self.n_lost == 0 and self.n_duplicated == 0 and self.n_unexpected == 0

    def figures(self) -> dict[str, int]:
        """The counts every ``DRILL`` line and campaign report shows."""
        return {
            "sent": self.sent,
            "acked": self.acked,
            "stored": self.stored,
            "lost": self.n_lost,
            "dup": self.n_duplicated,
            "unexpected": self.n_unexpected,
        }

    def summary(self) -> str:
        def first(d: dict[str, list[int]]) -> str:
            return ", ".join(f"{k}: {v[:8]}" for k, v in list(d.items())[:4])

        return (
            f"sent {self.sent}, acked {self.acked}, stored {self.stored}; "
            f"lost {self.n_lost} [{first(self.lost)}], "
            f"duplicated {self.n_duplicated} [{first(self.duplicated)}], "
            f"unexpected {self.n_unexpected} [{first(self.unexpected)}]"
        )


def query(cfg: FleetsimConfig, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement run as the reader (dashboard) role."""
    with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = list(cur.fetchall())
    conn.close()
    return rows


def stored_counts(cfg: FleetsimConfig, devices: list[str]) -> dict[str, dict[int, int]]:
    """device -> seq -> rows in ``sensor_data``."""
    out: dict[str, dict[int, int]] = defaultdict(dict)
    rows = query(
        cfg,
        "SELECT device_id, seq, count(*) FROM sensor_data WHERE device_id = ANY(%s) GROUP BY 1, 2",
        (devices,),
    )
    for dev, seq, n in rows:
        out[dev][int(seq)] = int(n)
    return out


def check(cfg: FleetsimConfig, truth: Truth) -> Verdict:
    stored = stored_counts(cfg, truth.devices)
    lost, dup, unexp = {}, {}, {}
    for dev in truth.devices:
        have = stored.get(dev, {})
        if missing := sorted(truth.acked.get(dev, set()) - set(have)):
            lost[dev] = missing
        if many := sorted(s for s, n in have.items() if n > 1):
            dup[dev] = many
        if extra := sorted(set(have) - truth.sent.get(dev, set())):
            unexp[dev] = extra
    n_sent = sum(len(truth.sent.get(d, ())) for d in truth.devices)
    n_acked = sum(len(truth.acked.get(d, ())) for d in truth.devices)
    return Verdict(n_sent, n_acked, sum(len(v) for v in stored.values()), lost, dup, unexp)


def drain(cfg: FleetsimConfig, truth: Truth, timeout_s: float = 180.0, stuck_s: float = 60.0) -> Verdict:
    """Wait until every acked reading is stored (or nothing moved for ``stuck_s``), then check."""
    deadline = time.monotonic() + timeout_s
    last_stored, still_since = -1, time.monotonic()
    while True:
        v = check(cfg, truth)
        if v.n_lost == 0:
            return v
        if v.stored != last_stored:
            last_stored, still_since = v.stored, time.monotonic()
        # Long without a new row means the pipeline is stuck, not slow.
        if time.monotonic() > deadline or time.monotonic() - still_since > stuck_s:
            return v
        time.sleep(1.0)


# --------------------------------------------------------------------------------- aggregates
_MEASURES = ("temperature", "humidity", "co2", "pressure", "battery")

_AGG_CHECK_SQL = f"""
WITH r AS (
  SELECT device_id, ts, status, {", ".join(_MEASURES)} FROM sensor_data
   WHERE device_id = ANY(%(devices)s) AND NOT late
), w AS (
  SELECT r.*, to_timestamp(floor(extract(epoch FROM r.ts) / %(slide)s) * %(slide)s - k * %(slide)s) AS ws
    FROM r, generate_series(0, %(per_row)s - 1) AS k
), expected AS (
  SELECT device_id AS key, ws AS window_start, count(*) AS n_messages,
         count(*) FILTER (WHERE status = 'WARNING') AS n_warnings,
         count(*) FILTER (WHERE status = 'FAILURE') AS n_failures,
         {", ".join(f"avg({m}) AS {m}_mean, min({m}) AS {m}_min, max({m}) AS {m}_max" for m in _MEASURES)}
    FROM w GROUP BY 1, 2
), actual AS (
  SELECT * FROM sensor_data_agg
   WHERE scope = 'device' AND key = ANY(%(devices)s)
     AND window_end - window_start = %(window)s * interval '1 second'
)
SELECT count(*) FILTER (WHERE a.key IS NULL) AS missing,
       count(*) FILTER (WHERE e.key IS NULL) AS extra,
       count(*) FILTER (WHERE a.key IS NOT NULL AND e.key IS NOT NULL AND (
           a.n_messages <> e.n_messages OR a.n_warnings <> e.n_warnings OR a.n_failures <> e.n_failures
           OR {
    " OR ".join(
        f"abs(a.{m}_{s} - e.{m}_{s}) > 1e-9 * greatest(1, abs(e.{m}_{s}))"
        for m in _MEASURES
        for s in ("mean", "min", "max")
    )
})) AS mismatched,
       count(*) FILTER (WHERE a.key IS NOT NULL AND e.key IS NOT NULL) AS matched,
       coalesce(sum(e.n_messages), 0) AS rows_in_windows
  FROM expected e FULL JOIN actual a ON a.key = e.key AND a.window_start = e.window_start
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)


@dataclass(frozen=True)
class AggVerdict:
    windows: int
    """Windows expected (device scope): one per device and window start its rows fall in."""
    matched: int
    missing: int
    """Expected, absent from ``sensor_data_agg``."""
    extra: int
    """In ``sensor_data_agg`` with no non-late row to explain it."""
    mismatched: int
    """Present on both sides with a different count, mean, min or max."""
    late_rows: int

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.mismatched == 0 and self.windows > 0


def _seconds(spark_interval: str) -> float:
    # Local to the one helper that parses a duration (kept out of the checker's import surface).
    from fleetsim.kernel.timespec import parse_duration

    num, _, unit = spark_interval.strip().partition(" ")
    short = {"second": "s", "minute": "m", "hour": "h", "day": "d"}
    return parse_duration(num + short[unit.rstrip("s") or "second"])


def check_aggregates(cfg: FleetsimConfig, devices: list[str]) -> AggVerdict:
    """``sensor_data_agg`` (scope ``device``) against the same sliding windows recomputed in SQL
    from the non-late rows of ``sensor_data``: counts exact, means/min/max within 1e-9 relative."""
    window, slide = _seconds(cfg.spark.window), _seconds(cfg.spark.slide)
    params = {"devices": devices, "slide": slide, "window": window, "per_row": round(window / slide)}
    missing, extra, mismatched, matched, _rows = query(cfg, _AGG_CHECK_SQL, params)[0]
    late = query(cfg, "SELECT count(*) FROM sensor_data WHERE device_id = ANY(%s) AND late", (devices,))[0][0]
    return AggVerdict(
        int(matched) + int(missing), int(matched), int(missing), int(extra), int(mismatched), int(late)
    )


def wait_aggregates(cfg: FleetsimConfig, devices: list[str], timeout_s: float = 120.0) -> AggVerdict:
    """The aggregate query runs on its own (slower) trigger: poll until exact or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = check_aggregates(cfg, devices)
        if v.exact or time.monotonic() > deadline:
            return v
        time.sleep(2.0)


# ------------------------------------------------------------------------------------- alerts
@dataclass(frozen=True)
class AlertVerdict:
    injected: int
    """Device faults published and acknowledged."""
    found: int
    missing: list[tuple[str, int, str]]


def check_alerts(
    cfg: FleetsimConfig, faults: Iterable[tuple[str, int, str]], acked: dict[str, set[int]]
) -> AlertVerdict:
    """Every acknowledged device-fault reading has its alert (kind, measurement) at its seq."""
    wanted = [(d, s, f) for d, s, f in faults if s in acked.get(d, set())]
    if not wanted:
        return AlertVerdict(0, 0, [])
    rows = query(
        cfg,
        "SELECT device_id, seq, kind, measurement FROM sensor_alerts WHERE device_id = ANY(%s)",
        (sorted({d for d, _, _ in wanted}),),
    )
    have = {(d, int(s), k, m) for d, s, k, m in rows if s is not None}
    missing = [(d, s, f) for d, s, f in wanted if (d, s, *DEVICE_FAULTS[f]) not in have]
    return AlertVerdict(len(wanted), len(wanted) - len(missing), missing)


def wait_alerts(
    cfg: FleetsimConfig,
    faults: list[tuple[str, int, str]],
    acked: dict[str, set[int]],
    timeout_s: float = 60.0,
) -> AlertVerdict:
    deadline = time.monotonic() + timeout_s
    while True:
        v = check_alerts(cfg, faults, acked)
        if not v.missing or time.monotonic() > deadline:
            return v
        time.sleep(1.0)


# ------------------------------------------------------------------------------ broker drops
DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
"""Mosquitto's count of messages it dropped because a client's queue was full
(``max_queued_messages``/``max_queued_bytes``); refreshed every ``sys_interval`` (2 s here)."""


def broker_counter(cfg: FleetsimConfig, topic: str = DROPPED_TOPIC, timeout_s: float = 10.0) -> int:
    """One ``$SYS`` counter of the broker, read as the tool identity (the topics are retained)."""
    got: list[int] = []
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.topic == topic:
            got.append(int(msg.payload.decode().split()[0]))
            done.set()

    client = mqtt_client(cfg, "tool", f"chaos-sys-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    client.on_message = on_message
    mqtt_connect(client)
    client.loop_start()
    try:
        client.subscribe(topic, 0)
        if not done.wait(timeout_s):
            raise TimeoutError(f"the broker published no {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]
