"""Report writer: JSON + Markdown agree with the scores; plots are real PNGs of sane size."""

from __future__ import annotations

import json
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetsim.experiments.detection import (
    AlertRow,
    FaultInstance,
    IncidentRow,
    count_notifications,
    score_detection,
    score_incidents,
)
from fleetsim.experiments.integrity import SentLog, StageSeqs, score_integrity
from fleetsim.experiments.report import RunInfo, build_report, write_report
from fleetsim.experiments.scenario import parse_scenario
from fleetsim.experiments.stats import hop_latencies

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (fails on anything else)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    return w, h


def synthetic_report() -> dict[str, object]:
    sc = parse_scenario(
        '[run]\nduration = "10m"\nspeed = 10\n'
        '[[fault]]\nat = 60\nkind = "stuck"\nduration = 120\nsite = "x"\n',
        Path("/tmp/s.toml"),
    )
    t = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    faults = [
        FaultInstance("a", "stuck", t(60), t(180)),
        FaultInstance("b", "stuck", t(60), t(180)),
        FaultInstance("c", "duplicate", t(0), t(100), counters={"duplicates": 3}),
        FaultInstance("c", "noise", t(0), t(600)),
    ]
    alerts = [
        AlertRow("a", "stuck", "temperature", t(110), t(200)),
        AlertRow("z", "drift", "temperature", t(300), t(301)),
    ]
    raw = score_detection(faults, alerts, grace_s=60)
    incidents = [
        IncidentRow(1, "a", "stuck", "temperature", t(110), t(170), 7),
        IncidentRow(2, "z", "drift", "temperature", t(300), t(300)),
    ]
    det = score_incidents(faults, incidents, grace_s=60, alerts=raw)
    events = [(1, "opened", t(110)), (2, "opened", t(300)), (2, "resolved", t(400))]
    notifications = count_notifications(events, det, t(0), t(600))
    sent = {"a": SentLog(((0, 59),), {}, 0, 59), "b": SentLog(((0, 49),), {"overflow": ((50, 59),)}, 0, 59)}
    db = {"a": StageSeqs(Counter(range(60))), "b": StageSeqs(Counter(range(50)))}
    integ = score_integrity(["a", "b"], sent, None, db)
    lat = hop_latencies([(0.0, 10.0, 20.0, 120.0)], device_clock_is_wall=False)
    info = RunInfo(
        "demo-1", t(0).isoformat(), t(600).isoformat(), t(0).isoformat(), t(60).isoformat(), 2, True, "ok"
    )
    return build_report(
        sc, info, [], det, faults, alerts, integ, lat, {"late_rows_dropped_by_windows": 0},
        alert_detection=raw, incidents=incidents, notifications=notifications,
    )  # fmt: skip


def test_report_files_agree_with_scores(tmp_path: Path) -> None:
    report = synthetic_report()
    paths = write_report(report, tmp_path)
    assert {p.name for p in paths} == {
        "report.json",
        "summary.md",
        "timeline.png",
        "detection_latency.png",
        "integrity.png",
    }
    data = json.loads((tmp_path / "report.json").read_text())
    stuck = data["detection"]["kinds"]["stuck"]
    assert (stuck["injected"], stuck["detected"], stuck["missed"], stuck["ttd_p50_s"]) == (2, 1, 1, 50.0)
    assert data["detection"]["false_alarms"] == {"drift": 1}
    assert data["detection"]["unit"] == "incident"
    assert data["detection"]["faults"][0]["incident_id"] == 1
    assert data["detection"]["notifications"]["total"] == 3
    assert data["detection"]["not_detectable"]["noise"]["injected"] == 1
    assert data["alert_detection"]["kinds"]["stuck"]["detected"] == 1
    assert [i["incident_id"] for i in data["incidents"]] == [1, 2]
    assert data["integrity"]["totals"]["lost"] == 10
    assert data["integrity"]["totals"]["dropped_overflow"] == 10
    assert data["plots"] == ["timeline.png", "detection_latency.png", "integrity.png"]
    md = (tmp_path / "summary.md").read_text()
    assert "| stuck | 2 | 1 | 1 |" in md
    assert "| false alarms | true incidents |" in md and md.count("| 0 | 1 |") >= 1
    assert "## Detection (incidents)" in md
    assert "| noise | 1 | not detectable: no rule targets it" in md
    assert (
        "Notifications** an operator received during the run: 3 (2 opened, 0 acknowledged, 1 resolved)" in md
    )
    assert "2 of them about false alarms" in md
    assert "### Raw alert rows (secondary)" in md and "| stuck | 1/2 |" in md
    assert "n/a (simulated clock is not wall time)" in md
    assert "![timeline](timeline.png)" in md


def test_plots_are_real_pngs_of_sane_size(tmp_path: Path) -> None:
    write_report(synthetic_report(), tmp_path)
    for name in ("timeline.png", "detection_latency.png", "integrity.png"):
        w, h = png_size(tmp_path / name)
        assert 400 <= w <= 3000 and 250 <= h <= 3000, (name, w, h)
        assert (tmp_path / name).stat().st_size > 5_000  # drawn content, not an empty canvas
