"""Wiring of one simulator process: fleet -> publisher -> simulation -> runner -> metrics -> ledger.

The one assembly of the simulator, used by ``fleetsim sim``, experiments and the benchmark: each
gets the same seq base, MQTT pump, metrics and GC set-up. Handles SIGTERM/SIGINT gracefully when asked to:
the current step ends, active faults are closed (``truncated``) in the ledger, buffers are
forwarded, every device is marked offline, in-flight QoS 1 messages are awaited, the ledger is
closed.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetsim.edge.engine import Simulation
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.metrics import SimMetrics
from fleetsim.edge.mqtt import MqttPublisher
from fleetsim.edge.progress import Display, RunProgress
from fleetsim.edge.publisher import Publisher
from fleetsim.edge.replay import load_replay, replay_process
from fleetsim.edge.runner import Runner, RunReport
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import SimulationError
from fleetsim.kernel.fleetfile import DeviceSpec, load_fleet, parse_shard, scale_fleet, shard_fleet
from fleetsim.kernel.service import MetricsServer, StopSignals
from fleetsim.kernel.timespec import parse_start

log = logging.getLogger(__name__)

Tick = Callable[[Simulation, RunReport, float], None]


@dataclass(slots=True)
class SimOptions:
    """What ``fleetsim sim`` adds to the config."""

    replay: Path | None = None
    """Republish this readings CSV instead of simulating the fleet."""
    replay_shift: str = "original"
    """``original`` timestamps or ``start`` (moved to the run's start instant)."""
    tls: bool = False
    """Connect to the TLS listener."""
    window: int | None = None
    """Outstanding-message window (default: 10 x simulation.max_inflight)."""
    handle_signals: bool = True
    stop: threading.Event = field(default_factory=threading.Event)
    specs: list[DeviceSpec] | None = None
    """The fleet to simulate (default: :func:`build_fleet` from the config)."""
    ledger_file: Path | None = None
    """Ground-truth ledger (default: ``cfg.ledger_file``)."""
    on_tick: Tick | None = None
    """Called after each runner tick with (simulation, report so far, lag in seconds)."""
    drain_timeout_s: float = 30.0
    """How long the end of the run waits for the broker to acknowledge what was published."""
    show_progress: bool = False
    """Show simulated time, msg/s and ETA on stderr (a live bar on a terminal, else a log line)."""


def build_fleet(cfg: FleetsimConfig) -> list[DeviceSpec]:
    """``devices_file``, scaled by ``scale``, sliced by ``shard``."""
    sim = cfg.simulation
    fleet = scale_fleet(load_fleet(sim.devices_file), sim.scale, sim.seed)
    i, n = parse_shard(sim.shard)
    return shard_fleet(fleet, i, n)


def run_simulation(
    cfg: FleetsimConfig, opts: SimOptions | None = None, publisher: Publisher | None = None
) -> tuple[RunReport, dict[str, Any]]:
    """Run one simulator process to its duration (or until stopped). Returns (report, totals)."""
    opts = opts or SimOptions()
    sc = cfg.simulation
    # speed, duration and start were validated with the config: these cannot fail here.
    speed, duration = sc.speed_factor, sc.duration_s
    start = parse_start(sc.start)
    specs: list[DeviceSpec] = []  # a replay republishes readings; it simulates no device
    if not opts.replay:
        specs = opts.specs if opts.specs is not None else build_fleet(cfg)
    readings = load_replay(opts.replay) if opts.replay else []
    if opts.replay and duration is None:
        duration = (readings[-1].ts - readings[0].ts).total_seconds() + 1.0
    mqtt = None
    if publisher is None:
        mqtt = MqttPublisher(
            cfg,
            device_ids=[s.device_id for s in specs],
            mode=sc.connections,
            shard=parse_shard(sc.shard),
            tls=opts.tls,
            window=opts.window,
            stop=opts.stop,
        )
        mqtt.start()
        publisher = mqtt
    ledger = Ledger(opts.ledger_file or cfg.ledger_file)
    metrics = SimMetrics()
    server = MetricsServer(metrics.registry, sc.metrics_port)
    progress = RunProgress(duration)
    display = Display(duration) if opts.show_progress else None
    signals = StopSignals(opts.stop, name="the simulator", log=log)
    try:
        # seq = start instant (epoch ms) + n: a restarted simulator (every device "rebooting")
        # continues above the previous run's seqs, as the contract requires, while the same
        # --start and seed still reproduce the same stream. Readings are >= 0.1 s apart, so a run
        # never reaches the next run's base unless the runs overlap in simulated time.
        seq_base = int(start.timestamp() * 1000)
        sim = Simulation(
            specs,
            publisher,
            seed=sc.seed,
            start=start,
            ledger=ledger,
            buffer_size=sc.buffer_size,
            seq_base=seq_base,
            weather_seed=sc.weather_seed,
        )
        # The fleet lives for the whole run: move it out of the cyclic GC's reach, or every
        # full collection rescans 100k devices and shows up as a lag spike.
        gc.collect()
        gc.freeze()
        if mqtt is not None:
            mqtt.on_control = sim.submit
        if readings:
            sim.env.process(replay_process(sim, readings, start, opts.replay_shift))
        server.start()
        if opts.handle_signals:
            signals.install()  # the current step ends, then the graceful shutdown below

        def tick(s: Simulation, report: RunReport, lag: float) -> None:
            metrics.update(s, report, lag, mqtt.outstanding if mqtt is not None else 0)
            snap = progress.update(s.env.now, s.stats.published)
            metrics.progress(snap)
            if display is not None:
                display.show(snap)
            if opts.on_tick is not None:
                opts.on_tick(s, report, lag)

        log.info(
            "simulating %d devices from %s, speed %s, duration %s",
            len(specs),
            start.isoformat(),
            sc.speed,
            sc.duration or "unbounded",
        )
        runner = Runner(
            sim,
            speed=speed,
            duration_s=duration,
            stop=opts.stop,
            on_tick=tick,
            generation=lambda: publisher.generation,
            io=mqtt.pump if mqtt is not None else None,
            # An explicit start is a simulated instant, not the wall clock: nothing to keep up with.
            anchor=None if sc.start else start.timestamp(),
        )
        report = runner.run()

        def settle() -> dict[str, Any]:
            if mqtt is None:
                return {}
            if mqtt.fatal is None and not mqtt.drain(opts.drain_timeout_s):
                log.warning("%d messages not acknowledged by the broker at shutdown", mqtt.outstanding)
            return {
                "unacknowledged_at_end": mqtt.outstanding,
                "mqtt_reconnects": max(0, mqtt.generation - 1),
                "control_rejected": sim.control_rejected + mqtt.control_rejected,
            }

        totals = sim.finish(settle)
        metrics.update(sim, report, 0.0, mqtt.outstanding if mqtt is not None else 0)
        if mqtt is not None and mqtt.fatal is not None:
            raise SimulationError(f"{mqtt.fatal}; the ledger has what was sent before")
        return report, totals
    finally:
        signals.restore()
        server.stop()
        if display is not None:
            display.close()
        ledger.close()
        if mqtt is not None:
            mqtt.close()
