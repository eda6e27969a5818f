-- Fault-injection experiments (issue 7): one row per run, its scores per fault kind, and the
-- injected faults (the dashboard draws them as annotations on its trend charts).
-- Written by `fleetsim experiment run` as the writer role (INSERT/UPDATE only, no DELETE, no DDL);
-- read by the dashboard's reader role (SELECT only).

CREATE TABLE experiment_runs (
  run_id        text PRIMARY KEY CHECK (run_id ~ '^[A-Za-z0-9_.-]{1,128}$'),
  scenario      text NOT NULL,
  scenario_file text,
  status        text NOT NULL CHECK (status IN ('running', 'scored', 'failed')),
  wall_start    timestamptz NOT NULL,
  wall_end      timestamptz,
  sim_start     timestamptz,
  sim_end       timestamptz,
  seed          bigint,
  speed         text,
  duration_s    double precision,          -- simulated seconds
  devices       integer,
  injected      integer,                   -- detection faults injected (device x fault)
  detected      integer,
  false_alarms  integer,
  precision     double precision,          -- 0..1
  recall        double precision,          -- 0..1
  ttd_p50_s     double precision,          -- time to detect, event time, seconds
  ttd_p95_s     double precision,
  lost          bigint,                    -- readings made but absent from sensor_data
  duplicated    bigint,                    -- extra copies in Kafka
  late          bigint,                    -- rows stored with late = true
  report_dir    text,
  error         text,
  report        jsonb                      -- report.json without the per-alert list
);
CREATE INDEX experiment_runs_wall_start_idx ON experiment_runs (wall_start DESC);

CREATE TABLE experiment_scores (
  run_id        text NOT NULL REFERENCES experiment_runs (run_id),
  fault_kind    text NOT NULL,
  injected      integer NOT NULL,
  detected      integer NOT NULL,
  missed        integer NOT NULL,
  precision     double precision,
  recall        double precision,
  ttd_p50_s     double precision,
  ttd_p95_s     double precision,
  false_alarms  integer NOT NULL,
  PRIMARY KEY (run_id, fault_kind)
);

CREATE TABLE experiment_faults (
  run_id     text NOT NULL REFERENCES experiment_runs (run_id),
  device_id  text NOT NULL,
  fault      text NOT NULL,
  start_ts   timestamptz NOT NULL,           -- simulated (event) time
  end_ts     timestamptz NOT NULL,
  detected   boolean,                        -- NULL for integrity faults (not alert targets)
  ttd_s      double precision,
  PRIMARY KEY (run_id, device_id, fault, start_ts)
);
CREATE INDEX experiment_faults_time_idx ON experiment_faults (start_ts);

REVOKE ALL ON experiment_runs, experiment_scores, experiment_faults FROM PUBLIC;
GRANT SELECT ON experiment_runs, experiment_scores, experiment_faults TO fleetsim_read, fleetsim_write;
GRANT INSERT, UPDATE ON experiment_runs, experiment_scores, experiment_faults TO fleetsim_write;
