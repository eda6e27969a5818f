"""Run a scenario against a running stack: simulate the campaign, wait for the pipeline to drain,
collect the evidence, score it, write the report and record the run.

The simulator runs in this process through its own API (``edge.engine.Simulation`` driven by
``edge.runner.Runner`` over ``edge.mqtt.MqttPublisher``); the campaign reaches it as explicit
fault schedules in the fleet (see :mod:`fleetsim.experiments.targets`), so faults start at exact
simulated instants whatever the speed. The bridge and the streaming job must be running.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from fleetsim.edge.app import SimOptions, run_simulation
from fleetsim.edge.engine import Simulation
from fleetsim.edge.runner import RunReport
from fleetsim.experiments import collect, store
from fleetsim.experiments.detection import count_notifications, score_detection, score_incidents
from fleetsim.experiments.integrity import score_integrity
from fleetsim.experiments.report import RunInfo, build_report, write_report
from fleetsim.experiments.scenario import Scenario
from fleetsim.experiments.stats import hop_latencies
from fleetsim.experiments.targets import prepare_fleet, write_fleet_csv
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ExperimentError
from fleetsim.kernel.fleetfile import DeviceSpec, load_fleet
from fleetsim.kernel.timespec import parse_start

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Knobs of one run that are not part of the scenario."""

    record: bool = True
    """Record the run in PostgreSQL (``experiment_runs``)."""
    scan_kafka: bool = True
    """Scan the telemetry topic to locate losses between MQTT and the table."""
    settle_s: float = 4.0
    """Wall seconds the row and alert counts must stay still once every reading arrived."""
    stall_s: float | None = None
    """Wall seconds without any new row after which draining gives up early (None: wait for the
    scenario's ``drain_timeout_s``; a loaded machine can spend a minute on one micro-batch)."""


def new_run_id(scenario: Scenario, now: datetime) -> str:
    return f"{scenario.name}-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


def run_tag(run_id: str) -> str:
    """The run's simulator instance name (MQTT client ids): ``exp-`` and the id's random suffix."""
    return f"exp-{run_id.rsplit('-', 1)[-1]}"


def experiments_dir(cfg: FleetsimConfig) -> Path:
    return cfg.run_dir / "experiments"


def _sim_start(cfg: FleetsimConfig, scenario: Scenario, now: datetime) -> datetime:
    if scenario.start:
        return parse_start(scenario.start)
    # Accelerated runs stamp readings ahead of the wall clock; starting after the newest stored
    # reading keeps this run's event times apart from earlier runs (and ahead of the watermark).
    latest = collect.latest_event_ts(cfg)
    # + the largest clock skew: skewed readings must not reach back into the previous run.
    gap = timedelta(seconds=60 + _max_skew_s(scenario))
    base = now if latest is None else max(now, latest + gap)
    return parse_start("", now=base)


def _max_skew_s(scenario: Scenario) -> float:
    return max(
        (abs(f.params.get("offset_s", 0.0)) for f in scenario.faults if f.kind.value == "clock_skew"),
        default=0.0,
    )


def simulate(
    cfg: FleetsimConfig,
    scenario: Scenario,
    specs: list[DeviceSpec],
    ledger_path: Path,
    sim_start: datetime,
    progress: Progress,
    stop: threading.Event,
    instance: str,
) -> dict[str, Any]:
    """Run the simulator over MQTT until the scenario's duration; returns its ledger totals.

    Through the simulator's one assembly (:func:`fleetsim.edge.app.run_simulation`), under its own
    MQTT client ids (``instance``) so it runs beside a demo simulator, with a seq base taken from
    its start instant so its readings never reuse an earlier run's ``(device_id, seq)``."""
    buffer = scenario.buffer_size if scenario.buffer_size is not None else cfg.simulation.buffer_size
    sim_cfg = cfg.with_overrides(
        {
            "simulation.seed": scenario.seed,
            "simulation.speed": scenario.speed,
            "simulation.duration": f"{scenario.duration_s}s",
            "simulation.start": sim_start.isoformat(),
            "simulation.buffer_size": buffer,
            "simulation.instance": instance,
            # The demo simulator may hold the configured port; nobody scrapes an experiment's.
            "simulation.metrics_port": 0,
        }
    )

    def tick(s: Simulation, rep: RunReport, lag: float) -> None:
        pct = 100.0 * s.env.now / scenario.duration_s
        progress(
            f"simulating {pct:5.1f} %  t={s.env.now:7.0f} s  published={s.stats.published}  lag={lag:.2f} s"
        )

    opts = SimOptions(
        specs=specs,
        ledger_file=ledger_path,
        stop=stop,
        handle_signals=False,
        on_tick=tick,
        drain_timeout_s=60.0,
    )
    _report, totals = run_simulation(sim_cfg, opts)
    return totals


def wait_drained(
    cfg: FleetsimConfig,
    window: collect.Window,
    expected_rows: int,
    timeout_s: float,
    opts: RunOptions,
    progress: Progress,
    stop: threading.Event,
) -> tuple[bool, str]:
    """Poll until every published reading is in ``sensor_data`` and the counts settle."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int] = (-1, -1)
    last_change = time.monotonic()
    while not stop.is_set():
        rows, alerts = collect.count_rows(cfg, window)
        now = time.monotonic()
        if (rows, alerts) != last:
            last, last_change = (rows, alerts), now
        progress(f"draining: {rows}/{expected_rows} readings in sensor_data, {alerts} alerts")
        if rows >= expected_rows and now - last_change >= opts.settle_s:
            return True, "all published readings stored, counts stable"
        # Only once rows flow: a streaming job that is still starting (Spark takes ~5-40 s) is not a stall.
        if opts.stall_s is not None and 0 < rows < expected_rows and now - last_change >= opts.stall_s:
            return False, f"no new rows for {opts.stall_s:.0f} s ({expected_rows - rows} readings missing)"
        if now >= deadline:
            return False, f"timeout after {timeout_s:.0f} s"
        stop.wait(1.0)
    return False, "interrupted"


def score_run(
    cfg: FleetsimConfig,
    scenario: Scenario,
    run_id: str,
    ledger_path: Path,
    planned: list[dict[str, Any]],
    devices: list[str],
    wall_start: datetime,
    drained: tuple[bool, str],
    opts: RunOptions,
) -> dict[str, Any]:
    """Collect the evidence of a finished run and build its report dict."""
    ledger = collect.read_ledger_file(ledger_path)
    starts = [r for r in ledger.run if r.get("phase") == "start"]
    ends = [r for r in ledger.run if r.get("phase") == "end"]
    if not starts or not ends:
        raise ExperimentError(
            f"{ledger_path}: the ledger has no run start/end record; did the simulator finish?"
        )
    sim_start = datetime.fromisoformat(starts[0]["start"])
    sim_end = datetime.fromisoformat(ends[-1]["end"])
    margin = timedelta(seconds=_max_skew_s(scenario) + 1.0)
    sc = scenario.scoring
    window = collect.Window(
        sim_start - margin - timedelta(seconds=sc.lead_s),
        sim_end + margin + timedelta(seconds=max(sc.grace_s, cfg.alerts.offline_after_s)),
        tuple(devices),
        wall_start,
        *seq_span(ledger),
    )
    alerts = collect.fetch_alerts(cfg, window)
    incidents = collect.fetch_incidents(cfg, window)
    table, hop_rows = collect.fetch_table_seqs(cfg, window)
    watermark_s = collect.spark_interval_s(cfg.spark.watermark)
    kafka = collect.scan_kafka(cfg, window, wall_start, watermark_s) if opts.scan_kafka else None
    wall_end = datetime.now(UTC)
    raw = score_detection(
        ledger.faults, alerts, grace_s=sc.grace_s, lead_s=sc.lead_s, stuck_window_s=sc.stuck_window_s
    )
    # Scored on incidents (what an operator is told about); the per-alert-row score stays secondary.
    detection = score_incidents(
        ledger.faults, incidents, grace_s=sc.grace_s, lead_s=sc.lead_s, stuck_window_s=sc.stuck_window_s,
        alerts=raw,
    )  # fmt: skip
    events = collect.fetch_incident_events(cfg, [i.incident_id for i in incidents])
    notifications = count_notifications(events, detection, wall_start, wall_end)
    integrity_rows = score_integrity(devices, ledger.sent, kafka, table)
    speed_is_wall = scenario.speed != "max" and float(scenario.speed) == 1.0 and _max_skew_s(scenario) == 0
    latency = hop_latencies(hop_rows, device_clock_is_wall=speed_is_wall)
    pipeline = collect.pipeline_figures(cfg, wall_start, wall_end)
    info = RunInfo(
        run_id, sim_start.isoformat(), sim_end.isoformat(), wall_start.isoformat(), wall_end.isoformat(),
        len(devices), drained[0], drained[1],
    )  # fmt: skip
    return build_report(
        scenario, info, planned, detection, ledger.faults, alerts, integrity_rows, latency, pipeline,
        alert_detection=raw, incidents=incidents, notifications=notifications,
    )  # fmt: skip


def run_experiment(
    cfg: FleetsimConfig,
    scenario: Scenario,
    *,
    progress: Progress | None = None,
    opts: RunOptions | None = None,
    stop: threading.Event | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run, score and report one scenario. Returns the report dict and its folder."""
    opts = opts or RunOptions()
    stop = stop or threading.Event()
    try:
        collect.latest_event_ts(cfg)
    except psycopg2.Error as exc:
        raise ExperimentError(
            f"PostgreSQL at {cfg.postgres.host}:{cfg.postgres.port} is not reachable"
            f" ({str(exc).strip().splitlines()[0]}); start the stack with `fleetsim up` or pass --up"
        ) from exc
    say = progress or (lambda msg: log.info("%s", msg))
    wall_start = datetime.now(UTC)
    run_id = new_run_id(scenario, wall_start)
    out_dir = experiments_dir(cfg) / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    specs, injections = prepare_fleet(scenario, load_fleet(scenario.fleet_file))
    write_fleet_csv(specs, out_dir / "fleet.csv")
    devices = [s.device_id for s in specs]
    planned = [
        {"device_id": i.device_id, "fault_index": i.fault_index, "kind": i.spec.kind.value,
         "at_s": i.spec.at_s,
         "duration_s": i.spec.duration_s, "params": i.spec.params}
        for i in injections
    ]  # fmt: skip
    sim_start = _sim_start(cfg, scenario, wall_start)
    say(f"run {run_id}: {len(devices)} devices, {len(injections)} planned injections -> {out_dir}")
    if opts.record:
        store.record_start(cfg, run_id, scenario, wall_start, len(devices), sim_start)
    try:
        ledger_path = out_dir / "ledger.jsonl"
        totals = simulate(cfg, scenario, specs, ledger_path, sim_start, say, stop, run_tag(run_id))
        if stop.is_set():
            raise ExperimentError("interrupted")
        ledger = collect.read_ledger_file(ledger_path)
        expected = sum(len(_published(s)) for s in ledger.sent.values())
        say(f"simulation done: {totals.get('published')} messages published ({expected} distinct readings)")
        margin = timedelta(seconds=_max_skew_s(scenario) + 1.0)
        sim_end = datetime.fromisoformat(totals["end"])
        window = collect.Window(
            sim_start - margin, sim_end + margin, tuple(devices), wall_start, *seq_span(ledger)
        )
        drained = wait_drained(cfg, window, expected, scenario.scoring.drain_timeout_s, opts, say, stop)
        say(f"pipeline drained: {drained[0]} ({drained[1]}); scoring")
        report = score_run(cfg, scenario, run_id, ledger_path, planned, devices, wall_start, drained, opts)
        write_report(report, out_dir)
        if opts.record:
            store.record_result(cfg, report, str(out_dir))
    except Exception as exc:  # recorded whatever it is, then re-raised unchanged (or wrapped)
        if opts.record:
            try:
                store.record_failure(cfg, run_id, f"{type(exc).__name__}: {exc}", datetime.now(UTC))
            except ExperimentError as rec_exc:
                log.warning("could not record the failure of %s: %s", run_id, rec_exc)
        if isinstance(exc, psycopg2.Error):
            raise ExperimentError(
                f"run {run_id}: database error: {str(exc).strip().splitlines()[0]}"
            ) from exc
        raise
    return report, out_dir


def seq_span(ledger: collect.GroundTruth) -> tuple[int, int]:
    """The lowest and highest seq this run made (its devices all start at the run's seq base)."""
    if not ledger.sent:
        return 0, -1
    return min(s.first_seq for s in ledger.sent.values()), max(s.last_seq for s in ledger.sent.values())


def _published(sent: Any) -> set[int]:
    out: set[int] = set()
    for a, b in sent.published:
        out.update(range(a, b + 1))
    return out
