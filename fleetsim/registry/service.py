"""The operations behind ``fleetsim device ...``: registry rows and MQTT identities kept in step.

Ordering rule: the database row is written in a transaction that commits only after the broker
identity change succeeded, and an identity created for a row that then fails to commit is removed
again, so neither side is left with half a device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import RegistryError
from fleetsim.registry import identity, store
from fleetsim.registry.model import DeviceRecord, Endpoint, validate_new_device
from fleetsim.stack import tls

log = logging.getLogger("fleetsim.registry")


@dataclass(frozen=True, slots=True)
class Onboarded:
    """Result of ``add`` / ``rotate`` / ``enable``."""

    device: DeviceRecord
    """The registry row."""
    password: str | None
    """New clear password to show once (None when existing credentials were restored)."""
    broker_reloaded: bool
    """True when a running broker applied the change immediately (SIGHUP)."""


@contextmanager
def connect(cfg: FleetsimConfig) -> Iterator[Any]:
    """A writer connection; one transaction committed on success, rolled back on error."""
    try:
        conn = pg_connect(cfg, "writer")
    except Exception as exc:
        raise RegistryError(
            f"cannot reach the registry database at {cfg.postgres.host}:{cfg.postgres.port} "
            f"(is the stack up? `fleetsim status`): {exc}"
        ) from exc
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def endpoints(cfg: FleetsimConfig) -> list[Endpoint]:
    """Where devices connect: the loopback plain listener, plus the TLS listener when it is on."""
    out = [Endpoint(cfg.mqtt.host, cfg.mqtt.port, tls=False)]
    listener = tls.configured_listener(cfg)
    if listener is not None:
        addr, port = listener
        out.append(Endpoint(tls.public_host(cfg, addr), port, tls=True, ca_file=str(tls.files(cfg).ca_cert)))
    return out


def add_device(cfg: FleetsimConfig, device: DeviceRecord) -> Onboarded:
    """Register a real device and create its MQTT identity (password returned once)."""
    with connect(cfg) as conn:
        store.insert_device(conn, device)
        try:
            change = identity.issue(cfg, device.device_id)
        except Exception as exc:
            with suppress(Exception):
                identity.remove(cfg, device.device_id)
            raise RegistryError(f"could not create the MQTT identity of {device.device_id!r}: {exc}") from exc
        try:
            conn.commit()
        except Exception:
            identity.remove(cfg, device.device_id)
            raise
        row = store.require_device(conn, device.device_id)
    return Onboarded(row, change.password, change.broker_reloaded)


def list_devices(cfg: FleetsimConfig, **filters: Any) -> list[DeviceRecord]:
    with connect(cfg) as conn:
        return store.list_devices(conn, **filters)


def show_device(cfg: FleetsimConfig, device_id: str) -> tuple[DeviceRecord, bool]:
    """The registry row and whether the broker holds an active identity for it."""
    with connect(cfg) as conn:
        device = store.require_device(conn, device_id)
    return device, identity.has_identity(cfg, device_id)


def disable_device(cfg: FleetsimConfig, device_id: str) -> bool:
    """Disable the device and revoke its credentials at once; True when the broker reloaded.

    Mosquitto re-checks connected clients' credentials on reload, so a live session of the
    device is disconnected by the same SIGHUP (see docs/real-sensors.md for the measurement).
    """
    with connect(cfg) as conn:
        store.set_enabled(conn, device_id, False)
        change = identity.revoke(cfg, device_id)
    return change.broker_reloaded


def enable_device(cfg: FleetsimConfig, device_id: str) -> Onboarded:
    """Re-enable; restores the parked credentials of a real device (or issues new ones)."""
    with connect(cfg) as conn:
        device = store.require_device(conn, device_id)
        store.set_enabled(conn, device_id, True)
        password = None
        reloaded = False
        if device.kind == "real":
            restored = identity.restore(cfg, device_id)
            if restored is not None:
                reloaded = restored.broker_reloaded
            elif not identity.has_identity(cfg, device_id):
                change = identity.issue(cfg, device_id)
                password, reloaded = change.password, change.broker_reloaded
        row = store.require_device(conn, device_id)
    return Onboarded(row, password, reloaded)


def rotate_credentials(cfg: FleetsimConfig, device_id: str) -> Onboarded:
    """A new password for an enabled device; the old one stops working at once."""
    with connect(cfg) as conn:
        device = store.require_device(conn, device_id)
    if not device.enabled:
        raise RegistryError(f"device {device_id!r} is disabled: `fleetsim device enable {device_id}` first")
    if device.kind != "real":
        raise RegistryError(
            f"device {device_id!r} is simulated: it publishes with the simulator's identity, "
            "it has no credentials of its own"
        )
    change = identity.issue(cfg, device_id)
    return Onboarded(device, change.password, change.broker_reloaded)


def place_device(
    cfg: FleetsimConfig, device_id: str, *, site: str | None, lat: float, lon: float
) -> DeviceRecord:
    """Set the registered location (and optionally site) of a device, e.g. an auto-registered one."""
    validate_new_device(cfg, device_id, site=site, lat=lat, lon=lon)
    with connect(cfg) as conn:
        store.place_device(conn, device_id, site=site, lat=lat, lon=lon)
        return store.require_device(conn, device_id)
