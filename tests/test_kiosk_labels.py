"""The kiosk's grade labels: printed after a verdict or on a `label` scan, off the worker's thread, failures said and retried.

The printing itself (the PDF, CUPS, each failure's outcome) is tested in test_label.py; here
what the kiosk does with it: the `label` scan's sequence (pure), the printer thread's retries
(an injected printer and clock), and the worker with a real private cupsd.
"""

from __future__ import annotations

import functools
import queue
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from banclfp.infra.printing import PrintOutcome, PrintResult
from banclfp.kiosk.labels import LabelJob, LabelPrinter, reason_fr
from banclfp.kiosk.queue_messages import KioskMessage, LabelOutcome, Outcome
from banclfp.kiosk.scan_workflow import Action, Level, ScanLookups, ScanWorkflow
from banclfp.kiosk.worker import KioskWorker, ScanRequest, real_lookups
from banclfp.recording.store import Store
from banclfp.testkit.support import CupsServer
from banclfp.verdict import label
from tests.test_label import PRINT_TIMEOUT_S, check_printed, graded_folder, wait_for_pdfs

NOW = datetime(2026, 3, 4, 10, 0)


def workflow(num_bancs: int = 4) -> ScanWorkflow:
    lookups = ScanLookups(is_banc_running=lambda banc: False, banc_info=lambda banc: None,  # type: ignore[arg-type,return-value]
                          banc_for_serial=lambda serial: None, latest_test=lambda serial: None)
    return ScanWorkflow(num_bancs, 30.0, lookups)


@pytest.mark.parametrize("scans, action, level, banc, serial, message", [
    (["label", "banc2"], Action.LABEL, Level.INFO, "banc2", None, "Étiquette du dernier test du banc 2…"),
    (["LABEL", "RW-LABEL001"], Action.LABEL, Level.INFO, None, "RW-LABEL001", "Étiquette de RW-LABEL001…"),
    (["label", "rw-label001"], Action.LABEL, Level.INFO, None, "RW-label001", "Étiquette de RW-label001…"),
    (["label", "banc9"], Action.NONE, Level.ERROR, None, None,
     "Banc inconnu : « banc9 ». Cette installation a 4 bancs (banc1 à banc4)."),
    (["label", "n'importe quoi"], Action.NONE, Level.ERROR, None, None,
     "Étiquette : scannez un numéro de série ou un banc (reçu « n'importe quoi »)."),
])
def test_the_label_scan_then_a_bench_or_a_serial(scans: list[str], action: Action, level: Level,
                                                 banc: Optional[str], serial: Optional[str], message: str) -> None:
    flow = workflow()
    first = flow.handle(scans[0], NOW, 0.0)
    assert (first.action, flow.prompt()) == (Action.NONE, "Étiquette : scannez un numéro de série ou un banc")
    decision = flow.handle(scans[1], NOW, 1.0)
    assert (decision.action, decision.level, decision.banc, decision.serial, decision.message) == (
        action, level, banc, serial, message)
    assert flow.prompt() == "Scannez un banc pour lancer un test"  # the sequence is over either way


def test_a_label_scan_left_waiting_times_out_and_says_so() -> None:
    flow = workflow()
    flow.handle("label", NOW, 0.0)
    assert flow.tick(10.0) is None
    expired = flow.tick(31.0)
    assert expired is not None and expired.message == "Délai de 30\u00a0s dépassé : étiquette non imprimée. Recommencez par label."


# --------------------------------------------------------------------------- the printer thread (injected)


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def scripted(outcomes: list[PrintOutcome]) -> tuple[list[Path], functools.partial[PrintResult]]:
    """A printer that answers `outcomes` in turn (then prints), and the folders it was asked for."""
    asked: list[Path] = []

    def print_one(left: list[PrintOutcome], folder: Path) -> PrintResult:
        asked.append(folder)
        return PrintResult(left.pop(0) if left else PrintOutcome.PRINTED, job_id="q-1")

    return asked, functools.partial(print_one, list(outcomes))


def test_a_failed_label_is_retried_after_each_delay_then_waits_for_a_scan() -> None:
    clock = Clock()
    asked, print_one = scripted([PrintOutcome.UNREACHABLE] * 3)
    posted: list[LabelOutcome] = []
    printer = LabelPrinter(print_one, posted.append, clock=clock, delays_s=(30.0, 120.0))
    job = LabelJob("banc2", "RW-LABEL001", Path("/x/banc2/04032026-RW-LABEL001"))
    first = printer.attempt(job)
    assert (first.printed, first.reason, first.retry_in_s) == (False, "CUPS ne répond pas", 30.0)
    assert job.folder in printer.waiting and not printer.policies[job.folder].due()
    clock.now_s = 30.0
    assert printer.policies[job.folder].due()
    second = printer.attempt(printer.waiting.pop(job.folder))
    assert (second.printed, second.retry_in_s) == (False, 120.0)
    clock.now_s = 150.0
    third = printer.attempt(printer.waiting.pop(job.folder))
    assert (third.printed, third.retry_in_s) == (False, None) and job.folder not in printer.waiting  # gave up
    # A `label` scan: tried at once, whatever the delays used; it prints now.
    fourth = printer.attempt(LabelJob(job.banc, job.serial, job.folder, by_hand=True))
    assert fourth == LabelOutcome("banc2", "RW-LABEL001", True, by_hand=True)
    assert posted == [first, second, third, fourth] and len(asked) == 4


def test_the_printer_thread_retries_by_itself_and_a_broken_printer_function_never_kills_it() -> None:
    posted: queue.Queue[KioskMessage] = queue.Queue()
    calls: list[int] = []

    def print_one(folder: Path) -> PrintResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")  # print_label never raises; the thread survives one that would
        return PrintResult(PrintOutcome.PRINTED)

    printer = LabelPrinter(print_one, posted.put, delays_s=(0.2,))
    printer.start()
    try:
        printer.submit(LabelJob("banc1", "RW-RETRY001", Path("/x")))
        first = posted.get(timeout=5)
        assert isinstance(first, LabelOutcome) and not first.printed and first.retry_in_s == 0.2
        second = posted.get(timeout=5)  # the retry, on the thread's own poll
        assert isinstance(second, LabelOutcome) and second.printed and not second.by_hand
    finally:
        printer.stop()


@pytest.mark.parametrize("outcome, text", [
    (PrintOutcome.QUEUE_MISSING, "file d'impression inconnue de CUPS"),
    (PrintOutcome.UNREACHABLE, "CUPS ne répond pas"),
    (PrintOutcome.REFUSED, "la file d'impression refuse les travaux"),
    (PrintOutcome.PRINTER_STOPPED, "imprimante arrêtée"),
    (PrintOutcome.TIMEOUT, "l'imprimante n'a pas pris l'étiquette à temps"),
    (PrintOutcome.NOT_DRAWN, "étiquette impossible à dessiner (verdict absent ?)"),
])
def test_every_failure_is_said_in_french(outcome: PrintOutcome, text: str) -> None:
    assert reason_fr(PrintResult(outcome)) == text


# --------------------------------------------------------------------------- the worker with a real CUPS


@pytest.fixture
def cups() -> Iterator[CupsServer]:
    server = CupsServer().start()
    yield server
    server.close()


def label_outcomes(sink: queue.Queue[KioskMessage], count: int, timeout_s: float = PRINT_TIMEOUT_S + 10) -> list[LabelOutcome]:
    """The next `count` LabelOutcome messages the kiosk's queue receives (others are skipped)."""
    found: list[LabelOutcome] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count:
        item = sink.get(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(item, LabelOutcome):
            found.append(item)
    return found


def kiosk_worker(home: Path, sink: queue.Queue[KioskMessage], printer: LabelPrinter) -> KioskWorker:
    store = Store(home)
    supervisor = SimpleNamespace(is_running=lambda banc: False, reap=lambda: [])
    flow = ScanWorkflow(4, 30.0, real_lookups(store, supervisor.is_running))
    return KioskWorker(store, store.all_bancs(), flow, supervisor, sink, refresh_interval_s=0.2,  # type: ignore[arg-type]
                       labels=printer)


def test_a_verdict_given_while_the_kiosk_runs_is_printed_once_and_the_older_ones_are_not(
        banc_home: Path, tmp_path: Path, cups: CupsServer) -> None:
    graded_folder(banc_home, serial="RW-BEFORE01", banc="banc1")  # concluded before the kiosk started
    out = tmp_path / "out"
    printer_queue = cups.add_pdf_queue(out)
    sink: queue.Queue[KioskMessage] = queue.Queue()
    printer = LabelPrinter(functools.partial(label.print_label, Store(banc_home), queue=printer_queue,
                                             server=cups.server, timeout_s=PRINT_TIMEOUT_S), sink.put)
    worker = kiosk_worker(banc_home, sink, printer)
    printer.start()
    worker.start()
    try:
        time.sleep(1.0)  # several refreshes: the verdict already there is not printed
        folder = graded_folder(banc_home)  # RW-LABEL001 on banc2: its verdict comes now
        (printed,) = label_outcomes(sink, 1)
        assert printed == LabelOutcome("banc2", "RW-LABEL001", True)
        (pdf,) = wait_for_pdfs(out, 1)
        check_printed(pdf, folder, tmp_path)
        time.sleep(1.0)
        assert len(list(out.glob("*.pdf"))) == 1  # once, whatever the refreshes that see the verdict again
    finally:
        worker.stop()
        printer.stop()


def test_a_label_scan_reprints_and_a_missing_printer_is_said_then_retried_once_back(
        banc_home: Path, tmp_path: Path, cups: CupsServer) -> None:
    folder = graded_folder(banc_home)
    out = tmp_path / "out"
    real_queue = cups.add_pdf_queue(out)
    target = {"queue": "file-absente"}

    def print_one(folder: Path) -> PrintResult:
        return label.print_label(Store(banc_home), folder, target["queue"], server=cups.server,
                                 timeout_s=PRINT_TIMEOUT_S)

    sink: queue.Queue[KioskMessage] = queue.Queue()
    printer = LabelPrinter(print_one, sink.put, delays_s=(1.0,))
    worker = kiosk_worker(banc_home, sink, printer)
    printer.start()
    try:
        worker.handle(ScanRequest("label"))
        worker.handle(ScanRequest("banc2"))
        (failed,) = label_outcomes(sink, 1)
        assert failed == LabelOutcome("banc2", "RW-LABEL001", False, "file d'impression inconnue de CUPS", 1.0,
                                      by_hand=True)
        assert not list(out.glob("*.pdf"))
        target["queue"] = real_queue  # the printer is back: the retry prints it, with no scan
        (retried,) = label_outcomes(sink, 1)
        assert retried.printed and not retried.by_hand
        (pdf,) = wait_for_pdfs(out, 1)
        check_printed(pdf, folder, tmp_path)
        # And by serial, again: a second label (cups-pdf names its file after the job's title: the same file anew).
        first_print = pdf.stat().st_mtime_ns
        worker.handle(ScanRequest("label"))
        worker.handle(ScanRequest("RW-LABEL001"))
        (again,) = label_outcomes(sink, 1)
        assert again.printed and again.by_hand
        deadline = time.monotonic() + PRINT_TIMEOUT_S
        while pdf.stat().st_mtime_ns == first_print and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pdf.stat().st_mtime_ns != first_print
        check_printed(pdf, folder, tmp_path)
    finally:
        printer.stop()


def test_a_label_scan_without_a_printer_or_a_verdict_says_why(banc_home: Path) -> None:
    sink: queue.Queue[KioskMessage] = queue.Queue()
    store = Store(banc_home)
    supervisor = SimpleNamespace(is_running=lambda banc: False, reap=lambda: [])
    no_printer = KioskWorker(store, store.all_bancs(), ScanWorkflow(4, 30.0, real_lookups(store, supervisor.is_running)),
                             supervisor, sink)  # type: ignore[arg-type]
    no_printer.handle(ScanRequest("label"))
    no_printer.handle(ScanRequest("banc2"))
    answers = [item for item in list(sink.queue) if isinstance(item, Outcome)]
    assert answers[-1].message == ("Aucune imprimante d'étiquettes configurée (BANC_LABEL_PRINTER) : "
                                   "étiquette non imprimée.")
    printer = LabelPrinter(lambda folder: PrintResult(PrintOutcome.PRINTED), sink.put)
    with_printer = kiosk_worker(banc_home, sink, printer)
    with_printer.handle(ScanRequest("label"))
    with_printer.handle(ScanRequest("banc3"))
    answers = [item for item in list(sink.queue) if isinstance(item, Outcome)]
    assert answers[-1].message == "Aucun test trouvé pour banc 3 : étiquette non imprimée."
    assert printer.jobs.empty()
