"""The grade label of a finished test (docs/etiquettes.md): a one-page PDF at the label's exact size.

Serial, the grade in large type, SOH, capacity, the date, the bench and the certificate's QR code
(certificate.qr_payload: the same content). Black on white only, so that a 300 dpi thermal printer
prints it crisp: no grey, the QR code's modules embedded one pixel each, never resampled. Everything is placed in points
on the label's own page; the text is made as large as its room allows (TextPath measures it).
The label is not kept in the test folder: it is drawn again from config.json and data.csv whenever
it is printed or asked for (`report.py TEST_FOLDER --label FILE.pdf`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from banclfp.analysis.measures import Report, load_report
from banclfp.infra import printing, storage
from banclfp.infra.settings import LABEL_SIZE_MM
from banclfp.presentation.formatting import format_number
from banclfp.presentation.summary_text import format_time, test_span
from banclfp.verdict import grading
from banclfp.verdict.certificate import data_sha256, qr_matrix, qr_payload

POINTS_PER_MM = 72.0 / 25.4
MARGIN_MM = 1.5  # thermal heads leave about 1 mm unprinted at each edge
INK = "black"  # one colour: a thermal printer has no grey, and dithered grey breaks up small type


@dataclass(frozen=True)
class LabelContent:
    """What a label says, taken from the test's summary and verdict."""

    serial: str
    grade: str
    soh_pct: Optional[float]
    capacity_ah: Optional[float]
    end: Optional[float | datetime]
    banc: str
    qr_payload: str

    def lines(self) -> list[tuple[str, float, bool]]:
        """The label's text top-down: (text, largest size in pt, bold)."""
        date = format_time(self.end).split(" ")[0]  # the day is enough on a label: dd/mm/yyyy
        return [
            (self.serial, 10.0, True),
            (self.grade, 40.0, True),
            (f"SOH {format_number(self.soh_pct, grading.SOH_DECIMALS, '%')}", 9.0, True),
            (f"Capacité {format_number(self.capacity_ah, 2, 'Ah')}", 7.5, False),
            (f"{date}  {self.banc}", 7.5, False),
        ]


def label_content(report: Report, sha256: str) -> LabelContent:
    """The label of a concluded test (ValueError when it has no verdict yet)."""
    verdict = report.config.verdict
    if verdict is None:
        raise ValueError("le test n'a pas de verdict : étiquette impossible")
    summary = report.summary
    grade = verdict.grade
    soh_pct = verdict.soh_pct
    return LabelContent(serial=summary.serial, grade=grade, soh_pct=soh_pct, capacity_ah=summary.esp_capacity_ah,
                        end=test_span(summary)[1], banc=summary.banc,
                        qr_payload=qr_payload(summary.serial, grade, soh_pct, sha256))


def text_width_pt(text: str, size_pt: float, bold: bool) -> float:
    """Width in points of `text` set in matplotlib's default font at `size_pt`."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), text, size=size_pt, prop=FontProperties(weight="bold" if bold else "normal"))
    return float(path.get_extents().width) if len(path.vertices) else 0.0


def fitted_sizes_pt(lines: list[tuple[str, float, bool]], width_pt: float, height_pt: float) -> list[float]:
    """Each line's font size: its largest that fits `width_pt`, all scaled down together to fit `height_pt`."""
    sizes = []
    for text, largest, bold in lines:
        width = text_width_pt(text, largest, bold)
        sizes.append(largest if width <= width_pt else largest * width_pt / width)
    # A line takes about its size in height (capitals, no descender below the baseline of the next).
    needed = sum(sizes) * 1.12
    return [size * min(1.0, height_pt / needed) for size in sizes]


def draw_label(figure: Any, content: LabelContent, size_mm: tuple[float, float]) -> None:
    """The label on a figure of exactly `size_mm`: the QR code on one side, the text beside or above it."""
    width_pt, height_pt = size_mm[0] * POINTS_PER_MM, size_mm[1] * POINTS_PER_MM
    margin = MARGIN_MM * POINTS_PER_MM
    figure.set_facecolor("white")
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.set_xlim(0, width_pt)
    axes.set_ylim(0, height_pt)

    matrix = qr_matrix(content.qr_payload)
    landscape = width_pt >= 1.5 * height_pt
    if landscape:  # QR on the left at the label's full height (its quiet zone is the margin)
        side = min(height_pt, width_pt / 2)
        qr_x, qr_y = 0.0, (height_pt - side) / 2
        box = (side, margin, width_pt - side - margin, height_pt - 2 * margin)
    else:  # QR at the bottom, the text above it
        side = min(width_pt, height_pt / 2)
        qr_x, qr_y = (width_pt - side) / 2, 0.0
        box = (margin, side, width_pt - 2 * margin, height_pt - side - margin)
    # One pixel per module, embedded as it is ("none": not resampled, not interpolated): the printer's
    # driver scales it, so every module is a crisp black or white square at any resolution. (Drawn as
    # vector paths, the QR code made CUPS's PostScript filter turn the whole page's text into outlines.)
    axes.imshow(~matrix, cmap="gray", vmin=0, vmax=1, interpolation="none",
                extent=(qr_x, qr_x + side, qr_y, qr_y + side))
    axes.set_aspect("auto")  # imshow fitted the axes to the image: the page is in points again
    axes.set_xlim(0, width_pt)
    axes.set_ylim(0, height_pt)

    lines = content.lines()
    x, y, box_width, box_height = box
    sizes = fitted_sizes_pt(lines, box_width, box_height)
    gap = (box_height - sum(sizes)) / len(lines)  # what room is left, shared out between the lines
    top = y + box_height
    for (text, _largest, bold), size in zip(lines, sizes):
        top -= gap / 2
        axes.text(x, top, text, fontsize=size, fontweight="bold" if bold else "normal", color=INK,
                  ha="left", va="top")
        top -= size + gap / 2


def write_label(report: Report, path: Path, size_mm: tuple[float, float] = LABEL_SIZE_MM) -> None:
    """Write the label of a concluded test as a one-page PDF of exactly `size_mm` (atomic)."""
    from matplotlib.backends.backend_pdf import FigureCanvasPdf, PdfPages
    from matplotlib.figure import Figure

    content = label_content(report, data_sha256(report.folder))
    figure = Figure(figsize=(size_mm[0] / 25.4, size_mm[1] / 25.4), dpi=72)
    FigureCanvasPdf(figure)
    draw_label(figure, content, size_mm)

    def write(fh: Any) -> None:
        with PdfPages(fh, metadata={"Title": f"Étiquette {content.serial}", "Creator": "banc-lfp"}) as pdf:
            pdf.savefig(figure)

    storage.atomic_write(Path(path), write)


def print_label(folder: Path, queue: str, size_mm: tuple[float, float] = LABEL_SIZE_MM,
                server: Optional[str] = None, timeout_s: float = printing.PRINT_TIMEOUT_S) -> printing.PrintResult:
    """Draw the label of a concluded test and send it to the CUPS `queue`; never raises (the result says why not)."""
    try:
        report = load_report(Path(folder))
        with tempfile.TemporaryDirectory(prefix="banc-label-") as scratch:
            pdf = Path(scratch) / "label.pdf"
            write_label(report, pdf, size_mm)
            return printing.submit(pdf, queue, size_mm=size_mm, server=server, timeout_s=timeout_s,
                                   title=f"etiquette-{report.summary.serial}")
    except Exception as exc:  # a label must never stop the caller (verdict, kiosk): say why instead
        return printing.PrintResult(printing.PrintOutcome.NOT_DRAWN, detail=f"{type(exc).__name__}: {exc}")
