"""The kiosk's chart window: one test's figure full screen above the kiosk, with Actualiser and Fermer.

Only the Tk thread touches widgets and it never waits on files: the data are loaded and the
figure is built in a worker thread; the Tk thread polls for the result and only rasterises it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import customtkinter as ctk

from banclfp.analysis.measures import ReportError, identity_from_folder
from banclfp.charts.chart_data import DISPLAY_BUCKETS, PlotData
from banclfp.charts.figure import PNG_DPI, draw_figure
from banclfp.presentation.formatting import grade_color
from banclfp.presentation.summary_text import verdict_text

logger = logging.getLogger("banc.chart_window")


class ChartWindow(ctk.CTkToplevel):
    """Full-screen chart view of one test: data loaded in a thread, drawn on the Tk thread."""

    POLL_MS = 50

    def __init__(
        self,
        master: Any,
        folder: Path,
        load_plot: Callable[[Path, int], PlotData],
        draw: Callable[[Any, PlotData], None] = draw_figure,
    ) -> None:
        """Open the window and start loading.

        `load_plot(folder, buckets)` runs in a worker thread (ReportError: its message is shown);
        `draw(figure, plot)` lays the figure out, in that thread and again on the Tk thread on resize.
        """
        super().__init__(master)
        self.folder = folder
        self._load_plot = load_plot
        self._draw = draw
        self.canvas: Any = None
        self.figure: Any = None
        self._results: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._closed = False
        self._loading = False
        self._plot: Optional[PlotData] = None
        self._layout_px = (0, 0)
        self._relayout_pending: Optional[str] = None
        serial, banc = identity_from_folder(folder)
        self.title(f"Graphiques — {serial}")
        width, height = self.winfo_screenwidth(), self.winfo_screenheight()
        self.geometry(f"{width}x{height}+0+0")
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind("<Escape>", lambda _event: self.close())

        bar = ctk.CTkFrame(self, fg_color="transparent")
        bar.pack(side="top", fill="x", padx=12, pady=(10, 4))
        self.title_label = ctk.CTkLabel(bar, text=f"{serial} — {banc}", font=ctk.CTkFont(size=24, weight="bold"))
        self.title_label.pack(side="left")
        self.close_button = ctk.CTkButton(bar, text="Fermer", width=200, height=64,
                                          font=ctk.CTkFont(size=26, weight="bold"), command=self.close)
        self.close_button.pack(side="right")
        self.refresh_button = ctk.CTkButton(bar, text="Actualiser", width=180, height=64,
                                            font=ctk.CTkFont(size=22), command=self.reload)
        self.refresh_button.pack(side="right", padx=12)
        self.body = ctk.CTkFrame(self, fg_color="white")
        self.body.pack(side="top", fill="both", expand=True, padx=8, pady=(0, 8))
        self.status_label = ctk.CTkLabel(self.body, text="Chargement des données…", text_color="#333333",
                                         font=ctk.CTkFont(size=22))
        self.status_label.place(relx=0.5, rely=0.5, anchor="center")
        # Read by the worker thread when it builds the figure: a tuple, replaced whole (no lock needed).
        self._target_px = (max(400, width - 16), max(300, height - 100))
        self.body.bind("<Configure>", self._on_body_configure, add="+")
        self.after(10, self._raise)
        self.reload()

    def _on_body_configure(self, event: Any) -> None:
        if event.width > 50 and event.height > 50:
            self._target_px = (event.width, event.height)
            if self.canvas is not None and self._relayout_pending is None:
                # Fonts and margins are fitted to the size: lay the figure out again once resizing settles.
                self._relayout_pending = self.after(250, self._relayout)

    def _relayout(self) -> None:
        self._relayout_pending = None
        if self._closed or self.canvas is None or self._plot is None:
            return
        width, height = self._target_px
        old_w, old_h = self._layout_px
        if abs(width - old_w) <= 0.05 * old_w and abs(height - old_h) <= 0.05 * old_h:
            return
        self._draw(self.figure, self._plot)
        self._layout_px = (width, height)
        self.canvas.draw_idle()

    def _raise(self) -> None:
        # Above the full-screen kiosk, with or without a window manager.
        if self._closed:
            return
        self.attributes("-topmost", True)
        self.lift()
        self.focus_force()

    @property
    def loading(self) -> bool:
        """True while a worker thread is loading the data."""
        return self._loading

    def reload(self) -> None:
        """Load (again) the test's data in a worker thread; the figure is redrawn when it is ready."""
        if self._loading or self._closed:
            return
        self._loading = True
        self.refresh_button.configure(state="disabled")
        buckets = max(400, min(DISPLAY_BUCKETS, self.winfo_screenwidth()))
        threading.Thread(target=self._load, args=(buckets,), name="report-load", daemon=True).start()
        self.after(self.POLL_MS, self._poll)

    def _load(self, buckets: int) -> None:
        # Worker thread: files and numpy only, never a widget.
        try:
            plot = self._load_plot(self.folder, buckets)
            # Imported here rather than at the top: matplotlib's first import takes a while, and
            # this module is imported on the Tk thread when the first window opens.
            from matplotlib.figure import Figure

            width, height = self._target_px
            figure = Figure(figsize=(width / PNG_DPI, height / PNG_DPI), dpi=PNG_DPI)
            self._draw(figure, plot)  # artists built here, at the window's size; the Tk thread only rasterises
            self._results.put(("ok", (figure, plot, (width, height))))
        except ReportError as exc:
            self._results.put(("error", str(exc)))
        except Exception as exc:  # shown to the operator rather than lost in a dead thread
            logger.exception("chart loading failed for %s", self.folder)
            self._results.put(("error", f"erreur inattendue : {exc}"))

    def _poll(self) -> None:
        if self._closed:
            return
        try:
            kind, value = self._results.get_nowait()
        except queue.Empty:
            self.after(self.POLL_MS, self._poll)
            return
        self._loading = False
        self.refresh_button.configure(state="normal")
        if kind == "ok":
            figure, self._plot, self._layout_px = value
            self._show_verdict(self._plot)
            self._show_figure(figure)
        else:
            self.status_label.configure(text=f"Impossible d'afficher ce test :\n{value}", text_color="#c0392b")
            self.status_label.lift()

    def _show_verdict(self, plot: Optional[PlotData]) -> None:
        """The test's verdict in the title bar, in the grade's colour."""
        verdict = plot.summary.verdict if plot is not None else None
        if verdict is None:
            return
        serial, banc = plot.summary.serial, plot.summary.banc  # type: ignore[union-attr]
        self.title_label.configure(text=f"{serial} — {banc} — Verdict {verdict_text(verdict)}",
                                   text_color=grade_color(verdict.grade))

    def _show_figure(self, figure: Any) -> None:
        from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg

        if self.canvas is not None:
            self.canvas.get_tk_widget().destroy()
        self.figure = figure
        self.canvas = FigureCanvasTkAgg(figure, master=self.body)
        self.canvas.get_tk_widget().configure(highlightthickness=0)
        self.canvas.get_tk_widget().pack(fill="both", expand=True)
        self.status_label.place_forget()
        self.canvas.draw_idle()
        self._raise()

    def close(self) -> None:
        """Close the window (the loading thread's result, if any, is dropped)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.canvas is not None:
                self.canvas.get_tk_widget().destroy()
        finally:
            self.destroy()


def show_charts(master: Any, test_folder: Path, load_plot: Callable[[Path, int], PlotData]) -> ChartWindow:
    """Open the charts of a test in a kiosk window (non-blocking), loaded by `load_plot(folder, buckets)`; returns the window."""
    return ChartWindow(master, Path(test_folder), load_plot)
