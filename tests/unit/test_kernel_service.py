"""The kernel service lifecycle: stop signals, metrics server, ordered graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import threading
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from fleetsim.kernel.service import MetricsServer, Service, StopSignals, serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("fleetsim_test_things", "things", registry=r).inc(3)
    return r


def test_stop_signals_set_the_event_and_restore_the_previous_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[int] = []
    with StopSignals(name="test", action=seen.append) as sig:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert sig.stop.wait(5)
    assert sig.signum == signal.SIGTERM and seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before


def test_stop_signals_off_the_main_thread_install_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(StopSignals().install()))
    t.start()
    t.join()
    assert out == [False] and signal.getsignal(signal.SIGTERM) == before


def test_metrics_server_serves_then_frees_the_port() -> None:
    port = _free_port()
    server = serve_metrics(_registry(), port)
    assert server.running and server.url == f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(server.url, timeout=5) as resp:  # noqa: S310 - http on loopback
        assert "fleetsim_test_things_total 3.0" in resp.read().decode()
    server.stop()
    server.stop()  # idempotent
    assert not server.running
    serve_metrics(_registry(), port).stop()  # the port is free again: a new server binds it


def test_metrics_port_zero_is_off() -> None:
    server = MetricsServer(_registry(), 0).start()
    assert not server.running and server.url == ""
    server.stop()


def test_service_runs_stop_steps_in_reverse_then_stops_metrics_and_restores() -> None:
    before = signal.getsignal(signal.SIGINT)
    order: list[str] = []
    port = _free_port()
    with Service("test") as svc:
        metrics = svc.serve_metrics(_registry(), port)
        svc.on_stop(order.append, "second")
        svc.on_stop(lambda: order.append("first") if metrics.running else None)
        os.kill(os.getpid(), signal.SIGINT)
        svc.wait(0.05)
        assert svc.stopping
    assert order == ["first", "second"] and not metrics.running
    assert signal.getsignal(signal.SIGINT) == before


def test_service_stop_steps_run_even_when_one_fails() -> None:
    done: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), Service("test", handle_signals=False) as svc:
        svc.on_stop(done.append, "ran")
        svc.on_stop(boom)
    assert done == ["ran"]
