"""Alert rules that need a device's history across micro-batches, as set-based PostgreSQL.

Why SQL and not Spark state: the rows they need are already in ``sensor_data`` (the sink just
inserted them, in the same transaction), the look-back is a handful of rows per device found
through the ``(device_id, ts DESC)`` index, and a replayed batch re-detects the same onsets,
which the ``sensor_alerts`` primary key absorbs. Spark state would duplicate that history in the
checkpoint and need a Python stateful processor on the hot path.

Every statement reads the batch from the ``stage_raw`` temp table.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg2 import sql

from fleetsim.kernel.config import AlertsConfig

STUCK_MEASUREMENTS: Final = ("temperature", "humidity", "co2", "pressure")
"""Battery is left out: a slowly draining battery legitimately repeats the same value."""
DRIFT_MEASUREMENTS: Final = ("temperature", "pressure")
"""CO2 is left out (occupancy moves it by hundreds of ppm), and so is relative humidity: it follows
temperature (about 6 % per °C) and saturates at 100 %, so a change threshold flags weather and
motion, not sensors (30 min of a Lyon night: 23 false drift incidents on outdoor and mobile units at
20 %, 135 in the sensor-degradation scenario at 5 %)."""
LOOKBACK_SPAN: Final = "1 day"
"""Oldest history row considered (bounds the index scans to about two day partitions)."""


NEW_ALERT_COLUMNS: Final = (
    "device_id", "kind", "measurement", "severity", "value", "threshold", "event_ts", "seq", "site", "fault",
)  # fmt: skip
"""The alerts this transaction really inserted (``stage_new_alerts``): a replayed batch inserts
none, so incident grouping, which reads only them, adds nothing on a replay."""
_NEW_COLS: Final = ", ".join(NEW_ALERT_COLUMNS)
CAPTURE_NEW_ALERTS: Final = (
    f" RETURNING {_NEW_COLS})\nINSERT INTO stage_new_alerts ({_NEW_COLS}) SELECT {_NEW_COLS} FROM ins"  # noqa: S608
)
"""Suffix that turns ``... ins AS (INSERT INTO sensor_alerts ... ON CONFLICT DO NOTHING`` into a
statement recording the inserted rows; its row count stays the number of alerts inserted."""


def history_params(alerts: AlertsConfig) -> dict[str, Any]:
    n_s, n_d = alerts.stuck_readings, alerts.drift_window_readings
    half = n_d // 2
    return {
        "lookback": max(n_s, n_d),
        "span": LOOKBACK_SPAN,
        "stuck_n": n_s,
        "stuck_back": n_s - 1,
        "drift_n": n_d,
        "drift_back": n_d - 1,
        "drift_half": half,
        "drift_half_back": half - 1,
        "drift_threshold_temperature": alerts.drift_threshold,
        "drift_threshold_pressure": alerts.drift_threshold_pressure,
        # A humidity sensor reads its bound (0 or 100 %, fog) for hours: saturated, not stuck.
        "humidity_bounds": [0.0, 100.0],
    }


def onset_alerts_insert() -> sql.Composed:
    """The tail both stuck/drift statements end with (this module's and :mod:`.rule_state`'s):
    ``, ins AS (INSERT INTO sensor_alerts ...)`` over a CTE ``f`` of onset readings with columns
    ``<m>`` (the value), ``<m>_stuck``/``_stuck_prev`` per :data:`STUCK_MEASUREMENTS` and
    ``<m>_drift``/``_drift_prev``/``_dnew``/``_dold`` per :data:`DRIFT_MEASUREMENTS`: one alert
    per rule that starts to hold, with its message."""
    ident = sql.Identifier
    values: list[sql.Composable] = [
        sql.SQL(
            "('stuck', {name}, f.{f} AND NOT coalesce(f.{p}, false), f.{m}, %(stuck_n)s::float8, "
            "format('%%s unchanged at %%s for %%s readings', {name}, f.{m}, %(stuck_n)s))"
        ).format(name=sql.Literal(m), f=ident(f"{m}_stuck"), p=ident(f"{m}_stuck_prev"), m=ident(m))
        for m in STUCK_MEASUREMENTS
    ]
    values += [
        sql.SQL(
            "('drift', {name}, f.{f} AND NOT coalesce(f.{p}, false), f.{new} - f.{old}, "
            "{t}::float8, format('%%s moved %%s over %%s readings', {name}, "
            "round((f.{new} - f.{old})::numeric, 3), %(drift_n)s))"
        ).format(
            name=sql.Literal(m),
            f=ident(f"{m}_drift"),
            p=ident(f"{m}_drift_prev"),
            t=sql.Placeholder(f"drift_threshold_{m}"),
            new=ident(f"{m}_dnew"),
            old=ident(f"{m}_dold"),
        )
        for m in DRIFT_MEASUREMENTS
    ]
    return sql.SQL(
        """
, ins AS (
INSERT INTO sensor_alerts (device_id, kind, measurement, severity, value, threshold, event_ts,
                           detected_at, seq, site, fault, message)
SELECT f.device_id, v.kind, v.measurement, 'warning', v.value, v.threshold, f.ts,
       statement_timestamp(), f.seq, d.site, f.fault, v.message
FROM f CROSS JOIN LATERAL (VALUES {values}) AS v(kind, measurement, fire, value, threshold, message)
LEFT JOIN devices d ON d.device_id = f.device_id
WHERE v.fire
ON CONFLICT DO NOTHING{capture}
"""
    ).format(values=sql.SQL(", ").join(values), capture=sql.SQL(CAPTURE_NEW_ALERTS))


def stuck_drift_sql(stuck_n: int = 6) -> sql.Composed:
    """Onsets of stuck (``stuck_n`` identical consecutive values, ``alerts.stuck_readings``: it
    shapes the statement, the other thresholds are parameters) and drift (mean of the newest
    half of the last ``drift_n`` readings differs from the oldest half by more than the threshold).

    An alert is raised on the reading where the condition starts to hold (it did not hold on the
    previous reading), for readings of this batch only, with the reading's seq, fault and site.
    Readings are ordered by (ts, seq), so out-of-order arrivals are evaluated in event order.
    Devices the running state judged this batch (``stage_rule_fast``, :mod:`.rule_state`) are
    skipped.
    """
    ident = sql.Identifier
    win_cols: list[sql.Composable] = []
    flag_cols: list[sql.Composable] = []
    prev_cols: list[sql.Composable] = []
    onsets: list[sql.Composable] = []
    for m in STUCK_MEASUREMENTS:
        # Equal to each of its stuck_n - 1 predecessors (lag: one pass over the sorted rows; a
        # NULL, or fewer rows than that, compares NULL). Same as "count = stuck_n and min = max"
        # over the frame, which PostgreSQL recomputed row by row (no moving min/max): a third of
        # this statement's CPU for the four measurements.
        same = sql.SQL(" AND ").join(
            sql.SQL("{m} = lag({m}, {k}) OVER o").format(m=ident(m), k=sql.Literal(k))
            for k in range(1, stuck_n)
        )
        win_cols.append(sql.SQL("coalesce({same}, false) AS {eq}").format(same=same, eq=ident(f"{m}_seq")))
        saturated = sql.SQL(" AND {m} <> ALL(%(humidity_bounds)s)" if m == "humidity" else "").format(
            m=ident(m)
        )
        flag_cols.append(
            sql.SQL("({eq}{sat}) AS {f}").format(eq=ident(f"{m}_seq"), f=ident(f"{m}_stuck"), sat=saturated)
        )
        prev_cols.append(
            sql.SQL("lag({f}) OVER o AS {p}").format(f=ident(f"{m}_stuck"), p=ident(f"{m}_stuck_prev"))
        )
        onsets.append(
            sql.SQL("({f} AND NOT coalesce({p}, false))").format(
                f=ident(f"{m}_stuck"), p=ident(f"{m}_stuck_prev")
            )
        )
    for m in DRIFT_MEASUREMENTS:
        win_cols.append(
            sql.SQL(
                "count({m}) OVER wd AS {n}, avg({m}) OVER wold AS {old}, avg({m}) OVER wnew AS {new}"
            ).format(m=ident(m), n=ident(f"{m}_dn"), old=ident(f"{m}_dold"), new=ident(f"{m}_dnew"))
        )
        flag_cols.append(
            sql.SQL("({n} = %(drift_n)s AND abs({new} - {old}) > {t}) AS {f}").format(
                n=ident(f"{m}_dn"),
                old=ident(f"{m}_dold"),
                new=ident(f"{m}_dnew"),
                f=ident(f"{m}_drift"),
                t=sql.Placeholder(f"drift_threshold_{m}"),
            )
        )
        prev_cols.append(
            sql.SQL("lag({f}) OVER o AS {p}").format(f=ident(f"{m}_drift"), p=ident(f"{m}_drift_prev"))
        )
        onsets.append(
            sql.SQL("({f} AND NOT coalesce({p}, false))").format(
                f=ident(f"{m}_drift"), p=ident(f"{m}_drift_prev")
            )
        )
    cols = sql.SQL("s.device_id, s.seq, s.ts, s.temperature, s.humidity, s.co2, s.pressure, s.fault")
    return (
        sql.SQL(
            """
WITH dev AS (
  SELECT device_id, min(ts) AS since, max(ts) AS until FROM stage_raw r
  WHERE NOT EXISTS (SELECT 1 FROM stage_rule_fast f WHERE f.device_id = r.device_id)
  GROUP BY device_id
), hist AS (
  SELECT h.* FROM dev CROSS JOIN LATERAL (
    (SELECT {cols}, false AS fresh FROM sensor_data s
      WHERE s.device_id = dev.device_id AND s.ts < dev.since AND s.ts >= dev.since - %(span)s::interval
      ORDER BY s.ts DESC, s.seq DESC LIMIT %(lookback)s)
    UNION ALL
    (SELECT {cols}, true AS fresh FROM sensor_data s
      WHERE s.device_id = dev.device_id AND s.ts BETWEEN dev.since AND dev.until)
  ) h
), win AS (
  SELECT hist.*, {win_cols} FROM hist
  WINDOW o AS (PARTITION BY device_id ORDER BY ts, seq),
         wd AS (o ROWS BETWEEN %(drift_back)s PRECEDING AND CURRENT ROW),
         wold AS (o ROWS BETWEEN %(drift_back)s PRECEDING AND %(drift_half)s PRECEDING),
         wnew AS (o ROWS BETWEEN %(drift_half_back)s PRECEDING AND CURRENT ROW)
), flags AS (
  SELECT win.*, {flag_cols} FROM win
), onsets AS (
  SELECT flags.*, {prev_cols} FROM flags WINDOW o AS (PARTITION BY device_id ORDER BY ts, seq)
), f AS (
  -- Only the batch's readings where some rule starts to hold reach the VALUES fan-out below:
  -- building every candidate's message for every reading was a third of this statement's time.
  SELECT * FROM onsets WHERE fresh AND ({any_onset})
)"""
        ).format(
            cols=cols,
            win_cols=sql.SQL(", ").join(win_cols),
            flag_cols=sql.SQL(", ").join(flag_cols),
            prev_cols=sql.SQL(", ").join(prev_cols),
            any_onset=sql.SQL(" OR ").join(onsets),
        )
        + onset_alerts_insert()
    )


OFFLINE_SQL: Final = sql.SQL(
    """
WITH dev AS (
  SELECT device_id, kafka_partition, max(ts) AS mx FROM stage_raw GROUP BY device_id, kafka_partition
), glob AS (
  SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY mx) AS ref_ts FROM dev
), part AS (
  SELECT d.kafka_partition, least(percentile_disc(0.5) WITHIN GROUP (ORDER BY d.mx), g.ref_ts) AS ref_ts
  FROM dev d CROSS JOIN glob g GROUP BY d.kafka_partition, g.ref_ts
), refs AS (
  -- Per partition of the batch, a range of device_latest_silent_idx (V015, V017). OFFSET 0
  -- keeps each a lookup: flattened into a join, the planner (a third of the table estimated for
  -- ts < <computed>) hashed a scan of all of device_latest's heap. The lower bound is always
  -- true and there for the planner: a pair of bounds it cannot price is a narrow range (0.5 %%
  -- of the rows, not a third), so a bloated heap after a soak no longer prices the index out
  -- (a scan of the whole table per partition: 7,700 buffer hits a merge, bench/ANALYSIS.md).
  -- The range is on ts's 30 s bucket (V017: no index on ts itself, so a reading's upsert of
  -- device_latest stays HOT); the exact bound on ts filters what the bucket lets through.
  SELECT c.* FROM part p CROSS JOIN LATERAL (
    SELECT l.device_id, l.ts, l.seq, l.site, l.fault, l.kafka_partition, p.ref_ts FROM device_latest l
    WHERE l.kafka_partition = p.kafka_partition AND l.unjudged
      AND l.ts_bucket > '-infinity' AND l.ts_bucket < p.ref_ts - make_interval(secs => %(offline_s)s)
      AND l.ts < p.ref_ts - make_interval(secs => %(offline_s)s)
    OFFSET 0
  ) c
  UNION ALL
  SELECT c.* FROM glob g CROSS JOIN LATERAL (
    SELECT l.device_id, l.ts, l.seq, l.site, l.fault, l.kafka_partition, g.ref_ts FROM device_latest l
    WHERE l.kafka_partition IS NULL AND l.unjudged
      AND l.ts_bucket < g.ref_ts - make_interval(secs => %(offline_s)s)
      AND l.ts < g.ref_ts - make_interval(secs => %(offline_s)s)
    OFFSET 0
  ) c
), judged AS (
  SELECT r.*, offline_threshold_s(d.interval_s, %(offline_s)s, %(offline_intervals)s) AS offline_s
  FROM refs r LEFT JOIN LATERAL (
    SELECT d.interval_s, d.enabled FROM devices d WHERE d.device_id = r.device_id OFFSET 0
  ) d ON true
  WHERE r.ref_ts IS NOT NULL AND coalesce(d.enabled, true)
), due AS (
  SELECT * FROM judged j WHERE j.ts < j.ref_ts - make_interval(secs => j.offline_s)
), mark AS (
  -- The few devices judged, by primary key: a join let the planner hash all of device_latest.
  UPDATE device_latest l SET offline_for = u.ts
  FROM due u WHERE l.device_id = u.device_id AND u.kafka_partition IS NOT NULL
    AND l.device_id = ANY ((SELECT array_agg(device_id) FROM due)::text[])
), ins AS (
INSERT INTO sensor_alerts (device_id, kind, measurement, severity, value, threshold, event_ts,
                           detected_at, seq, site, fault, message)
SELECT u.device_id, 'offline', '', 'warning', extract(epoch FROM u.ref_ts - u.ts), u.offline_s,
       u.ts + make_interval(secs => u.offline_s), statement_timestamp(), u.seq, u.site, u.fault,
       format('no reading for %%s s of event time', round(extract(epoch FROM u.ref_ts - u.ts)))
FROM due u
ON CONFLICT DO NOTHING"""  # noqa: S608 (a module constant)
    + CAPTURE_NEW_ALERTS
)
"""Devices whose latest reading is older than their silence threshold (``offline_threshold_s``,
V013: ``offline_s``, or ``offline_intervals`` times the device's registered interval when longer;
below, "offline_s") before their partition's reference
event time in this batch: the median over the batch's devices of that Kafka partition of their
newest ``ts``, capped by the same median over all the batch's devices (robust to a few devices
with a skewed clock, unlike the maximum). Only devices of a partition the batch holds are judged:
a partition is one ordered log, so once it delivered readings stamped past a device's silence, the
device's own readings of that time would have come with them; another partition may simply be
behind (a restarted job, or the real-time raw flow's loaders catching up partition by partition,
deliver partitions at different event times). A device alone in its partition is therefore judged
only by the gap rule (:data:`FLEET_CLOCK_SQL`), when it reports again. Rows written before
``device_latest.kafka_partition`` existed are judged against the whole batch, as before. The
alert's event time is the instant the device became overdue (latest ts + offline_s), so
re-detection in later batches hits the primary key and adds nothing. A device judged silent is
marked (``device_latest.offline_for`` = the newest ``ts`` it was judged on) and skipped until it
reports again: a silent fleet of 10,000 devices cost every merge ~45 ms re-trying alerts that
already existed (bench/ANALYSIS.md). Rows without a partition are not marked, so a merge only
ever locks ``device_latest`` rows of its own partitions' devices (no lock order across loaders)."""


SKEW_MIN_DEVICES: Final = 3
"""Devices the fleet's median lag needs before it is a reference for clock skew."""
REF_WINDOW_S: Final = 3.0
"""Newest readings of the last this many wall seconds make the fleet's reference lag."""
REF_DEVICES: Final = 1000
"""The reference's devices: up to this many of the batch's own (a median of 1,000 devices is as
robust as one of the whole fleet, and a merge's cost stays flat with its size)."""
REF_MIN_DEVICES: Final = 300
"""A batch of fewer devices is topped up to this many from the newest merges' (``fleet_clock_lag``,
V017). Topping up to :data:`REF_DEVICES` cost a merge of ~200 devices ~0.9 ms more than V014's
index (10,000 devices at 1,000 msg/s, bench/ANALYSIS.md): the stored lags are read before they
can be told apart from the batch's own devices."""
KEEP_DEVICES: Final = 100
"""A merge stores about this many of its devices' lags (a sample by hash, all below it): enough for the
next small merges' reference, and a row small enough to stay out of TOAST (storing all of a
950-device merge's lags, and reading them back, cost the statement ~3 ms more than V014's index)."""
LAG_KEEP_S: Final = 60.0
"""A merge's lags are deleted (by whichever merge comes next) once this old."""


def offline_params(alerts: AlertsConfig) -> dict[str, float]:
    """The silence threshold's parameters (``offline_threshold_s``, V013) of both offline rules."""
    return {"offline_s": float(alerts.offline_after_s), "offline_intervals": float(alerts.offline_intervals)}


def fleet_clock_params(max_clock_skew_s: float, alerts: AlertsConfig) -> dict[str, Any]:
    """Parameters of :data:`FLEET_CLOCK_SQL`."""
    return {
        "skew_s": float(max_clock_skew_s),
        **offline_params(alerts),
        "skew_min_devices": SKEW_MIN_DEVICES,
        "ref_window_s": REF_WINDOW_S,
        "ref_devices": REF_DEVICES,
        "ref_min_devices": REF_MIN_DEVICES,
        "keep_devices": KEEP_DEVICES,
        "lag_keep_s": LAG_KEEP_S,
        "span": LOOKBACK_SPAN,
    }


FLEET_CLOCK_SQL: Final = sql.SQL(
    """
WITH lag AS (
  SELECT device_id, seq, ts, fault,
         extract(epoch FROM coalesce(kafka_ts, statement_timestamp()) - ts) AS lag_s
  FROM stage_raw
), fresh AS (
  SELECT DISTINCT ON (device_id) * FROM lag ORDER BY device_id, lag_s, seq DESC
), mine AS (
  -- Past ref_devices devices, a sample by a hash of the id, not by the id's order (no naming
  -- scheme decides who is in it) and without a sort.
  SELECT f.device_id, f.lag_s FROM fresh f, (SELECT count(*) AS n FROM fresh) c
  WHERE (hashtext(f.device_id) & 65535) < 65536 * %(ref_devices)s / greatest(c.n, %(ref_devices)s)
  LIMIT %(ref_devices)s
), stored AS (
  -- What the other merges (this writer's earlier ones, every other writer's) of the last
  -- ref_window_s seconds kept, newest merge first, as many lags as the batch lacks of
  -- ref_min_devices (none for a batch of that many devices); a device once.
  SELECT DISTINCT ON (u.device_id) u.device_id, u.lag_s FROM (
    SELECT d.device_id, d.lag_s, w.written_at FROM (
      SELECT written_at, devices, lags FROM fleet_clock_lag
      WHERE written_at >= statement_timestamp() - make_interval(secs => %(ref_window_s)s)
      ORDER BY written_at DESC
    ) w CROSS JOIN LATERAL unnest(w.devices, w.lags) AS d(device_id, lag_s)
    LIMIT greatest(%(ref_min_devices)s - (SELECT count(*) FROM mine), 0)
  ) u
  ORDER BY u.device_id, u.written_at DESC
), ref AS (
  SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY r.lag_s) AS lag_s, count(*) AS n
  FROM (
    SELECT lag_s FROM mine
    UNION ALL
    SELECT lag_s FROM stored WHERE device_id NOT IN (SELECT device_id FROM mine)
  ) r
), kept AS (
  INSERT INTO fleet_clock_lag (written_at, devices, lags)
  SELECT statement_timestamp(), array_agg(m.device_id), array_agg(m.lag_s)
  FROM mine m, (SELECT count(*) AS n FROM mine) c
  -- ~keep_devices of them by other bits of the same hash (mine's are all alike past ref_devices).
  WHERE (hashtext(m.device_id) >> 16 & 65535) < 65536 * %(keep_devices)s / greatest(c.n, %(keep_devices)s)
  HAVING count(*) > 0
), pruned AS (
  -- Any writer's old rows, skipping those another merge is deleting: no merge waits on another.
  DELETE FROM fleet_clock_lag WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM fleet_clock_lag
    WHERE written_at < statement_timestamp() - make_interval(secs => %(lag_keep_s)s)
    ORDER BY written_at LIMIT 100 FOR UPDATE SKIP LOCKED
  ))
), seqd AS (
  SELECT device_id, seq, ts, fault, lag(ts) OVER (PARTITION BY device_id ORDER BY ts, seq) AS prev_ts
  FROM stage_raw
), remembered AS (
  -- A loader's memory of its devices' newest stored reading (rule_memory): no probe for these.
  SELECT device_id, timestamptz 'epoch' + prev_us * interval '1 microsecond' AS ts FROM stage_rule_prev
), gaps AS MATERIALIZED (
  -- Materialized with its filter: inlined, the planner ran the confirmation's probe below for
  -- every reading of the batch (5,000 probes, 24 of the statement's 39 ms) and filtered after.
  SELECT g.device_id, g.seq, g.ts, g.fault
  FROM seqd g LEFT JOIN remembered m ON g.prev_ts IS NULL AND m.device_id = g.device_id
  LEFT JOIN LATERAL (
    SELECT s.ts FROM sensor_data s
    WHERE g.prev_ts IS NULL AND m.ts IS NULL AND s.device_id = g.device_id AND s.ts < g.ts
      AND s.ts >= g.ts - %(span)s::interval
    ORDER BY s.ts DESC LIMIT 1
  ) p ON true
  WHERE g.ts - coalesce(g.prev_ts, m.ts, p.ts) > make_interval(secs => %(offline_s)s)
), confirmed AS (
  -- A candidate gap's true predecessor: readings of the device already stored may lie inside it
  -- (an out-of-order reading merged in an earlier batch). sensor_data holds this batch's rows
  -- too (inserted before this statement), so its newest reading before ts is the predecessor.
  -- The fleet's floor first (no device's threshold is lower), then the device's own.
  SELECT g.device_id, g.seq, g.ts, g.fault, p.ts AS prev_ts,
         offline_threshold_s(d.interval_s, %(offline_s)s, %(offline_intervals)s) AS offline_s
  FROM gaps g CROSS JOIN LATERAL (
    SELECT max(s.ts) AS ts FROM sensor_data s
    WHERE s.device_id = g.device_id AND s.ts < g.ts AND s.ts >= g.ts - %(span)s::interval
  ) p
  LEFT JOIN devices d ON d.device_id = g.device_id
), found AS (
  SELECT f.device_id, 'clock_skew' AS kind, round((ref.lag_s - f.lag_s)::numeric, 3)::float8 AS value,
         %(skew_s)s AS threshold, f.ts AS event_ts, f.seq, f.fault,
         format('clock %%s s %%s the fleet''s', round(abs(ref.lag_s - f.lag_s)),
                CASE WHEN ref.lag_s > f.lag_s THEN 'ahead of' ELSE 'behind' END) AS message
  FROM fresh f CROSS JOIN ref
  WHERE ref.n >= %(skew_min_devices)s AND abs(ref.lag_s - f.lag_s) > %(skew_s)s
  UNION ALL
  SELECT device_id, 'offline', extract(epoch FROM ts - prev_ts)::float8, offline_s,
         prev_ts + make_interval(secs => offline_s), seq, fault,
         format('no reading for %%s s of event time', round(extract(epoch FROM ts - prev_ts)))
  FROM confirmed WHERE ts - prev_ts > make_interval(secs => offline_s)
), ins AS (
INSERT INTO sensor_alerts (device_id, kind, measurement, severity, value, threshold, event_ts,
                           detected_at, seq, site, fault, message)
SELECT x.device_id, x.kind, '', 'warning', x.value, x.threshold, x.event_ts, statement_timestamp(), x.seq,
       d.site, x.fault, x.message
FROM found x LEFT JOIN devices d ON d.device_id = x.device_id
WHERE coalesce(d.enabled, true)
ON CONFLICT DO NOTHING"""  # noqa: S608 (a module constant)
    + CAPTURE_NEW_ALERTS
)
"""The fleet's own clock as the reference. A reading's lag is how long before it reached Kafka it
was stamped (``kafka_ts - ts``: the device's clock and its path to the broker, not the pipeline's
own backlog, which differs between partitions while a restarted job or the real-time loaders catch
up); the fleet's lag is the median, over the batch's devices and those the merges of the last
``ref_window_s`` seconds stored (``fleet_clock_lag``: this writer's earlier merges and every other
partition writer's; each device once, the batch's own lag first), of the same lag. So the
reference is the fleet's
own clock, in live and accelerated runs alike (a short window: an accelerated clock gains on the
wall clock), and a few skewed devices do not move the median. A device's own lag is that of its
freshest reading in the batch (the smallest: holding a reading back only adds lag). Two rules:

* ``clock_skew``: the device's freshest reading is off the fleet's lag by more than ``skew_s``
  (``spark.max_clock_skew_s``); ``value`` = seconds ahead (negative: behind). Its readings stay in
  ``sensor_data`` with the device's own ``ts``; the windows cap a clock that runs ahead (:mod:`.lateness`).
* ``offline`` (gap): two consecutive readings of a device (in its own event time, the first the
  newest stored before the second, whichever batch brought it) more than the device's silence
  threshold (``offline_s`` or more, as in :data:`OFFLINE_SQL`) apart: it
  made or delivered nothing in between (crash, outage whose buffer overflowed). The newest stored
  reading before a device's first reading of the batch is a key probe of ``sensor_data`` per
  device, unless the writer remembers it (``stage_rule_prev``, a loader's :mod:`.rule_memory`);
  only the candidate gaps are confirmed by a second probe (the candidates are materialized so the
  planner cannot run the confirmation for every reading). Event time: the
  reading before the gap + offline_s, the key :data:`OFFLINE_SQL` gives the same silence, so
  whichever rule sees it first, it is one alert. Decided by the readings alone: it fires in
  accelerated runs and on a backlog processed in one batch.

``clock_skew`` needs ``skew_min_devices`` devices in the reference. A backlog delivered in a batch of
its own, without a fresh reading, looks like a clock behind (the scorer counts it as a consequence
of the outage). A buffer that kept every reading of a silence shorter than the gap between two
batches leaves no trace in event time: neither offline rule sees it."""


# ----------------------------------------------------------------------------------- incidents
_LIVE: Final = "('pending', 'open', 'acknowledged')"
_SEVERITIES: Final = "ARRAY['info', 'warning', 'critical']"
_MEASURE_VALUE: Final = (
    "CASE i.measurement WHEN 'temperature' THEN r.temperature WHEN 'humidity' THEN r.humidity "
    "WHEN 'co2' THEN r.co2 WHEN 'pressure' THEN r.pressure END"
)

INCIDENT_GROUP_SQL: Final = f"""
WITH rule AS (
  SELECT DISTINCT ON (device_id, kind, measurement, event_ts)
         device_id, kind, measurement, event_ts, clear_threshold, min_duration_s
  FROM stage_alerts ORDER BY device_id, kind, measurement, event_ts
), g AS (
  SELECT n.device_id, n.kind, n.measurement,
         (array_agg(n.site ORDER BY n.event_ts DESC))[1] AS site,
         ({_SEVERITIES})[max(array_position({_SEVERITIES}, n.severity))] AS severity,
         min(n.event_ts) AS first_ts, max(n.event_ts) AS last_ts, count(*) AS n,
         CASE WHEN n.kind = 'extreme_low' THEN min(n.value) ELSE max(n.value) END AS peak,
         (array_agg(n.threshold ORDER BY n.event_ts))[1] AS threshold,
         (array_agg(r.clear_threshold ORDER BY n.event_ts))[1] AS clear_threshold,
         coalesce(max(r.min_duration_s), 0) AS min_duration_s,
         (array_agg(n.fault ORDER BY n.event_ts))[1] AS fault
  FROM stage_new_alerts n LEFT JOIN rule r USING (device_id, kind, measurement, event_ts)
  GROUP BY n.device_id, n.kind, n.measurement
), up AS (
  INSERT INTO incidents AS i (device_id, kind, measurement, site, severity, state, opened_at, last_seen,
                              n_alerts, peak_value, threshold, clear_threshold, min_duration_s, fault,
                              detected_at, updated_at)
  SELECT device_id, kind, measurement, site, severity,
         CASE WHEN last_ts - first_ts >= make_interval(secs => min_duration_s) THEN 'open' ELSE 'pending' END,
         first_ts, last_ts, n, peak, threshold, clear_threshold, min_duration_s, fault,
         statement_timestamp(), statement_timestamp()
  FROM g
  ON CONFLICT (device_id, kind, measurement) WHERE state IN {_LIVE} DO UPDATE SET
    last_seen = greatest(i.last_seen, EXCLUDED.last_seen),
    n_alerts = i.n_alerts + EXCLUDED.n_alerts,
    peak_value = CASE WHEN i.kind = 'extreme_low' THEN least(i.peak_value, EXCLUDED.peak_value)
                      ELSE greatest(i.peak_value, EXCLUDED.peak_value) END,
    severity = CASE WHEN array_position({_SEVERITIES}, EXCLUDED.severity)
                         > array_position({_SEVERITIES}, i.severity)
                    THEN EXCLUDED.severity ELSE i.severity END,
    site = coalesce(EXCLUDED.site, i.site),
    updated_at = statement_timestamp()
  RETURNING i.incident_id, i.state, (i.xmax = 0) AS created
)
INSERT INTO incident_events (incident_id, action, actor, at)
SELECT incident_id, 'opened', 'system', statement_timestamp() FROM up WHERE created AND state = 'open'
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""New alerts -> incidents: one live incident per (device, kind, measurement) absorbs them (count,
peak, last seen, highest severity), or a new one starts (``pending`` while shorter than its rule's
minimum duration, else ``open`` with an ``opened`` event)."""

INCIDENT_HOLD_SQL: Final = f"""
UPDATE incidents i SET last_seen = x.ts, updated_at = statement_timestamp()
FROM (
  SELECT i.incident_id, max(r.ts) AS ts
  FROM incidents i JOIN stage_raw r ON r.device_id = i.device_id
  WHERE i.state IN ('open', 'acknowledged') AND i.clear_threshold IS NOT NULL
    AND CASE i.kind WHEN 'extreme_high' THEN {_MEASURE_VALUE} > i.clear_threshold
                    WHEN 'extreme_low' THEN {_MEASURE_VALUE} < i.clear_threshold
                    ELSE false END
  GROUP BY i.incident_id
) AS x
WHERE i.incident_id = x.incident_id AND x.ts > i.last_seen
"""  # noqa: S608 (identifiers are module constants)
"""Hysteresis: a reading still beyond the rule's clear bound (below the alarm threshold) keeps an
open incident going, so it does not close and reopen while the value hovers at the threshold."""

INCIDENT_PROMOTE_SQL: Final = """
WITH p AS (
  UPDATE incidents i SET state = 'open', updated_at = statement_timestamp()
  WHERE i.state = 'pending' AND i.device_id IN (SELECT device_id FROM stage_new_alerts)
    AND i.last_seen - i.opened_at >= make_interval(secs => i.min_duration_s)
  RETURNING i.incident_id
)
INSERT INTO incident_events (incident_id, action, actor, at)
SELECT incident_id, 'opened', 'system', statement_timestamp() FROM p
"""
"""A pending incident whose condition has now lasted its rule's minimum duration opens."""

INCIDENT_CLOSE_SQL: Final = f"""
WITH c AS (
  UPDATE incidents i SET
    state = CASE WHEN i.state = 'pending' THEN 'expired' ELSE 'resolved' END,
    resolved_at = statement_timestamp(),
    resolved_by = 'system',
    resolve_note = format('auto-closed: device reported for %%s s without the condition', %(quiet_s)s),
    updated_at = statement_timestamp()
  FROM device_latest l
  WHERE l.device_id = i.device_id AND i.state IN {_LIVE}
    AND i.device_id IN (SELECT device_id FROM stage_raw)
    AND l.ts >= i.last_seen + make_interval(secs => %(quiet_s)s)
  RETURNING i.incident_id, i.state, i.resolve_note
)
INSERT INTO incident_events (incident_id, action, actor, note, at)
SELECT incident_id, 'resolved', 'system', resolve_note, statement_timestamp() FROM c WHERE state = 'resolved'
"""  # noqa: S608 (identifiers are module constants, values are bound parameters)
"""Quiet time, in the device's own event time: a live incident of a device of this batch whose
newest reading is ``quiet_s`` past the incident's last sign closes (``resolved`` by ``system``; a
pending one ``expired``). A device that stopped reporting keeps its incident open."""

INCIDENT_SQL: Final = (INCIDENT_GROUP_SQL, INCIDENT_HOLD_SQL, INCIDENT_PROMOTE_SQL, INCIDENT_CLOSE_SQL)
"""Run in this order in the raw batch's transaction, after every alert insert."""
