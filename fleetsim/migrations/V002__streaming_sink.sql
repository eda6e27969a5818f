-- Streaming sink (cloud/streaming/pgsink.py): each micro-batch is COPYed into session temp
-- tables (ON COMMIT DELETE ROWS) and merged with INSERT ... ON CONFLICT in one transaction.
-- The stack revokes every database privilege from PUBLIC (TEMPORARY included), so the writer
-- group gets TEMPORARY back here, and nobody else.
DO $$
BEGIN
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO fleetsim_write', current_database());
END
$$;
