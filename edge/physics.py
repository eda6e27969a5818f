"""Environment physics: pure, deterministic functions of simulated time and a seed.

The city's weather (sea-level pressure, a temperature anomaly, cloudiness) is a sum of slow
sinusoids with seeded phases rather than a stepped random walk: it is then a pure function of
time, so every device, every shard and every replay of a seed sees the same weather whatever
the order in which devices sample. Only measurement noise comes from each device's own
``random.Random``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

import numpy as np

from fleetsim.kernel.fleetfile import OCCUPANCY_KINDS, haversine_km

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

    from fleetsim.kernel.fleetfile import DeviceSpec

TWO_PI: Final = 2 * math.pi
DAY_S: Final = 86_400.0
OUTDOOR_CO2_PPM: Final = 420.0
"""Background atmospheric CO2 in ppm."""
OCCUPANCY_PEAK_PPM: Final = {
    "none": 0.0,
    "office": 650.0,
    "meeting": 1500.0,
    "retail": 450.0,
    "lab": 500.0,
    "home": 600.0,
}
"""CO2 in ppm above background at full occupancy, in steady state, per occupancy kind."""
CO2_TAU_S: Final = 900.0
"""Ventilation time constant (seconds) of the indoor CO2 first-order response."""


def magnus_rh(temp_c: float, dew_c: float) -> float:
    """Relative humidity (%) from temperature and dew point (Magnus formula, Alduchov-Eskridge)."""
    a, b = 17.625, 243.04
    rh = 100.0 * math.exp(a * dew_c / (b + dew_c) - a * temp_c / (b + temp_c))
    return min(100.0, max(1.0, rh))


def magnus_rh_array(temp_c: NDArray[np.float64], dew_c: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`magnus_rh` over arrays."""
    a, b = 17.625, 243.04
    rh = 100.0 * np.exp(a * dew_c / (b + dew_c) - a * temp_c / (b + temp_c))
    return np.clip(rh, 1.0, 100.0)


def pressure_factor(altitude_m: float) -> float:
    """Station over sea-level pressure at ``altitude_m`` (standard atmosphere)."""
    return float((1.0 - 2.25577e-5 * altitude_m) ** 5.25588)


def station_pressure(slp_hpa: float, altitude_m: float) -> float:
    """Barometric pressure (hPa) at ``altitude_m`` for a sea-level pressure (standard atmosphere)."""
    return slp_hpa * pressure_factor(altitude_m)


def indoor_setpoint(kind: str, hour: float, weekday: int, outdoor_c: float) -> float:
    """Room temperature the HVAC holds, with a little leakage of the outdoor temperature."""
    leak = 0.12 * (outdoor_c - 15.0)
    if kind in ("office", "meeting", "lab"):
        if weekday < 5 and 6.5 <= hour < 19.5:
            return 21.5 + leak
        return min(26.0, max(18.5, 10.0 + 0.5 * outdoor_c))  # set-back: heating or cooling off
    if kind == "retail":
        return (20.5 if 8.5 <= hour < 20.0 else 17.5) + leak
    if kind == "home":
        return 20.5 + leak
    return 16.0 + 0.4 * (outdoor_c - 15.0)  # unheated storage


def _smooth(x: float, lo: float, hi: float) -> float:
    """0 below ``lo``, 1 above ``hi``, smoothstep in between."""
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    u = (x - lo) / (hi - lo)
    return u * u * (3 - 2 * u)


def occupancy(kind: str, hour: float, weekday: int) -> float:
    """Fraction (0-1) of nominal occupants present at local ``hour`` on ``weekday`` (0 = Monday)."""
    workday = weekday < 5
    if kind == "office":
        if not workday:
            return 0.03
        day = _smooth(hour, 7.5, 9.5) * (1 - _smooth(hour, 17.0, 19.5))
        lunch = 1 - 0.4 * _smooth(hour, 12.0, 12.5) * (1 - _smooth(hour, 13.5, 14.0))
        return 0.85 * day * lunch
    if kind == "meeting":
        if not workday:
            return 0.0
        slots = ((9.0, 10.5), (11.0, 12.0), (14.0, 15.5), (16.0, 17.0))
        return 1.0 if any(a <= hour < b for a, b in slots) else 0.05 * _smooth(hour, 8, 9)
    if kind == "retail":
        if weekday == 6:
            return 0.0
        return (_smooth(hour, 9.5, 10.5) - _smooth(hour, 19.0, 19.5)) * (
            0.5 + 0.5 * _smooth(hour, 14.0, 17.5)
        )
    if kind == "lab":
        return 0.6 * _smooth(hour, 8.0, 9.0) * (1 - _smooth(hour, 18.0, 19.0)) if workday else 0.05
    if kind == "home":
        return 0.9 - 0.7 * _smooth(hour, 8.0, 9.0) * (1 - _smooth(hour, 17.5, 19.0)) if workday else 0.8
    return 0.0


def traffic(hour: float) -> float:
    """Road-traffic intensity (0-1) at local ``hour``: two rush hours over a daytime base."""
    rush = math.exp(-(((hour - 8.0) / 1.0) ** 2)) + math.exp(-(((hour - 18.0) / 1.2) ** 2))
    day = _smooth(hour, 6.0, 7.0) * (1 - _smooth(hour, 21.0, 23.0))
    return min(1.0, 0.35 * day + 0.65 * rush)


def sunrise_solar_hour(lat_deg: float, day_of_year: float) -> float:
    """Local solar time of sunrise (hours) at latitude ``lat_deg`` on a day of the year.

    Declination from Cooper's approximation, sunrise hour angle from ``cos H = -tan(lat) tan(decl)``
    (geometric sunrise, no refraction: a few minutes early, well inside the model's other errors).
    Clamped to [3, 11] h so polar day and night keep a usable cycle."""
    decl = math.radians(-23.44) * math.cos(TWO_PI * (day_of_year + 10.0) / 365.2425)
    x = -math.tan(math.radians(lat_deg)) * math.tan(decl)
    hour_angle = math.degrees(math.acos(min(1.0, max(-1.0, x))))
    return min(11.0, max(3.0, 12.0 - hour_angle / 15.0))


TMAX_SOLAR_H: Final = 14.5
"""Solar hour of the daily maximum (mid-afternoon, after the sun's noon peak heats the ground)."""


def diurnal_shape(solar_hour: float, sunrise: float) -> float:
    """The daily temperature cycle in [-1, 1]: -1 at sunrise, +1 at ``TMAX_SOLAR_H``.

    Two half-cosines, the warming from sunrise to mid-afternoon and the longer cooling through
    the night to the next sunrise, as in the piecewise models of air temperature (Parton and Logan
    1981; Cesaraccio et al. 2001). Each half averages zero, so the day's mean and swing are those
    of a plain cosine; only the minimum moves from 03:00 to sunrise."""
    rise = TMAX_SOLAR_H - sunrise
    if sunrise <= solar_hour <= TMAX_SOLAR_H:
        return -math.cos(math.pi * (solar_hour - sunrise) / rise)
    since_max = (solar_hour - TMAX_SOLAR_H) % 24.0
    return math.cos(math.pi * since_max / (24.0 - rise))


@dataclass(frozen=True, slots=True)
class CityState:
    """The city's outdoor conditions at one instant."""

    temp_c: float
    """Outdoor air temperature in °C (before site and device offsets)."""
    dew_c: float
    """Dew point in °C."""
    slp_hpa: float
    """Sea-level pressure in hPa."""
    local_hour: float
    """Civil local time of day in hours (0-24)."""
    weekday: int
    """Civil local weekday, 0 = Monday."""
    traffic: float
    """Road-traffic intensity 0-1."""


class Climate:
    """Seasonal + diurnal temperature and a slow synoptic weather process for one city.

    :meth:`at` is cached per simulated minute: thousands of devices share each minute, and the
    diurnal cycle moves only ~0.02 °C in that time.
    """

    def __init__(
        self, seed: int, start: datetime, lon: float, tz: str = "Europe/Paris", lat: float = 45.76
    ) -> None:
        rng = random.Random(f"{seed}:weather")
        self._start_epoch = start.timestamp()
        self._lon = lon
        self._lat = lat
        self._tz = ZoneInfo(tz)
        # (amplitude, period s, phase): periods of synoptic systems (1.5-9 days) and their harmonics.
        self._p_waves = [
            (a, p * DAY_S, rng.uniform(0, TWO_PI))
            for a, p in ((6.0, 9.0), (4.5, 4.3), (2.5, 2.1), (1.2, 1.3))
        ]
        self._t_waves = [
            (a, p * DAY_S, rng.uniform(0, TWO_PI)) for a, p in ((1.8, 7.0), (1.2, 3.1), (0.6, 1.7))
        ]
        self._slp_mean = 1015.0 + rng.uniform(-3, 3)
        self._cache_key = -1
        self._cache: CityState | None = None
        self._occ_cache: dict[tuple[str, int], float] = {}

    def at(self, t: float) -> CityState:
        """City state ``t`` simulated seconds after the start instant."""
        key = int(t // 60)
        if key == self._cache_key and self._cache is not None:
            return self._cache
        self._cache_key = key
        self._cache = self._compute(key * 60.0)
        return self._cache

    def occupancy(self, kind: str, t: float) -> float:
        """:func:`occupancy` of ``kind`` at simulated time ``t``, cached per simulated minute."""
        key = (kind, int(t // 60))
        value = self._occ_cache.get(key)
        if value is None:
            if len(self._occ_cache) > 256:
                self._occ_cache.clear()
            city = self.at(t)
            value = self._occ_cache[key] = occupancy(kind, city.local_hour, city.weekday)
        return value

    def minute_table(
        self, minute: int
    ) -> tuple[float, float, float, float, tuple[float, ...], tuple[float, ...]]:
        """What every device shares in simulated minute ``minute``: (outdoor °C, dew point, sea-level
        hPa, traffic, occupancy per kind, indoor set-point per kind), kinds in
        :data:`OCCUPANCY_KINDS` order. The vectorised engine gathers its readings' inputs from it."""
        city = self.at(minute * 60.0)
        h, wd, out = city.local_hour, city.weekday, city.temp_c
        occ = tuple(occupancy(k, h, wd) for k in OCCUPANCY_KINDS)
        setp = tuple(indoor_setpoint(k, h, wd, out) for k in OCCUPANCY_KINDS)
        return out, city.dew_c, city.slp_hpa, city.traffic, occ, setp

    def _compute(self, t: float) -> CityState:
        epoch = self._start_epoch + t
        slp = self._slp_mean + sum(a * math.sin(TWO_PI * epoch / p + ph) for a, p, ph in self._p_waves)
        anomaly = sum(a * math.sin(TWO_PI * epoch / p + ph) for a, p, ph in self._t_waves)
        cloud = min(1.0, max(0.0, (1018.0 - slp) / 18.0))
        day_of_year = (epoch / DAY_S) % 365.2425
        seasonal = 13.0 - 9.5 * math.cos(TWO_PI * (day_of_year - 20.0) / 365.2425)  # Lyon: 3.5 Jan, 22.5 Jul
        solar_hour = (epoch / 3600.0 + self._lon / 15.0) % 24.0
        amplitude = 6.0 * (1.0 - 0.55 * cloud)  # clouds damp the diurnal swing
        sunrise = sunrise_solar_hour(self._lat, day_of_year)
        temp = seasonal + anomaly + amplitude * diurnal_shape(solar_hour, sunrise)
        # Moisture follows the daily mean, not the hour: RH then falls as the afternoon warms.
        spread = 3.0 + 4.0 * (1.0 - cloud) + 1.5 * (seasonal - 13.0) / 9.5
        dew = seasonal + anomaly - spread
        local = datetime.fromtimestamp(epoch, UTC).astimezone(self._tz)
        hour = local.hour + local.minute / 60.0
        return CityState(temp, dew, slp, hour, local.weekday(), traffic(hour))


class Route:
    """A mobile unit's path: waypoints travelled back and forth at constant speed."""

    def __init__(self, waypoints: tuple[tuple[float, float], ...], speed_kmh: float, phase: float) -> None:
        self.points = waypoints
        self.cum_km = [0.0]
        for (a, b), (c, d) in itertools.pairwise(waypoints):
            self.cum_km.append(self.cum_km[-1] + haversine_km(a, b, c, d))
        self.length_km = self.cum_km[-1]
        self.speed_kms = speed_kmh / 3600.0
        self.offset_km = phase * 2 * self.length_km
        """Where along the round trip the unit starts, so units on one route spread out."""

    def position(self, t: float) -> tuple[float, float]:
        """(lat, lon) after ``t`` simulated seconds."""
        if self.length_km <= 0:
            return self.points[0]
        d = (self.offset_km + self.speed_kms * t) % (2 * self.length_km)
        if d > self.length_km:  # on the way back
            d = 2 * self.length_km - d
        i = max(1, bisect.bisect_left(self.cum_km, d))
        seg = self.cum_km[i] - self.cum_km[i - 1]
        f = (d - self.cum_km[i - 1]) / seg if seg > 0 else 0.0
        (a, b), (c, e) = self.points[i - 1], self.points[i]
        return a + (c - a) * f, b + (e - b) * f


class Battery:
    """A primary cell drained per transmission and at idle, faster in the cold."""

    IDLE_MA: Final = 0.04
    """Sleep current in mA."""
    TX_MAH: Final = 0.025
    """Charge per sample + transmission in mAh (about 100 mA for 0.9 s on an LTE-M radio)."""

    def __init__(self, capacity_mah: float) -> None:
        self.capacity_mah = capacity_mah
        self.remaining_mah = capacity_mah

    @property
    def pct(self) -> float:
        return 100.0 * self.remaining_mah / self.capacity_mah if self.capacity_mah > 0 else 100.0

    def drain(self, dt_s: float, temp_c: float, transmissions: int, factor: float = 1.0) -> float:
        """Spend ``dt_s`` seconds of idle plus ``transmissions``; returns the charge left in %.

        Below 10 °C the cell's internal resistance rises and usable charge falls, modelled as
        2.5 % more drain per degree.
        """
        cold = 1.0 + 0.025 * (10.0 - temp_c) if temp_c < 10.0 else 1.0
        used = (self.IDLE_MA * dt_s / 3600.0 + self.TX_MAH * transmissions) * cold * factor
        self.remaining_mah = max(0.0, self.remaining_mah - used)
        return self.pct

    def replace(self) -> None:
        self.remaining_mah = self.capacity_mah


# ------------------------------------------------------------------------- the reading model
NOISE_SIGMA: Final = {
    "indoor": (0.08, 0.6, 8.0, 0.12),
    "outdoor": (0.15, 1.0, 5.0, 0.12),
}
"""Measurement noise (1 sigma) of temperature (°C), humidity (%RH), CO2 (ppm) and pressure (hPa)."""
TRAFFIC_CO2_PPM: Final = {"fixed": 25.0, "mobile": 60.0}
"""CO2 above background at full road traffic, beside a road (fixed) or in it (mobile)."""


def reference_reading(
    spec: DeviceSpec, climate: Climate, t: float, co2_state: float, dt: float, gauss: Callable[..., float]
) -> tuple[tuple[float, float, float, float], float]:
    """One clean reading of one device, one device at a time: the model the vectorised engine
    (:mod:`fleetsim.edge.fleet`) computes for a whole class at once, kept readable here and as the
    reference its statistical test compares against. Returns ((temp, rh, co2, pressure), the new
    indoor CO2 state); ``dt`` is the time since the device's previous reading."""
    city = climate.at(t)
    if spec.indoor:
        s_t, s_h, s_c, s_p = NOISE_SIGMA["indoor"]
        occ = climate.occupancy(spec.occupancy, t)
        temp = indoor_setpoint(spec.occupancy, city.local_hour, city.weekday, city.temp_c) + 1.2 * occ
        temp += spec.temp_offset_c + gauss(0.0, s_t)
        target = OUTDOOR_CO2_PPM + OCCUPANCY_PEAK_PPM[spec.occupancy] * occ
        co2_state += (target - co2_state) * (1.0 - math.exp(-dt / CO2_TAU_S))
        co2 = co2_state + gauss(0.0, s_c)
        # Indoor air is outdoor air brought to room temperature (the HVAC condenses moisture
        # above a ~12 °C dew point), plus the occupants' breath.
        hum = magnus_rh(temp, min(city.dew_c, 12.0) + 2.0 * occ) + gauss(0.0, s_h)
    else:
        s_t, s_h, s_c, s_p = NOISE_SIGMA["outdoor"]
        temp = city.temp_c + spec.temp_offset_c + gauss(0.0, s_t)
        hum = magnus_rh(temp, city.dew_c) + gauss(0.0, s_h)
        co2 = OUTDOOR_CO2_PPM + TRAFFIC_CO2_PPM[spec.type] * city.traffic + gauss(0.0, s_c)
    pressure = station_pressure(city.slp_hpa, spec.altitude_m) + gauss(0.0, s_p)
    return (temp, hum, co2, pressure), co2_state


KIND_INDEX: Final = {k: i for i, k in enumerate(OCCUPANCY_KINDS)}
"""Occupancy kind -> column of the per-minute tables of :meth:`Climate.minute_table`."""
