-- Incident notifications (issue 21, docs/alerts.md): incident_events is the outbox. The streaming
-- job's notifier publishes each opened/acknowledged/resolved event on MQTT and POSTs it to the
-- webhook, recording the outcome here, so a restart resumes where it stopped and undelivered
-- notifications can be counted (`fleetsim status`). Notes are not notified ('skipped').

ALTER TABLE incident_events
  ADD COLUMN mqtt_state      text NOT NULL DEFAULT 'pending'
    CHECK (mqtt_state IN ('pending', 'sent', 'skipped')),
  ADD COLUMN webhook_state   text NOT NULL DEFAULT 'pending'
    CHECK (webhook_state IN ('pending', 'sent', 'failed', 'skipped')),
  ADD COLUMN webhook_attempts integer NOT NULL DEFAULT 0,
  ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN last_error      text;

CREATE INDEX incident_events_outbox_idx ON incident_events (next_attempt_at)
  WHERE mqtt_state = 'pending' OR webhook_state = 'pending';

-- Operators add events (their steps and notes) but cannot mark a notification as delivered.
REVOKE INSERT ON incident_events FROM fleetsim_operate;
GRANT INSERT (incident_id, action, actor, note, at) ON incident_events TO fleetsim_operate;
