"""The registry copy the streaming queries join, on real Spark + PostgreSQL.

A micro-batch must read the cached copy (no JDBC query per batch: that was ~30 % of a raw batch's
time), and an edit of the registry must reach the batches after the next check, without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from fleetsim.cloud.streaming.registry_cache import RegistryCache
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _set_site(cfg: FleetsimConfig, device: str, site: str) -> None:
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO devices (device_id, site) VALUES (%s, %s) "
                "ON CONFLICT (device_id) DO UPDATE SET site = EXCLUDED.site",
                (device, site),
            )
    finally:
        conn.close()


@pytest.fixture
def cache(spark: Any, postgres: FleetsimConfig) -> Iterator[RegistryCache]:
    # Every poll() checks: the test decides when.
    cfg = postgres.with_overrides({"spark.registry_refresh_s": 0.001})
    _set_site(cfg, "rc-1", "north")
    c = RegistryCache(spark, cfg)
    c.start()
    yield c
    c.close()


def test_batches_read_the_cached_copy_until_the_registry_changes(
    spark: Any, cache: RegistryCache, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    inbox = tmp_path / "in"
    inbox.mkdir()
    stream = spark.readStream.schema("device_id string, n int").json(str(inbox))
    joined = stream.join(F.broadcast(cache.frame.select("device_id", "site")), "device_id", "left")
    seen: dict[int, str | None] = {}

    def collect(df: Any, _batch_id: int) -> None:
        seen.update({r["n"]: r["site"] for r in df.collect()})

    query = (
        joined.writeStream.foreachBatch(collect)
        .trigger(processingTime="0.2 seconds")
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .start()
    )

    def reading(n: int) -> str | None:
        (inbox / f"{n}.json").write_text(json.dumps({"device_id": "rc-1", "n": n}) + "\n")
        wait_until(lambda: n in seen, 60, what=f"batch with reading {n}")
        return seen[n]

    try:
        assert reading(1) == "north"
        _set_site(cache.cfg, "rc-1", "south")
        assert reading(2) == "north", "a batch re-read the registry: the copy is not cached"
        assert cache.poll() is True
        assert reading(3) == "south", "the refresh did not reach the next batch"
        assert cache.poll() is False  # unchanged since: the copy stays
        assert cache.refreshes == 1
    finally:
        query.stop()
