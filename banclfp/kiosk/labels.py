"""The kiosk's grade labels: printed on their own thread after a verdict or a `label` scan, retried, said on screen.

A printer that is missing, off or refusing must never hold up a test, its verdict or the
kiosk: printing runs on this thread (up to the print timeout per attempt), never on the
worker's or the Tk thread. Each outcome goes to the kiosk's queue as a LabelOutcome; a failed
label printed after a verdict is tried again after each delay of its RetryPolicy, then waits
for a `label` scan.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from banclfp.infra.printing import PrintOutcome, PrintResult, RetryPolicy
from banclfp.kiosk.queue_messages import LabelOutcome

log = logging.getLogger("banc.ui.labels")

POLL_S = 1.0  # how often the thread looks for a retry that has come due
STOP_TIMEOUT_S = 2.0  # at exit: a print under way is not waited for (its job is CUPS's)

REASONS_FR = {
    PrintOutcome.QUEUE_MISSING: "file d'impression inconnue de CUPS",
    PrintOutcome.UNREACHABLE: "CUPS ne répond pas",
    PrintOutcome.REFUSED: "la file d'impression refuse les travaux",
    PrintOutcome.PRINTER_STOPPED: "imprimante arrêtée",
    PrintOutcome.TIMEOUT: "l'imprimante n'a pas pris l'étiquette à temps",
    PrintOutcome.NOT_DRAWN: "étiquette impossible à dessiner (verdict absent ?)",
}


@dataclass(frozen=True)
class LabelJob:
    """One label to print: the test's folder, its bench and serial, and whether a `label` scan asked for it."""

    banc: str
    serial: str
    folder: Path
    by_hand: bool = False


def reason_fr(result: PrintResult) -> str:
    """Why a label was not printed, for the operator (French, one line)."""
    return REASONS_FR.get(result.outcome, result.outcome.value)


class LabelPrinter:
    """A thread that prints labels with `print_one(folder)` and posts each outcome with `post`."""

    def __init__(self, print_one: Callable[[Path], PrintResult], post: Callable[[LabelOutcome], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 delays_s: tuple[float, ...] = RetryPolicy.delays_s) -> None:
        self.print_one = print_one
        self.post = post
        self.clock = clock
        self.delays_s = delays_s
        self.jobs: queue.Queue[Optional[LabelJob]] = queue.Queue()
        self.policies: dict[Path, RetryPolicy] = {}
        self.waiting: dict[Path, LabelJob] = {}  # failed labels with a retry scheduled
        self._thread = threading.Thread(target=self._run, name="kiosk-labels", daemon=True)

    def start(self) -> None:
        """Start the printing thread."""
        self._thread.start()

    def submit(self, job: LabelJob) -> None:
        """Print a label (never blocks)."""
        self.jobs.put(job)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the thread (a print under way is left to CUPS)."""
        self.jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=POLL_S)
            except queue.Empty:
                for folder, waiting in list(self.waiting.items()):
                    if self.policies[folder].due():
                        del self.waiting[folder]
                        self.attempt(waiting)
                continue
            if job is None:
                return
            self.attempt(job)

    def attempt(self, job: LabelJob) -> LabelOutcome:
        """Print one label now, schedule its retry when it failed, post and return its outcome (never raises)."""
        policy = self.policies.setdefault(job.folder, RetryPolicy(delays_s=self.delays_s, clock=self.clock))
        if job.by_hand:
            policy.reset()
            self.waiting.pop(job.folder, None)
        try:
            result = self.print_one(job.folder)
        except Exception as exc:  # print_one never raises; a bug in it must not kill the thread
            log.exception("label of %s", job.folder)
            result = PrintResult(PrintOutcome.NOT_DRAWN, detail=str(exc))
        if result.printed:
            policy.succeeded()
            outcome = LabelOutcome(job.banc, job.serial, True, by_hand=job.by_hand)
            log.info("label of %s printed (job %s)", job.folder.name, result.job_id)
        else:
            retry_in_s = policy.failed()
            if retry_in_s is not None:
                self.waiting[job.folder] = LabelJob(job.banc, job.serial, job.folder)
            outcome = LabelOutcome(job.banc, job.serial, False, reason_fr(result), retry_in_s, job.by_hand)
            log.warning("label of %s not printed: %s (%s)", job.folder.name, result.outcome.value, result.detail)
        try:
            self.post(outcome)
        except Exception:
            log.exception("label outcome of %s not posted", job.folder)
        return outcome
