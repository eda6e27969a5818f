"""The in-flight tracker: confirmed prefix in receive order, failures block, retries keep order."""

from __future__ import annotations

from fleetsim.bridge.inflight import Send, Tracker


def _msgs(tracker: Tracker, n: int, records: int = 1) -> list[Send]:
    sends = []
    for i in range(n):
        m = tracker.new(i + 1, 1, 0.0)
        for j in range(records):
            s = tracker.record(m, "t", b"k", f"{i}.{j}".encode(), [])
            s.state = Send.SENT
            sends.append(s)
        tracker.add(m)
    return sends


def test_only_the_confirmed_prefix_is_released_in_receive_order() -> None:
    t = Tracker()
    s = _msgs(t, 4)
    s[1].on_delivery(None)
    s[2].on_delivery(None)
    assert t.pop_confirmed() == []  # head (message 1) not confirmed yet
    s[0].on_delivery(None)
    assert [m.mid for m in t.pop_confirmed()] == [1, 2, 3]
    assert len(t) == 1
    s[3].on_delivery(None)
    assert [m.mid for m in t.pop_confirmed()] == [4]


def test_a_message_with_several_records_waits_for_all_of_them() -> None:
    t = Tracker()
    s = _msgs(t, 1, records=3)
    s[0].on_delivery(None)
    s[2].on_delivery(None)
    assert t.pop_confirmed() == []
    s[1].on_delivery(None)
    assert len(t.pop_confirmed()) == 1


def test_failed_record_blocks_release_and_is_retried_in_receive_order() -> None:
    t = Tracker()
    s = _msgs(t, 4)
    s[3].on_delivery("boom")
    s[1].on_delivery("boom")
    s[0].on_delivery(None)
    s[2].on_delivery(None)
    assert [m.mid for m in t.pop_confirmed()] == [1]
    assert t.holding
    later = t.new(9, 1, 0.0)
    deferred = t.record(later, "t", b"k", b"late", [])
    t.deferred.append(deferred)
    t.add(later)
    retry = t.take_retries()
    assert [x.value for x in retry] == [b"1.0", b"3.0", b"late"]
    assert not t.holding
    for x in retry:
        x.state = Send.SENT
    retry[0].on_delivery(None)
    assert [m.mid for m in t.pop_confirmed()] == [2, 3]
    retry[1].on_delivery(None)
    retry[2].on_delivery(None)
    assert [m.mid for m in t.pop_confirmed()] == [4, 9]


def test_late_report_for_an_abandoned_attempt_is_ignored() -> None:
    t = Tracker()
    (s,) = _msgs(t, 1)
    assert t.fail_unconfirmed("producer replaced") == 1
    s.on_delivery(None)  # the old producer's report: must not confirm
    assert t.pop_confirmed() == []
    (retry,) = t.take_retries()
    retry.state = Send.SENT
    retry.on_delivery(None)
    assert len(t.pop_confirmed()) == 1


def test_put_back_keeps_failed_and_deferred_apart() -> None:
    t = Tracker()
    s = _msgs(t, 2)
    s[0].on_delivery("x")
    m = t.new(3, 1, 0.0)
    d = t.record(m, "t", None, b"d", [])
    t.deferred.append(d)
    batch = t.take_retries()
    t.put_back(batch)
    assert t.failed == [s[0]] and list(t.deferred) == [d]
