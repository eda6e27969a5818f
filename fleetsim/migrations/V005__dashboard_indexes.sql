-- Dashboard read paths (issue 6). Only indexes: the dashboard owns no tables.
-- Each one backs a query of cloud/dashboard/queries/ that would otherwise scan a whole table.

-- Pipeline view: dead letters and rejects counted by arrival time, newest first.
CREATE INDEX IF NOT EXISTS deadletter_records_ingest_idx ON deadletter_records (ingest_ts DESC);
CREATE INDEX IF NOT EXISTS sensor_data_rejects_ingest_idx ON sensor_data_rejects (ingest_ts DESC);

-- Pipeline view freshness: newest aggregate written (max(updated_at)) without scanning the table.
CREATE INDEX IF NOT EXISTS sensor_data_agg_updated_idx ON sensor_data_agg (updated_at DESC);

-- Drill-down: newest alerts of one device (the primary key starts with device_id but then kind).
CREATE INDEX IF NOT EXISTS sensor_alerts_device_ts_idx ON sensor_alerts (device_id, event_ts DESC);

-- Trend view: alert distribution by kind/site/hour over a recent period, answered from the index
-- alone (index-only scan) instead of visiting every alert row of the period.
CREATE INDEX IF NOT EXISTS sensor_alerts_dist_idx ON sensor_alerts (event_ts) INCLUDE (kind, site, severity);
