"""The kiosk's worker thread: every file read or write, lock, fsync and process check of the kiosk happens here.

The Tk thread never waits on the disk: it `submit()`s requests (a scan, a refresh, a chart
opening) and goes on; this thread runs the scan workflow against the files and the
process table, performs its decisions (bancs_config.json, starting or resetting a test),
reads each bench's state every REFRESH_INTERVAL_S, and puts the results on the same
queue the MQTT thread feeds (`queue_messages.CoalescingQueue`), which the Tk thread drains.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Optional, Union

from banclfp.analysis import time_left
from banclfp.history import index as history
from banclfp.infra import environment, settings as settings_module
from banclfp.infra.processes import BancSupervisor
from banclfp.infra.settings import Settings
from banclfp.kiosk.labels import LabelJob, LabelPrinter
from banclfp.kiosk.messages import replay_alerts
from banclfp.kiosk.queue_messages import (
    ChargeProfileLoaded,
    ChargeProfileUnusable,
    JournalAlarm,
    KioskMessage,
    Outcome,
)
from banclfp.kiosk.scan_workflow import Action, BancInfo, Decision, Level, PreviousTest, ScanLookups, ScanWorkflow
from banclfp.kiosk.state import (
    BancSnapshot,
    HistoryEntry,
    ResultView,
    RiView,
    result_view_from_summary,
    ri_view_from_config,
)
from banclfp.presentation.display_colors import MeasureLimits
from banclfp.recording import datafile, record
from banclfp.recording.store import Store, is_valid_serial
from banclfp.verdict import grading
from banclfp.wire import protocol

log = logging.getLogger("banc.ui.worker")

REFRESH_INTERVAL_S = 2.0  # bancs_config.json, running banc.py, exited children
WORKFLOW_TICK_S = 0.5  # scan timeouts
STOP_TIMEOUT_S = 5.0
# A finished test without its certificate: banc.py's report.py child had this long to write it;
# then the worker starts report.py --certificate again (it also records a missing verdict),
# CERTIFICATE_ATTEMPTS times CERTIFICATE_RETRY_S apart, then every CERTIFICATE_SLOW_RETRY_S: a
# grading.json or a disk repaired an hour later still gets its verdict without a kiosk restart.
CERTIFICATE_GRACE_S = 120.0
CERTIFICATE_RETRY_S = 600.0
CERTIFICATE_ATTEMPTS = 3
CERTIFICATE_SLOW_RETRY_S = 3600.0


# =========================================================================== requests (Tk thread -> worker)


@dataclass(frozen=True)
class ScanRequest:
    """A scan typed by the operator (text + Enter)."""

    text: str


@dataclass(frozen=True)
class GraphButtonRequest:
    """The Graphiques button: the same as scanning `graph`."""


@dataclass(frozen=True)
class OpenGraphRequest:
    """Open the charts of a bench's test (its title touched)."""

    banc: str


@dataclass(frozen=True)
class RefreshRequest:
    """Read a bench's state again now; `reload_ri` re-reads its Ri/diffusion (step 2 seen on MQTT)."""

    banc: str
    reload_ri: bool = False


Request = Union[ScanRequest, GraphButtonRequest, OpenGraphRequest, RefreshRequest]
# Requests the operator waits an answer for: each gets exactly one Outcome with answers_scan set.
_ANSWERED = frozenset(cls.__name__ for cls in (ScanRequest, GraphButtonRequest, OpenGraphRequest))


def real_lookups(store: Store, is_running: Callable[[str], bool], settings: Optional[Settings] = None) -> ScanLookups:
    """The scan workflow's lookups, backed by the store's files and the supervisor's process checks.

    With a lab database (`settings.lab_db`), a battery's latest finished test is the lab's: a
    test finished on another Pi counts for the 48 business hours; when the database does not
    answer within 2 s, this Pi's tests answer and the decision says so (`lab_note`).
    """
    notes: dict[str, Optional[str]] = {}

    def banc_info(banc: str) -> BancInfo:
        entry = store.get_banc_info(banc)
        return BancInfo(occupied=entry.occupied, serial_pending=entry.serial_pending, current_step=entry.current_step)

    def latest(serial: str) -> Optional[PreviousTest]:
        test = store.latest_test(serial)
        local = None if test is None else PreviousTest(
            banc=test.banc, finished=test.finished, last_activity=test.last_activity,
            current_step=test.config.current_step if test.config is not None else None, first_day=test.day,
        )
        if settings is None or settings.lab_db is None:
            return local
        from banclfp.lab import history as lab_history  # psycopg only for a Pi of a lab

        found, notes[serial] = lab_history.latest_finished(serial, settings)
        site, _, where = found.where.rpartition(":") if found is not None else ("", "", "")
        if found is None or not site or site == settings.lab_site:
            return local  # this Pi's own test (sent to the lab or not): the folder says more
        if local is not None and local.last_activity is not None and local.last_activity >= found.ended:
            return local
        return PreviousTest(banc=where.split("/")[0], finished=True, last_activity=found.ended,
                            where=f"{site} : {where}")

    return ScanLookups(
        is_banc_running=is_running,
        banc_info=banc_info,
        banc_for_serial=lambda serial: store.get_banc_for_serial(serial),
        latest_test=latest,
        lab_note=lambda serial: notes.pop(serial, None),
    )


def ri_view_of_test(store: Store, serial: str, banc: str) -> Optional[RiView]:
    """Ri and diffusion (at 25 °C) of the bench's test of this battery, from its config.json."""
    if not is_valid_serial(serial):
        return None
    test = store.latest_test(serial, banc)
    if test is None or test.config is None:
        return None
    try:
        return ri_view_from_config(test.config, store.static.correct_to_25c)
    except (environment.ConfigFileError, ValueError) as exc:
        # A raw value under a "25 °C" label would be a wrong number: unknown ("—") until the coefficients are fixed.
        log.error("cannot bring Ri/diffusion to 25 °C: %s", exc)
        return RiView()


_ROW_MEASURES = ("voltage_v", "current_a", "soc_pct", "temperature_c", "capacity_ah", "energy_wh", "cell_min_mv",
                 "cell_max_mv")  # the BMS fields after seq, before balancing, in order


class TestFolderReader:
    """What a running test's folder tells its time left (time_left.Progress), read a little at a time (worker only).

    The journal is read again when it changed (size, mtime): the running phase and when it
    started. data.csv is read on from where the last read stopped, whole rows only, into a
    time_left.ChargeFactsReader, until the charge's facts are final (its first row of phase 3):
    a few rows per refresh while a test charges, nothing after.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._journal_stamp: Optional[tuple[int, int]] = None
        self._phase: tuple[Optional[int], Optional[float]] = (None, None)
        self._rows = datafile.DataFollower(folder / record.DATA_CSV_FILE)
        self._facts = time_left.ChargeFactsReader()

    def read(self, capacity_ah: Optional[float] = None) -> time_left.Progress:
        """The folder's news: the phase and its start, the charge's facts (`capacity_ah`: the battery model's)."""
        self._read_journal()
        if not self._facts.final:
            self._read_rows()
        step, start = self._phase
        return time_left.Progress(step, start, self._facts.facts, capacity_ah)

    def _read_journal(self) -> None:
        try:
            stat = (self.folder / record.EVENTS_FILE).stat()
        except OSError:
            return
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp == self._journal_stamp:
            return
        self._journal_stamp = stamp
        step, start = time_left.phase_start(record.read_events(self.folder)[0])
        moment = record.parse_time(start)
        self._phase = (step, None if moment is None else moment.timestamp())

    def _restart_facts(self) -> None:
        self._facts = time_left.ChargeFactsReader()

    def _read_rows(self) -> None:
        try:
            for rows in self._rows.read_on(on_rewind=self._restart_facts):
                for row in rows:
                    self._feed(row)
                if self._facts.final:
                    return
        except OSError as exc:
            log.debug("time left: %s unreadable: %s", self.folder / record.DATA_CSV_FILE, exc)

    def _feed(self, row: bytes) -> None:
        parts = row.rstrip(b"\r").split(b",")
        if len(parts) not in record.DATA_CSV_WIDTHS or parts[0] == b"timestamp":
            return
        column = record.DATA_COLUMN
        try:
            step = int(parts[column["step"]])
            v = [float(parts[column[name]]) for name in _ROW_MEASURES]
            line = protocol.BmsLine(int(parts[column["seq"]]), v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], 0)
        except (ValueError, TypeError):
            return
        self._facts.feed(step, line)


class KioskWorker:
    """One thread that owns the scan workflow, the banc.py supervisor and every read of the lab's files."""

    def __init__(
        self, store: Store, bancs: list[str], workflow: ScanWorkflow, supervisor: BancSupervisor,
        sink: queue.Queue[KioskMessage], *,
        now: Callable[[], datetime] = record.now_local, clock: Callable[[], float] = time.monotonic,
        refresh_interval_s: float = REFRESH_INTERVAL_S, tick_interval_s: float = WORKFLOW_TICK_S,
        bms_timeout_s: float = settings_module.BMS_TIMEOUT_S, settings: Optional[Settings] = None,
        labels: Optional[LabelPrinter] = None,
    ) -> None:
        self.store = store
        self.settings = settings  # the lab database (history, 48 h) and the label printer, when set
        self.labels = labels  # None: no BANC_LABEL_PRINTER, labels are only written by report.py --label
        self._labels_seen: set[Path] = set()  # folders whose verdict was seen: a label is printed once, when it comes
        self._labels_armed = False  # the verdicts already there when the kiosk starts are not printed again
        self.history_note: Optional[str] = None  # the lab database did not answer the last history: said with it
        self.bms_timeout_s = bms_timeout_s  # the charts draw a silence this long as a stop
        self.bancs = list(bancs)
        self.workflow = workflow
        self.supervisor = supervisor
        self.sink = sink
        self.now = now
        self.clock = clock
        self.refresh_interval_s = refresh_interval_s
        self.tick_interval_s = tick_interval_s
        self.requests: queue.Queue[Optional[Request]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kiosk-worker", daemon=True)
        self._folder_readers: dict[str, TestFolderReader] = {}  # bench -> its running test's folder, for its time left
        self._capacities: dict[str, Optional[float]] = {}  # serial -> its grading model's nominal capacity
        self._posted: dict[str, BancSnapshot] = {}
        self._ri_for: dict[str, Optional[str]] = {}
        self._unfinished_cache: dict[str, tuple[Optional[str], bool]] = {}  # bench -> (serial, unfinished)
        self._latest_cache: dict[str, tuple[int, Optional[Path]]] = {}  # bench -> (its folder's mtime, latest test)
        self._results: dict[str, tuple[Path, Optional[ResultView]]] = {}
        self._certificate_tries: dict[Path, tuple[int, float]] = {}  # folder -> (attempts, last attempt)
        self._certificate_children: list[subprocess.Popen[bytes]] = []
        self._rules: Optional[tuple[tuple[str, int], Optional[grading.Rules]]] = None  # grading.json, by its mtime

    # ------------------------------------------------------------------ Tk thread side

    def start(self) -> None:
        """Start the thread: it reads every bench's state at once, then every refresh interval."""
        self._thread.start()

    def submit(self, request: Request) -> None:
        """Hand a request to the worker (never blocks)."""
        self.requests.put(request)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the thread to finish what it does and wait for it (bounded)."""
        self.requests.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        self._safely("calibration", self._load_calibration)
        self._safely("refresh", self.refresh_all)
        self._safely("journal alarms", self.replay_journals)
        self._labels_armed = True
        next_refresh = self.clock() + self.refresh_interval_s
        next_tick = self.clock() + self.tick_interval_s
        while True:
            wait_s = max(0.0, min(next_refresh, next_tick) - self.clock())
            try:
                request = self.requests.get(timeout=wait_s)
            except queue.Empty:
                pass
            else:
                if request is None:  # stop()
                    return
                self._safely(type(request).__name__, functools.partial(self.handle, request))
            moment = self.clock()
            if moment >= next_tick:
                next_tick = moment + self.tick_interval_s
                self._safely("workflow tick", self._tick)
            if moment >= next_refresh:
                next_refresh = moment + self.refresh_interval_s
                self._safely("refresh", self.refresh_all)

    def _safely(self, what: str, job: Callable[[], None]) -> None:
        # One failing request (an unreadable file, a full disk) must neither kill the thread nor go unsaid.
        try:
            job()
        except Exception as exc:
            log.exception("kiosk worker: %s", what)
            self._post_outcome(Outcome(Action.NONE, f"Erreur interne : {exc}. Réessayez.", Level.ALARM.value,
                                       answers_scan=what in _ANSWERED, prompt=self.workflow.prompt()))

    def _post_outcome(self, outcome: Outcome) -> None:
        if not outcome.prompt:
            outcome = dataclasses.replace(outcome, prompt=self.workflow.prompt())
        self.sink.put(outcome)

    def _load_calibration(self) -> None:
        # Loaded (and cached by utils) here so that the Tk thread's time-left estimates never read the file.
        try:
            self.store.static.get_charge_duration(50.0)
        except environment.ConfigFileError as exc:
            log.error("charge profile unusable: %s", exc)
            self.sink.put(ChargeProfileUnusable(str(exc)))
            return
        self.sink.put(ChargeProfileLoaded(self.store.static.get_charge_duration))

    def _tick(self) -> None:
        decision = self.workflow.tick(self.clock())
        if decision is not None:
            self._post_outcome(Outcome(decision.action, decision.message, decision.level.value, banc=decision.banc,
                                       answers_scan=False, prompt=self.workflow.prompt()))

    def handle(self, request: Request) -> None:
        """Serve one request from the Tk thread (run on the worker thread)."""
        if isinstance(request, ScanRequest):
            decision = self.workflow.handle(request.text, self.now(), self.clock())
            log.info("scan %r -> %s %s", request.text[:60], decision.action.value, decision.message)
            outcome = self.perform(decision)
            if decision.banc and self._known(decision.banc):
                # The bench's state first: the Tk thread ties the answer to the state it describes.
                self.refresh(decision.banc, force=True)
            self._post_outcome(outcome)
        elif isinstance(request, GraphButtonRequest):
            self._post_outcome(self.perform(self.workflow.begin_graph(self.now(), self.clock())))
        elif isinstance(request, OpenGraphRequest):
            label = protocol.banc_number(request.banc)
            decision = Decision(Action.GRAPH, f"Graphiques du banc {label}", Level.INFO, banc=request.banc)
            self._post_outcome(self.perform(decision))
        elif isinstance(request, RefreshRequest):
            self.refresh(request.banc, force=True, reload_ri=request.reload_ri)

    # ------------------------------------------------------------------ decisions

    def _known(self, banc: str) -> bool:
        return banc in self.bancs

    def perform(self, decision: Decision) -> Outcome:
        """The side effects of a workflow decision that touch files or processes; the rest is for the Tk thread."""
        plain = Outcome(decision.action, decision.message, decision.level.value, banc=decision.banc,
                        serial=decision.serial, start_step=decision.start_step)
        if decision.action is Action.START:
            assert decision.banc and decision.serial
            return self._start_test(plain, decision.banc, decision.serial, decision.start_step or 1)
        if decision.action is Action.RESET:
            assert decision.banc
            return self._reset(plain, decision.banc)
        if decision.action is Action.GRAPH:
            return self._graph(plain, decision.banc, decision.serial)
        if decision.action is Action.LABEL:
            return self._label(plain, decision.banc, decision.serial)
        return plain

    def _error(self, outcome: Outcome, message: str, level: Level = Level.ALARM) -> Outcome:
        """The decision could not be performed: an alarm (a file, a process failed), or a refusal."""
        return Outcome(outcome.action, message, level.value, banc=outcome.banc, serial=outcome.serial)

    def _start_test(self, outcome: Outcome, banc: str, serial: str, start_step: int) -> Outcome:
        """Seed §2 success: bancs_config occupied, then banc.py started in its own session."""
        if not is_valid_serial(serial):  # never let a bad serial reach a command line
            return self._error(outcome, f"Numéro de série invalide : {serial!r}")
        try:
            self.store.set_banc_status(banc, record.STATUS_OCCUPIED, serial, start_step)
        except (OSError, ValueError) as exc:
            log.error("cannot mark %s occupied: %s", banc, exc)
            return self._error(outcome, f"Impossible d'écrire bancs_config.json : {exc}")
        try:
            self.supervisor.spawn(banc, serial)
        except OSError as exc:
            log.error("cannot start banc.py for %s: %s", banc, exc)
            return self._error(outcome, f"Impossible de lancer l'enregistrement du test (banc.py) : {exc}")
        self._ri_for.pop(banc, None)
        return Outcome(outcome.action, outcome.message, outcome.level, banc=banc, serial=serial,
                       start_step=start_step, done=True)

    def _reset(self, outcome: Outcome, banc: str) -> Outcome:
        """Clear a bench in bancs_config.json (the workflow refused it while its banc.py runs)."""
        if self.supervisor.is_running(banc):
            return self._error(outcome, f"Reset refusé : un test tourne sur le banc {protocol.banc_number(banc)}.",
                               Level.ERROR)
        try:
            self.store.abandon_banc(banc, self.now())
        except (OSError, ValueError) as exc:
            return self._error(outcome, f"Reset impossible : {exc}")
        log.info("%s reset by the operator", banc)
        self._ri_for.pop(banc, None)
        return Outcome(outcome.action, outcome.message, outcome.level, banc=banc, done=True)

    def resolve_test_folder(self, banc: Optional[str] = None, serial: Optional[str] = None) -> Optional[Path]:
        """The test folder of a serial (its latest test) or of a bench (its current, else its latest)."""
        if serial:
            return self.store.find_battery_folder(serial)
        if banc is None:
            return None
        current = self._posted.get(banc)
        if current is not None and current.serial and is_valid_serial(current.serial):
            test = self.store.latest_test(current.serial, banc)
            if test is not None:
                return test.path
        folders = self.store.list_test_folders(banc=banc)
        return folders[-1].path if folders else None

    def _graph(self, outcome: Outcome, banc: Optional[str], serial: Optional[str]) -> Outcome:
        """Find the test to chart and the report's show_charts (imported here: an import reads files)."""
        target = serial or (f"banc {protocol.banc_number(banc)}" if banc else "?")
        folder = self.resolve_test_folder(banc, serial)
        if folder is None:
            return self._error(outcome, f"Aucun test trouvé pour {target}.", Level.ERROR)
        try:
            report = importlib.import_module("banclfp.reporting.report")
        except Exception as exc:  # report.py missing or broken: the kiosk goes on
            log.warning("report module unavailable: %s", exc)
            report = None
        show_charts = getattr(report, "show_charts", None)
        if not callable(show_charts):
            return self._error(outcome, "Graphiques non disponibles (module report absent).")
        show_charts = functools.partial(show_charts, store=self.store, min_gap_s=self.bms_timeout_s)
        if serial:
            entries = self.history_of(serial)
            if entries:
                count = f"{len(entries)} test{'s' if len(entries) > 1 else ''}"
                said = f" ({self.history_note})" if self.history_note else ""
                return Outcome(Action.GRAPH, f"Historique de {serial} : {count}. Touchez un test pour "
                               f"voir ses graphiques.{said}", Level.INFO.value, banc=banc, serial=serial, done=True, folder=folder,
                               show_charts=show_charts, history=entries)
        return Outcome(Action.GRAPH, f"Graphiques de {target} ({folder.name}).", Level.INFO.value, banc=banc,
                       serial=serial, done=True, folder=folder, show_charts=show_charts)

    def _label(self, outcome: Outcome, banc: Optional[str], serial: Optional[str]) -> Outcome:
        """A `label` scan: the test's label goes to the printer thread (its outcome comes later, on its own)."""
        target = serial or (f"banc {protocol.banc_number(banc)}" if banc else "?")
        if self.labels is None:
            return self._error(outcome, "Aucune imprimante d'étiquettes configurée (BANC_LABEL_PRINTER) : "
                               "étiquette non imprimée.", Level.ERROR)
        folder = self.resolve_test_folder(banc, serial)
        summary = record.load_summary(folder) if folder is not None else None
        if folder is None or summary is None:
            return self._error(outcome, f"Aucun test trouvé pour {target} : étiquette non imprimée.", Level.ERROR)
        if summary.verdict is None:
            return self._error(outcome, f"Le test de {summary.battery_serial or target} n'a pas encore de verdict : "
                               "pas d'étiquette.", Level.ERROR)
        test_banc = summary.banc or banc or ""
        self.labels.submit(LabelJob(test_banc, summary.battery_serial or target, folder, by_hand=True))
        return Outcome(Action.LABEL, f"Étiquette de {summary.battery_serial or target} envoyée à l'imprimante…",
                       Level.INFO.value, banc=banc, serial=serial, done=True, folder=folder)

    def history_of(self, serial: str) -> tuple[HistoryEntry, ...]:
        """Every test of a battery, newest first: the lab's with a lab database, else this Pi's history index."""
        self.history_note = None
        try:
            if self.settings is not None and self.settings.lab_db is not None:
                from banclfp.lab import history as lab_history  # psycopg only for a Pi of a lab

                rows, self.history_note = lab_history.battery_history(serial, self.settings)
            else:
                rows = self.store.history.battery_history(serial)
        except (OSError, history.sqlite3.Error) as exc:
            log.error("history of %s unavailable: %s", serial, exc)
            return ()
        root = self.store.data_dir
        own = self.settings.lab_site if self.settings is not None else None
        entries = []
        for row in rows:
            site, _, folder = row.folder.rpartition(":")  # "SITE:bancN/..." from the lab database
            local = not site or site == own
            entries.append(HistoryEntry(root / folder if local else Path(folder), row.banc, row.start, row.status,
                                        row.grade, row.soh_pct, row.capacity_ah, site=None if local else site))
        return tuple(entries)

    # ------------------------------------------------------------------ bench state

    def _unfinished(self, banc: str, serial: Optional[str]) -> bool:
        # Asked while banc.py is not running: its folders are read again only when the serial changed,
        # or after banc.py was seen running (snapshot drops the entry: the test may have gone on, even finished).
        cached = self._unfinished_cache.get(banc)
        if cached is not None and cached[0] == serial:
            return cached[1]
        test = self.store.latest_test(serial, banc) if serial and is_valid_serial(serial) else None
        # No folder yet (banc.py died before creating it) still means "to resume".
        unfinished = test is None or not test.finished
        self._unfinished_cache[banc] = (serial, unfinished)
        return unfinished

    def snapshot(self, banc: str, entry: Optional[record.BenchEntry], reload_ri: bool = False) -> BancSnapshot:
        """Read one bench's state: its bancs_config entry (None: the file has none), its banc.py, its test folder."""
        occupied = entry is not None and entry.occupied
        serial = entry.serial_pending if entry is not None and occupied else None
        step = entry.current_step if entry is not None else None
        running = self.supervisor.is_running(banc)
        if running:
            self._unfinished_cache.pop(banc, None)
        unfinished = occupied and not running and self._unfinished(banc, serial)
        ri_view = None
        result = None if occupied else self._result(banc)
        # The panel shows Ri/diffusion from step 2 on (docs/kiosque.md, « Un panneau par banc »): read once per test, and again on request.
        if occupied and serial and (reload_ri or ((step or 0) >= 2 and self._ri_for.get(banc) != serial)):
            ri_view = ri_view_of_test(self.store, serial, banc)
            self._ri_for[banc] = serial
        return BancSnapshot(banc, occupied, serial, step, running, unfinished, ri_view, result,
                            self.limits_for(serial))

    def limits_for(self, serial: Optional[str]) -> Optional[MeasureLimits]:
        """The grading model's limits for a battery (the panel colours its spread and temperature by them).

        grading.json is read again only when it changed (the lab may edit it between tests); without
        a valid file or a model for the serial, None: the panel keeps its default thresholds.
        """
        if not serial:
            return None
        path = self.store.static.static_file(grading.GRADING_FILE)
        try:
            stamp: tuple[str, int] = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return None
        if self._rules is None or self._rules[0] != stamp:
            try:
                rules: Optional[grading.Rules] = self.store.static.load_grading_rules()
            except grading.GradingError as exc:
                log.warning("colours without a grading model: %s", exc)
                rules = None
            self._rules = (stamp, rules)
        model = self._rules[1].model_for(serial) if self._rules[1] is not None else None
        return None if model is None else MeasureLimits(model.cell_spread_max_mv, model.temperature_max_c)

    # ------------------------------------------------------------------ results and certificates

    def latest_folder(self, banc: str) -> Optional[Path]:
        """The bench's most recent test folder (by name: date, then rank), re-listed only when the bench folder changed."""
        bench_dir = self.store.data_dir / banc
        try:
            mtime = bench_dir.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._latest_cache.get(banc)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        best: Optional[tuple[tuple[date, int, int], Path]] = None  # ((day, rank, mtime), folder)
        with os.scandir(bench_dir) as entries:
            for entry in entries:
                name = record.parse_folder_name(entry.name)
                if name is None or not entry.is_dir():
                    continue
                key = (name.day, name.index, entry.stat().st_mtime_ns)
                if best is None or key > best[0]:
                    best = (key, Path(entry.path))
        latest = best[1] if best else None
        self._latest_cache[banc] = (mtime, latest)
        return latest

    def _result(self, banc: str) -> Optional[ResultView]:
        """The result card of a free bench: its last test's verdict when that test is finished."""
        folder = self.latest_folder(banc)
        if folder is None:
            return None
        cached = self._results.get(banc)
        if cached is not None and cached[0] == folder and cached[1] is not None and cached[1].grade and cached[1].certificate:
            return cached[1]  # concluded for good: nothing more to read
        certificate = (folder / record.CERTIFICATE_FILE).exists()
        view = result_view_from_summary(record.load_summary(folder), certificate, self.store.static.correct_to_25c)
        self._results[banc] = (folder, view)
        if view is not None and view.grade and folder not in self._labels_seen:
            self._labels_seen.add(folder)
            if self.labels is not None and self._labels_armed:  # a verdict given while the kiosk runs
                self.labels.submit(LabelJob(banc, view.serial, folder))
        if view is not None and not certificate:
            self._retry_certificate(folder)
        return view

    def _retry_certificate(self, folder: Path) -> None:
        """Start report.py --certificate for a finished test that still lacks it, after banc.py's own attempt."""
        self._certificate_children = [child for child in self._certificate_children if child.poll() is None]
        try:
            age_s = time.time() - (folder / record.EVENTS_FILE).stat().st_mtime
        except OSError:
            return
        attempts, last = self._certificate_tries.get(folder, (0, float("-inf")))
        now = self.clock()
        interval_s = CERTIFICATE_RETRY_S if attempts < CERTIFICATE_ATTEMPTS else CERTIFICATE_SLOW_RETRY_S
        if age_s < CERTIFICATE_GRACE_S or now - last < interval_s:
            return
        self._certificate_tries[folder] = (attempts + 1, now)
        from banclfp.verdict import (
            conclude as verdict,  # numpy and matplotlib behind it: only when a certificate is missing
        )

        try:
            self._certificate_children.append(verdict.start_certificate(folder))
        except OSError as exc:
            log.error("certificate of %s not started: %s", folder, exc)
            return
        log.warning("certificate of %s missing: report.py --certificate started (attempt %d)", folder, attempts + 1)

    def progress_of(self, banc: str, serial: str) -> Optional[time_left.Progress]:
        """What a running test's folder tells its time left (the bench's latest folder, if it is this battery's)."""
        folder = self.latest_folder(banc)
        name = None if folder is None else record.parse_folder_name(folder.name)
        if folder is None or name is None or not record.same_serial(name.serial, serial):
            self._folder_readers.pop(banc, None)
            return None
        reader = self._folder_readers.get(banc)
        if reader is None or reader.folder != folder:
            reader = self._folder_readers[banc] = TestFolderReader(folder)
        if serial not in self._capacities:
            try:
                model = self.store.static.load_grading_rules().model_for(serial)
            except (OSError, ValueError) as exc:  # grading.GradingError is a ValueError
                log.warning("time left without a grading model for %s: %s", serial, exc)
                model = None
            self._capacities[serial] = None if model is None else model.nominal_capacity_ah
        return reader.read(self._capacities[serial])

    def _post_snapshot(self, snapshot: BancSnapshot, force: bool) -> None:
        if snapshot.running and snapshot.occupied and snapshot.serial and is_valid_serial(snapshot.serial):
            snapshot = dataclasses.replace(snapshot, progress=self.progress_of(snapshot.banc, snapshot.serial))
        # Unchanged states are not sent: 16 benches every 2 s would otherwise redraw for nothing.
        if force or snapshot.ri_view is not None or self._posted.get(snapshot.banc) != snapshot:
            self._posted[snapshot.banc] = snapshot
            self.sink.put(snapshot)

    def _entries(self) -> dict[str, record.BenchEntry]:
        entries = {}
        for entry in self.store.load_bancs_config().bancs:
            try:
                entries[entry.banc] = entry
            except ValueError:
                continue
        return entries

    def refresh(self, banc: str, force: bool = False, reload_ri: bool = False) -> None:
        """Read one bench's state and hand it to the Tk thread."""
        self._post_snapshot(self.snapshot(banc, self._entries().get(banc), reload_ri), force)

    def refresh_all(self) -> None:
        """Reap exited children, read every bench's state (bancs_config.json once), then report early exits."""
        failed = [ended for ended in self.supervisor.reap() if ended.early]
        entries = self._entries()
        for banc in self.bancs:
            try:
                self._post_snapshot(self.snapshot(banc, entries.get(banc)), force=False)
            except Exception:
                log.exception("refresh %s", banc)
        # After the snapshots: an alarm describes the bench's state when it is shown. Posted before the
        # snapshot saying its banc.py no longer runs, it was withdrawn by that snapshot in the same tick, unseen.
        for ended in failed:
            self._post_outcome(Outcome(
                Action.NONE, f"Banc {protocol.banc_number(ended.banc)} : l'enregistrement du test s'est arrêté "
                f"aussitôt après son lancement (banc.py, code {ended.code}) : voir logs.log.", Level.ALARM.value, banc=ended.banc, answers_scan=False))

    def replay_journals(self) -> None:
        """At start, after the first snapshots: the alarms still active in the journals of the tests under way.

        banc.py writes every bancX/security text into its test's journal; a kiosk that was not running
        when an alarm came (or whose session the broker lost) shows it from there, through the rules the
        panel applies live (kiosk_messages.replay_alerts).
        """
        for banc in self.bancs:
            snapshot = self._posted.get(banc)
            if snapshot is None or not snapshot.occupied or not (snapshot.running or snapshot.unfinished):
                continue
            if not snapshot.serial or not is_valid_serial(snapshot.serial):
                continue
            test = self.store.latest_test(snapshot.serial, banc)
            if test is None:
                continue
            events, _ = record.read_events(test.path)
            alarm = replay_alerts((event.kind, event.text if isinstance(event, record.AlertEvent) else None)
                                  for event in events)
            if alarm is not None:
                log.info("%s: alarm still active in the journal of %s: %s", banc, test.path.name, alarm.text)
                self.sink.put(JournalAlarm(banc, alarm))
