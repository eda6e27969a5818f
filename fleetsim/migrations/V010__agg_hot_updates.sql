-- The windowed flow rewrites each open window about ten times (update mode re-emits a window with
-- its full value in every 30 s batch while it is open, 5-minute windows). With updated_at indexed
-- (V005) every rewrite was a non-HOT update that added an entry to all three indexes, and full
-- pages left no room to rewrite in place. The dashboard's freshness figure for the aggregates now
-- reads pipeline_metrics (the windowed query's newest batch with input), so the index goes; free
-- space on every page lets a rewrite stay on its page without touching an index (a HOT update).
-- bench/bench_agg_upsert.py measures both layouts side by side.
DROP INDEX IF EXISTS sensor_data_agg_updated_idx;
ALTER TABLE sensor_data_agg SET (fillfactor = 70);
