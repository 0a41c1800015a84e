"""The kiosk worker's reading of a bench's state (kiosk_worker.KioskWorker.snapshot): tables, fakes, no window."""

from __future__ import annotations

import dataclasses
import queue
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from banclfp.kiosk import worker as kiosk_worker
from banclfp.recording import record
from banclfp.recording.store import Store

SERIAL = "RW-ABCD1234"
ENTRY = record.BenchEntry("Banc1", record.STATUS_OCCUPIED, SERIAL, 3)

# (id, what the worker sees at each refresh: (banc.py running, its latest test finished), what it says each time)
UNFINISHED_CASES = [
    ("stopped in the evening, resumed, finished, bench not freed",
     [(False, False), (True, False), (False, True)], [True, False, False]),
    ("stopped, resumed, stopped again", [(False, False), (True, False), (False, False)], [True, False, True]),
    ("running all along, then finished", [(True, False), (False, True)], [False, False]),
    ("stays interrupted", [(False, False), (False, False)], [True, True]),
]


@pytest.mark.parametrize("seen,expected", [c[1:] for c in UNFINISHED_CASES], ids=[c[0] for c in UNFINISHED_CASES])
def test_interrupted_follows_the_test_across_a_resume(store: Store,
    banc_home: Path, monkeypatch: pytest.MonkeyPatch, seen: list[tuple[bool, bool]], expected: list[bool],
) -> None:
    """A test shown "Interrompu", resumed and finished while the bench stayed occupied is no longer "to resume"."""
    state = {"running": False, "finished": False}

    def latest_test(serial: str, banc: Any = None) -> SimpleNamespace:
        return SimpleNamespace(finished=state["finished"], config=None, path=None)

    monkeypatch.setattr(store, "latest_test", latest_test)
    supervisor = SimpleNamespace(is_running=lambda banc: state["running"], reap=lambda: [])
    worker = kiosk_worker.KioskWorker(store, ["banc1"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                      queue.Queue())
    said = []
    for running, finished in seen:
        state["running"], state["finished"] = running, finished
        said.append(worker.snapshot("banc1", ENTRY).unfinished)
    assert said == expected


def test_an_interrupted_bench_reads_its_folders_once(store: Store, banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While nothing changes, a bench's test folders are not listed again at every refresh (every 2 s)."""
    reads: list[str] = []

    def latest_test(serial: str, banc: Any = None) -> SimpleNamespace:
        reads.append(serial)
        return SimpleNamespace(finished=False, config=None, path=None)

    monkeypatch.setattr(store, "latest_test", latest_test)
    supervisor = SimpleNamespace(is_running=lambda banc: False, reap=lambda: [])
    worker = kiosk_worker.KioskWorker(store, ["banc1"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                      queue.Queue())
    in_phase_1 = dataclasses.replace(ENTRY, current_step=1)  # from phase 2 on, the Ri is read once too (also by latest_test)
    assert all(worker.snapshot("banc1", in_phase_1).unfinished for _ in range(5))
    assert reads == [SERIAL]


def _bare_worker(home: Path) -> kiosk_worker.KioskWorker:
    supervisor = SimpleNamespace(is_running=lambda banc: True, reap=lambda: [])
    return kiosk_worker.KioskWorker(Store(home), ["banc1", "banc2"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                    queue.Queue())


def test_a_stop_is_handed_to_the_kiosk_for_its_bench_only(tmp_path: Path) -> None:
    """`stop`, bench, bench: the worker touches no file or process; the Tk thread publishes `end` on that bench."""
    decision = kiosk_worker.Decision(kiosk_worker.Action.STOP, "Arrêt du banc 2 confirmé.", kiosk_worker.Level.SUCCESS,
                                     banc="banc2", serial=SERIAL)
    outcome = _bare_worker(tmp_path).perform(decision)
    assert (outcome.action, outcome.banc, outcome.serial, outcome.level) == (
        kiosk_worker.Action.STOP, "banc2", SERIAL, "success")


@pytest.mark.parametrize("count,text", [(1, "Historique de RW-ABCD1234 : 1 test. Touchez"),
                                        (3, "Historique de RW-ABCD1234 : 3 tests. Touchez")])
def test_history_message_counts_in_plain_french(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int,
                                                text: str) -> None:
    worker = _bare_worker(tmp_path)
    entry = kiosk_worker.HistoryEntry(tmp_path, "banc1", None, "finished", "A", 95.0, 95.0)
    monkeypatch.setattr(worker, "resolve_test_folder", lambda banc=None, serial=None: tmp_path)
    monkeypatch.setattr(worker, "history_of", lambda serial: (entry,) * count)
    monkeypatch.setattr(kiosk_worker, "importlib", SimpleNamespace(
        import_module=lambda name: SimpleNamespace(show_charts=lambda *args: None)))
    plain = kiosk_worker.Outcome(kiosk_worker.Action.GRAPH, "", "info", serial=SERIAL)
    outcome = worker._graph(plain, None, SERIAL)
    assert outcome.message.startswith(text) and "(s)" not in outcome.message
    assert len(outcome.history) == count
