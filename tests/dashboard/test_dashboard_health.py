"""The pipeline view's component health: measured through the kernel, never assumed."""

from __future__ import annotations

import ast
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from fleetsim.cloud.dashboard import health
from fleetsim.kernel.components import COMPONENT_NAMES
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.service import serve_metrics


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


@pytest.fixture
def cfg() -> FleetsimConfig:
    """Every component pointed at a port where nothing answers."""
    return FleetsimConfig().with_overrides(
        {
            "mqtt.port": _free_port(),
            "kafka.bootstrap": f"127.0.0.1:{_free_port()}",
            "postgres.port": _free_port(),
            "spark.metrics_port": _free_port(),
            "bridge.metrics_port": _free_port(),
            "simulation.metrics_port": _free_port(),
            "dashboard.port": _free_port(),
        }
    )


def _bridge_registry(forwarded: int, state: int) -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("fleetsim_bridge_forwarded", "f", registry=r).inc(forwarded)
    Gauge("fleetsim_bridge_state", "s", registry=r).set(state)
    return r


def test_nothing_running_is_down_everywhere_never_up(cfg: FleetsimConfig) -> None:
    rows = health.measured_health(cfg)
    assert [r.name for r in rows] == list(COMPONENT_NAMES)
    assert {r.state for r in rows} == {"down"}, rows
    by = {r.name: r for r in rows}
    assert by["kafka"].source == f"tcp {cfg.kafka.bootstrap}"
    assert by["bridge"].source == f"http://127.0.0.1:{cfg.bridge.metrics_port}/metrics"


def test_engine_up_when_its_port_accepts(cfg: FleetsimConfig) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        row = health.probe(cfg.with_overrides({"postgres.port": port}), "postgres")
    assert (row.state, row.source) == ("up", f"tcp 127.0.0.1:{port}")


def test_app_up_with_its_live_figure_and_the_bridge_gauge(cfg: FleetsimConfig) -> None:
    port = cfg.bridge.metrics_port
    with serve_metrics(_bridge_registry(1234, 0), port):
        row = health.probe(cfg, "bridge")
    assert row.state == "up" and row.detail == "1,234 records forwarded"
    with serve_metrics(_bridge_registry(5, 1), port):
        assert health.probe(cfg, "bridge").state == "degraded"
    with serve_metrics(_bridge_registry(5, 2), port):
        assert health.probe(cfg, "bridge").state == "unhealthy"


def test_app_answering_without_its_counter_is_not_up(cfg: FleetsimConfig) -> None:
    r = CollectorRegistry()
    Gauge("something_else", "x", registry=r).set(1)
    with serve_metrics(r, cfg.simulation.metrics_port):
        row = health.probe(cfg, "sim")
    assert row.state == "unhealthy" and "fleetsim_sim_messages_total" in row.detail


def test_metrics_disabled_is_unknown(cfg: FleetsimConfig) -> None:
    row = health.probe(cfg.with_overrides({"spark.metrics_port": 0}), "stream")
    assert row.state == "unknown" and "spark.metrics_port" in row.detail


@pytest.fixture
def streamlit_health() -> Iterator[tuple[int, list[str]]]:
    answer = ["ok"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer[0].encode() if self.path == "/_stcore/health" else b""
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield int(server.server_address[1]), answer
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_measured_by_its_health_endpoint(
    cfg: FleetsimConfig, streamlit_health: tuple[int, list[str]]
) -> None:
    port, answer = streamlit_health
    dash = cfg.with_overrides({"dashboard.port": port})
    assert health.probe(dash, "dashboard").state == "up"
    answer[0] = "starting"
    assert health.probe(dash, "dashboard").state == "unhealthy"


def test_merge_keeps_measured_rows_and_adds_database_evidence(cfg: FleetsimConfig) -> None:
    measured = health.measured_health(cfg)
    db_rows = [health.ComponentHealth("postgres", "up", "answered", "database")]
    merged = health.merge(measured, db_rows)
    names = [r.name for r in merged]
    assert names == [*COMPONENT_NAMES, "postgres (db)"]
    assert all(r.state == "unknown" for r in health.merge(None, []))


def test_health_needs_only_the_kernel() -> None:
    """A runtime never reaches into the operations layer (no importlib tricks either)."""
    source = Path(health.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "importlib" not in imported and "fleetsim.stack" not in source
    assert all(not m.startswith("fleetsim.") or m.startswith("fleetsim.kernel") for m in imported), imported
