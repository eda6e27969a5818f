"""state_timings: where a batch's stateful operators spent their time, from its progress."""

from __future__ import annotations

from types import SimpleNamespace

from fleetsim.cloud.streaming.listener import state_timings


def _op(name: str | None, updates: int | None, removals: int | None, commit: int | None) -> SimpleNamespace:
    return SimpleNamespace(
        operatorName=name, allUpdatesTimeMs=updates, allRemovalsTimeMs=removals, commitTimeMs=commit
    )


def test_each_operator_gets_its_three_phases() -> None:
    progress = SimpleNamespace(
        stateOperators=[_op("dedupeWithinWatermark", 120, 3400, 80), _op("stateStoreSave", 900, 15, 60)]
    )
    assert state_timings(progress) == {
        "dedupeWithinWatermark": {"updates": 120, "removals": 3400, "commit": 80},
        "stateStoreSave": {"updates": 900, "removals": 15, "commit": 60},
    }


def test_an_operator_twice_in_a_plan_is_summed() -> None:
    # Two aggregations in one query report under one name; a gauge per name must hold their sum.
    progress = SimpleNamespace(
        stateOperators=[_op("stateStoreSave", 10, 1, 2), _op("stateStoreSave", 5, 4, 3)]
    )
    assert state_timings(progress) == {"stateStoreSave": {"updates": 15, "removals": 5, "commit": 5}}


def test_missing_figures_count_as_zero_and_a_stateless_query_has_none() -> None:
    assert state_timings(SimpleNamespace(stateOperators=[_op(None, None, 7, None)])) == {
        "unknown": {"updates": 0, "removals": 7, "commit": 0}
    }
    assert state_timings(SimpleNamespace(stateOperators=None)) == {}
