"""simulation.speed / duration / start / instance are validated when the config loads."""

from __future__ import annotations

import pytest

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ConfigError


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("simulation.speed", "fast", "'max'"),
        ("simulation.speed", "0", "a number > 0"),
        ("simulation.duration", "ten minutes", "ms, s, m, h or d"),
        ("simulation.start", "2026-06-01T08:00:00", "with an offset"),
        ("simulation.start", "yesterday", "RFC 3339"),
        ("simulation.instance", "a b", "A-Z a-z 0-9"),
    ],
)
def test_a_bad_simulation_value_fails_at_load_naming_the_key_and_the_allowed_forms(
    key: str, value: str, names: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        FleetsimConfig().with_overrides({key: value})
    assert key in str(exc.value) and names in str(exc.value)


def test_good_values_are_kept_as_written_and_parsed_once_for_the_simulator() -> None:
    sc = (
        FleetsimConfig()
        .with_overrides(
            {
                "simulation.speed": "max",
                "simulation.duration": "1.5h",
                "simulation.start": "2026-06-01T08:00:00Z",
            }
        )
        .simulation
    )
    assert (sc.speed, sc.speed_factor, sc.duration_s) == ("max", None, 5400.0)
    assert FleetsimConfig().simulation.duration_s is None
