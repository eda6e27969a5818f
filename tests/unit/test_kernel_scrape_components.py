"""The kernel's metrics scraper and component table."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from fleetsim.kernel import components
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.scrape import MetricMissing, parse, scrape
from fleetsim.kernel.service import serve_metrics

TEXT = """\
# HELP fleetsim_bridge_forwarded_total Telemetry records confirmed by Kafka
# TYPE fleetsim_bridge_forwarded_total counter
fleetsim_bridge_forwarded_total 12.0
# HELP fleetsim_bridge_deadlettered_total Dead-letter records
# TYPE fleetsim_bridge_deadlettered_total counter
fleetsim_bridge_deadlettered_total{reason="schema"} 2.0
fleetsim_bridge_deadlettered_total{reason="too_large"} 3.0
# HELP fleetsim_stream_rows_written_total rows
# TYPE fleetsim_stream_rows_written_total counter
# HELP fleetsim_bridge_state state
# TYPE fleetsim_bridge_state gauge
fleetsim_bridge_state 0.0
"""


def test_parse_values_totals_and_flat_keys() -> None:
    s = parse(TEXT)
    assert s.value("fleetsim_bridge_state") == 0.0
    assert s.value("fleetsim_bridge_deadlettered_total", reason="too_large") == 3.0
    assert s.total("fleetsim_bridge_deadlettered_total") == 5.0
    assert s.total("fleetsim_bridge_forwarded_total") == 12.0
    # A labelled counter with no series yet is exported (0), not missing.
    assert "fleetsim_stream_rows_written_total" in s
    assert s.total("fleetsim_stream_rows_written_total") == 0.0
    with pytest.raises(MetricMissing):
        s.total("fleetsim_sim_messages_total")
    assert s.value("fleetsim_sim_messages_total") is None
    assert s.flat()["fleetsim_bridge_deadlettered_total{reason=schema}"] == 2.0


def test_scrape_reads_a_live_endpoint_and_raises_when_nothing_answers() -> None:
    r = CollectorRegistry()
    Counter("fleetsim_sim_messages", "m", registry=r).inc(7)
    Gauge("fleetsim_sim_devices", "d", registry=r).set(4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with serve_metrics(r, port):
        s = scrape(port)
        assert s.total("fleetsim_sim_messages_total") == 7.0 and s.value("fleetsim_sim_devices") == 4.0
    with pytest.raises(OSError):
        scrape(port, timeout_s=1.0)


def test_component_table_is_the_config_default_and_in_dependency_order() -> None:
    assert FleetsimConfig().stack.components == list(components.COMPONENT_NAMES)
    assert components.ENGINE_NAMES == ("mosquitto", "kafka", "postgres")
    assert components.APP_NAMES == ("stream", "bridge", "sim", "dashboard")
    for c in components.COMPONENTS:
        if c.kind == "app" and c.name != "dashboard":
            assert c.counter.endswith("_total") and c.unit


def test_endpoints_follow_the_configuration() -> None:
    cfg = FleetsimConfig().with_overrides(
        {
            "kafka.bootstrap": "10.0.0.5:19092,10.0.0.6:19092",
            "postgres.port": 5555,
            "dashboard.host": "0.0.0.0",
        }
    )
    assert components.endpoint(cfg, "kafka") == ("10.0.0.5", 19092)
    assert components.endpoint(cfg, "postgres") == ("127.0.0.1", 5555)
    assert components.endpoint(cfg, "mosquitto") == ("127.0.0.1", cfg.mqtt.port)
    assert components.endpoint(cfg, "bridge") == ("127.0.0.1", cfg.bridge.metrics_port)
    assert components.endpoint(cfg, "dashboard") == ("127.0.0.1", cfg.dashboard.port)
    with pytest.raises(KeyError, match="unknown component"):
        components.info("zookeeper")
