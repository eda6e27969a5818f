-- Per-device running state of the stuck/drift rules (issue 18, item 4; docs/streaming.md,
-- "History rules"). The rules need each device's last readings before a batch; reading them from
-- sensor_data is one index scan per device per batch, and evaluating the window functions over
-- those history rows cost ~95 us per reading with 10,000 devices (one new reading each per batch).
-- This table keeps the newest readings of each device as arrays, so a batch whose readings are
-- all newer than the state is judged from the arrays alone; anything else (a first reading, an
-- out-of-order or replayed batch, a device silent for over a day) takes the sensor_data path.
-- Derived data: the raw sink rewrites it in the batch's transaction; emptying it costs one
-- sensor_data read per device, nothing else.

CREATE TABLE device_rule_state (
  device_id   text PRIMARY KEY,
  seq         bigint NOT NULL,                -- seq of the newest reading folded in
  ts          timestamptz[] NOT NULL,         -- event times of the kept readings, oldest first
  temperature double precision[] NOT NULL,    -- °C, aligned with ts (NULL: not measured)
  humidity    double precision[] NOT NULL,    -- % RH
  co2         double precision[] NOT NULL,    -- ppm
  pressure    double precision[] NOT NULL,    -- hPa
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- DELETE: with the running state turned off the sink drops the state it no longer keeps current.
GRANT SELECT, INSERT, UPDATE, DELETE ON device_rule_state TO fleetsim_write;

-- Whoever empties sensor_data (a test, an operator starting over) empties the state derived from
-- it, so the rules never judge a reading against history that is gone.
CREATE FUNCTION device_rule_state_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE device_rule_state;
  RETURN NULL;
END $$;

CREATE TRIGGER sensor_data_truncate_rule_state AFTER TRUNCATE ON sensor_data
  FOR EACH STATEMENT EXECUTE FUNCTION device_rule_state_truncate();
