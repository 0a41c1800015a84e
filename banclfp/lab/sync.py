"""The sync loop's decisions, without I/O: what is pending, when to try again, what exit code to give.

runner.py does the reading, writing and waiting; everything it decides comes from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

from banclfp.lab.outbox import Sent

EXIT_OK = 0
EXIT_ERROR = 1  # the database answered but refused (schema too old, a role without rights)
EXIT_USAGE = 2  # settings: no BANC_LAB_DB, a bad BANC_SITE
EXIT_UNREACHABLE = 3  # could not be reached: nothing is lost, it is sent later

POLL_INTERVAL_S = 15.0
"""How often the service looks for changes: a change reaches the lab well within a minute."""
RETRY_MAX_S = 45.0
"""The longest wait after failures: a link back up is used within a minute."""


@dataclass(frozen=True)
class Seen:
    """A test folder as found on disk now."""

    test_id: str
    signature: str


def pending(seen: Iterable[Seen], sent: Mapping[str, Sent]) -> list[str]:
    """The tests to send: those whose folder changed since the database acknowledged it (in `seen` order)."""
    return [s.test_id for s in seen if (ack := sent.get(s.test_id)) is None or ack.signature != s.signature]


def gone(seen: Iterable[Seen], sent: Mapping[str, Sent]) -> list[str]:
    """Acknowledged tests whose folder is no longer on disk (their lab rows stay: the lab keeps its history)."""
    present = {s.test_id for s in seen}
    return [test_id for test_id in sent if test_id not in present]


def edited_by_hand(previous: Optional[Sent], content_sha256: str) -> bool:
    """True when a test already sent with its verdict now says something else: a hand edit, said out loud."""
    return previous is not None and previous.graded and previous.content_sha256 not in (None, content_sha256)


def retry_delay_s(failures: int) -> float:
    """The wait before the next try after `failures` failures in a row (0: the poll interval)."""
    if failures <= 0:
        return POLL_INTERVAL_S
    return min(RETRY_MAX_S, 2.0 * 2 ** (failures - 1))


def exit_code(reached: bool, refused: bool, left: int) -> int:
    """--once's exit code: 0 when the lab holds everything, 3 when it could not be reached, 1 when it refused."""
    if not reached:
        return EXIT_UNREACHABLE
    if refused:
        return EXIT_ERROR
    return EXIT_OK if left == 0 else EXIT_UNREACHABLE
