"""Every battery's history and the lab's results (the README's verdict section): an SQLite index of the test folders.

The folders stay the truth; `BANC_HOME/history.sqlite` is a cache of one row per test
folder, each with the signature (size and mtime) of the files it was read from. Every query
first brings the index in line with the folders: a folder that is new or whose journal or
config.json changed is read again, a folder that is gone is forgotten. A finished, graded
test never changes again (its journal takes no more events and its first verdict stays):
for those only the folder's presence is checked. So the index is never
trusted over the folders, and a missing or damaged index is simply rebuilt (the damaged file
kept aside). banc.py indexes its folder when a test concludes; a query costs one directory
listing and two stats per folder, and re-reads only what changed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from banclfp.infra import environment, storage
from banclfp.recording import record
from banclfp.verdict import grading

logger = logging.getLogger("banc.history")

INDEX_FILE = "history.sqlite"
SCHEMA_VERSION = 2
FINAL = "final:"  # signature prefix of a finished, graded test: its folder never changes again
_COLUMNS: tuple[str, ...] = (
    "folder", "serial", "serial_key", "banc", "start", "end", "status", "grade", "soh_pct",
    "capacity_ah", "capacity_wh", "ri_discharge_25c_ohm", "model", "grading_version", "reason", "signature",
)
RESULTS_HEADER: tuple[str, ...] = (
    "folder", "serial", "banc", "start", "end", "status", "grade", "soh_pct", "capacity_ah", "capacity_wh",
    "ri_discharge_25c_ohm", "model", "grading_version", "reason",
)
"""--results columns: times ISO 8601, numbers with a decimal point (a file for machines and spreadsheets)."""


@dataclass(frozen=True)
class TestRow:
    """One test as the index holds it."""

    __test__ = False

    folder: str  # relative to data/: "bancN/DDMMYYYY-SERIAL"
    serial: str
    banc: str
    start: Optional[str]
    end: Optional[str]
    status: str
    grade: Optional[str]
    soh_pct: Optional[float]
    capacity_ah: Optional[float]
    capacity_wh: Optional[float]
    ri_discharge_25c_ohm: Optional[float]
    model: Optional[str]
    grading_version: Optional[str]
    reason: Optional[str]


def index_path() -> Path:
    """Where the index lives (mutable state: BANC_HOME)."""
    return environment.home_dir() / INDEX_FILE


# =========================================================================== reading one folder


def _signature(folder: str) -> Optional[str]:
    """Size and mtime of the journal and config.json: what a change of the test changes."""
    parts = []
    for name in (record.EVENTS_FILE, record.TEST_CONFIG_FILE):
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return None if parts == ["-", "-"] else "/".join(parts)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def row_from_summary(relative: str, summary: record.TestSummary, signature: str) -> tuple[Any, ...]:
    """The index row of a test from its summary (pure but for the 25 °C correction's curve)."""
    verdict = summary.verdict
    ri_check = verdict.check(grading.CHECK_RI) if verdict is not None else None
    ri_25 = _number(ri_check.value) if ri_check is not None else None
    if ri_25 is None and _number(summary.ri_averages.get(grading.CHECK_RI)) is not None:
        try:
            ri_25 = record.ri_at_25c(summary, grading.CHECK_RI, environment.correct_to_25c)  # each pulse at its own temperature
        except (ValueError, OSError):
            ri_25 = None
    serial = summary.battery_serial or ""
    grade = soh = model = version = reason = None
    if verdict is not None:
        grade, soh, model, version, reason = (verdict.grade, _number(verdict.soh_pct), verdict.model,
                                              verdict.grading_version, verdict.reason)
        if summary.finished:
            signature = FINAL + signature
    return (
        relative, serial, record.serial_key(serial), summary.banc or "",
        summary.first_handle, summary.end_time, summary.status or "",
        grade, soh, _number(summary.capacity_ah), _number(summary.capacity_wh), ri_25,
        model, version, reason, signature,
    )


# =========================================================================== the index


BUSY_TIMEOUT_S = 30.0
"""How long a reader or writer waits for another process's write to the index."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        # One creator at a time: a second process waits here, then finds the schema made.
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        conn.execute("DROP TABLE IF EXISTS tests")
        conn.execute(
            "CREATE TABLE tests (folder TEXT PRIMARY KEY, serial TEXT, serial_key TEXT, banc TEXT, start TEXT,"
            " end TEXT, status TEXT, grade TEXT, soh_pct REAL, capacity_ah REAL, capacity_wh REAL,"
            " ri_discharge_25c_ohm REAL, model TEXT, grading_version TEXT, reason TEXT, signature TEXT)"
        )
        conn.execute("CREATE INDEX tests_serial ON tests (serial_key)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if conn.in_transaction:
        conn.commit()
    # Every page read (table and index), not just a count the index can answer: a damaged file
    # fails here and is rebuilt, rather than failing every query after.
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        conn.close()
        raise sqlite3.DatabaseError(f"quick_check: {'; '.join(problems[:3])}")
    return conn


@contextlib.contextmanager
def open_index(path: Optional[Path] = None) -> Iterator[sqlite3.Connection]:
    """The index, created when missing; a damaged one is kept aside and rebuilt from the folders."""
    path = Path(path or index_path())
    try:
        conn = _connect(path)
    except sqlite3.OperationalError:
        raise  # busy (another process writes), or cannot be opened: not damage, nothing is thrown away
    except sqlite3.DatabaseError as exc:
        logger.error("%s damaged (%s): kept aside, rebuilt from the test folders", path, exc)
        storage.quarantine(path, str(exc))
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(path) + suffix)
        conn = _connect(path)
    try:
        yield conn
    finally:
        conn.close()


def _test_folders(data_dir: Path, serial: Optional[str]) -> Iterator[tuple[str, str]]:
    """(relative name, path) of every test folder, or of those whose name carries `serial` (any case)."""
    key = record.serial_key(serial) if serial else None
    try:
        benches = list(os.scandir(data_dir))
    except FileNotFoundError:
        return
    for bench in benches:
        if not record.BANC_DIR_RE.match(bench.name) or not bench.is_dir():
            continue
        with os.scandir(bench.path) as entries:
            for entry in entries:
                if key is not None and key not in entry.name.upper():
                    continue  # not this battery's: skipped before the name is parsed
                name = record.parse_folder_name(entry.name)
                if name is None or (key is not None and record.serial_key(name.serial) != key):
                    continue
                if entry.is_dir():
                    yield f"{bench.name}/{entry.name}", entry.path


def sync(conn: sqlite3.Connection, data_dir: Path, serial: Optional[str] = None) -> int:
    """Bring the index in line with the folders (all, or one battery's); return how many rows were (re)read."""
    where, args = ("WHERE serial_key = ?", (record.serial_key(serial),)) if serial else ("", ())
    known = dict(conn.execute(f"SELECT folder, signature FROM tests {where}", args).fetchall())
    seen: set[str] = set()
    changed = []
    for relative, path in _test_folders(data_dir, serial):
        if known.get(relative, "").startswith(FINAL):
            # Finished and graded: the journal takes nothing more (record.py) and the first
            # verdict stays, so the row cannot be stale; only the folder's presence is checked.
            seen.add(relative)
            continue
        signature = _signature(path)
        if signature is None:
            continue  # not a test (yet)
        seen.add(relative)
        if known.get(relative) not in (signature, FINAL + signature):
            summary = record.load_summary(Path(path))
            if summary is not None:
                changed.append(row_from_summary(relative, summary, signature))
    gone = [(folder,) for folder in known if folder not in seen]
    if changed or gone:
        with conn:
            conn.executemany(f"INSERT OR REPLACE INTO tests ({', '.join(_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_COLUMNS))})", changed)
            conn.executemany("DELETE FROM tests WHERE folder = ?", gone)
    return len(changed)


def index_folder(folder: Path, path: Optional[Path] = None) -> None:
    """Index (or index again) one test folder now: banc.py's call when a test concludes."""
    folder = Path(folder)
    signature = _signature(str(folder))
    summary = record.load_summary(folder)
    if signature is None or summary is None:
        return
    relative = f"{folder.parent.name}/{folder.name}"
    with open_index(path) as conn, conn:
        conn.execute(f"INSERT OR REPLACE INTO tests ({', '.join(_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(_COLUMNS))})", row_from_summary(relative, summary, signature))


def _rows(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[TestRow]:
    fields = ", ".join(_COLUMNS[:2] + _COLUMNS[3:-1])
    cursor = conn.execute(f"SELECT {fields} FROM tests {where} ORDER BY start DESC, folder DESC", args)
    return [TestRow(*row) for row in cursor.fetchall()]


def battery_history(serial: str, data_dir: Optional[Path] = None, path: Optional[Path] = None) -> list[TestRow]:
    """Every test of one battery on any bench, newest first."""
    with open_index(path) as conn:
        sync(conn, Path(data_dir or environment.data_dir()), serial)
        return _rows(conn, "WHERE serial_key = ?", (record.serial_key(serial),))


def all_results(data_dir: Optional[Path] = None, path: Optional[Path] = None) -> list[TestRow]:
    """Every test of the lab, newest first."""
    with open_index(path) as conn:
        sync(conn, Path(data_dir or environment.data_dir()))
        return _rows(conn, "", ())


def lab_results_csv(data_dir: Optional[Path] = None, path: Optional[Path] = None) -> tuple[str, int]:
    """Every test of the lab as CSV text (RESULTS_HEADER), newest first, and the number of tests.

    Straight from the index's rows to the csv module (None is written empty): the lab's
    10,000 tests cost no Python object per field.
    """
    with open_index(path) as conn:
        sync(conn, Path(data_dir or environment.data_dir()))
        cursor = conn.execute(f"SELECT {', '.join(RESULTS_HEADER)} FROM tests ORDER BY start DESC, folder DESC")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULTS_HEADER)
        writer.writerows(cursor)
        count = conn.execute("SELECT count(*) FROM tests").fetchone()[0]
    return out.getvalue(), int(count)

