"""Versioned SQL migrations: ``fleetsim/migrations/V<NNN>__<name>.sql`` applied in order, once.

Each file runs as the admin role (the schema owner) in its own transaction, together with its
row in ``schema_migrations`` (version, name, SHA-256 checksum, time). A re-run applies nothing;
an already-applied file whose content changed is an error (edit by adding a new version).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetsim.kernel.clients import pg_connect
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import MigrationError

log = logging.getLogger("fleetsim.stack.migrations")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME_RE = re.compile(r"\AV(\d+)__([A-Za-z0-9_]+)\.sql\Z")
_LOCK_KEY = 0x0F1EE751
"""Advisory-lock key serialising concurrent runners (two `fleetsim up` at once)."""

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    """Number from the ``V<NNN>`` prefix; applied in increasing order."""
    name: str
    """Descriptive part of the file name."""
    path: Path
    """The SQL file."""
    checksum: str
    """SHA-256 hex digest of the file's bytes."""


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``V*.sql`` in ``directory`` in version order; bad names and duplicates are errors."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("V*.sql")):
        m = _NAME_RE.match(path.name)
        if m is None:
            raise MigrationError(f"{path.name}: migration files must be named V<NNN>__<name>.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} also used by {found[version].path.name}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, m.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


def applied(conn: Any) -> dict[int, str]:
    """``version -> checksum`` of the applied migrations (empty before the first run)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
        return {int(v): str(c) for v, c in cur.fetchall()}


def apply_migrations(cfg: FleetsimConfig, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the pending migrations as the admin role; return the versions applied now."""
    migrations = discover(directory)
    conn = pg_connect(cfg, "admin")
    done: list[int] = []
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            cur.execute(SCHEMA_MIGRATIONS_DDL)
        conn.autocommit = False
        have = applied(conn)
        for mig in migrations:
            if mig.version in have:
                if have[mig.version] != mig.checksum:
                    raise MigrationError(
                        f"{mig.path.name} changed after it was applied (checksum mismatch): never edit an "
                        "applied migration, add a new V<NNN> file instead"
                    )
                continue
            sql_text = mig.path.read_text(encoding="utf-8")
            try:
                with conn.cursor() as cur:
                    # No parameters: psycopg2 sends the file verbatim (its % signs untouched).
                    cur.execute(sql_text)
                    cur.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                conn.commit()
            except Exception as exc:
                conn.rollback()
                raise MigrationError(f"{mig.path.name} failed and was rolled back: {exc}") from exc
            log.info("applied migration %s", mig.path.name)
            done.append(mig.version)
    finally:
        conn.close()  # also releases the session-level advisory lock
    return done
