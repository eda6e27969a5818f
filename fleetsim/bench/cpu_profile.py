"""Where a stage's CPU goes inside its process tree: by thread (the JVM's compiler threads, Spark's
task threads, the driver's Python) or by process title (PostgreSQL's client backends, autovacuum,
checkpointer), from ``/proc``, between two snapshots.

A benchmark that misses a CPU target says which part of the stage spent it: a JVM still compiling
and a busy executor call for different fixes, and so do PostgreSQL's merges and its autovacuum.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

Snapshot = dict[int, tuple[str, float]]
"""Thread or process id -> (group name, CPU seconds used so far)."""

REAPED: Final = "exited children (reaped)"
"""The group of CPU spent by processes that ended between the snapshots (short-lived PostgreSQL
workers such as autovacuum's): the kernel adds it to their parent's ``cutime``/``cstime``."""
TOP: Final = 8


def _cpu_fields(stat: str) -> list[str]:
    return stat.rsplit(")", 1)[1].split()


def _tick() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` together; a process gone counts 0."""
    return sum(cpu for _, cpu in process_cpu(pids).values())


def thread_cpu(pids: Iterable[int]) -> Snapshot:
    """Every thread of ``pids``, by thread id, named by its kernel name with digits folded
    (``C2 CompilerThread0`` and ``1`` are one group; Spark renames a task thread per task, so
    deltas are taken per thread id and grouped by the name it has at the end)."""
    tick = _tick()
    out: Snapshot = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                stat = (t / "stat").read_text()
            except OSError:
                continue
            fields = _cpu_fields(stat)
            name = re.sub(r"\d+", "N", stat[stat.index("(") + 1 : stat.rindex(")")])
            out[int(t.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def fold_title(argv: list[str]) -> str:
    """A process's group name from its command line: a PostgreSQL process title up to its role
    and database (``postgres: fleetsim_write fleetsim``, ``postgres: autovacuum worker``), without
    the client address and state that change from moment to moment; otherwise the program name."""
    if not argv or not argv[0]:
        return "?"
    if len(argv) == 1 and ":" in argv[0]:  # a title set by the process itself
        words = argv[0].split()
        kept = [w for w in words[:3] if not re.search(r"\d+\.\d+|\(\d+\)|^\[", w)]
        return " ".join(kept) or words[0]
    prog = argv[0].rsplit("/", 1)[-1]
    return "postmaster" if prog == "postgres" else prog


def process_cpu(pids: Iterable[int], reaped_of: int | None = None) -> Snapshot:
    """Every process of ``pids`` by pid, named by :func:`fold_title`; with ``reaped_of``, that
    process's children that already ended are one more entry (key -1, :data:`REAPED`)."""
    tick = _tick()
    out: Snapshot = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = (
                Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
            )
        except OSError:
            continue
        fields = _cpu_fields(stat)
        out[pid] = (fold_title(argv), (int(fields[11]) + int(fields[12])) / tick)
        if pid == reaped_of:
            out[-1] = (REAPED, (int(fields[13]) + int(fields[14])) / tick)
    return out


def label_backends(snap: Snapshot, names: Mapping[int, str]) -> Snapshot:
    """``snap`` with each process named in ``names`` (a PostgreSQL backend's pid -> its
    ``application_name`` from ``pg_stat_activity``) grouped as ``"<title> [<name>]"``: the loader,
    the windowed flow's writer and the notifier share one role, so one process title."""
    return {k: (f"{name} [{names[k]}]" if names.get(k) else name, cpu) for k, (name, cpu) in snap.items()}


def cores_by_group(before: Snapshot, after: Snapshot, seconds: float, top: int = TOP) -> dict[str, float]:
    """The busiest groups between two snapshots, in cores (CPU seconds per second), busiest first.
    An id missing from ``before`` started in between: all its CPU counts."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    groups: dict[str, float] = {}
    for key, (name, cpu) in after.items():
        groups[name] = groups.get(name, 0.0) + cpu - before.get(key, (name, 0.0))[1]
    busiest = sorted(groups.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(used / seconds, 3) for name, used in busiest}
