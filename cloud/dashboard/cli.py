"""``fleetsim dashboard``: run the Streamlit app bound to ``dashboard.host:dashboard.port``.

The app process gets the same ``--config`` file and ``--set`` overrides this command was given
(after ``--``), so it rebuilds the exact configuration; passwords travel through the stack's
secrets file, never on the command line.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from fleetsim.cloud.dashboard.settings import app_args
from fleetsim.kernel.config import FleetsimConfig, find_config_file
from fleetsim.kernel.errors import DashboardError
from fleetsim.kernel.service import StopSignals

log = logging.getLogger("fleetsim.dashboard")

APP_SCRIPT = Path(__file__).resolve().parent / "app.py"


def streamlit_command(cfg: FleetsimConfig, app_args: list[str]) -> list[str]:
    """The ``python -m streamlit run`` command line: headless, no usage stats, no file watcher."""
    d = cfg.dashboard
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.address", d.host,
        "--server.port", str(d.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", d.host,
        "--browser.serverPort", str(d.port),
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
        "--",
        *app_args,
    ]  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.host is not None:
        out["dashboard.host"] = args.host
    if args.port is not None:
        out["dashboard.port"] = args.port
    return out


def run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    config_file = find_config_file(args.config)
    sets = list(args.overrides) + [f"{k}={v}" for k, v in _overrides(args).items()]
    cmd = streamlit_command(cfg, app_args(config_file, sets))
    print(f"Fleetsim dashboard: http://{cfg.dashboard.host}:{cfg.dashboard.port}", flush=True)
    try:
        proc = subprocess.Popen(cmd)
    except OSError as exc:
        raise DashboardError(f"could not start streamlit: {exc}") from exc
    # The stack stops us with SIGTERM, a terminal with SIGINT: pass either on so Streamlit shuts
    # down cleanly, and wait for it.
    with StopSignals(name="the dashboard", log=log, action=proc.send_signal):
        return proc.wait()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="run the Streamlit dashboard (read-only database role, 127.0.0.1 by default)",
        description="Run the operator dashboard: live view with map, trends, pipeline health, devices.",
    )
    p.add_argument("--host", default=None, help="bind address (default dashboard.host)")
    p.add_argument("--port", type=int, default=None, help="port (default dashboard.port)")
    p.set_defaults(func=run, config_overrides=_overrides)


__all__ = ["register", "run", "streamlit_command"]
