-- Core schema v1: registry, raw readings (partitioned by day), latest-per-device, alerts,
-- sliding-window aggregates, rejects, pipeline metrics.
-- Applied by the migration runner as the schema owner (the admin role), once, in a transaction.
-- Login roles are created by the stack and made members of these group roles:
--   fleetsim_write: the streaming job and the bridge's registry look-ups
--   fleetsim_read : the dashboard (SELECT only)

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetsim_write') THEN
    CREATE ROLE fleetsim_write NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetsim_read') THEN
    CREATE ROLE fleetsim_read NOLOGIN;
  END IF;
END
$$;

-- ------------------------------------------------------------------------------ device registry
CREATE TABLE devices (
  device_id      text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
  name           text,
  kind           text NOT NULL DEFAULT 'simulated' CHECK (kind IN ('simulated', 'real')),
  type           text NOT NULL DEFAULT 'fixed' CHECK (type IN ('fixed', 'mobile')),
  site           text,
  lat            double precision CHECK (lat BETWEEN -90 AND 90),
  lon            double precision CHECK (lon BETWEEN -180 AND 180),
  payload_format text NOT NULL DEFAULT 'native' CHECK (payload_format IN ('native', 'senml', 'tasmota')),
  interval_s     double precision,
  placed         boolean NOT NULL DEFAULT true,   -- false: auto-registered, location unknown
  enabled        boolean NOT NULL DEFAULT true,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------- raw flow
-- The natural key is (device_id, seq); ts joins it because a partitioned table's keys must
-- contain the partition key. A replayed batch carries the same ts, so ON CONFLICT drops it.
CREATE TABLE sensor_data (
  device_id       text NOT NULL,
  seq             bigint NOT NULL,
  ts              timestamptz NOT NULL,
  temperature     double precision,
  humidity        double precision,
  co2             double precision,
  pressure        double precision,
  battery         double precision,
  lat             double precision,
  lon             double precision,
  status          text NOT NULL,
  fault           text,
  site            text,
  kafka_partition integer,
  kafka_offset    bigint,
  kafka_ts        timestamptz,
  bridge_ts       timestamptz,
  ingest_ts       timestamptz NOT NULL DEFAULT now(),
  late            boolean NOT NULL DEFAULT false,
  PRIMARY KEY (device_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX sensor_data_device_ts_idx ON sensor_data (device_id, ts DESC);
CREATE INDEX sensor_data_ts_idx ON sensor_data (ts);

-- The writer role may not CREATE; it asks this owner-run function for the day partitions a
-- batch needs. Idempotent and safe under concurrent callers.
CREATE FUNCTION ensure_sensor_data_partition(day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  part text := 'sensor_data_' || to_char(day, 'YYYYMMDD');
BEGIN
  IF to_regclass(part) IS NOT NULL THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext(part));
  IF to_regclass(part) IS NULL THEN
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF sensor_data FOR VALUES FROM (%L) TO (%L)',
      part, day::timestamptz AT TIME ZONE 'UTC', (day + 1)::timestamptz AT TIME ZONE 'UTC');
  END IF;
END
$$;

-- Retention: drop whole day partitions older than keep_days (cheap, no VACUUM storm).
CREATE FUNCTION drop_old_sensor_data_partitions(keep_days integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  r record;
  dropped integer := 0;
BEGIN
  FOR r IN
    SELECT c.relname FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = 'sensor_data'
      AND c.relname ~ '^sensor_data_[0-9]{8}$'
      AND to_date(substring(c.relname from 13), 'YYYYMMDD') < (now() AT TIME ZONE 'UTC')::date - keep_days
  LOOP
    EXECUTE format('DROP TABLE %I', r.relname);
    dropped := dropped + 1;
  END LOOP;
  RETURN dropped;
END
$$;

-- Latest reading per device, kept by the sink, so the live view never scans sensor_data.
CREATE TABLE device_latest (
  device_id   text PRIMARY KEY,
  seq         bigint NOT NULL,
  ts          timestamptz NOT NULL,
  temperature double precision,
  humidity    double precision,
  co2         double precision,
  pressure    double precision,
  battery     double precision,
  lat         double precision,
  lon         double precision,
  status      text NOT NULL,
  fault       text,
  site        text,
  ingest_ts   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_latest_ts_idx ON device_latest (ts);

-- Rows the job could not parse (kept, never silently nulled).
CREATE TABLE sensor_data_rejects (
  topic           text NOT NULL,
  kafka_partition integer NOT NULL,
  kafka_offset    bigint NOT NULL,
  kafka_ts        timestamptz,
  reason          text NOT NULL,
  payload         text,
  ingest_ts       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- Bridge dead letters, mirrored from the dead-letter topic so the dashboard can count them.
CREATE TABLE deadletter_records (
  kafka_partition integer NOT NULL,
  kafka_offset    bigint NOT NULL,
  kafka_ts        timestamptz,
  reason          text NOT NULL,
  detail          text,
  source_topic    text,
  payload         bytea,
  ingest_ts       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kafka_partition, kafka_offset)
);
CREATE INDEX deadletter_records_ts_idx ON deadletter_records (kafka_ts);

-- ------------------------------------------------------------------------------------- alerts
CREATE TABLE sensor_alerts (
  alert_id    bigserial,
  device_id   text NOT NULL,
  kind        text NOT NULL,            -- extreme_high, extreme_low, status_warning, status_failure,
                                        -- low_battery, stuck, drift, offline
  measurement text NOT NULL DEFAULT '', -- '' for alerts about the device as a whole
  severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  value       double precision,
  threshold   double precision,
  event_ts    timestamptz NOT NULL,
  detected_at timestamptz NOT NULL DEFAULT now(),
  seq         bigint,
  site        text,
  fault       text,                     -- ground truth active at event time, for scoring
  message     text,
  PRIMARY KEY (device_id, kind, measurement, event_ts)
);
CREATE INDEX sensor_alerts_event_ts_idx ON sensor_alerts (event_ts DESC);
CREATE INDEX sensor_alerts_detected_idx ON sensor_alerts (detected_at DESC);

-- ------------------------------------------------------------------------ windowed aggregates
CREATE TABLE sensor_data_agg (
  scope            text NOT NULL CHECK (scope IN ('device', 'site', 'fleet')),
  key              text NOT NULL,
  window_start     timestamptz NOT NULL,
  window_end       timestamptz NOT NULL,
  n_messages       bigint NOT NULL,
  n_warnings       bigint NOT NULL,
  n_failures       bigint NOT NULL,
  n_alerts         bigint NOT NULL,
  temperature_mean double precision, temperature_min double precision, temperature_max double precision,
  humidity_mean    double precision, humidity_min    double precision, humidity_max    double precision,
  co2_mean         double precision, co2_min         double precision, co2_max         double precision,
  pressure_mean    double precision, pressure_min    double precision, pressure_max    double precision,
  battery_mean     double precision, battery_min     double precision, battery_max     double precision,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key, window_start, window_end)
);
CREATE INDEX sensor_data_agg_window_idx ON sensor_data_agg (scope, window_start);

-- --------------------------------------------------------------------------- pipeline metrics
CREATE TABLE pipeline_metrics (
  query_name        text NOT NULL,
  batch_id          bigint NOT NULL,
  run_id            text,
  recorded_at       timestamptz NOT NULL DEFAULT now(),
  input_rows        bigint,
  input_rate        double precision,
  processed_rate    double precision,
  batch_duration_ms bigint,
  write_duration_ms bigint,
  latency_p50_ms    double precision,
  latency_p95_ms    double precision,
  latency_max_ms    double precision,
  watermark         timestamptz,
  late_rows_dropped bigint,
  malformed_rows    bigint,
  PRIMARY KEY (query_name, batch_id)
);
CREATE INDEX pipeline_metrics_recorded_idx ON pipeline_metrics (recorded_at DESC);

-- ----------------------------------------------------------------------------------- privileges
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION ensure_sensor_data_partition(date) FROM PUBLIC;
REVOKE ALL ON FUNCTION drop_old_sensor_data_partitions(integer) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO fleetsim_write, fleetsim_read;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO fleetsim_read, fleetsim_write;
GRANT INSERT, UPDATE ON sensor_data, device_latest, sensor_data_rejects, deadletter_records,
  sensor_alerts, sensor_data_agg, pipeline_metrics, devices TO fleetsim_write;
GRANT USAGE ON SEQUENCE sensor_alerts_alert_id_seq TO fleetsim_write;
GRANT EXECUTE ON FUNCTION ensure_sensor_data_partition(date) TO fleetsim_write;
