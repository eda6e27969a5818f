"""``[alerts] rules`` are validated at start-up: an invalid rule names its key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsim.kernel.config import AlertsConfig, load_config
from fleetsim.kernel.errors import ConfigError


def _load(tmp_path: Path, text: str) -> AlertsConfig:
    path = tmp_path / "fleetsim.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ={}).alerts


def test_rules_load_from_toml_tables(tmp_path: Path) -> None:
    alerts = _load(
        tmp_path,
        '[alerts]\nincident_quiet_s = 300\noperator = "alice"\n'
        '[[alerts.rules]]\nmeasurement = "co2"\nsite = "lab"\nhigh = 2000\nclear_high = 1800\n'
        "min_duration_s = 120\n",
    )
    (rule,) = alerts.rules
    assert (rule.measurement, rule.site, rule.high, rule.clear_high, rule.min_duration_s) == (
        "co2", "lab", 2000.0, 1800.0, 120.0,
    )  # fmt: skip
    assert alerts.incident_quiet_s == 300.0 and alerts.operator == "alice"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('measurement = "noise"\nhigh = 1', ["alerts.rules.0.measurement", "'temperature'", "'pressure'"]),
        ('measurement = "co2"\ntype = "drone"\nhigh = 1', ["alerts.rules.0.type", "'fixed'", "'mobile'"]),
        ('measurement = "co2"', ["alerts.rules.0", "set low and/or high"]),
        ('measurement = "co2"\nhigh = 1000\nclear_high = 1100', ["alerts.rules.0", "clear_high (1100.0)"]),
        ('measurement = "co2"\nlow = 10\nhigh = 5', ["low (10.0) must be below high (5.0)"]),
        ('measurement = "co2"\nhigh = 5\nmin_duration_s = -1', ["alerts.rules.0.min_duration_s"]),
        ('measurement = "co2"\nhigh = 5\nseverity = "panic"', ["alerts.rules.0.severity", "'critical'"]),
        ('measurement = "co2"\nhigh = 5\nindor = true', ["alerts.rules.0.indor", "Extra inputs"]),
    ],
)
def test_invalid_rules_fail_naming_the_key(tmp_path: Path, rule: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[[alerts.rules]]\n{rule}\n")
    for text in expected:
        assert text in str(info.value)


def test_default_rules_spare_outdoor_humidity() -> None:
    from fleetsim.cloud.streaming.rules import resolve_rule

    alerts = AlertsConfig()
    outdoor = resolve_rule(alerts, "humidity", indoor=False, type="fixed", site="tete-dor")
    assert outdoor is not None and outdoor.high is None  # RH near 100 % outdoors is weather
    indoor = resolve_rule(alerts, "humidity", indoor=True)
    assert indoor is not None and (indoor.high, indoor.clear_high) == (85.0, 80.0)
    fleet = resolve_rule(alerts, "humidity")
    assert fleet is not None and fleet.high == alerts.humidity_high
