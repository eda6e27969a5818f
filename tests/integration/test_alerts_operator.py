"""The incident lifecycle from the CLI (`fleetsim alerts`) and the operator role's limits, on real
PostgreSQL (roles and migrations made by the stack code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from pg_support import execute as _exec

from fleetsim.kernel.config import FleetsimConfig, config_to_env

pytestmark = pytest.mark.integration


@pytest.fixture
def op_cfg(postgres: FleetsimConfig) -> FleetsimConfig:
    cfg = postgres.with_overrides({"alerts.operator": "alice"})
    _exec(cfg, "admin", "TRUNCATE incident_events, incidents")
    _exec(
        cfg,
        "admin",
        "INSERT INTO devices (device_id, site) VALUES ('op-1', 'gerland'), ('op-2', 'vaise') "
        "ON CONFLICT (device_id) DO NOTHING",
    )
    # As the sink does it (writer role): two open incidents on two sites.
    for dev, site, sev in (("op-1", "gerland", "warning"), ("op-2", "vaise", "critical")):
        _exec(
            cfg,
            "writer",
            "INSERT INTO incidents (device_id, kind, measurement, site, severity, state, opened_at,"
            " last_seen,"
            " n_alerts, peak_value, threshold) VALUES (%s, 'extreme_high', 'co2', %s, %s, 'open',"
            " now() - interval '10 minutes', now(), 7, 2100, 1500)",
            (dev, site, sev),
        )
    return cfg


def incident_id(cfg: FleetsimConfig, device: str) -> int:
    return int(_exec(cfg, "admin", "SELECT incident_id FROM incidents WHERE device_id = %s", (device,))[0][0])


def fleetsim(cfg: FleetsimConfig, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)
    return subprocess.run(
        [sys.executable, "-m", "fleetsim.cli", *argv],
        env=env,
        cwd=tmp_path,  # no fleetsim.toml here: the environment is the whole configuration
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lifecycle_from_the_cli(op_cfg: FleetsimConfig, tmp_path: Path) -> None:
    i1 = incident_id(op_cfg, "op-1")
    out = fleetsim(op_cfg, tmp_path, "alerts", "list", "--site", "gerland", "--json")
    assert out.returncode == 0, out.stderr
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["incident_id"], r["state"], r["device_id"]) for r in listed] == [(i1, "open", "op-1")]

    out = fleetsim(op_cfg, tmp_path, "alerts", "ack", str(i1), "--note", "window open, checking")
    assert out.returncode == 0, out.stderr
    assert f"Incident {i1} (op-1 extreme_high co2) is acknowledged." in out.stdout
    # Acknowledging twice is refused, saying why; nothing changes.
    out = fleetsim(op_cfg, tmp_path, "alerts", "ack", str(i1), "--note", "again")
    assert out.returncode == 1 and "is acknowledged: only an open incident can be acknowledged" in out.stderr

    out = fleetsim(op_cfg, tmp_path, "alerts", "list", "--state", "acknowledged", "--json")
    assert [json.loads(line)["incident_id"] for line in out.stdout.splitlines()] == [i1]
    out = fleetsim(op_cfg, tmp_path, "alerts", "note", str(i1), "--note", "facility told", "--by", "bob")
    assert out.returncode == 0, out.stderr
    out = fleetsim(op_cfg, tmp_path, "alerts", "resolve", str(i1), "--note", "window closed", "--by", "bob")
    assert out.returncode == 0, out.stderr

    row = _exec(
        op_cfg,
        "admin",
        "SELECT state, acknowledged_by, ack_note, acknowledged_at IS NOT NULL, resolved_by, resolve_note,"
        " resolved_at >= acknowledged_at FROM incidents WHERE incident_id = %s",
        (i1,),
    )
    assert row == [("resolved", "alice", "window open, checking", True, "bob", "window closed", True)]
    out = fleetsim(op_cfg, tmp_path, "alerts", "show", str(i1), "--json")
    steps = [(e["action"], e["actor"], e["note"]) for e in json.loads(out.stdout)["events"]]
    assert steps == [
        ("acknowledged", "alice", "window open, checking"),
        ("note", "bob", "facility told"),
        ("resolved", "bob", "window closed"),
    ]
    # Resolved is final; the default list (open + acknowledged) now shows only the other incident.
    out = fleetsim(op_cfg, tmp_path, "alerts", "resolve", str(i1), "--note", "twice")
    assert out.returncode == 1 and "already resolved" in out.stderr
    out = fleetsim(op_cfg, tmp_path, "alerts", "list", "--json")
    assert [json.loads(line)["device_id"] for line in out.stdout.splitlines()] == ["op-2"]
    out = fleetsim(op_cfg, tmp_path, "alerts", "list", "--severity", "critical", "--state", "all")
    assert out.returncode == 0 and "op-2" in out.stdout and "op-1" not in out.stdout
    # A step needs a note.
    out = fleetsim(op_cfg, tmp_path, "alerts", "ack", str(incident_id(op_cfg, "op-2")), "--note", "  ")
    assert out.returncode == 1 and "a note is required" in out.stderr


FORBIDDEN = [
    "INSERT INTO sensor_data (device_id, seq, ts, status) VALUES ('x', 1, now(), 'OK')",
    "UPDATE sensor_data SET humidity = 0",
    "DELETE FROM sensor_data",
    "UPDATE device_latest SET humidity = 0",
    "UPDATE sensor_data_agg SET n_alerts = 0",
    "INSERT INTO devices (device_id) VALUES ('intruder')",
    "UPDATE devices SET enabled = false",
    "DELETE FROM devices",
    "UPDATE sensor_alerts SET severity = 'info'",
    "DELETE FROM sensor_alerts",
    "INSERT INTO incidents (device_id, kind, severity, state, opened_at, last_seen, n_alerts)"
    " VALUES ('x', 'k', 'info', 'open', now(), now(), 1)",
    "UPDATE incidents SET n_alerts = 0",
    "UPDATE incidents SET device_id = 'other'",
    "UPDATE incidents SET severity = 'info'",
    "DELETE FROM incidents",
    "UPDATE incident_events SET note = 'rewritten'",
    "DELETE FROM incident_events",
    "TRUNCATE incidents",
    "CREATE TABLE operator_was_here (x int)",
]


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_operator_role_cannot_touch_anything_else(op_cfg: FleetsimConfig, statement: str) -> None:
    with pytest.raises(psycopg2.Error) as info:
        _exec(op_cfg, "operator", statement)
    assert info.value.pgcode == "42501", (info.value.pgcode, str(info.value))


def test_operator_role_changes_state_and_notes_in_order_only(op_cfg: FleetsimConfig) -> None:
    i2 = incident_id(op_cfg, "op-2")
    _exec(
        op_cfg,
        "operator",
        "UPDATE incidents SET state = 'resolved', resolved_by = 'carol', resolve_note = 'done',"
        " resolved_at = now() WHERE incident_id = %s",
        (i2,),
    )
    _exec(
        op_cfg,
        "operator",
        "INSERT INTO incident_events (incident_id, action, actor, note) VALUES (%s, 'note', 'carol', 'x')",
        (i2,),
    )
    # The database refuses a step out of order (resolved -> open), whoever asks.
    with pytest.raises(psycopg2.Error) as info:
        _exec(op_cfg, "operator", "UPDATE incidents SET state = 'open' WHERE incident_id = %s", (i2,))
    assert info.value.pgcode == "23514"
    assert _exec(op_cfg, "admin", "SELECT state FROM incidents WHERE incident_id = %s", (i2,)) == [
        ("resolved",)
    ]
