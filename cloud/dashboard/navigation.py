"""The dashboard's pages. Adding a page = one page script under ``pages/`` plus one entry here.

The page script is a thin file:

    from fleetsim.cloud.dashboard.ui import context
    from fleetsim.cloud.dashboard.views.my_page import render
    render(context())
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageSpec:
    """One navigation entry."""

    title: str
    """Label in the navigation."""
    script: str
    """Page script path relative to the app directory."""
    icon: str
    """Emoji or ``:material/...:`` icon."""
    url_path: str
    """URL segment of the page."""
    default: bool = False
    """The page shown at the root URL."""


PAGES: tuple[PageSpec, ...] = (
    PageSpec("Live", "pages/live.py", ":material/satellite_alt:", "live", default=True),
    PageSpec("Trends", "pages/trends.py", ":material/monitoring:", "trends"),
    PageSpec("Pipeline", "pages/pipeline.py", ":material/lan:", "pipeline"),
    PageSpec("Devices", "pages/devices.py", ":material/sensors:", "devices"),
    PageSpec("Experiments", "pages/experiments.py", ":material/science:", "experiments"),
)


def page_specs(app_dir: Path = APP_DIR) -> list[PageSpec]:
    """Every page; a missing page script is a packaging bug: raise ``FileNotFoundError``."""
    for spec in PAGES:
        if not (app_dir / spec.script).is_file():
            raise FileNotFoundError(f"dashboard page script missing: {app_dir / spec.script}")
    return list(PAGES)
