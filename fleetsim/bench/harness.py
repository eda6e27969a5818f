"""Benchmark harness behind ``fleetsim bench`` / ``make bench``.

Every ``bench/bench_<name>.py`` in the repository exposes ``run(cfg, quick) -> dict``. The harness
starts one dedicated engine stack (Mosquitto, Kafka, PostgreSQL on free loopback ports, throw-away
run dir), runs each benchmark in its own child process with a time bound (so a hung benchmark
cannot stall the suite, and one benchmark's threads and sockets cannot skew the next), and writes
``bench/results/<timestamp>.json`` plus a refreshed ``BENCHMARKS.md``.

The child receives the configuration as ``FLEETSIM_<SECTION>__<KEY>`` variables in its own
environment (the same mechanism the CLI uses), so it loads and validates it exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.errors import FleetsimError

BENCH_RE = re.compile(r"^bench_([a-z0-9_]+)\.py$")

QUIET_LOAD: float = 1.5
"""Highest 1-minute load average (2 cores) at which a benchmark's figures count as measured: the
dedicated engines idle at well under 1; more means other work shares the machine."""


class BenchError(FleetsimError):
    """The benchmark suite could not run (no bench directory, unknown benchmark name...)."""


@dataclass(frozen=True, slots=True)
class BenchOutcome:
    """What one benchmark produced."""

    name: str
    status: str
    """``ok`` | ``failed`` | ``timeout``."""
    duration_s: float
    """Wall seconds the child process ran."""
    result: dict[str, Any]
    """The dict the benchmark's ``run()`` returned (empty unless ``ok``)."""
    error: str
    """Tail of the child's stderr when it did not finish ``ok``."""


_RUN_RE = re.compile(r"^def run\(", re.MULTILINE)


def discover(bench_dir: Path) -> dict[str, Path]:
    """``{name: path}`` of every suite member in ``bench_dir``, in name order: a
    ``bench_<name>.py`` that defines ``run(cfg, quick)`` (read, not imported). One without it is
    a standalone attribution tool run by hand (``bench_batch_cost.py``), not part of the suite."""
    if not bench_dir.is_dir():
        raise BenchError(f"no benchmark directory at {bench_dir}: run from the repository root")
    found = {}
    for path in sorted(bench_dir.iterdir()):
        m = BENCH_RE.match(path.name)
        if m and _RUN_RE.search(path.read_text(encoding="utf-8")):
            found[m.group(1)] = path
    return found


_TIMEOUT_RE = re.compile(r"^TIMEOUT_S\s*=\s*([0-9_.]+)", re.MULTILINE)


def declared_timeout(path: Path) -> float | None:
    """The ``TIMEOUT_S = <seconds>`` a benchmark module declares (read, not imported)."""
    m = _TIMEOUT_RE.search(path.read_text(encoding="utf-8"))
    return float(m.group(1).replace("_", "")) if m else None


def select(available: dict[str, Path], names: Sequence[str]) -> dict[str, Path]:
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BenchError(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    return {n: available[n] for n in names}


def machine_info() -> dict[str, Any]:
    """Facts about the machine that make figures comparable."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    java = ""
    try:
        java = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=20, check=False
        ).stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        java = "unavailable"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": java,
    }


def run_one(name: str, path: Path, cfg: FleetsimConfig, quick: bool, timeout_s: float) -> BenchOutcome:
    """Run one benchmark in a child process bounded by ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")}
        env.update(config_to_env(cfg))
        cmd = [sys.executable, "-m", "fleetsim.bench.child", str(path), str(out)]
        if quick:
            cmd.append("--quick")
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=env, stdout=None, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
            status = "ok" if proc.returncode == 0 and out.is_file() else "failed"
        except subprocess.TimeoutExpired:
            stderr = _end_group(proc)
            status = "timeout"
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the child's publishers and engines go with us.
            _end_group(proc)
            raise
        duration = time.monotonic() - started
        result = json.loads(out.read_text()) if status == "ok" else {}
        error = "" if status == "ok" else "\n".join((stderr or "").strip().splitlines()[-20:])
        return BenchOutcome(name, status, round(duration, 1), result, error)


def _end_group(proc: subprocess.Popen[str]) -> str:
    """Ends a benchmark child's whole process group (it may have spawned publishers or engines),
    politely first; returns its stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=15)[1] or ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[1] or ""


def wait_quiet(
    max_load: float,
    timeout_s: float,
    *,
    loadavg: Callable[[], float] = lambda: os.getloadavg()[0],
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = print,
) -> tuple[float, bool]:
    """Wait up to ``timeout_s`` for the 1-minute load average to fall to ``max_load`` (the last
    benchmark's own load decays in about a minute). Returns (load, quiet)."""
    deadline = time.monotonic() + timeout_s
    load = loadavg()
    said = False
    while load > max_load and time.monotonic() < deadline:
        if not said:
            report(f"  waiting for a quiet machine: load average {load:.2f} > {max_load}")
            said = True
        sleep(5.0)
        load = loadavg()
    return round(load, 2), load <= max_load


def write_results(results_dir: Path, payload: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def latest_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The newest outcome of every benchmark across the stored result files.

    A run on a quiet machine beats one on a busy machine, a full run beats a ``--quick`` one, and
    a finished run beats a failed one, whatever their age: neither a smoke check nor figures taken
    while other work loaded the machine may overwrite the published figures.
    """
    newest: dict[str, dict[str, Any]] = {}

    def rank(o: dict[str, Any]) -> tuple[int, int, int]:
        quiet = o.get("quiet", True)  # results from before the guard: judged by their load figure
        return (1 if quiet else 0, 0 if o.get("quick") else 1, 1 if o.get("status") == "ok" else 0)

    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        for name, outcome in data.get("benches", {}).items():
            entry = {
                **outcome,
                "file": path.name,
                "machine": data.get("machine", {}),
                "quick": data.get("quick"),
            }
            if name not in newest or rank(entry) >= rank(newest[name]):
                newest[name] = entry
    return newest
