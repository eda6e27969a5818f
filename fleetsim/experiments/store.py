"""Experiment runs in PostgreSQL (``V004__experiments.sql``): written as the writer role, read as
the reader role. Parameterized SQL only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import psycopg2
from psycopg2 import sql

from fleetsim.experiments.scenario import Scenario
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ExperimentError

RUN_COLUMNS = (
    "run_id", "scenario", "status", "wall_start", "wall_end", "sim_start", "sim_end", "seed", "speed",
    "duration_s", "devices", "injected", "detected", "false_alarms", "precision", "recall",
    "ttd_p50_s", "ttd_p95_s", "lost", "duplicated", "late", "report_dir", "error",
)  # fmt: skip


def _db_error(exc: Exception, what: str) -> ExperimentError:
    return ExperimentError(f"cannot {what} in PostgreSQL: {str(exc).strip().splitlines()[0]}")


def record_start(
    cfg: FleetsimConfig,
    run_id: str,
    scenario: Scenario,
    wall_start: datetime,
    devices: int,
    sim_start: datetime | None = None,
) -> None:
    """Record a run as ``running``; its simulated interval is stored at once so a concurrent run
    starts after it."""
    try:
        with pg_connect(cfg, "writer") as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO experiment_runs (run_id, scenario, scenario_file, status, wall_start, seed,"
                " speed,"
                " duration_s, devices, sim_start, sim_end)"
                " VALUES (%s, %s, %s, 'running', %s, %s, %s, %s, %s, %s, %s)",
                (run_id, scenario.name, str(scenario.path), wall_start, scenario.seed, scenario.speed,
                 scenario.duration_s, devices, sim_start,
                 None if sim_start is None else sim_start + timedelta(seconds=scenario.duration_s)),
            )  # fmt: skip
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "record the run") from exc


def record_failure(cfg: FleetsimConfig, run_id: str, error: str, wall_end: datetime) -> None:
    try:
        with pg_connect(cfg, "writer") as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE experiment_runs SET status = 'failed', error = %s, wall_end = %s WHERE run_id = %s",
                (error[:2000], wall_end, run_id),
            )
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "record the failure") from exc


def record_result(cfg: FleetsimConfig, report: dict[str, Any], report_dir: str) -> None:
    """Mark the run scored and store its headline figures, per-kind scores and faults."""
    run, det, integ = report["run"], report["detection"], report["integrity"]["totals"]
    ov = det["overall"]
    slim = {k: v for k, v in report.items() if k != "alerts"}
    try:
        with pg_connect(cfg, "writer") as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE experiment_runs SET status = 'scored', wall_end = %s, sim_start = %s, sim_end = %s,"
                " injected = %s, detected = %s, false_alarms = %s, precision = %s, recall = %s,"
                " ttd_p50_s = %s, ttd_p95_s = %s, lost = %s, duplicated = %s, late = %s, report_dir = %s,"
                " report = %s WHERE run_id = %s",
                (
                    run["wall_end"], run["sim_start"], run["sim_end"], ov["injected"], ov["detected"],
                    ov["false_alarms"], ov["precision"], ov["recall"], ov["ttd_p50_s"], ov["ttd_p95_s"],
                    integ["lost"], integ["duplicated_kafka"], integ["late"], report_dir,
                    json.dumps(slim, default=str), report["run_id"],
                ),
            )  # fmt: skip
            for kind, ks in det["kinds"].items():
                cur.execute(
                    "INSERT INTO experiment_scores (run_id, fault_kind, injected, detected, missed,"
                    " precision,"
                    " recall, ttd_p50_s, ttd_p95_s, false_alarms) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (run_id, fault_kind) DO UPDATE SET injected = EXCLUDED.injected,"
                    " detected = EXCLUDED.detected, missed = EXCLUDED.missed, precision = EXCLUDED.precision,"
                    " recall = EXCLUDED.recall, ttd_p50_s = EXCLUDED.ttd_p50_s,"
                    " ttd_p95_s = EXCLUDED.ttd_p95_s,"
                    " false_alarms = EXCLUDED.false_alarms",
                    (report["run_id"], kind, ks["injected"], ks["detected"], ks["missed"], ks["precision"],
                     ks["recall"], ks["ttd_p50_s"], ks["ttd_p95_s"], ks["false_alarms"]),
                )  # fmt: skip
            faults = [(f, f["detected"]) for f in det["faults"]] + [
                (f, None) for f in report["integrity_faults"]
            ]
            for f, detected in faults:
                cur.execute(
                    "INSERT INTO experiment_faults (run_id, device_id, fault, start_ts, end_ts, detected,"
                    " ttd_s)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                    (
                        report["run_id"],
                        f["device_id"],
                        f["kind"],
                        f["start"],
                        f["end"],
                        detected,
                        f.get("ttd_s"),
                    ),
                )
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "record the scores") from exc


def list_runs(cfg: FleetsimConfig, limit: int = 50) -> list[dict[str, Any]]:
    """Newest runs first (reader role)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in RUN_COLUMNS)
    try:
        with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM experiment_runs ORDER BY wall_start DESC LIMIT %s").format(cols),
                (limit,),
            )
            rows = cur.fetchall()
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "list the runs") from exc
    return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in rows]


def get_run(cfg: FleetsimConfig, run_id: str) -> dict[str, Any] | None:
    """One run with its stored report (reader role); a unique prefix of the id is enough."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*RUN_COLUMNS, "report"))
    try:
        with pg_connect(cfg, "reader") as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT {} FROM experiment_runs WHERE run_id LIKE %s ORDER BY wall_start DESC LIMIT 2"
                ).format(cols),
                (run_id.replace("%", r"\%").replace("_", r"\_") + "%",),
            )
            rows = cur.fetchall()
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "read the run") from exc
    exact = [r for r in rows if r[0] == run_id]
    if exact:
        rows = exact
    if len(rows) > 1:
        raise ExperimentError(f"run id prefix {run_id!r} is ambiguous; give more of it")
    if not rows:
        return None
    return dict(zip((*RUN_COLUMNS, "report"), rows[0], strict=True))


CHAOS_SCENARIO = "chaos"
"""``experiment_runs.scenario`` of a chaos campaign (``fleetsim chaos``): the dashboard's
experiments page lists it with the scored runs and shows its checker figures."""


def record_chaos_run(cfg: FleetsimConfig, report: dict[str, Any]) -> None:
    """One ``experiment_runs`` row for a finished chaos campaign: ``scored`` when every check
    passed, ``failed`` with the verdict line otherwise. ``injected`` counts the campaign's faults;
    ``lost``/``duplicated`` are the checker's (acked - stored, stored twice)."""
    opts, checker = report["options"], report["checker"]
    slim = {k: v for k, v in report.items() if k != "series"}
    error = None
    if not report["passed"]:
        from_checker = report.get("checker_summary", "")
        error = "; ".join(filter(None, [from_checker, *report.get("nemesis_errors", [])]))[:2000] or "failed"
    try:
        with pg_connect(cfg, "writer") as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO experiment_runs (run_id, scenario, status, wall_start, wall_end, seed, speed,"
                " duration_s, devices, injected, lost, duplicated, late, report_dir, error, report)"
                " VALUES (%s, %s, %s, %s, %s, %s, '1', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run_id) DO NOTHING",
                (
                    report["run_id"], CHAOS_SCENARIO, "scored" if report["passed"] else "failed",
                    report["wall_start"], report["wall_end"], opts["seed"], opts["duration_s"],
                    opts["devices"], report["schedule"]["faults"], checker["lost"], checker["dup"],
                    report["aggregates"]["late_rows"], report.get("report_dir"), error,
                    json.dumps(slim, default=str),
                ),
            )  # fmt: skip
        conn.close()
    except psycopg2.Error as exc:
        raise _db_error(exc, "record the chaos run") from exc
