"""The one way a test waits for something: poll the real condition, fail saying what was seen.

Tests never ``time.sleep`` to synchronise (hoping something happened by then): they wait for
the condition itself with :func:`wait_until`. A sleep that remains in a test paces a load or lets
time pass on purpose (an outage that must last 5 s), and its comment says so.

``import waiting`` works from every test package: ``tests/conftest.py`` puts ``tests/`` on
``sys.path`` (pytest's default "prepend" import mode), as it does for the other helper modules.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SHOWN = 300
"""Characters of the last value or exception a timeout message shows."""


def wait_until(
    condition: Callable[[], T],
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    what: str = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition`` every ``interval_s`` until it returns a truthy value; return that value.

    It is called at least once, and once more at the deadline. An exception of a type in
    ``ignoring`` counts as "not yet" (e.g. ``OSError`` while a server starts); any other
    propagates at once, so a condition can stop the wait early by raising (see
    :func:`while_running`). On timeout: ``AssertionError`` naming ``what``, the timeout and the
    last value or exception the condition gave.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except ignoring as exc:
            seen = f"last error: {_short(repr(exc))}"
        else:
            if value:
                return value
            seen = f"last value: {_short(repr(value))}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; {seen}")
        time.sleep(min(interval_s, remaining))


def while_running(
    proc: subprocess.Popen[Any],
    condition: Callable[[], T],
    name: str = "the process",
    log: Path | None = None,
) -> Callable[[], T]:
    """``condition``, failing at once (with the end of ``log``) if ``proc`` has exited meanwhile:
    waiting on a dead process's output would only time out."""

    def check() -> T:
        if proc.poll() is not None:
            tail = ""
            if log is not None:
                try:
                    tail = ":\n" + log.read_text(errors="replace")[-3000:]
                except OSError:
                    tail = ": (no log)"
            raise AssertionError(f"{name} exited with {proc.returncode}{tail}")
        return condition()

    return check


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... ({len(text)} chars)"
