"""What only the drills need; the pipeline, the ground-truth publisher and the checker live in the
package (:mod:`fleetsim.chaos`), where ``fleetsim chaos`` uses them too.

- :func:`report`: one ``DRILL`` line with a drill's measured figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def report(name: str, **figures: Any) -> None:
    """One ``DRILL`` line with a drill's measured figures (``pytest -s`` shows them; the
    figures in docs/reliability.md come from these lines)."""
    print(f"\nDRILL {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
