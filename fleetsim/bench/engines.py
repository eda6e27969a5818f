"""Small helpers the benchmark scripts share to talk to the harness's engines."""

from __future__ import annotations

import json
import signal
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.stack import dedicated
from fleetsim.stack.kafka import ensure_topics


def fresh_topics(cfg: FleetsimConfig, prefix: str = "bench") -> FleetsimConfig:
    """``cfg`` with new, created ``<prefix>.<id>.telemetry``, ``.deadletter`` and ``.lines`` topics (ACLs
    included): a variant or test that starts from an empty log, whatever ran before it."""
    uid = uuid.uuid4().hex[:10]
    out = cfg.with_overrides(
        {
            "kafka.telemetry_topic": f"{prefix}.{uid}.telemetry",
            "kafka.deadletter_topic": f"{prefix}.{uid}.deadletter",
            "kafka.lines_topic": f"{prefix}.{uid}.lines",
        }
    )
    ensure_topics(out)
    return out


def pg_rows(cfg: FleetsimConfig, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement as the admin role; its rows (none for a statement without a result)."""
    conn = pg_connect(cfg, "admin")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def run_standalone(
    repo: Path,
    name: str,
    engines: tuple[str, ...],
    run: Callable[[FleetsimConfig, bool], dict[str, Any]],
    quick: bool,
    start_timeout_s: float | None = None,
) -> int:
    """A benchmark script run by hand rather than by the harness: its ``engines`` on free ports
    in a temporary directory, ``run(cfg, quick)``'s result printed as JSON. SIGTERM unwinds, so
    the engines (and whatever ``run`` started under ``with``) are stopped."""

    def on_term(_sig: int, _frame: Any) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    over: dict[str, Any] = {"stack.jvm_dir": str(repo / ".cache" / "jvm")}
    if start_timeout_s is not None:
        over["stack.start_timeout_s"] = start_timeout_s
    base = load_config(repo / "fleetsim.toml", environ={}).with_overrides(over)
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-stack-") as tmp,
        dedicated(base, Path(tmp), *engines) as (cfg, _),
    ):
        print(json.dumps(run(cfg, quick), indent=1))
    return 0
