"""A real browser (Debian's chromium, headless, driven by Playwright) loads `fleetsim dashboard`
against the seeded database and must find the deck.gl map with drawn device markers and the charts.
A screenshot of each page goes to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_seed import SeedFacts
from dashboard_seed import execute as _exec

from fleetsim.kernel.config import FleetsimConfig

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:  # noqa: S310 - http only
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def dashboard_url(seeded: SeedFacts, app_cfg: FleetsimConfig, tmp_path: Path) -> Iterator[str]:
    """`fleetsim --config <file> dashboard --port <free>` as a real process, stopped at the end."""
    pg = app_cfg.postgres
    config = tmp_path / "fleetsim.toml"
    # Passwords are not written here: the app reads them from the run dir's secrets file.
    config.write_text(
        f'[stack]\nrun_dir = "{app_cfg.run_dir}"\n'
        f'[postgres]\nhost = "{pg.host}"\nport = {pg.port}\ndatabase = "{pg.database}"\n'
        f"[alerts]\noffline_after_s = {app_cfg.alerts.offline_after_s}\n[dashboard]\nrefresh_s = 30\n",
        encoding="utf-8",
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETSIM_")}
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetsim.cli", "--config", str(config), "dashboard", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"dashboard did not start:\n{(tmp_path / 'dashboard.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _colour_counts(png: bytes) -> dict[str, int]:
    """Pixels close to the map's FAILURE red, OK green and OFFLINE grey (alpha-blended on white)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    counts = {"red": 0, "green": 0}
    for pixel in img.get_flattened_data():
        r, g, b = pixel  # type: ignore[misc]
        if r > 180 and g < 140 and b < 140:
            counts["red"] += 1
        elif g > 130 and r < 140 and b < 140:
            counts["green"] += 1
    return counts


def test_browser_renders_map_and_charts(dashboard_url: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        with contextlib.closing(browser):
            page = browser.new_page(viewport={"width": 1500, "height": 1900})
            try:
                _check_pages(page, dashboard_url)
            except Exception:
                # Keep the evidence of what the browser showed when a wait or check failed.
                page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"), full_page=True, timeout=90_000)
                raise


def _check_pages(page: Any, dashboard_url: str) -> None:
    page.goto(dashboard_url, wait_until="domcontentloaded")
    deck = page.locator('[data-testid="stDeckGlJsonChart"]')
    canvas = deck.locator("canvas").first
    canvas.wait_for(state="visible", timeout=90_000)
    page.get_by_text("5 / 7").first.wait_for(timeout=30_000)
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.first.wait_for(state="visible", timeout=90_000)
    page.wait_for_timeout(1500)  # let deck.gl draw its first frame
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    colours = _colour_counts(deck.screenshot(timeout=90_000))
    page.screenshot(path=str(ARTIFACTS / "dashboard_live.png"), full_page=True, timeout=90_000)
    # The FAILURE device (red) and the OK devices (green) are drawn on the map canvas.
    assert colours["red"] > 5, colours
    assert colours["green"] > 5, colours
    assert charts.count() >= 1

    page.goto(f"{dashboard_url}/trends", wait_until="domcontentloaded")
    page.get_by_text("Window means of temperature").wait_for(timeout=90_000)
    trend_charts = page.locator('[data-testid="stVegaLiteChart"]')
    trend_charts.first.wait_for(state="visible", timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "dashboard_trends.png"), full_page=True, timeout=90_000)
    assert trend_charts.count() >= 1

    for path, marker in (("pipeline", "Dead letters and rejects"), ("devices", "Search id or name")):
        page.goto(f"{dashboard_url}/{path}", wait_until="domcontentloaded")
        page.get_by_text(marker).first.wait_for(timeout=90_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=90_000)
        if path == "pipeline":  # throughput/latency/batch charts and the dead-letter bars
            drawn = page.locator(
                '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
            )
            drawn.nth(3).wait_for(state="visible", timeout=90_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / f"dashboard_{path}.png"), full_page=True, timeout=90_000)
        assert page.locator('[data-testid="stException"]').count() == 0, path
    assert page.get_by_text("Traceback").count() == 0


def test_acknowledge_in_the_browser_changes_postgres(
    with_incidents: dict[str, int], app_cfg: FleetsimConfig, dashboard_url: str
) -> None:
    """Pick an incident, type a note, click Apply in a real browser: the row changes in PostgreSQL
    (as the operator role, recorded as ``[alerts] operator``) and the page says so. Also the
    screenshot of the live page with the incident feed (tests/artifacts/alerts_live.png, the source
    of docs/img/alerts-live.png)."""
    from playwright.sync_api import sync_playwright

    # An open incident older than the seeded ones: not the form's default choice (the newest).
    (iid,) = _exec(
        app_cfg,
        "admin",
        "INSERT INTO incidents (device_id, kind, measurement, site, severity, state, opened_at, last_seen,"
        " n_alerts, peak_value, threshold) VALUES ('dev-warn-2', 'extreme_high', 'co2', 'alpha', 'warning',"
        " 'open', now() - interval '40 minutes', now(), 9, 1720, 1500) RETURNING incident_id",
    )[0]
    other = with_incidents["dev-ok-1"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        with contextlib.closing(browser):
            # Wide enough for the incident feed's columns (the screenshot of docs/alerts.md).
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            try:
                _acknowledge(page, dashboard_url, iid)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "alerts_failure.png"), full_page=True, timeout=90_000)
                raise
    rows = _exec(
        app_cfg,
        "admin",
        "SELECT incident_id, state, acknowledged_by, ack_note FROM incidents WHERE incident_id IN (%s, %s)"
        " ORDER BY incident_id",
        (iid, other),
    )
    assert sorted(rows) == sorted(
        [
            (iid, "acknowledged", app_cfg.alerts.operator, "cellar sensor: on my way"),
            (other, "open", None, None),
        ]
    )
    events = _exec(
        app_cfg, "admin", "SELECT action, actor, note FROM incident_events WHERE incident_id = %s", (iid,)
    )
    assert events == [("acknowledged", app_cfg.alerts.operator, "cellar sensor: on my way")]


def _acknowledge(page: Any, dashboard_url: str, iid: int) -> None:
    page.goto(dashboard_url, wait_until="domcontentloaded")
    page.get_by_text("Act on an incident").wait_for(timeout=90_000)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(state="visible", timeout=90_000)
    page.locator('[data-testid="stDeckGlJsonChart"] canvas').first.wait_for(state="visible", timeout=90_000)
    page.wait_for_timeout(2500)  # deck.gl's first frame, the data grid's canvas
    page.screenshot(path=str(ARTIFACTS / "alerts_live.png"), timeout=90_000)

    # Choose it as a user does: open the select, type part of its label, pick the match.
    pick = page.get_by_test_id("stSelectbox").filter(has_text="Incident")
    box = pick.locator("input")
    box.scroll_into_view_if_needed()
    box.click()
    box.fill("dev-warn-2")
    page.get_by_role("option", name=f"#{iid} · dev-warn-2").click(timeout=30_000)
    page.wait_for_timeout(300)
    shown = f"{pick.inner_text()} {box.input_value()}"
    assert f"#{iid} · dev-warn-2" in shown, shown
    page.get_by_test_id("stRadio").get_by_text("Acknowledge", exact=True).click()
    page.get_by_label("Note (required)").fill("cellar sensor: on my way")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text(f"Incident #{iid} is acknowledged.").wait_for(timeout=60_000)
    assert page.locator('[data-testid="stException"]').count() == 0
