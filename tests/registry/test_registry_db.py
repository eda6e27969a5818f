"""Registry on real PostgreSQL: seeding, add/disable/enable/place, the NOTIFY-driven directory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from waiting import wait_until

from fleetsim.bridge.directory import DeviceStatus
from fleetsim.bridge.registry_directory import RegistryDirectory, register_unplaced
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig, config_to_env
from fleetsim.kernel.errors import RegistryError
from fleetsim.registry import seed, service, store
from fleetsim.registry.model import validate_new_device

pytestmark = pytest.mark.integration


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _row(cfg: FleetsimConfig, device_id: str) -> Any:
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT kind, site, lat, lon, placed, enabled, updated_at FROM devices WHERE device_id=%s",
                (device_id,),
            )
            return cur.fetchone()
    finally:
        conn.close()


def test_seed_from_csv_is_idempotent_and_never_overwrites_real_devices(
    postgres: FleetsimConfig, tmp_path
) -> None:
    fleet = tmp_path / "devices.csv"
    a, b = _uid("seed-a"), _uid("seed-b")
    fleet.write_text(
        "device_id,type,site,lat,lon,interval_s\n"
        f"{a},fixed,site-1,45.0,4.0,60\n"
        f"{b},fixed,site-2,45.1,4.1,30\n"
    )
    first = seed.seed_from_csv(postgres, fleet)
    assert (first.devices, first.changed) == (2, 2)
    stamp = _row(postgres, a)[6]
    again = seed.seed_from_csv(postgres, fleet)
    assert (again.devices, again.changed) == (2, 0)
    assert _row(postgres, a)[6] == stamp  # untouched rows keep updated_at

    fleet.write_text(
        "device_id,type,site,lat,lon,interval_s\n"
        f"{a},fixed,site-1b,45.5,4.5,60\n"
        f"{b},fixed,site-2,45.1,4.1,30\n"
    )
    assert seed.seed_from_csv(postgres, fleet).changed == 1
    assert _row(postgres, a)[:4] == ("simulated", "site-1b", 45.5, 4.5)

    real = _uid("real")
    service.add_device(postgres, validate_new_device(postgres, real, site="mine", lat=1.0, lon=2.0))
    fleet.write_text(f"device_id,type,site,lat,lon,interval_s\n{real},fixed,sim,9.0,9.0,60\n")
    seed.seed_from_csv(postgres, fleet)
    assert _row(postgres, real)[:4] == ("real", "mine", 1.0, 2.0)


def test_seed_with_the_repository_fleet(postgres: FleetsimConfig) -> None:
    result = seed.seed_from_csv(postgres)
    assert result.path is not None
    assert result.devices == len(seed.simulated_devices(postgres))
    assert seed.seed_from_csv(postgres).changed == 0


def test_cli_seeds_another_fleet_file_with_its_device_class(
    postgres: FleetsimConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fleetsim device seed --file F``: the devices of a fleet file other than devices.csv get
    their class (``indoor``) before a simulator publishes them."""
    from fleetsim.cli import main

    out, inn = _uid("seed-out"), _uid("seed-in")
    fleet = tmp_path / "other.csv"
    fleet.write_text(
        "device_id,type,site,indoor,lat,lon,interval_s\n"
        f"{out},fixed,site-o,false,45.0,4.0,60\n"
        f"{inn},fixed,site-i,true,45.1,4.1,30\n"
    )
    with mock.patch.dict(os.environ, config_to_env(postgres)):
        assert main(["device", "seed", "--file", str(fleet)]) == 0
    assert f"2 simulated device(s) from {fleet}; 2 row(s) changed" in capsys.readouterr().out
    conn = pg_connect(postgres, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT device_id, indoor FROM devices WHERE device_id IN (%s, %s)", (out, inn))
            assert dict(cur.fetchall()) == {out: False, inn: True}
    finally:
        conn.close()
    with mock.patch.dict(os.environ, config_to_env(postgres)):
        assert main(["device", "seed", "--file", str(tmp_path / "missing.csv")]) != 0
    assert "missing.csv does not exist" in capsys.readouterr().err


def test_add_twice_fails_clearly_and_changes_nothing(postgres: FleetsimConfig) -> None:
    dev = _uid("dup")
    first = service.add_device(postgres, validate_new_device(postgres, dev, site="s1", lat=1.0, lon=2.0))
    assert first.password
    with pytest.raises(RegistryError, match="already exists"):
        service.add_device(postgres, validate_new_device(postgres, dev, site="s2", lat=3.0, lon=4.0))
    assert _row(postgres, dev)[1:4] == ("s1", 1.0, 2.0)


def test_disable_enable_rotate_and_place(postgres: FleetsimConfig) -> None:
    dev = _uid("life")
    service.add_device(postgres, validate_new_device(postgres, dev, site="s", lat=1.0, lon=2.0))
    service.disable_device(postgres, dev)
    assert _row(postgres, dev)[5] is False
    with pytest.raises(RegistryError, match="disabled"):
        service.rotate_credentials(postgres, dev)
    enabled = service.enable_device(postgres, dev)
    assert enabled.password is None  # parked credentials restored, nothing new to show
    assert enabled.device.enabled
    rotated = service.rotate_credentials(postgres, dev)
    assert rotated.password
    placed = service.place_device(postgres, dev, site="moved", lat=5.0, lon=6.0)
    assert (placed.site, placed.lat, placed.lon, placed.placed) == ("moved", 5.0, 6.0, True)
    with pytest.raises(RegistryError, match="no device"):
        service.disable_device(postgres, _uid("ghost"))


def test_directory_sees_changes_through_notify_long_before_its_refresh(postgres: FleetsimConfig) -> None:
    directory = RegistryDirectory(postgres, refresh_s=3600)  # backstop far away: only NOTIFY can help
    directory.start(timeout_s=20)
    try:
        dev = _uid("notify")
        assert directory.status(dev) is DeviceStatus.UNKNOWN
        service.add_device(postgres, validate_new_device(postgres, dev, site="s", lat=1.0, lon=2.0))
        wait_until(
            lambda: directory.status(dev) is DeviceStatus.ENABLED,
            5,
            interval_s=0.02,
            what="the new device enabled",
        )
        info = directory.location(dev)
        assert info is not None and (info.site, info.lat, info.lon) == ("s", 1.0, 2.0)
        service.disable_device(postgres, dev)
        wait_until(
            lambda: directory.status(dev) is DeviceStatus.DISABLED,
            5,
            interval_s=0.02,
            what="the device disabled",
        )

        stranger = _uid("stranger")
        directory.note_unknown(stranger)
        wait_until(
            lambda: _row(postgres, stranger) is not None, 5, interval_s=0.02, what="the stranger registered"
        )
        kind, site, lat, lon, placed, enabled, _ = _row(postgres, stranger)
        assert (kind, site, lat, lon, placed, enabled) == ("real", None, None, None, False, True)
    finally:
        directory.stop()


def test_writer_role_cannot_delete_devices(postgres: FleetsimConfig) -> None:
    conn = pg_connect(postgres, "writer")
    try:
        with conn.cursor() as cur, pytest.raises(Exception, match="permission denied"):
            cur.execute("DELETE FROM devices WHERE device_id = 'nobody'")
    finally:
        conn.rollback()
        conn.close()


def test_list_filters(postgres: FleetsimConfig) -> None:
    dev = _uid("listed")
    service.add_device(postgres, validate_new_device(postgres, dev, site="only-here", lat=1.0, lon=2.0))
    conn = pg_connect(postgres, "reader")
    try:
        rows = store.list_devices(conn, site="only-here")
    finally:
        conn.close()
    assert [d.device_id for d in rows] == [dev]


def test_seeding_adopts_ids_the_bridge_auto_registered_first(postgres: FleetsimConfig, tmp_path) -> None:
    early = _uid("early")
    conn = pg_connect(postgres, "writer")
    try:
        with conn:
            assert register_unplaced(conn, [early]) == 1
    finally:
        conn.close()
    assert _row(postgres, early)[:5] == ("real", None, None, None, False)
    fleet = tmp_path / "devices.csv"
    fleet.write_text(f"device_id,type,site,lat,lon,interval_s\n{early},fixed,site-9,45.0,4.0,60\n")
    seed.seed_from_csv(postgres, fleet)
    assert _row(postgres, early)[:5] == ("simulated", "site-9", 45.0, 4.0, True)
