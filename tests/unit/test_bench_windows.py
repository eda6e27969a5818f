"""The e2e bench's windows verdict: lag judged after the step's start and at its end, any capped
batch a failure."""

from __future__ import annotations

from fleetsim.bench.windows import verdict, windows_lag_s


def test_lag_is_the_age_of_the_newest_reading_behind_the_state_delay() -> None:
    assert windows_lag_s(watermark_s=1000.0, state_delay_s=300.0, now_s=1345.0) == 45.0


def test_a_stale_watermark_at_the_step_start_is_not_judged() -> None:
    samples = [(0.0, 900.0, 0.0), (30.0, 70.0, 0.0), (65.0, 50.0, 0.0), (70.0, 40.0, 0.0)]
    v = verdict(samples, skip_s=60.0, limit_s=120.0)
    assert v["kept_up"] is True
    assert v["lag_s_max"] == 50.0 and v["lag_s_last"] == 40.0


def test_a_short_step_is_judged_at_its_end() -> None:
    v = verdict([(5.0, 30.0, 0.0), (36.0, 130.0, 0.0)], skip_s=60.0, limit_s=120.0)
    assert v["kept_up"] is False and v["lag_s_max"] == 130.0


def test_a_batch_its_cap_held_back_fails_even_with_a_small_lag() -> None:
    v = verdict([(5.0, 30.0, 0.0), (70.0, 40.0, 40_000.0), (75.0, 45.0, 0.0)], skip_s=60.0, limit_s=120.0)
    assert v["kept_up"] is False and v["backlog_records_max"] == 40_000


def test_no_watermark_is_unknown() -> None:
    v = verdict([(5.0, None, None)], skip_s=60.0, limit_s=120.0)
    assert v["kept_up"] is None and v["lag_s_max"] is None
