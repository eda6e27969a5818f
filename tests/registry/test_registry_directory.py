"""The bridge-side directory's logic, with an in-memory loader/registrar (the database version is
covered by the integration tests)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from waiting import wait_until

from fleetsim.bridge.directory import DeviceStatus
from fleetsim.bridge.registry_directory import DeviceInfo, RegistryDirectory, snapshot_from_rows
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import RegistryError

CFG = FleetsimConfig()


class FakeRegistry:
    def __init__(self, rows: dict[str, DeviceInfo]) -> None:
        self.rows = dict(rows)
        self.loads = 0
        self.fail = False
        self.registered: list[list[str]] = []
        self.lock = threading.Lock()

    def load(self) -> dict[str, DeviceInfo]:
        with self.lock:
            self.loads += 1
            if self.fail:
                raise ConnectionError("database down")
            return dict(self.rows)

    def register(self, ids: list[str]) -> int:
        with self.lock:
            if self.fail:
                raise ConnectionError("database down")
            self.registered.append(ids)
            new = [i for i in ids if i not in self.rows]
            for i in new:
                self.rows[i] = DeviceInfo(True, None, None, None)
            return len(new)


def _directory(reg: FakeRegistry, refresh_s: float = 60.0) -> RegistryDirectory:
    return RegistryDirectory(CFG, refresh_s=refresh_s, loader=reg.load, registrar=reg.register)


def test_status_answers_enabled_disabled_unknown() -> None:
    reg = FakeRegistry({"a": DeviceInfo(True, "s", 1.0, 2.0), "b": DeviceInfo(False, None, None, None)})
    d = _directory(reg)
    d.refresh()
    assert d.status("a") is DeviceStatus.ENABLED
    assert d.status("b") is DeviceStatus.DISABLED
    assert d.status("zz") is DeviceStatus.UNKNOWN
    assert d.location("a") == DeviceInfo(True, "s", 1.0, 2.0)
    assert d.size == 2


def test_snapshot_from_rows() -> None:
    snap = snapshot_from_rows([("a", True, "s", 1.0, 2.0), ("b", False, None, None, None)])
    assert snap == {"a": DeviceInfo(True, "s", 1.0, 2.0), "b": DeviceInfo(False, None, None, None)}


def test_noted_unknown_ids_are_registered_once_and_survive_reloads() -> None:
    reg = FakeRegistry({})
    d = _directory(reg)
    d.refresh()
    assert d  # an empty registry must not make the hook falsy (`directory or AcceptAll()`)
    d.note_unknown("new-1")
    d.note_unknown("new-2")
    # Admitted from now on, so the bridge notes each id once.
    assert d.status("new-1") is DeviceStatus.ENABLED
    d.refresh()  # a reload before the write must not forget them
    assert d.status("new-2") is DeviceStatus.ENABLED
    assert d.flush_pending() == 2
    assert reg.registered == [["new-1", "new-2"]]
    assert d.flush_pending() == 0
    assert d.auto_registered == 2


def test_failed_registration_is_retried() -> None:
    reg = FakeRegistry({})
    d = _directory(reg)
    d.refresh()
    d.note_unknown("x")
    reg.fail = True
    with pytest.raises(ConnectionError):
        d.flush_pending()
    reg.fail = False
    assert d.flush_pending() == 1
    assert reg.registered == [["x"]]


def test_start_fails_clearly_when_the_registry_never_loads() -> None:
    reg = FakeRegistry({})
    reg.fail = True
    d = _directory(reg)
    with pytest.raises(RegistryError, match="cannot load the device registry"):
        d.start(timeout_s=0.5)
    assert reg.loads >= 2  # it retried before giving up


def test_background_refresh_picks_up_changes_and_keeps_last_copy_on_failure() -> None:
    reg = FakeRegistry({"a": DeviceInfo(True, None, None, None)})
    d = _directory(reg, refresh_s=0.05)
    d.start(timeout_s=2)
    try:
        with reg.lock:
            reg.rows["b"] = DeviceInfo(True, None, None, None)
        wait_until(lambda: d.status("b") is DeviceStatus.ENABLED, 5, interval_s=0.01, what="b enabled")
        reg.fail = True
        wait_until(lambda: d.failures >= 1, 5, interval_s=0.01, what="a failed refresh")
        # Stale but whole: still knows both devices.
        assert d.status("a") is DeviceStatus.ENABLED
        assert d.status("b") is DeviceStatus.ENABLED
        reg.fail = False
        with reg.lock:
            reg.rows["a"] = DeviceInfo(False, None, None, None)
        wait_until(lambda: d.status("a") is DeviceStatus.DISABLED, 10, interval_s=0.01, what="a disabled")
    finally:
        d.stop()


def test_stop_flushes_pending_registrations() -> None:
    reg = FakeRegistry({})
    d = _directory(reg, refresh_s=60)
    d.start(timeout_s=2)
    d.note_unknown("late")
    d.stop()
    assert ["late"] in reg.registered


def test_for_bridge_respects_use_registry_and_the_unknown_device_mode(tmp_path: Path) -> None:
    from fleetsim.bridge.registry_directory import for_bridge
    from fleetsim.stack import process
    from fleetsim.stack.secrets import ensure_secrets

    (free_port,) = process.free_ports(1)  # nothing listens there: the registry is unreachable
    cfg = ensure_secrets(
        CFG.with_overrides(
            {"stack.run_dir": str(tmp_path), "postgres.port": free_port, "stack.start_timeout_s": 1}
        )
    )
    assert for_bridge(cfg.with_overrides({"bridge.use_registry": False})) is None
    with pytest.raises(RegistryError, match="cannot load the device registry"):
        for_bridge(cfg.with_overrides({"bridge.unknown_device": "deadletter"}))
    lenient = for_bridge(cfg.with_overrides({"bridge.unknown_device": "accept"}))
    assert lenient is not None
    try:
        assert lenient.status("anyone") is DeviceStatus.UNKNOWN  # forwarded and queued by the bridge
        assert lenient.loaded_at is None
    finally:
        lenient.stop()
