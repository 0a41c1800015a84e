"""Calibration curves: the charge profile (time left in phase 2) and the temperature correction of resistances.

The loaders take the file's path and validate it line by line; utils.py finds the files
(BANC_HOME first, else the project) and caches the curves.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path


class ConfigFileError(ValueError):
    """A static configuration file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear curve y(x), x strictly increasing, clamped at both ends."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __call__(self, x: float) -> float:
        if x <= self.xs[0]:
            return self.ys[0]
        if x >= self.xs[-1]:
            return self.ys[-1]
        i = bisect.bisect_right(self.xs, x)
        x0, x1, y0, y1 = self.xs[i - 1], self.xs[i], self.ys[i - 1], self.ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    return value


def load_charge_profile(path: Path) -> Curve:
    """Load a charge_profile.csv: pack voltage (V) -> remaining phase-2 time (s); ConfigFileError names file:line."""
    xs: list[float] = []
    ys: list[float] = []
    header_seen = False
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                parts = [p.strip() for p in text.split(",")]
                if not header_seen:
                    if parts != ["voltage_v", "remaining_s"]:
                        raise ConfigFileError(f"{path}:{lineno}: expected header 'voltage_v,remaining_s'")
                    header_seen = True
                    continue
                if len(parts) != 2:
                    raise ConfigFileError(f"{path}:{lineno}: expected 2 fields, got {len(parts)}")
                try:
                    voltage, remaining = _finite(parts[0]), _finite(parts[1])
                except ValueError:
                    raise ConfigFileError(f"{path}:{lineno}: not a number: {text!r}") from None
                if xs and voltage <= xs[-1]:
                    raise ConfigFileError(f"{path}:{lineno}: voltage must increase ({voltage} after {xs[-1]})")
                if remaining < 0 or (ys and remaining > ys[-1]):
                    raise ConfigFileError(f"{path}:{lineno}: remaining time must be >= 0 and not increase")
                xs.append(voltage)
                ys.append(remaining)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}") from exc
    if len(xs) < 2:
        raise ConfigFileError(f"{path}: at least 2 points are needed")
    return Curve(tuple(xs), tuple(ys))


def load_temp_coeffs(path: Path) -> Curve:
    """Load a temperature_coefficients.json: temperature (°C) -> multiplier to 25 °C; ConfigFileError names file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", "?")
        raise ConfigFileError(f"{path}:{line}: invalid JSON: {getattr(exc, 'msg', exc)}") from exc
    points = data.get("coefficients") if isinstance(data, dict) else None
    if not isinstance(points, list) or len(points) < 2:
        raise ConfigFileError(f"{path}: 'coefficients' must be a list of at least 2 points")
    xs: list[float] = []
    ys: list[float] = []
    lines = text.splitlines()
    for i, point in enumerate(points):
        t, k = (point.get("temperature_c"), point.get("multiplier")) if isinstance(point, dict) else (None, None)
        where = _json_line_of(lines, "temperature_c", i)
        if isinstance(t, bool) or isinstance(k, bool) or not isinstance(t, (int, float)) or not isinstance(k, (int, float)):
            raise ConfigFileError(f"{path}:{where}: point {i + 1} needs numeric temperature_c and multiplier")
        if not (k > 0 and k == k and k != float("inf")):
            raise ConfigFileError(f"{path}:{where}: point {i + 1}: multiplier must be > 0")
        if xs and t <= xs[-1]:
            raise ConfigFileError(f"{path}:{where}: point {i + 1}: temperature must increase")
        xs.append(float(t))
        ys.append(float(k))
    return Curve(tuple(xs), tuple(ys))


def _json_line_of(lines: list[str], key: str, occurrence: int) -> int | str:
    seen = -1
    for lineno, line in enumerate(lines, 1):
        if f'"{key}"' in line:
            seen += 1
            if seen == occurrence:
                return lineno
    return "?"
