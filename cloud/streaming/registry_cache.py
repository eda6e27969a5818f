"""The device registry as the streaming queries see it: one cached copy, re-read when it changes.

The raw and windowed flows join every micro-batch with the registry (device class for the
per-class alert rules, site for the windows). Read through JDBC, every batch re-ran a PostgreSQL
query for it (~20 ms of a raw batch's ~520 ms at 100 msg/s on a 2-core machine, and one more
connection per batch on PostgreSQL; the broadcast join itself costs ~30 ms more,
``bench/bench_batch_cost.py --registry-uncached`` / ``--raw-without-registry``). Cached, a batch
reads the copy held by Spark's cache manager; the relation is still the JDBC one, so a refresh
(unpersist, cache again) makes the next batch read the table once, whichever query gets there
first.

A refresh happens only when the registry changed: every ``spark.registry_refresh_s`` the driver
compares a fingerprint of the columns the flows use (one small query through psycopg2), so an
edit reaches the alert rules and the windows within that period plus one batch, without a restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from fleetsim.kernel.clients import pg_connect, pg_dsn_kwargs
from fleetsim.kernel.config import FleetsimConfig

log = logging.getLogger("fleetsim.stream.registry")

REGISTRY_QUERY: Final = "(SELECT device_id, site, indoor, type FROM devices) AS registry"
FINGERPRINT_SQL: Final = (
    "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', device_id, site, indoor::text, type), "
    "',' ORDER BY device_id), '')) FROM devices"
)
"""Changes whenever a device the flows can see is added, removed or re-classed (10k devices: a
few ms in PostgreSQL)."""


def registry_relation(spark: Any, cfg: FleetsimConfig) -> Any:
    """The registry's columns the flows use, as a JDBC relation read with the writer role."""
    kw = pg_dsn_kwargs(cfg, "writer")
    url = f"jdbc:postgresql://{kw['host']}:{kw['port']}/{kw['dbname']}"
    props = {
        "user": kw["user"],
        "password": kw["password"],
        "driver": "org.postgresql.Driver",
        "sslmode": kw["sslmode"],
        "ApplicationName": "fleetsim-stream-registry",
    }
    return spark.read.jdbc(url, REGISTRY_QUERY, properties=props)


class RegistryCache:
    """One cached registry relation shared by the queries, refreshed when the table changes."""

    def __init__(self, spark: Any, cfg: FleetsimConfig, clock: Any = time.monotonic) -> None:
        self.cfg = cfg
        self.frame = registry_relation(spark, cfg)
        self._clock = clock
        self._fingerprint: tuple[int, str] | None = None
        self._checked_at = float("-inf")
        self.refreshes = 0
        """How many times the copy was dropped because the table changed (tests, logs)."""

    def fingerprint(self) -> tuple[int, str]:
        conn = pg_connect(self.cfg, "writer", application_name="fleetsim-stream-registry")
        try:
            with conn.cursor() as cur:
                cur.execute(FINGERPRINT_SQL)
                count, digest = cur.fetchone()
            conn.rollback()
        finally:
            conn.close()
        return int(count), str(digest)

    def start(self) -> Any:
        """Take the first fingerprint and mark the relation for caching; returns the frame. Without
        a fingerprint (PostgreSQL unreachable) the first successful check refreshes the copy."""
        self._checked_at = self._clock()
        try:
            self._fingerprint = self.fingerprint()
        except Exception as exc:  # the queries' own restarts wait for PostgreSQL
            log.warning("registry check failed at start: %s", str(exc).splitlines()[0])
        self.frame.cache()
        return self.frame

    def poll(self) -> bool:
        """Re-check the table if ``spark.registry_refresh_s`` has passed; drop the cached copy when
        it changed (the next batch reads it again). True when a refresh happened. A failed check
        (PostgreSQL down) keeps the current copy and is retried at the next period."""
        now = self._clock()
        if now - self._checked_at < self.cfg.spark.registry_refresh_s:
            return False
        self._checked_at = now
        try:
            current = self.fingerprint()
        except Exception as exc:  # the job must outlive a PostgreSQL restart
            log.warning("registry check failed, keeping the cached copy: %s", str(exc).splitlines()[0])
            return False
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        self.frame.unpersist()
        self.frame.cache()
        self.refreshes += 1
        log.info("device registry changed (%d devices): the next batches read it again", current[0])
        return True

    def close(self) -> None:
        self.frame.unpersist()
