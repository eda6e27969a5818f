"""``fleetsim device add|list|show|disable|enable|rotate-credentials|place|seed``: thin entry points
over :mod:`fleetsim.registry.service`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import PAYLOAD_FORMATS
from fleetsim.registry import service
from fleetsim.registry.model import (
    DeviceRecord,
    connection_text,
    describe,
    device_topic,
    validate_new_device,
)
from fleetsim.registry.seed import seed_from_csv


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("device", help="device registry: onboard real sensors, list, disable")
    sub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    a = sub.add_parser("add", help="register a real device and create its MQTT credentials")
    a.add_argument("device_id", help="contract id [A-Za-z0-9_.-]{1,64}; also the MQTT user name")
    a.add_argument("--site", required=True, help="site name (per-site views and aggregates)")
    a.add_argument("--lat", type=float, required=True, help="latitude in degrees (WGS84)")
    a.add_argument("--lon", type=float, required=True, help="longitude in degrees (WGS84)")
    a.add_argument(
        "--format", choices=PAYLOAD_FORMATS, default="native", help="payload format (default native)"
    )
    a.add_argument("--name", default=None, help="free-text label")
    a.add_argument("--interval", type=float, default=None, help="expected reporting interval, seconds")
    a.set_defaults(func=run_add)

    ls = sub.add_parser("list", help="list registered devices")
    ls.add_argument("--kind", choices=("simulated", "real"), default=None)
    ls.add_argument("--site", default=None)
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(func=run_list)

    for name, func, text in (
        ("show", run_show, "show one device's registry record"),
        ("disable", run_disable, "disable a device: revoke its credentials now, dead-letter its readings"),
        ("enable", run_enable, "re-enable a disabled device (restores its credentials)"),
        ("rotate-credentials", run_rotate, "issue a new password; the old one stops working at once"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("device_id")
        if name == "show":
            s.add_argument("--json", action="store_true")
        s.set_defaults(func=func)

    pl = sub.add_parser("place", help="set a device's registered location (e.g. an auto-registered one)")
    pl.add_argument("device_id")
    pl.add_argument("--lat", type=float, required=True)
    pl.add_argument("--lon", type=float, required=True)
    pl.add_argument("--site", default=None)
    pl.set_defaults(func=run_place)

    sd = sub.add_parser("seed", help="upsert the fleet file's simulated devices (also done by `fleetsim up`)")
    sd.add_argument(
        "--file",
        type=Path,
        default=None,
        help="another fleet file to register (default: simulation.devices_file); do it before "
        "`fleetsim sim --devices` publishes from it, or its devices get the fleet-wide alert rules",
    )
    sd.set_defaults(func=run_seed)


def _print_onboarded(cfg: FleetsimConfig, result: service.Onboarded) -> None:
    assert result.password is not None
    sys.stdout.write(
        connection_text(
            result.device, result.password, service.endpoints(cfg), broker_reloaded=result.broker_reloaded
        )
    )


def run_add(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    device = validate_new_device(
        cfg,
        args.device_id,
        site=args.site,
        lat=args.lat,
        lon=args.lon,
        payload_format=args.format,
        name=args.name,
        interval_s=args.interval,
    )
    _print_onboarded(cfg, service.add_device(cfg, device))
    return 0


def _device_json(d: DeviceRecord) -> dict[str, Any]:
    return {k: v for k, v in describe(d)} | {
        "lat": d.lat,
        "lon": d.lon,
        "enabled": d.enabled,
        "placed": d.placed,
    }


def run_list(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    devices = service.list_devices(cfg, kind=args.kind, site=args.site)
    if args.json:
        for d in devices:
            print(json.dumps(_device_json(d)))
        return 0
    header = ("DEVICE", "KIND", "FORMAT", "SITE", "LAT", "LON", "STATE")
    rows = [header]
    for d in devices:
        state = ("enabled" if d.enabled else "DISABLED") + ("" if d.placed else ", unplaced")
        lat = "-" if d.lat is None else f"{d.lat:.5f}"
        lon = "-" if d.lon is None else f"{d.lon:.5f}"
        rows.append((d.device_id, d.kind, d.payload_format, d.site or "-", lat, lon, state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(devices)} device(s)")
    return 0


def run_show(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    device, has_identity = service.show_device(cfg, args.device_id)
    creds = (
        "active" if has_identity else ("none (simulated)" if device.kind == "simulated" else "revoked/none")
    )
    if args.json:
        print(json.dumps(_device_json(device) | {"mqtt_identity": creds}))
        return 0
    for key, value in describe(device):
        print(f"{key:15} {value}")
    print(f"{'mqtt_identity':15} {creds}")
    return 0


def run_disable(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    reloaded = service.disable_device(cfg, args.device_id)
    print(f"Device {args.device_id} disabled: its credentials are revoked and its readings dead-lettered.")
    if reloaded:
        print("The broker reloaded: new connections are refused and a connected session is disconnected.")
    else:
        print("The broker is not running: the credentials will not be accepted at the next start.")
    return 0


def run_enable(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    result = service.enable_device(cfg, args.device_id)
    if result.password is not None:
        _print_onboarded(cfg, result)
        return 0
    topic = device_topic(result.device.device_id, result.device.payload_format)
    print(f"Device {args.device_id} enabled (publishes on {topic}).")
    if result.device.kind == "real":
        print(
            "Its previous credentials are valid again"
            + ("." if result.broker_reloaded else " at the next start.")
        )
    return 0


def run_rotate(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    result = service.rotate_credentials(cfg, args.device_id)
    print("New credentials; the old password no longer works (a session using it is disconnected).")
    _print_onboarded(cfg, result)
    return 0


def run_place(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    d = service.place_device(cfg, args.device_id, site=args.site, lat=args.lat, lon=args.lon)
    print(f"Device {d.device_id} placed at {d.lat}, {d.lon} (site {d.site or '-'}).")
    return 0


def run_seed(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    result = seed_from_csv(cfg, args.file)
    if result.path is None:
        print(f"No fleet file at {cfg.simulation.devices_file}: nothing seeded.")
    else:
        print(f"{result.devices} simulated device(s) from {result.path}; {result.changed} row(s) changed.")
    return 0
