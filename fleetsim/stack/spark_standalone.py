"""A Spark standalone cluster (one master, one worker) from the pyspark distribution in the venv.

The same ``fleetsim stream --master spark://HOST:PORT`` that runs against a real cluster (or the
compose stack's ``spark-master``) runs against this one, so the cluster code path -- executors in
other JVMs, jars shipped by the driver, a shared checkpoint directory -- is exercised on one
machine without a Spark download: pyspark's wheel carries ``bin/spark-class`` and every Spark jar.

Everything binds ``127.0.0.1`` (``SPARK_LOCAL_IP``), the REST submission server stays off, logs
and the worker's scratch space live under ``<run_dir>/spark-standalone``. Sizes are small on
purpose (1 core, 1 GiB for executors, 256 MiB per daemon): the machine is shared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from fleetsim.kernel.errors import MissingDependencyError, StackError
from fleetsim.stack import process
from fleetsim.stack.base import require_binary

log = logging.getLogger("fleetsim.stack.spark")

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark package."""
    try:  # lazy: pyspark costs ~0.2 s to import; only Spark commands need its path
        import pyspark
    except ImportError as exc:  # pragma: no cover - pyspark is a hard dependency
        raise MissingDependencyError("pyspark is not installed: run `make setup`") from exc
    home = Path(pyspark.__file__).resolve().parent
    if not (home / "bin" / "spark-class").is_file():
        raise MissingDependencyError(f"{home} has no bin/spark-class: reinstall pyspark (`make setup`)")
    return home


def master_state(ui_url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """A standalone master's ``/json/`` document (status, workers, active and completed apps)."""
    url = f"{ui_url}/json/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - fixed http URL
            data: dict[str, Any] = json.load(resp)
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        raise StackError(f"Spark master UI {url} did not answer: {exc}") from exc
    return data


@dataclass(frozen=True)
class ClusterPorts:
    """Every port the cluster binds on the loopback interface."""

    master: int
    """Master RPC port (``spark://127.0.0.1:<master>``)."""
    master_ui: int
    """Master web UI port (also serves ``/json/``)."""
    worker: int
    """Worker RPC port."""
    worker_ui: int
    """Worker web UI port."""

    @classmethod
    def free(cls) -> ClusterPorts:
        return cls(*process.free_ports(4))


@dataclass(frozen=True)
class WorkerSize:
    """Resources the worker offers to applications."""

    cores: int = 1
    """CPU cores offered to executors."""
    memory: str = "1g"
    """Memory offered to executors (JVM size string)."""
    daemon_memory: str = "256m"
    """Heap of the master and worker daemons themselves (``SPARK_DAEMON_MEMORY``)."""


class SparkStandalone:
    """Start/stop a one-master, one-worker standalone cluster; usable as a context manager."""

    def __init__(
        self,
        run_dir: Path,
        *,
        host: str = "127.0.0.1",
        ports: ClusterPorts | None = None,
        size: WorkerSize | None = None,
        python: str = sys.executable,
    ) -> None:
        self.home = Path(run_dir).resolve() / "spark-standalone"
        self.host = host
        self.ports = ports or ClusterPorts.free()
        self.size = size or WorkerSize()
        # Executors start Python workers with the driver's interpreter path; the worker's own
        # PYSPARK_PYTHON is the fallback, so it must be the venv's (same minor version as the driver).
        self.python = python
        self._children: set[int] = set()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ addresses and paths
    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.ports.master}"

    @property
    def master_ui_url(self) -> str:
        return f"http://{self.host}:{self.ports.master_ui}"

    @property
    def worker_ui_url(self) -> str:
        return f"http://{self.host}:{self.ports.worker_ui}"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    def _pid_file(self, role: str) -> Path:
        return self.home / "pids" / f"{role}.pid"

    def log_file(self, role: str) -> Path:
        return self.logs_dir / f"{role}.log"

    # ------------------------------------------------------------------ process plumbing
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(spark_home()),
            SPARK_CONF_DIR=str(self.home / "conf"),  # empty on purpose: no stray spark-defaults.conf
            SPARK_LOCAL_IP=self.host,  # RPC and web UIs bind here, not on 0.0.0.0
            SPARK_PUBLIC_DNS=self.host,  # links in the UIs point at an address that answers
            SPARK_DAEMON_MEMORY=self.size.daemon_memory,
            SPARK_WORKER_DIR=str(self.work_dir),
            PYSPARK_PYTHON=self.python,
        )
        return env

    @property
    def properties_file(self) -> Path:
        """Daemon settings; its path in argv also marks OUR daemons in /proc/<pid>/cmdline."""
        return self.home / "conf" / "spark-daemons.conf"

    def _write_properties(self) -> None:
        self.properties_file.write_text(
            "# generated by fleetsim.stack.spark_standalone\n"
            "spark.master.rest.enabled false\n"  # no unauthenticated REST submission endpoint
            "spark.worker.cleanup.enabled true\n"  # finished apps' scratch dirs are removed
            "spark.ui.killEnabled false\n",
            encoding="utf-8",
        )

    def _pid(self, role: str) -> int | None:
        """Pid of our live ``role`` daemon: the handle we spawned, else a pid file naming our daemon."""
        proc = self._procs.get(role)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        pid = process.read_pid(self._pid_file(role))
        if pid and process.pid_alive(pid) and str(self.properties_file) in process.cmdline(pid):
            return pid
        return None

    @staticmethod
    def _spark_class(main_class: str) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), main_class]

    def _launch(self, role: str, argv: list[str]) -> int:
        proc = process.spawn(argv, self.log_file(role), env=self._env(), cwd=self.home)
        self._procs[role] = proc
        process.write_pid(self._pid_file(role), proc.pid)
        log.info("spark %s started (pid %d), log %s", role, proc.pid, self.log_file(role))
        return proc.pid

    # ------------------------------------------------------------------ queries
    def master_state(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """The master's ``/json/`` document (status, workers, active and completed apps)."""
        return master_state(self.master_ui_url, timeout_s)

    def alive_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.master_state().get("workers", []) if w.get("state") == "ALIVE"]

    def active_apps(self) -> list[dict[str, Any]]:
        return list(self.master_state().get("activeapps", []))

    def is_running(self) -> bool:
        return self._pid("master") is not None and self._pid("worker") is not None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 60.0) -> SparkStandalone:
        """Start master then worker; return once the worker is registered ALIVE with the master.

        On failure everything started here is stopped before the :class:`StackError` is raised.
        """
        if self.is_running():
            return self
        require_binary("java", "openjdk-17-jre-headless")
        process.check_ports_free(
            {
                "spark-standalone.master": self.ports.master,
                "spark-standalone.master_ui": self.ports.master_ui,
                "spark-standalone.worker": self.ports.worker,
                "spark-standalone.worker_ui": self.ports.worker_ui,
            }
        )
        for d in (self.logs_dir, self.work_dir, self.home / "conf", self.home / "pids"):
            d.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        common = ["--properties-file", str(self.properties_file), "--host", self.host]
        try:
            self._launch(
                "master",
                [*self._spark_class(MASTER_CLASS), *common, "--port", str(self.ports.master),
                 "--webui-port", str(self.ports.master_ui)],
            )  # fmt: skip
            self._wait(lambda: self.master_state().get("status") == "ALIVE", "master", timeout_s)
            self._launch(
                "worker",
                [*self._spark_class(WORKER_CLASS), *common, "--port", str(self.ports.worker),
                 "--webui-port", str(self.ports.worker_ui), "--cores", str(self.size.cores),
                 "--memory", self.size.memory, "--work-dir", str(self.work_dir), self.master_url],
            )  # fmt: skip
            self._wait(lambda: bool(self.alive_workers()), "worker", timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("spark standalone ready: %s (UI %s)", self.master_url, self.master_ui_url)
        return self

    def _wait(self, ready: Callable[[], bool], role: str, timeout_s: float) -> None:
        exited = False

        def probe() -> bool:
            nonlocal exited
            if self._pid(role) is None:
                exited = True
                return True  # stop polling: a dead daemon never becomes ready
            try:
                return ready()
            except StackError:
                return False

        ok = process.wait_for(probe, timeout_s, 0.3)
        if exited or not ok:
            why = "exited" if exited else f"was not ready within {timeout_s:.0f}s"
            raise StackError(
                f"spark {role} {why}; see {self.log_file(role)}:\n" + process.tail(self.log_file(role))
            )

    def _child_pids(self, parent: int) -> set[int]:
        """Executor JVMs the worker launched (so none outlives the cluster)."""
        kids: set[int] = set()
        for entry in os.listdir("/proc"):
            fields = process.stat_fields(entry) if entry.isdigit() else None
            if fields is not None and int(fields[1]) == parent:
                kids.add(int(entry))
        return kids

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop worker (and its executors) then master; gracefully first, SIGKILL after the timeout."""
        worker = self._pid("worker")
        if worker is not None:
            self._children |= self._child_pids(worker)
            process.terminate(worker, timeout_s)
            self._reap("worker")
        for child in sorted(self._children):
            process.terminate(child, 10.0)
        self._children.clear()
        master = self._pid("master")
        if master is not None:
            process.terminate(master, timeout_s)
            self._reap("master")
        for role in ("worker", "master"):
            self._pid_file(role).unlink(missing_ok=True)

    def _reap(self, role: str) -> None:
        proc = self._procs.pop(role, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)

    def __enter__(self) -> SparkStandalone:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
