"""Experiment fixtures on top of the shared stack fixtures (tests/conftest.py)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.scrape import scrape as scrape_metrics


@pytest.fixture
def app_cfg(postgres: FleetsimConfig) -> Iterator[FleetsimConfig]:
    """The shared database's config injected into the in-process dashboard, caches emptied."""
    from fleetsim.cloud.dashboard import settings

    st.cache_data.clear()
    settings.inject(postgres)
    try:
        yield postgres
    finally:
        settings.inject(None)
        st.cache_data.clear()


# ------------------------------------------------------------------------------- pipeline
def _env(cfg: FleetsimConfig) -> dict[str, str]:
    import os

    from fleetsim.kernel.config import config_to_env

    # Only this config: a developer's FLEETSIM_* variables must not leak into the children.
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")} | config_to_env(cfg)


def _wait_bridge_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bridge exited with {proc.returncode}")
        try:
            if scrape_metrics(port).value("fleetsim_bridge_state") == 0.0:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the bridge was not ready within {timeout_s:.0f} s")


def _wait_log(proc: subprocess.Popen[bytes], path: Path, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {proc.returncode}")
        if needle in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{path.stem}: {needle!r} not logged within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def exp_pipeline(
    mosquitto: FleetsimConfig,
    postgres: FleetsimConfig,
    kafka_topics: Callable[..., FleetsimConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FleetsimConfig]:
    """Bridge + streaming job as child processes on a fresh topic pair, with alert settings an
    experiment can trip in a short run (offline after 30 s of event time). Stopped at the end."""
    tmp = tmp_path_factory.mktemp("exp-pipeline")
    cfg = kafka_topics("exp").with_overrides(
        {
            "spark.checkpoint_dir": str(tmp / "checkpoints"),
            "spark.master": "local[2]",
            "spark.trigger_interval_s": 1.0,
            "spark.agg_trigger_interval_s": 1.0,
            "spark.shuffle_partitions": 2,
            "alerts.offline_after_s": 30.0,
            "bridge.client_id": f"exp-bridge-{tmp.name}",
        }
    )
    env = _env(cfg)
    logs = tmp / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in (("bridge", ["bridge"]), ("stream", ["stream", "--no-ui"])):
            with (logs / f"{name}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "fleetsim.cli", *args],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        _wait_bridge_ready(procs[0], cfg.bridge.metrics_port, 60)
        # Spark takes 5 s idle, minutes on a loaded 2-core machine; its queries must be running
        # before the experiment's drain clock starts.
        _wait_log(procs[1], logs / "stream.log", "fleetsim.stream: streaming from", 300)
        yield cfg
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs.iterdir():  # pytest shows captured logs of a failing test: the children's last words
            tail = "\n".join(f.read_text(errors="replace").splitlines()[-30:])
            logging.getLogger(__name__).info("--- %s (tail)\n%s", f.name, tail)
