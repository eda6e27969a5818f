"""Progress of a simulator run: the arithmetic, and what a user sees without a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from fleetsim.edge.progress import Display, RunProgress, Snapshot
from fleetsim.kernel.timespec import format_duration, parse_duration


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rates_and_eta_follow_the_ticks() -> None:
    clock = Clock()
    p = RunProgress(7 * 86_400.0, clock=clock)
    p.update(0.0, 0)
    for _ in range(10):  # 600 simulated s and 6,000 messages every wall second
        clock.t += 1.0
        snap = p.update(snap_sim := (clock.t * 600.0), int(clock.t * 6000))
    assert snap.sim_s == snap_sim and snap.msg_per_s == pytest.approx(6000)
    assert snap.speed == pytest.approx(600)
    assert snap.eta_s == pytest.approx((7 * 86_400 - 6000) / 600)
    assert snap.line() == f"simulated 1h40m of 7d (1.0 %), 6,000 msg/s, ETA {format_duration(snap.eta_s)}"


def test_an_unbounded_run_has_no_eta_or_fraction() -> None:
    snap = Snapshot(90.0, None, 10, 5.0, 1.0)
    assert (snap.fraction, snap.eta_s) == (None, None)
    assert snap.line() == "simulated 1m30s, 5 msg/s"


@pytest.mark.parametrize("seconds", [0, 59, 90, 3600, 5400, 86_400, 7 * 86_400, 90_061])
def test_format_duration_reads_back_within_its_two_units(seconds: int) -> None:
    text = format_duration(seconds)
    assert len(text) <= 6
    # Two units kept: what is dropped is below the second unit.
    assert 0 <= seconds - sum(parse_duration(p + u) for p, u in _split(text)) < 3600


def _split(text: str) -> list[tuple[str, str]]:
    out, num = [], ""
    for ch in text:
        if ch.isdigit():
            num += ch
        else:
            out.append((num, ch))
            num = ""
    return out


def test_without_a_terminal_a_line_is_logged_every_few_seconds(caplog: pytest.LogCaptureFixture) -> None:
    display = Display(600.0, stream=io.StringIO())  # not a TTY: no live bar
    with caplog.at_level(logging.INFO, logger="fleetsim.edge.progress"):
        display.show(Snapshot(60.0, 600.0, 100, 50.0, 2.0))
        display.show(Snapshot(61.0, 600.0, 150, 50.0, 2.0))  # within LOG_EVERY_S: not repeated
    display.close()
    assert [r.getMessage() for r in caplog.records] == ["simulated 1m of 10m (10.0 %), 50 msg/s, ETA 4m30s"]
