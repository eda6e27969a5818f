"""The loader's in-memory stuck/drift state (``rule_memory``), pure logic: parsing, which devices
memory may judge, onsets, and letting go of silent devices. Equality with the SQL paths, alert for
alert, is tested on real PostgreSQL in tests/streaming/test_rule_state_sink.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetsim.cloud.streaming import rule_memory as rm
from fleetsim.cloud.streaming.history_sql import history_params
from fleetsim.cloud.streaming.pgsink import RAW_COPY_COLUMNS
from fleetsim.cloud.streaming.reading_columns import read_readings
from fleetsim.kernel.config import AlertsConfig

T0 = datetime(2026, 12, 6, tzinfo=UTC)
RULES = rm.Rules.from_params(history_params(AlertsConfig()))


def _line(dev: str, i: int, t: float, h: float | None = 50.0, fault: str = "", day: int = 0) -> str:
    ts = (T0 + timedelta(days=day, minutes=i)).isoformat()
    hum = "" if h is None else h
    return f"{dev},{i},{ts},{t},{hum},600,1013,80,,,OK,{fault},0,{i},{ts},{ts}\n"


def _plan(state: rm.MemoryState, lines: list[str]) -> rm.Plan:
    return state.plan(read_readings("".join(lines).encode(), RAW_COPY_COLUMNS))


def _rebuilt(
    dev: str, n: int, t: float, day: int = 0
) -> list[tuple[str, datetime, int, float, float, float, float]]:
    """REBUILD_SQL rows (newest first) of ``n`` readings at temperature ``t``."""
    return [
        (dev, T0 + timedelta(days=day, minutes=i), i, t + i * 0.01, 50.0, 600.0, 1013.0) for i in range(n)
    ][::-1]


def test_read_reads_quoted_lines_like_plain_ones() -> None:
    plain = read_readings(_line("d1", 3, 21.5, None).encode(), RAW_COPY_COLUMNS)
    quoted = read_readings(_line("d1", 3, 21.5, None, fault='"a, ""b"""').encode(), RAW_COPY_COLUMNS)
    assert plain.seq.tolist() == quoted.seq.tolist() == [3]
    assert plain.ts.tolist() == quoted.ts.tolist() == [rm.micros(T0 + timedelta(minutes=3))]
    assert plain.values[0, 0] == 21.5
    assert plain.values[0, 1] != plain.values[0, 1]  # NULL humidity is NaN in memory
    assert quoted.fault[0].as_py() == 'a, "b"' and plain.fault[0].as_py() is None
    # An offset other than UTC is the same instant.
    plus_one = _line("d1", 3, 21.5).replace("+00:00", "+01:00", 1)
    assert read_readings(plus_one.encode(), RAW_COPY_COLUMNS).ts[0] == plain.ts[0] - 3_600_000_000


def test_read_keeps_ids_and_codes_that_spell_null() -> None:
    """Only an empty field is NULL, as in COPY: "NA", "null" and "nan" are valid device ids (the
    contract's pattern allows them), and reading them as NULL failed every merge of the batch."""
    lines = [_line(d, 1, 20.0, fault="N/A") for d in ("NA", "null", "nan", "NULL")]
    got = read_readings("".join(lines).encode(), RAW_COPY_COLUMNS)
    assert got.devices == ["NA", "null", "nan", "NULL"]
    assert got.fault.to_pylist() == ["N/A"] * 4


def test_memory_judges_only_devices_whose_history_it_holds_whole() -> None:
    state = rm.MemoryState(RULES)
    state.apply(
        rm.Plan(), _rebuilt("full", RULES.lookback, 20.0) + _rebuilt("short", RULES.lookback - 1, 20.0)
    )
    plan = _plan(
        state,
        [
            _line("full", RULES.lookback, 20.5),
            _line("short", RULES.lookback - 1, 20.5),  # fewer than lookback remembered
            _line("unknown", 5, 20.5),  # never seen
        ],
    )
    assert plan.fast == ["full"]
    # Too short to judge here, but remembered whole: extended with the new reading, not re-read.
    assert plan.known == ["short"]
    # Two of the three devices go the sensor_data path: the merge runs it.
    assert plan.devices == 3 and not plan.all_fast
    # Every device judged here (two readings of it): the merge skips that path.
    only_full = _plan(state, [_line("full", RULES.lookback, 20.5), _line("full", RULES.lookback + 1, 20.5)])
    assert only_full.devices == 1 and only_full.all_fast
    # Both give the gap rule their newest stored reading; the unknown device is probed for.
    newest = rm.micros(T0 + timedelta(minutes=RULES.lookback - 1))
    assert plan.prev == [("full", newest), ("short", newest - 60_000_000)]
    assert plan.prev_csv() == f'"full",{newest}\n"short",{newest - 60_000_000}\n'.encode()
    # A reading not newer than the newest remembered (out of order, or a replay): sensor_data path.
    replay = _plan(state, [_line("full", RULES.lookback, 20.5), _line("full", 3, 20.0)])
    assert replay.fast == [] and replay.known == []
    # History older than the look-back span before the batch: sensor_data path.
    late = _plan(state, [_line("full", RULES.lookback, 20.5, day=2)])
    assert late.fast == [] and late.known == ["full"]
    assert late.prev == []  # its newest stored reading is beyond the span: no predecessor
    history = state.history("full")
    assert history is not None and history[0][-1] == newest  # not applied
    # Once committed, the short one is extended, not re-read.
    state.apply(plan, [])
    short = state.history("short")
    assert short is not None and len(short[0]) == RULES.lookback and short[1][0][-1] == 20.5


def test_stuck_onset_fires_once_at_the_reading_that_completes_the_run() -> None:
    state = rm.MemoryState(RULES)
    state.apply(rm.Plan(), _rebuilt("d", RULES.lookback, 20.0))
    n = RULES.lookback
    onsets: list[int] = []
    for i in range(n, n + RULES.stuck_n + 3):
        plan = _plan(state, [_line("d", i, 25.0)])
        assert plan.fast == ["d"]
        onsets += [int(row[1]) for row in plan.onsets]
        state.apply(plan, [])
    # The sixth identical temperature completes the run; later ones continue it, no new onset.
    assert onsets == [n + RULES.stuck_n - 1]


def test_drift_onset_carries_the_means_it_was_judged_on() -> None:
    state = rm.MemoryState(RULES)
    state.apply(rm.Plan(), _rebuilt("d", RULES.lookback, 20.0))
    n, half = RULES.lookback, RULES.drift_n // 2
    rows: list[list[str]] = []
    for i in range(n, n + half):
        plan = _plan(state, [_line("d", i, 20.0 + 3 * (i - n + 1))])
        rows += plan.onsets
        state.apply(plan, [])
    col = rm.ONSET_COLUMNS.index
    assert rows, "a 3 °C-a-reading ramp must drift"
    first = rows[0]
    assert first[col("temperature_drift")] == "t" and first[col("temperature_drift_prev")] == "f"
    moved = float(first[col("temperature_dnew")]) - float(first[col("temperature_dold")])
    assert moved > RULES.thresholds[0]


def test_silent_devices_are_let_go_after_the_span() -> None:
    state = rm.MemoryState(RULES)
    state.apply(rm.Plan(), _rebuilt("old", RULES.lookback, 20.0))
    state.apply(rm.Plan(), _rebuilt("new", RULES.lookback, 20.0, day=3))
    assert state.history("old") is None and state.history("new") is not None and len(state) == 1
    state.clear()
    assert len(state) == 0 and state.history("new") is None


def test_memory_grows_past_its_first_capacity() -> None:
    state = rm.MemoryState(RULES, capacity=2)
    for d in range(5):
        state.apply(rm.Plan(), _rebuilt(f"g{d}", RULES.lookback - d, 20.0 + d))
    assert len(state) == 5
    for d in range(5):
        history = state.history(f"g{d}")
        assert history is not None and len(history[0]) == RULES.lookback - d
        assert history[1][0][0] == 20.0 + d  # oldest first


def test_a_reading_twice_in_a_batch_is_remembered_as_the_insert_stores_it() -> None:
    """Two lines with the same (device, ts, seq): the first is stored, the second conflicts."""
    state = rm.MemoryState(RULES)
    state.apply(rm.Plan(), _rebuilt("d", RULES.lookback, 20.0))
    n = RULES.lookback
    # The same ts under another seq is another reading (the key is device, ts, seq).
    same_ts = _line("d", n + 1, 33.0).replace(f",{n + 1},", f",{n + 9},", 1)
    plan = _plan(state, [_line("d", n, 30.0), _line("d", n, 31.0), _line("d", n + 1, 32.0), same_ts])
    state.apply(plan, [])
    history = state.history("d")
    assert history is not None and history[1][0][-3:] == [30.0, 32.0, 33.0]
