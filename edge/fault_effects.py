"""What active faults do to one reading: pure functions of the clean values, the simulated time
and a fault random stream (the per-reading side of a fault; starting and ending one lives in
:mod:`fleetsim.edge.faults`).

Effects compose in injection order and the reading carries the newest fault's code. Called from
:meth:`fleetsim.edge.device.Device.sample` only for a device with at least one active fault, so
the fault-free hot path pays one ``if``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from fleetsim.kernel.contract import FaultKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fleetsim.edge.faults import ActiveFault

Values = tuple[float | None, float | None, float | None, float | None]
"""Temperature (°C), relative humidity (%), CO2 (ppm), pressure (hPa); None: no measurement."""

NO_FAULT_RNG: Final = random.Random(0)
"""Placeholder fault stream until a device's first fault; never drawn from (the injector swaps in
a seeded stream first)."""

_STUCK, _DRIFT, _SPIKE, _NOISE = FaultKind.STUCK, FaultKind.DRIFT, FaultKind.SPIKE, FaultKind.NOISE
_DROPOUT, _FAILURE, _SKEW = FaultKind.DROPOUT, FaultKind.SENSOR_FAILURE, FaultKind.CLOCK_SKEW
_DUP, _HEAT = FaultKind.DUPLICATE, FaultKind.HEATWAVE


@dataclass(slots=True)
class Effects:
    """One reading after its device's active faults."""

    values: Values
    """The measurements as transmitted."""
    status: str
    """``OK`` or ``FAILURE`` (a battery WARNING is decided by the device afterwards)."""
    fault: str | None
    """Code of the newest active fault, carried by the reading."""
    skew_ms: int
    """Added to the event timestamp, in milliseconds (clock skew)."""
    dropout: bool
    """The reading is made (its seq used) but never transmitted."""
    duplicate: bool
    """The reading is sent twice, same seq and bytes."""


def apply_faults(
    faults: Mapping[FaultKind, ActiveFault], values: Values, t: float, indoor: bool, frng: random.Random
) -> Effects:
    """The effects of ``faults`` (in insertion order) on clean ``values`` at simulated second ``t``.

    Mutates only the faults' own ``state`` (the frozen values of ``stuck``) and ``counters``."""
    status = "OK"
    fault = None
    skew_ms = 0
    dropout = duplicate = False
    for kind, af in faults.items():
        fault = kind.value
        p = af.params
        if kind is _STUCK:
            if af.state is None:
                af.state = values
            values = af.state
        elif kind is _DRIFT:
            temp_v = values[0]
            if temp_v is not None:
                values = (temp_v + p["rate"] * (t - af.start) / 60.0, *values[1:])
        elif kind is _SPIKE:
            if frng.random() < p["prob"]:
                values = spike(values, p["magnitude"] * (1 if frng.random() < 0.5 else -1))
                af.counters["spikes"] = af.counters.get("spikes", 0) + 1
        elif kind is _NOISE:
            values = noisy(values, p["sigma"], frng)
        elif kind is _HEAT:
            values = heat(values, p["delta"] * (0.3 if indoor else 1.0))
        elif kind is _FAILURE:
            values = (None, None, None, None)
            status = "FAILURE"
        elif kind is _SKEW:
            skew_ms = int(p["offset_s"] * 1000)
        elif kind is _DROPOUT:
            dropout = dropout or frng.random() < p["prob"]
        elif kind is _DUP:
            duplicate = duplicate or frng.random() < p["prob"]
    return Effects(values, status, fault, skew_ms, dropout, duplicate)


def spike(v: Values, magnitude: float) -> Values:
    t, h, c, p = v
    return (
        None if t is None else min(150.0, max(-80.0, t + magnitude)),
        h,
        None if c is None else min(40_000.0, max(0.0, c + 40.0 * abs(magnitude))),
        p,
    )


def noisy(v: Values, sigma: float, rng: random.Random) -> Values:
    t, h, c, p = v
    g = rng.gauss
    return (
        None if t is None else t + g(0.0, sigma),
        None if h is None else h + g(0.0, 2.0 * sigma),
        None if c is None else max(0.0, c + g(0.0, 40.0 * sigma)),
        None if p is None else p + g(0.0, sigma),
    )


def heat(v: Values, delta: float) -> Values:
    t, h, c, p = v
    # Same moisture, warmer air: relative humidity falls about 6 % per °C.
    return (None if t is None else t + delta, None if h is None else h * math.exp(-0.06 * delta), c, p)
