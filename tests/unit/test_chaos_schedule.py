"""The chaos schedule generator: pure, seeded, overlapping across targets, never on one target."""

from __future__ import annotations

import pytest

from fleetsim.chaos.schedule import _RECOVERY_S, DEFAULT_KINDS, KINDS, make_schedule, overlapping, summary


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a = make_schedule(7, 1800, faults_per_minute=2)
    assert a == make_schedule(7, 1800, faults_per_minute=2)
    assert [f.params for f in a] == [f.params for f in make_schedule(7, 1800, faults_per_minute=2)]
    assert a != make_schedule(8, 1800, faults_per_minute=2)


def test_thirty_minutes_gives_at_least_forty_overlapping_faults_of_every_kind() -> None:
    s = make_schedule(42, 1800, faults_per_minute=2)
    info = summary(s)
    assert info["faults"] >= 40
    assert set(info["by_kind"]) == set(DEFAULT_KINDS)
    assert info["overlapping"] >= 40, info


@pytest.mark.parametrize("seed", range(20))
def test_faults_sit_inside_the_run_and_never_overlap_on_one_target(seed: int) -> None:
    duration = 600.0
    s = make_schedule(seed, duration, faults_per_minute=4)
    assert s == sorted(s)
    for f in s:
        assert f.target in KINDS[f.kind]
        assert min(20.0, 0.1 * duration) <= f.at_s and f.end_s <= 0.8 * duration
    for i, f in enumerate(s):
        for g in s[i + 1 :]:
            if f.target == g.target:
                gap = _RECOVERY_S[f.target]
                assert g.at_s >= f.end_s + gap or f.at_s >= g.end_s + gap, (f, g)


def test_short_campaign_has_about_six_faults_most_overlapping() -> None:
    s = make_schedule(3, 90, faults_per_minute=4)
    assert 5 <= len(s) <= 6
    assert overlapping(s) >= 2


def test_requested_kinds_only_and_unknown_kinds_refused() -> None:
    s = make_schedule(1, 600, ("pause", "link"), faults_per_minute=3)
    assert {f.kind for f in s} == {"pause", "link"}
    assert all(f.params["mode"] in ("slow", "cut") for f in s if f.kind == "link")
    with pytest.raises(ValueError, match="unknown fault kind"):
        make_schedule(1, 600, ("kill", "meteor"))
    with pytest.raises(ValueError):
        make_schedule(1, 0)
