"""Process, port and file-permission helpers shared by the local-stack services.

Everything here is plain OS plumbing (spawn, pid files, signals, port probes, ownership); the
services decide what to run. Pid liveness is checked against ``/proc`` so a zombie or a recycled
pid never counts as "running".
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from fleetsim.kernel.errors import PortInUseError, StackError


def is_root() -> bool:
    return os.geteuid() == 0


def _reap(pid: int) -> None:
    # A service we spawned ourselves (tests, `up` in the same process) stays our child: reap it,
    # otherwise a dead broker lingers as a zombie and looks alive to kill(pid, 0).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: ``[state, ppid, pgrp, ...]`` (None when gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live(fields: list[str] | None) -> bool:
    return fields is not None and fields[0] not in ("Z", "X")


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` is a live (non-zombie) process."""
    if not pid or pid <= 0:
        return False
    _reap(pid)
    return _live(stat_fields(pid))


def group_alive(pgid: int) -> bool:
    """True when a live (non-zombie) process is left in process group ``pgid``.

    Not ``killpg(pgid, 0)``: a zombie stays in its group until its parent reaps it, and a
    component's leader is reaped by PID 1 once the ``fleetsim up`` that spawned it has exited,
    which in a container can take seconds (2 s per component in ``fleetsim down`` here)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields is not None and _live(fields) and int(fields[2]) == pgid:
                return True
    return False


def cmdline(pid: int) -> str:
    """The process's command line joined by spaces ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n", encoding="ascii")


def spawn(
    argv: Sequence[str],
    log_file: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a detached background process (own session) appending stdout+stderr to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {argv[0]}: {exc}") from exc


def terminate(pid: int, timeout_s: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig``, wait up to ``timeout_s`` for exit, then SIGKILL. True when it stopped gracefully."""
    if not pid_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_for(lambda: not pid_alive(pid), timeout_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10.0)
    return False


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or the deadline passes (exceptions count as false)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return True
        except Exception:  # noqa: S110 - readiness probes fail while a service starts
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT from our own previous run is not "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_free(port: int) -> bool:
    return not port_in_use(port)


def check_ports_free(ports: dict[str, int], grace_s: float = 10.0) -> None:
    """Raise :class:`PortInUseError` naming the config key to change for the first taken port,
    after ``grace_s`` (the previous instance of a restarted service may still be releasing it)."""
    for key, port in ports.items():
        if port and port_in_use(port) and not wait_for(partial(_port_free, port), grace_s, 0.2):
            section, _, name = key.partition(".")
            env = f"FLEETSIM_{section.upper()}__{name.upper()}"
            raise PortInUseError(
                f"port {port} ({key}) is taken by another process: stop that process, or pick another "
                f"port with --set {key}=<port> or {env}=<port>"
            )


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """``count`` distinct currently-free loopback ports (held open together so they differ).

    Chosen *below* the kernel's ephemeral range: a service port inside it can be taken by a
    client's own outgoing socket. A client reconnecting to a dead local broker may be given the
    broker's port as its source port and connect to itself (TCP self-connect), and the broker's
    restart then fails with "port taken" (seen in the Kafka kill -9 drill).
    """
    high = _ephemeral_low() - 1
    candidates = list(range(max(1024, high - 12_000), high + 1))
    random.SystemRandom().shuffle(candidates)
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:  # range exhausted: let the kernel choose
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp_connectable(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        data = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def error_summary(path: Path, causes: int = 8, lines: int = 15) -> str:
    """A JVM-heavy log (a Spark job's) for an error message: its first lines naming an exception
    or error, skipping stack frames (the root cause), then its last ``lines`` lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    first = [ln for ln in text if ("Exception" in ln or "Error" in ln) and not ln.lstrip().startswith("at ")]
    return "\n".join(["first errors:", *first[:causes], "log end:", *text[-lines:]])


def user_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise StackError(f"OS user {user!r} does not exist: run `make setup`") from exc
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` (recursively) to ``user`` (used when running as root)."""
    uid, gid = user_ids(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def grant_traverse(path: Path) -> None:
    """Let other OS users (postgres, mosquitto) reach ``path``: add o+x to every ancestor we own.

    Only execute (search) permission is added, never read: the service users can walk to their own
    directories but cannot list ours. Needed because e.g. pytest's tmp root is mode 0700.
    """
    me = os.geteuid()
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_mode & stat.S_IXOTH or st.st_uid != me:
            continue
        os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def run_checked(argv: Sequence[str], what: str, timeout_s: float = 120.0, **kw: object) -> str:
    """Run a short command; raise :class:`StackError` with its output when it fails."""
    try:
        proc = subprocess.run(  # noqa: PLW1510 - checked below with a better message
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            **kw,  # type: ignore[call-overload]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip().splitlines()[-10:]
        raise StackError(f"{what} failed (exit {proc.returncode}): " + " | ".join(out))
    return str(proc.stdout)
