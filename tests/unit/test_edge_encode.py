"""The simulator's fast encoder must write exactly the bytes of ``Reading.encode``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsim.kernel.contract import (
    ControlAction,
    ControlCommand,
    FaultKind,
    Reading,
    Status,
    decode,
    encode_reading,
    format_ts,
    format_ts_ms,
)
from fleetsim.kernel.errors import ContractError

_values = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(10**6), max_value=10**6),
)
_ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"),
    st.text(min_size=1, max_size=20),  # ids needing escapes take the fallback path
)
_instants = st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000)  # 2000..2100, ms


@settings(max_examples=300, deadline=None)
@given(
    device_id=_ids,
    epoch_ms=_instants,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    values=st.lists(_values, min_size=7, max_size=7),
    status=st.sampled_from(list(Status)),
    fault=st.one_of(st.none(), st.sampled_from(list(FaultKind))),
)
def test_fast_encoder_matches_reading_encode(device_id, epoch_ms, seq, values, status, fault):
    ts = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    ts = ts.replace(microsecond=(epoch_ms % 1000) * 1000)
    reading = Reading(device_id, ts, seq, *values, status, fault.value if fault else None)
    wire_ts = format_ts_ms(epoch_ms)
    assert wire_ts == format_ts(ts)
    fast = encode_reading(device_id, wire_ts, seq, *values, status.value, fault.value if fault else None)
    assert fast == reading.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_fast_encoder_refuses_non_finite_like_json(bad):
    with pytest.raises(ValueError):
        encode_reading("d1", "2026-01-01T00:00:00.000Z", 1, bad, None, None, None, None, None, None)


def test_fast_encoder_output_decodes():
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    raw = encode_reading(
        "lyon-pd-01", format_ts_ms(int(now.timestamp() * 1000)), 7, 21.5, 40.0, 650.0, 990.1,
        88.0, 45.76, 4.85, "WARNING", "stuck",
    )  # fmt: skip
    r = decode(raw, topic_device_id="lyon-pd-01", now=now + timedelta(seconds=1))
    assert (r.seq, r.temperature, r.status, r.fault) == (7, 21.5, Status.WARNING, "stuck")


def test_control_selectors_round_trip_and_validate():
    cmd = ControlCommand(
        ControlAction.INJECT, FaultKind.HEATWAVE, 60.0, None, {"delta": 8.0}, "part-dieu", (45.76, 4.85, 2.0)
    )
    assert ControlCommand.decode(cmd.encode()) == cmd
    with pytest.raises(ContractError):
        ControlCommand.decode(b'{"action":"inject","fault":"stuck","within":[45.0,4.0,-1]}')
    with pytest.raises(ContractError):
        ControlCommand.decode(b'{"action":"inject","fault":"stuck","site":3}')
