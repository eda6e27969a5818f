"""The batch sampler: one SimPy process that makes every due reading of the fleet.

It sleeps until the earliest due device, then takes every reading due before the next *other*
event in SimPy's queue (a fault starting or ending, a battery replacement, a control command, the
runner's stop at the end of a step): nothing can change a device's faults, link or power inside
that window, so working a little ahead of the clock gives the readings the one-at-a-time engine
would have made. Within the window, devices advance in rounds (one reading each per round, so a
device's CO2 and battery integrate in order) computed with numpy by :class:`Fleet.step`; the
readings are then encoded and published in time order. Only readings of devices with an active
fault take the scalar path of :mod:`fleetsim.edge.fault_effects`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any, Final

import numpy as np
import simpy

from fleetsim.edge.device import BATTERY_WARNING_PCT, Device, SimContext
from fleetsim.edge.fault_effects import apply_faults
from fleetsim.edge.fleet import Batch
from fleetsim.kernel.contract import FaultKind, encode_reading, format_ts_ms

MAX_WINDOW_S: Final = 600.0
"""Longest stretch of simulated time one batch covers (bounds its memory when nothing else is
queued, e.g. ``env.run()`` without ``until``)."""
_INF: Final = float("inf")
_DROPOUT, _DUP = FaultKind.DROPOUT, FaultKind.DUPLICATE


class Sampler:
    """Makes the readings of ``devices`` (index = their row in ``ctx.fleet``)."""

    def __init__(self, ctx: SimContext, devices: Sequence[Device]) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.fleet = ctx.fleet
        self.devices = list(devices)
        self._wake: simpy.Event | None = None
        ctx.wake = self.wake
        # A battery dying inside a window is replaced replace_after_s later: the window must end
        # before that, or the device's readings after its replacement would be skipped.
        self._window_s = min(
            [MAX_WINDOW_S]
            + [d.spec.replace_after_s for d in self.devices if d.has_battery and d.spec.replace_after_s > 0]
        )

    def wake(self) -> None:
        """A parked device came back: its reading is due now."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def run(self) -> Generator[simpy.Event, Any, None]:
        env, fleet = self.env, self.fleet
        while True:
            self._wake = env.event()
            nxt = float(fleet.due.min()) if fleet.n else _INF
            if nxt > env.now:
                if nxt == _INF:
                    yield self._wake
                else:
                    yield env.timeout(nxt - env.now) | self._wake
            self.batch()

    # ----------------------------------------------------------------------------- batch
    def batch(self) -> int:
        """Every reading due before the next other event; returns how many were made."""
        env, fleet = self.env, self.fleet
        now = env.now
        horizon = min(env.peek(), now + self._window_s)
        rounds: list[Batch] = []
        while True:
            rows = np.flatnonzero(fleet.due < horizon if horizon > now else fleet.due <= now)
            if not rows.size:
                break
            parked = fleet.down[rows]
            if parked.any():  # down at its due instant: sleeps until go_up wakes us
                fleet.due[rows[parked]] = _INF
                rows = rows[~parked]
                if not rows.size:
                    continue
            rounds.append(fleet.step(self.ctx.climate, rows))
        if not rounds:
            return 0
        self._emit(_merge(rounds))
        return sum(len(b.rows) for b in rounds)

    def _emit(self, b: Batch) -> None:
        ctx, fleet, devices = self.ctx, self.fleet, self.devices
        order = np.argsort(b.t, kind="stable")
        rows_a = b.rows[order]
        rows = rows_a.tolist()
        ts = b.t[order].tolist()
        ms = (ctx.start_ms + np.rint(b.t[order] * 1000.0)).astype(np.int64).tolist()
        temp, hum = b.temp[order].tolist(), b.hum[order].tolist()
        co2, pres = b.co2[order].tolist(), b.pressure[order].tolist()
        batt = b.battery[order].tolist()
        faulty = fleet.faulty[rows_a].tolist()
        gps = b.gps[order]
        pub, stats = ctx.publisher, ctx.stats
        publish, link_ok = pub.publish, pub.link_ok
        many = getattr(pub, "publish_many", None)
        pending: list[tuple[str, str, bytes]] = []
        owners: list[tuple[Device, int]] = []
        isnan = math.isnan
        published = 0
        for k, i in enumerate(rows):
            dev = devices[i]
            if dev.down:  # died earlier in this batch
                continue
            t = ts[k]
            battery = batt[k]
            if not isnan(battery):  # battery powered (NaN: mains)
                if battery <= 0.0:  # the last transmission never happens: silent, seq not used
                    dev.deplete(t)
                    continue
            else:
                battery = None
            seq = dev.seq
            dev.seq = seq + 1
            dev.seqlog.last_seq = seq
            route = dev.route
            if route is None:
                lat, lon = dev.lat, dev.lon
            else:
                la, lo = route.position(t)
                lat, lon = round(la + float(gps[k, 0]), 6), round(lo + float(gps[k, 1]), 6)
            if faulty[k]:
                if pending:  # publish in time order: what is queued goes first
                    self._send(many, pending, owners)
                self._faulty(dev, b, int(order[k]), t, ms[k], seq, battery, lat, lon)
                continue
            status = "OK"
            if battery is not None:
                if battery < BATTERY_WARNING_PCT:
                    status = "WARNING"
                    if not dev.warned:
                        dev.warned = True
                        dev.event("battery_low", t)
                battery = round(battery, 2)
            did = dev.device_id
            payload = encode_reading(
                did, format_ts_ms(ms[k]), seq, temp[k], hum[k], co2[k], pres[k], battery, lat, lon, status
            )
            if dev.buffer or not dev.link or not link_ok(did):
                if pending:
                    self._send(many, pending, owners)
                dev.deliver(seq, payload)
            elif many is not None:
                pending.append((did, dev.topic, payload))
                owners.append((dev, seq))
            elif publish(did, dev.topic, payload):
                dev.seqlog.sent(seq)
                published += 1
            else:
                dev.keep(seq, payload)
        if pending:
            self._send(many, pending, owners)
        stats.published += published

    def _send(
        self, many: Any, pending: list[tuple[str, str, bytes]], owners: list[tuple[Device, int]]
    ) -> None:
        """Hand the queued readings to the publisher in one call; what it did not take is kept
        by its device (in seq order: the batch is in time order)."""
        taken = many(pending)
        for j, (dev, seq) in enumerate(owners):
            if j < taken:
                dev.seqlog.sent(seq)
            else:
                dev.keep(seq, pending[j][2])
        self.ctx.stats.published += taken
        pending.clear()
        owners.clear()

    def _faulty(
        self,
        dev: Device,
        b: Batch,
        j: int,
        t: float,
        epoch_ms: int,
        seq: int,
        battery: float | None,
        lat: float,
        lon: float,
    ) -> None:
        """One reading of a device with active faults: the scalar path (as the old engine)."""
        ctx = self.ctx
        t0, h0, c0, p0 = b.raw[j].tolist()
        fx = apply_faults(dev.faults, (t0, h0, c0, p0), t, dev.spec.indoor, dev.frng)
        status = fx.status
        if battery is not None:
            if battery < BATTERY_WARNING_PCT:
                if status == "OK":
                    status = "WARNING"
                if not dev.warned:
                    dev.warned = True
                    dev.event("battery_low", t)
            battery = round(battery, 2)
        t_v, h_v, c_v, p_v = fx.values
        payload = encode_reading(
            dev.device_id,
            format_ts_ms(epoch_ms + fx.skew_ms),
            seq,
            None if t_v is None else round(t_v, 2),
            None if h_v is None else round(min(100.0, max(0.0, h_v)), 1),
            None if c_v is None else round(max(0.0, c_v), 1),
            None if p_v is None else round(p_v, 2),
            battery,
            lat,
            lon,
            status,
            fx.fault,
        )
        if fx.dropout:
            dev.seqlog.drop("dropout", seq)
            ctx.stats.dropped_dropout += 1
            af = dev.faults[_DROPOUT]
            af.counters["dropped"] = af.counters.get("dropped", 0) + 1
            return
        dev.deliver(seq, payload)
        pub = ctx.publisher
        if (
            fx.duplicate
            and dev.link
            and pub.link_ok(dev.device_id)
            and pub.publish(dev.device_id, dev.topic, payload)
        ):
            ctx.stats.published += 1
            ctx.stats.duplicates += 1
            dev.seqlog.duplicates += 1
            af = dev.faults[_DUP]
            af.counters["duplicates"] = af.counters.get("duplicates", 0) + 1


def _merge(rounds: list[Batch]) -> Batch:
    if len(rounds) == 1:
        return rounds[0]
    cat = np.concatenate
    return Batch(
        rows=cat([r.rows for r in rounds]),
        t=cat([r.t for r in rounds]),
        raw=cat([r.raw for r in rounds]),
        temp=cat([r.temp for r in rounds]),
        hum=cat([r.hum for r in rounds]),
        co2=cat([r.co2 for r in rounds]),
        pressure=cat([r.pressure for r in rounds]),
        battery=cat([r.battery for r in rounds]),
        gps=cat([r.gps for r in rounds]),
    )
