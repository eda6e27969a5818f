"""``fleetsim sim`` and ``fleetsim fault ...``: thin entry points over :mod:`edge.app`.

Flags override the ``[simulation]`` config through ``config_overrides`` (see fleetsim/cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fleetsim.edge.app import SimOptions, run_simulation
from fleetsim.kernel.clients import mqtt_client, mqtt_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import (
    CONTROL_ALL_TOPIC,
    ControlAction,
    ControlCommand,
    FaultKind,
    control_topic,
)
from fleetsim.kernel.errors import SimulationError
from fleetsim.kernel.faultcatalog import merge_params
from fleetsim.kernel.timespec import parse_duration

_SIM_FLAGS = {
    "devices": "simulation.devices_file",
    "speed": "simulation.speed",
    "duration": "simulation.duration",
    "start": "simulation.start",
    "seed": "simulation.seed",
    "scale": "simulation.scale",
    "shard": "simulation.shard",
    "connections": "simulation.connections",
    "buffer_size": "simulation.buffer_size",
    "ledger": "simulation.ledger_file",
    "metrics_port": "simulation.metrics_port",
    "qos": "mqtt.qos",
    "protocol": "mqtt.protocol",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sim", help="run the SimPy device fleet against the MQTT broker")
    p.add_argument("--devices", type=Path, help="fleet file (default simulation.devices_file)")
    p.add_argument("--speed", help="simulated seconds per wall second: 1, 60, ... or max")
    p.add_argument("--duration", help="simulated duration, e.g. 10m, 2h (default: until stopped)")
    p.add_argument("--start", help="simulated start instant, RFC 3339 (default: now)")
    p.add_argument("--seed", type=int)
    p.add_argument("--scale", type=int, help="clone the fleet N times with jittered positions")
    p.add_argument("--shard", help="i/n: run the i-th of n slices of the fleet")
    p.add_argument("--connections", choices=["shared", "per-device"])
    p.add_argument("--buffer-size", type=int, help="store-and-forward readings per device")
    p.add_argument("--ledger", type=Path, help="ground-truth ledger file (JSON lines)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port on 127.0.0.1 (0 disables)")
    p.add_argument("--qos", type=int, choices=[0, 1])
    p.add_argument("--protocol", choices=["5", "3.1.1"])
    p.add_argument("--tls", action="store_true", help="connect to the TLS listener (mqtt.tls_port)")
    p.add_argument("--replay", type=Path, help="republish a readings CSV instead of simulating")
    p.add_argument("--replay-shift", choices=["original", "start"], default="original")
    p.set_defaults(func=run_sim, config_overrides=sim_overrides)

    f = subparsers.add_parser("fault", help="inject or clear faults on running simulated devices")
    fsub = f.add_subparsers(dest="fault_command", metavar="ACTION", required=True)
    kinds = [k.value for k in FaultKind]
    inj = fsub.add_parser("inject", help="inject a fault: <device|all> <kind>, or --site/--within <kind>")
    inj.add_argument("args", nargs="+", metavar="[TARGET] KIND", help=f"kind: {', '.join(kinds)}")
    inj.add_argument("--for", dest="duration", help="how long (simulated), e.g. 120s, 5m")
    inj.add_argument("--param", action="append", default=[], metavar="K=V", help="fault parameter")
    clr = fsub.add_parser("clear", help="clear a fault (or all faults): [TARGET] [KIND]")
    clr.add_argument("args", nargs="*", metavar="[TARGET] [KIND]")
    for name, helptext in (("kill", "switch devices off"), ("revive", "switch devices back on")):
        sp = fsub.add_parser(name, help=helptext)
        sp.add_argument("args", nargs="*", metavar="TARGET")
    iv = fsub.add_parser("interval", help="set the sampling interval: [TARGET] SECONDS")
    iv.add_argument("args", nargs="+", metavar="[TARGET] INTERVAL")
    for sp in (inj, clr, iv, *(fsub.choices[n] for n in ("kill", "revive"))):
        sp.add_argument("--site", help="only devices of this site")
        sp.add_argument("--within", metavar="LAT,LON,KM", help="only devices within KM of a point")
        sp.add_argument("--json", action="store_true", help="print the published commands as JSON")
    f.set_defaults(func=run_fault)


def sim_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for flag, key in _SIM_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = str(value) if isinstance(value, Path) else value
    return out


def run_sim(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    opts = SimOptions(replay=args.replay, replay_shift=args.replay_shift, tls=args.tls, show_progress=True)
    report, totals = run_simulation(cfg, opts)
    rate = report.published / report.wall_seconds if report.wall_seconds else 0.0
    print(
        f"published {report.published} messages in {report.wall_seconds:.1f} s ({rate:,.0f} msg/s), "
        f"{report.sim_seconds:.0f} simulated s; lag p99 {report.lag_quantile(0.99) * 1000:.0f} ms; "
        f"dropped overflow {totals['dropped_overflow']}, dropout {totals['dropped_dropout']}; "
        f"ledger {cfg.ledger_file}",
        file=sys.stderr,
    )
    return 0


# ----------------------------------------------------------------------------------- fault
def _duration(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise SimulationError(str(exc)) from exc


def _params(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError as exc:
            raise SimulationError(f"--param expects key=number, got {item!r}") from exc
        if not sep:
            raise SimulationError(f"--param expects key=number, got {item!r}")
    return out


def _within(raw: str | None) -> tuple[float, float, float] | None:
    if raw is None:
        return None
    try:
        lat, lon, km = (float(x) for x in raw.split(","))
    except ValueError as exc:
        raise SimulationError(f"--within expects LAT,LON,KM, got {raw!r}") from exc
    return lat, lon, km


def _kind(raw: str) -> FaultKind:
    try:
        return FaultKind(raw)
    except ValueError as exc:
        allowed = ", ".join(k.value for k in FaultKind)
        raise SimulationError(f"unknown fault {raw!r}; allowed: {allowed}") from exc


def build_command(args: argparse.Namespace) -> tuple[str, ControlCommand]:
    """(target, command) from the parsed ``fault`` arguments."""
    pos = list(args.args)
    selector = args.site is not None or args.within is not None
    action = args.fault_command
    fault = None
    interval = None
    if action == "inject":
        if len(pos) == 1 and selector:
            pos = ["all", *pos]
        if len(pos) != 2:
            raise SimulationError("fault inject needs <device|all> <kind>, or --site/--within and <kind>")
        fault = _kind(pos[1])
    elif action == "clear":
        if len(pos) == 1 and (selector or pos[0] in {k.value for k in FaultKind}):
            pos = ["all", *pos]
        fault = _kind(pos[1]) if len(pos) > 1 else None
    elif action == "interval":
        if len(pos) == 1:
            pos = ["all", *pos]
        interval = _duration(pos[1])
    target = pos[0] if pos else "all"
    cmd = ControlCommand(
        action=ControlAction.SET_INTERVAL if action == "interval" else ControlAction(action),
        fault=fault,
        duration_s=_duration(getattr(args, "duration", None)),
        interval_s=interval,
        params=_params(getattr(args, "param", [])),
        site=args.site,
        within=_within(args.within),
    )
    if fault is not None:
        try:
            merge_params(fault, cmd.params)
        except ValueError as exc:
            raise SimulationError(str(exc)) from exc
    return target, cmd


def publish_control(cfg: FleetsimConfig, target: str, cmd: ControlCommand, timeout_s: float = 10.0) -> None:
    """Publish one control command (QoS 1) with the tool identity and wait for the broker."""
    client = mqtt_client(cfg, "tool", f"fleetsim-fault-{time.time_ns() % 10**9}")
    try:
        mqtt_connect(client)
    except OSError as exc:
        raise SimulationError(f"cannot reach MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}: {exc}") from exc
    client.loop_start()
    try:
        topic = CONTROL_ALL_TOPIC if target == "all" else control_topic(target)
        info = client.publish(topic, cmd.encode(), qos=1)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise SimulationError(f"control message on {topic} not acknowledged within {timeout_s:.0f} s")
    finally:
        client.disconnect()
        client.loop_stop()


def run_fault(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    target, cmd = build_command(args)
    publish_control(cfg, target, cmd)
    if args.json:
        print(json.dumps({"target": target, "command": json.loads(cmd.encode())}))
    else:
        print(f"sent {cmd.action.value} to {target}", file=sys.stderr)
    return 0
