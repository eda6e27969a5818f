"""The vectorised engine against the one-device-at-a-time reference model, and its noise streams."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import UTC, datetime

import numpy as np
import pytest

from fleetsim.edge.engine import Simulation
from fleetsim.edge.fleet import normals
from fleetsim.edge.ledger import Ledger
from fleetsim.edge.physics import NOISE_SIGMA, Climate, reference_reading
from fleetsim.edge.publisher import MemoryPublisher
from fleetsim.edge.runner import Runner
from fleetsim.kernel.contract import decode
from fleetsim.kernel.fleetfile import DeviceSpec

START = datetime(2026, 4, 13, 0, 0, tzinfo=UTC)  # a Monday in spring
LYON = dict(type="fixed", site="s", lat=45.76, lon=4.85, interval_s=120.0)
FLEET = [
    DeviceSpec(device_id="office", indoor=True, occupancy="office", **LYON),
    DeviceSpec(device_id="meeting", indoor=True, occupancy="meeting", temp_offset_c=0.4, **LYON),
    DeviceSpec(device_id="retail", indoor=True, occupancy="retail", **LYON),
    DeviceSpec(device_id="home", indoor=True, occupancy="home", altitude_m=250.0, **LYON),
    DeviceSpec(device_id="store", indoor=True, occupancy="none", **LYON),
    DeviceSpec(device_id="park", indoor=False, temp_offset_c=-0.6, **LYON),
]
FIELDS = ("temperature", "humidity", "co2", "pressure")


def _vectorised(days: float) -> dict[str, list[tuple[float, tuple[float, ...]]]]:
    pub = MemoryPublisher()
    sim = Simulation(FLEET, pub, seed=3, start=START, ledger=Ledger(None))
    Runner(sim, speed=None, duration_s=days * 86400).run()
    out: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    for m in pub.telemetry():
        r = decode(m.payload, topic_device_id=m.topic.split("/")[1], now=datetime(2030, 1, 1, tzinfo=UTC))
        t = (r.ts - START).total_seconds()
        out.setdefault(r.device_id, []).append((t, tuple(getattr(r, f) for f in FIELDS)))
    return out


def _scalar(spec: DeviceSpec, times: list[float]) -> list[tuple[float, ...]]:
    """The reference model at the same instants, with Python's own Gaussian noise."""
    climate = Climate(0, START, spec.lon, lat=spec.lat)
    rng = random.Random(f"ref:{spec.device_id}")
    co2, last, out = 420.0, times[0], []
    for t in times:
        values, co2 = reference_reading(spec, climate, t, co2, t - last, rng.gauss)
        last = t
        out.append(values)
    return out


def test_vectorised_and_scalar_physics_agree_statistically():
    vec = _vectorised(3.0)
    assert set(vec) == {s.device_id for s in FLEET}
    for spec in FLEET:
        rows = vec[spec.device_id]
        assert len(rows) > 2000
        ref = _scalar(spec, [t for t, _ in rows])
        for j, name in enumerate(FIELDS):
            a = [v[j] for _, v in rows]
            b = [v[j] for v in ref]
            sa, sb = statistics.stdev(a), statistics.stdev(b)
            where = f"{spec.device_id} {name}: vectorised {statistics.mean(a):.3f}±{sa:.3f}, "
            where += f"scalar {statistics.mean(b):.3f}±{sb:.3f}"
            # Same model, same instants: only the noise differs, so the means agree to a fraction
            # of a noise sigma and the spreads (signal + noise) to a few per cent.
            assert statistics.mean(a) == pytest.approx(statistics.mean(b), abs=0.05 * sb + 0.05), where
            assert sa == pytest.approx(sb, rel=0.05, abs=0.05), where
            # ...and reading by reading they differ by noise only (a few sigma at most).
            diff = [x - y for x, y in zip(a, b, strict=True)]
            assert abs(statistics.mean(diff)) < 0.1 * statistics.stdev(diff) + 0.01, where
            sigma = NOISE_SIGMA["indoor" if spec.indoor else "outdoor"][j] * 2**0.5
            high = 2.5 if name == "humidity" else 1.3  # RH also moves with the temperature's noise
            assert 0.8 * sigma < statistics.stdev(diff) < high * sigma, f"{where}, noise {sigma:.3f}"


def test_noise_streams_are_standard_normal_and_independent():
    keys = np.arange(1, 2001, dtype=np.uint64) * np.uint64(0x1234567)
    z = np.concatenate([normals(keys, np.full(2000, n, dtype=np.uint64)) for n in range(50)])
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    corr = np.corrcoef(z.T)
    assert np.abs(corr - np.eye(z.shape[1])).max() < 0.02  # the six draws of a reading
    # A device's n-th draw does not depend on which other devices share the batch.
    alone = normals(keys[7:8], np.array([3], dtype=np.uint64))
    assert np.array_equal(alone[0], normals(keys, np.full(2000, 3, dtype=np.uint64))[7])


def test_a_device_stream_does_not_depend_on_the_rest_of_the_fleet():
    def stream(specs: list[DeviceSpec]) -> list[bytes]:
        pub = MemoryPublisher()
        sim = Simulation(specs, pub, seed=5, start=START, ledger=Ledger(None))
        Runner(sim, speed=None, duration_s=6 * 3600).run()
        return [m.payload for m in pub.telemetry() if m.topic == "sensors/park/telemetry"]

    assert stream(FLEET) == stream(FLEET[-1:])


def test_a_battery_replaced_inside_a_batch_window_resumes_at_once():
    # A 10-minute window would hold the death, the swap a minute later and the next readings.
    spec = DeviceSpec(
        device_id="cell", indoor=False, battery_mah=0.3, replace_after_s=60.0, **{**LYON, "interval_s": 10.0}
    )
    pub = MemoryPublisher()
    sim = Simulation([spec], pub, seed=1, start=START, ledger=Ledger(None))
    Runner(sim, speed=None, duration_s=4 * 3600).run()
    ts = [
        decode(m.payload, topic_device_id="cell", now=datetime(2030, 1, 1, tzinfo=UTC)).ts
        for m in pub.telemetry()
    ]
    gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(ts))
    assert gaps[0] == pytest.approx(10.0) and gaps[-1] <= 60.0 + 10.0 + 1e-6  # dead 60 s, then on
    events = [r["event"] for r in sim.ledger.records or [] if r["record"] == "event"]
    assert events.count("battery_replaced") >= 2
