"""Whether the windowed flow keeps up during a bench step: how far its watermark trails the wall
clock, and what its capped batches left unread in Kafka (the job's Prometheus gauges, sampled).

The raw flow's event->row latency says nothing about the windows: they run in their own query on
a 30-s trigger, and a batch cap of 200,000 records held them at 6,667 msg/s while the raw flow
passed 8,000 (ANALYSIS.md, twentieth round). ``sensor_data_agg`` then trails further every batch,
and after a long enough run Kafka's retention deletes records the windows have not read yet.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from fleetsim.kernel.scrape import scrape

WATERMARK_METRIC: Final = "fleetsim_stream_watermark_seconds"
BACKLOG_METRIC: Final = "fleetsim_stream_backlog_records"
QUERY: Final = "agg"


def windows_lag_s(watermark_s: float, state_delay_s: float, now_s: float) -> float:
    """Age of the newest reading the windows had seen: Spark's watermark trails the newest window
    time by the state delay (``SparkConfig.state_delay_s``)."""
    return now_s - (watermark_s + state_delay_s)


def verdict(samples: list[tuple[float, float | None, float | None]], skip_s: float,
            limit_s: float) -> dict[str, Any]:  # fmt: skip
    """``samples``: (seconds into the step, lag s or None, backlog records or None). The lag is
    judged after ``skip_s`` (a watermark read at a step's start may be the previous step's), and
    always at the last sample; the backlog everywhere: any batch its cap held back means the
    windows read slower than the data arrived."""
    lags = [(t, lag) for t, lag, _ in samples if lag is not None]
    backlogs = [b for _, _, b in samples if b is not None]
    judged = [lag for t, lag in lags if t >= skip_s] + ([lags[-1][1]] if lags else [])
    lag_max = max(judged) if judged else None
    backlog_max = int(max(backlogs)) if backlogs else None
    kept_up = None if lag_max is None else (lag_max <= limit_s and not backlog_max)
    return {
        "lag_s_last": round(lags[-1][1], 1) if lags else None,
        "lag_s_max": None if lag_max is None else round(lag_max, 1),
        "lag_limit_s": limit_s,
        "backlog_records_max": backlog_max,
        "kept_up": kept_up,
    }


class WindowsSampler:
    """Samples the windowed query's watermark and backlog (the job's metrics on ``port``) every
    ``every_s`` on a thread."""

    def __init__(self, port: int, state_delay_s: float, every_s: float = 5.0) -> None:
        self.port = port
        self.state_delay_s = state_delay_s
        self.every_s = every_s
        self.samples: list[tuple[float, float | None, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="windows-sampler", daemon=True)
        self.t0 = time.monotonic()
        """``time.monotonic()`` at :meth:`start`: the origin of the samples' times."""

    def start(self) -> WindowsSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def sample(self) -> None:
        try:
            got = scrape(self.port)
        except (OSError, ValueError):  # the job's endpoint did not answer: a missing sample, not a verdict
            return
        wm = got.value(WATERMARK_METRIC, query=QUERY)
        lag = windows_lag_s(wm, self.state_delay_s, time.time()) if wm else None
        self.samples.append((time.monotonic() - self.t0, lag, got.value(BACKLOG_METRIC, query=QUERY)))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self, skip_s: float, limit_s: float) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)
        self.sample()  # the step's end, after its drain
        return verdict(self.samples, skip_s, limit_s)
