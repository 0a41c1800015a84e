"""What the monitor reads of the lab's tests: a battery's history, the results, one test's summary, charts, certificate.

Read only. History and results come from the lab database when there is one (banclfp.lab.history,
with its 2 s fallback on this Pi's tests); a test's page reads this Pi's folder with the report's
own loaders (analysis.measures.load_report, charts.chart_data.prepare_plot_data). Nothing here
opens a file for writing: the folders belong to banc.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from banclfp.analysis.measures import Report, ReportError, load_report
from banclfp.charts.chart_data import PLOT_SERIES, prepare_plot_data
from banclfp.history.index import TestRow
from banclfp.infra.settings import Settings
from banclfp.lab import history as lab_history
from banclfp.presentation.summary_text import panel_lines
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.verdict import grading

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


def verdict_checks(report: Report) -> list[Check]:
    """The verdict's checks in the certificate's words (grading.check_text)."""
    verdict = report.summary.verdict
    return [] if verdict is None else [Check(grading.check_text(check), check.ok) for check in verdict.checks]


def summary_lines(report: Report) -> list[tuple[str, str]]:
    """The results panel beside the kiosk's charts: (text, colour) lines."""
    return panel_lines(report.summary)


def _json_values(values: np.ndarray) -> list[Optional[float]]:
    return [None if not math.isfinite(v) else round(float(v), 4) for v in values]


def chart_json(report: Report) -> dict[str, Any]:
    """The charts' data for the page: each series decimated on the report's time axis (stops cut out), its ticks."""
    plot = prepare_plot_data(report.data, report.summary, buckets=CHART_BUCKETS)
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


__all__ = ["ReportError", "TestRow", "battery_history", "certificate_path", "chart_json", "load", "local_folder",
           "results_csv", "summary_lines", "test_folder", "verdict_checks"]
