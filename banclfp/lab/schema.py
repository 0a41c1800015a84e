"""The lab database's schema: versioned migrations, SQL files shipped in banclfp/lab/migrations/.

`NNNN_name.sql` is version NNNN. `migrate` applies, in order and each in its own transaction,
those above the version recorded in lab.schema_migrations; a migration is never edited once
released (a change is a new file). An advisory lock keeps two `--migrate` from racing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
MIGRATE_LOCK_ID = 0x62616E63  # "banc": pg_advisory_xact_lock key of --migrate


@dataclass(frozen=True)
class Migration:
    """One versioned schema change."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, oldest first."""
    found = []
    for entry in resources.files("banclfp.lab").joinpath("migrations").iterdir():
        match = MIGRATION_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


LATEST_VERSION = max(m.version for m in migrations())
"""The schema version this code writes to; lab_sync refuses an older database (run --migrate)."""

_BOOTSTRAP = (
    "CREATE SCHEMA IF NOT EXISTS lab",
    "CREATE TABLE IF NOT EXISTS lab.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())",
)


def current_version(conn: Any) -> int:
    """The schema version of the database (0: never migrated)."""
    row = conn.execute("SELECT to_regclass('lab.schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM lab.schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Any) -> list[str]:
    """Apply every pending migration (psycopg connection, not in autocommit); the names applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_ID,))
        for statement in _BOOTSTRAP:
            conn.execute(statement)
        done = current_version(conn)
    for migration in migrations():
        if migration.version <= done:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_ID,))
            if current_version(conn) >= migration.version:
                continue  # another --migrate applied it meanwhile
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute("INSERT INTO lab.schema_migrations (version, name) VALUES (%s, %s)",
                         (migration.version, migration.name))
            conn.execute("GRANT SELECT ON lab.schema_migrations TO banc_pi, banc_reader")
        applied.append(migration.name)
    return applied
