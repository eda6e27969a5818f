"""``fleetsim alerts list|show|ack|resolve|note``: the incident lifecycle from a shell.

Connects as the ``operator`` PostgreSQL role (it may change only incident state and notes). Who
did a step is ``[alerts] operator`` unless ``--by`` says otherwise (docs/alerts.md).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fleetsim.cloud.dashboard import incidents
from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import FleetsimError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("alerts", help="incidents: list, acknowledge, resolve, add notes")
    sub = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="list incidents, newest first (default: open and acknowledged)")
    ls.add_argument(
        "--state",
        action="append",
        choices=(*incidents.VISIBLE_STATES, "all"),
        help="repeatable; 'all' for every state",
    )
    ls.add_argument("--site", action="append", help="repeatable")
    ls.add_argument("--severity", action="append", choices=incidents.SEVERITIES, help="repeatable")
    ls.add_argument("--device", default=None)
    ls.add_argument("--limit", type=int, default=200)
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(func=run_list)

    sh = sub.add_parser("show", help="one incident and every step of its lifecycle")
    sh.add_argument("incident_id", type=int)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)

    for name, func, text in (
        ("ack", run_ack, "acknowledge an open incident"),
        ("resolve", run_resolve, "resolve an open or acknowledged incident"),
        ("note", run_note, "add a note to an incident"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("incident_id", type=int)
        s.add_argument("--note", required=True, help="what was seen or done (recorded with who and when)")
        s.add_argument("--by", default=None, help="who (default: [alerts] operator)")
        s.set_defaults(func=func)


@contextmanager
def _operator(cfg: FleetsimConfig) -> Iterator[Any]:
    try:
        conn = pg_connect(cfg, "operator", options="-c TimeZone=UTC -c statement_timeout=10000")
    except FleetsimError:
        raise
    except Exception as exc:
        raise FleetsimError(f"cannot reach PostgreSQL as the operator role: {exc}") from exc
    try:
        yield conn
    finally:
        conn.close()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    return str(value)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_fmt(v) if hasattr(v, "isoformat") else v) for k, v in d.items()}


def run_list(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    states = args.state or list(incidents.LIVE_STATES)
    if "all" in states:
        states = list(incidents.VISIBLE_STATES)
    with _operator(cfg) as conn:
        rows = incidents.list_incidents(
            conn,
            states=states,
            sites=args.site,
            severities=args.severity,
            device_id=args.device,
            limit=args.limit,
        )
    if args.json:
        for inc in rows:
            print(json.dumps(_jsonable(inc.as_dict())))
        return 0
    if not rows:
        print("No incidents.")
        return 0
    cols = ("incident_id", "state", "severity", "device_id", "site", "kind", "measurement", "opened_at",
            "last_seen", "n_alerts", "peak_value")  # fmt: skip
    table = [[_fmt(getattr(i, c)) for c in cols] for i in rows]
    widths = [max(len(c), *(len(r[k]) for r in table)) for k, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return 0


def run_show(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    with _operator(cfg) as conn:
        inc = incidents.get_incident(conn, args.incident_id)
        steps = incidents.incident_events(conn, args.incident_id)
    if args.json:
        doc = _jsonable(inc.as_dict())
        doc["events"] = [{"at": _fmt(at), "action": a, "actor": who, "note": n} for at, a, who, n in steps]
        print(json.dumps(doc))
        return 0
    for key, value in inc.as_dict().items():
        print(f"{key:16} {_fmt(value)}")
    for at, action, actor, note in steps:
        print(f"  {_fmt(at)}  {action:12} {actor}" + (f": {note}" if note else ""))
    return 0


def _step(fn: Callable[..., incidents.Incident], args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    with _operator(cfg) as conn:
        inc = fn(conn, args.incident_id, args.by or cfg.alerts.operator, args.note)
    what = " ".join(x for x in (inc.device_id, inc.kind, inc.measurement) if x)
    print(f"Incident {inc.incident_id} ({what}) is {inc.state}.")
    return 0


def run_ack(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    return _step(incidents.acknowledge, args, cfg)


def run_resolve(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    return _step(incidents.resolve, args, cfg)


def run_note(args: argparse.Namespace, cfg: FleetsimConfig) -> int:
    return _step(incidents.add_note, args, cfg)
