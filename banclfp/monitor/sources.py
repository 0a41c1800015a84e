"""What the monitor reads of the lab's tests: a battery's history, the results, one test's summary, charts, certificate.

Read only. History and results come from the lab database when there is one (banclfp.lab.history,
with its 2 s fallback on this Pi's tests); a test's page reads this Pi's folder with the report's
own loaders (analysis.measures.load_report, charts.chart_data.prepare_plot_data). Another Pi's
test is read from the lab database (`load_lab_test`): its summary fields, its chart rows (one per
5 s) and its certificate, through the same summary and charts. Nothing here opens a file for
writing: the folders belong to banc.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from banclfp.analysis.measures import (
    RESISTANCE_LABELS,
    Report,
    ReportError,
    Resistance,
    Summary,
    TestData,
    compute_summary,
    load_report,
    stop_gap_s,
)
from banclfp.charts.chart_data import PLOT_SERIES, prepare_plot_data
from banclfp.history.index import TestRow
from banclfp.infra.settings import SITE_RE, Settings
from banclfp.lab import history as lab_history, payload
from banclfp.presentation.summary_text import panel_lines
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.verdict import grading
from banclfp.wire import protocol

CHART_BUCKETS = 400  # points per series on a page: enough for a desk, light on a phone


def test_folder(store: Store, banc: str, name: str) -> Optional[Path]:
    """This Pi's test folder `data/BANC/NAME`, None unless both are what they must be (no path from a request)."""
    if not store.is_valid_banc(banc) or record.parse_folder_name(name) is None:
        return None
    folder = store.data_dir / store.normalize_banc(banc) / name
    return folder if folder.is_dir() else None


def local_folder(row_folder: str) -> Optional[tuple[str, str]]:
    """(banc, name) of a history row's folder on this Pi ("banc2/DDMMYYYY-SERIAL"); None for another Pi's."""
    banc, _, name = row_folder.partition("/")
    if ":" in banc or not name or "/" in name:
        return None
    return banc, name


def battery_history(serial: str, settings: Settings) -> tuple[list[TestRow], Optional[str]]:
    """Every test of a battery, newest first, and the note when the lab database did not answer."""
    return lab_history.battery_history(serial, settings)


def results_csv(settings: Settings) -> tuple[str, Optional[str]]:
    """Every test of the lab as CSV (report.py --results' columns) and the fallback note."""
    text, _count, note = lab_history.results_csv(settings)
    return text, note


def load(store: Store, folder: Path, settings: Settings) -> Report:
    """A test folder as the report reads it (ReportError when it cannot be read)."""
    return load_report(folder, store.static.correct_to_25c, settings.bms_timeout_s)


@dataclass(frozen=True)
class Check:
    """One verdict check as a page shows it."""

    text: str
    ok: bool


def verdict_checks(summary: Summary) -> list[Check]:
    """The verdict's checks in the certificate's words (grading.check_text)."""
    verdict = summary.verdict
    return [] if verdict is None else [Check(grading.check_text(check), check.ok) for check in verdict.checks]


def summary_lines(summary: Summary) -> list[tuple[str, str]]:
    """The results panel beside the kiosk's charts: (text, colour) lines."""
    return panel_lines(summary)


def _json_values(values: np.ndarray) -> list[Optional[float]]:
    return [None if not math.isfinite(v) else round(float(v), 4) for v in values]


def chart_json(data: TestData, summary: Summary) -> dict[str, Any]:
    """The charts' data for the page: each series decimated on the test's time axis (stops cut out), its ticks."""
    plot = prepare_plot_data(data, summary, buckets=CHART_BUCKETS)
    series = []
    for name, label, color in PLOT_SERIES:
        x, y = plot.series[name]
        series.append({"name": name, "label": label, "color": color, "x": _json_values(x), "y": _json_values(y)})
    ticks = [{"x": float(x), "label": label.replace("\n", " ")} for x, label in plot.ticks]
    return {"series": series, "ticks": ticks}


def certificate_path(folder: Path) -> Optional[Path]:
    """The test's certificate PDF, None when it has none (not finished, or not written yet)."""
    path = folder / record.CERTIFICATE_FILE
    return path if path.is_file() else None


# =========================================================================== another Pi's test, from the lab

LAB_ROWS_NOTE = "Données de la base du labo : une mesure toutes les 5 s au plus (courbes, durées, capacité comptée)."
UNREACHABLE_NOTE = "Base du labo injoignable (2 s) : réessayez."


class LabUnreachable(Exception):
    """The lab database did not answer within history.LAB_DEADLINE_S (or there is none)."""


@dataclass(frozen=True)
class LabTest:
    """A test of the lab database as its page shows it: the same summary and charts as a folder's."""

    test_id: str
    data: TestData
    summary: Summary
    has_certificate: bool


def lab_test_id(site: str, banc: str, name: str) -> Optional[str]:
    """The lab's id of SITE's test bancN/NAME, None unless all three are what they must be (no text from a request)."""
    try:
        canonical = protocol.banc_id(banc)
    except ValueError:
        return None
    if not SITE_RE.fullmatch(site) or canonical != banc or record.parse_folder_name(name) is None:
        return None
    return payload.test_id(site, f"{banc}/{name}")


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def lab_test_data(rows: list[tuple[Any, ...]]) -> TestData:
    """The lab's chart rows (db.test_rows) as a folder's TestData (pure).

    The lab keeps no seq: kept rows are numbered in order, so the capacity recount
    (record.CapacityCounter) takes two kept rows, at most 10 s apart, as consecutive lines.
    """
    from banclfp.lab.db import LAB_ROW_FIELDS

    unix_s = np.array([row[0] for row in rows], dtype=np.float64)
    columns = {name: np.array([_nan(row[1 + i]) for row in rows], dtype=np.float64)
               for i, name in enumerate(LAB_ROW_FIELDS)}
    columns["step"] = np.nan_to_num(columns["step"], nan=0.0)
    columns["seq"] = np.arange(len(rows), dtype=np.float64)
    return TestData(unix_s=unix_s, columns=columns, notes=[LAB_ROWS_NOTE])


def lab_summary(fields: dict[str, Any], data: TestData, min_gap_s: float) -> Summary:
    """The summary of a lab test from its lab.tests fields (db.test_fields) and rows (pure).

    The Ri/diffusion figures are the lab's, already at 25 °C (the Pi's pulses are not in the lab).
    """
    verdict = record.Verdict.from_json(fields["verdict"]) if fields.get("verdict") is not None else None
    config = record.TestSummary(battery_serial=fields["serial"], banc=fields["banc"], current_step=fields["phase"],
                                first_handle=fields["start"], end_time=fields["end"], status=fields["status"],
                                capacity_ah=fields["capacity_ah"], capacity_wh=fields["capacity_wh"], verdict=verdict)
    summary = compute_summary(data, config, stop_gap_s(data.unix_s, min_gap_s), lambda ohm, _t: ohm)
    resistances = [Resistance(key, RESISTANCE_LABELS.get(key, key), None, fields.get(f"{key}_25c_ohm"), 0)
                   for key in protocol.RI_KEYS]
    return replace(summary, resistances=resistances, ri_temperature_c=None, ri_temperature_range_c=None)


def _ask(settings: Settings, question: Any) -> Any:
    if settings.lab_db is None:
        raise LabUnreachable("pas de base du labo (BANC_LAB_DB)")
    answer = lab_history.ask_lab(settings.lab_db, lambda conn: (question(conn),))
    if answer is None:
        raise LabUnreachable(UNREACHABLE_NOTE)
    return answer[0]


def load_lab_test(settings: Settings, test_id: str) -> Optional[LabTest]:
    """Another Pi's test from the lab database (None when the lab has no such test); LabUnreachable after 2 s."""
    from banclfp.lab import db

    def question(conn: Any) -> Optional[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
        fields = db.test_fields(conn, test_id)
        return None if fields is None else (fields, db.test_rows(conn, test_id))

    answer = _ask(settings, question)
    if answer is None:
        return None
    fields, rows = answer
    data = lab_test_data(rows)
    return LabTest(test_id, data, lab_summary(fields, data, settings.bms_timeout_s), fields["has_certificate"])


def lab_certificate(settings: Settings, test_id: str) -> Optional[bytes]:
    """The certificate PDF the test's Pi sent to the lab, None when there is none; LabUnreachable after 2 s."""
    from banclfp.lab import db

    return _ask(settings, lambda conn: db.certificate(conn, test_id))


__all__ = ["LabTest", "LabUnreachable", "ReportError", "TestRow", "battery_history", "certificate_path", "chart_json",
           "lab_certificate", "lab_summary", "lab_test_data", "lab_test_id", "load", "load_lab_test", "local_folder",
           "results_csv", "summary_lines", "test_folder", "verdict_checks"]
