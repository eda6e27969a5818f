"""Prometheus metrics of the simulator (served on 127.0.0.1:<simulation.metrics_port> by
:class:`fleetsim.kernel.service.MetricsServer`).

Updated about once a wall second from the runner's upkeep (never per message: a Counter
increment takes a lock, and the hot path publishes tens of thousands of messages a second).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleetsim.edge.engine import Simulation
from fleetsim.edge.progress import Snapshot
from fleetsim.edge.runner import RunReport


class SimMetrics:
    """The ``fleetsim_sim_*`` series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("fleetsim_sim_messages", "Telemetry messages published", registry=r)
        self.online = Gauge("fleetsim_sim_devices_online", "Devices powered with their uplink up", registry=r)
        self.devices = Gauge("fleetsim_sim_devices", "Devices simulated by this process", registry=r)
        self.buffered = Gauge(
            "fleetsim_sim_buffered_readings", "Readings waiting in store-and-forward buffers", registry=r
        )
        self.dropped = Counter(
            "fleetsim_sim_dropped", "Readings never sent, by reason", ["reason"], registry=r
        )
        self.lag = Gauge(
            "fleetsim_sim_lag_seconds", "Lag behind real time x speed (latest batch)", registry=r
        )
        self.outstanding = Gauge(
            "fleetsim_sim_mqtt_outstanding", "Messages handed to paho, not yet acknowledged", registry=r
        )
        self.simulated = Gauge(
            "fleetsim_sim_simulated_seconds", "Simulated seconds reached since the start instant", registry=r
        )
        self.target = Gauge(
            "fleetsim_sim_target_seconds", "Simulated seconds the run lasts (0: until stopped)", registry=r
        )
        self.eta = Gauge(
            "fleetsim_sim_eta_seconds", "Wall seconds left at the current speed (-1: unknown)", registry=r
        )
        self._last: dict[str, int] = {"published": 0, "overflow": 0, "dropout": 0}

    def update(self, sim: Simulation, report: RunReport, lag_s: float, outstanding: int = 0) -> None:
        s = sim.stats
        self.messages.inc(s.published - self._last["published"])
        self.dropped.labels("overflow").inc(s.dropped_overflow - self._last["overflow"])
        self.dropped.labels("dropout").inc(s.dropped_dropout - self._last["dropout"])
        self._last = {"published": s.published, "overflow": s.dropped_overflow, "dropout": s.dropped_dropout}
        self.online.set(s.online)
        self.devices.set(len(sim.devices))
        self.buffered.set(s.buffered)
        self.lag.set(lag_s)
        self.outstanding.set(outstanding)

    def progress(self, snap: Snapshot) -> None:
        self.simulated.set(snap.sim_s)
        self.target.set(snap.duration_s or 0.0)
        eta = snap.eta_s
        self.eta.set(-1.0 if eta is None else eta)
