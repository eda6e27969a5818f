"""Topic filters: MQTT matching rules, the device-id slot, shared-subscription names."""

from __future__ import annotations

import pytest

from fleetsim.bridge.routing import Router, build_routes, topic_matches, validate_filter
from fleetsim.kernel.config import AdapterRoute


@pytest.mark.parametrize(
    ("flt", "topic", "match"),
    [
        ("sensors/+/telemetry", "sensors/dev-1/telemetry", True),
        ("sensors/+/telemetry", "sensors/dev-1/senml", False),
        ("sensors/+/telemetry", "sensors/a/b/telemetry", False),
        ("sensors/+/telemetry", "sensors//telemetry", True),
        ("sensors/#", "sensors", True),
        ("sensors/#", "sensors/a/b/c", True),
        ("#", "$SYS/broker/uptime", False),
        ("+/x", "$SYS/x", False),
        ("tele/+/SENSOR", "tele/plug/SENSOR", True),
        ("tele/+/SENSOR", "tele/plug/sensor", False),
    ],
)
def test_topic_matches(flt: str, topic: str, match: bool) -> None:
    assert topic_matches(flt, topic) is match


@pytest.mark.parametrize("bad", ["", "a/b#", "a/#/b", "a/b+/c", "$share/g/a/+"])
def test_invalid_filters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_filter(bad)


def test_router_takes_the_device_id_from_the_first_plus_and_first_route_wins() -> None:
    routes = build_routes(
        [
            AdapterRoute(filter="sensors/+/telemetry", format="native"),
            AdapterRoute(filter="site/+/+/senml", format="senml"),
            AdapterRoute(filter="sensors/#", format="senml"),
        ],
        4096,
    )
    router = Router(routes)
    hit = router.resolve("sensors/dev-1/telemetry")
    assert hit is not None and hit[0].format == "native" and hit[1] == "dev-1"
    hit = router.resolve("site/lyon/dev-2/senml")
    assert hit is not None and hit[0].format == "senml" and hit[1] == "lyon"
    hit = router.resolve("sensors/x/y/z")
    assert hit is not None and hit[0].topic_filter == "sensors/#" and hit[1] is None
    assert router.resolve("nowhere") is None
    assert router.resolve("nowhere") is None  # cached negative answer too


def test_shared_group_subscription_name() -> None:
    (route,) = build_routes([AdapterRoute(filter="sensors/+/telemetry", format="native")], 4096)
    assert route.subscription() == "sensors/+/telemetry"
    assert route.subscription("fleet") == "$share/fleet/sensors/+/telemetry"
