"""Conclude a finished test (docs/verdict.md): its verdict into the journal and config.json, the index, the certificate.

The edge around grading.py (pure). The verdict is computed from what the folder holds
(data.csv, the journal) and grading.json, appended to the journal (an `verdict` event
after `step 5`, fsynced) and folded into config.json like every journal fact: config.json
can always be rebuilt with it. A crash between step 5 and the verdict leaves a finished
test without one; whoever meets it next (report.py --certificate, the kiosk's retry of
missing certificates) concludes it with the same inputs.

The certificate is written by a separate process (`report.py FOLDER --certificate`) that
banc.py starts and does not wait for: a slow or failing certificate never delays the end
of a test nor touches its verdict; the kiosk retries missing certificates.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from banclfp.analysis import measures as analysis
from banclfp.infra import environment, storage
from banclfp.recording import datafile, record
from banclfp.recording.store import Store
from banclfp.verdict import grading
from banclfp.wire import protocol

logger = logging.getLogger("banc.verdict")

CERTIFICATE_FILE = record.CERTIFICATE_FILE
REPORT_SCRIPT = environment.PROJECT_DIR / "report.py"


class NotFinished(ValueError):
    """The test has not reached step 5: it has no verdict yet."""


class InputUnreadable(OSError):
    """What the verdict needs exists but cannot be read now: nothing is recorded, the conclusion is retried."""


def compute_verdict(store: Store, folder: Path, summary: record.TestSummary) -> record.Verdict:
    """The verdict of a finished test from its folder and the store's grading.json.

    Raises grading.GradingError (invalid grading.json) or InputUnreadable (data.csv or the
    capacity unreadable): a verdict is final once recorded, so a passing read error must never
    become a REJET or a NON CLASSÉ.
    """
    folder = Path(folder)
    rules = store.static.load_grading_rules()
    try:
        data: Optional[analysis.TestData] = analysis.load_test_data(folder)
    except analysis.ReportError as exc:
        if (folder / record.DATA_CSV_FILE).exists():
            raise InputUnreadable(f"{folder / record.DATA_CSV_FILE} : {exc}") from exc
        logger.warning("%s: %s", folder, exc)  # no data.csv at all: nothing measured, the checks say so
        data = None
    if data is None:
        # Nothing measured: no fact of the rows can be checked (protocol v3: À VÉRIFIER, unless a
        # check that needs no row fails).
        facts = grading.TestFacts(cell_spread_mv=None, temperature_max_c=None, doubts=(grading.Doubt(
            f"{record.DATA_CSV_FILE} absent : aucune mesure", (grading.CHECK_SPREAD, grading.CHECK_TEMPERATURE)),))
    else:
        events, _ = record.read_events(folder)  # the ESP's boots, the lines lost, the phases recovered from lines
        facts = analysis.test_facts(data, record.fold_events(events))
        if summary.capacity_ah is None and _measured_a_capacity(data):
            # config.json unreadable or lost (the summary was rebuilt from the journal alone): the
            # capacity the ESP measured is in the rows. Nothing rebuilds config.json of a finished
            # test, so waiting for it would never grade: take the rows' count, as that rebuild would.
            summary = replace(summary, capacity_ah=_recounted_capacity_ah(folder))
    return grading.grade(summary, facts, rules, store.static.correct_to_25c)


def _measured_a_capacity(data: analysis.TestData) -> bool:
    """Whether the rows hold a discharge capacity counted by the ESP (phase 3 and after)."""
    return bool(np.any((data.step >= 3) & (data["capacity_ah"] > 0)))


def _recounted_capacity_ah(folder: Path) -> float:
    """The finished test's capacity from the recount of data.csv (what config.json's rebuild holds); InputUnreadable if none."""
    path = folder / record.DATA_CSV_FILE
    try:
        capacity_ah, _ = datafile.scan_data_csv(path).measured_capacity(protocol.STEP_FINISHED)
    except OSError as exc:
        raise InputUnreadable(f"{path} : {exc}") from exc
    if capacity_ah is None:  # the rows just read show one: a read that went wrong, not a test without capacity
        raise InputUnreadable(f"{path} : capacité mesurée introuvable au recomptage")
    return round(capacity_ah, 4)  # as record.rebuild_summary writes it


def conclude(store: Store, folder: Path, now: Optional[datetime] = None) -> record.Verdict:
    """The verdict of a finished test: the recorded one, else computed and recorded now (journal, config.json, index).

    Raises NotFinished for an unfinished test, grading.GradingError for an invalid
    grading.json or calibration.ConfigFileError for a broken temperature_coefficients.json
    (nothing is recorded: no grade rather than a wrong one), OSError when the journal cannot
    be written.
    """
    folder = Path(folder)
    summary = record.load_summary(folder)
    if not record.summary_finished(summary):
        raise NotFinished(f"{folder} : le test n'est pas terminé (pas d'étape 5)")
    recorded = _journal_verdict(folder)
    if recorded is not None:
        if record.TestSummary.from_json(record.read_summary_file(folder)).verdict != recorded:
            _refresh_config(store, folder)  # a crash came between the journal and config.json
        return recorded
    assert summary is not None
    kept = summary.verdict
    # The journal's verdict line unreadable (a bad sector) while config.json still holds the
    # verdict folded from it: that one was given and is final, whatever grading.json says now.
    computed = kept if kept is not None else compute_verdict(store, folder, summary)
    # Two concluders at once (banc.py and a retry): the second sees the first's verdict.
    with storage.file_lock(folder / record.EVENTS_FILE):
        recorded = _journal_verdict(folder)
        if recorded is None:
            at = now or record.now_local()
            events, _ = record.read_events(folder)
            if not events:
                # A folder of the earlier version (no journal): the verdict needs the finished
                # test it concludes before it, as banc.py would have migrated it.
                counts = datafile.scan_data_csv(folder / record.DATA_CSV_FILE)
                record.append_event(folder, record.migration_event(summary, counts.last_step, at,
                                                                   summary.battery_serial, summary.banc))
            record.append_event(folder, record.VerdictEvent(record.event_time(at), computed))
            recorded = computed
            if computed is kept:
                logger.warning("%s: verdict %s re-journaled from config.json (its journal line was unreadable)",
                               folder, computed.grade)
            else:
                logger.info("%s: verdict %s (%s)", folder, computed.grade, computed.reason)
    _refresh_config(store, folder)
    try:
        store.history.index_folder(folder)
    except Exception as exc:  # the index is a cache of the folders, rebuilt when behind
        logger.warning("history index not updated for %s: %s", folder, exc)
    return recorded


def _refresh_config(store: Store, folder: Path) -> None:
    """config.json brought up to the journal's verdict; a refused write is only logged."""
    try:
        store.refresh_test_config(folder)
    except OSError as exc:  # recorded all the same (the journal is the truth): config.json catches up later
        logger.warning("%s: verdict recorded in the journal, config.json not updated yet: %s", folder, exc)


def _journal_verdict(folder: Path) -> Optional[record.Verdict]:
    events, _ = record.read_events(folder)
    return record.fold_events(events).verdict


def alert_text(result: Optional[record.Verdict]) -> Optional[str]:
    """The alert a concluded test raises on bancX/security: only a verdict À VÉRIFIER has one (no grade: a person must look)."""
    if result is None or result.grade != grading.GRADE_TO_CHECK:
        return None
    doubts = result.reason.removeprefix(grading.TO_CHECK_REASON)
    return f"Test terminé {grading.GRADE_TO_CHECK}, aucune classe attribuée : {doubts}"


def certificate_path(folder: Path) -> Path:
    """Where a test's certificate lives."""
    return Path(folder) / CERTIFICATE_FILE


def start_certificate(folder: Path) -> subprocess.Popen:
    """Start `report.py FOLDER --certificate FOLDER/certificate.pdf` in its own session, without waiting."""
    folder = Path(folder)
    return subprocess.Popen(
        [sys.executable, str(REPORT_SCRIPT), str(folder), "--certificate", str(certificate_path(folder))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, env=environment.child_environment(), cwd=str(REPORT_SCRIPT.parent),
    )
