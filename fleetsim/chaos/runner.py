"""One chaos campaign end to end: dedicated pipeline, load, seeded faults, drain, checks, report.

The pipeline runs behind two TCP proxies (:class:`~.link.LinkProxy`): Kafka advertises one
(``kafka.advertised_port``), so the bridge's and Spark's Kafka traffic crosses it, and the
ground-truth publisher reaches Mosquitto through the other. A link fault slows or cuts either.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetsim.chaos import ChaosError, report
from fleetsim.chaos.checker import Ledger, TruthPublisher, drain, query, wait_aggregates, wait_alerts
from fleetsim.chaos.link import LinkProxy
from fleetsim.chaos.nemesis import Nemesis
from fleetsim.chaos.pipeline import pipeline, wait_until
from fleetsim.chaos.schedule import DEFAULT_KINDS, make_schedule, summary
from fleetsim.chaos.storm import ReconnectStorm
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.stack.kafka import kafka_port

log = logging.getLogger("fleetsim.chaos")


@dataclass(frozen=True)
class CampaignOptions:
    duration_s: float = 90.0
    rate: float = 300.0
    seed: int = 1
    kinds: tuple[str, ...] = DEFAULT_KINDS
    devices: int = 20
    faults_per_minute: float = 2.0
    storm_sessions: int = 1000
    keep_data: bool = False
    """Keep the dedicated stack's data (Kafka log, PostgreSQL cluster) after the run."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config overrides for the dedicated pipeline."""


def new_run_id(seed: int, now: datetime) -> str:
    return f"chaos-{now.strftime('%Y%m%dT%H%M%SZ')}-s{seed}-{secrets.token_hex(2)}"


def _sample(pub: TruthPublisher, t0: float, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    while not stop.wait(1.0):
        out.append((round(time.monotonic() - t0, 1), pub.n_acked))


def _series(
    samples: list[tuple[float, int]], batches: list[tuple[Any, ...]], wall0: datetime
) -> dict[str, list[float]]:
    """Acked msg/s from the publisher's samples; per raw batch: rows/s since the previous batch
    (a batch stuck behind a fault shows as a gap, then a catch-up peak) and its latency p50/p95."""
    acked_t, acked_rate = [], []
    for (ta, na), (tb, nb) in itertools.pairwise(samples):
        if tb > ta:
            acked_t.append(tb)
            acked_rate.append(round((nb - na) / (tb - ta), 1))
    stored_t, stored_rate, p50s, p95s = [], [], [], []
    prev: float | None = None
    for recorded_at, rows, p50, p95 in batches:
        t = round((recorded_at - wall0).total_seconds(), 1)
        if prev is not None and t > prev:
            stored_t.append(t)
            stored_rate.append(round(int(rows or 0) / (t - prev), 1))
            p50s.append(max(1.0, float(p50 or 0)))
            p95s.append(max(1.0, float(p95 or 0)))
        prev = t
    return {
        "acked_t": acked_t, "acked_rate": acked_rate, "stored_t": stored_t, "stored_rate": stored_rate,
        "p50_ms": p50s, "p95_ms": p95s,
    }  # fmt: skip


def run_campaign(
    base: FleetsimConfig,
    out_dir: Path,
    opts: CampaignOptions,
    *,
    progress: Callable[[str], None] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run one campaign; write ``report.json``, ``summary.md`` and ``timeline.png`` in ``out_dir``
    and return the report (``report["passed"]`` is the verdict)."""
    say = progress or (lambda msg: log.info("%s", msg))
    wall_start = datetime.now(UTC)
    run_id = run_id or new_run_id(opts.seed, wall_start)
    schedule = make_schedule(
        opts.seed,
        opts.duration_s,
        opts.kinds,
        faults_per_minute=opts.faults_per_minute,
        storm_sessions=opts.storm_sessions,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    kafka_link, mqtt_link = LinkProxy(), LinkProxy()

    def through_proxies(cfg: FleetsimConfig) -> dict[str, Any]:
        kafka_link.upstream_port = kafka_port(cfg)
        mqtt_link.upstream_port = cfg.mqtt.port
        return {"kafka.advertised_port": kafka_link.port}

    say(f"{run_id}: {len(schedule)} faults scheduled over {opts.duration_s:g} s; starting a pipeline")
    try:
        with pipeline(base, work, opts.overrides, adjust=through_proxies) as p:
            prefix = f"ch{secrets.token_hex(2)}"
            pub = TruthPublisher(
                p.cfg.with_overrides({"mqtt.port": mqtt_link.port}),
                prefix,
                opts.devices,
                opts.rate,
                vary=True,
            )
            storm = ReconnectStorm(p.cfg, f"{prefix}-storm", opts.storm_sessions)
            pub.start()
            wait_until(
                lambda: query(p.cfg, "SELECT count(*) FROM sensor_data")[0][0] > 0,
                300,
                what="the first rows to land",
            )
            t0 = time.monotonic()
            wall0 = datetime.now(UTC)
            samples: list[tuple[float, int]] = []
            stop_sampling = threading.Event()
            sampler = threading.Thread(target=_sample, args=(pub, t0, stop_sampling, samples), daemon=True)
            sampler.start()
            nemesis = Nemesis(p, {"kafka-link": kafka_link, "mqtt-link": mqtt_link}, pub, storm, t0)
            nemesis.start(schedule)
            say(f"load at {opts.rate:g} msg/s; faults firing")
            while (left := opts.duration_s - (time.monotonic() - t0)) > 0:
                time.sleep(min(left, 30.0))
                say(
                    f"t={time.monotonic() - t0:.0f} s: acked {pub.n_acked}, faults done "
                    f"{len({e['fault'] for e in nemesis.events})}/{len(schedule)}"
                )
            nemesis.join()
            nemesis.stop()
            nemesis.heal_all()
            say("load stopping; waiting for every publish to be acknowledged")
            unacked = pub.finish(ack_timeout_s=300, strict=False)
            t_drain = time.monotonic()
            ledger = Ledger.of(pub, storm)
            # A loaded machine can leave the job minutes behind the load: the drain ends on no
            # progress for 3 min, not on the clock (the long bound only stops a crawl).
            verdict = drain(p.cfg, ledger, timeout_s=900 + 2 * opts.duration_s, stuck_s=180)
            drain_s = round(time.monotonic() - t_drain, 1)
            say(f"drained in {drain_s:g} s: {verdict.summary()}")
            aggs = wait_aggregates(p.cfg, ledger.devices, timeout_s=240 + opts.duration_s / 2)
            alerts = wait_alerts(p.cfg, pub.device_faults, pub.acked, timeout_s=60)
            stop_sampling.set()
            batches = query(
                p.cfg,
                "SELECT recorded_at, input_rows, latency_p50_ms, latency_p95_ms FROM pipeline_metrics"
                " WHERE query_name = 'raw' AND recorded_at >= %s ORDER BY recorded_at",
                (wall0,),
            )
            unplanned, errors, events = nemesis.unplanned, nemesis.errors, nemesis.events
            storm_figures = storm.figures
    finally:
        kafka_link.close()
        mqtt_link.close()
        if not opts.keep_data:
            for sub in ("stack/kafka", "stack/postgres", "stack/mosquitto", "checkpoints"):
                shutil.rmtree(work / sub, ignore_errors=True)
    series = _series(samples, batches, wall0)
    p95 = [x for x in series["p95_ms"] if x > 1.0] or [0.0]
    stored = [x for x in series["stored_rate"]] or [0.0]
    passed = verdict.clean and aggs.exact and not alerts.missing and not errors and verdict.acked > 0
    rep: dict[str, Any] = {
        "run_id": run_id,
        "kind": "chaos",
        "passed": passed,
        "wall_start": wall_start.isoformat(),
        "wall_end": datetime.now(UTC).isoformat(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "options": {**asdict(opts), "kinds": list(opts.kinds)},
        "schedule": {**summary(schedule), "faults_list": [f.to_json() for f in schedule]},
        "events": events,
        "unplanned_restarts": unplanned,
        "nemesis_errors": errors,
        "checker": {**verdict.figures(), "unacked": unacked},
        "checker_summary": verdict.summary(),
        "storm": {"devices": len(storm.devices), "storms": storm_figures},
        "aggregates": {**asdict(aggs), "exact": aggs.exact},
        "alerts": {"injected": alerts.injected, "found": alerts.found, "missing": alerts.missing},
        "drain_s": drain_s,
        "throughput": {"stored_mean": round(statistics.fmean(stored), 1), "acked_total": verdict.acked},
        "latency": {"p95_median_ms": round(statistics.median(p95)), "p95_max_ms": round(max(p95))},
        "series": series,
        "logs": str(work / "logs"),
    }
    paths = report.write(rep, out_dir)
    rep["report_dir"] = str(out_dir)
    say(f"report: {paths['markdown']}")
    if not rep["passed"]:
        log.warning("campaign %s failed: %s", run_id, report.verdict_line(rep))
    return rep


def check_options(opts: CampaignOptions) -> None:
    if opts.duration_s < 30:
        raise ChaosError("a campaign needs at least 30 s (--duration)")
    if opts.rate <= 0 or opts.devices <= 0:
        raise ChaosError("--rate and --devices must be positive")
