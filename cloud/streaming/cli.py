"""``fleetsim stream``: run the Spark Structured Streaming job until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ConfigError
from fleetsim.kernel.service import Service

log = logging.getLogger("fleetsim.stream")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stream",
        help="run the streaming job (Kafka -> Spark -> PostgreSQL)",
        description="Kafka telemetry -> Spark Structured Streaming -> PostgreSQL raw rows, alerts, "
        "sliding-window aggregates, dead letters and pipeline metrics. Stops gracefully on SIGTERM.",
    )
    p.add_argument("--master", default=None, help="Spark master URL (default: spark.master, e.g. local[*])")
    p.add_argument("--no-ui", action="store_true", help="do not start the Spark web UI")
    p.add_argument(
        "--loader-only",
        action="store_true",
        help="run one more raw loader (no Spark): it joins the job's loaders and takes Kafka partitions of "
        "the lines topic from them (spark.raw_sink = realtime; docs/streaming.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    if args.loader_only:
        return run_loader(cfg)
    # Lazy: every `fleetsim` command registers this sub-command; only `fleetsim stream` should pay
    # for pyspark and pyarrow.
    from fleetsim.cloud.streaming.job import StreamJob

    # py4j logs every gateway command at DEBUG (thousands a second): -vv is for our loggers.
    logging.getLogger("py4j").setLevel(max(logging.INFO, logging.getLogger().level))
    with Service("the streaming queries", log=log) as svc:
        job = StreamJob(cfg, master=args.master, ui=not args.no_ui)
        svc.serve_metrics(job.metrics.registry, cfg.spark.metrics_port)
        # Stop steps run in reverse: each query finishes its running batch, then Spark stops.
        svc.on_stop(_stop_spark, job)
        svc.on_stop(job.stop, timeout_s=job_stop_budget_s(cfg.stack.stop_timeout_s))
        job.start()
        log.info(
            "streaming from %s to postgres %s:%d; Spark UI %s; metrics 127.0.0.1:%d",
            cfg.kafka.telemetry_topic, cfg.postgres.host, cfg.postgres.port, job.ui_url() or "off",
            cfg.spark.metrics_port,
        )  # fmt: skip
        job.run_until(svc.stop)
    return 0


def job_stop_budget_s(stop_timeout_s: float) -> float:
    """The queries' share of a graceful stop: the stack kills the job after ``stop_timeout_s``,
    and after the queries come the loader's last merge (5 s at least) and Spark's own stop.
    Most of it, because the real-time raw query waits for its checkpoint (up to a minute away)."""
    return max(stop_timeout_s / 2, stop_timeout_s - 15.0)


def _stop_spark(job: Any) -> None:
    if job.spark is not None:
        job.spark.stop()


def run_loader(cfg: FleetsimConfig) -> int:
    """One loader process: scale-out of the real-time raw flow's PostgreSQL writes."""
    # Lazy: the loader needs psycopg2 and confluent-kafka, not pyspark.
    from fleetsim.cloud.streaming.loader import RawLoader
    from fleetsim.cloud.streaming.metrics import StreamMetrics

    if cfg.spark.raw_sink != "realtime":
        raise ConfigError(
            f"--loader-only needs spark.raw_sink = 'realtime' (it is {cfg.spark.raw_sink!r}): "
            "only the real-time raw flow writes the lines topic a loader reads"
        )
    with Service("the raw loader", log=log) as svc:
        loader = RawLoader(cfg, StreamMetrics(), name=f"loader-{os.getpid()}")
        svc.on_stop(loader.stop)
        loader.start()
        pg = cfg.postgres
        log.info("loading %s into postgres %s:%d", cfg.kafka.lines_topic, pg.host, pg.port)
        svc.wait()
    return 0
