"""Reusable widgets of the kiosk: bench panel, SOC gauge, 5-segment phase bar, nurse bars, scan bar.

Components are CTkFrame subclasses that take data and callbacks; they never import paho
nor start processes. The pure helpers at the top (thresholds, formatting, phase messages)
are tested without a display.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

import customtkinter as ctk

from banclfp.kiosk.messages import NOTICE_LIFETIME_S, BenchAlarm, Kind, SecurityKind, SecurityMessage
from banclfp.kiosk.state import (
    AGE_AGO,
    AGE_PREFIX,
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
    age_text,
)
from banclfp.presentation import display_colors, formatting
from banclfp.presentation.display_colors import (
    MEASURES,
    STALE_COLOR,
    MeasureLimits,
    measure_cells,
)
from banclfp.presentation.formatting import (
    elide,
    fit_text,
    format_clock,
    format_milliohm,
    format_number,
    get_phase_message,
    grade_color,
    wrap_lines,
)
from banclfp.recording import record
from banclfp.verdict.grading import GRADE_TO_CHECK
from banclfp.wire import protocol

# =========================================================================== colours

BG_APP = "#121416"
BG_PANEL = "#1f2327"
BG_SCANBAR = "#181b1e"
# The measures' colours and levels come from display_colors (one place, by phase and grading model).
TEXT, MUTED = display_colors.TEXT, display_colors.MUTED
COLOR_OK, COLOR_WARN = display_colors.COLOR_OK, display_colors.COLOR_WARN
COLOR_ALARM, COLOR_INFO = display_colors.COLOR_ALARM, display_colors.COLOR_INFO
COLOR_UNKNOWN = "#5f6368"
SEGMENT_EMPTY = "#3a3f44"
ALERT_BG = "#c62828"
NOTICE_BG = "#1e3a52"  # a recovery notice: informational blue, never the alarm's red
ONLINE_BG = "#2e7d32"
IDLE_BG = "#34393e"  # offline as expected (free bench, test ended or stopped): neutral

# One colour per phase (1 Ri/diffusion, 2 charge, 3 discharge, 4 storage recharge, 5 finished).
PHASE_COLORS = formatting.PHASE_COLORS

LEVEL_OK, LEVEL_WARN, LEVEL_ALARM = display_colors.LEVEL_OK, display_colors.LEVEL_WARN, display_colors.LEVEL_ALARM
LEVEL_COLORS = display_colors.LEVEL_COLORS

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

# Defined in display_colors (pure): the colour of each measure by phase and by the battery's grading model.
Thresholds = display_colors.Thresholds
PACK_VOLTAGE_THRESHOLDS_V = display_colors.PACK_VOLTAGE_THRESHOLDS_V
CURRENT_ABS_THRESHOLDS_A = display_colors.CURRENT_ABS_THRESHOLDS_A
TEMPERATURE_THRESHOLDS_C = display_colors.TEMPERATURE_THRESHOLDS_C
CELL_SPREAD_THRESHOLDS_MV = display_colors.CELL_SPREAD_THRESHOLDS_MV
SOC_THRESHOLDS_PCT = display_colors.SOC_THRESHOLDS_PCT
level_color = display_colors.level_color
CURRENT_CUT_TEXT = display_colors.CURRENT_CUT_TEXT  # the panel's current once cut (display_colors.measure_cells)


# =========================================================================== fonts


FONT_BASE_SIZES: dict[str, int] = {
    "title": 16,
    "status": 12,
    "phase": 12,
    "value": 14,
    "name": 11,
    "small": 10,
    "alert": 13,
    "alert_small": 11,  # an alarm too long for its room at the alarm's size: smaller, never cut
    "scan": 15,
    "message": 14,
}
MIN_FONT_PX = 8
# Below these sizes an operator at arm's length cannot read the text: the layout shows less (the rest on a touch)
# rather than shrink further.
FONT_MIN_PX: dict[str, int] = {
    "title": 12,
    "status": 11,
    "phase": 11,
    "value": 12,
    "name": 10,
    "small": 10,
    "alert": 12,
    "alert_small": 10,
    "scan": 14,
    "message": 16,  # the operator's main channel: always readable, whatever the number of benches
}
# The scan bar's texts stop growing here (one bench on a large screen): the message keeps its width, in lines.
FONT_MAX_PX: dict[str, int] = {"scan": 24, "message": 24}
MIN_LEGIBLE_PX = 10  # canvas text (gauge, nurse values, captions)
MEASURE_CACHE_SIZE = 4096  # canvas texts are few ("0".."100", "100 %"): their widths are measured once


# A Tk font description for canvas text: (family, size) or (family, size, "bold").
CanvasFont = tuple[str, int] | tuple[str, int, str]


class Fonts:
    """Shared CTkFont objects; `rescale` resizes every widget using them at once."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._measure_fonts: dict[tuple[int, bool], tkfont.Font] = {}
        self._widths: dict[tuple[str, int, bool], int] = {}
        self._fonts: dict[str, ctk.CTkFont] = {}
        # What was measured at these sizes (the room each panel layout needs): forgotten when they change.
        self.cache: dict[Any, Any] = {}
        for name in FONT_BASE_SIZES:
            weight = "bold" if name in ("title", "value", "alert", "alert_small") else "normal"
            self._fonts[name] = ctk.CTkFont(size=self.size_of(name), weight=weight)  # CTkFont sizes are pixels

    def px(self, base: int, minimum: int = MIN_FONT_PX) -> int:
        """Pixel size of a base size at the current scale (never below `minimum`)."""
        return max(minimum, int(round(base * self.scale)))

    def size_of(self, name: str) -> int:
        """Pixel size of a named font at the current scale, never below its legible minimum (nor above its cap)."""
        return min(self.px(FONT_BASE_SIZES[name], FONT_MIN_PX[name]), FONT_MAX_PX.get(name, 1000))

    def __getitem__(self, name: str) -> ctk.CTkFont:
        return self._fonts[name]

    def rescale(self, scale: float) -> bool:
        """Change the scale; True when the sizes changed."""
        if abs(scale - self.scale) < 0.02:
            return False
        self.scale = scale
        self.cache.clear()
        for name, font in self._fonts.items():
            font.configure(size=self.size_of(name))
        return True

    def canvas_font(self, base: int, bold: bool = False) -> CanvasFont:
        """A Tk font tuple for canvas text (negative size = pixels)."""
        return self.canvas_font_px(self.px(base), bold)

    @staticmethod
    def canvas_font_px(px: int, bold: bool = False) -> CanvasFont:
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


_MEASURED: dict[tuple[str, object, str], int] = {}  # (font name, its size, text)
MEASURED_TEXTS = 8192  # widths remembered (the same statuses, values and phases on every panel): then all again


def measurer(font: tkfont.Font) -> Callable[[str], int]:
    """`font.measure`, remembered: the layouts measure the same texts again and again, and each asks the X server."""
    name, size = str(font.name), getattr(font, "_size", None)  # a CTkFont's size, without a round trip to Tk

    def measure(text: str) -> int:
        key = (name, size, text)
        width = _MEASURED.get(key)
        if width is None:
            if len(_MEASURED) >= MEASURED_TEXTS:
                _MEASURED.clear()
            width = _MEASURED[key] = int(font.measure(text))
        return width

    return measure


class _CachedLabels:
    """Skip Tk reconfiguration when a label's text and colour did not change (16 benches x 10 Hz)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str, Optional[str], Optional[str]]] = {}

    def set(self, label: ctk.CTkLabel, text: str, color: Optional[str] = None, part: Optional[str] = None) -> None:
        """Show `text` in `color`; on an ElidedLabel, `part` (a serial) is the one part that may be shortened."""
        key = id(label)
        if self._cache.get(key) == (text, color, part):
            return
        self._cache[key] = (text, color, part)
        if isinstance(label, ElidedLabel):
            label.set_text(text, color, part)
        elif color is None:
            label.configure(text=text)
        else:
            label.configure(text=text, text_color=color)


class ElidedLabel(ctk.CTkLabel):
    """A label of `lines` lines whose text is fitted to its width, never clipped mid-letter.

    The text is shown whole when it fits; otherwise only its `part` is shortened ("RW-LONGSE…": a
    serial's end tells nothing its start does not), and a text with no such part is cut with "…"
    only as a last resort (no layout of the kiosk lets that happen: tests/test_ui_display_matrix.py).
    A `template` (the widest value the label will hold, "88,88 V") makes the label request that
    width: the panel's layout gives it the room, the text never adapts to a smaller one.

    Grid it with sticky "ew": its width is the cell's, and the text adapts to it (not the reverse).
    """

    MARGIN_PX = 4

    def __init__(self, master: tk.Misc, font: ctk.CTkFont, lines: int = 1, max_lines: int = 0, **kwargs: Any) -> None:
        super().__init__(master, text="", font=font, **kwargs)
        self.full_text = ""
        self.part: Optional[str] = None
        self.lines = lines
        self.max_lines = max_lines  # > 0: take the lines the text needs at the label's width, up to this many
        self.on_text: Optional[Callable[[], None]] = None  # called when the text changes
        self.template: Optional[str] = None
        # How the text is worded at this label's size ("3/5 Décharge" for "Phase 3/5 : Décharge"); refit() when
        # the wording changes.
        self.alias: Optional[Callable[[str], str]] = None
        self._measure_font = font
        self._shown = ""
        self._color: Optional[str] = kwargs.get("text_color")
        self._fitted: tuple[str, Optional[str], int, int] = ("", None, -1, 0)  # what the shown text was computed for
        self._width = 0  # from <Configure>: asking Tk for it at every BMS line costs a round trip
        self._widest_char_px: Optional[tuple[int, int]] = None  # (widest digit, widest glyph), measured once
        # Request one character's width whatever the text: if the request followed the text, the grid would
        # give a longer text more room, which changes the elision, which changes the request... a resize loop.
        self._label.configure(width=1)
        tk.Misc.bind(self, "<Configure>", self._on_configure, add="+")
        if lines > 1:
            self._request_lines()

    def _on_configure(self, event: tk.Event) -> None:
        self._width = int(event.width)
        self._apply(None)

    def _create_grid(self) -> None:
        super()._create_grid()
        self._label.grid_configure(sticky="ew")  # the inner label spans the cell (its text is left-aligned)

    def set_text(self, text: str, color: Optional[str] = None, part: Optional[str] = None) -> None:
        """Show `text` (fitted to the label) in `color`, in one reconfiguration; `part` may be shortened."""
        changed = (text, part) != (self.full_text, self.part)
        self.full_text, self.part = text, part
        self._apply(color)
        if changed and self.on_text is not None:
            self.on_text()

    def set_lines(self, lines: int) -> None:
        """Hold the text on `lines` lines (wrapped at the label's width), and request their height."""
        if lines != self.lines:
            self.lines = lines
            self._request_lines()
            self.refit()

    def set_template(self, template: Optional[str]) -> None:
        """Request the width of `template` (digits "8" count as the font's widest digit); None: one character."""
        self.template = template
        self._request_template()

    def _request_template(self) -> None:
        if self.template is None:
            self.configure(width=0)
            return
        text = self.template.replace("8", self._widest_digit())
        self.configure(width=measurer(self._measure_font)(text) + self.MARGIN_PX + 1)

    def _request_lines(self) -> None:
        self.configure(height=self.lines * int(self._measure_font.metrics("linespace")), justify="left")

    def _widest_digit(self) -> str:
        measure = measurer(self._measure_font)
        return max("0123456789", key=lambda d: int(measure(d)))

    def _fits_surely(self, text: str, width_px: int) -> bool:
        # Most texts (a measure, "Phase 2/5 : Charge") are well within their label: an upper bound of their
        # width (digits at the widest digit, anything else at the widest glyph) spares a round trip to Tk.
        if self._widest_char_px is None:
            measure = measurer(self._measure_font)
            self._widest_char_px = (max(int(measure(d)) for d in "0123456789"),
                                    max(int(measure(ch)) for ch in "WM@—%"))
        digit_px, widest_px = self._widest_char_px
        return sum(digit_px if ch.isdigit() else widest_px for ch in text) <= width_px

    @property
    def text_room_px(self) -> int:
        """The width the text is fitted to: the label's, less customtkinter's padding for its rounded corners."""
        inset = 2 * min(int(self._corner_radius), round(self._current_height / 2))
        return self._width - inset - self.MARGIN_PX

    def _apply(self, color: Optional[str]) -> None:
        width = self._width
        if (self.full_text, self.part, width, self.lines) != self._fitted:
            room = self.text_room_px
            text = self.alias(self.full_text) if self.alias is not None else self.full_text
            if self.max_lines and width > 1:  # the lines it needs, its part at its shortest
                part = self.part or ""
                shortest = text.replace(part, part[:SERIAL_KEPT_CHARS] + formatting.ELLIPSIS) if part else text
                needed = min(self.max_lines, len(wrap_lines(shortest, room, measurer(self._measure_font))))
                if needed != self.lines:
                    self.lines = needed
                    self._request_lines()
            # Not laid out yet: the whole text (the first <Configure> fits it).
            if width <= 1 or self._fits_surely(text, room):
                shown = text
            else:
                shown = fit_text(text, self.part, room, self.lines, measurer(self._measure_font))
            # Tk wraps where fit_text counted the lines; on one line, nowhere (a wrap kept from when the text had
            # two would break "Occupé - RW-LONGSERIAL…" over a line the layout did not give it).
            wrap = room if self.lines > 1 else 0
            if width > 1 and int(self.cget("wraplength")) != wrap:
                self.configure(wraplength=wrap)
            self._fitted = (self.full_text, self.part, width, self.lines)
        else:
            shown = self._shown
        changes: dict[str, object] = {}
        if shown != self._shown:
            changes["text"] = self._shown = shown
        if color is not None and color != self._color:
            changes["text_color"] = self._color = color
        if changes:  # one configure: a colour change redraws the whole customtkinter widget
            self.configure(**changes)

    def refit(self) -> None:
        """Fit again (after a font change: the width is the same, the text's size is not)."""
        self._fitted = ("", None, -1, 0)
        self._widest_char_px = None
        if self.template is not None:
            self._request_template()
        if self.lines > 1:
            self._request_lines()
        self._apply(None)

    @property
    def elided(self) -> bool:
        """True when the text shown is not the whole text (in its wording at this size)."""
        return self._shown != (self.alias(self.full_text) if self.alias is not None else self.full_text)


# =========================================================================== phase bar

SEG_PENDING, SEG_RUNNING, SEG_DONE, SEG_STOPPED = "pending", "running", "done", "stopped"
PHASE_BAR_PX, COMPACT_PHASE_BAR_PX = 14, 8
ANIMATION_PERIOD_S = 2.0


class PhaseBar(ctk.CTkFrame):
    """Five coloured segments: done phases full, the running one animated, the rest grey."""

    def __init__(self, master: tk.Misc, fonts: Fonts, height: int = PHASE_BAR_PX) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=0, height=height)
        self.fonts = fonts
        # A small width request (a canvas asks for 10 cm by default): the bar takes the panel's width, never sets it.
        self.canvas = tk.Canvas(self, width=50, height=height, bg=BG_PANEL, highlightthickness=0, bd=0)
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

    def __init__(self, master: tk.Misc, fonts: Fonts) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=0)
        self.fonts = fonts
        self.canvas = tk.Canvas(self, width=fonts.px(self.BASE_WIDTH), height=20, bg=BG_PANEL,
                                highlightthickness=0, bd=0)
        self.canvas.pack(fill="both", expand=True)
        self.request_height()
        # Each subclass defines redraw(): draw itself at the canvas's current size.
        self.canvas.bind("<Configure>", lambda _e: self.redraw())

    def min_height_px(self) -> int:
        """The lowest canvas that still draws everything legibly (the panel's layout gives it at least that)."""
        return 20

    def request_height(self) -> None:
        """Request min_height_px (again after a font change)."""
        if int(self.canvas.cget("height")) != self.min_height_px():
            self.canvas.configure(height=self.min_height_px())


class SocGauge(_CanvasWidget):
    """A vertical battery gauge filled to the SOC, coloured like a fuel gauge, with the value in it."""

    BASE_WIDTH = 44

    def __init__(self, master: tk.Misc, fonts: Fonts) -> None:
        self.soc_pct: Optional[float] = None
        self.fill_color = display_colors.soc_fill_color(None, None)
        self.color_step: Callable[[], Optional[int]] = lambda: None  # the phase its colour follows (the panel's)
        super().__init__(master, fonts)

    def set_soc(self, soc_pct: Optional[float], fill_color: Optional[str] = None) -> None:
        """Show a new SOC (None: unknown), its fill in `fill_color`, else as display_colors says for the phase."""
        fill_color = fill_color or display_colors.soc_fill_color(soc_pct, self.color_step())
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

    def min_height_px(self) -> int:
        """Room for the value's chip and some fill above and below it, inside the outline and its nub."""
        return 3 * self.fonts.px(12, MIN_LEGIBLE_PX) + 16

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
            c.create_rectangle(body[0] + 3, top, body[2] - 3, body[3] - 3, fill=self.fill_color, outline="")
        # Clear of the 2 px border by at least 3 px on each side.
        text, px = self.label_fit(body[2] - body[0] - 10)
        center_y = (body[1] + body[3]) / 2
        item = c.create_text(width / 2, center_y, text=text, fill=TEXT, font=self.fonts.canvas_font_px(px, True),
                             tags="value")
        # The digits on a chip of the panel's colour: readable over the fill, over its edge, or over nothing.
        x0, y0, x1, y1 = c.bbox(item)
        c.create_rectangle(max(body[0] + 3, x0 - 1), y0, min(body[2] - 3, x1 + 1), y1, fill=BG_PANEL, outline="",
                           tags="chip")
        c.tag_raise(item)


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

    def __init__(self, master: tk.Misc, fonts: Fonts) -> None:
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

    def min_height_px(self) -> int:
        """The caption, bars of a few pixels, and the values under them, each at its legible size."""
        px = max(MIN_LEGIBLE_PX, self.fonts.px(FONT_BASE_SIZES["small"]))
        return 2 * px + 4 + 3 + 16

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

    def __init__(self, master: tk.Misc, text: str, fonts: Fonts) -> None:
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

# =========================================================================== panel layouts

_NB = formatting.NBSP
# Each value requests the width of the widest it will hold ("8": the font's widest digit): a layout that shows
# a value has room for every value it can take, so a value is never cut ("53,…" was the wrong way round).
VALUE_TEMPLATES: dict[str, str] = {
    "voltage": f"88,88{_NB}V", "current": f"-888,8{_NB}A", "soc": f"100{_NB}%", "temperature": f"-88,8{_NB}°C",
    "capacity": f"888,88{_NB}Ah", "energy": f"88{_NB}888{_NB}Wh", "balance": f"8{_NB}888{_NB}mV", "balancing": "actif",
}
RI_TEMPLATES = {"ri": f"Ri 25 °C d/c : 888,88 / 888,88{_NB}mΩ", "diffusion": f"Diff. 25 °C d/c : 888,88 / 888,88{_NB}mΩ"}
ALL_MEASURES = tuple(key for key, _name in MEASURES)
ESSENTIAL_MEASURES = tuple(key for key in ALL_MEASURES if key not in COMPACT_HIDDEN_MEASURES)
RI_SIDE, RI_STACKED, RI_NONE = "side", "stacked", "none"
PANEL_PAD_PX = 6
PHASE_SHORT_NAMES = {1: "Ri/diffusion", 2: "Charge", 3: "Décharge", 4: "Stockage", 5: "Terminé"}
PHASE_SUFFIXES = ("", " (arrêt)")


def short_phase(text: str) -> str:
    """A phase row's text in a compact panel: "3/5 Décharge (arrêt)" for "Phase 3/5 : Décharge (arrêt)"."""
    for step in protocol.PHASES:
        full = get_phase_message(step)
        if text.startswith(full):
            return f"{step}/5 {PHASE_SHORT_NAMES[step]}{text[len(full):]}"
    stop = get_phase_message(protocol.STEP_STOP)
    if text.startswith(stop):
        return protocol.PHASE_NAMES[protocol.STEP_STOP] + text[len(stop):]
    return text


_STATUS_PHASE = re.compile(r" - Phase \d/5$")


def short_status(text: str) -> str:
    """A status line in a compact panel: its phase is said by the phase row ("Occupé - RW-ABCD0001")."""
    return _STATUS_PHASE.sub("", text)


def phase_texts(short: bool) -> list[str]:
    """Every text the phase row shows (its layout reserves the widest)."""
    texts = [get_phase_message(step) + suffix for step in (None, protocol.STEP_STOP, *protocol.PHASES)
             for suffix in PHASE_SUFFIXES]
    return [short_phase(text) for text in texts] if short else texts


TEXT_MAX_LINES = 3  # the status or the phase on more lines than this: the layout gives them up (detail view)
LONG_SERIAL_CHARS = 16
"""A serial longer than this may be shortened at its end where the room is short; a shorter one (RW-ABCD0001)
is always whole: its end is what tells it from its neighbours'."""
SERIAL_KEPT_CHARS = 6  # a shortened serial keeps "RW-ABC": enough to tell it from its neighbours' at a glance


@dataclass(frozen=True)
class PanelLayout:
    """What a bench panel shows; BancPanel.fit_layout takes the first of PANEL_LAYOUTS whose content fits the panel.

    Each widget requests the room its content needs (a value its widest, a text its lines), so whether
    a layout fits is Tk's own geometry request, measured once per font size, never a guess from the
    screen's size. What a layout leaves out is one touch away (BancDetail).
    """

    name: str
    measures: tuple[str, ...]  # the measures shown, in reading order
    names: bool  # each value after its name ("Tension 53,67 V"); without, its unit says what it is
    pairs_per_row: int  # measures side by side (2) or one per row (1)
    gauges: bool  # the SOC gauge and the nurse bars
    ri: str  # RI_SIDE (Ri and diffusion on one line), RI_STACKED (on two) or RI_NONE
    phase_bar_px: int  # 0: no phase bar (the phase row says the phase)
    compact: bool  # short link pills and phase names
    status: bool = True  # the status line
    phase_row: bool = True  # the phase and its time left

    @property
    def complete(self) -> bool:
        """Everything is on the panel (otherwise a touch on it shows the rest)."""
        return self.measures == ALL_MEASURES and self.names and self.gauges and self.ri != RI_NONE


_MEASURING: list[bool] = []  # non-empty while a layout is measured (update_idletasks calls <Configure> back)


@contextlib.contextmanager
def _measuring() -> Iterator[None]:
    _MEASURING.append(True)
    try:
        yield
    finally:
        _MEASURING.pop()


PANEL_LAYOUTS: tuple[PanelLayout, ...] = (
    PanelLayout("full", ALL_MEASURES, True, 2, True, RI_SIDE, PHASE_BAR_PX, False),
    PanelLayout("full-ri-stacked", ALL_MEASURES, True, 2, True, RI_STACKED, PHASE_BAR_PX, False),
    PanelLayout("tall", ALL_MEASURES, True, 1, True, RI_STACKED, PHASE_BAR_PX, False),
    PanelLayout("no-gauges", ALL_MEASURES, True, 2, False, RI_SIDE, PHASE_BAR_PX, False),
    PanelLayout("no-gauges-ri-stacked", ALL_MEASURES, True, 2, False, RI_STACKED, PHASE_BAR_PX, False),
    PanelLayout("measures", ALL_MEASURES, True, 2, False, RI_NONE, COMPACT_PHASE_BAR_PX, True),
    PanelLayout("compact", ESSENTIAL_MEASURES, False, 2, False, RI_NONE, COMPACT_PHASE_BAR_PX, True),
    PanelLayout("minimal", ESSENTIAL_MEASURES, False, 2, False, RI_NONE, 0, True),
    # The state and the phase in words, the values one touch away (an interrupted test's long instruction).
    PanelLayout("state", (), False, 2, False, RI_NONE, 0, True),
)
# Only for an alarm that no layout above leaves room for (16 benches on 800 x 480): the bench's name and the
# alarm, whole; the rest is one touch away, and comes back when the alarm is acknowledged.
ALARM_LAYOUT = PanelLayout("alarm", (), False, 2, False, RI_NONE, 0, True, status=False, phase_row=False)
# Before it, for an alarm or a recovery notice: it takes the status's and the phase's lines, never the measures'.
VALUES_LAYOUT = PanelLayout("values", ESSENTIAL_MEASURES, False, 2, False, RI_NONE, 0, True, status=False,
                            phase_row=False)

# The red alarm's row in a panel (under the Ri line): its lines are those the layout leaves it (fit_layout); over
# the status and phase lines (nothing else fits), it has two.
ALARM_ROW = 6
NOTICE_ROW, NOTICE_MAX_LINES = ALARM_ROW + 1, 3  # a recovery notice's row, under the alarm's
COMPACT_ALARM_LINES = 2



# The header's age of stale measures: while shown, it requests the width of the widest age ("88 h 88"), so every
# layout gives it that room (as the values' templates do) and the age is always whole; with more room it says more
# (age_wordings). Beside the greyed values, "3 h 59" alone says how old they are.
AGE_WIDEST = max((re.sub(r"\d", "8", age_text(s).removeprefix(AGE_AGO))
                  for s in (59, 59 * 60, 23 * 3600 + 59 * 60, 99 * 86400)), key=len)


def age_wordings(text: str) -> list[str]:
    """The header's age, longest first: "Mesures il y a 2 min", "il y a 2 min", "2 min" (pure)."""
    ago = text.removeprefix(AGE_PREFIX)
    return list(dict.fromkeys((text, ago, ago.removeprefix(AGE_AGO))))


class BancPanel(ctk.CTkFrame):
    """Everything about one bench: status, phase bar, measures, SOC gauge, Ri/diffusion, nurses, alert."""

    def __init__(
        self, master: tk.Misc, banc: str, fonts: Fonts, on_title_click: Optional[Callable[[str], None]] = None,
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
        self.names: dict[str, ctk.CTkLabel] = {}  # each measure's name (shown by the layouts with names)
        for i, (key, name) in enumerate(MEASURES):
            row, col = divmod(i, 2)
            measures.grid_rowconfigure(row, weight=1)
            name_label = ctk.CTkLabel(measures, text=name, font=fonts["name"], text_color=MUTED, anchor="w", height=1)
            name_label.grid(row=row, column=col * 2, sticky="w", padx=(0, 3))
            value = ElidedLabel(measures, font=fonts["value"], text_color=MUTED, anchor="w", height=1)
            value.grid(row=row, column=col * 2 + 1, sticky="ew", padx=(0, 4))
            self.widgets[key] = value
            self.names[key] = name_label
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
        # A recovery notice: a blue strip in a row of its own at the panel's foot, on the lines it needs (the layout
        # makes the room, as for the alarm), never over the measures.
        notice = ElidedLabel(self, font=fonts["status"], max_lines=NOTICE_MAX_LINES, fg_color=NOTICE_BG,
                             text_color=COLOR_INFO, corner_radius=6, anchor="w", height=1)
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
        self._init_layouts(measures)

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
        """Fit every text again and choose the layout again (after a font rescale)."""
        for widget in self.widgets.values():
            if isinstance(widget, ElidedLabel):
                widget.refit()
        for key in ("soc_gauge", "progress_bar_nurse"):
            self.widgets[key].request_height()
        self.fit_layout()

    # ------------------------------------------------------------------ layouts: what the panel shows at its size

    def _init_layouts(self, measures: ctk.CTkFrame) -> None:
        self.widgets["measures"] = measures
        self.layout: Optional[PanelLayout] = None
        self.limits: Optional[MeasureLimits] = None  # the battery's grading model (display_colors)
        self.on_detail: Optional[Callable[[str], None]] = None  # a touch on a panel that does not show everything
        self._size = (0, 0)
        self._fit_pending: Optional[str] = None
        self.alarm_room_px = 0  # the height the layout leaves for the alarm's row
        self.alarm_font = "alert"  # the alarm's font there: "alert_small" when it would not fit at its own size
        self.card_room_px = 0  # the height a result card keeps under an alarm (0: the alarm takes the panel)
        self.card: Optional[ResultCard] = None  # a finished test's result, over the whole panel
        self.probe: Optional[BancPanel] = None  # the kiosk's panel off screen, on which layouts are measured
        self.measuring_only = False  # True for that probe
        self.age_shown = False  # the header shows the measures' age (they are stale): it takes its room
        for key, template in {**VALUE_TEMPLATES, **RI_TEMPLATES}.items():
            self.widgets[key].set_template(template)
        self.widgets["phase"].alias = self._phase_wording
        self.widgets["status"].alias = self._status_wording
        self.widgets["age"].alias = self._age_wording
        for key in ("status", "phase"):  # their lines follow what they say: another wording, another layout maybe
            self.widgets[key].on_text = self._check_lines
        self.widgets["soc_gauge"].color_step = self.color_step
        self.bind("<Configure>", self._fit_on_resize)
        alert = self.widgets["security"]
        # The alarm takes its room from the layout: shown, hidden or reworded, the layout is chosen again.
        for sequence in ("<Map>", "<Unmap>", "<Configure>"):
            tk.Misc.bind(alert, sequence, lambda _e: self._fit_soon(), add="+")
        body = [measures, *(self.widgets[key] for key in ALL_MEASURES), *self.names.values(), self.widgets["status"],
                self.widgets["phase"], self.widgets["time_left"]]
        for widget in body:
            widget.bind("<ButtonRelease-1>", self._touched, add="+")
        for key in ("soc_gauge", "progress_bar_nurse"):
            self.widgets[key].canvas.bind("<ButtonRelease-1>", self._touched, add="+")

    def _fit_on_resize(self, event: tk.Event) -> None:
        if self.measuring_only:
            return  # the probe: layouts are tried on it one by one, it never chooses one for itself
        size = (int(event.width), int(event.height))
        if size != self._size:
            self._size = size
            self.fit_layout()

    def _fit_soon(self) -> None:
        # A timer, not an idle callback: a measure in progress runs the idle callbacks, and would run this one again.
        if self._fit_pending is None:
            self._fit_pending = self.after(1, self._fit_now)

    def _fit_now(self) -> None:
        self._fit_pending = None
        self.fit_layout()

    def _phase_wording(self, text: str) -> str:
        return short_phase(text) if self.layout is not None and self.layout.compact else text

    def _status_wording(self, text: str) -> str:
        return short_status(text) if self.layout is not None and self.layout.compact else text

    def color_step(self) -> Optional[int]:
        """The phase the measures' colours follow: the running one, else the one a stop or an interruption reached."""
        if self.current_step in protocol.PHASES:
            return self.current_step
        states = self.widgets["phase_bar"].states
        reached = [index + 1 for index, state in enumerate(states) if state != SEG_PENDING]
        return reached[-1] if reached else None

    def set_limits(self, limits: Optional[MeasureLimits]) -> None:
        """The battery's grading model (read by the worker thread): the spread and temperature colours follow it."""
        self.limits = limits

    def _request_age(self) -> None:
        """The age label requests the width of the widest age while it is shown, one character otherwise."""
        template = AGE_WIDEST if self.age_shown else None
        if template != self.widgets["age"].template:
            self.widgets["age"].set_template(template)

    def _age_wording(self, text: str) -> str:
        """The longest wording of the age that fits its label (the shortest, "2 min", always does: its request)."""
        label = self.widgets["age"]
        wordings = age_wordings(text)
        if label._width <= 1:
            return wordings[0]
        measure = measurer(label._measure_font)
        return next((wording for wording in wordings if measure(wording) <= label.text_room_px), wordings[-1])

    def _text_lines(self, key: str, room: int, compact: bool = False) -> int:
        """Lines the status or the phase needs at `room` px for what it says now (a serial at its shortest)."""
        label = self.widgets[key]
        text = label.full_text if not compact else short_phase(label.full_text) if key == "phase" \
            else short_status(label.full_text)
        part = label.part or ""
        if part:
            text = text.replace(part, part[:SERIAL_KEPT_CHARS] + formatting.ELLIPSIS)
        return max(1, min(TEXT_MAX_LINES, len(wrap_lines(text, room, measurer(label._measure_font)))))

    def _rooms(self, width: int) -> tuple[int, int]:
        """The width the status and the phase are fitted to, in a panel `width` wide."""
        room = width - 2 * PANEL_PAD_PX - ElidedLabel.MARGIN_PX
        time_left = self.widgets["time_left"]
        return room, room - int(self.fonts["phase"].measure(str(time_left.cget("text")))) - 2

    def _check_lines(self) -> None:
        # A new status or phase: when it needs another number of lines, the layout is chosen again.
        width = self._size[0]
        if width <= 1 or self.layout is None:
            return
        status_room, phase_room = self._rooms(width)
        if (self._text_lines("status", status_room, self.layout.compact) != self.widgets["status"].lines
                or self._text_lines("phase", phase_room, self.layout.compact) != self.widgets["phase"].lines):
            self._fit_soon()

    def layout_needs(self, status_lines: int, phase_lines: int) -> dict[str, tuple[int, int]]:
        """The size each layout requests (Tk's geometry), measured once per font size on the `probe`.

        The probe is a panel of the kiosk's placed off screen: what it requests while each layout is
        tried moves nothing on screen (a panel on the grid would resize its neighbours), and, mapped,
        it is laid out (Tk does not lay out an unmapped widget: its requests would be stale).
        """
        key = ("panel-needs", status_lines, phase_lines, self.age_shown)
        title_px = int(self.fonts["title"].measure(str(self.widgets["title"].cget("text"))))
        if key not in self.fonts.cache:
            probe = self.probe if self.probe is not None else self
            probe.widgets["status"].set_lines(status_lines)
            probe.widgets["phase"].set_lines(phase_lines)
            probe.age_shown = self.age_shown
            probe._request_age()
            needs = {}
            with _measuring():
                for layout in (*PANEL_LAYOUTS, VALUES_LAYOUT, ALARM_LAYOUT):
                    probe.apply_layout(layout)
                    probe.update_idletasks()
                    needs[layout.name] = (probe.winfo_reqwidth(), probe.winfo_reqheight())
            probe_title = str(probe.widgets["title"].cget("text"))
            self.fonts.cache[key] = (needs, int(self.fonts["title"].measure(probe_title)))
        needs, probe_title_px = self.fonts.cache[key]
        extra = max(0, title_px - probe_title_px)  # measured on a panel of a shorter title ("Banc 1", not "Banc 16")
        return {name: (width + extra, height) for name, (width, height) in needs.items()}

    def alarm_text_shown(self) -> str:
        """The red alarm's whole text ("" without an alarm on show)."""
        alert = self.widgets["security"]
        if not alert.grid_info() and not alert.place_info():
            return ""
        return str(getattr(self, "alarm_text", "") or alert.cget("text"))

    def alarm_need_px(self, font_name: str = "alert") -> int:
        """The height the red alarm's whole text takes in its row, in fonts[font_name] (0 without an alarm)."""
        text = self.alarm_text_shown()
        if not text:
            return 0
        alert = self.widgets["security"]
        font = self.fonts[font_name]
        lines = len(wrap_lines(text, int(alert.cget("wraplength")), measurer(font)))
        return max(int(alert.cget("height")), lines * int(font.metrics("linespace"))) + PANEL_PAD_PX

    def notice_need_px(self, width: int) -> int:
        """The height the recovery notice's row takes, on the lines its text needs at the panel's width (0: none)."""
        notice = self.widgets["notice"]
        if not notice.grid_info():
            return 0
        room = width - 2 * PANEL_PAD_PX - 2 * 6 - ElidedLabel.MARGIN_PX  # its rounded edges
        lines = min(NOTICE_MAX_LINES, len(wrap_lines(notice.full_text, room, measurer(notice._measure_font))))
        return lines * int(notice._measure_font.metrics("linespace")) + PANEL_PAD_PX

    def fit_layout(self) -> None:
        """Show the richest layout whose content, the alarm's included (whole), fits the panel's size.

        An alarm takes the room it needs: the layout gives up what it must for it (at the alarm's size,
        else at the smallest legible one), down to the bench's name and the alarm alone. Under a result
        card, the panel takes the alarm layout: the card shows the result, the alarm its row.
        """
        width, height = self._size
        if width <= 1 or height <= 1:
            return
        if _MEASURING:  # called back by a resize while something is measured: once that is done
            self._fit_soon()
            return
        status_room, phase_room = self._rooms(width)
        status_lines = {compact: self._text_lines("status", status_room, compact) for compact in (False, True)}
        phase_lines = {compact: self._text_lines("phase", phase_room, compact) for compact in (False, True)}
        needs = {}  # each layout's, with the status and the phase on the lines they need in its wording
        for compact, lines in phase_lines.items():
            measured = self.layout_needs(status_lines[compact], lines)
            needs.update({layout.name: measured[layout.name] for layout in (*PANEL_LAYOUTS, VALUES_LAYOUT, ALARM_LAYOUT)
                          if layout.compact == compact})
        layouts = (ALARM_LAYOUT,) if self.card is not None else PANEL_LAYOUTS
        chosen: Optional[PanelLayout] = None
        # With a card, the card's smallest layout, else (an alarm that needs the room) the alarm alone.
        card_heights = (self.card.min_height_px(), 0) if self.card is not None else (0,)
        notice_px = self.notice_need_px(width)
        for card_px, font_name in ((c, f) for c in card_heights for f in ("alert", "alert_small")):
            alarm_px = self.alarm_need_px(font_name) + notice_px
            # With an alarm or a notice, the measures before the state's words; then the alarm alone.
            candidates = (*layouts[:-1], VALUES_LAYOUT, layouts[-1], ALARM_LAYOUT) if alarm_px and self.card is None \
                else layouts
            chosen = next((layout for layout in candidates if needs[layout.name][0] <= width
                           and max(needs[layout.name][1], card_px) + alarm_px <= height), None)
            if chosen is not None or not alarm_px:
                break
        if chosen is None:  # nothing fits: the leanest, and the alarm at its smallest (fitted to what is left)
            chosen = ALARM_LAYOUT if self.alarm_text_shown() else layouts[-1]
        self.alarm_font, self.card_room_px = font_name, card_px
        self.widgets["status"].set_lines(status_lines[chosen.compact])
        self.widgets["phase"].set_lines(phase_lines[chosen.compact])
        self.apply_layout(chosen)
        self.alarm_room_px = height - max(needs[chosen.name][1], card_px)  # what the alarm's row may take
        if self.alarm_text_shown():  # its row, its lines and its font, from the room left
            for method in ("place_alarm", "_fit_alarm"):
                getattr(self, method, lambda: None)()
        self._place_card()

    def set_card(self, card: Optional[ResultCard]) -> None:
        """Cover the panel with a result card (None: take it away)."""
        if self.card is not None and self.card is not card:
            self.card.place_forget()
        self.card = card
        if card is None:
            return
        self._place_card()

    def _place_card(self) -> None:
        # Over everything but the alarm's row: a finished test's alarm ("À VÉRIFIER") stays readable beside it.
        card = self.card
        if card is None:
            return
        alarm_px = min(self.alarm_need_px(self.alarm_font), self._size[1] - self.card_room_px)
        if self.card_room_px == 0 and alarm_px:  # the alarm needs the whole panel: the result is one touch away
            card.place_forget()
            return
        # tk's own place: customtkinter's refuses a height, here an offset from the panel's (relheight=1)
        tk.Place.place_configure(card, in_=self, x=0, y=0, relwidth=1, relheight=1, height=-alarm_px)
        card.lift()
        card.fit(self._size[0], self._size[1] - alarm_px)  # once placed: Tk lays out no unmapped widget

    def apply_layout(self, layout: PanelLayout) -> None:
        """Show what `layout` shows, where it shows it."""
        if layout is self.layout:
            return
        wording_changes = self.layout is None or layout.compact != self.layout.compact
        self.layout = layout
        self.set_compact(layout.compact)  # the link pills' wording (and the compact layout's defaults, redone here)
        w = self.widgets

        def show(widget: Any, visible: bool) -> None:
            if visible:
                widget.grid()
            else:
                widget.grid_remove()

        if layout.phase_bar_px:
            w["phase_bar"].canvas.configure(height=layout.phase_bar_px)
        show(w["phase_bar"], layout.phase_bar_px > 0)
        show(w["status"], layout.status)
        show(w["phase"].master, layout.phase_row)  # the phase row: the phase and its time left
        show(w["measures"], bool(layout.measures))
        show(w["soc_gauge"], layout.gauges)
        show(w["progress_bar_nurse"], layout.gauges)
        for key in ALL_MEASURES:
            value, name = w[key], self.names[key]
            if key not in layout.measures:
                value.grid_remove()
                name.grid_remove()
                continue
            row, column = divmod(layout.measures.index(key), layout.pairs_per_row)
            value.grid(row=row, column=column * 2 + 1, sticky="ew", padx=(0, 4))
            if layout.names:
                name.grid(row=row, column=column * 2, sticky="w", padx=(0, 3))
            else:
                name.grid_remove()
        rows = -(-len(layout.measures) // layout.pairs_per_row)
        for row in range(len(ALL_MEASURES)):
            w["measures"].grid_rowconfigure(row, weight=1 if row < rows else 0)
        show(w["ri_row"], layout.ri != RI_NONE)
        stacked = layout.ri == RI_STACKED
        w["ri"].grid(row=0, column=0, columnspan=2 if stacked else 1, sticky="ew")
        w["diffusion"].grid(row=1 if stacked else 0, column=0 if stacked else 1, columnspan=2 if stacked else 1,
                            sticky="ew")
        if wording_changes:
            phase = w["phase"]
            phase.set_template(max(phase_texts(layout.compact), key=self.fonts["phase"].measure))
            phase.refit()
            w["status"].refit()

    def _touched(self, _event: tk.Event) -> None:
        if self.on_detail is not None and self.layout is not None and not self.layout.complete:
            self.on_detail(self.banc)

    def detail_items(self) -> list[tuple[str, str, str]]:
        """Everything the panel knows, as (name, text, colour) lines: what a small layout leaves out included."""
        w = self.widgets

        def color(label: ElidedLabel, default: str = TEXT) -> str:
            return str(label._color or default)

        items = [("État", w["status"].full_text, color(w["status"], MUTED)),
                 ("Phase", f"{w['phase'].full_text}   {w['time_left'].cget('text')}", TEXT)]
        items += [(name, w[key].full_text, color(w[key])) for key, name in MEASURES]
        nurses = w["progress_bar_nurse"].values
        items.append(("Nourrices", "   ".join(formatting.UNKNOWN if v is None else format_number(v, 0, "%")
                                               for v in nurses), TEXT))
        items += [("Ri", w["ri"].full_text, MUTED), ("Diffusion", w["diffusion"].full_text, MUTED)]
        alarm = str(getattr(self, "alarm_text", "") or w["security"].cget("text"))
        if self.security_visible and alarm:
            items.append(("Alarme", alarm, COLOR_ALARM))
        if self.notice_visible:
            items.append(("Avis", w["notice"].full_text, COLOR_INFO))
        if self.card is not None and self.card.winfo_ismapped():
            items = items[:1] + self.card.detail_items() + items[1:]
        return items

    # ------------------------------------------------------------------ status and links

    def set_status(self, text: str, kind: str, serial: Optional[str] = None) -> None:
        """Header status ("Libre", "Occupé - SERIAL - Phase X/5", "Interrompu…"); where it does not fit, only the
        `serial`'s end is shortened (the words around it say what to do)."""
        part = serial if serial and len(serial) > LONG_SERIAL_CHARS else None
        self.labels.set(self.widgets["status"], text, STATUS_COLORS.get(kind, MUTED), part)

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
        """The colour of each measure of a live line (MEASURES' keys): display_colors', by the phase and the
        battery's grading model."""
        return display_colors.measure_colors(line, self.color_step(), self.limits)

    def show_measures(self, view: MeasuresView) -> None:
        """The measures as kiosk_state says they are (`measures_view`): live in their colours, or greyed with their
        age in the header, the current cut; the SOC gauge likewise."""
        line = view.line
        for key, (text, color) in measure_cells(view, self.measure_colors(line) if line else {}).items():
            self.labels.set(self.widgets[key], text, color)
        soc = None if line is None else line.soc_pct
        self.widgets["soc_gauge"].set_soc(soc, None if view.fresh else STALE_COLOR)
        self.labels.set(self.widgets["age"], view.age_text)
        if bool(view.age_text) != self.age_shown:  # the age takes its room in the header, or gives it back
            self.age_shown = bool(view.age_text)
            self._request_age()
            self._fit_soon()

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
        """A new step 1..5 from the bench (docs/kiosque.md, « Un panneau par banc »): phase bar, label, alert hidden."""
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
        """Step 9 (docs/kiosque.md, « Un panneau par banc »): finalize_previous_phase, time left 00:00:00, the label shows the step reached."""
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
        """The alarm whole, on the lines its row has: fit_layout makes that room (at the alarm's size, else at the
        smallest legible one: `alarm_font`); over the status, on COMPACT_ALARM_LINES."""
        alert = self.widgets["security"]
        font = self.fonts[getattr(self, "alarm_font", "alert")]
        if getattr(self, "alarm_over_status", False):
            lines = COMPACT_ALARM_LINES
        else:
            room = int(getattr(self, "alarm_room_px", 0)) - PANEL_PAD_PX
            lines = max(1, room // int(font.metrics("linespace")))
        shown = fit_text(self.alarm_text, None, int(alert.cget("wraplength")), lines, measurer(font))
        changes: dict[str, object] = {}
        if alert.cget("font") is not font:
            changes["font"] = font
        if shown != alert.cget("text"):
            changes["text"] = shown
        if changes:
            alert.configure(**changes)

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
        notice.grid(row=NOTICE_ROW, column=0, columnspan=3, sticky="ew", padx=PANEL_PAD_PX, pady=(0, PANEL_PAD_PX))
        self.notice_until_s = now_s + NOTICE_LIFETIME_S
        self._fit_soon()  # its room, from the layout

    def expire(self, now_s: float) -> None:
        """Withdraw the notice once its lifetime is over (the app calls this about once a second)."""
        if self.notice_until_s is not None and now_s >= self.notice_until_s:
            self.hide_notice()

    def hide_notice(self) -> None:
        """Hide the recovery notice."""
        self.notice_until_s = None
        if self.widgets["notice"].grid_info():
            self.widgets["notice"].grid_remove()
            self._fit_soon()

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
        return bool(self.widgets["notice"].grid_info())

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


CARD_SIDE, CARD_STACKED, CARD_FIGURES, CARD_BRIEF, CARD_TINY = "side", "stacked", "figures", "brief", "tiny"
# Richest first, the first that fits is shown; from CARD_FIGURES on, a touch shows the rest (caption, reason).
CARD_LAYOUTS = (CARD_SIDE, CARD_STACKED, CARD_FIGURES, CARD_BRIEF, CARD_TINY)
CARD_PAD_PX = 8
CARD_CACHE_SIZE = 1000  # layouts remembered for (result, size): beyond, all are measured again
FIGURE_TEMPLATES = (f"SOH 100,0{_NB}%", f"Capacité 888,88{_NB}Ah", f"Ri 25 °C 888,88{_NB}mΩ")
DETAIL_HINT = "Touchez : tout le résultat"


class ResultCard(ctk.CTkFrame):
    """A finished bench's result over its whole panel, until the bench's next test starts; a touch opens the charts.

    Nothing of the panel shows through (BancPanel.set_card places it over everything but the alarm's
    row). It takes the richest of CARD_LAYOUTS whose content fits, measured like the panel's: the grade
    beside the figures, above them, or, in the smallest panels, the grade and the SOH with the rest one
    touch away (the panel's detail view, `on_detail`).
    """

    def __init__(self, master: tk.Misc, fonts: Fonts, on_touch: Optional[Callable[[], None]] = None, title: str = "",
                 on_detail: Optional[Callable[[], None]] = None) -> None:
        super().__init__(master, fg_color="#2a2f34", corner_radius=10, border_width=2, border_color=COLOR_UNKNOWN)
        self.fonts = fonts
        self.labels = _CachedLabels()
        self.result: Optional[ResultView] = None
        self.layout: Optional[str] = None
        self._fitted_for: Optional[tuple[int, int, Optional[ResultView], float]] = None
        self.on_touch, self.on_detail = on_touch, on_detail
        self.title = ctk.CTkLabel(self, text=title, font=fonts["title"], text_color=TEXT, anchor="w", height=1)
        self._grade_font = ctk.CTkFont(size=fonts.px(40), weight="bold")
        self.grade = ctk.CTkLabel(self, text="", font=self._grade_font, text_color="#ffffff", fg_color=COLOR_UNKNOWN,
                                  corner_radius=8, height=1, padx=6)
        self.caption = ElidedLabel(self, font=fonts["small"], max_lines=2, text_color=MUTED, anchor="w", height=1)
        self.figures = [ElidedLabel(self, font=fonts["value"], text_color=TEXT, anchor="w", height=1) for _ in range(3)]
        for label, template in zip(self.figures, FIGURE_TEMPLATES):
            label.set_template(template)
        self.reason = ctk.CTkLabel(self, text="", font=fonts["small"], text_color=MUTED, anchor="w", justify="left",
                                   height=1)
        self.hint = ctk.CTkLabel(self, text=DETAIL_HINT, font=fonts["small"], text_color=MUTED, anchor="w", height=1)
        self.grid_columnconfigure(1, weight=1)
        for widget in (self, self.title, self.grade, self.caption, *self.figures, self.reason, self.hint):
            widget.bind("<Button-1>", self._touched)

    def _touched(self, _event: tk.Event) -> None:
        if self.layout in (CARD_FIGURES, CARD_BRIEF, CARD_TINY) and self.on_detail is not None:
            self.on_detail()  # what the card leaves out, with a button to the charts
        elif self.on_touch is not None:
            self.on_touch()

    def set_result(self, result: ResultView) -> None:
        """Show a finished test's verdict: the grade in its colour, SOH, capacity, Ri at 25 °C."""
        self.result = result
        _grade, caption, figures = result_lines(result)
        color = grade_color(result.grade) if result.grade else COLOR_UNKNOWN
        if self.grade.cget("fg_color") != color:
            self.grade.configure(fg_color=color)
            self.configure(border_color=color)
        self.labels.set(self.caption, caption, None, result.serial if len(result.serial) > LONG_SERIAL_CHARS else None)
        for label, text in zip(self.figures, figures):
            self.labels.set(label, text)
        self.labels.set(self.reason, result.reason)
        self._word_grade()

    @property
    def grade_text(self) -> str:
        """The grade the card gives (result_lines' wording)."""
        return result_lines(self.result)[0] if self.result is not None else ""

    def _word_grade(self) -> None:
        """The grade beside the figures in a big box ("À\\nVÉRIFIER" on two lines), or as a pill on the title's line."""
        grade = self.grade_text
        if self.layout in (None, CARD_SIDE):
            text, px = grade, self.fonts.px(40) if len(grade) <= 5 else self.fonts.px(24)
        else:
            text, px = grade.replace("\n", " "), self.fonts.size_of("title")
        if int(self._grade_font.cget("size")) != px:
            self._grade_font.configure(size=px)
        if self.grade.cget("text") != text:
            self.grade.configure(text=text)

    def fit(self, width: int, height: int) -> None:
        """Take the richest layout whose content fits width x height (the panel's size, less the alarm's row)."""
        key = (width, height, self.result, self.fonts.scale)
        if key == self._fitted_for or width <= 1 or height <= 1:
            return
        self._fitted_for = key
        known = self.fonts.cache.get(("card", key))  # the same result at the same size: the layout measured before
        if known is not None:
            self._apply(known, width)
            return
        with _measuring():  # placed, the card's requests move nothing around it
            for layout in CARD_LAYOUTS:
                self._apply(layout, width)
                self.update_idletasks()
                if self.winfo_reqwidth() <= width and self.winfo_reqheight() <= height:
                    break
        if len(self.fonts.cache) > CARD_CACHE_SIZE:
            self.fonts.cache.clear()
        self.fonts.cache[("card", key)] = self.layout

    def _apply(self, layout: str, width: int) -> None:
        self.layout = layout
        self._word_grade()
        for widget in (self.title, self.grade, self.caption, *self.figures, self.reason, self.hint):
            widget.grid_forget()
        pad = CARD_PAD_PX
        side = layout == CARD_SIDE
        self.title.grid(row=0, column=0, columnspan=2 if side else 1, sticky="w", padx=pad, pady=(pad, 2))
        if side:
            self.grade.grid(row=1, column=0, rowspan=5, sticky="nsw", padx=(pad, 6), pady=(2, pad))
        else:
            self.grade.grid(row=0, column=1, sticky="e", padx=pad, pady=(pad, 2))
        text_column, span = (1, 1) if side else (0, 2)
        padx = (0, pad) if side else (pad, pad)
        rows: list[Any] = []
        if layout in (CARD_SIDE, CARD_STACKED):
            rows = [self.caption, *self.figures, self.reason]
        elif layout == CARD_FIGURES:
            rows = [*self.figures, self.hint]
        elif layout == CARD_BRIEF:
            rows = [self.figures[0], self.hint]
        for row, widget in enumerate(rows, start=1):
            widget.grid(row=row, column=text_column, columnspan=span, sticky="ew", padx=padx,
                        pady=(0, pad) if row == len(rows) else 0)
        # The text column's width beside the grade's box (its text's request, now, and its rounded edges): the reason
        # wraps in it.
        grade_px = self.grade._label.winfo_reqwidth() + 2 * int(self.grade.cget("corner_radius"))
        room = width - 2 * pad - 4 - (grade_px + 6 if side else 0)
        if layout in (CARD_SIDE, CARD_STACKED):
            self.reason.configure(wraplength=max(40, room - 2))

    def refit(self) -> None:
        """After a font rescale: its values' widths, and its layout, again."""
        for label in (self.caption, *self.figures):
            label.refit()
        self._fitted_for = None
        panel = self.master
        if isinstance(panel, BancPanel) and panel.card is self:
            panel.fit_layout()

    def min_height_px(self) -> int:
        """The height of its smallest layout (the bench's name and the grade), border included."""
        return int(self.fonts["title"].metrics("linespace")) + 2 * CARD_PAD_PX + 2 + 4

    def detail_items(self) -> list[tuple[str, str, str]]:
        """The whole result as (name, text, colour) lines, for the detail view."""
        if self.result is None:
            return []
        grade, caption, figures = result_lines(self.result)
        items = [("Résultat", grade.replace("\n", " "), grade_color(self.result.grade) if self.result.grade else TEXT),
                 ("", caption, MUTED)]
        items += [("", figure, TEXT) for figure in figures]
        if self.result.reason:
            items.append(("Motif", self.result.reason, MUTED))
        return items


DETAIL_LIFETIME_S = 60.0
DETAIL_REFRESH_MS = 500
DETAIL_FONT_PX = (20, 18, 16, 14, 13, 12)  # the largest that holds every line in the window is taken


class BancDetail(ctk.CTkFrame):
    """Everything about one bench at a readable size, over the bench grid: what a small panel or card leaves out.

    Touching a panel (or a card) that does not show everything opens it; a touch on it closes it, as
    do DETAIL_LIFETIME_S without one. It reads the panel again every DETAIL_REFRESH_MS: it shows what
    the panel knows now, never a copy that ages.
    """

    def __init__(self, master: tk.Misc, panel: BancPanel, on_close: Callable[[], None],
                 on_graph: Callable[[], None]) -> None:
        super().__init__(master, fg_color=BG_PANEL, corner_radius=10, border_width=2, border_color=COLOR_INFO)
        self.panel = panel
        self._on_close = on_close
        self._font = ctk.CTkFont(size=DETAIL_FONT_PX[0])
        self._bold = ctk.CTkFont(size=DETAIL_FONT_PX[0], weight="bold")
        self.grid_columnconfigure((1, 3), weight=1, uniform="detail")
        header = ctk.CTkFrame(self, fg_color="transparent")
        header.grid(row=0, column=0, columnspan=4, sticky="ew", padx=12, pady=(12, 6))
        header.grid_columnconfigure(0, weight=1)
        self.title = ctk.CTkLabel(header, text=f"Banc {protocol.banc_number(panel.banc)} — détail", font=self._bold,
                                  text_color=TEXT, anchor="w")
        self.title.grid(row=0, column=0, sticky="w")
        self.title.bind("<ButtonRelease-1>", lambda _e: self.close())
        self.graph_button = ctk.CTkButton(header, text="Graphiques", font=self._font, width=150, height=44,
                                          command=on_graph)
        self.graph_button.grid(row=0, column=1, padx=8)
        self.close_button = ctk.CTkButton(header, text="Fermer", font=self._font, width=150, height=44,
                                          command=self.close)
        self.close_button.grid(row=0, column=2)
        self.cells: list[tuple[ctk.CTkLabel, ctk.CTkLabel]] = []
        self._items: list[tuple[str, str, str]] = []
        self._fitted_for: Optional[tuple[int, int, tuple[tuple[str, str, str], ...]]] = None
        self._closed = False
        tk.Misc.bind(self, "<Configure>", lambda _e: self.fit(), add="+")
        self.bind("<ButtonRelease-1>", lambda _e: self.close())
        self._lifetime = self.after(int(DETAIL_LIFETIME_S * 1000), self.close)
        self.refresh()

    def refresh(self) -> None:
        """Read the panel again (and again in DETAIL_REFRESH_MS)."""
        if self._closed:
            return
        items = self.panel.detail_items()
        if [name for name, _t, _c in items] != [name for name, _t, _c in self._items]:
            for name_label, value_label in self.cells:
                name_label.destroy()
                value_label.destroy()
            self.cells = []
            half = -(-len(items) // 2)
            for index, (name, _text, _color) in enumerate(items):
                row, column = index % half + 1, 2 * (index // half)
                name_label = ctk.CTkLabel(self, text=name, font=self._font, text_color=MUTED, anchor="nw", height=1)
                name_label.grid(row=row, column=column, sticky="nw", padx=(12, 8), pady=2)
                value_label = ctk.CTkLabel(self, text="", font=self._bold, anchor="nw", justify="left", height=1)
                value_label.grid(row=row, column=column + 1, sticky="nw", padx=(0, 12), pady=2)
                for label in (name_label, value_label):
                    label.bind("<ButtonRelease-1>", lambda _e: self.close())
                self.cells.append((name_label, value_label))
        for (_name_label, value_label), (_name, text, color) in zip(self.cells, items):
            if value_label.cget("text") != text or value_label.cget("text_color") != color:
                value_label.configure(text=text, text_color=color)
        self._items = items
        self.fit()
        self.after(DETAIL_REFRESH_MS, self.refresh)

    def fit(self) -> None:
        """The largest of DETAIL_FONT_PX at which every line, wrapped in its column, fits the view."""
        width, height = self.winfo_width(), self.winfo_height()
        key = (width, height, tuple(self._items))
        if width <= 1 or height <= 1 or not self.cells or key == self._fitted_for:
            return
        self._fitted_for = key
        for px in DETAIL_FONT_PX:
            for font in (self._font, self._bold):
                if int(font.cget("size")) != px:
                    font.configure(size=px)
            names_px = max(int(self._font.measure(str(name.cget("text")))) for name, _v in self.cells)
            wrap = max(80, (width - 4 * 12 - 2 * (names_px + 8)) // 2 - 4)
            for _name, value in self.cells:
                if int(value.cget("wraplength")) != wrap:
                    value.configure(wraplength=wrap)
            self.update_idletasks()
            if self.winfo_reqheight() <= height:
                return

    def close(self) -> None:
        """Take the view away (a touch, Fermer, its lifetime)."""
        if self._closed:
            return
        self._closed = True
        self.after_cancel(self._lifetime)
        self._on_close()
        self.destroy()


def history_line(entry: HistoryEntry) -> str:
    """One test of a battery's history for people (pure): date, bench, grade, SOH, capacity."""
    start = (entry.start or "")[:16].replace("T", " ")
    if len(start) == 16:
        start = f"{start[8:10]}/{start[5:7]}/{start[0:4]} {start[11:16]}"
    try:
        banc = str(protocol.banc_number(entry.banc))
    except ValueError:  # a history row with an odd bench name: shown as it is
        banc = entry.banc
    where = f"{entry.site} : " if entry.site else ""  # another Pi of the lab
    return (f"{start or '—'}   {where}Banc {banc}   "
            f"{record.STATUS_LABELS.get(entry.status, entry.status)}   {entry.grade or '—'}   "
            f"SOH {format_number(entry.soh_pct, 1, '%')}   {format_number(entry.capacity_ah, 2, 'Ah')}")


class HistoryWindow(ctk.CTkToplevel):
    """Every test of one battery, newest first; touching a test opens its charts."""

    def __init__(self, master: tk.Misc, serial: str, entries: list[HistoryEntry] | tuple[HistoryEntry, ...],
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
            # Another Pi's test: listed (the 48 h rule and the grade count across the lab), charted on that Pi.
            button = ctk.CTkButton(body, text=history_line(entry), anchor="w", height=48, font=ctk.CTkFont(size=18),
                                   fg_color="#2a2f34", hover_color="#3a3f44", text_color=TEXT,
                                   text_color_disabled=MUTED, state="disabled" if entry.site else "normal",
                                   command=lambda e=entry: on_open(e))
            button.grid(row=row, column=1, sticky="ew", padx=(0, 6), pady=4)
            self.rows.append(button)
        self.after(10, self._raise)

    def _raise(self) -> None:
        self.attributes("-topmost", True)
        self.lift()


# =========================================================================== scan bar


MESSAGE_LINES = 2  # the operator message always has room for this many lines: a short one never moves the panels
MESSAGE_MAX_SHARE = 0.4  # a longer one takes the lines it needs, up to this share of the window's height
MESSAGE_INSET_PX = 6 + 6 + 1  # the label's rounded edge and its text padding, on each side
SCAN_ENTRY_SHARE, SCAN_BUTTON_SHARE = 0.18, 0.13  # of the bar's width, at most


class ScanBar(ctk.CTkFrame):
    """The scanner's entry (always focused), the operator message, the charts button, the broker state.

    The message takes the width the entry, button and broker tag leave, wrapped at that width
    (measured, again at every resize). MESSAGE_LINES lines are always reserved, so that a short
    message never moves the panels; a longer one gets the lines it needs (the panels above make
    room, choosing their layouts again), whole. Touching an alarm acknowledges it (`on_acknowledge`).
    """

    def __init__(
        self, master: tk.Misc, fonts: Fonts, on_scan: Callable[[str], None], on_graph: Callable[[], None],
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
        # The message's own width (what the entry, button and broker tag leave) sets where it wraps.
        tk.Misc.bind(self.message, "<Configure>", self._on_message_resize, add="+")
        tk.Misc.bind(self, "<Configure>", self._on_resize, add="+")
        self.fit_message()

    def _on_resize(self, event: tk.Event) -> None:
        # The entry, the button and the broker's tag never take more than their share: the message has the rest.
        width = int(event.width)
        entry_px = min(self.fonts.px(170), int(width * SCAN_ENTRY_SHARE))
        button_px = min(self.fonts.px(100), int(width * SCAN_BUTTON_SHARE))
        if int(self.entry.cget("width")) != entry_px:
            self.entry.configure(width=entry_px)
        if int(self.graph_button.cget("width")) != button_px:
            self.graph_button.configure(width=button_px)
        wrap = max(40, int(width * SCAN_BUTTON_SHARE))
        if int(self.broker.cget("wraplength")) != wrap:
            self.broker.configure(wraplength=wrap)  # "Broker déconnecté" on two lines rather than wider

    def _on_message_resize(self, event: tk.Event) -> None:
        wrap = max(60, int(event.width) - 2 * MESSAGE_INSET_PX)
        if wrap != int(self.message.cget("wraplength")):
            self.message.configure(wraplength=wrap)
            self.fit_message()

    def fit_message(self) -> None:
        """The message whole, on the lines it needs at its width (MESSAGE_LINES at least, their height reserved).

        Only a text longer than MESSAGE_MAX_SHARE of the window (an exception's text, not a message
        of the kiosk's) would end with "…".
        """
        font = self.fonts["message"]
        wrap = int(self.message.cget("wraplength"))
        linespace = int(font.metrics("linespace"))
        most = max(MESSAGE_LINES, int(self.winfo_toplevel().winfo_height() * MESSAGE_MAX_SHARE) // linespace)
        shown = fit_text(self.full_message, None, wrap, most, measurer(font))
        lines = max(MESSAGE_LINES, len(wrap_lines(shown, wrap, measurer(font))))
        height = lines * linespace + 6
        if int(self.message.cget("height")) != height:
            self.message.configure(height=height)
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

    def __init__(self, master: tk.Misc, font: ctk.CTkFont) -> None:
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
