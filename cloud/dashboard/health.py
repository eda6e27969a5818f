"""Per-component health for the pipeline view, measured from the dashboard with the kernel alone.

Each component of the kernel's table (:mod:`fleetsim.kernel.components`) is measured where the
configuration says it serves: the engines (mosquitto, kafka, postgres) by a TCP connect to their
client port, the applications by scraping their Prometheus ``/metrics`` endpoint (up, plus the live
figure: the counter ``fleetsim status`` shows; the bridge also reports its own state gauge) and
the dashboard by Streamlit's ``/_stcore/health``. The database adds what it proves (it answered,
and when the streaming job last wrote). Nothing is ever reported "up" without an answer: a
component that cannot be measured (metrics disabled) is *unknown*.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetsim.kernel import components
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.scrape import MetricMissing, http_get, metrics_url, scrape

COMPONENTS: tuple[str, ...] = components.COMPONENT_NAMES

ENGINE_TIMEOUT_S = 1.0
APP_TIMEOUT_S = 1.5
BRIDGE_STATES = {0.0: "up", 1.0: "degraded", 2.0: "unhealthy"}
"""``fleetsim_bridge_state`` (0 ok, 1 degraded, 2 down: not connected to MQTT or Kafka)."""


@dataclass(frozen=True)
class ComponentHealth:
    """One row of the health table."""

    name: str
    """Component name as in ``fleetsim status``."""
    state: str
    """``up``, ``down`` (nothing answers where it should serve), ``degraded``/``unhealthy`` (the
    bridge's own state gauge), ``stale`` (the database shows writes in the past, none now),
    ``behind`` (the windows trail the raw rows: :func:`windows_health`) or ``unknown`` (cannot be
    measured)."""
    detail: str
    """The live figure or why the state is what it is."""
    source: str
    """Where the state comes from: ``tcp host:port``, the URL scraped, or ``database``."""


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib wraps the socket error
    return str(reason if reason is not None else exc) or type(exc).__name__


def probe_engine(cfg: FleetsimConfig, name: str, timeout_s: float = ENGINE_TIMEOUT_S) -> ComponentHealth:
    """TCP connect to the engine's configured client port."""
    host, port = components.endpoint(cfg, name)
    source = f"tcp {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        return ComponentHealth(name, "down", f"no connection: {_why(exc)}", source)
    return ComponentHealth(name, "up", "accepts connections", source)


def probe_app(cfg: FleetsimConfig, name: str, timeout_s: float = APP_TIMEOUT_S) -> ComponentHealth:
    """Scrape the application's metrics endpoint (the dashboard: its health endpoint)."""
    info = components.info(name)
    host, port = components.endpoint(cfg, name)
    if name == "dashboard":
        url = f"http://{host}:{port}/_stcore/health"
        try:
            answer = http_get(url, timeout_s).strip()
        except OSError as exc:
            return ComponentHealth(name, "down", f"no answer: {_why(exc)}", url)
        return ComponentHealth(name, "up" if answer == "ok" else "unhealthy", f"health says {answer!r}", url)
    if not port:
        return ComponentHealth(name, "unknown", f"metrics disabled ({info.port_key} = 0)", "none")
    url = metrics_url(port, host)
    try:
        metrics = scrape(port, host=host, timeout_s=timeout_s)
    except OSError as exc:
        return ComponentHealth(name, "down", f"no answer: {_why(exc)}", url)
    except ValueError as exc:  # answered, but not Prometheus text
        return ComponentHealth(name, "unhealthy", f"unreadable metrics: {exc}", url)
    try:
        figure = f"{metrics.total(info.counter):,.0f} {info.unit}"
    except MetricMissing as exc:
        return ComponentHealth(name, "unhealthy", f"answers, but {exc}", url)
    state = "up"
    if name == "stream":
        # What the windowed query's last batch left unread because its cap held it back: a
        # query reading slower than its topic fills (0 when it keeps up).
        backlog = metrics.value("fleetsim_stream_backlog_records", query="agg")
        if backlog:
            state = "degraded"
            figure += f"; windows {backlog:,.0f} records behind (their batch cap held them back)"
    if name == "bridge":
        gauge = metrics.value("fleetsim_bridge_state")
        state = BRIDGE_STATES.get(gauge, "unknown") if gauge is not None else "unknown"
        if state != "up":
            figure += f"; state gauge {gauge}"
    return ComponentHealth(name, state, figure, url)


def probe(cfg: FleetsimConfig, name: str) -> ComponentHealth:
    """Measure one component of the table."""
    if components.info(name).kind == "engine":
        return probe_engine(cfg, name)
    return probe_app(cfg, name)


def measured_health(cfg: FleetsimConfig, names: tuple[str, ...] = COMPONENTS) -> list[ComponentHealth]:
    """Every component measured (in parallel, so the slowest probe bounds the wait), table order."""
    with ThreadPoolExecutor(max_workers=max(len(names), 1), thread_name_prefix="health") as pool:
        return list(pool.map(lambda n: probe(cfg, n), names))


def _age(ts: Any, now: datetime) -> float | None:
    if ts is None:
        return None
    try:
        return (now - ts).total_seconds()
    except TypeError:
        return None


def windows_health(fresh: dict[str, Any], state_delay_s: float, behind_after_s: float) -> ComponentHealth:
    """Whether the windows (``sensor_data_agg``) keep up with the raw rows: how much older their
    newest reading is (the windowed query's watermark + ``state_delay_s``) than the newest row
    written. Measured against the raw rows, not the clock, so a fleet that stopped reporting is
    not "behind". Keeping up, the gap is at most two windowed triggers and a batch."""
    wm, newest_row = fresh.get("agg_watermark"), fresh.get("newest_row_written")
    if wm is None or newest_row is None:
        return ComponentHealth("windows", "unknown", "no windowed batch with a watermark yet", "database")
    gap = _age(wm, newest_row)
    if gap is None:
        return ComponentHealth("windows", "unknown", "unreadable watermark", "database")
    gap -= state_delay_s
    state = "behind" if gap > behind_after_s else "up"
    detail = f"newest reading in the windows {max(gap, 0.0):.0f} s older than the newest row"
    if state == "behind":
        detail += f" (over {behind_after_s:.0f} s: the windowed query reads slower than the data arrive)"
    return ComponentHealth("windows", state, detail, "database")


def database_health(fresh: dict[str, Any], now: datetime, stale_after_s: float) -> list[ComponentHealth]:
    """What the database proves: it answered, and when the streaming job last wrote each output."""
    rows = [ComponentHealth("postgres", "up", "answered the dashboard's read-only queries", "database")]
    batch_age = _age(fresh.get("newest_batch"), now)
    row_age = _age(fresh.get("newest_row_written"), now)
    ages = [a for a in (batch_age, row_age) if a is not None]
    if not ages:
        rows.append(ComponentHealth("stream", "unknown", "no batch or row written yet", "database"))
    else:
        newest = min(ages)
        state = "up" if newest <= stale_after_s else "stale"
        rows.append(ComponentHealth("stream", state, f"last write {newest:.0f} s ago", "database"))
    return rows


def merge(measured: list[ComponentHealth] | None, db_rows: list[ComponentHealth]) -> list[ComponentHealth]:
    """Measured rows first; database evidence added; components nobody vouches for marked unknown."""
    out: list[ComponentHealth] = list(measured or [])
    seen = {r.name for r in out}
    for r in db_rows:
        if r.name in seen:
            out.append(ComponentHealth(f"{r.name} (db)", r.state, r.detail, r.source))
        else:
            out.append(r)
            seen.add(r.name)
    for name in COMPONENTS:
        if name not in seen:
            why = "measurement unavailable" if measured is None else "not measured"
            out.append(ComponentHealth(name, "unknown", why, "none"))
    return out
