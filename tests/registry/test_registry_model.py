"""Pure registry logic: validation of new devices, topics, the printed connection settings."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import fleetsim
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import PAYLOAD_FORMATS
from fleetsim.kernel.errors import RegistryError
from fleetsim.registry.model import (
    DeviceRecord,
    Endpoint,
    connection_text,
    describe,
    device_topic,
    example_payload,
    validate_new_device,
)

CFG = FleetsimConfig()


def test_valid_device_is_real_fixed_and_placed() -> None:
    d = validate_new_device(
        CFG, "plug-7", site=" lab ", lat=48.1, lon=11.5, payload_format="tasmota", name="P"
    )
    assert (d.kind, d.type, d.site, d.placed, d.enabled, d.payload_format) == (
        "real",
        "fixed",
        "lab",
        True,
        True,
        "tasmota",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_id": "bad id"}, "invalid"),
        ({"device_id": "x" * 65}, "invalid"),
        ({"device_id": "fleetsim-bridge"}, "reserved"),
        ({"device_id": "fleetsim-sim"}, "reserved"),
        ({"lat": 91.0}, "--lat"),
        ({"lon": -180.5}, "--lon"),
        ({"lat": float("nan")}, "--lat"),
        ({"lon": None}, "both"),
        ({"payload_format": "xml"}, "format"),
        ({"site": "   "}, "--site"),
        ({"interval_s": 0.0}, "--interval"),
    ],
)
def test_invalid_devices_are_refused_with_the_argument_named(kwargs: dict, message: str) -> None:
    args = {"device_id": "dev-1", "site": "s", "lat": 1.0, "lon": 2.0, "payload_format": "native"} | kwargs
    device_id = args.pop("device_id")
    with pytest.raises(RegistryError, match=message):
        validate_new_device(CFG, device_id, **args)


@pytest.mark.parametrize(
    ("fmt", "topic"),
    [("native", "sensors/d1/telemetry"), ("senml", "sensors/d1/senml"), ("tasmota", "tele/d1/SENSOR")],
)
def test_topic_follows_the_bridge_default_routes(fmt: str, topic: str) -> None:
    assert device_topic("d1", fmt) == topic
    # The printed topic must be one the bridge actually routes with that adapter.
    routes: dict[str, str] = {r.format: r.filter for r in CFG.bridge.routes}
    prefix, _, suffix = routes[fmt].split("/")
    assert topic.split("/") == [prefix, "d1", suffix]


def test_every_payload_format_has_a_default_route_and_the_devices_table_allows_exactly_them() -> None:
    assert sorted(r.format for r in CFG.bridge.routes) == sorted(PAYLOAD_FORMATS)
    migration = Path(fleetsim.__file__).parent / "migrations" / "V001__core_schema.sql"
    check = re.search(r"payload_format IN \(([^)]*)\)", migration.read_text(encoding="utf-8"))
    assert check is not None
    assert sorted(re.findall(r"'([^']+)'", check.group(1))) == sorted(PAYLOAD_FORMATS)


@pytest.mark.parametrize("fmt", PAYLOAD_FORMATS)
def test_example_payloads_are_json(fmt: str) -> None:
    obj = json.loads(example_payload("d1", fmt))
    assert obj


def test_native_example_payload_passes_the_contract() -> None:
    from fleetsim.kernel.contract import decode

    reading = decode(example_payload("d1", "native").encode(), topic_device_id="d1")
    assert reading.device_id == "d1"
    assert reading.lat is None


def test_connection_text_has_every_setting_and_a_runnable_command() -> None:
    d = DeviceRecord("d1", site="lab", payload_format="senml")
    eps = [
        Endpoint("127.0.0.1", 1883, tls=False),
        Endpoint("broker.example", 8883, tls=True, ca_file="/x/ca.crt"),
    ]
    text = connection_text(d, "s3cr3t pw", eps, broker_reloaded=True)
    assert "username : d1" in text
    assert "password : s3cr3t pw" in text
    assert "topic    : sensors/d1/senml" in text
    assert "broker.example:8883" in text
    assert "/x/ca.crt" in text
    commands = [shlex.split(line) for line in text.splitlines() if line.strip().startswith("mosquitto_pub")]
    assert len(commands) == 2
    plain, tls = commands
    assert plain[plain.index("-P") + 1] == "s3cr3t pw"
    assert plain[plain.index("-t") + 1] == "sensors/d1/senml"
    assert "--cafile" not in plain
    assert tls[tls.index("--cafile") + 1] == "/x/ca.crt"
    assert tls[tls.index("-p") + 1] == "8883"
    assert "not running" not in text


def test_connection_text_says_when_the_broker_was_not_reloaded() -> None:
    text = connection_text(
        DeviceRecord("d1"), "pw", [Endpoint("127.0.0.1", 1883, tls=False)], broker_reloaded=False
    )
    assert "not running" in text


def test_describe_never_mentions_a_password() -> None:
    pairs = dict(describe(DeviceRecord("d1", site="s", lat=1.0, lon=2.0)))
    assert pairs["topic"] == "sensors/d1/telemetry"
    assert not any("pass" in k for k in pairs)
