"""The Pi's outbox: what the lab database has acknowledged of each test folder (BANC_HOME/lab_outbox.sqlite).

A folder whose signature differs from the one acknowledged is pending. A mark is written only
after the database committed (at-least-once delivery): a crash between the two sends the test
again, which the database's idempotent writes absorb. Losing this file costs a resend, never
a test. It is a cache like history.sqlite: the folders stay the truth.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

OUTBOX_FILE = "lab_outbox.sqlite"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Sent:
    """What the lab database holds of one test, as far as this Pi knows."""

    signature: Optional[str]  # None: rows sent, the test's row not yet in step with its folder
    rows_offset: int
    content_sha256: Optional[str]
    certificate_sha256: Optional[str]
    graded: bool


class Outbox:
    """The acknowledgments of one Pi (one database target: a new BANC_LAB_DB starts afresh)."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0)
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            with self.conn:
                self.conn.execute("DROP TABLE IF EXISTS sent")
                self.conn.execute("DROP TABLE IF EXISTS target")
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        with self.conn:
            self.conn.execute("CREATE TABLE IF NOT EXISTS target (uri TEXT)")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS sent (test_id TEXT PRIMARY KEY, signature TEXT, rows_offset INTEGER,"
                " content_sha256 TEXT, certificate_sha256 TEXT, graded INTEGER)")
            known = self.conn.execute("SELECT uri FROM target").fetchone()
            if known is None or known[0] != target:
                # Another database (or another site name) holds none of this: everything is pending again.
                self.conn.execute("DELETE FROM sent")
                self.conn.execute("DELETE FROM target")
                self.conn.execute("INSERT INTO target VALUES (?)", (target,))

    def all(self) -> dict[str, Sent]:
        """Every acknowledgment, by test id."""
        rows = self.conn.execute("SELECT test_id, signature, rows_offset, content_sha256, certificate_sha256, graded"
                                 " FROM sent").fetchall()
        return {row[0]: Sent(row[1], int(row[2] or 0), row[3], row[4], bool(row[5])) for row in rows}

    def mark(self, test_id: str, sent: Sent) -> None:
        """Record what the database committed for `test_id`."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?, ?, ?)",
                              (test_id, sent.signature, sent.rows_offset, sent.content_sha256,
                               sent.certificate_sha256, int(sent.graded)))

    def forget(self, test_ids: list[str]) -> None:
        """Drop acknowledgments of folders that are gone from disk."""
        with self.conn:
            self.conn.executemany("DELETE FROM sent WHERE test_id = ?", [(t,) for t in test_ids])

    def close(self) -> None:
        """Close the file."""
        self.conn.close()
