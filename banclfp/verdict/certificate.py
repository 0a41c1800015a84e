"""The certificate of a finished test (the README's verdict section): an A4 PDF in French, the grade in large type, the charts, a QR code.

Page 1: who and what (serial, model, bench, dates), the grade and SOH, the measured values
at 25 °C, every check with its value and limit, the versions, the SHA-256 of data.csv and a
QR code holding serial, grade, SOH and that hash. Page 2: the charts (charts.draw_figure).
matplotlib writes the PDF (imported lazily); segno draws the QR code.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any, Optional

import numpy as np

from banclfp.analysis.measures import Report
from banclfp.charts.chart_data import prepare_plot_data
from banclfp.charts.figure import draw_figure
from banclfp.infra import storage
from banclfp.presentation.formatting import GRADE_COLORS, darker, format_milliohm, format_number, grade_color
from banclfp.presentation.summary_text import format_time, test_span
from banclfp.recording import record
from banclfp.verdict import grading

A4_PORTRAIT_IN = (8.27, 11.69)
A4_LANDSCAPE_IN = (11.69, 8.27)
TEXT = "#212121"
# The grades' colours (formatting.GRADE_COLORS), so the page matches the kiosk's card.
GREY = GRADE_COLORS[grading.GRADE_UNCLASSIFIED]
OK_COLOR = GRADE_COLORS["A"]  # "conforme": the best grade's green
FAIL_COLOR = GRADE_COLORS[grading.GRADE_REJECT]
TO_CHECK_COLOR = GRADE_COLORS[grading.GRADE_TO_CHECK]
TO_CHECK_NOTICE = ("Aucune classe n'est attribuée à cette batterie tant qu'une personne n'a pas vérifié "
                   "les données du test.")
"""What a certificate À VÉRIFIER says beneath its reason (protocol v3)."""
MOTIF_CHARS_PER_LINE = 100  # 10 pt across the page's text width


def data_sha256(folder: Path) -> str:
    """SHA-256 (hex) of the test's data.csv, read by chunks."""
    digest = hashlib.sha256()
    with open(Path(folder) / record.DATA_CSV_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def qr_payload(serial: str, grade: str, soh_pct: Optional[float], sha256: str) -> str:
    """What the QR code holds: one `key=value` per line (serial, grade, SOH with a decimal point, hash)."""
    soh = "" if soh_pct is None else f"{soh_pct:.1f}"
    return f"serial={serial}\ngrade={grade}\nsoh_pct={soh}\nsha256={sha256}"


def qr_matrix(payload: str) -> np.ndarray:
    """The QR code of `payload` as a boolean matrix (True = dark), quiet zone included."""
    import segno

    # UTF-8 ("NON CLASSÉ"): in QR's default Latin-1 readers such as zbar guess Shift-JIS and show "ﾉ".
    code = segno.make_qr(payload, error="m", encoding="utf-8")
    return np.array([[bool(cell) for cell in row] for row in code.matrix_iter(border=4)], dtype=bool)


def _resistance_lines(report: Report, verdict: record.Verdict) -> list[tuple[str, str]]:
    # Ri décharge at 25 °C is the graded one (frozen in the verdict, as history.py and the kiosk
    # show it): corrected again with today's coefficients it could contradict its check below.
    graded_check = verdict.check(grading.CHECK_RI)
    graded = graded_check.value if graded_check is not None else None
    lines = []
    for resistance in report.summary.resistances:
        at_25c = resistance.at_25c_ohm
        if resistance.key == grading.CHECK_RI and graded is not None:
            at_25c = float(graded)
        value = at_25c if at_25c is not None else resistance.raw_ohm
        shown = format_milliohm(value, "mΩ")
        if at_25c is None and resistance.raw_ohm is not None:
            shown += " (non corrigée)"
        lines.append((f"{resistance.label} à 25 °C", shown))
    return lines


def _verdict_of(report: Report) -> record.Verdict:
    verdict = report.config.verdict
    if verdict is None:
        raise ValueError("le test n'a pas de verdict : certificat impossible")
    return verdict


def draw_first_page(figure: Any, report: Report, sha256: str, software_version: str) -> None:
    """Page 1 of the certificate on an A4 portrait figure."""
    verdict = _verdict_of(report)
    summary = report.summary
    grade = verdict.grade
    color = grade_color(grade)
    figure.set_facecolor("white")
    text = figure.text

    text(0.07, 0.955, "Certificat de test de batterie LFP", fontsize=20, fontweight="bold", color=TEXT)
    text(0.07, 0.932, "Banc de test LFP — capacité, résistance interne, équilibre des cellules",
         fontsize=9.5, color=GREY)

    # The grade, large and in its colour, and the SOH beneath it.
    box = figure.add_axes((0.62, 0.745, 0.31, 0.17))
    box.set_axis_off()
    box.add_patch(_rounded_box(box, color))
    text_size = 64 if len(grade) <= 2 else 30 if len(grade) <= 5 else 20  # "NON CLASSÉ" fits the box
    if grade == grading.GRADE_TO_CHECK:
        text_size = 25  # as large as the box takes it: the first thing read
    box.text(0.5, 0.60, grade, ha="center", va="center", fontsize=text_size, fontweight="bold", color="white",
             transform=box.transAxes)
    soh = verdict.soh_pct
    box.text(0.5, 0.17, f"SOH {format_number(soh, grading.SOH_DECIMALS, '%')}", ha="center", va="center",
             fontsize=17, fontweight="bold", color="white", transform=box.transAxes)
    to_check = grade == grading.GRADE_TO_CHECK
    if to_check:
        text(0.775, 0.728, "aucune classe avant vérification", ha="center", fontsize=9.5, fontweight="bold",
             color=darker(color))

    identity = [
        ("Numéro de série", summary.serial),
        ("Modèle", verdict.model or "—"),
        ("Banc", summary.banc),
        ("Début du test", format_time(test_span(summary)[0])),
        ("Fin du test", format_time(test_span(summary)[1])),
    ]
    y = _table(figure, 0.07, 0.885, identity, size=11.5, key_width=0.20)

    y -= 0.03
    text(0.07, y, "Mesures", fontsize=13, fontweight="bold", color=TEXT)
    capacity = summary.esp_capacity_ah
    measures = [
        ("Capacité mesurée", f"{format_number(capacity, 2, 'Ah')}   ({format_number(summary.esp_capacity_wh, 0, 'Wh')})"),
        *_resistance_lines(report, verdict),
    ]
    y = _table(figure, 0.07, y - 0.03, measures, size=11, key_width=0.30)

    y -= 0.03
    text(0.07, y, "Contrôles", fontsize=13, fontweight="bold", color=TEXT)
    y -= 0.032
    for label, x in (("contrôle", 0.07), ("valeur", 0.50), ("limite", 0.65), ("résultat", 0.80)):
        text(x, y, label, fontsize=9.5, color=GREY)
    if not verdict.checks:
        y -= 0.027
        text(0.07, y, "aucun contrôle : le test n'a pas pu être classé (voir le motif)", fontsize=11, color=GREY)
    for check in verdict.checks:
        y -= 0.027
        name = check.name
        line = grading.check_text(check)
        value_text, _, bound = line.partition(" : ")[2].rpartition(" (")
        text(0.07, y, grading.CHECK_LABELS.get(name, name), fontsize=11, color=TEXT)
        text(0.50, y, value_text, fontsize=11, color=TEXT)
        text(0.65, y, bound.rstrip(")"), fontsize=11, color=TEXT)
        result, result_color = ("conforme", OK_COLOR) if check.ok else ("non conforme", FAIL_COLOR)
        if check.uncertain:  # measured on data that cannot support it (protocol v3)
            result, result_color = "à vérifier", TO_CHECK_COLOR
        text(0.80, y, result, fontsize=11, fontweight="bold", color=result_color)
    y -= 0.04
    motif = "Motif : " + verdict.reason
    if not to_check:
        text(0.07, y, motif, fontsize=10, color=darker(color), wrap=True)
    else:  # the reason in full, then the notice beneath it: wrapped here, so the notice knows where it goes
        lines = textwrap.wrap(motif, MOTIF_CHARS_PER_LINE)
        text(0.07, y, "\n".join(lines), fontsize=10, color=darker(color), va="top", linespacing=1.4)
        notice = textwrap.wrap(TO_CHECK_NOTICE, MOTIF_CHARS_PER_LINE - 20)
        text(0.07, y - 0.0175 * len(lines) - 0.012, "\n".join(notice), fontsize=11, fontweight="bold",
             color=darker(color), va="top", linespacing=1.4)

    # Footer: versions, the hash and the QR code that carries it.
    footer = [
        ("Logiciel", f"banc-lfp {software_version}"),
        ("Règles de classement", f"grading.json version {verdict.grading_version or '—'}"),
        ("Empreinte SHA-256 de data.csv", ""),
    ]
    y_footer = _table(figure, 0.07, 0.215, footer, size=9.5, key_width=0.27)
    text(0.07, y_footer + 0.005, sha256[:32], fontsize=9, family="monospace", color=TEXT)
    text(0.07, y_footer - 0.015, sha256[32:], fontsize=9, family="monospace", color=TEXT)
    text(0.07, 0.03, f"Dossier {report.folder.parent.name}/{report.folder.name} — certificat établi le "
         f"{format_time(record.now_local())}", fontsize=8, color=GREY)

    qr = figure.add_axes((0.70, 0.035, 0.23, 0.23 * A4_PORTRAIT_IN[0] / A4_PORTRAIT_IN[1] * 1.0))
    qr.set_axis_off()
    matrix = qr_matrix(qr_payload(summary.serial, grade, soh if isinstance(soh, (int, float)) else None, sha256))
    qr.imshow(~matrix, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
    qr.set_aspect("equal")


def _rounded_box(axes: Any, color: str) -> Any:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((0.02, 0.02), 0.96, 0.96, boxstyle="round,pad=0,rounding_size=0.08",
                          facecolor=color, edgecolor="none", transform=axes.transAxes)


def _table(figure: Any, x: float, y: float, rows: list[tuple[str, str]], size: float, key_width: float) -> float:
    """Key / value lines from (x, y) down; returns the y below the last line."""
    step = size / 72.0 / A4_PORTRAIT_IN[1] * 1.75
    for key, value in rows:
        figure.text(x, y, key, fontsize=size, color=GREY)
        figure.text(x + key_width, y, value, fontsize=size, color=TEXT, fontweight="bold")
        y -= step
    return y


def write_certificate(report: Report, path: Path, software_version: str = record.SOFTWARE_VERSION) -> None:
    """Write the certificate of a finished, graded test as a PDF (atomic: a reader never sees half a file)."""
    from matplotlib.backends.backend_pdf import FigureCanvasPdf, PdfPages
    from matplotlib.figure import Figure

    sha256 = data_sha256(report.folder)
    first = Figure(figsize=A4_PORTRAIT_IN, dpi=100)
    FigureCanvasPdf(first)
    draw_first_page(first, report, sha256, software_version)
    charts = Figure(figsize=A4_LANDSCAPE_IN, dpi=100)
    FigureCanvasPdf(charts)
    draw_figure(charts, prepare_plot_data(report.data, report.summary, folder=report.folder))

    def write(fh: Any) -> None:
        with PdfPages(fh, metadata={"Title": f"Certificat {report.summary.serial}", "Creator": "banc-lfp"}) as pdf:
            pdf.savefig(first)
            pdf.savefig(charts)

    storage.atomic_write(Path(path), write)
