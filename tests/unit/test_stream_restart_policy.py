"""The streaming job's restart back-off (pure; the drills exercise it against real outages)."""

from __future__ import annotations

from fleetsim.cloud.streaming.job import MAX_BACKOFF_S, restart_delay_s


def test_back_off_doubles_per_recent_failure_and_is_capped() -> None:
    assert [restart_delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert restart_delay_s(50) == MAX_BACKOFF_S == 60.0
    assert restart_delay_s(0) == 1.0


class _Query:
    """What run_until reads of a StreamingQuery."""

    def __init__(self, name: str, active: bool) -> None:
        self.name = name
        self.isActive = active

    def exception(self) -> str | None:
        return None if self.isActive else "server closed the connection unexpectedly"


def test_a_restart_that_fails_is_retried_instead_of_ending_the_job(monkeypatch) -> None:
    # The windowed query's registry relation (JDBC) resolves its schema when the query starts:
    # while PostgreSQL is still down, that restart raised out of run_until and ended the job.
    import threading

    import fleetsim.cloud.streaming.job as job_mod
    from fleetsim.kernel.config import load_config

    monkeypatch.setattr(job_mod, "restart_delay_s", lambda n: 0.0)
    job = job_mod.StreamJob(load_config(None))
    job.queries = [_Query("agg", active=False)]
    stop = threading.Event()
    starts: list[str] = []

    def start(name: str) -> _Query:
        starts.append(name)
        if len(starts) < 3:
            raise RuntimeError("Connection to 127.0.0.1:5432 refused")
        stop.set()
        return _Query(name, active=True)

    monkeypatch.setattr(job, "_start_query", start)
    job.run_until(stop, poll_s=0.01)
    assert starts == ["agg", "agg", "agg"]
    assert job.queries[0].isActive
    assert job.metrics.batch_errors.labels("agg")._value.get() == 3
