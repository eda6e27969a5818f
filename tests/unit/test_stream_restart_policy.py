"""The streaming job's restart back-off (pure; the drills exercise it against real outages)."""

from __future__ import annotations

from cloud.streaming.job import MAX_BACKOFF_S, restart_delay_s


def test_back_off_doubles_per_recent_failure_and_is_capped() -> None:
    assert [restart_delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert restart_delay_s(50) == MAX_BACKOFF_S == 60.0
    assert restart_delay_s(0) == 1.0
