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

from fleetsim.clients import pg_dsn_kwargs
from fleetsim.config import FleetsimConfig
from fleetsim.errors import ConfigError, DashboardError

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
        """Call ``fn(conn, **params)`` on a pooled connection, mapping failures to dashboard errors."""
        pool = self._get_pool()
        where = f"{self._cfg.postgres.host}:{self._cfg.postgres.port}/{self._cfg.postgres.database}"
        try:
            conn = pool.getconn()
        except psycopg2.pool.PoolError as exc:
            raise DatabaseUnavailable(
                f"Too many concurrent dashboard queries ({exc}); retry shortly"
            ) from exc
        except psycopg2.OperationalError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"Database unreachable at {where}: {first_line}") from exc
        broken = False
        try:
            conn.autocommit = True
            return fn(conn, **params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"Lost the database at {where}: {first_line}") from exc
        except psycopg2.errors.UndefinedTable as exc:
            raise QueryFailed(
                f"The database at {where} has no Fleetsim schema yet (run the migrations): "
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
