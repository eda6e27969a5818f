-- Device registry (issue 11): push registry changes to the bridge's in-memory directory.
-- Every statement that changes `devices` (device add/disable/enable/place, seeding, the
-- bridge's own auto-registration) sends one NOTIFY on channel `fleetsim_devices`; the directory
-- LISTENs and reloads at once, so a newly added device is known before it can publish. Its
-- periodic reload (bridge.registry_refresh_s) stays as the backstop for a lost connection.
-- Statement-level, so a 10k-row seed costs one notification, not 10k.

CREATE FUNCTION notify_devices_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('fleetsim_devices', TG_OP);
  RETURN NULL;
END
$$;

CREATE TRIGGER devices_changed
  AFTER INSERT OR UPDATE OR DELETE ON devices
  FOR EACH STATEMENT EXECUTE FUNCTION notify_devices_changed();
