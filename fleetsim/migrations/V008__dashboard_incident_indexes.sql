-- Dashboard read paths on incidents (issue 21, item 8). Only indexes.

-- Device drill-down (live page, every refresh while a device is chosen): the device's incident
-- history, newest first. Without it the query walks incidents_opened_idx over every incident of
-- every device (the live-key index covers live incidents only), and the history only grows.
CREATE INDEX IF NOT EXISTS incidents_device_opened_idx ON incidents (device_id, opened_at DESC);
