"""A graceful stop of the streaming job: the real-time raw query stops after its checkpoint when
that is due within the budget (pure timing logic and the order of stops, on stand-in queries;
tests/streaming/test_stream_integration.py checks the checkpoint a real stop leaves)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import fleetsim.cloud.streaming.job as job_mod
from fleetsim.cloud.streaming.cli import job_stop_budget_s
from fleetsim.cloud.streaming.job import realtime_checkpoint_due_s
from fleetsim.kernel.config import load_config

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


def progress(started: datetime, took_ms: float, batch_id: int = 3) -> dict[str, Any]:
    stamp = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"batchId": batch_id, "timestamp": stamp, "durationMs": {"triggerExecution": took_ms}}


def test_due_is_the_running_batch_start_plus_its_length() -> None:
    # The last batch started 70 s ago and took 60.5 s: the running one began 9.5 s ago.
    last = progress(NOW - timedelta(seconds=70), 60_500)
    assert realtime_checkpoint_due_s(last, NOW, 60.0) == pytest.approx(50.5)
    assert realtime_checkpoint_due_s(last, NOW, 20.0) == pytest.approx(10.5)


def test_an_overdue_checkpoint_is_due_now_and_missing_progress_is_unknown() -> None:
    assert realtime_checkpoint_due_s(progress(NOW - timedelta(minutes=5), 60_000), NOW, 60.0) == 0.0
    assert realtime_checkpoint_due_s(None, NOW, 60.0) is None
    assert realtime_checkpoint_due_s({"batchId": 0}, NOW, 60.0) is None
    assert realtime_checkpoint_due_s({"timestamp": "yesterday", "durationMs": {}}, NOW, 60.0) is None


def test_the_queries_get_most_of_the_stop_timeout() -> None:
    assert job_stop_budget_s(60.0) == 45.0  # the default: room for a minute-long batch's checkpoint
    assert job_stop_budget_s(10.0) == 5.0  # never less than half


class _Query:
    """What stop() reads of a StreamingQuery: a real-time batch checkpoints after ``due_s``."""

    def __init__(self, name: str, log: list[str], due_s: float | None = None, batch_s: float = 5.0) -> None:
        self.name, self._log = name, log
        self.isActive = True
        self.status = {"isTriggerActive": False}
        self._t0 = time.monotonic()
        self._due_s = due_s
        # The running batch (id 1) began batch_s - due_s ago, right after batch 0's 1-s trigger.
        self._prev_started = datetime.now(UTC) - timedelta(seconds=batch_s - (due_s or 0) + 1)

    @property
    def lastProgress(self) -> dict[str, Any] | None:
        if self._due_s is None:
            return None
        finished = time.monotonic() - self._t0 >= self._due_s
        return progress(self._prev_started, 1000, batch_id=1 if finished else 0)

    def stop(self) -> None:
        self._log.append(f"{self.name}@{time.monotonic() - self._t0:.1f}")
        self.isActive = False


def _job(batch_s: float) -> job_mod.StreamJob:
    cfg = load_config(None).with_overrides({"spark.realtime_batch_s": batch_s, "spark.raw_sink": "realtime"})
    return job_mod.StreamJob(cfg)


def test_stop_waits_for_the_real_time_checkpoint_then_stops_the_others() -> None:
    job = _job(5.0)
    stops: list[str] = []
    job.queries = [_Query("raw", stops, due_s=1.5), _Query("agg", stops), _Query("deadletter", stops)]
    job.stop(timeout_s=10.0)
    # The windows run on while the raw flow waits: they are not held up by its checkpoint.
    assert [s.split("@")[0] for s in stops] == ["raw", "agg", "deadletter"]
    raw_at = float(stops[0].split("@")[1])
    assert 1.3 <= raw_at < 4.0, stops  # at its checkpoint, not at once nor at the deadline


def test_stop_does_not_wait_for_a_checkpoint_past_the_budget_less_the_reserve() -> None:
    job = _job(60.0)
    stops: list[str] = []
    # Due in 7 s: within the 10-s budget, but not once the other queries' 5-s reserve is kept.
    job.queries = [_Query("raw", stops, due_s=7.0, batch_s=60.0)]
    done = threading.Event()

    def stop() -> None:
        job.stop(timeout_s=10.0)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(3.0), "stop waited for a checkpoint it could not get"
    assert stops and stops[0].startswith("raw@0.")
