"""The application components (stream, bridge, sim, dashboard) as background ``fleetsim`` processes.

Each runs its own sub-command (``fleetsim stream`` ...) in its own session, with its log in
``<run_dir>/logs/<name>.log`` and pid in ``<run_dir>/pids/<name>.pid``. Its live figure is
scraped from the component itself: the Prometheus ``/metrics`` endpoint on
``127.0.0.1:<metrics_port>`` (or Streamlit's ``/_stcore/health`` for the dashboard), read with the
kernel's scraper. Which applications exist, their ports and counters come from the kernel's
component table (:mod:`fleetsim.kernel.components`); this module adds how to run them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetsim.kernel import components as table
from fleetsim.kernel.components import ComponentInfo
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StackError
from fleetsim.kernel.scrape import MetricMissing, http_get, metrics_url
from fleetsim.kernel.scrape import scrape as scrape_metrics
from fleetsim.kernel.timespec import format_duration
from fleetsim.stack import process
from fleetsim.stack.base import ServiceStatus, logs_dir, pids_dir


@dataclass(frozen=True)
class AppSpec:
    """How to run and measure one application component (the kernel's table row plus its command)."""

    info: ComponentInfo
    """The row of :data:`fleetsim.kernel.components.COMPONENTS`."""
    command: str
    """``fleetsim`` sub-command that runs it in the foreground."""

    @property
    def port_key(self) -> str:
        """Config key of the port it serves (metrics, or the dashboard's HTTP port)."""
        return self.info.port_key

    @property
    def counter(self) -> str:
        """Prometheus sample summed for the live figure ('' for the dashboard)."""
        return self.info.counter

    @property
    def unit(self) -> str:
        """What the counter counts (for the status line)."""
        return self.info.unit


APPS: dict[str, AppSpec] = {name: AppSpec(table.info(name), command=name) for name in table.APP_NAMES}
"""The application components, in start order: every app of the kernel's table (each one's
sub-command has its name)."""


def scrape(port: int, sample: str) -> float:
    """Sum of every ``sample`` series on the Prometheus endpoint of ``127.0.0.1:port``."""
    try:
        return scrape_metrics(port).total(sample)
    except MetricMissing as exc:
        raise StackError(str(exc)) from exc


def _sim_progress(port: int, figure: str, metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The simulator's simulated time reached, of its duration, and ETA (its own gauges)."""
    found = scrape_metrics(port)
    sim_s = found.value("fleetsim_sim_simulated_seconds")
    if sim_s is None:
        return figure, metrics
    target = found.value("fleetsim_sim_target_seconds") or 0.0
    eta = found.value("fleetsim_sim_eta_seconds")
    progress = f"simulated {format_duration(sim_s)}"
    if target > 0:
        progress += f" of {format_duration(target)} ({100 * min(1.0, sim_s / target):.1f} %)"
        if eta is not None and eta >= 0:
            progress += f", ETA {format_duration(eta)}"
    extra = {
        "simulated_s": sim_s,
        "target_s": target or None,
        "eta_s": eta if eta is not None and eta >= 0 else None,
    }
    return f"{figure}; {progress}", {**metrics, **extra}


def _bridge_adoption(port: int, figure: str, metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Peers' sessions the bridge holds now (session adoption), and what those forwarded."""
    found = scrape_metrics(port)
    held = found.value("fleetsim_bridge_adopted_sessions")
    if held is None:
        return figure, metrics  # adoption off (no peers)
    peers = sorted(
        s.labels.get("peer", "")
        for s in found.samples
        if s.name == "fleetsim_bridge_adopted_session" and s.value
    )
    forwarded = found.total("fleetsim_bridge_adopted_forwarded_total")
    extra = {"adopted": peers, "adopted_forwarded": forwarded}
    if not held:
        return figure, {**metrics, **extra}
    return f"{figure}; holding {', '.join(peers)} (adopted: {forwarded:,.0f} forwarded)", {**metrics, **extra}


class AppComponent:
    """One application component run as ``python -m fleetsim.cli [global args] <command>``."""

    def __init__(self, name: str, cfg: FleetsimConfig, global_args: Sequence[str] = ()) -> None:
        self.name = name
        self.spec = APPS[name]
        self.cfg = cfg
        self.global_args = list(global_args)

    @property
    def port(self) -> int:
        return table.endpoint(self.cfg, self.name)[1]

    @property
    def log_file(self) -> Path:
        return logs_dir(self.cfg) / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return pids_dir(self.cfg) / f"{self.name}.pid"

    def url(self) -> str:
        if self.name == "dashboard":
            return f"http://{self.cfg.dashboard.host}:{self.port}/"
        return metrics_url(self.port) if self.port else ""

    def pid(self) -> int | None:
        pid = process.read_pid(self.pid_file)
        if pid and process.pid_alive(pid) and f" {self.spec.command}" in process.cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "fleetsim.cli", *self.global_args, self.spec.command]

    def ready(self) -> bool:
        if not self.port:
            return True  # metrics disabled: alive is all we can check
        if self.name == "dashboard":
            return http_get(f"http://127.0.0.1:{self.port}/_stcore/health").strip() == "ok"
        http_get(metrics_url(self.port))
        return True

    def start(self, env: dict[str, str] | None = None) -> None:
        if self.is_running():
            return
        if self.port:
            process.check_ports_free({self.spec.port_key: self.port}, self.cfg.stack.port_grace_s)
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as fh:
            fh.write(
                f"---- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} fleetsim up: starting {self.name}\n".encode()
            )
        pid = process.spawn(self.argv(), self.log_file, env=child_env).pid
        process.write_pid(self.pid_file, pid)
        exited: list[bool] = []

        def probe() -> bool:
            if not process.pid_alive(pid):
                exited.append(True)
                return True
            return self.ready()

        if not process.wait_for(probe, self.cfg.stack.start_timeout_s, 0.3) or exited:
            self._kill(pid, 10.0)
            self.pid_file.unlink(missing_ok=True)
            last = process.tail(self.log_file, 1).strip() or "no output"
            why = "exited" if exited else f"was not ready within {self.cfg.stack.start_timeout_s:.0f}s"
            raise StackError(f"{self.name} {why} (last log line: {last}); full log: {self.log_file}")

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> bool:
        """Signal the whole process group; False when no process of it is left."""
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _kill(self, pid: int, timeout_s: float) -> bool:
        # The component leads its own process group (Streamlit, Spark's JVM are its children).
        # SIGTERM the leader only: the streaming job stops its queries through the JVM, which a
        # group-wide SIGTERM would kill under it (py4j "Answer from Java side is empty" and a
        # batch cut short). Once the leader is gone, no child may outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        graceful = process.wait_for(lambda: not process.pid_alive(pid), timeout_s, 0.2)
        if not graceful:
            self._signal_group(pid, signal.SIGKILL)
        process.wait_for(lambda: not process.pid_alive(pid) and not process.group_alive(pid), 10.0, 0.05)
        self._signal_group(pid, signal.SIGKILL)
        return graceful

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._kill(pid, self.cfg.stack.stop_timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return True

    def live(self) -> tuple[str, dict[str, Any]]:
        if self.name == "dashboard":
            health = http_get(f"http://127.0.0.1:{self.port}/_stcore/health").strip()
            if health != "ok":
                raise StackError(f"health says {health!r}")
            return "healthy (/_stcore/health ok)", {"health": health}
        if not self.port:
            raise StackError("metrics disabled (metrics_port = 0)")
        # Two scrapes one second apart: total and current rate, both from the component.
        first = scrape(self.port, self.spec.counter)
        t0 = time.monotonic()
        time.sleep(1.0)
        second = scrape(self.port, self.spec.counter)
        rate = (second - first) / (time.monotonic() - t0)
        figure, metrics = f"{second:,.0f} {self.spec.unit}, {rate:,.0f}/s", {"total": second, "per_s": rate}
        if self.name == "sim":
            figure, metrics = _sim_progress(self.port, figure, metrics)
        if self.name == "bridge":
            figure, metrics = _bridge_adoption(self.port, figure, metrics)
        return figure, metrics

    def status(self) -> ServiceStatus:
        pid = self.pid()
        if pid is None:
            return ServiceStatus(self.name, False, None, self.port or None, "down", url=self.url())
        try:
            figure, metrics = self.live()
            up = True
        except Exception as exc:
            figure, metrics, up = f"not answering: {exc}", {}, False
        return ServiceStatus(self.name, up, pid, self.port or None, figure, metrics, self.url())
