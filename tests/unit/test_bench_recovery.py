"""recovery_s / worst_after: when a flow is back after a restart, from its series of figures."""

from __future__ import annotations

from fleetsim.bench.recovery import recovery_s, worst_after


def test_back_from_the_first_point_after_which_it_stays_within_the_limit() -> None:
    points = [(0.0, 1.0), (10.0, 1.0), (20.0, 30.0), (30.0, 50.0), (40.0, 1.5), (50.0, 1.2), (60.0, 1.0)]
    assert recovery_s(points, limit=2.0, restart_t=15.0) == 25.0  # back at t=40
    assert worst_after(points, restart_t=15.0) == 50.0


def test_a_relapse_moves_the_recovery_to_after_it() -> None:
    points = [(20.0, 1.0), (30.0, 9.0), (40.0, 1.0), (50.0, 1.0)]
    assert recovery_s(points, limit=2.0, restart_t=0.0) == 40.0


def test_still_over_the_limit_at_the_end_is_not_back() -> None:
    assert recovery_s([(10.0, 1.0), (20.0, 5.0)], limit=2.0, restart_t=0.0) is None


def test_unknown_points_neither_break_nor_end_a_recovery_and_points_before_the_restart_do_not_count() -> None:
    points = [(0.0, 99.0), (10.0, None), (20.0, 1.0), (30.0, None), (40.0, 1.0), (50.0, None)]
    assert recovery_s(points, limit=2.0, restart_t=5.0) == 15.0
    assert recovery_s([(0.0, 1.0), (10.0, None)], limit=2.0, restart_t=5.0) is None
    assert worst_after([(10.0, None)], restart_t=0.0) is None


def test_within_the_limit_throughout_is_back_at_the_first_known_point() -> None:
    assert recovery_s([(5.0, 0.5), (15.0, 0.4)], limit=2.0, restart_t=5.0) == 0.0
