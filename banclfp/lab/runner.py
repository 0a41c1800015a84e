"""lab_sync.py's work: this Pi's test folders into the lab database, once or as a service.

The thin shell around sync.py's decisions: list the folders, ask the outbox what the database
acknowledged, send what changed (test row, new chart rows, certificate), mark it sent after
the commit. Any failure to reach the database ends the pass; what was not marked is sent next
time (at least once), and the database's keyed writes make a resend harmless.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import psycopg

from banclfp.infra.environment import StaticFiles
from banclfp.infra.settings import Settings
from banclfp.lab import db, payload, schema, sync
from banclfp.lab.outbox import OUTBOX_FILE, Outbox, Sent
from banclfp.recording import record

logger = logging.getLogger("banc.lab_sync")


@dataclass
class PassReport:
    """What one pass did."""

    reached: bool = False
    refused: Optional[str] = None  # the database's reason when it answered but refused
    tests: int = 0  # tests whose row was written
    rows: int = 0  # chart rows sent
    left: int = 0  # tests still pending
    edited: list[str] = field(default_factory=list)  # graded tests changed on disk since they were sent

    @property
    def exit_code(self) -> int:
        """--once's exit code for this pass."""
        return sync.exit_code(self.reached, self.refused is not None, self.left)


def test_folders(data_dir: Path) -> list[Path]:
    """Every test folder data/bancN/DDMMYYYY-SERIAL[-K], in a stable order."""
    found = []
    try:
        benches = sorted(os.scandir(data_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for bench in benches:
        if not record.BANC_DIR_RE.match(bench.name) or not bench.is_dir():
            continue
        for entry in sorted(os.scandir(bench.path), key=lambda e: e.name):
            if record.parse_folder_name(entry.name) is not None and entry.is_dir():
                found.append(Path(entry.path))
    return found


def _seen(site: str, folders: list[Path]) -> tuple[list[sync.Seen], dict[str, Path]]:
    seen, paths = [], {}
    for folder in folders:
        signature = payload.folder_signature(folder)
        if signature is None:
            continue  # not a test yet
        test_id = payload.test_id(site, f"{folder.parent.name}/{folder.name}")
        seen.append(sync.Seen(test_id, signature))
        paths[test_id] = folder
    return seen, paths


def send_test(conn: psycopg.Connection, site: str, folder: Path, signature: str, previous: Optional[Sent],
              report: PassReport, progress: Optional[Callable[[Sent], None]] = None,
              correct_to_25c: Optional[Callable[[float, Optional[float]], float]] = None) -> Optional[Sent]:
    """Send one test folder (in bounded transactions); what the database now holds, or None if it holds no test.

    `progress` is told after each committed part of a long backlog (signature None: still
    pending), so a link cut after an hour of catch-up resumes where it was, not at the start.
    """
    if correct_to_25c is None:  # the folder's own home: BANC_HOME/data/bancN/<test>
        correct_to_25c = StaticFiles(folder.parent.parent.parent).correct_to_25c
    test = payload.read_test(site, folder, correct_to_25c)
    if test is None:
        return None
    if sync.edited_by_hand(previous, test.content_sha256):
        # The folders stay the truth, so the edit is sent; the database keeps what the test said
        # before (lab.test_revisions) and flags it (edited_on_disk), and the log says it.
        logger.warning("%s: graded test changed on disk since it was sent: the lab keeps the previous version "
                       "in lab.test_revisions", test.test_id)
        report.edited.append(test.test_id)
    data_csv = folder / record.DATA_CSV_FILE
    offset = previous.rows_offset if previous is not None else 0
    try:
        if data_csv.stat().st_size < offset:
            offset = 0  # data.csv recreated (removed during a test): send it all again, buckets absorb repeats
    except FileNotFoundError:
        offset = 0
    certificate = None
    cert_path = folder / record.CERTIFICATE_FILE
    cert_sha = payload.file_sha256(cert_path)
    if cert_sha is not None and (previous is None or previous.certificate_sha256 != cert_sha):
        certificate = (cert_path.read_bytes(), cert_sha)
    while True:
        rows, next_offset = payload.read_rows(data_csv, offset)
        more = next_offset - offset >= payload.ROWS_CHUNK_BYTES // 2
        db.write_test(conn, test, rows, certificate if not more else None)
        report.rows += len(rows)
        offset = next_offset
        if not more:
            break
        if progress is not None:
            progress(Sent(None, offset, previous.content_sha256 if previous else None,
                          previous.certificate_sha256 if previous else None, previous.graded if previous else False))
    report.tests += 1
    return Sent(signature, offset, test.content_sha256, cert_sha if certificate or previous is None
                else previous.certificate_sha256, test.graded)


def sync_once(settings: Settings, stop: Optional[threading.Event] = None) -> PassReport:
    """One pass: send every pending test of this Pi; never raises for a database that cannot be reached."""
    report = PassReport()
    assert settings.lab_db is not None
    site = settings.lab_site
    outbox = Outbox(settings.home / OUTBOX_FILE, f"{site} {settings.lab_db}")
    try:
        seen, paths = _seen(site, test_folders(settings.home / "data"))
        sent = outbox.all()
        todo = sync.pending(seen, sent)
        report.left = len(todo)
        outbox.forget(sync.gone(seen, sent))
        signatures = {s.test_id: s.signature for s in seen}
        try:
            with db.connect(settings.lab_db, "banc-lfp lab_sync") as conn:
                report.reached = True
                version = db.schema_version(conn)
                if version < schema.LATEST_VERSION:
                    report.refused = f"schema version {version}, {schema.LATEST_VERSION} needed: run lab_sync.py --migrate"
                    return report
                for test_id in todo:
                    if stop is not None and stop.is_set():
                        break
                    acked = send_test(conn, site, paths[test_id], signatures[test_id], sent.get(test_id), report,
                                      functools.partial(outbox.mark, test_id))
                    if acked is not None:
                        outbox.mark(test_id, acked)
                    report.left -= 1
        except db.Unreachable as exc:
            report.reached = report.reached and not conn_broken(exc)
            if report.reached:
                report.refused = _one_line(exc)
            logger.warning("lab database unreachable: %s (%d test(s) pending, sent later)", _one_line(exc), report.left)
        except psycopg.Error as exc:
            report.refused = _one_line(exc)
            logger.error("lab database refused: %s", report.refused)
    finally:
        outbox.close()
    return report


def conn_broken(exc: BaseException) -> bool:
    """True for an OperationalError that means the server or link is gone (not a refusal)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(("08", "57P"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def run_forever(settings: Settings) -> int:
    """The service: a pass every POLL_INTERVAL_S, sooner again after failures; exits 0 on SIGTERM/SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    failures = 0
    while not stop.is_set():
        report = sync_once(settings, stop)
        if report.tests:
            logger.info("lab: %d test(s), %d row(s) sent, %d pending", report.tests, report.rows, report.left)
        failures = 0 if report.exit_code == sync.EXIT_OK else failures + 1
        stop.wait(sync.retry_delay_s(failures))
    return 0
