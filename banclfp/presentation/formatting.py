"""How numbers, durations and phases look to people: one place for the kiosk, the charts and the report text.

Pure functions, no toolkit imported (the report's modules never import the UI).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Optional

from banclfp.wire import protocol

PHASE_COLORS: dict[int, str] = {1: "#ab47bc", 2: "#42a5f5", 3: "#ff7043", 4: "#26a69a", 5: "#66bb6a"}
"""The colour of each phase, on the kiosk's panels and on the charts."""

UNKNOWN = "—"
NBSP = "\u00a0"
"""Between a number and its unit ("48 h" never wraps) and between groups of thousands."""
ELLIPSIS = "…"


def darker(color: str, factor: float = 0.72) -> str:
    """A darker shade of "#rrggbb", for a phase's colour as text on white."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(c * factor) for c in (r, g, b)))


def format_clock(seconds: Optional[float]) -> str:
    """A countdown as a clock: "HH:MM:SS" (capped at 99:59:59; "--:--:--" when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--:--"
    total = min(int(round(seconds)), 99 * 3600 + 59 * 60 + 59)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def format_duration(seconds: float) -> str:
    """A duration for people: "2 j 03 h 12 min", "3 h 05 min", "4 min 07 s", "12 s" (no-break space before units)."""
    total = int(round(max(0.0, float(seconds))))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}{NBSP}j {hours:02d}{NBSP}h {minutes:02d}{NBSP}min"
    if hours:
        return f"{hours}{NBSP}h {minutes:02d}{NBSP}min"
    if minutes:
        return f"{minutes}{NBSP}min {secs:02d}{NBSP}s"
    return f"{total}{NBSP}s"


def format_milliohm(value_ohm: Optional[float], unit: str = "") -> str:
    """Ohms -> "1,23" milliohms, followed by `unit` when given ("1,23 mΩ"; "—" when unknown)."""
    if value_ohm is None or not math.isfinite(value_ohm):
        return UNKNOWN
    return format_number(value_ohm * 1000, 2, unit)


def format_number(value: Optional[float], decimals: int = 0, unit: str = "", *, group: bool = True) -> str:
    """A number as French operators write it: decimal comma, grouped thousands, no-break space before the unit ("—" if unknown)."""
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return UNKNOWN
    text = f"{float(value):,.{decimals}f}" if group else f"{float(value):.{decimals}f}"
    if text.lstrip("-").strip("0.,") == "":  # -0.00 is 0,00: a sign on nothing alarms for nothing
        text = text.lstrip("-")
    text = text.replace(",", NBSP).replace(".", ",")
    return f"{text}{NBSP}{unit}" if unit else text


GRADE_COLORS: dict[str, str] = {
    "A": "#2e7d32", "B": "#7cb342", "C": "#f9a825", "REJET": "#c62828", "NON CLASSÉ": "#616161",
    "À VÉRIFIER": "#e65100",  # deep orange: no grade until a person checks the data (protocol v3)
}
"""The colour of each grade (certificate, kiosk card); a grade of another name gets GRADE_OTHER_COLOR."""
GRADE_OTHER_COLOR = "#1565c0"


def grade_color(grade: Optional[str]) -> str:
    """The colour a grade is shown in."""
    return GRADE_COLORS.get(grade or "", GRADE_OTHER_COLOR)


def format_limit(value: Optional[float], unit: str = "") -> str:
    """A limit from grading.json as written there: no decimals for a whole number ("90 %", "0,5 %")."""
    if value is None or not math.isfinite(value):
        return UNKNOWN
    decimals = 0 if float(value).is_integer() else len(repr(float(value)).split(".")[1])
    return format_number(value, min(decimals, 4), unit)


def elide(text: str, max_px: float, measure: Callable[[str], float]) -> str:
    """`text` cut with an ellipsis so that measure(result) <= max_px (whole when it fits; "…" at worst)."""
    if measure(text) <= max_px:
        return text
    low, high = 0, len(text)  # the longest prefix whose "prefix…" fits
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle].rstrip() + ELLIPSIS) <= max_px:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ELLIPSIS


_NUMBER_UNIT_RE = re.compile(r"(\d) (s|min|h|j|ms|V|mV|A|Ah|Wh|%|°C|mΩ|Ω)(?=$|[\s.,;:)!?])")


def keep_units_together(text: str) -> str:
    """A text from elsewhere (a bench's alert) with a no-break space between each number and its unit."""
    return _NUMBER_UNIT_RE.sub(lambda m: f"{m.group(1)}{NBSP}{m.group(2)}", text)


def _longest_prefix(text: str, max_px: float, measure: Callable[[str], float]) -> int:
    """The length of the longest prefix of `text` within max_px."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= max_px:
            low = middle
        else:
            high = middle - 1
    return low


def wrap_lines(text: str, max_px: float, measure: Callable[[str], float]) -> list[str]:
    """The lines Tk draws `text` on in a label of wraplength `max_px` (max_px <= 0: no wrapping).

    As Tk's text layout does: a newline ends a line; a line breaks after the last space that
    keeps it within max_px (a no-break space is not one, so "48 h" stays whole); a word wider
    than max_px on its own is broken between characters.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if max_px <= 0 or measure(paragraph) <= max_px:
            lines.append(paragraph)
            continue
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if measure(candidate.rstrip(" ")) <= max_px:  # spaces at a line's end take no room (Tk's way)
                current = candidate
                continue
            if current:
                lines.append(current.rstrip(" "))
            current = word
            while measure(current) > max_px and len(current) > 1:  # a word longer than a line: cut between characters
                cut = max(1, _longest_prefix(current, max_px, measure))
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current.rstrip(" ") or current)
    return lines


def fit_text(text: str, part: Optional[str], max_px: float, lines: int, measure: Callable[[str], float]) -> str:
    """`text` as it fits `lines` lines of max_px (wrapped as Tk wraps): whole, else with only `part` shortened at
    its end (a long serial, keeping 6 characters), else, as a last resort for a text nobody foresaw, cut at its end
    with an ellipsis."""

    def fits(candidate: str) -> bool:
        if measure(candidate) <= max_px:
            return True
        return lines > 1 and len(wrap_lines(candidate, max_px, measure)) <= lines

    if fits(text):
        return text
    if part and part in text:
        start = text.index(part)
        head, tail = text[:start], text[start + len(part):]
        low, high = min(6, len(part)), len(part) - 1
        if low <= high and fits(f"{head}{part[:low]}{ELLIPSIS}{tail}"):
            while low < high:  # the longest prefix of `part` that fits
                middle = (low + high + 1) // 2
                if fits(f"{head}{part[:middle]}{ELLIPSIS}{tail}"):
                    low = middle
                else:
                    high = middle - 1
            return f"{head}{part[:low]}{ELLIPSIS}{tail}"
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle].rstrip() + ELLIPSIS):
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ELLIPSIS


# =========================================================================== a bench's panel (kiosk and web monitor)


def get_phase_message(step: Optional[int]) -> str:
    """Phase label text: "Phase 3/5 : Décharge"."""
    if step in protocol.PHASES:
        return f"Phase {step}/5 : {protocol.PHASE_NAMES[step]}"
    if step == protocol.STEP_STOP:
        return "Arrêt fin de journée"
    return "Phase -/5"


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
