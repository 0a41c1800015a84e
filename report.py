"""Charts, summary and Battery Data Format export of one test (contract §1, §4, §5).

    python report.py TEST_FOLDER [--png FILE] [--bdf FILE]

Without an option it prints a plain-text summary. This file is the command line; the work
is done by one module per concept, and every name they export is re-exported here:
  analysis.py      data.csv into numpy arrays, coulomb counting, phases, stops, the summary (pure numpy)
  summary_text.py  the summary as text (this printout, the panel beside the charts)
  chart_data.py    what the charts draw: decimated series on a time axis with stops shortened
  charts.py        the matplotlib figure and the PNG (matplotlib imported lazily)
  bdf.py           the Battery Data Format export and its metadata sidecar
  chart_window.py  the kiosk's window (`show_charts`, CustomTkinter; data loaded in a worker thread)
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import record
import utils
from analysis import (
    CAPACITY_FLAG_PCT,
    DISCHARGE_PHASE,
    GAP_MEDIAN_FACTOR,
    MIN_GAP_S,
    NUMERIC_COLUMNS,
    RESISTANCE_LABELS,
    CoulombCount,
    Report,
    ReportError,
    Resistance,
    Segment,
    Stop,
    Summary,
    TestData,
    compute_summary,
    continuous_intervals,
    coulomb_count,
    find_segments,
    identity_from_folder,
    load_report,
    load_test_data,
    parse_data_csv,
    parse_iso_timestamps,
    split_trapezoid,
    stop_gap_s,
)
from bdf import BDF_HEADER, BDF_LABELS, bdf_columns, bdf_metadata, bdf_metadata_path, bdf_step_count, write_bdf
from chart_data import (
    DISPLAY_BUCKETS,
    PLOT_SERIES,
    SHORT_LABELS,
    STOP_BAND_FRACTION,
    PlotData,
    TimeAxis,
    decimate,
    display_runs,
    load_plot_data,
    minmax_indices,
    prepare_plot_data,
    time_axis,
    time_ticks,
)
from charts import PNG_DPI, PNG_SIZE_IN, FigureLayout, draw_figure, figure_layout, render_png
from formatting import PHASE_COLORS, format_duration, format_milliohm
from summary_text import (
    PANEL_GREY,
    PANEL_RED,
    PANEL_TEXT,
    STATUS_LABELS,
    capacity_flag_text,
    format_summary,
    format_time,
    panel_lines,
    phase_name,
)

if TYPE_CHECKING:
    from chart_window import ChartWindow

__all__ = [
    "BDF_HEADER", "BDF_LABELS", "CAPACITY_FLAG_PCT", "DISCHARGE_PHASE", "DISPLAY_BUCKETS", "GAP_MEDIAN_FACTOR",
    "MIN_GAP_S", "NUMERIC_COLUMNS", "PANEL_GREY", "PANEL_RED", "PANEL_TEXT", "PHASE_COLORS", "PLOT_SERIES",
    "PNG_DPI", "PNG_SIZE_IN", "RESISTANCE_LABELS", "SHORT_LABELS", "STATUS_LABELS", "STOP_BAND_FRACTION",
    "CoulombCount", "FigureLayout", "PlotData", "Report", "ReportError", "Resistance", "Segment", "Stop", "Summary",
    "TestData", "TimeAxis",
    "bdf_columns", "bdf_metadata", "bdf_metadata_path", "bdf_step_count", "capacity_flag_text", "compute_summary",
    "continuous_intervals", "coulomb_count", "decimate", "display_runs", "draw_figure", "figure_layout",
    "find_segments", "format_duration", "format_milliohm", "format_summary", "format_time", "identity_from_folder",
    "load_plot_data", "load_report", "load_test_data", "main", "minmax_indices", "panel_lines", "parse_data_csv",
    "parse_iso_timestamps", "phase_name", "prepare_plot_data", "render_png", "show_charts", "split_trapezoid",
    "stop_gap_s", "time_axis", "time_ticks", "write_bdf",
]

logger = logging.getLogger("banc.report")


def show_charts(master: Any, test_folder: Path) -> ChartWindow:
    """Open the charts of a test in a kiosk window (non-blocking); returns the window.

    customtkinter is imported only here, so that the command line never needs a display or Tk.
    """
    import chart_window

    return chart_window.show_charts(master, test_folder)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`report.py TEST_FOLDER [--png FILE] [--bdf FILE]`: summary on stdout, or the chart / the BDF export."""
    parser = argparse.ArgumentParser(
        prog="report.py",
        description="Graphiques, résumé et export Battery Data Format d'un test (dossier data/bancN/JJMMAAAA-SERIAL).",
    )
    parser.add_argument("test_folder", type=Path, help="dossier du test (contient data.csv et config.json)")
    parser.add_argument("--png", type=Path, metavar="FILE", help="écrire les graphiques dans ce fichier PNG")
    parser.add_argument("--bdf", type=Path, metavar="FILE",
                        help="écrire l'export Battery Data Format (CSV) et son FILE.bdf.metadata.json")
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):  # replaced (tests, pythonw): nothing to reconfigure
            continue
        try:
            stream.reconfigure(errors="replace")
        except ValueError:
            pass
    try:
        utils.get_settings()
    except utils.SettingsError as exc:
        print(f"report.py : configuration invalide : {exc}", file=sys.stderr)
        return 2
    utils.setup_logging("report", level=logging.WARNING)

    try:
        report = load_report(args.test_folder)
    except ReportError as exc:
        print(f"report.py : {exc}", file=sys.stderr)
        return 2
    for note in report.summary.notes:
        logger.warning("%s: %s", args.test_folder, note)
    if args.png is None and args.bdf is None:
        sys.stdout.write(format_summary(report.summary, args.test_folder))
        return 0
    try:
        if args.png is not None:
            render_png(prepare_plot_data(report.data, report.summary, folder=report.folder), args.png)
            print(f"PNG écrit : {args.png}")
        if args.bdf is not None:
            sidecar = write_bdf(args.bdf, report.data, report.summary, source=report.folder / record.DATA_CSV_FILE)
            print(f"BDF écrit : {args.bdf} ({len(report.data)} lignes), métadonnées : {sidecar}")
    except OSError as exc:
        print(f"report.py : écriture impossible : {exc}", file=sys.stderr)
        return 1
    if report.summary.capacity_flag:
        print(capacity_flag_text(report.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
