-- Two rules read where a device's newest reading came from:
-- * clock skew measures a device's clock against the fleet's by how long before reaching Kafka a
--   reading was stamped (kafka_ts - ts), not before reaching the table (ingest_ts - ts): the second
--   also counts the pipeline's own backlog, which differs between Kafka partitions while a
--   restarted job (or the real-time raw flow's loaders) catch up, and flagged sound clocks;
-- * the silence rule judges a device only against readings of its own Kafka partition (an ordered
--   log), for the same reason.
ALTER TABLE device_latest ADD COLUMN IF NOT EXISTS kafka_ts timestamptz;
ALTER TABLE device_latest ADD COLUMN IF NOT EXISTS kafka_partition integer;
