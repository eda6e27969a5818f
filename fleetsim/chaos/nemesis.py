"""The nemesis: carries out a :mod:`.schedule` against a running :class:`~.pipeline.Pipeline`.

Each fault runs in its own thread (inject, hold for its duration, heal), so faults on different
components overlap as scheduled while a slow heal (a Spark restart takes up to a minute) delays
nothing else. One lock per target keeps two actions off one component at a time. A supervisor
thread restarts a component that died *outside* any fault (a restart policy would), and records
it: an unplanned restart is a finding of the campaign.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from fleetsim.chaos import ChaosError
from fleetsim.chaos.checker import TruthPublisher
from fleetsim.chaos.link import LinkProxy
from fleetsim.chaos.pipeline import Child, Pipeline, wait_until
from fleetsim.chaos.schedule import KINDS, Fault
from fleetsim.chaos.storm import ReconnectStorm
from fleetsim.stack import process
from fleetsim.stack.base import Service

log = logging.getLogger("fleetsim.chaos")

ENGINES = ("mosquitto", "kafka", "postgres")


class Nemesis:
    def __init__(
        self, p: Pipeline, links: dict[str, LinkProxy], pub: TruthPublisher, storm: ReconnectStorm, t0: float
    ) -> None:
        self.p, self.links, self.pub, self.storm, self.t0 = p, links, pub, storm, t0
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.unplanned: list[dict[str, Any]] = []
        self._locks = {t: threading.Lock() for targets in KINDS.values() for t in targets}
        self._threads: list[threading.Thread] = []
        self._events_lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------------- bookkeeping
    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def _event(self, i: int, fault: Fault, phase: str, **detail: Any) -> None:
        with self._events_lock:
            self.events.append(
                {"fault": i, "t": self.now(), "phase": phase, "label": fault.label(), **detail}
            )
        log.info("chaos t=%6.1f s  #%d %-9s %s %s", self.now(), i, phase, fault.label(), detail or "")

    # --------------------------------------------------------------------------- components
    def _child(self, target: str) -> Child | None:
        return {"bridge": self.p.bridge, "stream": self.p.stream}.get(target)

    def _service(self, target: str) -> Service:
        return self.p.services[target]

    def _restart_child(self, target: str) -> None:
        """Start a child and wait for it to be ready; slow readiness is tolerated (an overlapping
        fault may be holding Kafka or PostgreSQL), an exit is not."""
        child = self._child(target)
        assert child is not None
        child.start()
        try:
            if target == "bridge":
                self.p.wait_bridge_ready(180.0)
            else:
                self.p.wait_stream_ready(600.0)
        except ChaosError as exc:
            if not child.alive:
                raise
            log.warning("%s restarted but not ready yet: %s", target, exc)

    def _signal(self, target: str, sig: int) -> None:
        child = self._child(target)
        if child is not None:
            if not child.signal_group(sig):
                raise ChaosError(f"{target} is not running")
            return
        pid = self._service(target).pid()
        if pid is None:
            raise ChaosError(f"{target} is not running")
        os.kill(pid, sig)

    def _kill9(self, target: str) -> None:
        child = self._child(target)
        if child is not None:
            child.kill9()
            return
        pid = self._service(target).pid()
        if pid is None:
            raise ChaosError(f"{target} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process.pid_alive(pid), 30, what=f"{target} (pid {pid}) to die")

    def _start(self, target: str) -> None:
        if self._child(target) is not None:
            self._restart_child(target)
        else:
            self._service(target).start()

    def _stop_gracefully(self, target: str) -> None:
        child = self._child(target)
        if child is not None:
            child.stop(timeout_s=90.0)
        else:
            self._service(target).stop()

    def _terminate_writers(self) -> int:
        pg = self.p.services["postgres"]
        conn = pg.superuser_connect()  # type: ignore[attr-defined]
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                (self.p.cfg.postgres.writer_user,),
            )
            n = int(cur.fetchone()[0])
        conn.close()
        return n

    # ---------------------------------------------------------------------------- one fault
    def _hold(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run_fault(self, i: int, fault: Fault) -> None:
        t = fault.target
        with self._locks[t]:
            try:
                self._apply(i, fault)
            except Exception as exc:  # recorded, the campaign goes on: the checker has the last word
                msg = f"#{i} {fault.label()}: {type(exc).__name__}: {exc}"
                self.errors.append(msg)
                self._event(i, fault, "error", error=str(exc)[:500])

    def _apply(self, i: int, f: Fault) -> None:
        t = f.target
        if f.kind == "kill":
            self._kill9(t)
            self._event(i, f, "inject")
            self._hold(f.duration_s)
            self._event(i, f, "heal")
            self._start(t)
            self._event(i, f, "recovered")
        elif f.kind == "pause":
            self._signal(t, signal.SIGSTOP)
            self._event(i, f, "inject")
            try:
                self._hold(f.duration_s)
            finally:
                self._signal(t, signal.SIGCONT)
            self._event(i, f, "heal")
        elif f.kind == "restart":
            self._event(i, f, "inject")
            self._stop_gracefully(t)
            self._event(i, f, "stopped")
            self._hold(f.duration_s)
            self._event(i, f, "heal")
            self._start(t)
            self._event(i, f, "recovered")
        elif f.kind == "link":
            proxy = self.links[t]
            if f.params.get("mode") == "cut":
                reset = proxy.cut()
                self._event(i, f, "inject", connections_reset=reset)
            else:
                proxy.delay_s = float(f.params.get("delay_ms", 200)) / 1000.0
                self._event(i, f, "inject")
            try:
                self._hold(f.duration_s)
            finally:
                proxy.delay_s = 0.0
                proxy.heal()
            self._event(i, f, "heal")
        elif f.kind == "pgterm":
            n = self._terminate_writers()
            self._event(i, f, "inject", backends_terminated=n)
        elif f.kind == "storm":
            self._event(i, f, "inject")
            end = time.monotonic() + f.duration_s
            while True:  # drop-and-reconnect rounds until the storm is over (at least one)
                figures = self.storm.run()
                self._event(i, f, "round", **figures)
                if time.monotonic() >= end or self._stop.is_set():
                    break
            self._event(i, f, "heal")
        elif f.kind == "device":
            self.pub.inject_device_fault(str(f.params["fault"]))
            self._event(i, f, "inject")
        else:
            raise ChaosError(f"unknown fault kind {f.kind!r}")

    # ------------------------------------------------------------------------------ running
    def start(self, schedule: list[Fault]) -> None:
        """Fire each fault at its time (threads); returns at once. :meth:`join` waits for them."""

        def fire() -> None:
            for i, fault in enumerate(schedule):
                if self._stop.wait(max(0.0, self.t0 + fault.at_s - time.monotonic())):
                    return
                th = threading.Thread(target=self._run_fault, args=(i, fault), daemon=True, name=f"fault-{i}")
                th.start()
                self._threads.append(th)

        self._firing = threading.Thread(target=fire, daemon=True, name="nemesis")
        self._firing.start()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="supervisor")
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stop.wait(2.0):
            self.supervise_once()

    def supervise_once(self) -> None:
        checks: list[tuple[str, Callable[[], bool], Callable[[], None]]] = [
            (n, self.p.services[n].is_running, self.p.services[n].start) for n in ENGINES
        ]
        checks += [
            ("bridge", lambda: self.p.bridge.alive, lambda: self._restart_child("bridge")),
            ("stream", lambda: self.p.stream.alive, lambda: self._restart_child("stream")),
        ]
        for name, alive, restart in checks:
            lock = self._locks[name]
            if not lock.acquire(blocking=False):
                continue  # a fault holds it: down on purpose
            try:
                if alive():
                    continue
                entry = {"t": self.now(), "component": name}
                child = self._child(name)
                if child is not None and child.proc is not None:
                    entry["exit_code"] = child.proc.returncode
                    entry["last_lines"] = child.tail(5)
                self.unplanned.append(entry)
                log.warning("supervisor: %s died outside any fault; restarting it", name)
                with suppress(Exception):
                    restart()
            finally:
                lock.release()

    def join(self, timeout_s: float = 900.0) -> None:
        """Wait for the firing thread and every fault to have healed."""
        self._firing.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        for th in self._threads:
            th.join(max(0.1, deadline - time.monotonic()))
        if any(th.is_alive() for th in self._threads):
            raise ChaosError("a fault did not heal within the time allowed")

    def stop(self) -> None:
        """Stop firing and holding: remaining holds end at once (each fault still heals)."""
        self._stop.set()

    def heal_all(self) -> None:
        """Everything whole again: links restored, nothing paused, every component running."""
        for proxy in self.links.values():
            proxy.delay_s = 0.0
            proxy.heal()
        for name in (*ENGINES, "bridge", "stream"):
            with suppress(Exception):
                self._signal(name, signal.SIGCONT)
        self.supervise_once()
        if not self.p.bridge.alive or not self.p.stream.alive:
            raise ChaosError("the bridge or the streaming job could not be brought back")
