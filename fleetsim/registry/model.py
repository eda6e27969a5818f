"""Pure registry logic: the device record, validation of new devices, topics, connection text.

No I/O here: the store, the identity files and the CLI build on these functions, and the unit
tests exercise them without any service.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import (
    DEVICE_ID_PATTERN,
    LAT_RANGE,
    LON_RANGE,
    PAYLOAD_FORMATS,
    PayloadFormat,
    is_valid_device_id,
    telemetry_topic,
)
from fleetsim.kernel.errors import RegistryError

KINDS: Final = ("simulated", "real")
MAX_NAME = 200
"""Longest accepted device name, in characters."""
MAX_SITE = 100
"""Longest accepted site name, in characters."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One row of the ``devices`` table."""

    device_id: str
    """Contract device id; also the device's MQTT user name."""
    name: str | None = None
    """Free-text label shown by the dashboard."""
    kind: str = "real"
    """``simulated`` (from ``devices.csv``) or ``real`` (``fleetsim device add`` or auto-registered)."""
    type: str = "fixed"
    """``fixed`` or ``mobile``; a mobile device's own reported position always wins."""
    site: str | None = None
    """Site name used for per-site aggregates and filters."""
    lat: float | None = None
    """Registered latitude in degrees (WGS84), used when a reading carries none."""
    lon: float | None = None
    """Registered longitude in degrees (WGS84)."""
    payload_format: PayloadFormat = "native"
    """Wire format the device publishes (the adapter that decodes it)."""
    interval_s: float | None = None
    """Expected reporting interval in seconds (informational)."""
    placed: bool = True
    """False for devices auto-registered from an unknown id: no location known yet."""
    enabled: bool = True
    """False after ``fleetsim device disable``: credentials revoked, readings dead-lettered."""
    created_at: datetime | None = None
    """Row creation time (UTC), set by the database."""
    updated_at: datetime | None = None
    """Last change (UTC), set by the store on every update."""
    indoor: bool | None = None  # last: the store builds records positionally from its SELECT
    """Indoor (True) or outdoor (False) for the per-class alert rules; None: unknown (fleet-wide rule)."""


def reserved_ids(cfg: FleetsimConfig) -> frozenset[str]:
    """MQTT user names of Fleetsim's own components: a device must never take one over."""
    m = cfg.mqtt
    return frozenset({m.bridge_user, m.sim_user, m.tool_user, m.notifier_user})


def validate_new_device(
    cfg: FleetsimConfig,
    device_id: str,
    *,
    site: str | None,
    lat: float | None,
    lon: float | None,
    payload_format: str = "native",
    name: str | None = None,
    interval_s: float | None = None,
) -> DeviceRecord:
    """A :class:`DeviceRecord` (kind ``real``) for ``fleetsim device add``, or a :class:`RegistryError`
    naming the bad argument and what is allowed."""
    if not is_valid_device_id(device_id):
        raise RegistryError(f"device id {device_id!r} is invalid: it must match {DEVICE_ID_PATTERN}")
    if device_id in reserved_ids(cfg):
        raise RegistryError(f"device id {device_id!r} is reserved for a Fleetsim component's MQTT identity")
    if payload_format not in PAYLOAD_FORMATS:
        raise RegistryError(f"format {payload_format!r} is not one of {', '.join(PAYLOAD_FORMATS)}")
    if (lat is None) != (lon is None):
        raise RegistryError("give both --lat and --lon, or neither")
    if lat is not None and not (math.isfinite(lat) and LAT_RANGE[0] <= lat <= LAT_RANGE[1]):
        raise RegistryError(f"--lat {lat} is outside [{LAT_RANGE[0]}, {LAT_RANGE[1]}] degrees")
    if lon is not None and not (math.isfinite(lon) and LON_RANGE[0] <= lon <= LON_RANGE[1]):
        raise RegistryError(f"--lon {lon} is outside [{LON_RANGE[0]}, {LON_RANGE[1]}] degrees")
    if site is not None and not (0 < len(site.strip()) <= MAX_SITE):
        raise RegistryError(f"--site must be 1..{MAX_SITE} characters")
    if name is not None and len(name) > MAX_NAME:
        raise RegistryError(f"--name must be at most {MAX_NAME} characters")
    if interval_s is not None and not (math.isfinite(interval_s) and interval_s > 0):
        raise RegistryError("--interval must be a positive number of seconds")
    return DeviceRecord(
        device_id=device_id,
        name=name,
        kind="real",
        type="fixed",
        site=site.strip() if site else None,
        lat=lat,
        lon=lon,
        payload_format=payload_format,
        interval_s=interval_s,
        placed=lat is not None,
        enabled=True,
    )


def device_topic(device_id: str, payload_format: str) -> str:
    """The topic a device of this format publishes its readings on (the bridge's default routes)."""
    if payload_format == "senml":
        return f"sensors/{device_id}/senml"
    if payload_format == "tasmota":
        return f"tele/{device_id}/SENSOR"
    return telemetry_topic(device_id)


def example_payload(device_id: str, payload_format: str) -> str:
    """A small valid payload of the format, for the printed ``mosquitto_pub`` line."""
    if payload_format == "senml":
        return (
            f'[{{"bn":"urn:dev:{device_id}:","bt":1700000000,"n":"temperature","u":"Cel","v":21.5}},'
            '{"n":"humidity","u":"%RH","v":40}]'
        )
    if payload_format == "tasmota":
        return (
            '{"Time":"2026-01-01T12:00:00","BME280":{"Temperature":21.5,"Humidity":40.0,"Pressure":1013.2}}'
        )
    return (
        f'{{"device_id":"{device_id}","ts":"2026-01-01T12:00:00.000Z","seq":1,'
        '"temperature":21.5,"humidity":40.0}'
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way to reach the broker."""

    host: str
    """Host name or IP address the device connects to."""
    port: int
    """TCP port."""
    tls: bool
    """True for the TLS listener (the device must verify the server with ``ca_file``)."""
    ca_file: str | None = None
    """Path of the CA certificate devices use to verify the TLS listener."""


def connection_text(
    device: DeviceRecord, password: str, endpoints: list[Endpoint], *, broker_reloaded: bool
) -> str:
    """The settings printed once by ``device add`` / ``rotate-credentials`` (password included)."""
    topic = device_topic(device.device_id, device.payload_format)
    lines = [
        f"Device {device.device_id} ({device.payload_format}) registered"
        + (f" at site {device.site}" if device.site else "")
        + ".",
        "",
        f"  username : {device.device_id}",
        f"  password : {password}",
        "             (shown once: only its hash is stored; `fleetsim device rotate-credentials`"
        " issues a new one)",
        f"  topic    : {topic}   (QoS 0 or 1; client id: any, e.g. {device.device_id})",
    ]
    for ep in endpoints:
        kind = "TLS  " if ep.tls else "plain"
        extra = f"  CA file: {ep.ca_file}" if ep.tls and ep.ca_file else ""
        scope = "" if ep.tls else "  (loopback only: devices on this machine)"
        lines.append(f"  {kind}    : {ep.host}:{ep.port}{extra}{scope}")
    if not broker_reloaded:
        lines.append("  note     : the broker is not running; the identity applies at the next `fleetsim up`")
    lines += ["", "Try it:"]
    payload = example_payload(device.device_id, device.payload_format)
    for ep in endpoints:
        cmd = [
            "mosquitto_pub",
            "-h",
            ep.host,
            "-p",
            str(ep.port),
            "-u",
            device.device_id,
            "-P",
            password,
            "-i",
            device.device_id,
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ]
        if ep.tls and ep.ca_file:
            cmd[1:1] = ["--cafile", ep.ca_file]
        lines.append("  " + shlex.join(cmd))
    return "\n".join(lines) + "\n"


def describe(device: DeviceRecord) -> list[tuple[str, str]]:
    """``(field, value)`` pairs for ``device show`` (never any credential)."""

    def fmt(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, datetime):
            return v.isoformat(timespec="seconds")
        return str(v)

    return [
        ("device_id", device.device_id),
        ("name", fmt(device.name)),
        ("kind", device.kind),
        ("type", device.type),
        ("site", fmt(device.site)),
        ("lat", fmt(device.lat)),
        ("lon", fmt(device.lon)),
        ("payload_format", device.payload_format),
        ("topic", device_topic(device.device_id, device.payload_format)),
        ("interval_s", fmt(device.interval_s)),
        ("placed", fmt(device.placed)),
        ("enabled", fmt(device.enabled)),
        ("created_at", fmt(device.created_at)),
        ("updated_at", fmt(device.updated_at)),
    ]
