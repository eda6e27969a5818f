"""The dashboard's only way to the database: a small pool of read-only connections as the reader role.

Every session is forced read-only and time-limited on top of the role's SELECT-only grants, so a
bug in a query can neither write nor hang a page. Failures become :class:`DashboardError`
subclasses with a message fit for an operator; the page shows it instead of a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.pool

from fleetsim.kernel.clients import pg_dsn_kwargs
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import ConfigError, DashboardError

T = TypeVar("T")

STATEMENT_TIMEOUT_MS = 5000
"""Per-statement cap in milliseconds: a runaway query fails with a message instead of hanging a page."""
CONNECT_TIMEOUT_S = 3
"""Seconds to wait for the server before saying it is unreachable."""
MAX_CONNECTIONS = 4
"""Pool size: a few concurrent browser sessions and auto-refresh fragments share it."""


class DatabaseUnavailable(DashboardError):
    """The database cannot be reached (down, wrong port, bad password)."""


class QueryFailed(DashboardError):
    """The database answered with an error to one of the dashboard's queries."""


class _StaleConnection(DashboardError):
    """A pooled connection died mid-query (internal: triggers one retry on a fresh connection)."""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pool_key(cfg: FleetsimConfig) -> str:
    """Identity of the target database, used to keep caches of different databases apart."""
    pg = cfg.postgres
    return f"{pg.reader_user}@{pg.host}:{pg.port}/{pg.database}"


def reader_connect_kwargs(cfg: FleetsimConfig) -> dict[str, Any]:
    """psycopg2 kwargs for a reader session: read-only, UTC, statement timeout."""
    try:
        kw = pg_dsn_kwargs(cfg, "reader")
    except ConfigError as exc:
        raise DatabaseUnavailable(f"Database credentials missing: {exc}") from exc
    kw["connect_timeout"] = CONNECT_TIMEOUT_S
    kw["application_name"] = "fleetsim-dashboard"
    kw["options"] = (
        f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS} -c TimeZone=UTC"
    )
    return kw


class ReaderPool:
    """Lazily connecting pool of reader connections; reconnects after the database comes back."""

    def __init__(self, cfg: FleetsimConfig) -> None:
        self.key = pool_key(cfg)
        self._cfg = cfg
        self._lock = threading.Lock()
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                # minconn=0: creating the pool must not connect (the database may be down).
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0, MAX_CONNECTIONS, **reader_connect_kwargs(self._cfg)
                )
            return self._pool

    def run(self, fn: Callable[..., T], /, **params: Any) -> T:
        """Call ``fn(conn, **params)`` on a pooled connection, mapping failures to dashboard errors.

        A pooled connection found dead (the server restarted) is dropped and the read retried once
        on a fresh connection, so a database restart costs no error message when it is back up."""
        try:
            return self._run_once(fn, params)
        except _StaleConnection:
            try:
                return self._run_once(fn, params)
            except _StaleConnection as again:
                raise DatabaseUnavailable(str(again)) from again.__cause__

    def _where(self) -> str:
        pg = self._cfg.postgres
        return f"{pg.host}:{pg.port}/{pg.database}"

    def _run_once(self, fn: Callable[..., T], params: dict[str, Any]) -> T:
        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except psycopg2.pool.PoolError as exc:
            raise DatabaseUnavailable(
                f"Too many concurrent dashboard queries ({exc}); retry shortly"
            ) from exc
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(f"Database unreachable at {self._where()}: {_first_line(exc)}") from exc
        broken = False
        try:
            conn.autocommit = True
            return fn(conn, **params)
        except psycopg2.errors.QueryCanceled as exc:
            raise QueryFailed(
                f"Query {getattr(fn, '__name__', fn)} took longer than {STATEMENT_TIMEOUT_MS / 1000:g} s "
                "and was cancelled; try a shorter period or fewer devices"
            ) from exc
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise _StaleConnection(f"Lost the database at {self._where()}: {_first_line(exc)}") from exc
        except psycopg2.errors.UndefinedTable as exc:
            raise QueryFailed(
                f"The database at {self._where()} has no Fleetsim schema yet (run the migrations): "
                f"{exc.diag.message_primary}"
            ) from exc
        except psycopg2.Error as exc:
            raise QueryFailed(
                f"Query {getattr(fn, '__name__', fn)} failed: {exc.diag.message_primary}"
            ) from exc
        finally:
            pool.putconn(conn, close=broken or conn.closed != 0)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None
