"""The lab database through psycopg 3: connecting, the idempotent writes of one test, the lab's queries.

Every write is keyed by the test id (lab.tests) or (test id, bucket) (lab.test_rows), so a
test sent twice, or again after a crash, is in the database once. Row-level security (the
schema's policies) lets a Pi's role write only its own site's tests; nothing here relies on
the Pi to behave.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Optional

import psycopg

from banclfp.history.index import RESULTS_HEADER
from banclfp.lab import schema
from banclfp.lab.payload import COLUMNS, ROW_COLUMNS, RowValues, TestPayload
from banclfp.recording import record

CONNECT_TIMEOUT_S = 2  # libpq's smallest useful value; the readers' own deadline is history.LAB_DEADLINE_S
LAB_TIMEZONE = "Europe/Paris"  # times come back ISO 8601 with the lab's offset, as config.json writes them

Unreachable = psycopg.OperationalError
"""What psycopg raises when the server cannot be reached, refuses the login or the link breaks."""


def connect(uri: str, application: str = "banc-lfp", connect_timeout_s: int = CONNECT_TIMEOUT_S) -> psycopg.Connection:
    """A connection to the lab database; the password comes from the libpq password file (PGPASSFILE)."""
    return psycopg.connect(
        # autocommit: each `conn.transaction()` is then its own BEGIN/COMMIT, not a savepoint.
        uri, autocommit=True, connect_timeout=connect_timeout_s, application_name=application,
        # A cut link is noticed in seconds, not after the kernel's 15 minutes of retransmissions.
        keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3, tcp_user_timeout=10000,
        options=f"-c TimeZone={LAB_TIMEZONE} -c statement_timeout=60000",
    )


def migrate(uri: str) -> list[str]:
    """`lab_sync.py --migrate`: bring the schema to the latest version; the migrations applied."""
    with connect(uri, "banc-lfp migrate") as conn:
        return schema.migrate(conn)


def schema_version(conn: psycopg.Connection) -> int:
    """The database's schema version (0: never migrated)."""
    return schema.current_version(conn)


_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "test_id")
_PLACEHOLDERS = ", ".join("%s::jsonb" if c == "verdict" else "%s" for c in COLUMNS)
UPSERT_TEST = (
    f"INSERT INTO lab.tests ({', '.join(COLUMNS)}) VALUES ({_PLACEHOLDERS}) "
    f"ON CONFLICT (test_id) DO UPDATE SET {_UPDATES}, synced_at = now() "
    "WHERE lab.tests.content_sha256 IS DISTINCT FROM EXCLUDED.content_sha256"
)
_ROW_TARGET = ("test_id", "site") + ROW_COLUMNS


def write_test(conn: psycopg.Connection, payload: TestPayload, rows: Sequence[RowValues],
               certificate: Optional[tuple[bytes, str]]) -> None:
    """Write one test, its new chart rows and its certificate (when given) in one transaction; idempotent."""
    with conn.transaction():
        conn.execute(UPSERT_TEST, payload.values())
        if rows:
            # COPY into a session table, then one INSERT that skips buckets already there: the
            # first row of a bucket (in file order) stays, however often the rows are sent.
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS rows_in (LIKE lab.test_rows) ON COMMIT DELETE ROWS")
            with conn.cursor().copy(f"COPY rows_in ({', '.join(_ROW_TARGET)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((payload.test_id, payload.site, *row))
            conn.execute(f"INSERT INTO lab.test_rows ({', '.join(_ROW_TARGET)}) "
                         f"SELECT DISTINCT ON (bucket) {', '.join(_ROW_TARGET)} FROM rows_in "
                         "ORDER BY bucket ON CONFLICT DO NOTHING")
        if certificate is not None:
            data, sha = certificate
            conn.execute("UPDATE lab.tests SET certificate = %s, certificate_sha256 = %s "
                         "WHERE test_id = %s AND certificate_sha256 IS DISTINCT FROM %s",
                         (data, sha, payload.test_id, sha))


# --------------------------------------------------------------------------- the lab's queries

_ISO = "to_json({0}) #>> '{{}}'"  # ISO 8601 with the session's (the lab's) offset
HISTORY_FIELDS = ("site", "folder", "serial", "banc", _ISO.format("start_at"), _ISO.format("end_at"), "status", "grade",
                  "soh_pct", "capacity_ah", "capacity_wh", "ri_discharge_25c_ohm", "model", "grading_version", "reason")
LAB_RESULTS_HEADER: tuple[str, ...] = ("site",) + RESULTS_HEADER
"""--results with a lab database: the Pi's columns after the site's."""
_ORDER = "ORDER BY start_at DESC NULLS LAST, site DESC, folder DESC"


def battery_history(conn: psycopg.Connection, serial_key: str) -> list[tuple[Any, ...]]:
    """Every test of one battery in the lab (HISTORY_FIELDS), newest first."""
    return conn.execute(f"SELECT {', '.join(HISTORY_FIELDS)} FROM lab.tests WHERE serial_key = %s {_ORDER}",
                        (serial_key,)).fetchall()


def results_csv(conn: psycopg.Connection) -> tuple[str, int]:
    """Every test of the lab as CSV (LAB_RESULTS_HEADER), newest first, and their number: one COPY."""
    names = {"start": _ISO.format("start_at"), "end": _ISO.format("end_at")}
    select = ", ".join(f"{names.get(c, c)} AS \"{c}\"" for c in LAB_RESULTS_HEADER)
    out = io.BytesIO()
    with conn.cursor().copy(f"COPY (SELECT {select} FROM lab.tests {_ORDER}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
        for block in copy:
            out.write(block)
    text = out.getvalue().decode("utf-8")
    return text, max(0, text.count("\n") - 1)


def latest_end(conn: psycopg.Connection, serial_key: str) -> Optional[tuple[str, str, Any]]:
    """(site, folder, end_at) of the battery's latest finished test in the lab, or None: the 48 h rule's input."""
    row = conn.execute("SELECT site, folder, end_at FROM lab.tests WHERE serial_key = %s AND status = %s "
                       "AND end_at IS NOT NULL ORDER BY end_at DESC LIMIT 1", (serial_key, record.TEST_FINISHED)).fetchone()
    return (row[0], row[1], row[2]) if row else None


# --------------------------------------------------------------------------- one test, for the monitor's page

LAB_TEST_FIELDS: tuple[str, ...] = (
    "site", "banc", "folder", "serial", "status", "phase", "verdict", "capacity_ah", "capacity_wh",
    "ri_discharge_25c_ohm", "ri_charge_25c_ohm", "diffusion_discharge_25c_ohm", "diffusion_charge_25c_ohm")
"""What the monitor's page of another Pi's test reads of lab.tests, besides its times and whether it has a certificate."""
LAB_ROW_FIELDS: tuple[str, ...] = ROW_COLUMNS[2:]
"""A chart row's values after its time (step, voltage_v, ..., cell_max_mv)."""


def test_fields(conn: psycopg.Connection, test_id: str) -> Optional[dict[str, Any]]:
    """One test of the lab by its id: LAB_TEST_FIELDS, start/end (ISO 8601) and has_certificate; None when absent."""
    select = ", ".join((*LAB_TEST_FIELDS, _ISO.format("start_at"), _ISO.format("end_at"), "certificate IS NOT NULL"))
    row = conn.execute(f"SELECT {select} FROM lab.tests WHERE test_id = %s", (test_id,)).fetchone()
    if row is None:
        return None
    return {**dict(zip(LAB_TEST_FIELDS, row)), "start": row[-3], "end": row[-2], "has_certificate": bool(row[-1])}


def test_rows(conn: psycopg.Connection, test_id: str) -> list[tuple[Any, ...]]:
    """A test's chart rows in measurement order: (unix seconds, *LAB_ROW_FIELDS)."""
    return conn.execute(f"SELECT extract(epoch FROM measured_at)::float8, {', '.join(LAB_ROW_FIELDS)} "
                        "FROM lab.test_rows WHERE test_id = %s ORDER BY measured_at, bucket", (test_id,)).fetchall()


def certificate(conn: psycopg.Connection, test_id: str) -> Optional[bytes]:
    """The certificate PDF the test's Pi sent, None when it sent none."""
    row = conn.execute("SELECT certificate FROM lab.tests WHERE test_id = %s", (test_id,)).fetchone()
    return bytes(row[0]) if row is not None and row[0] is not None else None
