"""What every local-stack service has in common: paths, status record, start/stop skeleton."""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import MissingDependencyError, StackError
from fleetsim.stack import process

log = logging.getLogger("fleetsim.stack")


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``fleetsim status``."""

    name: str
    """Component name (``mosquitto``, ``kafka``, ...)."""
    up: bool
    """True when the process is alive (and, for services, answered a live query)."""
    pid: int | None
    """OS process id, when running."""
    port: int | None
    """Main listening port (TCP, loopback)."""
    figure: str
    """Live figure measured from the component (e.g. ``12 clients, 4031 msgs received``)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The same figure as numbers (for ``status --json`` and tests)."""
    url: str = ""
    """Connection URL with the user name, never the password."""


def logs_dir(cfg: FleetsimConfig) -> Path:
    return cfg.run_dir / "logs"


def pids_dir(cfg: FleetsimConfig) -> Path:
    return cfg.run_dir / "pids"


def require_binary(name: str, package: str) -> str:
    """Absolute path of ``name`` or a :class:`MissingDependencyError` saying to run setup."""
    path = shutil.which(name)
    if path is None:
        for extra in ("/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin"):
            candidate = Path(extra) / name
            if candidate.is_file():
                return str(candidate)
        raise MissingDependencyError(f"`{name}` not found (Debian package {package}): run `make setup`")
    return path


class Service(ABC):
    """A native service with a pid file and a log under the run directory.

    ``start()`` is idempotent (already running = no-op), refuses ports taken by other processes
    with :class:`PortInUseError`, and on a failed readiness check stops what it started before
    raising, so nothing is left half-started.
    """

    name: str = ""

    def __init__(self, cfg: FleetsimConfig) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------ paths
    @property
    def home(self) -> Path:
        """This service's state directory under the run dir."""
        return self.cfg.run_dir / self.name

    @property
    def log_file(self) -> Path:
        return logs_dir(self.cfg) / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return pids_dir(self.cfg) / f"{self.name}.pid"

    # ------------------------------------------------------------------ to implement
    @property
    @abstractmethod
    def port(self) -> int: ...

    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every port the service binds, keyed by the config key that sets it."""

    @abstractmethod
    def check_dependencies(self) -> None:
        """Raise :class:`MissingDependencyError` when a binary or jar is missing."""

    @abstractmethod
    def prepare(self) -> None:
        """Write config files, create/format data directories (idempotent)."""

    @abstractmethod
    def launch(self) -> int:
        """Start the process; return its pid."""

    @abstractmethod
    def ready(self) -> bool:
        """One readiness probe (an authenticated request that must succeed)."""

    def after_ready(self) -> None:  # noqa: B027 - optional hook, most services need none
        """Post-start set-up (topics, roles, migrations). Idempotent."""

    @abstractmethod
    def live(self) -> tuple[str, dict[str, Any]]:
        """Measure the live figure from the running service."""

    def url(self) -> str:
        return ""

    # ------------------------------------------------------------------ lifecycle
    def marker(self) -> str:
        """A string in the process's command line that identifies OUR instance (its run dir)."""
        return str(self.home)

    def pid(self) -> int | None:
        pid = process.read_pid(self.pid_file)
        if pid and process.pid_alive(pid) and self.marker() in process.cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.is_running():
            log.info("%s already running (pid %s)", self.name, self.pid())
            self.after_ready()
            return
        self.check_dependencies()
        process.check_ports_free(self.ports(), self.cfg.stack.port_grace_s)
        self.prepare()
        log.info("starting %s on 127.0.0.1:%d", self.name, self.port)
        pid = self.launch()
        process.write_pid(self.pid_file, pid)
        timeout = self.cfg.stack.start_timeout_s
        exited: list[bool] = []

        def probe() -> bool:
            if not process.pid_alive(pid):
                exited.append(True)
                return True  # stop polling: it died
            return self.ready()

        ok = process.wait_for(probe, timeout, 0.2) and not exited
        if not ok:
            alive = process.pid_alive(pid)
            self._kill_failed(pid)
            why = f"was not ready within {timeout:.0f}s" if alive else "exited"
            last = process.tail(self.log_file, 1).strip() or "no output"
            raise StackError(f"{self.name} {why} (last log line: {last}); full log: {self.log_file}")
        try:
            self.after_ready()
        except Exception:
            self.stop()
            raise
        log.info("%s ready (pid %d)", self.name, pid)

    def _kill_failed(self, pid: int) -> None:
        process.terminate(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)

    def stop(self) -> bool:
        """Stop gracefully (SIGTERM, then SIGKILL after ``stop_timeout_s``). True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        log.info("stopping %s (pid %d)", self.name, pid)
        graceful = process.terminate(pid, self.cfg.stack.stop_timeout_s)
        if not graceful:
            log.warning(
                "%s did not stop within %.0fs and was killed", self.name, self.cfg.stack.stop_timeout_s
            )
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        if pid is None:
            return ServiceStatus(self.name, False, None, self.port, "down", url=self.url())
        try:
            figure, metrics = self.live()
            up = True
        except Exception as exc:
            # The process exists but does not answer: report that, never a made-up "running".
            figure, metrics, up = f"not answering: {exc}", {}, False
        return ServiceStatus(self.name, up, pid, self.port, figure, metrics, self.url())
