"""backlog_records: what a capped micro-batch left unread, from PySpark's view of the offsets."""

from __future__ import annotations

from types import SimpleNamespace

from fleetsim.cloud.streaming.listener import backlog_records


def _progress(*sources: tuple[object, object]) -> SimpleNamespace:
    return SimpleNamespace(sources=[SimpleNamespace(endOffset=e, latestOffset=lat) for e, lat in sources])


def test_backlog_sums_what_each_partition_left() -> None:
    # PySpark passes the offsets as str() of the decoded JSON: a Python literal, not JSON.
    end = str({"t": {"0": 100, "1": 40}})
    latest = str({"t": {"0": 130, "1": 40}})
    assert backlog_records(_progress((end, latest))) == 30


def test_a_batch_that_took_everything_left_nothing() -> None:
    offsets = str({"t": {"0": 7, "1": 9}})
    assert backlog_records(_progress((offsets, offsets))) == 0


def test_a_partition_missing_from_the_batch_end_is_not_guessed() -> None:
    # Spark lists every partition it planned in endOffset; one missing there has no known start.
    end = str({"t": {"0": 5}})
    latest = str({"t": {"0": 5, "1": 3}})
    assert backlog_records(_progress((end, latest))) == 0


def test_no_offsets_is_unknown_not_zero() -> None:
    assert backlog_records(_progress(("None", "None"))) is None
    assert backlog_records(_progress(("not a literal {", str({"t": {"0": 1}})))) is None
    assert backlog_records(SimpleNamespace(sources=[])) is None
