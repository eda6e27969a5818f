"""One SparkSession for every streaming test (a JVM start costs ~5-15 s here).

local[2], 2 shuffle partitions, no UI; the connector jars are on it when the set-up cache has
them, so Kafka-reading tests can share the same session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import os
    import sys

    from pyspark.sql import SparkSession

    jvm = REPO / ".cache" / "jvm"
    jars = sorted((jvm / "spark-kafka").glob("*.jar")) + sorted((jvm / "spark-ext").glob("*.jar"))
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    # Python workers (mapInArrow: the executor-side raw writer) need the venv's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("fleetsim-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # As the job runs: the windowed flow's deduplication (transformWithState) needs RocksDB.
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
    )
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
