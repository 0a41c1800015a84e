"""The kiosk worker's reading of a bench's state (kiosk_worker.KioskWorker.snapshot): tables, fakes, no window."""

from __future__ import annotations

import queue
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kiosk_worker
import utils

SERIAL = "RW-ABCD1234"
ENTRY = {"status": utils.STATUS_OCCUPIED, "serial-pending": SERIAL, "current_step": 3}

# (id, what the worker sees at each refresh: (banc.py running, its latest test finished), what it says each time)
UNFINISHED_CASES = [
    ("stopped in the evening, resumed, finished, bench not freed",
     [(False, False), (True, False), (False, True)], [True, False, False]),
    ("stopped, resumed, stopped again", [(False, False), (True, False), (False, False)], [True, False, True]),
    ("running all along, then finished", [(True, False), (False, True)], [False, False]),
    ("stays interrupted", [(False, False), (False, False)], [True, True]),
]


@pytest.mark.parametrize("seen,expected", [c[1:] for c in UNFINISHED_CASES], ids=[c[0] for c in UNFINISHED_CASES])
def test_interrupted_follows_the_test_across_a_resume(
    banc_home: Path, monkeypatch: pytest.MonkeyPatch, seen: list[tuple[bool, bool]], expected: list[bool],
) -> None:
    """A test shown "Interrompu", resumed and finished while the bench stayed occupied is no longer "to resume"."""
    state = {"running": False, "finished": False}

    def latest_test(serial: str, banc: Any = None) -> SimpleNamespace:
        return SimpleNamespace(finished=state["finished"], config=None, path=None)

    monkeypatch.setattr(utils, "latest_test", latest_test)
    supervisor = SimpleNamespace(is_running=lambda banc: state["running"], reap=lambda: [])
    worker = kiosk_worker.KioskWorker(["banc1"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                      queue.Queue())
    said = []
    for running, finished in seen:
        state["running"], state["finished"] = running, finished
        said.append(worker.snapshot("banc1", ENTRY).unfinished)
    assert said == expected


def test_an_interrupted_bench_reads_its_folders_once(banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing changes, a bench's test folders are not listed again at every refresh (every 2 s)."""
    reads: list[str] = []

    def latest_test(serial: str, banc: Any = None) -> SimpleNamespace:
        reads.append(serial)
        return SimpleNamespace(finished=False, config=None, path=None)

    monkeypatch.setattr(utils, "latest_test", latest_test)
    supervisor = SimpleNamespace(is_running=lambda banc: False, reap=lambda: [])
    worker = kiosk_worker.KioskWorker(["banc1"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                      queue.Queue())
    in_phase_1 = dict(ENTRY, current_step=1)  # from phase 2 on, the Ri is read once too (also by latest_test)
    assert all(worker.snapshot("banc1", in_phase_1).unfinished for _ in range(5))
    assert reads == [SERIAL]
