"""How the Streamlit app gets its configuration: loaded once from the arguments ``fleetsim dashboard``
passes after ``--`` (the same ``--config`` file and ``--set`` overrides the CLI was given), or
injected by tests that run the app in-process with ``streamlit.testing``."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from fleetsim.kernel.config import FleetsimConfig, load_config

_injected: FleetsimConfig | None = None


def inject(cfg: FleetsimConfig | None) -> None:
    """Use ``cfg`` instead of parsing arguments (in-process tests); None restores argument parsing."""
    global _injected  # noqa: PLW0603 - one process-wide config is the point
    _injected = cfg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetsim-dashboard-app", add_help=False)
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    return p


def app_args(config_file: Path | None, overrides: Sequence[str]) -> list[str]:
    """Arguments for the app script so it rebuilds exactly the CLI's configuration."""
    out: list[str] = []
    if config_file is not None:
        out += ["--config", str(config_file.resolve())]
    for item in overrides:
        out += ["--set", item]
    return out


@functools.lru_cache(maxsize=4)
def _load(argv: tuple[str, ...]) -> FleetsimConfig:
    args, _unknown = _parser().parse_known_args(list(argv))
    overrides: dict[str, str] = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key.strip()] = value
    return load_config(args.config, overrides=overrides)


def app_config(argv: Sequence[str] | None = None) -> FleetsimConfig:
    """The app's configuration (loaded once per process and argument list)."""
    if _injected is not None:
        return _injected
    return _load(tuple(sys.argv[1:] if argv is None else argv))
