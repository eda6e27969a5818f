"""Topic filters -> adapters: which subscription a message came through and whose it is.

The device id of a message is the topic level matched by the FIRST ``+`` of its route's filter
(``sensors/+/telemetry`` -> level 1); a filter without ``+`` has no id slot and the adapter must
find the id in the payload. Routes are tried in configuration order; the first match wins.
Filters should not overlap: a broker may deliver a message once per matching subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetsim.bridge.adapters import Adapter, build_adapter
from fleetsim.kernel.config import AdapterRoute

SHARE_PREFIX = "$share/"
_CACHE_LIMIT = 200_000
"""Topics remembered by :class:`Router` (one per device and format in practice)."""


def validate_filter(topic_filter: str) -> None:
    """Raise ValueError for a filter MQTT would refuse (wildcards must fill a whole level)."""
    if not topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError("topic filter must be 1..65535 bytes")
    if topic_filter.startswith(SHARE_PREFIX):
        raise ValueError("give the plain filter; --shared-group adds the $share/ prefix")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be the whole last level in {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level in {topic_filter!r}")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest; wildcards never match ``$`` topics)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """One configured subscription."""

    topic_filter: str
    """Plain MQTT filter (without any ``$share/`` prefix)."""
    adapter: Adapter
    id_level: int | None
    """Topic level holding the device id (the first ``+``), or None."""

    @property
    def format(self) -> str:
        return self.adapter.name

    def subscription(self, shared_group: str = "") -> str:
        """The filter to SUBSCRIBE with: ``$share/<group>/<filter>`` when in a shared group."""
        return f"{SHARE_PREFIX}{shared_group}/{self.topic_filter}" if shared_group else self.topic_filter


def build_routes(routes: Sequence[AdapterRoute], max_bytes: int) -> list[TopicRoute]:
    out = []
    for r in routes:
        validate_filter(r.filter)
        levels = r.filter.split("/")
        id_level = levels.index("+") if "+" in levels else None
        out.append(TopicRoute(r.filter, build_adapter(r.format, max_bytes), id_level))
    return out


class Router:
    """Resolves a topic to ``(route, device id from the topic)``, cached per topic."""

    def __init__(self, routes: Sequence[TopicRoute]) -> None:
        self.routes = list(routes)
        self._cache: dict[str, tuple[TopicRoute, str | None] | None] = {}

    def resolve(self, topic: str) -> tuple[TopicRoute, str | None] | None:
        hit = self._cache.get(topic)
        if hit is not None or topic in self._cache:
            return hit
        found: tuple[TopicRoute, str | None] | None = None
        for route in self.routes:
            if topic_matches(route.topic_filter, topic):
                device = topic.split("/")[route.id_level] if route.id_level is not None else None
                found = (route, device)
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded memory under a flood of distinct topics
        self._cache[topic] = found
        return found
