"""formatting.format_number: numbers as French operators write them (table)."""

from __future__ import annotations

import math
from typing import Optional

import pytest

from banclfp.presentation.formatting import (
    ELLIPSIS,
    NBSP,
    UNKNOWN,
    elide,
    format_duration,
    format_milliohm,
    format_number,
)


@pytest.mark.parametrize("value,decimals,unit,group,expected", [
    (52.314, 2, "V", True, f"52,31{NBSP}V"),
    (2050.0, 0, "Wh", True, f"2{NBSP}050{NBSP}Wh"),
    (2050.0, 0, "Wh", False, f"2050{NBSP}Wh"),
    (1234567.891, 3, "", True, f"1{NBSP}234{NBSP}567,891"),
    (-12.44, 1, "A", True, f"-12,4{NBSP}A"),
    (-0.001, 2, "", True, "0,00"),  # no sign on a rounded zero
    (-0.0, 0, "%", True, f"0{NBSP}%"),
    (48, 0, "h", True, f"48{NBSP}h"),  # the unit never wraps away from its number
    (0.125, 2, "", True, "0,12"),  # Python's round-half-even, as every other number the kiosk shows
    (None, 1, "V", True, UNKNOWN),
    (math.nan, 1, "V", True, UNKNOWN),
    (math.inf, 1, "V", True, UNKNOWN),
    (True, 0, "", True, UNKNOWN),  # a JSON true is not a number
])
def test_format_number(value: Optional[float], decimals: int, unit: str, group: bool, expected: str) -> None:
    assert format_number(value, decimals, unit, group=group) == expected


@pytest.mark.parametrize("seconds,expected", [
    (0, f"0{NBSP}s"),
    (59.6, f"1{NBSP}min 00{NBSP}s"),
    (48 * 3600, f"2{NBSP}j 00{NBSP}h 00{NBSP}min"),
    (3725, f"1{NBSP}h 02{NBSP}min"),  # "1 h" never wraps between the number and its unit
])
def test_format_duration_ties_units(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("ohm,expected", [(0.01234, "12,34"), (0.004, "4,00"), (None, UNKNOWN), (math.nan, UNKNOWN)])
def test_format_milliohm_decimal_comma(ohm: Optional[float], expected: str) -> None:
    assert format_milliohm(ohm) == expected
    assert format_milliohm(ohm, "mΩ") == (expected if expected == UNKNOWN else f"{expected}{NBSP}mΩ")


@pytest.mark.parametrize("ohm,expected", [(0.01234, f"12,34{NBSP}mΩ"), (0.04001, f"40,01{NBSP}mΩ"), (None, UNKNOWN),
                                          (math.inf, UNKNOWN)])
def test_format_milliohm_with_its_unit(ohm: Optional[float], expected: str) -> None:
    """With the unit as format_number puts it (none on "—"): the certificate and the checks' text use it."""
    assert format_milliohm(ohm, "mΩ") == expected


# A fixed-width font of 10 px per character: what fits is plain arithmetic.
@pytest.mark.parametrize("text,max_px,expected", [
    ("Libre", 50, "Libre"),  # fits exactly: untouched
    ("Libre", 49, "Lib" + ELLIPSIS),
    ("Interrompu - RW-LONG - scannez pour reprendre", 120, "Interrompu" + ELLIPSIS),  # no space before the ellipsis
    ("abc", 5, ELLIPSIS),  # nothing fits: the ellipsis alone still says "cut"
    ("", 0, ""),
])
def test_elide_never_cuts_without_an_ellipsis(text: str, max_px: float, expected: str) -> None:
    result = elide(text, max_px, lambda s: 10.0 * len(s))
    assert result == expected
    assert result == text or result.endswith(ELLIPSIS)


@pytest.mark.parametrize("text,expected", [
    ("aucune donnée du banc 4 depuis 30 s", f"aucune donnée du banc 4 depuis 30{NBSP}s"),
    ("Température 58.0 °C, courant 120 A.", f"Température 58.0{NBSP}°C, courant 120{NBSP}A."),
    ("banc 4 est arrêté", "banc 4 est arrêté"),  # "4 est": no unit
    ("3 segments", "3 segments"),  # "s" only as a whole word
])
def test_keep_units_together(text: str, expected: str) -> None:
    from banclfp.presentation.formatting import keep_units_together

    assert keep_units_together(text) == expected


# The same 10 px a character: where Tk wraps, and what a fitted text keeps.
@pytest.mark.parametrize("text,max_px,expected", [
    ("Nouveau test possible", 0, ["Nouveau test possible"]),  # no wraplength: one line
    ("Nouveau test possible", 120, ["Nouveau test", "possible"]),  # a space at a line's end takes no room
    (f"moins de 48{NBSP}h ouvrées", 100, ["moins de", f"48{NBSP}h", "ouvrées"]),  # "48 h" is one word
    ("a\nbb", 100, ["a", "bb"]),
    ("RW-ABCDEFGHIJ", 50, ["RW-AB", "CDEFG", "HIJ"]),  # a word longer than a line: between characters
])
def test_wrap_lines_as_tk_wraps(text: str, max_px: float, expected: list[str]) -> None:
    from banclfp.presentation.formatting import wrap_lines

    assert wrap_lines(text, max_px, lambda s: 10.0 * len(s)) == expected


@pytest.mark.parametrize("text,part,max_px,lines,expected", [
    ("Interrompu - RW-LONG0123456789 - scannez", "RW-LONG0123456789", 400, 1,
     "Interrompu - RW-LONG0123456789 - scannez"),  # it fits: whole
    ("Interrompu - RW-LONG0123456789 - scannez", "RW-LONG0123456789", 330, 1,
     f"Interrompu - RW-LONG01{ELLIPSIS} - scannez"),  # only the serial's end goes: the instruction stays
    ("Interrompu - RW-LONG0123456789 - scannez", "RW-LONG0123456789", 300, 2,
     "Interrompu - RW-LONG0123456789 - scannez"),  # two lines hold it whole
    ("Nouveau test possible à partir du 04/01", None, 100, 2, f"Nouveau test poss{ELLIPSIS}"),  # last resort only
])
def test_fit_text_shortens_the_serial_before_anything(text: str, part: Optional[str], max_px: float, lines: int,
                                                      expected: str) -> None:
    from banclfp.presentation.formatting import fit_text, wrap_lines

    fitted = fit_text(text, part, max_px, lines, lambda s: 10.0 * len(s))
    assert fitted == expected
    assert len(wrap_lines(fitted, max_px, lambda s: 10.0 * len(s))) <= lines
