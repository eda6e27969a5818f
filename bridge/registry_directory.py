"""The bridge's view of the registry: which ids may publish, refreshed in the background.

Implements the bridge's :class:`fleetsim.bridge.directory.DeviceDirectory` hook: the bridge asks
:meth:`RegistryDirectory.status` once per message, on its hot path: a dict look-up, no I/O.
A background thread keeps the copy current: it ``LISTEN``s on the ``fleetsim_devices`` channel
(the V003 trigger notifies after every change to ``devices``) and reloads at once, and reloads
every ``bridge.registry_refresh_s`` seconds anyway as a backstop. With
``bridge.unknown_device = "accept"`` the bridge forwards unknown ids and calls
:meth:`note_unknown`; the thread registers them (kind ``real``, ``placed = false``) in batches
with the writer role, so they are never stored without a registry row.

Failure policy: a failed reload keeps the last good copy (a stale registry is better than
dead-lettering the whole fleet) and is retried with back-off; the first load must succeed before
:meth:`start` returns, so the bridge never judges readings against an empty registry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

from fleetsim.bridge.directory import DeviceStatus
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import RegistryError

log = logging.getLogger("fleetsim.bridge.registry_directory")

AUTO_NAME = "auto-registered"
"""``name`` of a device row the bridge registered itself (the registry's seeding prunes only those)."""

NOTIFY_CHANNEL = "fleetsim_devices"
"""``LISTEN`` channel notified (migration V003's trigger) after every change to ``devices``."""

MAX_BACKOFF_S = 30.0
"""Longest wait between reconnection attempts after the registry became unreachable."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the bridge needs to know about one registered device."""

    enabled: bool
    """False: the device was disabled; its readings are dead-lettered as ``unknown_device``."""
    site: str | None
    """Registered site."""
    lat: float | None
    """Registered latitude in degrees (None: not placed)."""
    lon: float | None
    """Registered longitude in degrees."""


Snapshot = dict[str, DeviceInfo]
Loader = Callable[[], Snapshot]
Registrar = Callable[[list[str]], int]


def snapshot_from_rows(rows: Iterable[tuple[str, bool, str | None, float | None, float | None]]) -> Snapshot:
    return {r[0]: DeviceInfo(bool(r[1]), r[2], r[3], r[4]) for r in rows}


class RegistryDirectory:
    """Periodically refreshed set of registered ids (see the module docstring)."""

    def __init__(
        self,
        cfg: FleetsimConfig,
        *,
        refresh_s: float | None = None,
        loader: Loader | None = None,
        registrar: Registrar | None = None,
        listen: bool = True,
    ) -> None:
        self._cfg = cfg
        self.refresh_s = refresh_s or cfg.bridge.registry_refresh_s
        self._loader = loader
        self._registrar = registrar
        self._listen = listen and loader is None
        self._snapshot: Snapshot = {}
        # ids admitted in accept mode and not yet written; swapped out wholesale by the thread.
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.loaded_at: float | None = None
        """Monotonic time of the last successful load (None before the first)."""
        self.loads = 0
        """Successful loads."""
        self.failures = 0
        """Failed loads or registrations."""
        self.auto_registered = 0
        """Unknown ids registered as unplaced (accept mode)."""
        self._metrics: _Metrics | None = None

    # ------------------------------------------------------------------ hot path (no I/O)
    def status(self, device_id: str) -> DeviceStatus:
        """Enabled, disabled or unknown, from memory (the bridge's ``RegistryDirectory`` hook)."""
        info = self._snapshot.get(device_id)
        if info is None:
            return DeviceStatus.UNKNOWN
        return DeviceStatus.ENABLED if info.enabled else DeviceStatus.DISABLED

    def note_unknown(self, device_id: str) -> None:
        """The bridge accepted an unknown id (``unknown_device = accept``): queue its registration
        as an unplaced device. Known from now on, so each id is queued once."""
        with self._pending_lock:
            self._pending.add(device_id)
        self._snapshot[device_id] = DeviceInfo(True, None, None, None)

    def location(self, device_id: str) -> DeviceInfo | None:
        """The registered site and position of ``device_id`` (None when unknown)."""
        return self._snapshot.get(device_id)

    @property
    def size(self) -> int:
        """Devices in the current copy. (Deliberately no ``__len__``: an empty registry must not
        make the directory falsy, or ``directory or AcceptAll()`` would silently drop the check.)"""
        return len(self._snapshot)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 30.0, *, required: bool = True) -> None:
        """Load the registry (retrying until ``timeout_s``), then refresh in the background.

        ``required=False`` (accept mode) starts the refresher even when the first load failed:
        every id then looks unknown, is forwarded and queued for registration until the registry
        answers. ``required=True`` raises :class:`RegistryError` instead.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.2
        while True:
            try:
                self.refresh()
                break
            except Exception as exc:
                self._close_conn()
                if time.monotonic() + delay > deadline:
                    if required:
                        raise RegistryError(f"cannot load the device registry: {exc}") from exc
                    log.warning("device registry unavailable (%s): accepting all ids, retrying", exc)
                    break
                log.warning("device registry not reachable yet (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._thread = threading.Thread(target=self._run, name="device-directory", daemon=True)
        self._thread.start()

    def attach_metrics(self, metrics_registry: CollectorRegistry) -> None:
        """Export the directory's figures on a prometheus ``CollectorRegistry`` (the bridge's)."""
        self._metrics = _Metrics(metrics_registry)
        self._metrics.devices.set(len(self._snapshot))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the refresher after flushing pending auto-registrations (best effort)."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout_s)
        with contextlib.suppress(Exception):
            self.flush_pending()
        self._close_conn()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> int:
        """Reload the whole registry now; returns the number of devices."""
        snap = self._loader() if self._loader is not None else self._load_from_db()
        # Ids admitted (accept mode) but not yet written must stay admitted across the swap.
        with self._pending_lock:
            for device_id in self._pending:
                snap.setdefault(device_id, DeviceInfo(True, None, None, None))
        self._snapshot = snap  # one reference swap: readers see the old or the new dict, whole
        self.loaded_at = time.monotonic()
        self.loads += 1
        if self._metrics:
            self._metrics.devices.set(len(snap))
            self._metrics.loads.inc()
        return len(snap)

    def flush_pending(self) -> int:
        """Register the ids admitted in accept mode; returns how many rows were created."""
        with self._pending_lock:
            batch, self._pending = self._pending, set()
        if not batch:
            return 0
        try:
            created = (self._registrar or self._register_in_db)(sorted(batch))
        except Exception:
            with self._pending_lock:
                self._pending |= batch
            raise
        self.auto_registered += created
        if self._metrics:
            self._metrics.auto_registered.inc(created)
        if created:
            log.info("auto-registered %d unknown device(s) as unplaced", created)
        return created

    def _run(self) -> None:
        backoff = 1.0
        next_full = time.monotonic() + self.refresh_s
        while not self._stop.is_set():
            try:
                notified = self._wait(min(1.0, max(0.0, next_full - time.monotonic())))
                if self._stop.is_set():
                    break
                self.flush_pending()
                if notified or self.loaded_at is None or time.monotonic() >= next_full:
                    self.refresh()
                    next_full = time.monotonic() + self.refresh_s
                backoff = 1.0
            except Exception as exc:
                self.failures += 1
                if self._metrics:
                    self._metrics.failures.inc()
                log.warning("device registry refresh failed (keeping the last copy): %s", exc)
                self._close_conn()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _wait(self, timeout_s: float) -> bool:
        """Sleep until a NOTIFY, a stop request or the timeout; True when notified."""
        conn = self._connection() if self._listen else None
        fds = [self._wake_r] + ([conn] if conn is not None else [])
        ready, _, _ = select.select(fds, [], [], timeout_s)
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 64)
        if conn is None or conn not in ready:
            return False
        conn.poll()
        got = bool(conn.notifies)
        conn.notifies.clear()
        return got

    # ------------------------------------------------------------------ database
    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = pg_connect(self._cfg, "reader", application_name="fleetsim-bridge-directory")
            conn.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
            if self._listen:
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._conn = conn
        return self._conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _load_from_db(self) -> Snapshot:

        return snapshot_from_rows(directory_rows(self._connection()))

    def _register_in_db(self, ids: list[str]) -> int:
        conn = pg_connect(self._cfg, "writer", application_name="fleetsim-bridge-directory")
        try:
            with conn:
                return register_unplaced(conn, ids)
        finally:
            conn.close()


def for_bridge(cfg: FleetsimConfig) -> RegistryDirectory | None:
    """The started directory ``fleetsim bridge`` plugs into its hook (None: ``use_registry`` off)."""
    if not cfg.bridge.use_registry:
        log.info("bridge.use_registry is off: every device id is accepted")
        return None
    directory = RegistryDirectory(cfg)
    strict = cfg.bridge.unknown_device == "deadletter"
    # Accept mode can forward without the registry: do not hold the bridge back for long.
    directory.start(
        cfg.stack.start_timeout_s if strict else min(5.0, cfg.stack.start_timeout_s), required=strict
    )
    log.info(
        "device registry loaded: %d devices (unknown ids: %s)", directory.size, cfg.bridge.unknown_device
    )
    return directory


class _Metrics:
    def __init__(self, metrics_registry: CollectorRegistry) -> None:
        r = metrics_registry
        self.devices = Gauge("fleetsim_registry_devices", "Devices in the bridge's registry copy", registry=r)
        self.loads = Counter("fleetsim_registry_loads", "Successful registry reloads", registry=r)
        self.failures = Counter(
            "fleetsim_registry_failures", "Failed registry reloads or registrations", registry=r
        )
        self.auto_registered = Counter(
            "fleetsim_registry_auto_registered", "Unknown ids registered as unplaced", registry=r
        )


def directory_rows(conn: Any) -> list[tuple[str, bool, str | None, float | None, float | None]]:
    """``(device_id, enabled, site, lat, lon)`` of every device, for the bridge's directory."""
    with conn.cursor() as cur:
        cur.execute("SELECT device_id, enabled, site, lat, lon FROM devices")
        return list(cur.fetchall())


def register_unplaced(conn: Any, device_ids: Iterable[str]) -> int:
    """Auto-register unknown ids (``unknown_device = accept``): kind real, ``placed = false``.
    Existing ids are left alone. Returns how many rows were created."""
    ids = sorted(set(device_ids))
    if not ids:
        return 0
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO devices (device_id, kind, placed, name)
               SELECT id, 'real', false, %s FROM unnest(%s::text[]) AS t(id)
               ON CONFLICT (device_id) DO NOTHING""",
            (AUTO_NAME, ids),
        )
        return int(cur.rowcount)
