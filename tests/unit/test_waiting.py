"""The tests' one wait helper (tests/waiting.py): returns the first truthy value, fails saying what
it waited for and what it saw last, stops early on other errors and on a dead process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from waiting import wait_until, while_running


def counter(ready_at: int, value: object = "ready") -> tuple[list[int], Callable[[], object]]:
    calls: list[int] = []

    def condition() -> object:
        calls.append(1)
        return value if len(calls) >= ready_at else 0

    return calls, condition


def test_returns_the_first_truthy_value_without_waiting_longer() -> None:
    calls, condition = counter(3, value={"rows": 3})
    t0 = time.monotonic()
    assert wait_until(condition, 5, interval_s=0.01, what="three calls") == {"rows": 3}
    assert len(calls) == 3
    assert time.monotonic() - t0 < 1


def test_an_already_true_condition_is_called_once_and_never_sleeps() -> None:
    calls, condition = counter(1)
    t0 = time.monotonic()
    assert wait_until(condition, 0, interval_s=10) == "ready"
    assert len(calls) == 1 and time.monotonic() - t0 < 1


def test_timeout_names_what_the_timeout_and_the_last_value() -> None:
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as err:
        wait_until(list, 0.3, interval_s=0.05, what="rows in sensor_data")
    elapsed = time.monotonic() - t0
    assert str(err.value) == "timed out after 0.3 s waiting for rows in sensor_data; last value: []"
    assert 0.3 <= elapsed < 2


def test_the_last_value_is_the_one_reported() -> None:
    values: list[object] = ["", (), 0.0]  # falsy, each different; the last one repeats

    def next_value() -> object:
        return values.pop(0) if len(values) > 1 else values[0]

    with pytest.raises(AssertionError) as err:
        wait_until(next_value, 0.2, interval_s=0.01)
    assert err.value.args[0] == "timed out after 0.2 s waiting for the condition; last value: 0.0"


def test_the_condition_is_tried_once_more_at_the_deadline() -> None:
    t0 = time.monotonic()
    # Interval far longer than the timeout: the helper sleeps only up to the deadline, then retries.
    assert wait_until(lambda: time.monotonic() - t0 >= 0.2, 0.2, interval_s=30) is True
    assert time.monotonic() - t0 < 5


def test_a_long_last_value_or_error_is_cut_in_the_message() -> None:
    def refused() -> bool:
        raise OSError("x" * 5000)

    with pytest.raises(AssertionError) as err:
        wait_until(refused, 0, ignoring=(OSError,))
    assert err.value.args[0].endswith("... (5011 chars)") and len(err.value.args[0]) < 500
    with pytest.raises(AssertionError) as err:
        wait_until(lambda: [0] * 0 or None, 0)
    assert err.value.args[0].endswith("last value: None")


def test_ignored_exceptions_mean_not_yet_and_the_last_one_is_reported() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError("not listening yet")
        return "up"

    assert wait_until(flaky, 5, interval_s=0.01, ignoring=(OSError,)) == "up"

    def never() -> str:
        raise ConnectionRefusedError("still not listening")

    with pytest.raises(AssertionError, match=r"waiting for the server; last error: ConnectionRefusedError"):
        wait_until(never, 0.1, interval_s=0.01, what="the server", ignoring=(OSError,))


def test_other_exceptions_propagate_at_once() -> None:
    calls: list[int] = []

    def broken() -> bool:
        calls.append(1)
        raise KeyError("bug in the condition")

    t0 = time.monotonic()
    with pytest.raises(KeyError):
        wait_until(broken, 30, interval_s=0.01, ignoring=(OSError,))
    assert calls == [1] and time.monotonic() - t0 < 1


def test_while_running_fails_at_once_when_the_process_exited(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_text("starting\nTraceback: boom\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(10)
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as err:
        wait_until(while_running(proc, lambda: False, "the job", log), 30, what="rows")
    assert time.monotonic() - t0 < 5
    assert str(err.value) == "the job exited with 3:\nstarting\nTraceback: boom\n"
    with pytest.raises(AssertionError, match=r"^the process exited with 3: \(no log\)$"):
        wait_until(while_running(proc, lambda: True, log=tmp_path / "missing.log"), 1)


def test_while_running_passes_the_condition_through_while_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert wait_until(while_running(proc, lambda: 42, "sleeper"), 5) == 42
        with pytest.raises(
            AssertionError, match=r"timed out after 0\.1 s waiting for nothing; last value: 0$"
        ):
            wait_until(while_running(proc, lambda: 0, "sleeper"), 0.1, interval_s=0.01, what="nothing")
    finally:
        proc.kill()
        proc.wait(10)
