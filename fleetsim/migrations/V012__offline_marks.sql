-- Cost per merge of a loader that runs often (the real-time raw flow merges every ~50 ms):
-- * the silence rule re-tried, in every merge, the offline alert of every device still silent
--   (10,000 of them: ~45 ms a merge, all conflicts on the alert's key). device_latest.offline_for
--   holds the newest ts a device was judged silent on; the rule skips it until it reports again;
-- * the hysteresis statement read every live incident; only threshold incidents (with a clear
--   bound) can be held, and a silent fleet's offline incidents have none.
ALTER TABLE device_latest ADD COLUMN IF NOT EXISTS offline_for timestamptz;
CREATE INDEX IF NOT EXISTS incidents_clearable_idx ON incidents (device_id)
  WHERE state IN ('open', 'acknowledged') AND clear_threshold IS NOT NULL;
-- The devices the silence rule may still have to judge, by age: a silent fleet already marked
-- costs a merge nothing (the rule's clause is this predicate, word for word).
CREATE INDEX IF NOT EXISTS device_latest_unjudged_idx ON device_latest (ts)
  WHERE offline_for IS DISTINCT FROM ts;
