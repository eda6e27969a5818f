"""The fleet's numeric state as arrays, and the clean physics of many readings at once.

One row per device (its index in the fleet). A batch of readings is a set of rows and their
due instants; :meth:`Fleet.step` computes their clean values (the model of
:func:`fleetsim.edge.physics.reference_reading`) with numpy, advances the rows' state (indoor CO2,
battery, sample counter) and returns the values, rounded as on the wire.

Measurement noise comes from a counter-based generator: the n-th reading of a device draws from
``splitmix64(key + (6n + j + 1) * golden)``, where ``key`` is a hash of the run's seed and the
device id. It is a per-device stream (a device's readings do not depend on which other devices
share its batch, its shard or the order of sampling), it needs no state but the counter, and a
batch draws all its numbers in a handful of array operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from fleetsim.edge.physics import (
    CO2_TAU_S,
    KIND_INDEX,
    NOISE_SIGMA,
    OCCUPANCY_PEAK_PPM,
    OUTDOOR_CO2_PPM,
    TRAFFIC_CO2_PPM,
    Battery,
    Climate,
    magnus_rh_array,
    pressure_factor,
)
from fleetsim.kernel.fleetfile import OCCUPANCY_KINDS, DeviceSpec

if TYPE_CHECKING:
    from numpy.typing import NDArray

    F64 = NDArray[np.float64]
    I64 = NDArray[np.int64]

NOISE_DRAWS: Final = 6
"""Standard normals per reading: temperature, humidity, CO2, pressure, GPS lat, GPS lon."""
GPS_SIGMA_DEG: Final = 3.0 / 111_320.0
"""GPS noise of mobile units (about 3 m), in degrees."""
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_PHASE_COUNTER: Final = 2**62
"""Counter of the draws made once per device (start phase, route position), far from readings'."""


def device_key(seed: int, device_id: str) -> int:
    """64-bit key of a device's random stream (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}:{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser (in place on a fresh array; uint64 arithmetic wraps)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def uniforms(keys: NDArray[np.uint64], counters: NDArray[np.uint64], k: int) -> F64:
    """``(len(keys), k)`` uniforms in (0, 1): draws ``counters * k + j`` of each key's stream."""
    j = np.arange(1, k + 1, dtype=np.uint64)
    x = keys[:, None] + (counters[:, None] * np.uint64(k) + j[None, :]) * _GOLDEN
    return ((_mix(x) >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)


def normals(keys: NDArray[np.uint64], counters: NDArray[np.uint64]) -> F64:
    """``(len(keys), NOISE_DRAWS)`` standard normals (Box-Muller on :func:`uniforms`)."""
    u = uniforms(keys, counters, NOISE_DRAWS)
    half = NOISE_DRAWS // 2
    r = np.sqrt(-2.0 * np.log(u[:, :half]))
    a = 2.0 * np.pi * u[:, half:]
    return np.concatenate((r * np.cos(a), r * np.sin(a)), axis=1)


@dataclass(slots=True)
class Batch:
    """Clean readings of one round of a batch (row ``k`` is device ``rows[k]`` at ``t[k]``)."""

    rows: I64
    t: F64
    raw: F64
    """``(n, 4)`` temperature, humidity, CO2, pressure before rounding (the fault path's input)."""
    temp: F64
    hum: F64
    co2: F64
    pressure: F64
    """Rounded and clipped as on the wire (2, 1, 1, 2 decimals)."""
    battery: F64
    """Charge in % (NaN: mains powered), unrounded: <= 0 means the device just died."""
    gps: F64
    """``(n, 2)`` GPS noise in degrees (used by mobile units only)."""


class Fleet:
    """Per-device state of one simulation as arrays."""

    def __init__(self, specs: Sequence[DeviceSpec], seed: int) -> None:
        n = len(specs)
        self.n = n
        self.keys = np.array([device_key(seed, s.device_id) for s in specs], dtype=np.uint64)
        self.indoor = np.array([s.indoor for s in specs], dtype=bool)
        self.mobile = np.array([s.type == "mobile" for s in specs], dtype=bool)
        self.kind = np.array([KIND_INDEX[s.occupancy] for s in specs], dtype=np.int64)
        self.offset = np.array([s.temp_offset_c for s in specs], dtype=np.float64)
        self.pfactor = np.array([pressure_factor(s.altitude_m) for s in specs], dtype=np.float64)
        self.interval = np.array([s.interval_s for s in specs], dtype=np.float64)
        self.capacity = np.array([s.battery_mah for s in specs], dtype=np.float64)
        self.has_battery = self.capacity > 0
        self.remaining = self.capacity.copy()
        self.drain_factor = np.ones(n)
        """Battery drain multiplier (an active ``battery_drain`` fault)."""
        self.faulty = np.zeros(n, dtype=bool)
        """At least one active fault: the reading takes the scalar fault-effect path."""
        self.down = np.zeros(n, dtype=bool)
        """Not sampling (crash, killed, empty battery)."""
        self.co2 = np.full(n, OUTDOOR_CO2_PPM)
        self.count = np.zeros(n, dtype=np.uint64)
        """Readings made so far (the noise stream's counter)."""
        once = uniforms(self.keys, np.full(n, _PHASE_COUNTER, dtype=np.uint64), 2)
        self.route_phase = once[:, 1]
        # A random phase, so a fleet does not sample in lock-step.
        self.due = once[:, 0] * self.interval
        """Simulated instant of each device's next reading (inf: parked while down)."""
        self.last_t = self.due.copy()
        """Instant of the previous reading (or reboot): battery drain and CO2 integrate from it."""
        self._peak = np.array([OCCUPANCY_PEAK_PPM[k] for k in OCCUPANCY_KINDS])
        self._traffic = np.where(self.mobile, TRAFFIC_CO2_PPM["mobile"], TRAFFIC_CO2_PPM["fixed"])
        sig = np.array([NOISE_SIGMA["indoor"], NOISE_SIGMA["outdoor"]])
        self._sigma = np.where(self.indoor[:, None], sig[0][None, :], sig[1][None, :])
        self._minutes: dict[int, tuple[float, float, float, float, tuple[float, ...], tuple[float, ...]]] = {}

    def step(self, climate: Climate, rows: I64) -> Batch:
        """One reading of each of ``rows`` at its due instant; advances their state and due time."""
        t = self.due[rows]
        dt = t - self.last_t[rows]
        self.last_t[rows] = t
        self.due[rows] = t + self.interval[rows]
        # Inputs every device of a minute shares, gathered per reading.
        minute = (t // 60.0).astype(np.int64)
        uniq, inv = np.unique(minute, return_inverse=True)
        tables = [self._minute(climate, int(m)) for m in uniq]
        out_t = np.array([x[0] for x in tables])[inv]
        dew = np.array([x[1] for x in tables])[inv]
        slp = np.array([x[2] for x in tables])[inv]
        traffic = np.array([x[3] for x in tables])[inv]
        kind = self.kind[rows]
        occ = np.array([x[4] for x in tables])[inv, kind]
        setp = np.array([x[5] for x in tables])[inv, kind]
        z = normals(self.keys[rows], self.count[rows]) * np.concatenate(
            (self._sigma[rows], np.full((len(rows), 2), GPS_SIGMA_DEG)), axis=1
        )
        self.count[rows] += np.uint64(1)
        indoor = self.indoor[rows]
        offset = self.offset[rows]
        # Indoor: HVAC set-point plus occupants; CO2 relaxes to the occupancy's steady state.
        temp_in = setp + 1.2 * occ + offset + z[:, 0]
        target = OUTDOOR_CO2_PPM + self._peak[kind] * occ
        state = self.co2[rows]
        state = state + (target - state) * (1.0 - np.exp(-dt / CO2_TAU_S))
        self.co2[rows] = np.where(indoor, state, self.co2[rows])
        hum_in = magnus_rh_array(temp_in, np.minimum(dew, 12.0) + 2.0 * occ) + z[:, 1]
        # Outdoor: the city's air; CO2 from road traffic.
        temp_out = out_t + offset + z[:, 0]
        hum_out = magnus_rh_array(temp_out, dew) + z[:, 1]
        co2_out = OUTDOOR_CO2_PPM + self._traffic[rows] * traffic + z[:, 2]
        temp = np.where(indoor, temp_in, temp_out)
        hum = np.where(indoor, hum_in, hum_out)
        co2 = np.where(indoor, state + z[:, 2], co2_out)
        pressure = slp * self.pfactor[rows] + z[:, 3]
        battery = self._drain(rows, dt, temp)
        return Batch(
            rows=rows,
            t=t,
            raw=np.stack((temp, hum, co2, pressure), axis=1),
            temp=np.round(temp, 2),
            hum=np.round(np.clip(hum, 0.0, 100.0), 1),
            co2=np.round(np.maximum(co2, 0.0), 1),
            pressure=np.round(pressure, 2),
            battery=battery,
            gps=z[:, 4:6],
        )

    def _drain(self, rows: I64, dt: F64, temp: F64) -> F64:
        """:meth:`fleetsim.edge.physics.Battery.drain` of every battery-powered row (NaN: mains)."""
        cap = self.capacity[rows]
        powered = cap > 0
        if not powered.any():
            return np.full(len(rows), np.nan)
        cold = np.where(temp < 10.0, 1.0 + 0.025 * (10.0 - temp), 1.0)
        used = (Battery.IDLE_MA * dt / 3600.0 + Battery.TX_MAH) * cold * self.drain_factor[rows]
        left = np.maximum(0.0, self.remaining[rows] - used)
        self.remaining[rows] = np.where(powered, left, self.remaining[rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(powered, 100.0 * left / cap, np.nan)

    def _minute(
        self, climate: Climate, minute: int
    ) -> tuple[float, float, float, float, tuple[float, ...], tuple[float, ...]]:
        table = self._minutes.get(minute)
        if table is None:
            if len(self._minutes) > 1024:  # bounded: a long run visits each minute once
                self._minutes.clear()
            table = self._minutes[minute] = climate.minute_table(minute)
        return table
