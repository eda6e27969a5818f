"""The soak's latency series: buckets beside the windowed batches, and the stalls found in them."""

from __future__ import annotations

from fleetsim.bench.series import Bucket, build, overlap_s, stalls


def test_overlap_counts_only_the_part_of_each_span_inside_the_bucket() -> None:
    spans = [(95.0, 103.0), (108.0, 130.0)]
    assert overlap_s(100.0, 110.0, spans) == 5.0
    assert overlap_s(130.0, 140.0, spans) == 0.0
    assert overlap_s(0.0, 90.0, spans) == 0.0


def test_build_keeps_the_figures_and_marks_the_windowed_batches() -> None:
    rows = [(100.0, 50, 0.4, 0.9, 0.3), (110.0, 48, 3.5, 7.0, 3.2), (120.0, 0, None, None, None)]
    out = build(rows, [(112.0, 118.5)], bucket_s=10)
    assert [b.rows for b in out] == [50, 48, 0]
    assert [b.agg_busy_s for b in out] == [0.0, 6.5, 0.0]
    assert out[1].p95_s == 3.5 and out[1].kafka_p95_s == 3.2 and out[2].p95_s is None
    assert out[1].as_row(100.0) == [10, 48, 3.5, 7.0, 3.2, 6.5]


def _b(t: float, p95: float | None, busy: float = 0.0) -> Bucket:
    return Bucket(start_s=t, rows=10, p95_s=p95, max_s=p95, kafka_p95_s=p95, agg_busy_s=busy)


def test_stalls_names_the_buckets_over_the_limit_and_what_ran_beside_them() -> None:
    buckets = [_b(0, 0.5), _b(10, 2.5, busy=3), _b(20, 0.6, busy=4), _b(30, None), _b(40, 7.1)]
    st = stalls(buckets, 2.0)
    assert st["buckets"] == 4  # the bucket with no figure is not judged
    assert st["over"] == 2 and st["over_at_s"] == [10, 40]
    assert st["over_with_agg_batch"] == 1 and st["all_with_agg_batch"] == 2
    assert st["worst_p95_s"] == 7.1 and st["worst_at_s"] == 40


def test_no_stall_when_every_bucket_is_within_the_limit() -> None:
    st = stalls([_b(0, 0.5), _b(10, 2.0)], 2.0)
    assert st["over"] == 0 and st["worst_p95_s"] is None and st["over_at_s"] == []
