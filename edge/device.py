"""One simulated device: its identity, faults, store-and-forward buffer, seq log, power and link.

Its numbers (next due instant, indoor CO2, battery charge, interval) live in the fleet's arrays
(:class:`fleetsim.edge.fleet.Fleet`, row ``idx``) and its readings are made a batch at a time by
:mod:`fleetsim.edge.sampler`; a :class:`Device` is the handle the discrete events act on (faults,
battery events, control commands, reconnection flushes).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import simpy

from fleetsim.edge.fault_effects import NO_FAULT_RNG
from fleetsim.edge.faults import ActiveFault
from fleetsim.edge.fleet import Fleet
from fleetsim.edge.ledger import Ledger, SeqLog
from fleetsim.edge.physics import Climate, Route
from fleetsim.edge.publisher import Publisher
from fleetsim.kernel.contract import FaultKind, format_ts, telemetry_topic
from fleetsim.kernel.fleetfile import DeviceSpec

BATTERY_WARNING_PCT: Final = 15.0
"""Below this charge (%) a device reports status WARNING."""


@dataclass(slots=True)
class Stats:
    """Fleet-wide counters, read by the engine for metrics and the ledger's run record."""

    published: int = 0
    """Telemetry messages handed to the publisher (duplicates included)."""
    duplicates: int = 0
    dropped_overflow: int = 0
    """Readings pushed out of a full store-and-forward buffer (oldest first)."""
    dropped_dropout: int = 0
    """Readings lost to an injected dropout."""
    buffered: int = 0
    """Readings waiting in store-and-forward buffers right now."""
    online: int = 0
    """Devices powered and with their uplink up."""


@dataclass(slots=True)
class SimContext:
    """What every device of one simulation shares."""

    env: simpy.Environment
    climate: Climate
    publisher: Publisher
    ledger: Ledger
    start: datetime
    """Simulated instant of ``env.now == 0`` (aware UTC, whole milliseconds)."""
    buffer_size: int
    """Store-and-forward capacity per device, in readings."""
    fleet: Fleet
    seed: int = 0
    """The run's seed (fault RNGs are derived from it lazily)."""
    seq_base: int = 0
    """First seq of every device in this run (``edge.app`` uses the start instant in epoch ms, so
    seqs keep increasing across simulator restarts without any state on disk)."""
    stats: Stats = field(default_factory=Stats)
    start_ms: int = 0
    wake: Callable[[], None] = lambda: None
    """Tells the sampler a parked device is due now (set by the engine)."""

    def __post_init__(self) -> None:
        self.start_ms = int(self.start.timestamp() * 1000)

    def iso(self, t: float) -> str:
        """Wire timestamp of simulated time ``t``."""
        return format_ts(self.start + timedelta(seconds=t)) if t >= 0 else format_ts(datetime.now(UTC))


class Device:
    """State of one device outside the arrays. Pure: all I/O goes through ``ctx.publisher``."""

    __slots__ = (
        "buffer",
        "ctx",
        "device_id",
        "down",
        "faults",
        "fleet",
        "frng",
        "idx",
        "lat",
        "link",
        "lon",
        "online",
        "route",
        "seq",
        "seqlog",
        "spec",
        "topic",
        "warned",
    )

    def __init__(self, spec: DeviceSpec, ctx: SimContext, idx: int) -> None:
        self.spec = spec
        self.lat, self.lon = round(spec.lat, 6), round(spec.lon, 6)
        """Position of a fixed device as on the wire (micro-degrees)."""
        self.ctx = ctx
        self.fleet = ctx.fleet
        self.idx = idx
        self.frng: random.Random = NO_FAULT_RNG
        """Draws of fault effects; created on first injection (seeding costs ~30 µs a device)."""
        self.device_id = spec.device_id
        self.topic = telemetry_topic(spec.device_id)
        self.seq = ctx.seq_base
        self.faults: dict[FaultKind, ActiveFault] = {}
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.seqlog = SeqLog()
        self.route = (
            Route(spec.route, spec.speed_kmh, float(self.fleet.route_phase[idx]))
            if spec.type == "mobile"
            else None
        )
        self.down: set[str] = set()
        """Why the device is not sampling: ``crash``, ``killed``, ``battery``."""
        self.link = True
        """False during an injected network outage."""
        self.online = False
        self.warned = False

    # ----------------------------------------------------------------------- array state
    @property
    def interval(self) -> float:
        return float(self.fleet.interval[self.idx])

    @interval.setter
    def interval(self, value: float) -> None:
        # Like a device's own timer: the wait in progress ends as planned, the next one is new.
        self.fleet.interval[self.idx] = value

    @property
    def has_battery(self) -> bool:
        return bool(self.fleet.has_battery[self.idx])

    @property
    def battery_pct(self) -> float | None:
        f, i = self.fleet, self.idx
        return float(100.0 * f.remaining[i] / f.capacity[i]) if f.has_battery[i] else None

    def replace_battery(self) -> None:
        self.fleet.remaining[self.idx] = self.fleet.capacity[self.idx]
        self.warned = False

    def faults_changed(self) -> None:
        """After an injection or an end: route the readings through the fault path or not."""
        drain = self.faults.get(FaultKind.BATTERY_DRAIN)
        self.fleet.faulty[self.idx] = bool(self.faults)
        self.fleet.drain_factor[self.idx] = drain.params["factor"] if drain is not None else 1.0

    # -------------------------------------------------------------------- store and forward
    def deliver(self, seq: int, payload: bytes) -> None:
        """Publish now, or keep in the bounded buffer (dropping and counting the oldest)."""
        ctx = self.ctx
        if self.link and ctx.publisher.link_ok(self.device_id):
            if self.buffer:
                self.flush()
            if not self.buffer and ctx.publisher.publish(self.device_id, self.topic, payload):
                self.seqlog.sent(seq)
                ctx.stats.published += 1
                return
        self.keep(seq, payload)

    def keep(self, seq: int, payload: bytes) -> None:
        """Store a reading the link could not take (a full buffer drops and counts its oldest)."""
        ctx = self.ctx
        outage = self.faults.get(FaultKind.NETWORK_OUTAGE)
        if outage is not None:
            outage.counters["buffered"] = outage.counters.get("buffered", 0) + 1
        if len(self.buffer) >= ctx.buffer_size:
            if not self.buffer:  # a zero-size buffer forwards nothing
                self._overflow(seq, outage)
                return
            old_seq, _ = self.buffer.popleft()
            ctx.stats.buffered -= 1
            self._overflow(old_seq, outage)
        self.buffer.append((seq, payload))
        ctx.stats.buffered += 1

    def _overflow(self, seq: int, outage: ActiveFault | None) -> None:
        self.seqlog.drop("overflow", seq)
        self.ctx.stats.dropped_overflow += 1
        if outage is not None:
            outage.counters["dropped_overflow"] = outage.counters.get("dropped_overflow", 0) + 1

    def flush(self) -> int:
        """Send the buffer in seq order (original timestamps); stops if the link drops again."""
        ctx = self.ctx
        sent = 0
        while self.buffer and self.link and ctx.publisher.link_ok(self.device_id):
            seq, payload = self.buffer[0]
            if not ctx.publisher.publish(self.device_id, self.topic, payload):
                break  # the connection dropped under us: keep it, in order
            self.buffer.popleft()
            ctx.stats.buffered -= 1
            self.seqlog.sent(seq)
            ctx.stats.published += 1
            sent += 1
        return sent

    # ----------------------------------------------------------------------- power and link
    def go_down(self, reason: str) -> None:
        """Stop sampling (crash, kill, empty battery): offline, the Last Will fires."""
        was_down = bool(self.down)
        self.down.add(reason)
        self.fleet.down[self.idx] = True
        if not was_down:
            self.set_online(False, abrupt=True)

    def go_up(self, reason: str) -> None:
        """Clear one reason for being down; when none is left, reboot: online, seq continues."""
        self.down.discard(reason)
        if self.down:
            return
        fleet, i, now = self.fleet, self.idx, self.ctx.env.now
        fleet.down[i] = False
        fleet.last_t[i] = now  # no battery drain or CO2 history across the dead time
        self.set_online(True)
        if self.buffer:
            self.flush()
        if fleet.due[i] == float("inf"):  # parked at a due instant while down: sample now
            fleet.due[i] = now
            self.ctx.wake()

    def set_link(self, up: bool) -> None:
        """Injected network outage (False) or its end (True, then flush in seq order)."""
        self.link = up
        if self.down:
            return
        self.set_online(up, abrupt=not up)
        if up and self.buffer:
            self.flush()

    def set_online(self, online: bool, abrupt: bool = False) -> None:
        if online == self.online:
            return
        self.online = online
        self.ctx.stats.online += 1 if online else -1
        self.ctx.publisher.set_status(self.device_id, online, abrupt)

    def deplete(self, t: float) -> None:
        """The battery ran out at simulated instant ``t`` (>= now: the sampler works ahead of the
        clock up to the next discrete event): silent from now, replaced ``replace_after_s`` later."""
        self.event("battery_depleted", t)
        self.go_down("battery")
        if self.spec.replace_after_s > 0:
            wait = self.spec.replace_after_s + t - self.ctx.env.now
            self.ctx.env.process(self._replace_later(wait))

    def _replace_later(self, delay: float) -> Generator[simpy.Event, Any, None]:
        yield self.ctx.env.timeout(delay)
        self.replace_battery()
        self.event("battery_replaced")
        self.go_up("battery")

    def event(self, name: str, t: float | None = None) -> None:
        """A ground-truth event at simulated instant ``t`` (default: now)."""
        ctx = self.ctx
        at = ctx.env.now if t is None else t
        ctx.ledger.write({"record": "event", "device": self.device_id, "event": name, "ts": ctx.iso(at)})
