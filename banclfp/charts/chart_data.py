"""What the charts draw, computed with numpy: decimated series on a time axis with the stops shortened, and its ticks.

No matplotlib here: the kiosk's chart process (render_process) prepares all of this, figure.py draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

import numpy as np

from banclfp.analysis.measures import Stop, Summary, TestData, load_report
from banclfp.recording import record

DISPLAY_BUCKETS = 1600
"""Min/max buckets per series for display: about one per horizontal pixel."""
_MAX_DISPLAY_RUNS = 2000


# =========================================================================== display decimation


def display_runs(unix_s: np.ndarray, gap_s: float) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of the rows between stops (lines are broken at stops)."""
    n = unix_s.size
    if n == 0:
        return []
    dt = np.diff(unix_s)
    cuts = (np.flatnonzero((dt > gap_s) | (dt < 0)) + 1).tolist()
    if len(cuts) > _MAX_DISPLAY_RUNS:
        return [(0, n)]  # pathological flapping: one line rather than thousands of tiny ones
    bounds = [0] + cuts + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def minmax_indices(y: np.ndarray, start: int, stop: int, bucket: int) -> np.ndarray:
    """Indices in [start, stop) keeping the min and the max of every bucket of rows, in order."""
    length = stop - start
    if length <= 2 * bucket or bucket <= 1:
        return np.arange(start, stop)
    full = length // bucket
    block = y[start:start + full * bucket].reshape(full, bucket)
    offsets = start + np.arange(full) * bucket
    picks = [offsets + block.argmin(axis=1), offsets + block.argmax(axis=1), np.array([start, stop - 1])]
    tail = start + full * bucket
    if tail < stop:
        rest = y[tail:stop]
        picks.append(np.array([tail + int(rest.argmin()), tail + int(rest.argmax())]))
    return np.unique(np.concatenate(picks))


def decimate(x: np.ndarray, y: np.ndarray, runs: Sequence[tuple[int, int]], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max envelope of y(x) for display (spikes survive), NaN between runs so lines break at stops."""
    n = x.size
    if n == 0:
        return x, y
    bucket = max(1, int(math.ceil(n / max(1, buckets))))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for start, stop in runs:
        idx = minmax_indices(y, start, stop, bucket)
        xs.append(x[idx])
        ys.append(y[idx])
        xs.append(np.array([np.nan]))
        ys.append(np.array([np.nan]))
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


@dataclass(frozen=True)
class TimeAxis:
    """Display abscissa: seconds of test time since the first row, each stop shortened to a narrow band.

    A test stopped every night (or a weekend) would otherwise be mostly empty hatching;
    the mapping is piecewise linear with slope 1 outside the stops, so charts keep their shape.
    """

    knots_unix: np.ndarray
    knots_x: np.ndarray

    def to_x(self, unix_s: Any) -> np.ndarray:
        """Display abscissa of unix times."""
        return np.interp(unix_s, self.knots_unix, self.knots_x)

    def to_unix(self, x: Any) -> np.ndarray:
        """Unix times of display abscissae."""
        return np.interp(x, self.knots_x, self.knots_unix)

    @property
    def width(self) -> float:
        """Length of the axis in display seconds."""
        return float(self.knots_x[-1])


STOP_BAND_FRACTION = 0.04
"""A stop is drawn at most this wide, as a fraction of the measured (non-stop) time."""


def time_axis(first_s: float, last_s: float, stops: Sequence[Stop]) -> TimeAxis:
    """The display axis of a test from its first to its last row, stops shortened."""
    stopped = sum(max(0.0, s.duration_s) for s in stops)
    active = max(last_s - first_s - stopped, 1.0)
    # Each stop gets at most 4 % of the measured time, and all of them together at most 30 %.
    band = active * min(STOP_BAND_FRACTION, 0.3 / max(1, len(stops)))
    knots_unix, knots_x = [first_s], [0.0]
    for stop in stops:
        if stop.t0_s < knots_unix[-1] or stop.t1_s <= stop.t0_s:
            continue  # clock set back: keep the mapping monotonic, draw this stop unshortened
        knots_x.append(knots_x[-1] + stop.t0_s - knots_unix[-1])
        knots_unix.append(stop.t0_s)
        knots_x.append(knots_x[-1] + min(stop.duration_s, band))
        knots_unix.append(stop.t1_s)
    end = max(last_s, knots_unix[-1] + 1e-3)  # a single row still gets an axis
    knots_x.append(knots_x[-1] + end - knots_unix[-1])
    knots_unix.append(end)
    return TimeAxis(np.array(knots_unix), np.array(knots_x))


_TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                 2 * 86400, 7 * 86400)


def _wall_clock_marks(a_s: float, b_s: float, step_s: int) -> list[datetime]:
    """Paris times in [a_s, b_s] that are round multiples of step_s (midnights, Mondays for a week)."""
    base = datetime.fromtimestamp(a_s, tz=record.LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    if step_s == 7 * 86400:
        base -= timedelta(days=base.weekday())
    k = max(0, int((a_s - base.timestamp()) // step_s) - 1)
    marks: list[datetime] = []
    while True:
        moment = base + timedelta(seconds=k * step_s)  # wall-clock arithmetic: marks stay round across DST
        unix = moment.timestamp()
        if unix > b_s:
            return marks
        if unix >= a_s:
            marks.append(moment)
        k += 1


def time_ticks(axis: TimeAxis, max_ticks: int = 9) -> list[tuple[float, str]]:
    """Ticks at round Paris wall-clock times outside the stops: (display x, label), the date shown when it changes."""
    step = next((s for s in _TICK_STEPS_S if axis.width / s <= max_ticks), _TICK_STEPS_S[-1])
    knots = axis.knots_unix.tolist()
    ticks: list[tuple[float, str]] = []
    previous_day = None
    # The knots are first, stop starts and ends, last: measured time is between knots 0-1, 2-3, ...
    for a_s, b_s in zip(knots[0::2], knots[1::2]):
        for mark in _wall_clock_marks(a_s, b_s, step):
            # Labelled with the instant's real Paris time (02:00 does not exist on the night clocks go forward).
            moment = datetime.fromtimestamp(mark.timestamp(), tz=record.LOCAL_TZ)
            x = float(axis.to_x(moment.timestamp()))
            if ticks and x - ticks[-1][0] < 0.6 * step:
                continue  # just after a shortened stop: would overlap the previous label
            day = moment.date()
            clock = "%H:%M:%S" if step < 60 else "%H:%M"
            label = moment.strftime(clock) if day == previous_day else moment.strftime(f"%d/%m\n{clock}")
            previous_day = day
            ticks.append((x, label))
    return ticks


@dataclass
class PlotData:
    """What the figure draws: decimated series on the display axis, its ticks, and the summary."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]
    summary: Summary
    axis: Optional[TimeAxis]
    ticks: list[tuple[float, str]]
    folder: Optional[Path] = None


PLOT_SERIES: tuple[tuple[str, str, str], ...] = (
    ("voltage_v", "Tension (V)", "#1f3a93"),
    ("current_a", "Courant (A)", "#c0392b"),
    ("soc_pct", "SOC (%)", "#16a085"),
    ("temperature_c", "Température (°C)", "#d35400"),
    ("cell_spread_mv", "Écart cellules (mV)", "#6c3483"),
)
SHORT_LABELS: dict[str, str] = {
    "voltage_v": "U (V)", "current_a": "I (A)", "soc_pct": "SOC (%)", "temperature_c": "T (°C)",
    "cell_spread_mv": "ΔU cell. (mV)",
}


def prepare_plot_data(data: TestData, summary: Summary, buckets: int = DISPLAY_BUCKETS,
                      folder: Optional[Path] = None) -> PlotData:
    """Decimate every plotted series and place it on the display axis (pure numpy; fine in a worker thread)."""
    if len(data) == 0:
        empty = (np.zeros(0), np.zeros(0))
        return PlotData({name: empty for name, _l, _c in PLOT_SERIES}, summary, None, [], folder)
    axis = time_axis(float(data.unix_s[0]), float(data.unix_s[-1]), summary.stops)
    runs = display_runs(data.unix_s, summary.gap_s)
    series = {}
    for name, _label, _color in PLOT_SERIES:
        y = data["cell_max_mv"] - data["cell_min_mv"] if name == "cell_spread_mv" else data[name]
        x, y_shown = decimate(data.unix_s, y, runs, buckets)
        x_shown = axis.to_x(x)
        x_shown[np.isnan(x)] = np.nan  # keep the line breaks at stops
        series[name] = (x_shown, y_shown)
    return PlotData(series, summary, axis, time_ticks(axis), folder)


def load_plot_data(folder: Path, buckets: int, *, correct_to_25c: Callable[[float, Optional[float]], float],
                   min_gap_s: float) -> PlotData:
    """Load a test folder and prepare what its charts draw (files and numpy only: for a worker thread)."""
    report = load_report(folder, correct_to_25c, min_gap_s)
    return prepare_plot_data(report.data, report.summary, buckets=buckets, folder=folder)
