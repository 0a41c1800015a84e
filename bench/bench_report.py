"""Benchmark of report.py on long tests: 172,800 rows (48 h at 1 Hz) and 1,000,000 rows.

    .venv/bin/python bench/bench_report.py [--rows 172800,1000000] [--no-gui] [--keep DIR]

For each size it writes a synthetic test folder in the exact contract format (the
generator of tests/test_report.py), then times, in the same run:
  (a) reading data.csv with the csv module alone (baseline: rows split, nothing converted),
  (b) the loader, analysis.load_test_data (every row parsed to numbers, timestamps to unix seconds),
  (b') loader + summary (coulomb counting, phases, stops),
  (c) rendering the PNG from the loaded test (decimation + matplotlib Agg + atomic write),
  (c') the part the kiosk's Tk thread does: rasterising the prepared figure,
  (d) the BDF export (CSV + metadata sidecar, atomic),
  (e) `python report.py FOLDER --png FILE` end to end (new process, imports included),
  (f) with Xvfb: chart_window.show_charts() on a real Tk window, time until the chart is shown and the
      longest stall of the kiosk's event loop meanwhile (a 20 ms after() heartbeat).
Each figure is the best of --repeat runs (3 by default; the longest stall is the worst),
printed in seconds and as a ratio to (a).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from banclfp.analysis import bdf, measures as analysis
from banclfp.charts import chart_data, figure as charts
from banclfp.infra import environment
from banclfp.testkit.support import Xvfb
from banclfp.testkit.synthetic import write_synthetic_test

PROJECT_FILES = environment.StaticFiles(environment.PROJECT_DIR)  # the project's curves (no BANC_HOME here)

REPO_DIR = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:  # matplotlib is imported lazily at run time
    from matplotlib.backends.backend_agg import FigureCanvasAgg

REPEAT = 3
T = TypeVar("T")


def timed(action: Callable[[], T], repeat: int | None = None) -> tuple[float, T]:
    """Run `action` `repeat` times; return (best seconds, last result): the machine is shared, the best is the least noisy."""
    best = float("inf")
    for _ in range(repeat or REPEAT):  # at least once: REPEAT >= 1
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def read_with_csv_module(path: Path) -> int:
    """Baseline: every row through csv.reader, no conversion."""
    with open(path, newline="", encoding="ascii") as fh:
        return sum(1 for _row in csv.reader(fh))


def raster_only(plot: chart_data.PlotData) -> FigureCanvasAgg:
    """Build the figure (the worker thread's job), then time only its rasterisation (the Tk thread's job)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=charts.PNG_SIZE_IN, dpi=charts.PNG_DPI)
    canvas = FigureCanvasAgg(figure)
    charts.draw_figure(figure, plot)
    return canvas


def kiosk_view(folder: Path, display: str) -> tuple[float, float]:
    """show_charts on a real Tk root: (seconds until the chart is drawn, longest event-loop stall)."""
    os.environ["DISPLAY"] = display
    import customtkinter as ctk

    from banclfp.kiosk import chart_window

    root = ctk.CTk()
    root.geometry("1280x800")
    ticks: list[float] = []

    def heartbeat() -> None:
        ticks.append(time.perf_counter())
        root.after(20, heartbeat)

    heartbeat()
    for _ in range(20):
        root.update()
    start = time.perf_counter()
    window = chart_window.show_charts(root, folder, functools.partial(
        chart_data.load_plot_data, correct_to_25c=PROJECT_FILES.correct_to_25c, min_gap_s=30.0))
    shown = None
    while time.perf_counter() - start < 120:
        root.update()
        if window.canvas is not None and shown is None:
            root.update_idletasks()  # the idle draw of the canvas
            root.update()
            shown = time.perf_counter() - start
            break
        time.sleep(0.002)
    end = time.perf_counter()
    for _ in range(10):
        root.update()
    window.close()
    for pending in root.tk.call("after", "info"):
        root.after_cancel(pending)  # no "invalid command name" noise from callbacks of a destroyed root
    root.destroy()
    window_ticks = [t for t in ticks if start <= t <= end + 0.1]
    marks = [start] + window_ticks + [end]
    stall = max(b - a for a, b in zip(marks, marks[1:]))
    return (shown if shown is not None else float("nan")), stall


def _tiny(workdir: Path) -> tuple[analysis.TestData, analysis.Summary]:
    loaded = analysis.load_report(write_synthetic_test(workdir / "tiny", rows=200).folder, PROJECT_FILES.correct_to_25c,
                                  min_gap_s=30.0)
    return loaded.data, loaded.summary


def bench(rows: int, workdir: Path, display: str | None) -> list[tuple[str, float]]:
    """All the measurements for one size; returns (label, seconds) with the baseline first."""
    print(f"\n=== {rows:,} lignes ===".replace(",", " "), flush=True)
    gen_s, synthetic = timed(lambda: write_synthetic_test(workdir / f"n{rows}", rows=rows), repeat=1)
    folder = synthetic.folder
    size_mb = (folder / "data.csv").stat().st_size / 1e6
    print(f"données synthétiques : {size_mb:.1f} Mo écrits en {gen_s:.1f} s ({folder})", flush=True)
    data_csv = folder / "data.csv"
    read_with_csv_module(data_csv)  # warm the page cache so that every reader sees the same disk state
    charts.render_png(chart_data.prepare_plot_data(*_tiny(workdir)), workdir / "warm.png")  # imports, font cache

    results: list[tuple[str, float]] = []
    baseline, count = timed(lambda: read_with_csv_module(data_csv))
    assert count == rows + 1, count
    results.append(("(a) lecture module csv (référence)", baseline))
    load_s, data = timed(lambda: analysis.load_test_data(folder))
    assert len(data) == rows
    results.append(("(b) chargement report.py", load_s))
    full_s, loaded = timed(lambda: analysis.load_report(folder, PROJECT_FILES.correct_to_25c, min_gap_s=30.0))
    results.append(("(b') chargement + résumé", full_s))
    png = workdir / f"n{rows}.png"
    png_s, _ = timed(lambda: charts.render_png(chart_data.prepare_plot_data(loaded.data, loaded.summary), png))
    results.append(("(c) rendu PNG (décimation + Agg)", png_s))
    canvas = raster_only(chart_data.prepare_plot_data(loaded.data, loaded.summary, buckets=1920))
    raster_s, _ = timed(canvas.draw)
    results.append(("(c') part du thread Tk (pixellisation)", raster_s))
    bdf_path = workdir / f"n{rows}.bdf.csv"
    bdf_s, _ = timed(lambda: bdf.write_bdf(bdf_path, loaded.data, loaded.summary))
    results.append(("(d) export BDF (CSV + métadonnées)", bdf_s))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env["BANC_HOME"] = str(workdir)
    cli_s, proc = timed(lambda: subprocess.run(
        [sys.executable, str(REPO_DIR / "report.py"), str(folder), "--png", str(workdir / f"cli{rows}.png")],
        capture_output=True, text=True, env=env,
    ))
    assert proc.returncode == 0, proc.stderr
    results.append(("(e) report.py --png de bout en bout", cli_s))
    if display:
        views = [kiosk_view(folder, display) for _ in range(REPEAT)]
        results.append(("(f) kiosque : graphique affiché après", min(v[0] for v in views)))
        results.append(("(f) kiosque : plus long blocage de l'UI", max(v[1] for v in views)))

    with open(bdf_path, encoding="ascii") as fh:
        bdf_rows = sum(1 for _ in fh) - 1
    assert bdf_rows == rows, bdf_rows
    print(f"{'mesure':<42} {'secondes':>9} {'× réf.':>8}")
    for label, seconds in results:
        print(f"{label:<42} {seconds:9.3f} {seconds / baseline:8.2f}")
    print(f"PNG {png.stat().st_size / 1e3:.0f} ko, BDF {bdf_path.stat().st_size / 1e6:.1f} Mo ({bdf_rows} lignes), "
          f"capacité comptée {loaded.summary.counted_capacity_ah:.3f} Ah "
          f"(attendu {synthetic.expected_discharge_ah:.3f} Ah)")
    return results


def main() -> int:
    """Run the benchmark for each requested size."""
    global REPEAT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="172800,1000000", help="tailles, séparées par des virgules")
    parser.add_argument("--no-gui", action="store_true", help="ne pas mesurer la fenêtre du kiosque (Xvfb)")
    parser.add_argument("--keep", type=Path, help="garder les fichiers générés dans ce dossier")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="répétitions par mesure (la meilleure est gardée)")
    args = parser.parse_args()
    REPEAT = max(1, args.repeat)
    sizes = [int(part) for part in args.rows.split(",") if part.strip()]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    workdir.mkdir(parents=True, exist_ok=True)
    xvfb = None
    if not args.no_gui and shutil.which("Xvfb"):
        xvfb = Xvfb(1280, 800).start()
    try:
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cœurs, dossier {workdir}")
        for rows in sizes:
            bench(rows, workdir, xvfb.display if xvfb else None)
    finally:
        if xvfb:
            xvfb.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
