"""Stuck and drift judged from a per-device running state (``device_rule_state``) instead of
re-reading history from ``sensor_data``.

Why: with many devices and few readings each per batch (10,000 devices at 5,000 msg/s: one
reading per device per batch), :func:`.history_sql.stuck_drift_sql` read 12 history rows per device
through the index and ran five window passes over 13 rows to judge one: 474 ms of a 615 ms merge
for 5,000 readings (``bench/bench_history_sql.py --devices 10000 --history 12 --new 1``). Here a
device's newest ``lookback`` readings are arrays; a batch's new readings are appended and each is
judged by fixed subscripts into the array (no window function, no history read), then the arrays
are cut back to ``lookback`` and stored in the same transaction.

Same detections as the sensor_data path, which still judges every device the fast path cannot:
the fast path takes a device only when the state is exactly the history that path would read and
the readings it would judge are exactly the new ones: every reading of the device in the batch
(duplicates included) is newer than the state's newest, the state holds ``lookback`` readings, and
its oldest is within :data:`.history_sql.LOOKBACK_SPAN` of the batch's first. A first reading, an
out-of-order, duplicated or replayed reading, a device back after a day's silence: sensor_data
path, and the state is rebuilt from ``sensor_data`` after it.

Statements, in the raw batch's transaction, after the insert captured its new rows in
``stage_new_raw``: :data:`FAST_SQL` (which devices, their arrays), :func:`fast_alerts_sql`, the
sensor_data path for the others (its ``dev`` skips ``stage_rule_fast``), :data:`STATE_UPSERT_SQL`.
"""

from __future__ import annotations

from typing import Final

from psycopg2 import sql

from fleetsim.cloud.streaming.history_sql import DRIFT_MEASUREMENTS, STUCK_MEASUREMENTS, onset_alerts_insert

MEASUREMENTS: Final = ("temperature", "humidity", "co2", "pressure")
"""The arrays the state keeps (every measurement a history rule judges)."""

STAGE_DDL: Final = """
CREATE TEMP TABLE IF NOT EXISTS stage_new_raw (
  device_id text, seq bigint, ts timestamptz, temperature double precision, humidity double precision,
  co2 double precision, pressure double precision, fault text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_rule_fast (
  device_id text, l integer, seq bigint[], fault text[], ts timestamptz[],
  temperature double precision[], humidity double precision[], co2 double precision[],
  pressure double precision[]
) ON COMMIT DELETE ROWS;
"""
"""``stage_new_raw``: the readings the batch's insert really added (a replay adds none).
``stage_rule_fast``: one row per fast-path device; the measurement and ``ts`` arrays are the state
followed by the new readings (the state's length is ``l``), ``seq`` and ``fault`` are of the new
readings only."""

NEW_RAW_COLUMNS: Final = ("device_id", "seq", "ts", *MEASUREMENTS, "fault")
"""What ``INSERT INTO sensor_data ... RETURNING`` hands to ``stage_new_raw``."""

_ARR = ", ".join(f"st.{m} || n.{m} AS {m}" for m in MEASUREMENTS)
_AGG = ", ".join(f"array_agg({m} ORDER BY ts, seq) AS {m}" for m in MEASUREMENTS)
FAST_SQL: Final = f"""
INSERT INTO stage_rule_fast (device_id, l, seq, fault, ts, {", ".join(MEASUREMENTS)})
SELECT n.device_id, cardinality(st.ts), n.seq, n.fault, st.ts || n.ts, {_ARR}
FROM (
  SELECT device_id, min(ts) AS since, array_agg(seq ORDER BY ts, seq) AS seq,
         array_agg(fault ORDER BY ts, seq) AS fault, array_agg(ts ORDER BY ts, seq) AS ts, {_AGG}
  FROM stage_new_raw GROUP BY device_id
) n JOIN device_rule_state st ON st.device_id = n.device_id
WHERE NOT EXISTS (SELECT 1 FROM stage_raw r
                  WHERE r.device_id = n.device_id AND r.ts <= st.ts[cardinality(st.ts)])
  AND cardinality(st.ts) >= %(lookback)s
  AND st.ts[1] >= n.since - %(span)s::interval
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""The fast-path devices of this batch, with their arrays; see the module docstring for the rule."""


def _at(m: str, off: int) -> str:
    """Element ``p - off`` of array ``m`` (``p``: the judged reading's position). Out of range is
    NULL, as ``lag`` past the start of a partition is on the sensor_data path."""
    return f"r.{m}[r.p - {off}]" if off else f"r.{m}[r.p]"


def _stuck(m: str, q: int, stuck_n: int) -> str:
    """Reading ``p - q`` equals each of its ``stuck_n - 1`` predecessors (a saturated humidity
    sensor excepted), the sensor_data path's ``lag`` test, by subscript."""
    same = " AND ".join(f"{_at(m, q)} = {_at(m, q + k)}" for k in range(1, stuck_n))
    sat = f" AND {_at(m, q)} <> ALL(%(humidity_bounds)s)" if m == "humidity" else ""
    return f"(coalesce({same}, false){sat})"


def _mean(m: str, first: int, last: int) -> str:
    """Mean of elements ``p - first`` .. ``p - last`` (first >= last), added oldest first as
    ``avg`` over a frame does (same float rounding); NULL if any is missing."""
    terms = " + ".join(_at(m, off) for off in range(first, last - 1, -1))
    return f"(({terms}) / {first - last + 1}::float8)"


def fast_alerts_sql(stuck_n: int, drift_n: int) -> sql.Composed:
    """Stuck and drift onsets of the fast-path devices' new readings: the rules of
    :func:`.history_sql.stuck_drift_sql` (same alert rows, messages included) evaluated at each
    new reading ``p`` and at ``p - 1`` (the onset test), by subscripts into the arrays.

    Drift on the sensor_data path needs all ``drift_n`` readings of the frame non-NULL (``count``)
    and compares ``avg`` of the newest ``drift_n // 2`` with ``avg`` of the older rest; a sum with a
    NULL term is NULL here, so the same readings qualify."""
    half = drift_n // 2
    cols: list[str] = []
    drift_cols: list[str] = []
    onsets: list[str] = []
    for m in STUCK_MEASUREMENTS:
        cols.append(f"{_stuck(m, 0, stuck_n)} AS {m}_stuck, {_stuck(m, 1, stuck_n)} AS {m}_stuck_prev")
        onsets.append(f"({m}_stuck AND NOT {m}_stuck_prev)")
    for m in DRIFT_MEASUREMENTS:
        for q, tag in ((0, ""), (1, "_prev")):
            new, old = _mean(m, q + half - 1, q), _mean(m, q + drift_n - 1, q + half)
            cols.append(f"{new} AS {m}_dnew{tag}, {old} AS {m}_dold{tag}")
            moved = f"abs({m}_dnew{tag} - {m}_dold{tag}) > %(drift_threshold_{m})s"
            drift_cols.append(f"coalesce({moved}, false) AS {m}_drift{tag}")
        onsets.append(f"({m}_drift AND NOT {m}_drift_prev)")
    return (
        sql.SQL(_FAST_ALERTS).format(
            cols=sql.SQL(", ".join(cols)),
            drift_cols=sql.SQL(", ".join(drift_cols)),
            measures=sql.SQL(", ".join(f"r.{m}[r.p] AS {m}" for m in MEASUREMENTS)),
            any_onset=sql.SQL(" OR ".join(onsets)),
        )
        + onset_alerts_insert()
    )


# Levels: positions (r), then values and means (j), drift flags from the means (k), and the onset
# filter (f), so the shared insert's VALUES fan-out builds messages only where a rule starts to hold.
_FAST_ALERTS: Final = """
WITH j AS (
  SELECT r.device_id, r.seq[r.p - r.l] AS seq, r.ts[r.p] AS ts, r.fault[r.p - r.l] AS fault,
         {measures}, {cols}
  FROM (
    SELECT s.*, p FROM stage_rule_fast s CROSS JOIN LATERAL generate_series(s.l + 1, cardinality(s.ts)) AS p
  ) r
), k AS (
  SELECT j.*, {drift_cols} FROM j
), f AS (
  SELECT * FROM k WHERE {any_onset}
)"""

_KEEP = "[greatest(cardinality(f.ts) - %(lookback)s + 1, 1):]"
_REBUILD = ", ".join(f"array_agg(h.{m} ORDER BY h.ts, h.seq)" for m in MEASUREMENTS)
STATE_UPSERT_SQL: Final = f"""
INSERT INTO device_rule_state AS st (device_id, seq, ts, {", ".join(MEASUREMENTS)}, updated_at)
SELECT f.device_id, f.seq[cardinality(f.seq)], f.ts{_KEEP},
       {", ".join(f"f.{m}{_KEEP}" for m in MEASUREMENTS)}, statement_timestamp()
FROM stage_rule_fast f
UNION ALL
SELECT b.device_id, (array_agg(h.seq ORDER BY h.ts DESC, h.seq DESC))[1],
       array_agg(h.ts ORDER BY h.ts, h.seq), {_REBUILD}, statement_timestamp()
FROM (SELECT DISTINCT device_id FROM stage_new_raw
      WHERE device_id NOT IN (SELECT device_id FROM stage_rule_fast)) b
CROSS JOIN LATERAL (
  SELECT s.seq, s.ts, {", ".join(f"s.{m}" for m in MEASUREMENTS)} FROM sensor_data s
  WHERE s.device_id = b.device_id ORDER BY s.ts DESC, s.seq DESC LIMIT %(lookback)s
) h
GROUP BY b.device_id
ON CONFLICT (device_id) DO UPDATE SET
  seq = EXCLUDED.seq, ts = EXCLUDED.ts, {", ".join(f"{m} = EXCLUDED.{m}" for m in MEASUREMENTS)},
  updated_at = EXCLUDED.updated_at
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""The new state of every device this batch added readings to: the fast path's arrays cut to the
newest ``lookback``; for the others, their newest ``lookback`` stored readings (the sensor_data
path judged them; an out-of-order batch leaves the newest unchanged, the rebuild finds them)."""

FORGET_SQL: Final = """
DELETE FROM device_rule_state st USING (SELECT DISTINCT device_id FROM stage_new_raw) n
WHERE st.device_id = n.device_id
"""
"""With the running state off (``alerts.history_state = false``), the state of the devices a batch
added readings to is dropped rather than left behind: turned back on, the state of those devices is
rebuilt from ``sensor_data`` instead of judging new readings against stale history."""
