"""The kiosk's chart window: one test's figure full screen above the kiosk, with Actualiser and Fermer.

Only the Tk thread touches widgets and it never waits on files nor draws: the data are loaded
and the figure drawn to a picture in a child process (charts.render_process); the Tk thread
polls for the picture and shows it as a PhotoImage (about 5 ms at 1920x1080).
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import customtkinter as ctk

from banclfp.analysis.measures import Summary, identity_from_folder
from banclfp.charts.chart_data import DISPLAY_BUCKETS, PlotData
from banclfp.charts.figure import RenderedChart
from banclfp.charts.render_process import ChartRenderer, RenderReply, RenderRequest
from banclfp.presentation.formatting import grade_color
from banclfp.presentation.summary_text import verdict_text

logger = logging.getLogger("banc.chart_window")


class ChartWindow(ctk.CTkToplevel):
    """Full-screen chart view of one test: loaded and drawn in a child process, shown as a picture."""

    POLL_MS = 50
    RESIZE_SETTLE_MS = 250
    FIRST_SIZE_WAIT_MS = 500  # the body's first <Configure> gives its size; without it, draw for the estimate

    def __init__(
        self,
        master: Any,
        folder: Path,
        load_plot: Callable[[Path, int], PlotData],
    ) -> None:
        """Open the window and start loading.

        `load_plot(folder, buckets)` runs in the child process (ReportError: its message is shown),
        so it must pickle by reference: a module-level function, or a functools.partial of one.
        """
        super().__init__(master)
        self.folder = Path(folder).absolute()  # the child may not share the kiosk's working directory
        self._load_plot = load_plot
        self.canvas: Optional[tk.Canvas] = None
        self.chart: Optional[RenderedChart] = None  # the picture shown, with the texts drawn in it
        self.summary: Optional[Summary] = None
        self._photo: Optional[tk.PhotoImage] = None
        self._renderer = ChartRenderer()
        self._sent = 0  # requests sent and answered, by number: merged requests share their last one's reply
        self._answered = 0
        self._started = False
        self._drawn_px = (0, 0)  # the size the picture shown was asked for
        self._closed = False
        self._resize_pending: Optional[str] = None
        serial, banc = identity_from_folder(folder)
        self.title(f"Graphiques — {serial}")
        width, height = self.winfo_screenwidth(), self.winfo_screenheight()
        self.geometry(f"{width}x{height}+0+0")
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind("<Escape>", lambda _event: self.close())
        # Destroyed without close() (the kiosk going away): the child must not outlive the window.
        self.bind("<Destroy>", self._on_destroy, add="+")

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
        # Until the body is laid out: the screen less the bar, what the body will be on the kiosk.
        self._target_px = (max(400, width - 16), max(300, height - 100))
        self.body.bind("<Configure>", self._on_body_configure, add="+")
        self.after(10, self._raise)
        # The child process starts now (its imports take a while); the first request waits for the
        # body's real size, so that the picture fits it (the estimate above may be a few % off).
        self.after(self.FIRST_SIZE_WAIT_MS, self._start)

    def _on_body_configure(self, event: Any) -> None:
        if event.width > 50 and event.height > 50:
            self._target_px = (event.width, event.height)
            if not self._started:
                self._start()
            elif self.chart is not None and self._resize_pending is None:
                # Fonts and margins are fitted to the size: draw again once resizing settles.
                self._resize_pending = self.after(self.RESIZE_SETTLE_MS, self._redraw_at_size)

    def _redraw_at_size(self) -> None:
        self._resize_pending = None
        if self._closed or self.chart is None:
            return
        if self._target_px != self._drawn_px:  # a picture larger than the body would be cut
            self._send(reload=False)

    def _start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self.reload()

    def _raise(self) -> None:
        # Above the full-screen kiosk, with or without a window manager.
        if self._closed:
            return
        self.attributes("-topmost", True)
        self.lift()
        self.focus_force()

    @property
    def loading(self) -> bool:
        """True until the picture (or the error) answering the latest request has arrived."""
        return not self._started or self._answered < self._sent

    def reload(self) -> None:
        """Load (again) the test's data and draw it, in the child process; the picture is shown when it is ready."""
        if self._answered < self._sent or self._closed:
            return
        self._send(reload=True)

    def _send(self, reload: bool) -> None:
        width, height = self._target_px
        buckets = max(400, min(DISPLAY_BUCKETS, self.winfo_screenwidth()))
        polling = self._answered < self._sent
        self._sent += 1
        self._renderer.request(RenderRequest(self.folder, buckets, width, height, reload, self._load_plot, self._sent))
        self.refresh_button.configure(state="disabled")
        if not polling:
            self.after(self.POLL_MS, self._poll)

    def _poll(self) -> None:
        if self._closed:
            return
        reply = self._renderer.poll()
        if reply is not None:
            self._answered = max(self._answered, reply.request.number)
            self._show_reply(reply)
        if self.loading:
            self.after(self.POLL_MS, self._poll)
        else:
            self.refresh_button.configure(state="normal")

    def _show_reply(self, reply: RenderReply) -> None:
        if reply.chart is None:
            self.status_label.configure(text=f"Impossible d'afficher ce test :\n{reply.error}", text_color="#c0392b")
            self.status_label.place(relx=0.5, rely=0.5, anchor="center")
            self.status_label.lift()
            return
        self.summary = reply.summary
        self._show_verdict(reply.summary)
        self._show_chart(reply.chart, reply.request)

    def _show_verdict(self, summary: Optional[Summary]) -> None:
        """The test's verdict in the title bar, in the grade's colour."""
        verdict = summary.verdict if summary is not None else None
        if summary is None or verdict is None:
            return
        self.title_label.configure(text=f"{summary.serial} — {summary.banc} — Verdict {verdict_text(verdict)}",
                                   text_color=grade_color(verdict.grade))

    def _show_chart(self, chart: RenderedChart, request: RenderRequest) -> None:
        if self.canvas is None:
            self.canvas = tk.Canvas(self.body, bg="white", highlightthickness=0, bd=0)
            self.canvas.pack(fill="both", expand=True)
        # A PPM is copied, not decoded: a few ms for a full screen (a PNG would take about 57 ms).
        photo = tk.PhotoImage(master=self.canvas, data=chart.ppm)
        self.canvas.delete("chart")
        self.canvas.create_image(0, 0, anchor="nw", image=photo, tags="chart")
        self._photo = photo  # the previous picture is freed here, on the Tk thread
        self.chart = chart
        self._drawn_px = (request.width_px, request.height_px)
        self.status_label.place_forget()
        self._raise()
        if self._drawn_px != self._target_px and self._resize_pending is None:
            # The body was resized while the child drew: catch up (at most once more).
            self._resize_pending = self.after(self.RESIZE_SETTLE_MS, self._redraw_at_size)

    def _on_destroy(self, event: Any) -> None:
        if event.widget is self:
            self._closed = True
            self._renderer.close()

    def close(self) -> None:
        """Close the window (the child process is stopped; a picture still being drawn is dropped)."""
        if self._closed:
            return
        self._closed = True
        self._renderer.close()
        try:
            if self.canvas is not None:
                self.canvas.destroy()
            self._photo = None
        finally:
            self.destroy()


def show_charts(master: Any, test_folder: Path, load_plot: Callable[[Path, int], PlotData]) -> ChartWindow:
    """Open the charts of a test in a kiosk window (non-blocking), loaded by `load_plot(folder, buckets)`; returns the window."""
    return ChartWindow(master, Path(test_folder), load_plot)
