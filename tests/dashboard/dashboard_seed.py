"""A small, known dataset for the dashboard tests, written through the admin role.

Timestamps are relative to the database's ``now()`` at seeding time, so "online", "last minute"
and "active alert" mean the same thing to the test and to the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pg_support import execute

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

TABLES = (
    "sensor_data",
    "device_latest",
    "sensor_alerts",
    "sensor_data_agg",
    "pipeline_metrics",
    "deadletter_records",
    "sensor_data_rejects",
    "devices",
    "incident_events",
    "incidents",
)

# id, name, kind, type, site, lat, lon, enabled
DEVICES = [
    ("dev-ok-1", "Lobby", "simulated", "fixed", "alpha", 48.8566, 2.3522),
    ("dev-warn-2", "Server room", "simulated", "fixed", "alpha", 48.8600, 2.3400),
    ("dev-fail-3", "Cellar", "simulated", "fixed", "beta", 48.8500, 2.3600),
    ("dev-off-4", "Roof", "simulated", "fixed", "beta", 48.8650, 2.3300),
    ("truck-5", "Delivery truck", "simulated", "mobile", "gamma", 48.8700, 2.3700),
    ("real-6", "Bench sensor", "real", "fixed", "alpha", 48.8550, 2.3450),
    ("never-7", "Spare", "simulated", "fixed", "gamma", 48.8450, 2.3550),
]

# id -> (age of last reading in s, status, temperature, humidity, co2, pressure, battery)
LATEST = {
    "dev-ok-1": (5, "OK", 21.0, 40.0, 600.0, 1010.0, 80.0),
    "dev-warn-2": (10, "WARNING", 23.0, 50.0, 900.0, 1011.0, 10.0),
    "dev-fail-3": (3, "FAILURE", 25.0, 60.0, 1200.0, 1012.0, 50.0),
    "dev-off-4": (3600, "OK", 30.0, 70.0, 2000.0, 1013.0, 5.0),
    "truck-5": (2, "OK", 22.0, 45.0, 700.0, 1009.0, 70.0),
    "real-6": (4, "OK", 19.0, 55.0, 600.0, 1008.0, 90.0),
}


@dataclass(frozen=True)
class SeedFacts:
    """What the seeded dataset must show (derived by hand from the rows above)."""

    devices: int = 7
    online: int = 5
    offline: int = 2
    low_battery: int = 2  # battery < 15: dev-warn-2 (10), dev-off-4 (5)
    temperature_mean: float = 22.0  # online: 21, 23, 25, 22, 19
    humidity_mean: float = 50.0  # online: 40, 50, 60, 45, 55
    co2_mean: float = 800.0  # online: 600, 900, 1200, 700, 600
    active_alerts: int = 3
    previous_alerts: int = 1
    real_devices: tuple[str, ...] = ("real-6",)
    mobile_devices: tuple[str, ...] = ("truck-5",)
    sites: tuple[str, ...] = ("alpha", "beta", "gamma")
    late_rows_dropped: int = 10
    deadletters: dict[str, int] = field(default_factory=lambda: {"invalid_json": 3, "schema": 2})
    rejects: dict[str, int] = field(default_factory=lambda: {"schema": 1})


def clear(cfg: FleetsimConfig) -> None:
    """Empty every table the dashboard reads (admin role)."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE " + ", ".join(TABLES))
    finally:
        conn.close()


def seed(cfg: FleetsimConfig) -> SeedFacts:
    """Replace the dashboard's tables with the known dataset and return its facts."""
    clear(cfg)
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT ensure_sensor_data_partition(d::date) FROM generate_series("
                "(now() AT TIME ZONE 'UTC')::date - 2, (now() AT TIME ZONE 'UTC')::date + 1,"
                " interval '1 day') d"
            )
            for dev in DEVICES:
                cur.execute(
                    "INSERT INTO devices (device_id, name, kind, type, site, lat, lon) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    dev,
                )
            _seed_readings(cur)
            _seed_alerts(cur)
            _seed_aggregates(cur)
            _seed_pipeline(cur)
    finally:
        conn.close()
    return SeedFacts()


def _seed_readings(cur: object) -> None:
    homes = {d[0]: (d[5], d[6], d[4]) for d in DEVICES}
    for device_id, (age, status, t, h, c, p, b) in LATEST.items():
        lat, lon, site = homes[device_id]
        # 24 readings every 5 s ending at the latest one, values constant except the mobile track.
        step_lat = 0.0005 if device_id == "truck-5" else 0.0
        cur.execute(  # type: ignore[attr-defined]
            """
            INSERT INTO sensor_data (device_id, seq, ts, temperature, humidity, co2, pressure, battery,
                                     lat, lon, status, site, ingest_ts)
            SELECT %(id)s, 100 - k, now() - make_interval(secs => %(age)s + 5 * k),
                   %(t)s, %(h)s, %(c)s, %(p)s, %(b)s,
                   %(lat)s - %(step)s * k, %(lon)s - %(step)s * k, %(status)s, %(site)s,
                   now() - make_interval(secs => %(age)s + 5 * k)
              FROM generate_series(0, 23) k
            """,
            {
                "id": device_id,
                "age": age,
                "t": t,
                "h": h,
                "c": c,
                "p": p,
                "b": b,
                "lat": lat,
                "lon": lon,
                "step": step_lat,
                "status": status,
                "site": site,
            },
        )
        cur.execute(  # type: ignore[attr-defined]
            """
            INSERT INTO device_latest (device_id, seq, ts, temperature, humidity, co2, pressure, battery,
                                       lat, lon, status, site, ingest_ts)
            VALUES (%(id)s, 100, now() - make_interval(secs => %(age)s), %(t)s, %(h)s, %(c)s, %(p)s, %(b)s,
                    %(lat)s, %(lon)s, %(status)s, %(site)s, now() - make_interval(secs => %(age)s))
            """,
            {
                "id": device_id,
                "age": age,
                "t": t,
                "h": h,
                "c": c,
                "p": p,
                "b": b,
                "lat": lat,
                "lon": lon,
                "status": status,
                "site": site,
            },
        )


def _seed_alerts(cur: object) -> None:
    rows = [
        # device, kind, measurement, severity, value, threshold, age_s, site
        ("dev-warn-2", "extreme_high", "co2", "warning", 1600.0, 1500.0, 30, "alpha"),
        ("dev-fail-3", "status_failure", "", "critical", None, None, 20, "beta"),
        ("dev-warn-2", "low_battery", "battery", "warning", 10.0, 15.0, 60, "alpha"),
        ("dev-off-4", "offline", "", "warning", None, 60.0, 420, "beta"),
        ("dev-ok-1", "stuck", "temperature", "info", 21.0, None, 7200, "alpha"),
        ("truck-5", "drift", "humidity", "warning", 6.0, 5.0, 7300, "gamma"),
    ]
    for dev, kind, meas, sev, val, thr, age, site in rows:
        cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO sensor_alerts (device_id, kind, measurement, severity, value, threshold, event_ts,"
            " site, message) VALUES (%s, %s, %s, %s, %s, %s, now() - make_interval(secs => %s), %s, %s)",
            (dev, kind, meas, sev, val, thr, age, site, f"{kind} on {dev}"),
        )


def _seed_aggregates(cur: object) -> None:
    # 5-minute windows sliding by 1 minute over the last 2 hours, per site, per device and fleet-wide.
    # Window means grow linearly with age k so charts are not flat: temperature = base + 0.01 * k.
    cur.execute(  # type: ignore[attr-defined]
        """
        WITH w AS (
          SELECT date_trunc('minute', now()) - make_interval(mins => k + 5) AS ws, k
            FROM generate_series(0, 119) k),
        keys(scope, key, base) AS (
          VALUES ('site', 'alpha', 21.0), ('site', 'beta', 25.0), ('site', 'gamma', 22.0),
                 ('device', 'dev-ok-1', 21.0), ('device', 'dev-warn-2', 23.0), ('fleet', 'all', 22.0))
        INSERT INTO sensor_data_agg (scope, key, window_start, window_end, n_messages, n_warnings,
                                     n_failures, n_alerts, temperature_mean, temperature_min, temperature_max,
                                     humidity_mean, co2_mean, pressure_mean, battery_mean)
        SELECT keys.scope, keys.key, w.ws, w.ws + interval '5 minutes', 60, 1, 0, 0,
               keys.base + 0.01 * w.k, keys.base - 1, keys.base + 1,
               50.0, 600.0 + 10 * keys.base + w.k, 1010.0, 80.0
          FROM w CROSS JOIN keys
        """
    )


def _seed_pipeline(cur: object) -> None:
    cur.execute(  # type: ignore[attr-defined]
        """
        INSERT INTO pipeline_metrics (query_name, batch_id, recorded_at, input_rows, input_rate,
                                      processed_rate, batch_duration_ms, write_duration_ms,
                                      latency_p50_ms, latency_p95_ms, latency_max_ms, late_rows_dropped,
                                      malformed_rows)
        SELECT 'raw_sink', k, now() - make_interval(secs => 6 * (9 - k)), 100, 50.0, 60.0, 200 + k, 50,
               150.0, 400.0, 900.0, 1, 0
          FROM generate_series(0, 9) k
        """
    )
    # The windowed query's batches, both outside any page period: the newest with input two days
    # ago, a later one that aggregated nothing. The aggregate's freshness is the former's. Their
    # watermark is two days old while readings are written now: the windows are behind.
    cur.execute(  # type: ignore[attr-defined]
        """
        INSERT INTO pipeline_metrics (query_name, batch_id, recorded_at, input_rows, write_duration_ms,
                                      watermark)
        VALUES ('agg', 1, now() - interval '2 days', 30, 40, now() - interval '2 days 10 minutes'),
               ('agg', 2, now() - interval '2 days' + interval '4 hours', 0, 3,
                now() - interval '2 days 10 minutes')
        """
    )
    cur.execute(  # type: ignore[attr-defined]
        """
        INSERT INTO deadletter_records (kafka_partition, kafka_offset, kafka_ts, reason, detail, payload,
                                        ingest_ts)
        SELECT 0, k, now() - interval '1 minute',
               CASE WHEN k < 3 THEN 'invalid_json' ELSE 'schema' END, 'seeded', convert_to('{oops', 'UTF8'),
               now() - interval '1 minute'
          FROM generate_series(0, 4) k
        """
    )
    cur.execute(  # type: ignore[attr-defined]
        "INSERT INTO sensor_data_rejects (topic, kafka_partition, kafka_offset, reason, payload) "
        "VALUES ('sensors.telemetry', 0, 1, 'schema', '{}')"
    )


# device, site, severity, state (incidents of the live page's tests)
INCIDENTS = [
    ("dev-ok-1", "alpha", "warning", "open"),
    ("dev-fail-3", "beta", "critical", "acknowledged"),
    ("truck-5", "gamma", "warning", "resolved"),
]


def seed_incidents(cfg: FleetsimConfig) -> dict[str, int]:
    """:data:`INCIDENTS`, opened 10, 11 and 12 minutes ago; their ids by device."""
    ids = {}
    for k, (dev, site, sev, state) in enumerate(INCIDENTS):
        ids[dev] = execute(
            cfg,
            "admin",
            "INSERT INTO incidents (device_id, kind, measurement, site, severity, state, opened_at,"
            " last_seen,"
            " n_alerts, peak_value, threshold, acknowledged_by, resolved_by) VALUES (%s, 'extreme_high',"
            " 'co2', %s, %s, %s, now() - make_interval(mins => %s), now(), 4, 1900, 1500,"
            " CASE WHEN %s = 'acknowledged' THEN 'bob' END, CASE WHEN %s = 'resolved' THEN 'bob' END)"
            " RETURNING incident_id",
            (dev, site, sev, state, 10 + k, state, state),
        )[0][0]
    return ids
