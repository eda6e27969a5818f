"""Read a Prometheus text endpoint (``/metrics`` of the bridge, the streaming job, the simulator).

API:

``http_get(url, timeout_s=2.0) -> str``
    The body of a plain-HTTP GET (raises ``OSError`` when nothing answers).
``metrics_url(port, host="127.0.0.1") -> str``
    ``http://host:port/metrics``.
``parse(text) -> Scrape`` / ``scrape(port, *, host="127.0.0.1", timeout_s=2.0) -> Scrape``
    Every sample of the exposition (``scrape`` raises ``OSError`` when the endpoint does not answer).
``Scrape``
    ``.samples`` (list of :class:`Sample`: ``name``, ``labels``, ``value``), ``.families`` (names
    of the exported families, without the ``_total`` suffix);
    ``value(name, **labels) -> float | None`` (first sample of that name whose labels include
    ``labels``), ``total(name, **labels) -> float`` (sum over matching samples; raises
    :class:`MetricMissing` when the metric is not exported at all, 0.0 for an exported labelled
    counter with no series yet), ``flat() -> dict[str, float]`` (``{"name{k=v,...}": value}``),
    ``name in scrape`` (a sample or family of that name is exported).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


class MetricMissing(LookupError):
    """The endpoint answered but does not export the metric asked for."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """The samples of one scrape."""

    samples: list[Sample] = field(default_factory=list)
    families: frozenset[str] = frozenset()

    def _matching(self, name: str, labels: dict[str, str]) -> list[Sample]:
        return [
            s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = self._matching(name, labels)
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        found = self._matching(name, labels)
        if not found and name not in self:
            raise MetricMissing(f"metric {name} not exported")
        return sum(s.value for s in found)

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        # A labelled counter with no series yet is exported as a bare family (no samples).
        return name.removesuffix("_total") in self.families or any(s.name == name for s in self.samples)


def http_get(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - callers pass http URLs
        return str(resp.read().decode("utf-8", errors="replace"))


def metrics_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/metrics"


def parse(text: str) -> Scrape:
    samples: list[Sample] = []
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        samples.extend(Sample(s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return Scrape(samples, frozenset(families))


def scrape(port: int, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> Scrape:
    return parse(http_get(metrics_url(port, host), timeout_s))
