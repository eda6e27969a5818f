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
