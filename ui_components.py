"""Reusable widgets of the kiosk: bench panel, SOC gauge, 5-segment phase bar, nurse bars, scan bar.

Components are CTkFrame subclasses that take data and callbacks; they never import paho
nor start processes. The pure helpers at the top (thresholds, formatting, phase messages)
are tested without a display.
"""

from __future__ import annotations

import functools
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import customtkinter as ctk

import formatting
import protocol
import record
from formatting import elide, format_clock, format_milliohm, format_number, grade_color
from grading import GRADE_TO_CHECK
from kiosk_messages import NOTICE_LIFETIME_S, BenchAlarm, Kind, SecurityKind, SecurityMessage
from kiosk_state import (
    LINK_ALARM,
    LINK_ESP,
    LINK_IDLE,
    LINK_LABELS,
    LINK_ONLINE,
    LINK_RECORDING,
    LINK_UNKNOWN,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_FREE,
    STATUS_INTERRUPTED,
    HistoryEntry,
    MeasuresView,
    ResultView,
    RiView,
)

# =========================================================================== colours

BG_APP = "#121416"
BG_PANEL = "#1f2327"
BG_SCANBAR = "#181b1e"
TEXT = "#e8eaed"
MUTED = "#9aa0a6"
COLOR_OK = "#66bb6a"
COLOR_WARN = "#ffa726"
COLOR_ALARM = "#ef5350"
COLOR_INFO = "#64b5f6"
COLOR_UNKNOWN = "#5f6368"
SEGMENT_EMPTY = "#3a3f44"
ALERT_BG = "#c62828"
NOTICE_BG = "#1e3a52"  # a recovery notice: informational blue, never the alarm's red
ONLINE_BG = "#2e7d32"
IDLE_BG = "#34393e"  # offline as expected (free bench, test ended or stopped): neutral

# One colour per phase (1 Ri/diffusion, 2 charge, 3 discharge, 4 storage recharge, 5 finished).
PHASE_COLORS = formatting.PHASE_COLORS

LEVEL_OK, LEVEL_WARN, LEVEL_ALARM = "ok", "warn", "alarm"
LEVEL_COLORS = {LEVEL_OK: COLOR_OK, LEVEL_WARN: COLOR_WARN, LEVEL_ALARM: COLOR_ALARM}

# Operator message kinds (kiosk_messages.Kind) -> (text colour, background); an alarm is white on red.
MESSAGE_STYLES: dict[Kind, tuple[str, str]] = {
    Kind.INFO: (TEXT, BG_SCANBAR),
    Kind.SUCCESS: (COLOR_OK, BG_SCANBAR),
    Kind.REFUSAL: (COLOR_ALARM, BG_SCANBAR),
    Kind.ALARM: ("#ffffff", ALERT_BG),
}

# Link states (kiosk_state.LINK_*) -> pill colour.
LINK_COLORS = {LINK_ONLINE: ONLINE_BG, LINK_IDLE: IDLE_BG, LINK_ALARM: ALERT_BG, LINK_UNKNOWN: COLOR_UNKNOWN}

# Bench status kinds (kiosk_state) -> colour of the status text.
STATUS_COLORS = {STATUS_FREE: MUTED, STATUS_BUSY: COLOR_INFO, STATUS_INTERRUPTED: COLOR_WARN, STATUS_DONE: COLOR_OK}


# =========================================================================== thresholds


@dataclass(frozen=True)
class Thresholds:
    """Colour limits of one measurement: below alarm_low or above alarm_high is an alarm, etc."""

    alarm_low: Optional[float] = None
    warn_low: Optional[float] = None
    warn_high: Optional[float] = None
    alarm_high: Optional[float] = None

    def level(self, value: float) -> str:
        """LEVEL_OK, LEVEL_WARN or LEVEL_ALARM for `value`."""
        if (self.alarm_low is not None and value < self.alarm_low) or (
            self.alarm_high is not None and value > self.alarm_high
        ):
            return LEVEL_ALARM
        if (self.warn_low is not None and value < self.warn_low) or (
            self.warn_high is not None and value > self.warn_high
        ):
            return LEVEL_WARN
        return LEVEL_OK


# 16S LFP pack (3.2 V nominal per cell). 2.5 V/cell = 40.0 V is the discharge cut-off,
# 2.8 V/cell = 44.8 V is close to it; 3.65 V/cell = 58.4 V is the end-of-charge voltage
# held during CV, so warn only just above it and alarm at 3.70 V/cell = 59.2 V.
PACK_VOLTAGE_THRESHOLDS_V = Thresholds(alarm_low=40.0, warn_low=44.8, warn_high=58.5, alarm_high=59.2)
# |current| for a 100 Ah pack: 0.6 C is above the 0.5 C test currents, 1 C is the BMS limit.
CURRENT_ABS_THRESHOLDS_A = Thresholds(warn_high=60.0, alarm_high=100.0)
# LFP: charge allowed 0..45 °C, discharge up to 60 °C; warn 10 °C inside those limits.
TEMPERATURE_THRESHOLDS_C = Thresholds(alarm_low=0.0, warn_low=10.0, warn_high=45.0, alarm_high=55.0)
# Spread between the highest and lowest cell: < 50 mV is a healthy, balanced LFP pack.
CELL_SPREAD_THRESHOLDS_MV = Thresholds(warn_high=50.0, alarm_high=100.0)
# SOC is not an alarm (phase 3 empties the pack on purpose): colour only, like a fuel gauge.
SOC_THRESHOLDS_PCT = Thresholds(alarm_low=20.0, warn_low=50.0)


def level_color(thresholds: Thresholds, value: Optional[float]) -> str:
    """Text colour of a measurement (grey when unknown)."""
    if value is None:
        return MUTED
    return LEVEL_COLORS[thresholds.level(value)]


def get_phase_message(step: Optional[int]) -> str:
    """Phase label text: "Phase 3/5 : Décharge"."""
    if step in protocol.PHASES:
        return f"Phase {step}/5 : {protocol.PHASE_NAMES[step]}"
    if step == protocol.STEP_STOP:
        return "Arrêt fin de journée"
    return "Phase -/5"


# =========================================================================== fonts


FONT_BASE_SIZES: dict[str, int] = {
    "title": 16,
    "status": 12,
    "phase": 12,
    "value": 14,
    "name": 11,
    "small": 10,
    "alert": 13,
    "scan": 15,
    "message": 14,
}
MIN_FONT_PX = 8
# Below these sizes an operator at arm's length cannot read the text: the layout elides rather than shrink further.
FONT_MIN_PX: dict[str, int] = {
    "title": 12,
    "status": 11,
    "phase": 11,
    "value": 12,
    "name": 10,
    "small": 10,
    "alert": 12,
    "scan": 14,
    "message": 16,  # the operator's main channel: always readable, whatever the number of benches
}
MIN_LEGIBLE_PX = 10  # canvas text (gauge, nurse values, captions)
MEASURE_CACHE_SIZE = 4096  # canvas texts are few ("0".."100", "100 %"): their widths are measured once


class Fonts:
    """Shared CTkFont objects; `rescale` resizes every widget using them at once."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._measure_fonts: dict[tuple[int, bool], tkfont.Font] = {}
        self._widths: dict[tuple[str, int, bool], int] = {}
        self._fonts: dict[str, ctk.CTkFont] = {}
        for name in FONT_BASE_SIZES:
            weight = "bold" if name in ("title", "value", "alert") else "normal"
            self._fonts[name] = ctk.CTkFont(size=self.size_of(name), weight=weight)  # CTkFont sizes are pixels

    def px(self, base: int, minimum: int = MIN_FONT_PX) -> int:
        """Pixel size of a base size at the current scale (never below `minimum`)."""
        return max(minimum, int(round(base * self.scale)))

    def size_of(self, name: str) -> int:
        """Pixel size of a named font at the current scale, never below its legible minimum."""
        return self.px(FONT_BASE_SIZES[name], FONT_MIN_PX[name])

    def __getitem__(self, name: str) -> ctk.CTkFont:
        return self._fonts[name]

    def rescale(self, scale: float) -> bool:
        """Change the scale; True when the sizes changed."""
        if abs(scale - self.scale) < 0.02:
            return False
        self.scale = scale
        for name, font in self._fonts.items():
            font.configure(size=self.size_of(name))
        return True

    def canvas_font(self, base: int, bold: bool = False) -> tuple:
        """A Tk font tuple for canvas text (negative size = pixels)."""
        return self.canvas_font_px(self.px(base), bold)

    @staticmethod
    def canvas_font_px(px: int, bold: bool = False) -> tuple:
        """A Tk font tuple of `px` pixels for canvas text."""
        return ("TkDefaultFont", -px, "bold") if bold else ("TkDefaultFont", -px)

    def measure(self, text: str, px: int, bold: bool = False) -> int:
        """Width in pixels of `text` drawn with canvas_font_px(px, bold) (cached: gauges and nurses ask often)."""
        cached = self._widths.get((text, px, bold))
        if cached is not None:
            return cached
        font = self._measure_fonts.get((px, bold))
        if font is None:
            font = self._measure_fonts[(px, bold)] = tkfont.Font(font=self.canvas_font_px(px, bold))
        if len(self._widths) >= MEASURE_CACHE_SIZE:
            self._widths.clear()
        width = self._widths[(text, px, bold)] = int(font.measure(text))
        return width


class _CachedLabels:
    """Skip Tk reconfiguration when a label's text and colour did not change (16 benches x 10 Hz)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str, Optional[str]]] = {}

    def set(self, label: ctk.CTkLabel, text: str, color: Optional[str] = None) -> None:
        key = id(label)
        if self._cache.get(key) == (text, color):
            return
        self._cache[key] = (text, color)
        if isinstance(label, ElidedLabel):
            label.set_text(text, color)
        elif color is None:
            label.configure(text=text)
        else:
            label.configure(text=text, text_color=color)


class ElidedLabel(ctk.CTkLabel):
    """A one-line label: its text whole when it fits, else cut with an ellipsis, never clipped mid-letter.

    Grid it with sticky "ew": its width is the cell's, and the text adapts to it (not the reverse).
    """

    MARGIN_PX = 4

    def __init__(self, master: Any, font: ctk.CTkFont, **kwargs: Any) -> None:
        super().__init__(master, text="", font=font, **kwargs)
        self.full_text = ""
        self._measure_font = font
        self._shown = ""
        self._color: Optional[str] = kwargs.get("text_color")
        self._fitted: tuple[str, int] = ("", -1)  # (full text, width) the shown text was computed for
        self._width = 0  # from <Configure>: asking Tk for it at every BMS line costs a round trip
        self._widest_char_px: Optional[tuple[int, int]] = None  # (widest digit, widest glyph), measured once
        # Request one character's width whatever the text: if the request followed the text, the grid would
        # give a longer text more room, which changes the elision, which changes the request... a resize loop.
        self._label.configure(width=1)
        tk.Misc.bind(self, "<Configure>", self._on_configure, add="+")

    def _on_configure(self, event: tk.Event) -> None:
        self._width = int(event.width)
        self._apply(None)

    def _create_grid(self) -> None:
        super()._create_grid()
        self._label.grid_configure(sticky="ew")  # the inner label spans the cell (its text is left-aligned)

    def set_text(self, text: str, color: Optional[str] = None) -> None:
        """Show `text` (elided to the label's width) in `color`, in one reconfiguration."""
        self.full_text = text
        self._apply(color)

    def _fits_surely(self, text: str, width_px: int) -> bool:
        # Most texts (a measure, "Phase 2/5 : Charge") are well within their label: an upper bound of their
        # width (digits at the widest digit, anything else at the widest glyph) spares a round trip to Tk.
        if self._widest_char_px is None:
            measure = self._measure_font.measure
            self._widest_char_px = (max(int(measure(d)) for d in "0123456789"),
                                    max(int(measure(ch)) for ch in "WM@—%"))
        digit_px, widest_px = self._widest_char_px
        return sum(digit_px if ch.isdigit() else widest_px for ch in text) <= width_px

    def _apply(self, color: Optional[str]) -> None:
        width = self._width
        if (self.full_text, width) != self._fitted:
            room = width - self.MARGIN_PX
            # Not laid out yet: the whole text (the first <Configure> fits it).
            if width <= 1 or self._fits_surely(self.full_text, room):
                shown = self.full_text
            else:
                shown = elide(self.full_text, room, self._measure_font.measure)
            self._fitted = (self.full_text, width)
        else:
            shown = self._shown
        changes: dict[str, Any] = {}
        if shown != self._shown:
            changes["text"] = self._shown = shown
        if color is not None and color != self._color:
            changes["text_color"] = self._color = color
        if changes:  # one configure: a colour change redraws the whole customtkinter widget
            self.configure(**changes)

    def refit(self) -> None:
        """Elide again (after a font change: the width is the same, the text's size is not)."""
        self._fitted = ("", -1)
        self._widest_char_px = None
        self._apply(None)

    @property
    def elided(self) -> bool:
        """True when the text shown is cut."""
        return self._shown != self.full_text


# =========================================================================== phase bar

SEG_PENDING, SEG_RUNNING, SEG_DONE, SEG_STOPPED = "pending", "running", "done", "stopped"
PHASE_BAR_PX, COMPACT_PHASE_BAR_PX = 14, 8
ANIMATION_PERIOD_S = 2.0


class PhaseBar(ctk.CTkFrame):
    """Five coloured segments: done phases full, the running one animated, the rest grey."""

    def __init__(self, master: Any, fonts: Fonts, height: int = PHASE_BAR_PX) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=0, height=height)
        self.fonts = fonts
        self.canvas = tk.Canvas(self, height=height, bg=BG_PANEL, highlightthickness=0, bd=0)
        self.canvas.pack(fill="both", expand=True)
        self.states: list[str] = [SEG_PENDING] * 5
        self.fraction = 0.0  # animated fill of the running segment
        self._seg_boxes: list[tuple[float, float, float, float]] = []
        self.canvas.bind("<Configure>", lambda _e: self.redraw())

    @property
    def running(self) -> Optional[int]:
        """Phase (1..5) whose segment is animated, or None."""
        for i, state in enumerate(self.states):
            if state == SEG_RUNNING:
                return i + 1
        return None

    def set_states(self, states: list[str]) -> None:
        """Set all five segment states at once."""
        if states != self.states:
            self.states = list(states)
            self.redraw()

    def animate(self, now_s: float) -> None:
        """Advance the animation of the running segment (called by the app's animation tick)."""
        if self.running is None:
            return
        self.fraction = (now_s % ANIMATION_PERIOD_S) / ANIMATION_PERIOD_S
        self._draw_fill()

    def redraw(self) -> None:
        """Draw the five segments for the current size and states."""
        c = self.canvas
        c.delete("all")
        width, height = max(c.winfo_width(), 50), max(c.winfo_height(), 6)
        gap = max(3, width // 100)
        seg_w = (width - 4 * gap) / 5
        self._seg_boxes = []
        for i, state in enumerate(self.states):
            x0 = i * (seg_w + gap)
            box = (x0, 1, x0 + seg_w, height - 1)
            self._seg_boxes.append(box)
            color = PHASE_COLORS[i + 1]
            fill = color if state in (SEG_DONE, SEG_STOPPED) else SEGMENT_EMPTY
            c.create_rectangle(*box, fill=fill, outline="")
            if state == SEG_STOPPED:  # stopped at end of day: hatched to tell it from a finished phase
                c.create_rectangle(*box, fill=SEGMENT_EMPTY, outline="", stipple="gray50")
            if state == SEG_RUNNING:
                c.create_rectangle(box[0], box[1], box[0], box[3], fill=color, outline="", tags="fill")
                c.create_rectangle(*box, outline=color, width=2)
        self._draw_fill()

    def _draw_fill(self) -> None:
        running = self.running
        if running is None or len(self._seg_boxes) < running:
            return
        x0, y0, x1, y1 = self._seg_boxes[running - 1]
        self.canvas.coords("fill", x0, y0, x0 + (x1 - x0) * self.fraction, y1)


# =========================================================================== SOC gauge


class _CanvasWidget(ctk.CTkFrame):
    """A frame holding one canvas of BASE_WIDTH (scaled with the fonts), redrawn on every resize."""

    BASE_WIDTH = 44

    def __init__(self, master: Any, fonts: Fonts) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=0)
        self.fonts = fonts
        self.canvas = tk.Canvas(self, width=fonts.px(self.BASE_WIDTH), height=20, bg=BG_PANEL,
                                highlightthickness=0, bd=0)
        self.canvas.pack(fill="both", expand=True)
        # Each subclass defines redraw(): draw itself at the canvas's current size.
        self.canvas.bind("<Configure>", lambda _e: self.redraw())


class SocGauge(_CanvasWidget):
    """A vertical battery gauge filled to the SOC, coloured like a fuel gauge, with the value in it."""

    BASE_WIDTH = 44

    def __init__(self, master: Any, fonts: Fonts) -> None:
        self.soc_pct: Optional[float] = None
        self.fill_color: Optional[str] = None
        super().__init__(master, fonts)

    def set_soc(self, soc_pct: Optional[float], fill_color: Optional[str] = None) -> None:
        """Show a new SOC (None: unknown), its fill in `fill_color` (by the SOC's level when not given)."""
        rounded = None if soc_pct is None else round(soc_pct)
        if rounded != (None if self.soc_pct is None else round(self.soc_pct)) or fill_color != self.fill_color:
            self.soc_pct, self.fill_color = soc_pct, fill_color
            self.redraw()
        self.soc_pct = soc_pct

    @property
    def text(self) -> str:
        """The value the gauge shows ("67 %"; "— %" when unknown)."""
        return f"{formatting.UNKNOWN}{formatting.NBSP}%" if self.soc_pct is None else format_number(self.soc_pct, 0, "%")

    def label_fit(self, inner_width_px: float) -> tuple[str, int]:
        """The text drawn in the gauge and its size: the largest that keeps clear of the border, unit dropped last."""
        base = self.fonts.px(12)
        for text in (self.text, self.text.split(formatting.NBSP)[0]):
            for px in range(base, MIN_LEGIBLE_PX - 1, -1):
                if self.fonts.measure(text, px, bold=True) <= inner_width_px:
                    return text, px
        return self.text.split(formatting.NBSP)[0], MIN_LEGIBLE_PX

    def min_width_px(self) -> int:
        """The narrowest gauge that still holds "100 %" at a legible size clear of its border."""
        return self.fonts.measure(f"100{formatting.NBSP}%", MIN_LEGIBLE_PX, bold=True) + 2 * (3 + 2 + 3)

    def redraw(self) -> None:
        """Draw the battery outline, fill and value."""
        c = self.canvas
        _fit_width(c, max(self.fonts.px(self.BASE_WIDTH), self.min_width_px()))
        c.delete("all")
        width, height = max(c.winfo_width(), 20), max(c.winfo_height(), 30)
        nub_h = max(3, height // 18)
        body = (3, nub_h + 1, width - 3, height - 2)
        c.create_rectangle(width * 0.35, 1, width * 0.65, nub_h + 1, fill=MUTED, outline="")
        c.create_rectangle(*body, outline=MUTED, width=2)
        if self.soc_pct is not None:
            inner_h = body[3] - body[1] - 4
            top = body[3] - 2 - inner_h * max(0.0, min(100.0, self.soc_pct)) / 100.0
            color = self.fill_color or level_color(SOC_THRESHOLDS_PCT, self.soc_pct)
            c.create_rectangle(body[0] + 3, top, body[2] - 3, body[3] - 3, fill=color, outline="")
        # Clear of the 2 px border by at least 3 px on each side.
        text, px = self.label_fit(body[2] - body[0] - 10)
        c.create_text(width / 2, (body[1] + body[3]) / 2, text=text, fill=TEXT, font=self.fonts.canvas_font_px(px, True),
                      tags="value")


def _fit_width(canvas: tk.Canvas, width_px: int) -> None:
    """Request a new canvas width after a font rescale (the grid then resizes it)."""
    if int(canvas.cget("width")) != width_px:
        canvas.configure(width=width_px)


# =========================================================================== nurse bars


class NurseBars(_CanvasWidget):
    """Six small bars: state of charge of the nurse batteries that absorb the discharge.

    The value of each bar is written under it when it fits its slot at a legible size;
    otherwise one line under the bars gives the range ("33–37 %").
    """

    BASE_WIDTH = 80
    CAPTION = "Nourrices"

    def __init__(self, master: Any, fonts: Fonts) -> None:
        self.values: list[Optional[int]] = [None] * protocol.NURSE_COUNT
        self.caption_shown = ""
        self.value_texts: list[str] = []  # what is written under the bars (six values, or one range)
        super().__init__(master, fonts)

    def set(self, index: int, soc_pct: Optional[int]) -> None:
        """Set nurse `index` (1..6)."""
        if self.values[index - 1] != soc_pct:
            self.values[index - 1] = soc_pct
            self.redraw()

    def clear(self) -> None:
        """Forget every nurse value."""
        self.values = [None] * protocol.NURSE_COUNT
        self.redraw()

    def range_text(self) -> str:
        """One line for all six: "100 %", "33–37 %", or "—" when none is known."""
        known = [v for v in self.values if v is not None]
        if not known:
            return formatting.UNKNOWN
        low, high = min(known), max(known)
        return format_number(low, 0, "%") if low == high else f"{low}–{format_number(high, 0, '%')}"

    def redraw(self) -> None:
        """Draw the caption, the six bars and their values."""
        c = self.canvas
        _fit_width(c, self.fonts.px(self.BASE_WIDTH))
        c.delete("all")
        width, height = max(c.winfo_width(), 30), max(c.winfo_height(), 30)
        px = max(MIN_LEGIBLE_PX, self.fonts.px(FONT_BASE_SIZES["small"]))
        measure = functools.partial(self.fonts.measure, px=px)
        self.caption_shown = elide(self.CAPTION, width - 2, measure)
        c.create_text(width / 2, 1, text=self.caption_shown, fill=MUTED, anchor="n",
                      font=self.fonts.canvas_font_px(px), tags="caption")
        n = protocol.NURSE_COUNT
        slot = width / n
        labels = [formatting.UNKNOWN if v is None else str(v) for v in self.values]
        # Under each bar at the largest legible size that fits its slot, else one range line at the caption's size.
        value_px = next((size for size in range(px, MIN_LEGIBLE_PX - 1, -1)
                         if max(self.fonts.measure(label, size) for label in labels) <= slot - 2), None)
        each_fits = value_px is not None
        self.value_texts = labels if each_fits else [elide(self.range_text(), width - 2, measure)]
        value_px = value_px or px
        top, bottom = px + 4, height - value_px - 3
        bar_w = max(4.0, slot * 0.62)
        for i, value in enumerate(self.values):
            x = slot * i + (slot - bar_w) / 2
            c.create_rectangle(x, top, x + bar_w, bottom, fill=SEGMENT_EMPTY, outline="")
            if value is not None:
                y = bottom - (bottom - top) * max(0, min(100, value)) / 100.0
                c.create_rectangle(x, y, x + bar_w, bottom, fill=COLOR_INFO, outline="")
            if each_fits:
                c.create_text(x + bar_w / 2, height - 1, text=labels[i], fill=MUTED, anchor="s",
                              font=self.fonts.canvas_font_px(value_px), tags="value")
        if not each_fits:
            c.create_text(width / 2, height - 1, text=self.value_texts[0], fill=MUTED, anchor="s",
                          font=self.fonts.canvas_font_px(px), tags="value")


# =========================================================================== link indicator


class LinkPill(ctk.CTkLabel):
    """A small coloured tag: green online, red when its absence is an alarm, neutral when expected, grey unknown."""

    def __init__(self, master: Any, text: str, fonts: Fonts) -> None:
        super().__init__(master, text=text, font=fonts["status"], fg_color=COLOR_UNKNOWN, text_color="#ffffff",
                         corner_radius=6, width=10, height=1, padx=4)
        self.online: Optional[bool] = None
        self.state = LINK_UNKNOWN

    def set_state(self, state: str, online: Optional[bool]) -> None:
        """Show a link state (kiosk_state.LINK_*); `online` is the raw status, kept for who needs it."""
        self.online = online
        if state == self.state:
            return
        self.state = state
        self.configure(fg_color=LINK_COLORS.get(state, COLOR_UNKNOWN),
                       text_color=MUTED if state == LINK_IDLE else "#ffffff")

    @property
    def color(self) -> str:
        """The pill's current colour."""
        return str(self.cget("fg_color"))


# =========================================================================== bench panel

# A panel too small for everything (16 benches on 800 x 480) keeps what an operator must see at a glance:
# header, status, phases, time left, voltage, current, SOC, temperature (their units name them). The rest
# is on the charts.
COMPACT_HIDDEN_MEASURES = frozenset({"capacity", "energy", "balance", "balancing"})

MEASURES: tuple[tuple[str, str], ...] = (
    ("voltage", "Tension"),
    ("current", "Courant"),
    ("soc", "SOC"),
    ("temperature", "Temp."),
    ("capacity", "Capacité"),
    ("energy", "Énergie"),
    ("balance", "Écart cell."),
    ("balancing", "Équil."),
)


# The red alarm's row in a panel (under the Ri line), and how many lines of text it may take there.
ALARM_ROW = 6
ALARM_LINES, COMPACT_ALARM_LINES = 3, 2

# A measure no longer live (kiosk_state.measures_view decides) is greyed: its colour no longer says how things are.
STALE_COLOR = MUTED
# The current of a line received before a stop, an `end`, the finish or the ESP going offline: it no longer flows.
CURRENT_CUT_TEXT = f"0{formatting.NBSP}A coupé"


def measure_texts(line: protocol.BmsLine) -> dict[str, str]:
    """The text of each measure of a BMS line (MEASURES' keys), French numbers with their units (pure)."""
    return {
        "voltage": format_number(line.voltage_v, 2, "V"),
        "current": format_number(line.current_a, 1, "A"),
        "soc": format_number(line.soc_pct, 0, "%"),
        "temperature": format_number(line.temperature_c, 1, "°C"),
        "capacity": format_number(line.capacity_ah, 2, "Ah"),
        "energy": format_number(line.energy_wh, 0, "Wh"),
        "balance": format_number(line.cell_spread_mv, 0, "mV"),
        "balancing": "actif" if line.balancing else "non",
    }


def measure_cells(view: MeasuresView, live_colors: dict[str, str]) -> dict[str, tuple[str, str]]:
    """(text, colour) of each measure as kiosk_state says the bench's latest line is (pure).

    Live: each value in its colour (`live_colors`, the colours of the line's values now). No longer
    live: greyed (the panel's header says how old). Cut: the current says it no longer flows, the
    other values stay readable. No line: "—".
    """
    if view.line is None:
        return {key: (formatting.UNKNOWN, MUTED) for key, _name in MEASURES}
    cells = {key: (text, live_colors.get(key, TEXT) if view.fresh else STALE_COLOR)
             for key, text in measure_texts(view.line).items()}
    if view.current_cut:
        cells["current"] = (CURRENT_CUT_TEXT, STALE_COLOR)
    return cells


class BancPanel(ctk.CTkFrame):
    """Everything about one bench: status, phase bar, measures, SOC gauge, Ri/diffusion, nurses, alert."""

    def __init__(
        self, master: Any, banc: str, fonts: Fonts, on_title_click: Optional[Callable[[str], None]] = None,
        on_link_click: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=10)
        self.banc = banc
        self.fonts = fonts
        self.labels = _CachedLabels()
        self.current_step: Optional[int] = None
        self.widgets: dict[str, Any] = {}

        self.grid_columnconfigure(1, weight=1)
        self.grid_rowconfigure(4, weight=1)
        pad = 6

        header = ctk.CTkFrame(self, fg_color="transparent")
        header.grid(row=0, column=0, columnspan=3, sticky="ew", padx=pad, pady=(pad, 0))
        header.grid_columnconfigure(1, weight=1)
        title = ctk.CTkLabel(header, text=f"Banc {protocol.banc_number(banc)}", font=fonts["title"], text_color=TEXT, height=1)
        title.grid(row=0, column=0, sticky="w")
        # How old the measures are once no longer live ("Mesures il y a 2 min"), next to the links that explain it.
        age = ElidedLabel(header, font=fonts["status"], text_color=MUTED, anchor="e", height=1)
        age.grid(row=0, column=1, sticky="ew", padx=(6, 4))
        if on_title_click is not None:
            title.bind("<Button-1>", lambda _e: on_title_click(banc))
        # The pills say what they watch; touching one says what its colour means now (on_link_click).
        esp = LinkPill(header, LINK_LABELS[LINK_ESP][0], fonts)
        esp.grid(row=0, column=2, padx=2)
        proc = LinkPill(header, LINK_LABELS[LINK_RECORDING][0], fonts)
        proc.grid(row=0, column=3, padx=(2, 0))
        if on_link_click is not None:
            for pill, link in ((esp, LINK_ESP), (proc, LINK_RECORDING)):
                pill.bind("<ButtonRelease-1>", lambda _e, link=link: on_link_click(banc, link))
        # The status has a line of its own: "Interrompu - <35-character serial> - scannez pour reprendre" must fit.
        status = ElidedLabel(self, font=fonts["status"], text_color=MUTED, anchor="w", height=1)
        status.grid(row=1, column=0, columnspan=3, sticky="ew", padx=pad)

        phase_bar = PhaseBar(self, fonts)
        phase_bar.grid(row=2, column=0, columnspan=3, sticky="ew", padx=pad, pady=(3, 2))

        phase_row = ctk.CTkFrame(self, fg_color="transparent")
        phase_row.grid(row=3, column=0, columnspan=3, sticky="ew", padx=pad)
        phase_row.grid_columnconfigure(0, weight=1)
        phase = ElidedLabel(phase_row, font=fonts["phase"], text_color=TEXT, anchor="w", height=1)
        phase.grid(row=0, column=0, sticky="ew")
        time_left = ctk.CTkLabel(phase_row, text="--:--:--", font=fonts["phase"], text_color=TEXT, anchor="e",
                                 height=1)
        time_left.grid(row=0, column=1, sticky="e")

        gauge = SocGauge(self, fonts)
        gauge.grid(row=4, column=0, sticky="ns", padx=(pad, 2), pady=2)

        measures = ctk.CTkFrame(self, fg_color="transparent")
        measures.grid(row=4, column=1, sticky="nsew", padx=4, pady=2)
        # Names and values each in a uniform group: the right half always starts mid-frame.
        measures.grid_columnconfigure((0, 2), weight=0, uniform="name")
        measures.grid_columnconfigure((1, 3), weight=1, uniform="value")
        self._secondary: list[tk.Grid] = []  # hidden in the compact layout
        for i, (key, name) in enumerate(MEASURES):
            row, col = divmod(i, 2)
            measures.grid_rowconfigure(row, weight=1)
            name_label = ctk.CTkLabel(measures, text=name, font=fonts["name"], text_color=MUTED, anchor="w", height=1)
            name_label.grid(row=row, column=col * 2, sticky="w", padx=(0, 3))
            value = ElidedLabel(measures, font=fonts["value"], text_color=MUTED, anchor="w", height=1)
            value.grid(row=row, column=col * 2 + 1, sticky="ew", padx=(0, 4))
            self.widgets[key] = value
            # In the compact layout the units say what each value is: the names give their room to the values.
            self._secondary += [name_label, value] if key in COMPACT_HIDDEN_MEASURES else [name_label]

        nurses = NurseBars(self, fonts)
        nurses.grid(row=4, column=2, sticky="ns", padx=(2, pad), pady=2)
        self._secondary += [gauge, nurses]
        self.compact = False

        ri_row = ctk.CTkFrame(self, fg_color="transparent")
        ri_row.grid(row=5, column=0, columnspan=3, sticky="ew", padx=pad, pady=(0, pad - 2))
        self._secondary.append(ri_row)
        ri_row.grid_columnconfigure((0, 1), weight=1, uniform="ri")
        ri = ElidedLabel(ri_row, font=fonts["small"], text_color=MUTED, anchor="w", height=1)
        ri.grid(row=0, column=0, sticky="ew")
        diffusion = ElidedLabel(ri_row, font=fonts["small"], text_color=MUTED, anchor="w", height=1)
        diffusion.grid(row=0, column=1, sticky="ew")

        # The red alarm takes a row of its own under everything: the measures make room for it, never hide behind it
        # (an over-temperature alarm over "Temp." left the operator blind to the very value it was about).
        alert = ctk.CTkLabel(self, text="", font=fonts["alert"], fg_color=ALERT_BG, text_color="#ffffff",
                             corner_radius=8, wraplength=300, justify="center")
        # Touch to acknowledge, on the release: hidden on the press, the label would keep customtkinter's
        # click focus while unmapped and take the keyboard from the scanner when the next alarm maps it.
        alert.bind("<ButtonRelease-1>", lambda _e: self.hide_overlay_labels())
        # A recovery notice: a blue strip over the Ri line (the least urgent), never over the measures.
        notice = ElidedLabel(self, font=fonts["status"], fg_color=NOTICE_BG, text_color=COLOR_INFO, corner_radius=6,
                             anchor="w", height=1)
        self.alarm = BenchAlarm()  # what the red alarm shows (kiosk_messages: the rules, live and from the journal)
        self.alarm_text = ""
        self.alarm_over_status = False  # the smallest layouts: the alarm covers the status and phase lines
        self.notice_until_s: Optional[float] = None
        self.unrecorded_phase: Optional[int] = None  # the ESP runs this phase while nobody records it (banc.py gone)
        self.stopped_at: Optional[int] = None  # the phase a stop (9) was shown at

        self.widgets.update(
            title=title, age=age, status=status, esp=esp, banc_process=proc, phase_bar=phase_bar, phase=phase,
            time_left=time_left, soc_gauge=gauge, progress_bar_nurse=nurses, ri=ri, diffusion=diffusion,
            security=alert, notice=notice, ri_row=ri_row,
        )
        self.labels.set(status, "Libre")
        self.labels.set(phase, get_phase_message(None))
        for key, _name in MEASURES:
            self.labels.set(self.widgets[key], formatting.UNKNOWN)
        self.update_ri_diffusion_widgets(None)
        self.bind("<Configure>", self._on_resize)

    # ------------------------------------------------------------------ layout

    def _on_resize(self, event: tk.Event) -> None:
        wrap = max(120, int(event.width * 0.85))
        if wrap != int(self.widgets["security"].cget("wraplength")):
            self.widgets["security"].configure(wraplength=wrap)
            self._fit_alarm()

    def set_compact(self, compact: bool) -> None:
        """The compact layout (a small panel): only what matters at a glance, nothing squeezed."""
        if compact == self.compact:
            return
        self.compact = compact
        for key, link in (("esp", LINK_ESP), ("banc_process", LINK_RECORDING)):
            self.widgets[key].configure(text=LINK_LABELS[link][1 if compact else 0])
        # A thinner phase bar leaves the measures a whole line each.
        self.widgets["phase_bar"].canvas.configure(height=COMPACT_PHASE_BAR_PX if compact else PHASE_BAR_PX)
        for widget in self._secondary:
            if compact:
                widget.grid_remove()
            else:
                widget.grid()

    def refit(self) -> None:
        """Elide every one-line text again (after a font rescale)."""
        for widget in self.widgets.values():
            if isinstance(widget, ElidedLabel):
                widget.refit()

    # ------------------------------------------------------------------ status and links

    def set_status(self, text: str, kind: str) -> None:
        """Header status ("Libre", "Occupé - SERIAL - Phase X/5", "Interrompu…")."""
        self.labels.set(self.widgets["status"], text, STATUS_COLORS.get(kind, MUTED))

    def set_links(self, esp_link: str, esp_online: Optional[bool], banc_link: str,
                  banc_online: Optional[bool]) -> None:
        """ESP and Enregistrement (banc.py) pills (states from kiosk_state.banc_display: offline is red only when
        it is an alarm)."""
        self.widgets["esp"].set_state(esp_link, esp_online)
        self.widgets["banc_process"].set_state(banc_link, banc_online)

    # ------------------------------------------------------------------ measures

    def update_banc_data(self, line: protocol.BmsLine, time_left_s: Optional[float]) -> None:
        """Show one BMS line just received (live: the kiosk then shows kiosk_state's view), and the time left."""
        self.show_measures(MeasuresView(line, fresh=True, age_s=0.0))
        # The seed: the phase label follows the BMS only while the UI's step is a running phase.
        if self.current_step in protocol.PHASES and self.unrecorded_phase is None:
            self.labels.set(self.widgets["phase"], get_phase_message(self.current_step))
            self.set_time_left(time_left_s)

    def measure_colors(self, line: protocol.BmsLine) -> dict[str, str]:
        """The colour of each measure of a live line (MEASURES' keys)."""
        spread = line.cell_spread_mv
        return {
            "voltage": level_color(PACK_VOLTAGE_THRESHOLDS_V, line.voltage_v),
            "current": level_color(CURRENT_ABS_THRESHOLDS_A, abs(line.current_a)),
            "soc": level_color(SOC_THRESHOLDS_PCT, line.soc_pct),
            "temperature": level_color(TEMPERATURE_THRESHOLDS_C, line.temperature_c),
            "capacity": TEXT,
            "energy": TEXT,
            "balance": level_color(CELL_SPREAD_THRESHOLDS_MV, spread),
            "balancing": COLOR_INFO if line.balancing else MUTED,
        }

    def show_measures(self, view: MeasuresView) -> None:
        """The measures as kiosk_state says they are (`measures_view`): live in their colours, or greyed with their
        age in the header, the current cut; the SOC gauge likewise."""
        line = view.line
        for key, (text, color) in measure_cells(view, self.measure_colors(line) if line else {}).items():
            self.labels.set(self.widgets[key], text, color)
        soc = None if line is None else line.soc_pct
        self.widgets["soc_gauge"].set_soc(soc, None if view.fresh else STALE_COLOR)
        self.labels.set(self.widgets["age"], view.age_text)

    def set_time_left(self, seconds: Optional[float]) -> None:
        """Time left of the current phase."""
        self.labels.set(self.widgets["time_left"], format_clock(seconds))

    def update_nurse(self, index: int, soc_pct: int) -> None:
        """Nurse battery `index` (1..6) state of charge."""
        self.widgets["progress_bar_nurse"].set(index, soc_pct)

    def update_ri_diffusion_widgets(self, ri: Optional[RiView]) -> None:
        """Ri and diffusion (discharge/charge), both brought to 25 °C like on the charts, milliohms."""
        ri = ri or RiView()
        unit = f"{formatting.NBSP}mΩ"
        self.labels.set(
            self.widgets["ri"], f"Ri 25 °C d/c : {format_milliohm(ri.ri_discharge)} / {format_milliohm(ri.ri_charge)}{unit}"
        )
        self.labels.set(
            self.widgets["diffusion"],
            f"Diff. 25 °C d/c : {format_milliohm(ri.diffusion_discharge)} / {format_milliohm(ri.diffusion_charge)}{unit}",
        )

    # ------------------------------------------------------------------ phases

    def _segments_for(self, step: int, running: bool) -> list[str]:
        states = []
        for phase in protocol.PHASES:
            if phase < step or (phase == step and (not running or step == protocol.STEP_FINISHED)):
                states.append(SEG_DONE)
            elif phase == step:
                states.append(SEG_RUNNING)
            else:
                states.append(SEG_PENDING)
        return states

    def animate_phase_segment(self, step: int) -> None:
        """Animate the running phase's segment (the previous ones are shown finished)."""
        self.widgets["phase_bar"].set_states(self._segments_for(step, running=True))

    def finalize_previous_phase(self, step: int) -> None:
        """Stop the animation: phases up to `step` shown full, the later ones empty."""
        self.widgets["phase_bar"].set_states(self._segments_for(step, running=False))

    def set_step(self, step: int) -> None:
        """A new step 1..5 from the bench (seed §4): phase bar, label, alert hidden."""
        previous = self.current_step
        self.current_step = step
        self.hide_overlay_labels()
        if previous in protocol.PHASES and previous < step:
            self.finalize_previous_phase(previous)
        if step == protocol.STEP_FINISHED:
            self.finalize_previous_phase(step)  # every segment full
            self.set_time_left(0)
        else:
            self.animate_phase_segment(step)
        self.labels.set(self.widgets["phase"], get_phase_message(step))

    def stop_phase(self, previous_step: Optional[int]) -> None:
        """Step 9 (seed §4): finalize_previous_phase, time left 00:00:00, the label shows the step reached."""
        self.current_step = protocol.STEP_STOP
        if previous_step in protocol.PHASES:
            self.finalize_previous_phase(previous_step)
            if previous_step != protocol.STEP_FINISHED:
                # Hatched rather than full: the phase was interrupted, not completed.
                states = list(self.widgets["phase_bar"].states)
                states[previous_step - 1] = SEG_STOPPED
                self.widgets["phase_bar"].set_states(states)
            self.labels.set(self.widgets["phase"], f"{get_phase_message(previous_step)} (arrêt)")
        else:
            self.widgets["phase_bar"].set_states([SEG_PENDING] * 5)
            self.labels.set(self.widgets["phase"], get_phase_message(protocol.STEP_STOP))
        self.set_time_left(0)
        self.stopped_at = previous_step
        if self.unrecorded_phase is not None:
            self.show_unrecorded_phase(self.unrecorded_phase)

    def show_unrecorded_phase(self, phase: Optional[int]) -> None:
        """The ESP still runs a phase nobody records (banc.py gone, kiosk_state says so): that phase and no clock,
        not "(arrêt) 00:00:00"; None: the phase the test reached, as before."""
        was, self.unrecorded_phase = self.unrecorded_phase, phase
        if phase is not None:
            running = get_phase_message(phase) if phase in protocol.PHASES else "L'ESP fait une phase"
            self.labels.set(self.widgets["phase"], f"{running} — non enregistrée")
            self.set_time_left(None)
        elif was is not None and self.current_step == protocol.STEP_STOP:
            self.stop_phase(self.stopped_at)
        elif was is not None and self.current_step in protocol.PHASES:
            self.labels.set(self.widgets["phase"], get_phase_message(self.current_step))

    def show_step_quietly(self, step: Optional[int]) -> None:
        """Show a step known from the state file (UI start) without touching the alert."""
        if step in protocol.PHASES:
            self.current_step = step
            if step == protocol.STEP_FINISHED:
                self.finalize_previous_phase(step)
            else:
                self.animate_phase_segment(step)
            self.labels.set(self.widgets["phase"], get_phase_message(step))

    def clear_phase(self) -> None:
        """No phase shown (a free bench: whatever its ESP publishes, no test runs there)."""
        self.current_step = None
        self.widgets["phase_bar"].set_states([SEG_PENDING] * 5)
        self.labels.set(self.widgets["phase"], get_phase_message(None))
        self.set_time_left(None)

    def tick_animation(self, now_s: float) -> None:
        """Advance the running segment's animation."""
        self.widgets["phase_bar"].animate(now_s)

    # ------------------------------------------------------------------ alarm, notice and reset

    def update_banc_security(self, message: str) -> None:
        """The red alarm, in its own row at the panel's foot: it stays until touched, or cleared by the state (next
        step, reset, its recovery notice); the measures above stay readable."""
        self.alarm_text = f"⚠ {formatting.keep_units_together(message)}"  # "30 s" never split over two lines
        self.alarm_over_status = False
        self._fit_alarm()
        self.place_alarm()

    def place_alarm(self) -> None:
        """The alarm's place: its own row under everything while the panel's layout leaves room for it there,
        else (the smallest panels) over the status and phase lines. Never over the measures."""
        alert = self.widgets["security"]
        if not self.alarm_text or self.alarm.alarm is None:
            return
        room = getattr(self, "alarm_room_px", None)  # what the layout leaves under the measures (None: no limit)
        over = room is not None and alert.winfo_reqheight() + 6 > room
        if over != self.alarm_over_status or not alert.grid_info():
            self.alarm_over_status = over
            if over:
                alert.grid(row=1, rowspan=3, column=0, columnspan=3, sticky="nsew", padx=6, pady=0)
            else:
                alert.grid(row=ALARM_ROW, rowspan=1, column=0, columnspan=3, sticky="ew", padx=6, pady=(0, 6))
            self._fit_alarm()
        alert.lift()

    def _fit_alarm(self) -> None:
        """The alarm on ALARM_LINES lines at most (fewer in the compact layout), ended by "…" when longer."""
        alert = self.widgets["security"]
        font = self.fonts["alert"]
        lines = COMPACT_ALARM_LINES if self.compact or getattr(self, "alarm_over_status", False) else ALARM_LINES
        shown = elide(self.alarm_text, lines * int(alert.cget("wraplength")) * 0.85, font.measure)
        if shown != alert.cget("text"):
            alert.configure(text=shown)

    def show_security(self, security: SecurityMessage, now_s: float) -> None:
        """A bancX/security text: a recovery notice (blue strip, fades, ends its alarm) or a red alarm."""
        visible = self.security_visible
        if self.alarm.security(security) or visible:  # the rules (kiosk_messages.BenchAlarm) say what stays
            if self.alarm.alarm is None:
                self.hide_overlay_labels()  # what the alarm was about is back: the state clears it
            else:
                self.update_banc_security(self.alarm.alarm.text)
        if security.kind is SecurityKind.ALARM:
            return
        notice = self.widgets["notice"]
        self.labels.set(notice, f"✓ {security.text}")
        if self.compact:  # no Ri line: over the status line (the phase row still says the phase)
            notice.place(in_=self.widgets["status"], relx=0, rely=0.5, anchor="w", relwidth=1.0)
        else:  # at the panel's foot, over the Ri line: never over the measures
            # Over the whole Ri line: a strip narrower than the line let its first letter show at the edge.
            notice.place(in_=self.widgets["ri_row"], relx=0, rely=0.5, anchor="w", relwidth=1.0)
        notice.lift()
        self.notice_until_s = now_s + NOTICE_LIFETIME_S

    def expire(self, now_s: float) -> None:
        """Withdraw the notice once its lifetime is over (the app calls this about once a second)."""
        if self.notice_until_s is not None and now_s >= self.notice_until_s:
            self.hide_notice()

    def hide_notice(self) -> None:
        """Hide the recovery notice."""
        self.notice_until_s = None
        self.widgets["notice"].place_forget()

    def restore_alarm(self, alarm: SecurityMessage) -> None:
        """An alarm still active in the test's journal (a kiosk that starts): shown unless one came live since."""
        if self.alarm.alarm is None:
            self.alarm.security(alarm)
            self.update_banc_security(alarm.text)

    @property
    def security_visible(self) -> bool:
        """True while the red alarm is shown."""
        return bool(self.widgets["security"].grid_info())

    @property
    def notice_visible(self) -> bool:
        """True while a recovery notice is shown."""
        return bool(self.widgets["notice"].place_info())

    def hide_overlay_labels(self) -> None:
        """Hide the security alarm (touched, the next phase, a reset)."""
        self.alarm.clear()
        self.widgets["security"].grid_remove()

    def reset(self) -> None:
        """Blank panel for a new test: no step, no measures, bars empty."""
        self.current_step = None
        self.hide_overlay_labels()
        self.hide_notice()
        self.widgets["phase_bar"].set_states([SEG_PENDING] * 5)
        self.labels.set(self.widgets["phase"], get_phase_message(None))
        self.set_time_left(None)
        for key, _name in MEASURES:
            self.labels.set(self.widgets[key], "—", MUTED)
        self.widgets["soc_gauge"].set_soc(None)
        self.widgets["progress_bar_nurse"].clear()
        self.update_ri_diffusion_widgets(None)


# =========================================================================== result card and history


def result_lines(result: ResultView) -> tuple[str, str, list[str]]:
    """What a result card says (pure): the grade, its caption, and the figures, in French."""
    figures = [
        f"SOH {format_number(result.soh_pct, 1, '%')}",
        f"Capacité {format_number(result.capacity_ah, 2, 'Ah')}",
        f"Ri 25 °C {format_milliohm(result.ri_25c_ohm, 'mΩ')}",
    ]
    if result.grade is None:
        return "…", "Verdict en attente", figures
    certificate = "certificat prêt" if result.certificate else "certificat en cours"
    if result.grade == GRADE_TO_CHECK:  # no grade: the data are for a person to check (the reason says why)
        return "À\nVÉRIFIER", f"Terminé — {result.serial} — sans classe — {certificate}", figures
    return result.grade, f"Terminé — {result.serial} — {certificate}", figures


class ResultCard(ctk.CTkFrame):
    """A finished bench's result, kept on its panel until the bench's next test starts; a touch opens the charts."""

    def __init__(self, master: Any, fonts: Fonts, on_touch: Optional[Callable[[], None]] = None) -> None:
        super().__init__(master, fg_color="#2a2f34", corner_radius=10, border_width=2, border_color=COLOR_UNKNOWN)
        self.labels = _CachedLabels()
        self.result: Optional[ResultView] = None
        self.grid_columnconfigure(1, weight=1)
        self.grid_rowconfigure((1, 2, 3), weight=1)
        self.grade = ctk.CTkLabel(self, text="", font=ctk.CTkFont(size=fonts.px(40), weight="bold"),
                                  text_color="#ffffff", fg_color=COLOR_UNKNOWN, corner_radius=8, width=fonts.px(110))
        self.grade.grid(row=0, column=0, rowspan=5, sticky="nsw", padx=8, pady=8)
        self._grade_px = (fonts.px(40), fonts.px(24))  # a grade of a letter or a word; a longer one ("À VÉRIFIER")
        self.caption = ctk.CTkLabel(self, text="", font=fonts["small"], text_color=MUTED, anchor="w", height=1)
        self.caption.grid(row=0, column=1, sticky="ew", padx=(4, 8), pady=(8, 0))
        self.figures = []
        for row in range(1, 4):
            label = ctk.CTkLabel(self, text="", font=fonts["value"], text_color=TEXT, anchor="w", height=1)
            label.grid(row=row, column=1, sticky="ew", padx=(4, 8))
            self.figures.append(label)
        self.reason = ctk.CTkLabel(self, text="", font=fonts["small"], text_color=MUTED, anchor="w", justify="left",
                                   wraplength=fonts.px(320), height=1)
        self.reason.grid(row=4, column=1, sticky="ew", padx=(4, 8), pady=(0, 8))
        if on_touch is not None:
            for widget in (self, self.grade, self.caption, *self.figures, self.reason):
                widget.bind("<Button-1>", lambda _e: on_touch())

    def set_result(self, result: ResultView) -> None:
        """Show a finished test's verdict: the grade in its colour, SOH, capacity, Ri at 25 °C."""
        self.result = result
        grade, caption, figures = result_lines(result)
        color = grade_color(result.grade) if result.grade else COLOR_UNKNOWN
        if self.grade.cget("text") != grade or self.grade.cget("fg_color") != color:
            self.grade.cget("font").configure(size=self._grade_px[0 if len(grade) <= 5 else 1])
            self.grade.configure(text=grade, fg_color=color)
            self.configure(border_color=color)
        self.labels.set(self.caption, caption)
        for label, text in zip(self.figures, figures):
            self.labels.set(label, text)
        self.labels.set(self.reason, result.reason)

    @property
    def grade_text(self) -> str:
        """The grade shown."""
        return str(self.grade.cget("text"))


def history_line(entry: HistoryEntry) -> str:
    """One test of a battery's history for people (pure): date, bench, grade, SOH, capacity."""
    start = (entry.start or "")[:16].replace("T", " ")
    if len(start) == 16:
        start = f"{start[8:10]}/{start[5:7]}/{start[0:4]} {start[11:16]}"
    try:
        banc = str(protocol.banc_number(entry.banc))
    except ValueError:  # a history row with an odd bench name: shown as it is
        banc = entry.banc
    return (f"{start or '—'}   Banc {banc}   "
            f"{record.STATUS_LABELS.get(entry.status, entry.status)}   {entry.grade or '—'}   "
            f"SOH {format_number(entry.soh_pct, 1, '%')}   {format_number(entry.capacity_ah, 2, 'Ah')}")


class HistoryWindow(ctk.CTkToplevel):
    """Every test of one battery, newest first; touching a test opens its charts."""

    def __init__(self, master: Any, serial: str, entries: list[HistoryEntry] | tuple[HistoryEntry, ...],
                 on_open: Callable[[HistoryEntry], None]) -> None:
        super().__init__(master)
        self.title(f"Historique — {serial}")
        self.configure(fg_color=BG_APP)
        width, height = min(1100, self.winfo_screenwidth()), min(700, self.winfo_screenheight())
        self.geometry(f"{width}x{height}+{(self.winfo_screenwidth() - width) // 2}+40")
        self.bind("<Escape>", lambda _e: self.destroy())
        bar = ctk.CTkFrame(self, fg_color="transparent")
        bar.pack(side="top", fill="x", padx=12, pady=(10, 4))
        ctk.CTkLabel(bar, text=f"Historique de {serial} — {len(entries)} test(s)", text_color=TEXT,
                     font=ctk.CTkFont(size=24, weight="bold")).pack(side="left")
        ctk.CTkButton(bar, text="Fermer", width=180, height=56, font=ctk.CTkFont(size=22, weight="bold"),
                      command=self.destroy).pack(side="right")
        body = ctk.CTkScrollableFrame(self, fg_color=BG_PANEL)
        body.pack(side="top", fill="both", expand=True, padx=8, pady=(0, 8))
        body.grid_columnconfigure(1, weight=1)
        self.rows: list[ctk.CTkButton] = []
        for row, entry in enumerate(entries):
            swatch = ctk.CTkLabel(body, text=entry.grade or "—", width=120, height=48, corner_radius=8,
                                  fg_color=grade_color(entry.grade) if entry.grade else COLOR_UNKNOWN,
                                  text_color="#ffffff", font=ctk.CTkFont(size=20, weight="bold"))
            swatch.grid(row=row, column=0, padx=(6, 8), pady=4)
            button = ctk.CTkButton(body, text=history_line(entry), anchor="w", height=48, font=ctk.CTkFont(size=18),
                                   fg_color="#2a2f34", hover_color="#3a3f44", text_color=TEXT,
                                   command=lambda e=entry: on_open(e))
            button.grid(row=row, column=1, sticky="ew", padx=(0, 6), pady=4)
            self.rows.append(button)
        self.after(10, self._raise)

    def _raise(self) -> None:
        self.attributes("-topmost", True)
        self.lift()


# =========================================================================== scan bar


MESSAGE_LINES = 2  # the operator message wraps onto at most this many lines, then is elided


class ScanBar(ctk.CTkFrame):
    """The scanner's entry (always focused), the operator message, the charts button, the broker state.

    The message takes what the entry, button and broker tag leave, on at most MESSAGE_LINES
    lines (its height is reserved, so the panels above never jump); a longer one ends with "…".
    Touching an alarm acknowledges it (`on_acknowledge`).
    """

    def __init__(
        self, master: Any, fonts: Fonts, on_scan: Callable[[str], None], on_graph: Callable[[], None],
        on_acknowledge: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__(master, fg_color=BG_SCANBAR, corner_radius=0)
        self.fonts = fonts
        self._on_scan = on_scan
        self.grid_columnconfigure(1, weight=1)
        self.entry = ctk.CTkEntry(self, font=fonts["scan"], width=fonts.px(170), placeholder_text="Scan…")
        self.entry.grid(row=0, column=0, padx=(6, 6), pady=6, sticky="ns")
        self.entry.bind("<Return>", self.submit)
        self.entry.bind("<KP_Enter>", self.submit)
        self.message = ctk.CTkLabel(self, text="", font=fonts["message"], text_color=TEXT, anchor="w",
                                    justify="left", wraplength=400, corner_radius=6, fg_color=BG_SCANBAR, padx=6)
        self.message.grid(row=0, column=1, sticky="ew", padx=4, pady=3)
        if on_acknowledge is not None:
            self.message.bind("<ButtonRelease-1>", lambda _e: on_acknowledge())
        self.graph_button = ctk.CTkButton(self, text="Graphiques", font=fonts["status"], width=fonts.px(100),
                                          command=on_graph)
        self.graph_button.grid(row=0, column=2, padx=4, pady=6, sticky="ns")
        self.broker = ctk.CTkLabel(self, text="Broker…", font=fonts["status"], corner_radius=6, padx=6,
                                   fg_color=COLOR_UNKNOWN, text_color="#ffffff")
        self.broker.grid(row=0, column=3, padx=(4, 6), pady=6, sticky="ns")
        self.broker_connected: Optional[bool] = None
        self.full_message = ""
        self.kind = Kind.INFO
        self.echoes: list[ScanEcho] = []
        self.bind("<Configure>", self._on_resize)
        self.fit_message()

    def _on_resize(self, event: tk.Event) -> None:
        # The message gets what the entry, button and broker tag leave.
        used = self.entry.winfo_width() + self.graph_button.winfo_width() + self.broker.winfo_width() + 52
        wrap = max(150, event.width - used)
        if wrap != int(self.message.cget("wraplength")):
            self.message.configure(wraplength=wrap)
            self.fit_message()

    def fit_message(self) -> None:
        """Reserve MESSAGE_LINES lines of the message's font; elide a message that would need more."""
        font = self.fonts["message"]
        self.message.configure(height=MESSAGE_LINES * int(font.metrics("linespace")) + 6)
        # Words wrap, they are not cut: a line holds somewhat less than the full wrap length.
        budget = MESSAGE_LINES * int(self.message.cget("wraplength")) * 0.85
        shown = elide(self.full_message, budget, font.measure)
        if shown != self.message.cget("text"):
            self.message.configure(text=shown)

    def submit(self, _event: Optional[tk.Event] = None) -> str:
        """Hand the typed text to on_scan and clear the entry (Return)."""
        text = self.entry.get()
        self.entry.delete(0, "end")
        self._on_scan(text)
        return "break"

    def show_message(self, text: str, kind: Kind = Kind.INFO) -> None:
        """Show the operator message in the style of its kind (here and in every open echo)."""
        if (text, kind) == (self.full_message, self.kind):
            return
        self.full_message, self.kind = text, kind
        color, background = MESSAGE_STYLES[kind]
        self.message.configure(text_color=color, fg_color=background)
        self.fit_message()
        self.echoes = [echo for echo in self.echoes if echo.winfo_exists()]
        for echo in self.echoes:
            echo.show(text, kind)

    def add_echo(self, echo: ScanEcho) -> None:
        """Repeat the operator message in another window (the charts) that covers the scan bar."""
        self.echoes.append(echo)
        echo.show(self.full_message, self.kind)

    @property
    def message_text(self) -> str:
        """The message currently shown."""
        return str(self.message.cget("text"))

    @property
    def message_color(self) -> str:
        """The message's text colour."""
        return str(self.message.cget("text_color"))

    def set_broker(self, connected: bool) -> None:
        """Broker connected (green) or disconnected (red, visible)."""
        if connected is self.broker_connected:
            return
        self.broker_connected = connected
        if connected:
            self.broker.configure(text="Broker connecté", fg_color=ONLINE_BG)
        else:
            self.broker.configure(text="Broker déconnecté", fg_color=ALERT_BG)

    def focus_entry(self) -> None:
        """Give the keyboard focus to the entry (the scanner types there)."""
        self.entry.focus_set()


class ScanEcho(ctk.CTkFrame):
    """The operator message repeated at the bottom of a window that hides the scan bar (the charts)."""

    def __init__(self, master: Any, font: ctk.CTkFont) -> None:
        super().__init__(master, fg_color=BG_SCANBAR, corner_radius=0)
        self.label = ctk.CTkLabel(self, text="", font=font, anchor="w", justify="left", corner_radius=6, padx=8,
                                  wraplength=1200)
        self.label.pack(fill="x", padx=8, pady=6)
        self.kind = Kind.INFO
        tk.Misc.bind(self, "<Configure>", lambda e: self.label.configure(wraplength=max(200, e.width - 40)), add="+")

    def show(self, text: str, kind: Kind) -> None:
        """Show the message in the style of its kind."""
        color, background = MESSAGE_STYLES[kind]
        self.kind = kind
        self.label.configure(text=f"Scan : {text}", text_color=color, fg_color=background)

    @property
    def text(self) -> str:
        """The text shown."""
        return str(self.label.cget("text"))
