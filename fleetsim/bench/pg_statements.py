"""Where PostgreSQL's time goes, statement by statement (``pg_stat_statements``), for benchmarks.

A dedicated benchmark stack only: :func:`enable` restarts the server with the extension preloaded
(``ALTER SYSTEM``, kept in ``postgresql.auto.conf`` across the stack's regenerated config).
:func:`top` reads the statements' own counters since :func:`reset`, so a profile covers exactly a
measurement window. Figures are each statement's execution time inside the server (planning
excluded), its buffer traffic (``read`` blocks came from the kernel, not shared buffers) and its
WAL, full-page images included (the first change of a page after a checkpoint logs all 8 kB).
"""

from __future__ import annotations

from typing import Any, Protocol

QUERY_CHARS = 160
"""Statement text kept per entry: enough to tell the loader's merges apart."""


class _Superuser(Protocol):
    def superuser_connect(self, dbname: str = "postgres") -> Any: ...
    def stop(self) -> bool: ...
    def start(self) -> None: ...


def enable(svc: _Superuser, database: str, settings: dict[str, str] | None = None) -> None:
    """Preload ``pg_stat_statements`` (and apply ``settings``, e.g. ``shared_buffers``), restart,
    create the extension in ``database``."""
    conn = svc.superuser_connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name, value in {"shared_preload_libraries": "pg_stat_statements", **(settings or {})}.items():
                # ALTER SYSTEM takes no bind parameters: the name is an identifier from our code,
                # the value a quoted literal.
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
    finally:
        conn.close()
    svc.stop()
    svc.start()
    _execute(svc, database, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset(svc: _Superuser, database: str) -> None:
    """Start a window: forget every statement's counters."""
    _execute(svc, database, "SELECT pg_stat_statements_reset()")


def _execute(svc: _Superuser, database: str, statement: str) -> None:
    conn = svc.superuser_connect(database)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def top(svc: _Superuser, database: str, seconds: float, n: int = 12) -> list[dict[str, Any]]:
    """The ``n`` statements that spent the most execution time since :func:`reset`, with the
    share of a core each took over ``seconds``."""
    conn = svc.superuser_connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT s.query, s.calls, s.total_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read,"
                " s.shared_blks_dirtied, s.shared_blks_written, s.wal_fpi, s.wal_bytes, r.rolname"
                " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
                " ORDER BY s.total_exec_time DESC LIMIT %s",
                (n,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return [
        {
            "query": " ".join(q.split())[:QUERY_CHARS],
            "role": role,
            "calls": calls,
            "cores": round(total_ms / 1000 / max(seconds, 1e-9), 4),
            "mean_ms": round(total_ms / max(calls, 1), 3),
            "rows_per_call": round(nrows / max(calls, 1), 1),
            "blks_hit_per_call": round(hit / max(calls, 1), 1),
            "blks_read_per_call": round(read / max(calls, 1), 2),
            "blks_dirtied_per_call": round(dirtied / max(calls, 1), 2),
            "blks_written_per_call": round(written / max(calls, 1), 2),
            "wal_fpi_per_call": round(fpi / max(calls, 1), 2),
            "wal_kb_per_call": round(float(wal_bytes) / 1024 / max(calls, 1), 1),
        }
        for q, calls, total_ms, nrows, hit, read, dirtied, written, fpi, wal_bytes, role in rows
    ]


def server_counters(svc: _Superuser) -> dict[str, float]:
    """Whole-server WAL and checkpoint counters (subtract two readings for a window):
    ``buffers_backend`` are pages the backends had to write out themselves to find a free buffer."""
    conn = svc.superuser_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed, b.checkpoints_req,"
                " b.buffers_checkpoint, b.buffers_clean, b.buffers_backend, b.buffers_alloc"
                " FROM pg_stat_wal w, pg_stat_bgwriter b"
            )
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
    finally:
        conn.close()
    return {n: float(v) for n, v in zip(names, row, strict=True)}
