"""RegistryCache.poll(): when it checks the registry and when it drops the cached copy (pure logic:
a fake frame and a fingerprint the test sets; the real-engine test is
tests/streaming/test_registry_cache.py)."""

from __future__ import annotations

from typing import Any

from fleetsim.cloud.streaming import registry_cache
from fleetsim.cloud.streaming.registry_cache import RegistryCache
from fleetsim.kernel.config import FleetsimConfig


class Frame:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def cache(self) -> None:
        self.calls.append("cache")

    def unpersist(self) -> None:
        self.calls.append("unpersist")


class Scripted(RegistryCache):
    def __init__(self, cfg: FleetsimConfig) -> None:
        self.now = 0.0
        self.table: Any = (3, "abc")
        self.checks = 0
        super().__init__(None, cfg, clock=lambda: self.now)

    def fingerprint(self) -> tuple[int, str]:
        self.checks += 1
        if isinstance(self.table, Exception):
            raise self.table
        return self.table  # type: ignore[no-any-return]


def make(cfg: FleetsimConfig, monkeypatch: Any) -> tuple[Scripted, Frame]:
    frame = Frame()
    monkeypatch.setattr(registry_cache, "registry_relation", lambda spark, cfg: frame)
    c = Scripted(cfg.with_overrides({"spark.registry_refresh_s": 10}))
    c.start()
    return c, frame


def test_checks_each_period_refreshes_on_change(fleet_cfg: FleetsimConfig, monkeypatch: Any) -> None:
    c, frame = make(fleet_cfg, monkeypatch)
    assert frame.calls == ["cache"] and c.checks == 1
    c.now = 9.9
    assert c.poll() is False and c.checks == 1  # not due yet
    c.now = 10.0
    assert c.poll() is False and c.checks == 2  # due, unchanged: the copy stays
    c.table = (3, "abd")  # a device re-classed
    c.now = 15.0
    assert c.poll() is False and c.checks == 2
    c.now = 20.0
    assert c.poll() is True and frame.calls == ["cache", "unpersist", "cache"] and c.refreshes == 1


def test_failed_check_keeps_the_copy(fleet_cfg: FleetsimConfig, monkeypatch: Any) -> None:
    c, frame = make(fleet_cfg, monkeypatch)
    c.table = OSError("connection refused")
    c.now = 10.0
    assert c.poll() is False and frame.calls == ["cache"]
    c.table = (4, "new")
    c.now = 19.0
    assert c.poll() is False and c.checks == 2  # next try one period after the failed one
    c.now = 20.0
    assert c.poll() is True and c.checks == 3


def test_no_fingerprint_at_start_refreshes_at_the_first_good_check(
    fleet_cfg: FleetsimConfig, monkeypatch: Any
) -> None:
    frame = Frame()
    monkeypatch.setattr(registry_cache, "registry_relation", lambda spark, cfg: frame)
    c = Scripted(fleet_cfg.with_overrides({"spark.registry_refresh_s": 10}))
    c.table = OSError("PostgreSQL is starting up")
    c.start()  # does not raise: the job starts, its queries retry PostgreSQL themselves
    assert frame.calls == ["cache"]
    c.table = (2, "x")
    c.now = 10.0
    assert c.poll() is True and frame.calls == ["cache", "unpersist", "cache"]
