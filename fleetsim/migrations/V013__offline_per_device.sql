-- A device's silence threshold follows its own reporting interval: with one fleet-wide
-- alerts.offline_after_s (60 s), the devices of devices.csv that report every 120 or 300 s raised
-- an `offline` alert between every two readings and showed offline on the dashboard half the time.
-- One definition for the streaming rules and the dashboard: a device is overdue after the larger of
-- the fleet's floor and `intervals` times its registered interval (none registered: the floor).
-- An SQL function of one expression, inlined by the planner: no call per row.
CREATE OR REPLACE FUNCTION offline_threshold_s(interval_s double precision, floor_s double precision,
                                               intervals double precision)
  RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN greatest(floor_s, intervals * coalesce(interval_s, 0));
