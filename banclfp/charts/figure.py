"""The figure of a test: five charts on the display time axis, phases shaded, stops hatched, the results panel.

matplotlib is imported lazily, inside the functions: `report.py TEST_FOLDER` (text only) never
pays for it. `draw_figure` works on any Figure; `render_png` writes the report's PNG and `render_image`
the kiosk's picture (raw pixels, drawn in a child process: charts.render_process).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from banclfp.analysis.measures import Summary
from banclfp.charts.chart_data import PLOT_SERIES, SHORT_LABELS, PlotData, TimeAxis
from banclfp.infra import storage
from banclfp.presentation.formatting import PHASE_COLORS, darker, format_duration, format_number
from banclfp.presentation.summary_text import PANEL_RED, STATUS_LABELS, format_time, panel_lines, test_span
from banclfp.recording import record

if TYPE_CHECKING:  # matplotlib is imported lazily at run time
    from matplotlib.axes import Axes

PNG_SIZE_IN = (16.0, 10.0)
PNG_DPI = 100
_MAX_HATCHED_STOPS = 300


@dataclass(frozen=True)
class RenderedChart:
    """The figure rasterised at a size in pixels, as a binary PPM, with the texts it shows (for checks and logs)."""

    ppm: bytes
    width_px: int
    height_px: int
    title: str
    texts: tuple[str, ...]  # the figure's texts: the title and the results panel, top to bottom
    axes_texts: tuple[str, ...]  # the texts on the charts: phase numbers, stops, "no data"


@dataclass(frozen=True)
class FigureLayout:
    """Font sizes (points) and margins (figure fractions) fitted to a figure's size in pixels.

    The same figure goes to a 1600x1000 PNG and to a kiosk screen that may be 1024x600:
    text is sized in pixels against the room available, never below a legible floor.
    """

    tick_pt: float
    label_pt: float
    title_pt: float
    panel_pt: float
    panel_line_pt: float
    panel_fraction: float
    left: float
    right: float
    top: float
    bottom: float


def figure_layout(width_px: float, height_px: float, dpi: float, panel_rows: int, panel_chars: int) -> FigureLayout:
    """Fit fonts and margins to a figure of width_px x height_px (pure)."""
    width_px, height_px = max(width_px, 200.0), max(height_px, 150.0)
    pt = 72.0 / dpi  # points per pixel
    tick_px = float(np.clip(width_px / 135.0, 10.0, 11.5))
    label_px = tick_px + 1.0
    title_px = float(np.clip(width_px / 80.0, 13.0, 19.5))
    panel_px = float(np.clip(0.86 * height_px / ((max(panel_rows, 1) + 1) * 1.5), 9.5, 14.5))
    panel_width_px = 0.61 * panel_px * (panel_chars + 3)
    top_px = 1.5 * title_px + 1.6 * (tick_px + 2) + 6
    bottom_px = 2.6 * tick_px + 1.6 * label_px + 12
    left_px = 4.2 * tick_px + 1.8 * label_px + 10
    return FigureLayout(
        tick_pt=tick_px * pt,
        label_pt=label_px * pt,
        title_pt=title_px * pt,
        panel_pt=panel_px * pt,
        panel_line_pt=1.5 * panel_px * pt,
        panel_fraction=float(np.clip(panel_width_px / width_px, 0.14, 0.34)),
        left=left_px / width_px,
        right=0.995,
        top=1.0 - top_px / height_px,
        bottom=bottom_px / height_px,
    )


def draw_figure(figure: Any, plot: PlotData) -> None:
    """Draw the charts and the results panel on a matplotlib Figure (Agg or TkAgg), fitted to its size."""
    summary = plot.summary
    lines = panel_lines(summary)
    width_in, height_in = figure.get_size_inches()
    layout = figure_layout(width_in * figure.dpi, height_in * figure.dpi, figure.dpi, len(lines),
                           max(len(text) for text, _ in lines))
    figure.clear()
    figure.set_facecolor("white")
    chart_right = layout.right - layout.panel_fraction
    grid = figure.add_gridspec(len(PLOT_SERIES), 1, hspace=0.12, left=layout.left, right=chart_right,
                               top=layout.top, bottom=layout.bottom)
    figure.suptitle(chart_title(summary), fontsize=layout.title_pt, fontweight="bold")
    axes: list[Axes] = []
    axes_height_pt = (layout.top - layout.bottom) * height_in * 72.0 / (len(PLOT_SERIES) + 0.5)
    for row, (name, label, color) in enumerate(PLOT_SERIES):
        ax = figure.add_subplot(grid[row, 0], sharex=axes[0] if axes else None)
        axes.append(ax)
        x, y = plot.series[name]
        ax.plot(x, y, color=color, linewidth=0.9)
        if 0.62 * layout.label_pt * len(label) > axes_height_pt:
            label = SHORT_LABELS[name]  # a small screen: the full label would run into its neighbours
        ax.set_ylabel(label, fontsize=layout.label_pt)
        ax.tick_params(labelsize=layout.tick_pt)
        ax.yaxis.set_major_locator(_y_locator())
        ax.yaxis.set_major_formatter(_french_ticks())
        ax.grid(True, alpha=0.3)
        if name == "current_a":
            ax.axhline(0.0, color="#555555", linewidth=0.6)
        if row < len(PLOT_SERIES) - 1:
            ax.tick_params(labelbottom=False)
    figure.align_ylabels(axes)
    if plot.axis is None:
        for ax in axes:  # empty charts, not axes with made-up ticks
            ax.set_yticks([])
            ax.set_xticks([])
        axes[0].text(0.5, 0.5, no_data_text(summary), transform=axes[0].transAxes,
                     ha="center", va="center", fontsize=layout.title_pt)
    else:
        _shade_phases(figure, axes, summary, plot.axis, layout)
        axes[-1].set_xticks([x for x, _ in plot.ticks], [label for _, label in plot.ticks])
        note = ", arrêts raccourcis" if summary.stops else ""
        axes[-1].set_xlabel(f"Heure de Paris (mesure{note})", fontsize=layout.label_pt)
        pad = max(plot.axis.width * 0.005, 1e-3)
        axes[-1].set_xlim(-pad, plot.axis.width + pad)

    # The results panel: one text per line, spaced in points so that it never depends on the figure height.
    panel_left = chart_right + 0.012
    for i, (text, color) in enumerate(lines):
        # Baselines, not tops, are spaced evenly: accents (É) would otherwise push some lines down.
        figure.text(panel_left, layout.top, text, va="baseline", ha="left",
                    family="monospace", color=color,
                    fontsize=layout.panel_pt * (1.2 if i == 0 else 1.0),
                    fontweight="bold" if i == 0 or color == PANEL_RED else "normal",
                    **_offset_points(figure, 0.0, -(i + 1) * layout.panel_line_pt))


def chart_title(summary: Summary) -> str:
    """The figure's title: battery, bench, status, and the span of the measures when there are any."""
    status = STATUS_LABELS.get(summary.status, summary.status)
    if summary.status == record.TEST_ABANDONED:
        status = "abandonné (reset)"
    head = f"{summary.serial} — {summary.banc} — {status}"
    if summary.first_row_s is None:
        return f"{head} — aucune mesure"
    start, end = test_span(summary)
    return f"{head} — {format_time(start)} → {format_time(end)}"


def no_data_text(summary: Summary) -> str:
    """What the empty charts of a test without a measure say."""
    if summary.status == record.TEST_ABANDONED:
        return "Test abandonné (reset) avant toute mesure"
    return "Aucune mesure dans data.csv"


def tick_decimals(step: float) -> int:
    """Decimals that write every multiple of a tick step exactly (2.5 -> 1, 0.25 -> 2, 20 -> 0)."""
    for decimals in range(7):
        scaled = step * 10**decimals
        if abs(scaled - round(scaled)) < 1e-6 * max(1.0, abs(scaled)):
            return decimals
    return 6


def _french_ticks() -> Any:
    """A tick formatter writing French numbers (decimal comma, grouped thousands) with formatting.format_number."""
    from matplotlib.ticker import Formatter

    class FrenchTicks(Formatter):
        decimals = 0

        def set_locs(self, locs: Any) -> None:
            steps = np.abs(np.diff(np.asarray(locs, dtype=float)))
            step = float(steps.min()) if steps.size else 0.0
            self.decimals = tick_decimals(step) if step > 0 else 0

        def __call__(self, x: float, pos: Any = None) -> str:
            return format_number(x, self.decimals)

    return FrenchTicks()


def _y_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, min_n_ticks=3)


def _offset_points(figure: Any, dx_pt: float, dy_pt: float) -> dict[str, Any]:
    """transform= keyword placing a text dx_pt, dy_pt points away from a figure-fraction position."""
    import matplotlib.transforms as mtransforms

    return {"transform": mtransforms.offset_copy(figure.transFigure, fig=figure, x=dx_pt, y=dy_pt, units="points")}


def _shade_phases(figure: Any, axes: list[Any], summary: Summary, axis: TimeAxis, layout: FigureLayout) -> None:
    """Shade each phase segment, hatch each stop, label both on the top chart.

    One collection per phase and one for the stops on each chart, whatever their number:
    a test with thousands of segments still draws in a fraction of a second.
    """
    import matplotlib.transforms as mtransforms

    span = max(axis.width, 1e-9)
    top = axes[0]
    chart_px = top.get_position().width * figure.get_size_inches()[0] * figure.dpi
    text_px = layout.tick_pt * figure.dpi / 72.0
    label_transform = mtransforms.blended_transform_factory(top.transData, top.transAxes)
    by_phase: dict[int, list[tuple[float, float]]] = {}
    labelled_until = -math.inf
    for segment in summary.segments:
        x0, x1 = (float(v) for v in axis.to_x([segment.t0_s, segment.t1_s]))
        by_phase.setdefault(segment.step, []).append((x0, x1 - x0))
        middle = (x0 + x1) / 2
        if (x1 - x0) / span * chart_px > 1.5 * text_px and middle > labelled_until:
            top.text(middle, 1.02, str(segment.step), transform=label_transform, ha="center", va="bottom",
                     fontsize=layout.tick_pt + 1, fontweight="bold",
                     color=darker(PHASE_COLORS.get(segment.step, "#888888")))
            labelled_until = middle + span * 2.0 * text_px / chart_px
    stop_ranges = []
    for stop in summary.stops:
        x0, x1 = (float(v) for v in axis.to_x([stop.t0_s, stop.t1_s]))
        stop_ranges.append((x0, x1 - x0))
        if (x1 - x0) / span * chart_px > 2.8 * text_px:
            top.text((x0 + x1) / 2, 0.5, f"Arrêt\n{format_duration(stop.duration_s)}", transform=label_transform,
                     rotation=90, ha="center", va="center", fontsize=layout.tick_pt, color="#333333",
                     linespacing=1.1, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0})
    # Hatching costs about 1 ms per band and per chart in Agg: beyond a few hundred stops
    # (a flapping link), they are drawn as plain grey bands instead.
    hatched = len(stop_ranges) <= _MAX_HATCHED_STOPS
    edges = [x for x0, width in stop_ranges for x in (x0, x0 + width)] if hatched else []
    for ax in axes:
        band = ax.get_xaxis_transform()  # x in data, y from 0 to 1 of the chart
        for phase, ranges in by_phase.items():
            ax.broken_barh(_merge_ranges(ranges, span / 4000.0), (0, 1), transform=band,
                           facecolors=PHASE_COLORS.get(phase, "#bbbbbb"), alpha=0.15, linewidth=0, zorder=0)
        if stop_ranges and hatched:
            ax.broken_barh(stop_ranges, (0, 1), transform=band, facecolors="none", edgecolors="#888888",
                           hatch="///", linewidth=0, zorder=0.5)
            ax.vlines(edges, 0, 1, transform=band, colors="#666666", linewidth=0.7, linestyles="--")
        elif stop_ranges:
            ax.broken_barh(stop_ranges, (0, 1), transform=band, facecolors="#888888", alpha=0.35, linewidth=0,
                           zorder=0.5)


def _merge_ranges(ranges: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """(start, width) ranges in order, merged where they touch (gap below `tolerance`)."""
    merged: list[list[float]] = []
    for start, width in ranges:
        if merged and start - (merged[-1][0] + merged[-1][1]) <= tolerance:
            merged[-1][1] = max(merged[-1][1], start + width - merged[-1][0])
        else:
            merged.append([start, width])
    return [(start, width) for start, width in merged]


def render_png(plot: PlotData, path: Path) -> None:
    """Render the figure to a PNG file with the Agg backend (atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PNG_SIZE_IN, dpi=PNG_DPI)
    FigureCanvasAgg(figure)
    draw_figure(figure, plot)
    storage.atomic_write(Path(path), lambda fh: figure.savefig(fh, format="png", dpi=PNG_DPI))


def render_image(plot: PlotData, width_px: int, height_px: int) -> RenderedChart:
    """Rasterise the figure at width_px x height_px with Agg, to a binary PPM (P6) a Tk PhotoImage reads as is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / PNG_DPI, height_px / PNG_DPI), dpi=PNG_DPI)
    canvas = FigureCanvasAgg(figure)
    draw_figure(figure, plot)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    rows, columns = rgba.shape[:2]
    # PPM rather than PNG: Tk decodes a 1920x1080 PNG in about 57 ms on the Tk thread, a PPM in about 5 ms.
    header = f"P6 {columns} {rows} 255\n".encode("ascii")
    suptitle = getattr(figure, "_suptitle", None)  # get_suptitle() needs matplotlib 3.8; requirements.txt allows 3.7
    title = suptitle.get_text() if suptitle is not None else ""
    return RenderedChart(
        ppm=header + np.ascontiguousarray(rgba[:, :, :3]).tobytes(),
        width_px=columns,
        height_px=rows,
        title=title,
        texts=tuple(text.get_text() for text in figure.texts),
        axes_texts=tuple(text.get_text() for ax in figure.axes for text in ax.texts),
    )
