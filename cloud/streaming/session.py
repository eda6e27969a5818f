"""SparkSession for the job: connector jars from the set-up cache, loopback-only UI, RocksDB state."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import MissingDependencyError

CONNECTOR_JAR_GLOB = "spark-sql-kafka-0-10_*.jar"


EXTENSION_JAR = "spark-ext/fleetsim-spark-ext.jar"
"""Fleetsim's own Spark operators (fleetsim/jvm/src), under ``stack.jvm_dir``, built by ``make setup``."""


def connector_jars(cfg: FleetsimConfig) -> list[Path]:
    """Every jar under ``<jvm_dir>/spark-kafka`` (connector + its runtime deps + JDBC driver), and
    Fleetsim's extension when the windowed flow's deduplication needs it."""
    directory = cfg.stack.jvm_dir / "spark-kafka"
    jars = sorted(directory.glob("*.jar"))
    if not any(j.match(CONNECTOR_JAR_GLOB) for j in jars):
        raise MissingDependencyError(
            f"Spark Kafka connector jars not found in {directory}: run `make setup` (nothing is "
            "downloaded at run time)"
        )
    if cfg.spark.dedup == "buckets":
        ext = cfg.stack.jvm_dir / EXTENSION_JAR
        if not ext.is_file():
            raise MissingDependencyError(
                f'Fleetsim\'s Spark extension {ext} not found (spark.dedup = "buckets" needs it): '
                "run `make setup`"
            )
        jars.append(ext)
    return jars


STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "memory": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


def session_conf(cfg: FleetsimConfig, master: str | None = None, ui: bool = True) -> dict[str, str]:
    """The Spark settings the job runs with (separate from building, so tests can read them)."""
    s = cfg.spark
    conf: dict[str, str] = {
        "spark.master": task_slots_master(cfg, master or s.master),
        "spark.app.name": s.app_name,
        "spark.jars": ",".join(str(j.resolve()) for j in connector_jars(cfg)),
        "spark.driver.memory": s.driver_memory,
        # The whole heap from the start: G1 otherwise commits it step by step over the first
        # minutes and hands regions back after quiet spells, and the soak read that as growth.
        "spark.driver.extraJavaOptions": f"-Xms{s.driver_memory} -XX:+AlwaysPreTouch",
        "spark.driver.host": s.driver_host,
        "spark.driver.bindAddress": s.bind_address,
        "spark.ui.enabled": "true" if ui else "false",
        "spark.ui.port": str(s.ui_port),
        "spark.ui.showConsoleProgress": "false",
        "spark.port.maxRetries": "0",  # a taken UI port is an error, not a silent 4041
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        # Dedup state holds every (device_id, seq) of the last watermark delay (600k keys at
        # 5k msg/s and 2 min): RocksDB keeps that off the JVM heap; changelog checkpointing makes
        # the per-batch commit a small append instead of a snapshot upload.
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[s.state_store],
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # One memory budget shared by every store's memtables and block cache, instead of
        # 64 MiB memtables and a cache per store and partition that fill up over hours.
        "spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage": "true",
        "spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB": str(s.state_memory_mb),
        "spark.executorEnv.MALLOC_ARENA_MAX": "2",  # a cluster's executors: see build_session
        "spark.sql.streaming.noDataMicroBatches.enabled": "true",
        # The default (FileContext) manager forks `readlink` and `chmod` for every checkpoint file
        # on a local disk (no native Hadoop library here): ~380 processes a minute at rest, 160
        # per windowed batch, ~0.45 s of its 2.2 s. Local renames are atomic with either manager.
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
        ),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Adaptive execution re-plans each foreachBatch DataFrame (three optimizer passes instead
        # of one per raw batch) and posts its plan's explain string to the listener bus on every
        # update, for batches too small to need it: off, the job used 0.39 instead of 0.58 core at
        # 100 msg/s and a raw batch took 414 instead of 515 ms (bench_batch_cost.py, docs/streaming.md).
        "spark.sql.adaptive.enabled": "false",
        "spark.redaction.regex": "(?i)secret|password|token|jaas",
        # FIFO would let a long windowed batch hold every core while raw rows (the low-latency
        # flow) wait; with FAIR pools the raw query always gets its share (see SCHEDULER_POOLS).
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(pools_file(cfg)),
    }
    return conf


_LOCAL = re.compile(r"local\[(\*|\d+)(,\d+)?\]")


def task_slots_master(cfg: FleetsimConfig, master: str) -> str:
    """``master``, with enough task slots for the real-time raw query on a local master.

    A real-time query holds one task slot per Kafka partition for as long as it runs (its tasks
    are long-running); the windowed and dead-letter micro-batches need slots beside them. On a
    local master the slots are threads, not cores: ``local[*]`` on 2 cores becomes ``local[8]``
    with 4 partitions and 4 shuffle partitions. A cluster's executors must offer as many cores
    (docs/scale-out.md)."""
    m = _LOCAL.fullmatch(master)
    if cfg.spark.raw_sink != "realtime" or m is None:
        return master
    slots = (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
    need = cfg.kafka.partitions + cfg.spark.shuffle_partitions
    return master if slots >= need else f"local[{need}{m.group(2) or ''}]"


SCHEDULER_POOLS = {"raw": (3, 1), "agg": (1, 0), "deadletter": (1, 0)}
"""Query -> (weight, minShare): the raw flow first; the windows catch up with bigger batches,
which amortise their fixed per-batch cost."""


def pools_file(cfg: FleetsimConfig) -> Path:
    return (cfg.run_dir / "spark-pools.xml").resolve()


def write_pools(path: Path) -> Path:
    """The FAIR scheduler's allocation file (one pool per query); written by build_session."""
    pools = "".join(
        f'  <pool name="{name}"><schedulingMode>FIFO</schedulingMode><weight>{w}</weight>'
        f"<minShare>{m}</minShare></pool>\n"
        for name, (w, m) in SCHEDULER_POOLS.items()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0"?>\n<allocations>\n{pools}</allocations>\n', encoding="utf-8")
    return path.resolve()


def build_session(cfg: FleetsimConfig, master: str | None = None, ui: bool = True) -> Any:
    """Start (or reuse) the SparkSession. The web UI binds to SPARK_LOCAL_IP, hence the env."""
    # Lazy: pyspark takes ~0.2 s to import; the conf and jar helpers above are used without it.
    from pyspark.sql import SparkSession

    # The JVM reads this at launch: Spark's web UI binds 0.0.0.0 unless it is set.
    os.environ["SPARK_LOCAL_IP"] = cfg.spark.bind_address
    # The raw flow's writer runs in Python workers on the executors (executor_sink.py): they need
    # this interpreter's packages (fleetsim, psycopg2, pyarrow), not the first python3 on PATH.
    # SparkContext reads the variable when it starts (the spark.pyspark.python conf it does not).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The JVM's native allocations (RocksDB, the JIT, NIO) otherwise spread over up to 8 glibc
    # arenas per core, 64 MiB each, that fill with fragments and are never handed back; the
    # child JVM inherits the cap.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    write_pools(pools_file(cfg))
    builder = SparkSession.builder
    for key, value in session_conf(cfg, master, ui).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
