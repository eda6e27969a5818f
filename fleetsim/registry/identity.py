"""Per-device MQTT identities: issue, revoke, restore, rotate. Only hashes are ever written.

The broker side (password file format, pattern ACL ``sensors/%u/#`` + ``tele/%u/#``, SIGHUP
reload) belongs to :mod:`fleetsim.stack.mosquitto`; this module decides *when* a device has an
identity. A disabled device's hash is parked in ``<run_dir>/registry/disabled_passwd`` (0600,
not read by the broker) so ``enable`` can restore the same credentials without re-flashing the
device; ``rotate-credentials`` is the way to invalidate them.

Mosquitto 2.0.11 re-checks every connected client's credentials on SIGHUP and disconnects
those that no longer pass (measured; see docs/real-sensors.md), so revoking also drops a live
session of the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack import mosquitto
from fleetsim.stack.secrets import new_password


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """Outcome of an identity operation."""

    password: str | None
    """The new clear password (issue/rotate only); shown once, never stored."""
    broker_reloaded: bool
    """True when a running broker was signalled to reload its password file."""


def disabled_file(cfg: FleetsimConfig) -> Path:
    return cfg.run_dir / "registry" / "disabled_passwd"


def _active_file(cfg: FleetsimConfig) -> Path:
    return mosquitto.Mosquitto(cfg).device_passwd_file


def has_identity(cfg: FleetsimConfig, device_id: str) -> bool:
    """True when the broker would accept this device's credentials (after a reload)."""
    return device_id in mosquitto.read_device_passwd(_active_file(cfg))


def _write_hashes(path: Path, hashes: dict[str, str], *, private_dir: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{d}:{h}\n" for d, h in sorted(hashes.items())))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _reload(cfg: FleetsimConfig) -> bool:
    return mosquitto.reload_identities(cfg)


def issue(cfg: FleetsimConfig, device_id: str) -> IdentityChange:
    """Create (or replace) the device's identity with a fresh random password and reload the
    broker. Replacing is rotation: a session using the old password is dropped by the reload."""
    password = new_password()
    mosquitto.set_device_identity(cfg, device_id, password)
    _drop_parked(cfg, device_id)
    return IdentityChange(password, _reload(cfg))


def remove(cfg: FleetsimConfig, device_id: str) -> bool:
    """Forget the identity entirely (active or parked), e.g. to undo a failed ``add``."""
    mosquitto.remove_device_identity(cfg, device_id)
    _drop_parked(cfg, device_id)
    return _reload(cfg)


def revoke(cfg: FleetsimConfig, device_id: str) -> IdentityChange:
    """Remove the identity from the broker's password file (parking its hash) and reload."""
    active = mosquitto.read_device_passwd(_active_file(cfg))
    hashed = active.get(device_id)
    if hashed is not None:
        parked = mosquitto.read_device_passwd(disabled_file(cfg))
        parked[device_id] = hashed
        _write_hashes(disabled_file(cfg), parked, private_dir=True)
        mosquitto.remove_device_identity(cfg, device_id)
    return IdentityChange(None, _reload(cfg))


def restore(cfg: FleetsimConfig, device_id: str) -> IdentityChange | None:
    """Put a parked identity back into the broker; None when there was none to restore."""
    parked = mosquitto.read_device_passwd(disabled_file(cfg))
    hashed = parked.pop(device_id, None)
    if hashed is None:
        return None
    active = mosquitto.read_device_passwd(_active_file(cfg))
    active[device_id] = hashed
    _write_active(cfg, active)
    _write_hashes(disabled_file(cfg), parked, private_dir=True)
    return IdentityChange(None, _reload(cfg))


def _write_active(cfg: FleetsimConfig, hashes: dict[str, str]) -> None:
    # Same file format and mode as the stack's own writer (mosquitto._write_devices).
    _write_hashes(_active_file(cfg), hashes)


def _drop_parked(cfg: FleetsimConfig, device_id: str) -> None:
    path = disabled_file(cfg)
    parked = mosquitto.read_device_passwd(path)
    if parked.pop(device_id, None) is not None:
        _write_hashes(path, parked, private_dir=True)
