"""Printing a PDF on a CUPS queue with the CUPS command-line tools (`lpstat`, `lp`, `cancel`), never raising.

`submit` asks the scheduler whether it runs and whether the queue exists, accepts jobs and is
enabled, sends the file with `lp -d QUEUE`, then waits (within one deadline) until the job has
left the queue. It returns a PrintResult whose outcome says what happened; a job that could not
be printed in time is cancelled, so that printing it again later never gives two labels. The
CUPS server is `server` (`lp -h`) when given, else what CUPS itself finds (CUPS_SERVER, client.conf,
the local socket). The tools run with LC_ALL=C: their messages are read, and a Pi in French would
translate them.

RetryPolicy is pure (an injected clock): when to try a failed label again.
"""

from __future__ import annotations

import enum
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from banclfp.infra import environment

PRINT_TIMEOUT_S = 30.0
"""Longest a print attempt waits for CUPS (scheduler, queue and the job leaving the queue)."""
POLL_S = 0.2  # how often the job's queue is looked at while waiting for it to leave
REQUEST_ID_RE = re.compile(r"request id is (\S+)")


class PrintOutcome(enum.Enum):
    """What became of a print attempt."""

    PRINTED = "printed"  # the job left the queue: CUPS handed it to the printer
    QUEUE_MISSING = "queue missing"  # no such queue on the server
    UNREACHABLE = "cupsd unreachable"  # no scheduler answers (stopped, wrong socket, hung)
    REFUSED = "job refused"  # the queue rejects jobs (cupsreject) or lp failed
    PRINTER_STOPPED = "printer stopped"  # the queue is disabled (cupsdisable, or CUPS stopped it on an error)
    TIMEOUT = "timeout"  # the job did not leave the queue in time: cancelled
    NOT_DRAWN = "not drawn"  # the label itself could not be made (no verdict, unreadable folder)


@dataclass(frozen=True)
class PrintResult:
    """The outcome of one print attempt, the CUPS job id when one was made, and why, in one line."""

    outcome: PrintOutcome
    job_id: Optional[str] = None
    detail: str = ""

    @property
    def printed(self) -> bool:
        """True when the label went to the printer."""
        return self.outcome is PrintOutcome.PRINTED


def _run(args: Sequence[str], deadline: float) -> Optional[subprocess.CompletedProcess[str]]:
    """Run one CUPS tool until `deadline` (monotonic); None when it did not answer in time or cannot start."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    env = dict(environment.child_environment(), LC_ALL="C", LANG="C")
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=remaining, env=env,
                              stdin=subprocess.DEVNULL, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return None


def _server_args(server: Optional[str]) -> list[str]:
    return ["-h", server] if server else []


def queue_state(queue: str, server: Optional[str], deadline: float) -> PrintResult:
    """Whether `queue` can take a job now: PRINTED when it can, else why not (lpstat -r, -a, -p)."""
    running = _run(["lpstat", *_server_args(server), "-r"], deadline)
    if running is None:
        return PrintResult(PrintOutcome.UNREACHABLE, detail="lpstat ne répond pas")
    if "not running" in running.stdout or running.returncode != 0:
        return PrintResult(PrintOutcome.UNREACHABLE, detail=(running.stdout + running.stderr).strip())
    state = _run(["lpstat", *_server_args(server), "-a", queue, "-p", queue], deadline)
    if state is None:
        return PrintResult(PrintOutcome.UNREACHABLE, detail="lpstat ne répond pas")
    said = (state.stdout + state.stderr).strip()
    if state.returncode != 0 or "Invalid destination" in said or "does not exist" in said:
        return PrintResult(PrintOutcome.QUEUE_MISSING, detail=said)
    if "not accepting" in said:
        return PrintResult(PrintOutcome.REFUSED, detail=said)
    if re.search(rf"^printer {re.escape(queue)} disabled", state.stdout, re.M):
        return PrintResult(PrintOutcome.PRINTER_STOPPED, detail=said)
    return PrintResult(PrintOutcome.PRINTED)


def submit(pdf: Path, queue: str, *, size_mm: Optional[tuple[float, float]] = None, server: Optional[str] = None,
           timeout_s: float = PRINT_TIMEOUT_S, title: str = "banc-lfp") -> PrintResult:
    """Print `pdf` on the CUPS `queue` and wait until the job leaves it, all within `timeout_s`; never raises.

    `size_mm` (width, height) asks for that media (`-o media=Custom.WxHmm`): a label printer's
    driver otherwise fits the page to its default paper.
    """
    deadline = time.monotonic() + timeout_s
    ready = queue_state(queue, server, deadline)
    if not ready.printed:
        return ready
    options = ["-o", f"media=Custom.{size_mm[0]:g}x{size_mm[1]:g}mm"] if size_mm else []
    sent = _run(["lp", *_server_args(server), "-d", queue, "-t", title, *options, str(pdf)], deadline)
    if sent is None:
        return PrintResult(PrintOutcome.UNREACHABLE, detail="lp ne répond pas")
    found = REQUEST_ID_RE.search(sent.stdout)
    if sent.returncode != 0 or not found:
        # The queue changed between lpstat and lp: ask again what it is now.
        again = queue_state(queue, server, deadline)
        said = (sent.stdout + sent.stderr).strip()
        return PrintResult(again.outcome if not again.printed else PrintOutcome.REFUSED, detail=said)
    job_id = found.group(1)
    while True:
        pending = _run(["lpstat", *_server_args(server), "-o", queue], deadline)
        if pending is not None and pending.returncode == 0 and not re.search(
                rf"^{re.escape(job_id)}\s", pending.stdout, re.M):
            return PrintResult(PrintOutcome.PRINTED, job_id=job_id)
        state = queue_state(queue, server, deadline) if pending is not None else None
        if state is not None and state.outcome in (PrintOutcome.UNREACHABLE, PrintOutcome.QUEUE_MISSING):
            return PrintResult(state.outcome, job_id=job_id, detail=state.detail)  # nothing left to cancel on
        if state is not None and state.outcome is PrintOutcome.PRINTER_STOPPED:
            _cancel(job_id, server)
            return PrintResult(PrintOutcome.PRINTER_STOPPED, job_id=job_id, detail=state.detail)
        if time.monotonic() + POLL_S >= deadline:
            _cancel(job_id, server)
            return PrintResult(PrintOutcome.TIMEOUT, job_id=job_id,
                               detail=f"travail {job_id} encore en file après {timeout_s:g} s : annulé")
        time.sleep(POLL_S)


def _cancel(job_id: str, server: Optional[str]) -> None:
    # Its own short deadline: the attempt's is spent; a job left behind would print twice on a reprint.
    _run(["cancel", *_server_args(server), job_id], time.monotonic() + 5.0)


@dataclass
class RetryPolicy:
    """When a failed label is tried again: after each delay of `delays_s` in turn, then only on demand.

    Pure: time comes from `clock` (monotonic seconds). The kiosk calls failed() after a failure,
    due() on its ticks, succeeded() after a print, and reset() when asked to print again by hand.
    """

    delays_s: tuple[float, ...] = (30.0, 120.0, 600.0)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: int = 0
    next_at_s: Optional[float] = None

    def failed(self) -> Optional[float]:
        """Record a failed attempt; the delay until the next one, or None when it gives up."""
        self.failures += 1
        if self.failures > len(self.delays_s):
            self.next_at_s = None
            return None
        delay = self.delays_s[self.failures - 1]
        self.next_at_s = self.clock() + delay
        return delay

    def due(self) -> bool:
        """True when a retry is scheduled and its time has come."""
        return self.next_at_s is not None and self.clock() >= self.next_at_s

    def succeeded(self) -> None:
        """The label printed: nothing more to try."""
        self.failures = 0
        self.next_at_s = None

    def reset(self) -> None:
        """A reprint asked for by hand: the delays start again from the first."""
        self.succeeded()

    @property
    def gave_up(self) -> bool:
        """True once every delay has been used (the label waits for a reprint by hand)."""
        return self.failures > len(self.delays_s)
