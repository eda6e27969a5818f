"""One simulated device: a SimPy process that samples its environment, applies its active faults,
drains its battery, and publishes, or stores and forwards when its uplink is down.

This is the simulator's hot path (one call of :meth:`Device.sample` per reading), so attribute
lookups are hoisted into locals and the wire bytes come from the contract's fast encoder.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import simpy

from fleetsim.edge.fault_effects import NO_FAULT_RNG, Values, apply_faults
from fleetsim.edge.faults import ActiveFault
from fleetsim.edge.ledger import Ledger, SeqLog
from fleetsim.edge.physics import (
    CO2_TAU_S,
    OCCUPANCY_PEAK_PPM,
    OUTDOOR_CO2_PPM,
    Battery,
    Climate,
    Route,
    magnus_rh,
    station_pressure,
)
from fleetsim.edge.publisher import Publisher
from fleetsim.kernel.contract import FaultKind, encode_reading, format_ts, format_ts_ms, telemetry_topic
from fleetsim.kernel.fleetfile import DeviceSpec

BATTERY_WARNING_PCT: Final = 15.0
"""Below this charge (%) a device reports status WARNING."""
GPS_SIGMA_DEG: Final = 3.0 / 111_320.0
"""GPS noise of mobile units (about 3 m), in degrees."""
_DROPOUT, _DUP, _DRAIN = FaultKind.DROPOUT, FaultKind.DUPLICATE, FaultKind.BATTERY_DRAIN


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
    seed: int = 0
    """The run's seed (fault RNGs are derived from it lazily)."""
    seq_base: int = 0
    """First seq of every device in this run (``edge.app`` uses the start instant in epoch ms, so
    seqs keep increasing across simulator restarts without any state on disk)."""
    stats: Stats = field(default_factory=Stats)
    start_ms: int = 0

    def __post_init__(self) -> None:
        self.start_ms = int(self.start.timestamp() * 1000)

    def iso(self, t: float) -> str:
        """Wire timestamp of simulated time ``t``."""
        return format_ts(self.start + timedelta(seconds=t)) if t >= 0 else format_ts(datetime.now(UTC))


class Device:
    """State and process of one device. Pure: all I/O goes through ``ctx.publisher``."""

    __slots__ = (
        "_wake",
        "battery",
        "buffer",
        "co2",
        "ctx",
        "device_id",
        "down",
        "faults",
        "frng",
        "interval",
        "last_t",
        "link",
        "online",
        "rng",
        "route",
        "seq",
        "seqlog",
        "spec",
        "topic",
        "warned",
    )

    def __init__(self, spec: DeviceSpec, ctx: SimContext, rng: random.Random) -> None:
        self.spec = spec = replace(spec, lat=round(spec.lat, 6), lon=round(spec.lon, 6))
        self.ctx = ctx
        self.rng = rng
        """Physics noise only, so faults never shift the clean signal of a seed."""
        self.frng: random.Random = NO_FAULT_RNG
        """Draws of fault effects; created on first injection (seeding costs ~30 µs a device)."""
        self.device_id = spec.device_id
        self.topic = telemetry_topic(spec.device_id)
        self.interval = spec.interval_s
        self.seq = ctx.seq_base
        self.faults: dict[FaultKind, ActiveFault] = {}
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.seqlog = SeqLog()
        self.battery = Battery(spec.battery_mah) if spec.battery_mah > 0 else None
        self.route = Route(spec.route, spec.speed_kmh, rng.random()) if spec.type == "mobile" else None
        self.co2 = OUTDOOR_CO2_PPM
        self.last_t = 0.0
        self.down: set[str] = set()
        """Why the device is not sampling: ``crash``, ``killed``, ``battery``."""
        self.link = True
        """False during an injected network outage."""
        self.online = False
        self.warned = False
        self._wake: simpy.Event | None = None

    # ---------------------------------------------------------------------------- process
    def run(self) -> Generator[simpy.Event, Any, None]:
        env = self.ctx.env
        self.set_online(True)
        # A random phase, so a fleet does not sample in lock-step.
        yield env.timeout(self.rng.random() * self.interval)
        self.last_t = env.now
        while True:
            if self.down:
                self._wake = env.event()
                yield self._wake
                continue
            self.sample()
            yield env.timeout(self.interval)

    # --------------------------------------------------------------------------- sampling
    def sample(self) -> None:
        ctx = self.ctx
        t = ctx.env.now
        spec = self.spec
        city = ctx.climate.at(t)
        gauss = self.rng.gauss
        dt = t - self.last_t
        self.last_t = t
        if spec.indoor:
            occ = ctx.climate.occupancy(spec.occupancy, t)
            temp = _indoor_setpoint(spec.occupancy, city.local_hour, city.weekday, city.temp_c) + 1.2 * occ
            temp += spec.temp_offset_c + gauss(0.0, 0.08)
            target = OUTDOOR_CO2_PPM + OCCUPANCY_PEAK_PPM[spec.occupancy] * occ
            self.co2 += (target - self.co2) * (1.0 - math.exp(-dt / CO2_TAU_S))
            co2 = self.co2 + gauss(0.0, 8.0)
            # Indoor air is outdoor air brought to room temperature (the HVAC condenses moisture
            # above a ~12 °C dew point), plus the occupants' breath.
            hum = magnus_rh(temp, min(city.dew_c, 12.0) + 2.0 * occ) + gauss(0.0, 0.6)
        else:
            temp = city.temp_c + spec.temp_offset_c + gauss(0.0, 0.15)
            hum = magnus_rh(temp, city.dew_c) + gauss(0.0, 1.0)
            co2 = (
                OUTDOOR_CO2_PPM + (60.0 if self.route is not None else 25.0) * city.traffic + gauss(0.0, 5.0)
            )
        pressure = station_pressure(city.slp_hpa, spec.altitude_m) + gauss(0.0, 0.12)
        if self.route is not None:
            lat, lon = self.route.position(t)
            lat = round(lat + gauss(0.0, GPS_SIGMA_DEG), 6)
            lon = round(lon + gauss(0.0, GPS_SIGMA_DEG), 6)
        else:
            lat, lon = spec.lat, spec.lon  # rounded once in the constructor
        battery = None
        if self.battery is not None:
            drain = self.faults.get(_DRAIN)
            battery = self.battery.drain(dt, temp, 1, drain.params["factor"] if drain is not None else 1.0)
            if battery <= 0.0:  # the last transmission never happens: silent, seq not used
                self._deplete()
                return
        seq = self.seq
        self.seq = seq + 1
        self.seqlog.last_seq = seq
        status = "OK"
        fault = None
        skew_ms = 0
        dropout = duplicate = False
        values: Values = (temp, hum, co2, pressure)
        if self.faults:
            fx = apply_faults(self.faults, values, t, spec.indoor, self.frng)
            values, status, fault = fx.values, fx.status, fx.fault
            skew_ms, dropout, duplicate = fx.skew_ms, fx.dropout, fx.duplicate
        if battery is not None:
            if battery < BATTERY_WARNING_PCT:
                if status == "OK":
                    status = "WARNING"
                if not self.warned:
                    self.warned = True
                    self._event("battery_low")
            battery = round(battery, 2)
        t_v, h_v, c_v, p_v = values
        payload = encode_reading(
            self.device_id,
            format_ts_ms(ctx.start_ms + round(t * 1000) + skew_ms),
            seq,
            None if t_v is None else round(t_v, 2),
            None if h_v is None else round(min(100.0, max(0.0, h_v)), 1),
            None if c_v is None else round(max(0.0, c_v), 1),
            None if p_v is None else round(p_v, 2),
            battery,
            lat,
            lon,
            status,
            fault,
        )
        if dropout:
            self.seqlog.drop("dropout", seq)
            ctx.stats.dropped_dropout += 1
            af = self.faults[_DROPOUT]
            af.counters["dropped"] = af.counters.get("dropped", 0) + 1
            return
        self.deliver(seq, payload)
        pub = ctx.publisher
        if (
            duplicate
            and self.link
            and pub.link_ok(self.device_id)
            and pub.publish(self.device_id, self.topic, payload)
        ):
            ctx.stats.published += 1
            ctx.stats.duplicates += 1
            self.seqlog.duplicates += 1
            af = self.faults[_DUP]
            af.counters["duplicates"] = af.counters.get("duplicates", 0) + 1

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
        if not was_down:
            self.set_online(False, abrupt=True)

    def go_up(self, reason: str) -> None:
        """Clear one reason for being down; when none is left, reboot: online, seq continues."""
        self.down.discard(reason)
        if self.down:
            return
        self.last_t = self.ctx.env.now  # no battery drain or CO2 history across the dead time
        self.set_online(True)
        if self.buffer:
            self.flush()
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

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

    def _deplete(self) -> None:
        self._event("battery_depleted")
        self.go_down("battery")
        if self.spec.replace_after_s > 0:
            self.ctx.env.process(self._replace_later(self.spec.replace_after_s))

    def _replace_later(self, delay: float) -> Generator[simpy.Event, Any, None]:
        yield self.ctx.env.timeout(delay)
        if self.battery is not None:
            self.battery.replace()
        self.warned = False
        self._event("battery_replaced")
        self.go_up("battery")

    def _event(self, name: str) -> None:
        ctx = self.ctx
        ctx.ledger.write(
            {"record": "event", "device": self.device_id, "event": name, "ts": ctx.iso(ctx.env.now)}
        )


def _indoor_setpoint(kind: str, hour: float, weekday: int, outdoor_c: float) -> float:
    """Room temperature the HVAC holds, with a little leakage of the outdoor temperature."""
    leak = 0.12 * (outdoor_c - 15.0)
    if kind in ("office", "meeting", "lab"):
        if weekday < 5 and 6.5 <= hour < 19.5:
            return 21.5 + leak
        return min(26.0, max(18.5, 10.0 + 0.5 * outdoor_c))  # set-back: heating or cooling off
    if kind == "retail":
        return (20.5 if 8.5 <= hour < 20.0 else 17.5) + leak
    if kind == "home":
        return 20.5 + leak
    return 16.0 + 0.4 * (outdoor_c - 15.0)  # unheated storage
