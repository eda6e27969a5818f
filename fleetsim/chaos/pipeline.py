"""The pipeline under test: dedicated engines plus the bridge and the streaming job as children.

- :class:`Pipeline`: dedicated Mosquitto + Kafka + PostgreSQL (:func:`fleetsim.stack.dedicated`),
  with the bridge and the streaming job as child processes, each in its own process group so a
  fault can SIGKILL or SIGSTOP a component the way a crashed or frozen container behaves (the
  Spark JVM included).
- :func:`pipeline`: a context manager that starts all of it and stops everything on exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fleetsim.chaos import ChaosError
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.scrape import scrape
from fleetsim.stack.base import Service

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, *, what: str, interval_s: float = 0.2) -> T:
    """Poll ``condition`` until truthy (returned); :class:`ChaosError` naming ``what`` on timeout.
    An exception from ``condition`` propagates at once (a dead child stops the wait early)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ChaosError(f"timed out after {timeout_s:g} s waiting for {what}; last value {value!r}")
        time.sleep(interval_s)


class Child:
    """A ``fleetsim`` component as a child process in its own process group."""

    def __init__(self, name: str, argv: list[str], cfg: FleetsimConfig, log_file: Path) -> None:
        self.name, self.argv, self.cfg, self.log_file = name, argv, cfg, log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(self.cfg)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_file.open("ab") as out:
            out.write(f"\n===== start #{self.starts + 1} at {datetime.now(UTC).isoformat()} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleetsim.cli", *self.argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log_file.parent,  # no fleetsim.toml there: the environment is the config
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    def log_since_start(self) -> str:
        text = self.log_file.read_text(errors="replace")
        return text.rsplit("===== start #", 1)[-1]

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole process group (the Spark JVM with its driver); False if not running."""
        if not self.alive or self.proc is None:
            return False
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        return True

    def kill9(self) -> None:
        """SIGKILL the whole process group (the Spark JVM dies with its driver)."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)  # a stopped group dies at once either way
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        # SIGTERM to the leader only, as a container stop signals PID 1: signalling the whole
        # group also runs the Spark JVM's shutdown hooks under the driver's graceful stop, which
        # then fails with "Cannot call methods on a stopped SparkContext" and exits 1.
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused group cannot handle SIGTERM
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _metric(port: int, name: str) -> float | None:
    try:
        return scrape(port).value(name)
    except OSError:
        return None


@dataclass
class Pipeline:
    """Dedicated engines plus the bridge and the streaming job (see the module docstring)."""

    cfg: FleetsimConfig
    services: dict[str, Service]
    logs: Path
    bridge: Child = field(init=False)
    stream: Child = field(init=False)

    def __post_init__(self) -> None:
        self.bridge = Child("bridge", ["bridge"], self.cfg, self.logs / "bridge.log")
        self.stream = Child("stream", ["stream", "--no-ui"], self.cfg, self.logs / "stream.log")

    # -- bridge
    def start_bridge(self, timeout_s: float = 60.0) -> None:
        self.bridge.start()
        self.wait_bridge_ready(timeout_s)

    def wait_bridge_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if not self.bridge.alive:
                raise ChaosError(f"the bridge exited:\n{self.bridge.tail()}")
            return _metric(self.cfg.bridge.metrics_port, "fleetsim_bridge_state") == 0.0

        wait_until(ready, timeout_s, what="the bridge to connect to MQTT and Kafka")

    def bridge_metric(self, name: str) -> float | None:
        """One ``fleetsim_bridge_*`` value from the bridge's /metrics (None when it does not answer)."""
        return _metric(self.cfg.bridge.metrics_port, name)

    # -- streaming job
    def start_stream(self, timeout_s: float = 300.0) -> None:
        self.stream.start()
        self.wait_stream_ready(timeout_s)

    def wait_stream_ready(self, timeout_s: float = 300.0) -> None:
        def ready() -> bool:
            if not self.stream.alive:
                raise ChaosError(f"the streaming job exited:\n{self.stream.tail()}")
            return "fleetsim.stream: streaming from" in self.stream.log_since_start()

        # Spark takes ~10 s idle, much longer on a loaded 2-core machine.
        wait_until(ready, timeout_s, what="the streaming job's queries to start", interval_s=0.5)

    def stop(self) -> None:
        for child in (self.bridge, self.stream):
            child.stop()


@contextmanager
def pipeline(
    base: FleetsimConfig,
    tmp: Path,
    overrides: dict[str, Any] | None = None,
    *,
    adjust: Callable[[FleetsimConfig], Mapping[str, Any]] | None = None,
) -> Iterator[Pipeline]:
    """Dedicated engines + bridge + streaming job; everything stopped on exit.

    ``adjust`` is passed to :func:`fleetsim.stack.dedicated`: called with the engines' config
    (ports chosen) before they start, it returns overrides (e.g. a TCP proxy's port as
    ``kafka.advertised_port``). ``overrides`` apply to the engines as well (e.g.
    ``mqtt.max_queued_messages``).
    """
    # The stack (and its engine launchers) loads only when a pipeline is really started.
    from fleetsim.stack import dedicated
    from fleetsim.stack.kafka import ensure_topics

    engine_keys = {
        k: v for k, v in (overrides or {}).items() if k.split(".", 1)[0] in ("mqtt", "kafka", "postgres")
    }

    def adjusted(cfg: FleetsimConfig) -> Mapping[str, Any]:
        return {**engine_keys, **(adjust(cfg) if adjust is not None else {})}

    with dedicated(base, tmp / "stack", "mosquitto", "kafka", "postgres", adjust=adjusted) as (
        base_cfg,
        svcs,
    ):
        cfg = base_cfg.with_overrides(
            {
                "spark.checkpoint_dir": str(tmp / "checkpoints"),
                "spark.master": "local[2]",
                "spark.trigger_interval_s": 1.0,
                "spark.agg_trigger_interval_s": 5.0,  # the checks wait for windows and dead letters
                "spark.shuffle_partitions": 2,
                "bridge.client_id": f"rel-bridge-{tmp.name}",
                **(overrides or {}),
            }
        )
        ensure_topics(cfg)
        logs = tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        p = Pipeline(cfg, svcs, logs)
        try:
            # The job's JVM boots while the bridge connects: neither needs the other to start.
            p.stream.start()
            p.start_bridge()
            p.wait_stream_ready()
            yield p
        finally:
            p.stop()
