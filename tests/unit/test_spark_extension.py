"""The windowed flow's deduplication: which jars the job asks for, and the config rules around it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetsim.cloud.streaming.session import EXTENSION_JAR, connector_jars
from fleetsim.kernel.config import FleetsimConfig, SparkConfig
from fleetsim.kernel.errors import MissingDependencyError


def _jvm_dir(tmp_path: Path, *, ext: bool) -> Path:
    (tmp_path / "spark-kafka").mkdir()
    (tmp_path / "spark-kafka" / "spark-sql-kafka-0-10_2.13-4.1.1.jar").touch()
    if ext:
        (tmp_path / EXTENSION_JAR).parent.mkdir()
        (tmp_path / EXTENSION_JAR).touch()
    return tmp_path


def _cfg(jvm_dir: Path, dedup: str) -> FleetsimConfig:
    return FleetsimConfig().with_overrides({"stack.jvm_dir": str(jvm_dir), "spark.dedup": dedup})


def test_bucket_dedup_puts_the_extension_on_sparks_classpath(tmp_path: Path) -> None:
    jars = connector_jars(_cfg(_jvm_dir(tmp_path, ext=True), "buckets"))
    assert jars[-1] == tmp_path / EXTENSION_JAR
    assert [j.name for j in jars[:-1]] == ["spark-sql-kafka-0-10_2.13-4.1.1.jar"]


def test_missing_extension_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match=r"fleetsim-spark-ext\.jar not found.*run `make setup`"):
        connector_jars(_cfg(_jvm_dir(tmp_path, ext=False), "buckets"))


def test_spark_dedup_needs_no_extension(tmp_path: Path) -> None:
    jars = connector_jars(_cfg(_jvm_dir(tmp_path, ext=False), "watermark"))
    assert [j.name for j in jars] == ["spark-sql-kafka-0-10_2.13-4.1.1.jar"]


def test_bucket_dedup_refuses_the_memory_state_store() -> None:
    with pytest.raises(ValidationError, match=r'needs state_store = "rocksdb" \(got \'memory\'\)'):
        SparkConfig(dedup="buckets", state_store="memory")
    assert SparkConfig(dedup="watermark", state_store="memory").state_store == "memory"


def test_each_deduplication_has_its_own_windowed_checkpoint() -> None:
    from types import SimpleNamespace

    from fleetsim.cloud.streaming.job import StreamJob

    def name(dedup: str, query: str) -> str:
        job = SimpleNamespace(cfg=FleetsimConfig().with_overrides({"spark.dedup": dedup}))
        return StreamJob.checkpoint_name(job, query)  # type: ignore[arg-type]

    assert name("buckets", "agg") == "agg-buckets"
    assert name("watermark", "agg") == "agg"  # the checkpoints written before 7 Dec
    assert name("buckets", "raw") == name("watermark", "raw") == "raw"
