"""The lab's answers for --history, --results and the 48 h rule, with this Pi's own tests as the fallback.

With BANC_LAB_DB set, a question goes to the lab database first and gets LAB_DEADLINE_S to be
answered (connection included); after that the Pi's own index (banclfp.history.index) answers,
and the answer carries FALLBACK_NOTE so the caller says it out loud (report.py on stderr, the
kiosk on screen). Without BANC_LAB_DB nothing changes: the index answers, with no note.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, TypeVar

from banclfp.history import index
from banclfp.infra.settings import Settings
from banclfp.recording import record
from banclfp.recording.store import Store

logger = logging.getLogger("banc.lab")

LAB_DEADLINE_S = 2.0
"""How long a reader waits for the lab database before it answers with this Pi's own tests."""
FALLBACK_NOTE = "base du labo injoignable (2 s) : tests de ce Pi seulement"

T = TypeVar("T")


def ask_lab(uri: str, question: Callable[[Any], T], deadline_s: float = LAB_DEADLINE_S) -> Optional[T]:
    """`question(connection)`'s answer from the lab database, or None when it did not come within `deadline_s`.

    The question runs in a daemon thread: a cut link cannot hold the caller past the deadline
    (the thread ends by itself at libpq's connect timeout or the keepalive's verdict).
    """
    answers: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def ask() -> None:
        from banclfp.lab import db  # psycopg is imported only when a lab database is configured

        try:
            with db.connect(uri, "banc-lfp reader") as conn:
                answers.put((True, question(conn)))
        except Exception as exc:  # any failure is "no answer": the Pi's own tests answer instead
            answers.put((False, exc))

    threading.Thread(target=ask, name="lab-question", daemon=True).start()
    try:
        ok, value = answers.get(timeout=deadline_s)
    except queue.Empty:
        logger.warning("lab database: no answer within %.1f s, this Pi's tests answer", deadline_s)
        return None
    if not ok:
        logger.warning("lab database unusable (%s), this Pi's tests answer", " ".join(str(value).split())[:200])
        return None
    return value


def battery_history(serial: str, settings: Settings) -> tuple[list[index.TestRow], Optional[str]]:
    """Every test of a battery (the lab's when it answers; each folder then named 'SITE:bancN/...') and the fallback note."""
    if settings.lab_db is None:
        return Store.from_settings(settings).history.battery_history(serial), None
    from banclfp.lab import db

    key = record.serial_key(serial)
    rows = ask_lab(settings.lab_db, lambda conn: db.battery_history(conn, key))
    if rows is None:
        return Store.from_settings(settings).history.battery_history(serial), FALLBACK_NOTE
    return [index.TestRow(f"{row[0]}:{row[1]}", *row[2:]) for row in rows], None


def results_csv(settings: Settings) -> tuple[str, int, Optional[str]]:
    """--results: every test of the lab as CSV (with a site column when the lab answers), their number, the note."""
    if settings.lab_db is not None:
        from banclfp.lab import db

        answer = ask_lab(settings.lab_db, db.results_csv)
        if answer is not None:
            return answer[0], answer[1], None
    text, count = Store.from_settings(settings).history.lab_results_csv()
    return text, count, (FALLBACK_NOTE if settings.lab_db is not None else None)


@dataclass(frozen=True)
class LastTest:
    """The latest finished test of a battery: where and when it ended."""

    where: str  # 'SITE:bancN/...' from the lab, 'bancN/...' from this Pi
    ended: datetime


def latest_finished(serial: str, settings: Settings) -> tuple[Optional[LastTest], Optional[str]]:
    """The battery's latest finished test across the lab (the 48 h rule's input) and the fallback note.

    Without BANC_LAB_DB, or when the lab does not answer in time, this Pi's folders answer.
    """
    if settings.lab_db is not None:
        from banclfp.lab import db

        key = record.serial_key(serial)
        answer = ask_lab(settings.lab_db, lambda conn: (True, db.latest_end(conn, key)))
        if answer is not None:
            found = answer[1]
            lab_last = LastTest(f"{found[0]}:{found[1]}", found[2]) if found else None
            return _later(lab_last, _local_latest(Store.from_settings(settings), serial)), None
        return _local_latest(Store.from_settings(settings), serial), FALLBACK_NOTE
    return _local_latest(Store.from_settings(settings), serial), None


def _local_latest(store: Store, serial: str) -> Optional[LastTest]:
    latest = store.latest_test(serial)
    if latest is None or not latest.finished or latest.last_activity is None:
        return None
    return LastTest(f"{latest.banc}/{latest.path.name}", latest.last_activity)


def _later(a: Optional[LastTest], b: Optional[LastTest]) -> Optional[LastTest]:
    """The later of two (a test this Pi finished but has not sent yet counts too)."""
    if a is None or b is None:
        return a or b
    return a if a.ended >= b.ended else b
