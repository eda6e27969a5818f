"""Receive-ordered tracking of MQTT messages whose Kafka records are not yet confirmed.

Pure bookkeeping, no I/O and no threads of its own; the runtime decides who calls what:

- the MQTT network thread :meth:`Tracker.add`\\ s messages in receive order;
- the pump thread (the only one that polls the producer, so delivery callbacks run there)
  marks records confirmed or failed and :meth:`Tracker.pop_confirmed` pops the longest
  confirmed prefix, whose PUBACKs then go out in receive order (MQTT 3.1.1 §4.6 asks for that,
  and it is what makes "ack only what Kafka confirmed" hold across a crash);
- a failed record is never confirmed: it waits in :attr:`Tracker.failed` to be produced again,
  and every later message stays unacked behind it.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Send:
    """One Kafka record of an MQTT message (a SenML pack may yield several)."""

    __slots__ = ("error", "headers", "key", "msg", "reason", "state", "topic", "tracker", "value")

    NEW = 0
    """Not produced yet (held back while earlier records wait for a retry)."""
    SENT = 1
    OK = 2
    FAILED = 3

    def __init__(
        self,
        tracker: Tracker,
        msg: InFlight,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        reason: str | None,
    ) -> None:
        self.tracker = tracker
        self.msg = msg
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.reason = reason
        """Dead-letter reason, or None for a telemetry record."""
        self.state = Send.NEW
        self.error: Any = None

    def on_delivery(self, err: Any, _record: Any = None) -> None:
        """Producer delivery report (called from the pump thread's poll)."""
        if self.state != Send.SENT:
            return  # a report for an attempt we already gave up on (producer replaced)
        if err is None:
            self.state = Send.OK
            self.msg.pending -= 1
        else:
            self.state = Send.FAILED
            self.error = err
            self.tracker.failed.append(self)


class InFlight:
    """One MQTT message between receive and PUBACK."""

    __slots__ = ("epoch", "mid", "order", "pending", "sends", "t0")

    def __init__(self, mid: int, epoch: int, t0: float, order: int) -> None:
        self.mid = mid
        """MQTT packet id (0 for QoS 0 messages: nothing to ack)."""
        self.epoch = epoch
        """Connection generation it arrived on; a PUBACK is only valid on the same connection."""
        self.t0 = t0
        """Receive instant (``time.perf_counter()``), for the added-latency histogram."""
        self.order = order
        """Receive order number (retries are produced again in this order)."""
        self.pending = 0
        """Records not yet confirmed."""
        self.sends: list[Send] = []


class Tracker:
    """The in-flight queue. ``len(tracker)`` is the back-pressure measure."""

    def __init__(self) -> None:
        self.queue: deque[InFlight] = deque()
        self.failed: list[Send] = []
        """Records whose delivery failed, awaiting :meth:`take_retries`."""
        self.deferred: deque[Send] = deque()
        """Records not produced yet because earlier ones await a retry (order keeping)."""
        self._order = 0

    def __len__(self) -> int:
        return len(self.queue)

    def new(self, mid: int, epoch: int, t0: float) -> InFlight:
        self._order += 1
        return InFlight(mid, epoch, t0, self._order)

    def record(
        self,
        msg: InFlight,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        reason: str | None = None,
    ) -> Send:
        send = Send(self, msg, topic, key, value, headers, reason)
        msg.sends.append(send)
        msg.pending += 1
        return send

    def add(self, msg: InFlight) -> None:
        self.queue.append(msg)

    @property
    def holding(self) -> bool:
        """True while records wait for a retry or behind one: new records must queue too."""
        return bool(self.failed or self.deferred)

    def oldest_t0(self) -> float | None:
        try:
            return self.queue[0].t0
        except IndexError:
            return None

    def pop_confirmed(self) -> list[InFlight]:
        """Pop and return the longest prefix of messages whose records are all confirmed."""
        out = []
        q = self.queue
        while q and q[0].pending == 0:
            out.append(q.popleft())
        return out

    def take_retries(self) -> list[Send]:
        """Failed and deferred records, in receive order; both lists emptied."""
        retry = sorted((*self.failed, *self.deferred), key=lambda s: (s.msg.order, s.msg.sends.index(s)))
        self.failed.clear()
        self.deferred.clear()
        return retry

    def put_back(self, sends: list[Send]) -> None:
        """Return records :meth:`take_retries` handed out but that could not be produced."""
        for send in sends:
            (self.failed if send.state == Send.FAILED else self.deferred).append(send)

    def fail_unconfirmed(self, error: Any) -> int:
        """Mark every produced-but-unconfirmed record failed (the producer was replaced)."""
        n = 0
        for msg in self.queue:
            for send in msg.sends:
                if send.state == Send.SENT:
                    send.state = Send.FAILED
                    send.error = error
                    self.failed.append(send)
                    n += 1
        return n
