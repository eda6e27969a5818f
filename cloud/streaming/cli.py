"""``fleetsim stream``: run the Spark Structured Streaming job until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from fleetsim.kernel.config import FleetsimConfig

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    from fleetsim.cloud.streaming.job import StreamJob

    # py4j logs every gateway command at DEBUG (thousands a second): -vv is for our loggers.
    logging.getLogger("py4j").setLevel(max(logging.INFO, logging.getLogger().level))
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping the streaming queries", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    job = StreamJob(cfg, master=args.master, ui=not args.no_ui)
    job.metrics.serve(cfg.spark.metrics_port)
    try:
        job.start()
        log.info(
            "streaming from %s to postgres %s:%d; Spark UI %s; metrics 127.0.0.1:%d",
            cfg.kafka.telemetry_topic, cfg.postgres.host, cfg.postgres.port, job.ui_url() or "off",
            cfg.spark.metrics_port,
        )  # fmt: skip
        job.run_until(stop)
    finally:
        job.stop(timeout_s=cfg.stack.stop_timeout_s / 2)
        if job.spark is not None:
            job.spark.stop()
    return 0
