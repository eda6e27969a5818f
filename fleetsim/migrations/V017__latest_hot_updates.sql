-- device_latest takes one upsert per device per merge: at 10,000 devices and 5,000 msg/s, the
-- largest statement of the loader's merge (20 ms for ~950 devices, 13,000 buffer hits and 450 kB
-- of WAL, pg_stat_statements in bench_batch_cost). None of those updates was HOT: ingest_ts
-- (V014's index) and ts (V015's partial index) change with every reading, so each update wrote a
-- new heap tuple plus an entry in all three indexes, and left dead ones for vacuum. Here no
-- index covers a column that changes with every reading, so PostgreSQL updates the row in place
-- on its page (HOT, with room left by the fill factor):
--
-- * The silence rule's walk (V015) goes through a coarse copy of ts, its 30 s bucket: a device
--   reporting every 2 s changes it once in 15 readings, so 14 of 15 updates stay HOT. The walk
--   reads the bucket's range and keeps the exact ts < bound as a filter: a device is read in
--   vain only when its newest reading lies within 30 s after the bound (offline_after_s before
--   the partition's reference), which a fleet reporting more often than every offline_after_s
--   - 30 s never does.
-- * The clock-skew rule's reference (V014) no longer reads device_latest: each merge stores its
--   devices' lags in fleet_clock_lag (one row a merge) and reads the other merges' newest.
--
-- Throw-away harness on this project's 2-core machine (10,000 devices, merges of 950 distinct
-- devices every 0.2 s of event time, the sink's upsert, alternating layouts, medians of 280):
-- 22.7 ms a merge with the old indexes, 16.3 ms with these (93 % of the updates HOT), 12.9 with
-- no secondary index at all; the table 15 MiB -> 4.4 MiB. Fill factor 50: a merge that updates
-- every device of a page (a small fleet, every merge) finds room for all of them; at 70 only
-- ~40 % of such updates were HOT (the old versions are pruned only once the merge committed).
ALTER TABLE device_latest SET (fillfactor = 50);
ALTER TABLE device_latest ADD COLUMN IF NOT EXISTS ts_bucket timestamptz
  GENERATED ALWAYS AS (date_bin('30 seconds', ts, timestamptz '2000-01-01 00:00:00+00')) STORED;
ALTER TABLE device_latest ADD COLUMN IF NOT EXISTS unjudged boolean
  GENERATED ALWAYS AS (offline_for IS DISTINCT FROM ts) STORED;
CREATE INDEX IF NOT EXISTS device_latest_silent_idx ON device_latest (kafka_partition, ts_bucket)
  WHERE unjudged;
DROP INDEX IF EXISTS device_latest_unjudged_part_idx;
DROP INDEX IF EXISTS device_latest_ingest_idx;

-- The fleet's clock: per merge, its devices' freshest lags (kafka_ts - ts, seconds). Derived and
-- short-lived: each merge deletes rows older than a minute (any writer's, skipping rows another
-- merge is deleting), and whoever empties device_latest empties this with it.
CREATE TABLE IF NOT EXISTS fleet_clock_lag (
  written_at timestamptz NOT NULL,         -- the merge's statement time
  devices    text[] NOT NULL,              -- device ids, aligned with lags
  lags       double precision[] NOT NULL   -- seconds from the reading's ts to its Kafka timestamp
);
CREATE INDEX IF NOT EXISTS fleet_clock_lag_written_idx ON fleet_clock_lag (written_at);
GRANT SELECT, INSERT, DELETE ON fleet_clock_lag TO fleetsim_write;
-- The prune locks the rows it deletes (FOR UPDATE SKIP LOCKED), which takes UPDATE on a column.
GRANT UPDATE (written_at) ON fleet_clock_lag TO fleetsim_write;

CREATE FUNCTION fleet_clock_lag_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE fleet_clock_lag;
  RETURN NULL;
END $$;

CREATE TRIGGER device_latest_truncate_fleet_clock AFTER TRUNCATE ON device_latest
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_clock_lag_truncate();
