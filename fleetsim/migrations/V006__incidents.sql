-- Incidents (issue 21, docs/alerts.md): consecutive alerts of one kind on one device grouped into
-- one incident with a lifecycle (pending -> open -> acknowledged -> resolved), written by the
-- streaming sink in the raw batch's transaction (cloud/streaming/history_sql.py), changed by
-- operators (`fleetsim alerts`, the dashboard) through the new fleetsim_operate group, which may
-- change only incident state and notes.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetsim_operate') THEN
    CREATE ROLE fleetsim_operate NOLOGIN;
  END IF;
END
$$;

-- Device class for the per-class alert rules ([alerts] rules): NULL = unknown (fleet-wide rule).
ALTER TABLE devices ADD COLUMN IF NOT EXISTS indoor boolean;

CREATE TABLE incidents (
  incident_id     bigserial PRIMARY KEY,
  device_id       text NOT NULL,
  kind            text NOT NULL,
  measurement     text NOT NULL DEFAULT '',
  site            text,
  severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  -- pending: condition seen, shorter than the rule's min_duration_s (not shown, not notified)
  -- expired: a pending incident whose condition ended before min_duration_s
  state           text NOT NULL CHECK (state IN ('pending', 'open', 'acknowledged', 'resolved', 'expired')),
  opened_at       timestamptz NOT NULL,       -- event time of the first alert
  last_seen       timestamptz NOT NULL,       -- event time of the last alert or reading beyond the clear bound
  n_alerts        bigint NOT NULL,            -- raw alert rows grouped (sensor_alerts keeps them)
  peak_value      double precision,           -- furthest value beyond the threshold
  threshold       double precision,
  clear_threshold double precision,           -- hysteresis bound (extreme_* only)
  min_duration_s  double precision NOT NULL DEFAULT 0,
  fault           text,                       -- ground truth of the first alert, for scoring
  detected_at     timestamptz NOT NULL DEFAULT now(),
  acknowledged_at timestamptz,
  acknowledged_by text,
  ack_note        text,
  resolved_at     timestamptz,
  resolved_by     text,                       -- 'system' when closed after alerts.incident_quiet_s
  resolve_note    text,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
-- At most one live incident per (device, kind, measurement): the sink's upsert target.
CREATE UNIQUE INDEX incidents_live_key ON incidents (device_id, kind, measurement)
  WHERE state IN ('pending', 'open', 'acknowledged');
CREATE INDEX incidents_opened_idx ON incidents (opened_at DESC);
CREATE INDEX incidents_state_idx ON incidents (state) WHERE state IN ('open', 'acknowledged');

-- Who did what and when, one row per step (opened, acknowledged, resolved, note), with its note.
-- Also the notification outbox: one message per opened/acknowledged/resolved row.
CREATE TABLE incident_events (
  event_id    bigserial PRIMARY KEY,
  incident_id bigint NOT NULL REFERENCES incidents (incident_id),
  action      text NOT NULL CHECK (action IN ('opened', 'acknowledged', 'resolved', 'note')),
  actor       text NOT NULL,
  note        text,
  at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_events_incident_idx ON incident_events (incident_id, event_id);

-- Transitions are checked in the database, whoever writes: a client cannot skip or reverse a step.
CREATE FUNCTION incidents_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state = NEW.state
     OR (OLD.state = 'pending' AND NEW.state IN ('open', 'expired'))
     OR (OLD.state = 'open' AND NEW.state IN ('acknowledged', 'resolved'))
     OR (OLD.state = 'acknowledged' AND NEW.state = 'resolved') THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'incident %: % -> % is not allowed', OLD.incident_id, OLD.state, NEW.state
    USING ERRCODE = 'check_violation';
END
$$;
CREATE TRIGGER incidents_transition BEFORE UPDATE OF state ON incidents
  FOR EACH ROW EXECUTE FUNCTION incidents_check_transition();

-- ----------------------------------------------------------------------------------- privileges
REVOKE ALL ON incidents, incident_events FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO fleetsim_operate;
GRANT USAGE ON SCHEMA public TO fleetsim_operate;
GRANT SELECT ON incidents, incident_events TO fleetsim_read, fleetsim_write;
-- The sink: creates and updates incidents, logs the system's steps.
GRANT INSERT, UPDATE ON incidents, incident_events TO fleetsim_write;
GRANT USAGE ON SEQUENCE incidents_incident_id_seq, incident_events_event_id_seq TO fleetsim_write;
-- Operators: the lifecycle columns only, and notes. Nothing else anywhere.
GRANT UPDATE (state, acknowledged_at, acknowledged_by, ack_note, resolved_at, resolved_by, resolve_note,
              updated_at) ON incidents TO fleetsim_operate;
GRANT INSERT ON incident_events TO fleetsim_operate;
GRANT USAGE ON SEQUENCE incident_events_event_id_seq TO fleetsim_operate;
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO fleetsim_operate', current_database());
END
$$;
