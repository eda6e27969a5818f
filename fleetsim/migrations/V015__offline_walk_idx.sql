-- The silence rule looks up, per Kafka partition of the batch, the devices it has not judged yet
-- and silent long enough. With V012's partial index on (ts) beside device_latest_ts_idx, the
-- planner (a third of the table estimated for a range it cannot see) picked the full index or a
-- heap scan, and read the row of every device judged long ago in every merge: 4,300 buffer hits,
-- 15-19 ms, a third of a merge in bench_e2e's at-rest step. Led by the partition, only this index
-- serves the lookup. device_latest_ts_idx goes: nothing reads device_latest by ts any more (the
-- pipeline view's unused max(ts) went with it), and one index fewer is one entry fewer to write
-- on every reading's non-HOT update.
CREATE INDEX IF NOT EXISTS device_latest_unjudged_part_idx ON device_latest (kafka_partition, ts)
  WHERE offline_for IS DISTINCT FROM ts;
DROP INDEX IF EXISTS device_latest_unjudged_idx;
DROP INDEX IF EXISTS device_latest_ts_idx;
