"""formatting.format_number: numbers as French operators write them (table)."""

from __future__ import annotations

import math
from typing import Optional

import pytest

from formatting import NBSP, UNKNOWN, format_number


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
