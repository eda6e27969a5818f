-- The clock-skew rule's reference (the fleet's median lag) reads the devices whose newest reading
-- was written in the last few seconds. Without an index that was a scan of all of device_latest in
-- every merge: ~3 ms of a 5-reading merge's ~9 ms at 10,000 devices, growing with the fleet, not
-- with the load. The rule reads the newest entries of this index backwards (LIMIT), whatever the
-- planner estimates for a window that ends at statement_timestamp().
CREATE INDEX IF NOT EXISTS device_latest_ingest_idx ON device_latest (ingest_ts);
