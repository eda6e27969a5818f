"""The simulated world: the SimPy environment, the devices, control commands and the ledger.

:class:`Simulation` is pure (no clock, no network): :mod:`edge.runner` advances it in real or
accelerated time, and the transport comes in as a :class:`~edge.publisher.Publisher`.
Control commands may arrive from another thread (paho's); they are queued and applied between
two steps of the simulation, at the simulated instant reached.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import datetime
from typing import Any

import simpy

from fleetsim.edge.device import Device, SimContext
from fleetsim.edge.faults import FaultInjector
from fleetsim.edge.fleet import Fleet
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.physics import Climate
from fleetsim.edge.publisher import Publisher
from fleetsim.edge.sampler import Sampler
from fleetsim.kernel.contract import ControlAction, ControlCommand
from fleetsim.kernel.fleetfile import DeviceSpec, haversine_km

log = logging.getLogger(__name__)

ALL = "all"


class Simulation:
    """A fleet of devices in one SimPy environment."""

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        publisher: Publisher,
        *,
        seed: int,
        start: datetime,
        ledger: Ledger,
        buffer_size: int = 1000,
        timezone: str = "Europe/Paris",
        seq_base: int = 0,
        weather_seed: int = 0,
    ) -> None:
        self.env = simpy.Environment()
        self.seed = seed
        self.ledger = ledger
        mean_lon = sum(s.lon for s in specs) / max(1, len(specs))
        mean_lat = sum(s.lat for s in specs) / len(specs) if specs else 45.76
        self.fleet = Fleet(specs, seed)
        self.ctx = SimContext(
            env=self.env,
            climate=Climate(weather_seed, start, mean_lon, timezone, mean_lat),
            publisher=publisher,
            ledger=ledger,
            start=start,
            buffer_size=buffer_size,
            fleet=self.fleet,
            seed=seed,
            seq_base=seq_base,
        )
        self.injector = FaultInjector(self.ctx)
        self.devices: dict[str, Device] = {}
        for idx, spec in enumerate(specs):
            self.devices[spec.device_id] = Device(spec, self.ctx, idx)
        self.sampler = Sampler(self.ctx, list(self.devices.values()))
        self._snapshot_order = list(self.devices.values())
        self._snapshot_cursor = 0
        self.commands: queue.SimpleQueue[tuple[str, ControlCommand, str]] = queue.SimpleQueue()
        self.control_rejected = 0
        """Control commands that could not be applied (bad parameters), logged with the reason."""
        ledger.write(
            {
                "record": "run",
                "phase": "start",
                "seed": seed,
                "weather_seed": weather_seed,
                "start": self.ctx.iso(0.0),
                "devices": len(self.devices),
                "buffer_size": buffer_size,
                "seq_base": seq_base,
            }
        )
        self.env.process(self._boot())
        for dev in self.devices.values():
            self.injector.start_profile(dev, seed)
        self.env.process(self.sampler.run())

    def _boot(self) -> Generator[simpy.Event, Any, None]:
        """Every device powers up at the start: its retained status says ``online``."""
        for dev in self.devices.values():
            dev.set_online(True)
        yield from ()

    @property
    def stats(self) -> Any:
        return self.ctx.stats

    def advance(self, until: float) -> None:
        """Process every event before simulated time ``until`` (seconds since the start)."""
        if until > self.env.now:
            self.env.run(until=until)
        # simpy 4.1 leaves the stopping `until` event queued at `now` (no callbacks left): step it
        # away, or peek() says an event is due now and the paced runner spins at 100% CPU.
        while self.env.peek() <= self.env.now:
            self.env.step()

    # ------------------------------------------------------------------------------- control
    def submit(self, target: str, cmd: ControlCommand, source: str = "control") -> None:
        """Queue a command for ``target`` (a device id or ``all``); safe from any thread."""
        self.commands.put((target, cmd, source))

    def apply_pending(self) -> int:
        """Apply queued commands now; returns how many devices they touched."""
        touched = 0
        while True:
            try:
                target, cmd, source = self.commands.get_nowait()
            except queue.Empty:
                return touched
            touched += self.apply(target, cmd, source)

    def select(self, target: str, cmd: ControlCommand) -> list[Device]:
        """The devices of this process a command addresses (others may live in other shards)."""
        if target == ALL:
            devices = list(self.devices.values())
        else:
            dev = self.devices.get(target)
            devices = [dev] if dev is not None else []
        if cmd.site is not None:
            devices = [d for d in devices if d.spec.site == cmd.site]
        if cmd.within is not None:
            lat0, lon0, km = cmd.within
            now = self.env.now
            devices = [d for d in devices if haversine_km(lat0, lon0, *self.position(d, now)) <= km]
        return devices

    @staticmethod
    def position(dev: Device, t: float) -> tuple[float, float]:
        return dev.route.position(t) if dev.route is not None else (dev.lat, dev.lon)

    def apply(self, target: str, cmd: ControlCommand, source: str = "api") -> int:
        """Apply one command to its devices; a bad one is logged and counted, never raised."""
        devices = self.select(target, cmd)
        try:
            for dev in devices:
                self._apply_one(dev, cmd, source)
        except ValueError as exc:
            self.control_rejected += 1
            log.warning("control command for %s rejected: %s", target, exc)
            return 0
        return len(devices)

    def _apply_one(self, dev: Device, cmd: ControlCommand, source: str) -> None:
        action = cmd.action
        if action is ControlAction.INJECT:
            if cmd.fault is None:
                raise ValueError("inject needs a fault")
            self.injector.inject(dev, cmd.fault, cmd.params, cmd.duration_s, source=source)
        elif action is ControlAction.CLEAR:
            self.injector.clear(dev, cmd.fault)
        elif action is ControlAction.SET_INTERVAL:
            if cmd.interval_s is None:
                raise ValueError("set_interval needs interval_s")
            dev.interval = cmd.interval_s
        elif action is ControlAction.KILL:
            if "killed" not in dev.down:
                dev.go_down("killed")
                self._event(dev, "killed")
        elif action is ControlAction.REVIVE:
            if "battery" in dev.down and dev.has_battery:
                dev.replace_battery()
                self._event(dev, "battery_replaced")
                dev.go_up("battery")
            self.injector.clear(dev, cmd.fault)  # a reboot clears injected faults
            if "killed" in dev.down:
                dev.go_up("killed")
                self._event(dev, "revived")

    def _event(self, dev: Device, name: str) -> None:
        self.ledger.write(
            {"record": "event", "device": dev.device_id, "event": name, "ts": self.ctx.iso(self.env.now)}
        )

    # ---------------------------------------------------------------------------- upkeep
    def flush_buffers(self) -> int:
        """After the broker connection came back: forward every device's buffer, in id order."""
        return sum(dev.flush() for dev in self.devices.values() if dev.buffer and not dev.down)

    def snapshot_sent(self, only_dirty: bool = True) -> int:
        """Write the ``sent`` ledger record of devices that changed (or all)."""
        return self._snapshot(self.devices.values(), only_dirty)

    def snapshot_some(self, count: int) -> int:
        """Write the ``sent`` record of the next ``count`` devices in turn that changed.

        The runner calls this a little at every step, so one pass over the fleet takes its
        snapshot period. Writing the whole fleet at once stalled 100k devices' readings ~0.3 s
        (one JSON line per device), beyond the real-time lag budget."""
        devices = self._snapshot_order
        if not devices or count <= 0:
            return 0
        count, start = min(count, len(devices)), self._snapshot_cursor
        end = start + count
        chunk = devices[start:end] if end <= len(devices) else devices[start:] + devices[: end - len(devices)]
        self._snapshot_cursor = end % len(devices)
        return self._snapshot(chunk, True)

    def _snapshot(self, devices: Iterable[Device], only_dirty: bool) -> int:
        at = self.ctx.iso(self.env.now)
        n = 0
        for dev in devices:
            log_ = dev.seqlog
            if only_dirty and not log_.dirty:
                continue
            self.ledger.write(log_.as_record(dev.device_id, at))
            log_.dirty = False
            n += 1
        if n:
            self.ledger.flush()
        return n

    def finish(self, settle: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
        """End the run: close faults (truncated), forward what can be, mark everyone offline,
        write the final ``sent`` records and totals. ``settle`` runs just before the totals are
        written (the transport waits for its acknowledgements) and adds its figures. Returns the
        totals."""
        self.injector.close_all(list(self.devices.values()))
        self.flush_buffers()
        for dev in self.devices.values():
            for seq, _ in dev.buffer:  # the link is still down: these were never sent
                dev.seqlog.drop("shutdown", seq)
            dev.set_online(False)
        self.snapshot_sent(only_dirty=False)
        s = self.ctx.stats
        totals = {
            "record": "run",
            "phase": "end",
            "end": self.ctx.iso(self.env.now),
            "published": s.published,
            "duplicates": s.duplicates,
            "dropped_overflow": s.dropped_overflow,
            "dropped_dropout": s.dropped_dropout,
            "unsent_at_end": s.buffered,
            "control_rejected": self.control_rejected,
        }
        if settle is not None:
            totals.update(settle())
        self.ledger.write(totals)
        self.ledger.flush()
        return totals
