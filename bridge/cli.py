"""``fleetsim bridge``: run the MQTT -> Kafka bridge in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import threading
from typing import Any

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.service import Service

log = logging.getLogger("fleetsim.bridge")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bridge",
        help="forward MQTT telemetry to Kafka (at least once, validated, dead-lettered)",
        description="Subscribe to the [bridge] routes and forward to Kafka until SIGTERM. "
        "Metrics: http://127.0.0.1:<bridge.metrics_port>/metrics. See docs/bridge.md.",
    )
    p.add_argument(
        "--shared-group",
        metavar="NAME",
        default=None,
        help="join MQTT shared subscription group NAME ($share/NAME/<filter>) to split the load "
        "with other bridges; per-device order holds within each bridge",
    )
    p.add_argument(
        "--instance",
        type=int,
        default=0,
        metavar="N",
        help="instance number when running several bridges: client id and metrics port get +N",
    )
    p.add_argument("--client-id", default=None, help="MQTT client id (the persistent session's name)")
    p.add_argument("--metrics-port", type=int, default=None, help="metrics port (0 disables)")
    p.set_defaults(func=run)


def identity(args: argparse.Namespace, cfg: FleetsimConfig) -> tuple[str, str, int]:
    """(client id, shared group, metrics port) from flags and config.

    The client id names the persistent session, so it must be stable across restarts and unique
    per bridge: instances of a shared group get ``<client_id>-<group>-<instance>``.
    """
    group = cfg.bridge.shared_group if args.shared_group is None else args.shared_group
    client_id = args.client_id
    if client_id is None:
        client_id = cfg.bridge.client_id
        if group:
            client_id = f"{client_id}-{group}-{args.instance}"
        elif args.instance:
            client_id = f"{client_id}-{args.instance}"
    port = args.metrics_port
    if port is None:
        port = cfg.bridge.metrics_port + args.instance if cfg.bridge.metrics_port else 0
    return client_id, group, port


def run(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    # Lazy: every `fleetsim` command registers this sub-command; only `fleetsim bridge` should pay
    # for paho, confluent_kafka and psycopg2.
    from fleetsim.bridge import adoption
    from fleetsim.bridge.metrics import AdoptionCollector
    from fleetsim.bridge.registry_directory import for_bridge
    from fleetsim.bridge.runtime import Bridge

    client_id, group, port = identity(args, cfg)
    peers = adoption.plan(cfg, args.instance, group, args.client_id)  # None: adoption off
    directory = for_bridge(cfg)  # device registry hook (None when bridge.use_registry is off)
    bridge = Bridge(
        cfg,
        client_id=client_id,
        shared_group=group,
        metrics_port=port,
        directory=directory,
        hooks=adoption.Presence(client_id) if peers else None,
    )
    if directory is not None:
        directory.attach_metrics(bridge.registry)
    adopter = None
    if peers:

        def adopted_session(peer_id: str, hooks: adoption.SessionHooks) -> Bridge:
            # Same group, directory and limits; no metrics server of its own (ours shows it).
            return Bridge(
                cfg, client_id=peer_id, shared_group=group, metrics_port=0, directory=directory, hooks=hooks
            )

        adopter = adoption.Adoption(cfg, args.instance, peers, adopted_session)
        bridge.registry.register(AdoptionCollector(adopter.snapshot))
    starter = threading.Thread(target=bridge.start, name="bridge-start", daemon=True)
    # Everything loaded so far (modules, config, clients) lives as long as the process: move it
    # out of the cyclic GC's reach. A full collection otherwise scans all of it while every thread
    # waits (up to ~50 ms measured in process at 5k msg/s; docs/bridge.md, "Performance").
    gc.freeze()
    with Service("the bridge", log=log) as svc:
        # Stop steps run in reverse: the bridge (acks exactly what Kafka confirmed), then the
        # registry hook (flushes the last auto-registrations), then the starter thread.
        svc.on_stop(starter.join, timeout=5)
        if directory is not None:
            svc.on_stop(directory.stop)
        svc.on_stop(bridge.stop, timeout=max(5.0, cfg.stack.stop_timeout_s - 10.0))
        if adopter is not None:
            svc.on_stop(adopter.stop)  # first: hand held sessions back before our own goes offline
        log.info("bridge %s starting (shared group: %s)", client_id, group or "none")
        if adopter is not None:
            adopter.start()
            log.info("session adoption on: peers %s", [p for p in peers or [] if p != client_id])
        starter.start()  # start() may wait for Kafka; signals must still be able to end that wait
        svc.wait()
    st = bridge.stats
    log.info(
        "bridge stopped: %d received, %d forwarded, %d dead-lettered, %d left unacked",
        st.received,
        st.forwarded,
        sum(st.deadlettered.values()),
        len(bridge.tracker),
    )
    return 0
