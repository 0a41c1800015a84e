"""The colour of every measurement the kiosk shows: one place, pure (no toolkit, no file).

A colour says whether a value calls for the operator, so it follows what the lab decides
with the same value: the bench's phase (a pack emptied by the discharge is the test going
as planned) and the battery's grading model (grading.json: a spread or a temperature the
verdict accepts is never shown as an alarm). The kiosk's worker thread reads the model
and hands its limits here as `MeasureLimits`; the Tk thread only calls these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from banclfp.presentation.formatting import NBSP, UNKNOWN, measure_texts
from banclfp.wire import protocol

# =========================================================================== palette

TEXT = "#e8eaed"
MUTED = "#9aa0a6"
COLOR_OK = "#66bb6a"
COLOR_WARN = "#ffa726"
COLOR_ALARM = "#ef5350"
COLOR_INFO = "#64b5f6"

LEVEL_NEUTRAL, LEVEL_OK, LEVEL_WARN, LEVEL_ALARM = "neutral", "ok", "warn", "alarm"
LEVEL_COLORS = {LEVEL_NEUTRAL: TEXT, LEVEL_OK: COLOR_OK, LEVEL_WARN: COLOR_WARN, LEVEL_ALARM: COLOR_ALARM}
GAUGE_NEUTRAL_FILL = COLOR_INFO  # the SOC gauge's fill when its level says nothing (a normal discharge)


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


@dataclass(frozen=True)
class MeasureLimits:
    """What the battery's grading model accepts (grading.json): the verdict rejects beyond these."""

    cell_spread_max_mv: Optional[float] = None
    temperature_max_c: Optional[float] = None


# 16S LFP pack (3.2 V nominal per cell). 2.5 V/cell = 40.0 V is the discharge cut-off,
# 2.8 V/cell = 44.8 V is close to it; 3.65 V/cell = 58.4 V is the end-of-charge voltage
# held during CV, so warn only just above it and alarm at 3.70 V/cell = 59.2 V.
PACK_VOLTAGE_THRESHOLDS_V = Thresholds(alarm_low=40.0, warn_low=44.8, warn_high=58.5, alarm_high=59.2)
# The discharge (phase 3) takes the pack down to the cut-off on purpose: only below it is an alarm.
DISCHARGE_VOLTAGE_THRESHOLDS_V = Thresholds(alarm_low=40.0, warn_high=58.5, alarm_high=59.2)
# |current| for a 100 Ah pack: 0.6 C is above the 0.5 C test currents, 1 C is the BMS limit.
CURRENT_ABS_THRESHOLDS_A = Thresholds(warn_high=60.0, alarm_high=100.0)
# LFP: charge allowed 0..45 °C, discharge up to 60 °C; warn 10 °C inside those limits (no grading model known).
TEMPERATURE_THRESHOLDS_C = Thresholds(alarm_low=0.0, warn_low=10.0, warn_high=45.0, alarm_high=55.0)
# Spread between the highest and lowest cell: < 50 mV is a healthy, balanced LFP pack (no grading model known).
CELL_SPREAD_THRESHOLDS_MV = Thresholds(warn_high=50.0, alarm_high=100.0)
# SOC is not an alarm: colour only, like a fuel gauge, outside the phases that empty the pack on purpose.
SOC_THRESHOLDS_PCT = Thresholds(alarm_low=20.0, warn_low=50.0)

WARN_FRACTION_OF_LIMIT = 0.8
"""A spread beyond this share of what the model accepts is orange: close to the limit, not beyond it."""
TEMPERATURE_WARN_MARGIN_C = 5.0
"""Orange this many degrees below the model's maximum temperature, red above the maximum."""
DISCHARGE_STEP = 3
EMPTYING_STEPS = (DISCHARGE_STEP, 4)
"""Phase 3 empties the pack to the cut-off and phase 4 recharges it from there: a low SOC is the plan, and the
spread of cells near empty is not what the verdict judges (it is measured at full charge)."""


def temperature_thresholds(limits: Optional[MeasureLimits]) -> Thresholds:
    """The temperature's colours: red above the model's maximum (the verdict rejects it), orange just below."""
    high = None if limits is None else limits.temperature_max_c
    if high is None:
        return TEMPERATURE_THRESHOLDS_C
    return Thresholds(alarm_low=0.0, warn_low=10.0, warn_high=high - TEMPERATURE_WARN_MARGIN_C, alarm_high=high)


def cell_spread_thresholds(limits: Optional[MeasureLimits], step: Optional[int] = None) -> Thresholds:
    """The cell spread's colours: red beyond the model's maximum, orange from 80 % of it; never red near empty."""
    high = None if limits is None else limits.cell_spread_max_mv
    if high is None:
        thresholds = CELL_SPREAD_THRESHOLDS_MV
    else:
        thresholds = Thresholds(warn_high=high * WARN_FRACTION_OF_LIMIT, alarm_high=high)
    if step in EMPTYING_STEPS:  # orange at most: a warning to look, never a verdict the grade does not make
        return Thresholds(warn_high=thresholds.warn_high)
    return thresholds


def voltage_thresholds(step: Optional[int]) -> Thresholds:
    """The pack voltage's colours: during the discharge, nearing the cut-off is the plan, not a warning."""
    return DISCHARGE_VOLTAGE_THRESHOLDS_V if step == DISCHARGE_STEP else PACK_VOLTAGE_THRESHOLDS_V


def soc_level(soc_pct: Optional[float], step: Optional[int]) -> str:
    """The SOC's level: neutral while a phase empties the pack on purpose (3, 4), else a fuel gauge's."""
    if soc_pct is None or step in EMPTYING_STEPS:
        return LEVEL_NEUTRAL
    return SOC_THRESHOLDS_PCT.level(soc_pct)


def level_color(thresholds: Thresholds, value: Optional[float]) -> str:
    """Text colour of a measurement (grey when unknown)."""
    if value is None:
        return MUTED
    return LEVEL_COLORS[thresholds.level(value)]


def soc_color(soc_pct: Optional[float], step: Optional[int]) -> str:
    """Text colour of the SOC (grey when unknown)."""
    return MUTED if soc_pct is None else LEVEL_COLORS[soc_level(soc_pct, step)]


def soc_fill_color(soc_pct: Optional[float], step: Optional[int]) -> str:
    """The SOC gauge's fill: the level's colour, blue when the level says nothing."""
    level = soc_level(soc_pct, step)
    return GAUGE_NEUTRAL_FILL if level == LEVEL_NEUTRAL else LEVEL_COLORS[level]


def measure_colors(line: protocol.BmsLine, step: Optional[int], limits: Optional[MeasureLimits]) -> dict[str, str]:
    """The colour of each measure of a BMS line shown during `step` (the phase reached, when stopped)."""
    spread = line.cell_spread_mv
    return {
        "voltage": level_color(voltage_thresholds(step), line.voltage_v),
        "current": level_color(CURRENT_ABS_THRESHOLDS_A, abs(line.current_a)),
        "soc": soc_color(line.soc_pct, step),
        "temperature": level_color(temperature_thresholds(limits), line.temperature_c),
        "capacity": TEXT,
        "energy": TEXT,
        "balance": level_color(cell_spread_thresholds(limits, step), spread),
        "balancing": COLOR_INFO if line.balancing else MUTED,
    }


# =========================================================================== a bench's measures as shown (kiosk, web monitor)

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

# A measure no longer live (kiosk_state.measures_view decides) is greyed: its colour no longer says how things are.
STALE_COLOR = MUTED
# The current of a line received before a stop, an `end`, the finish or the ESP going offline: it no longer flows.
CURRENT_CUT_TEXT = f"0{NBSP}A coupé"


class MeasuresShown(Protocol):
    """What measure_cells needs of kiosk_state.MeasuresView (the latest line, live or not, its current cut)."""

    @property
    def line(self) -> Optional[protocol.BmsLine]: ...

    @property
    def fresh(self) -> bool: ...

    @property
    def current_cut(self) -> bool: ...


def measure_cells(view: MeasuresShown, live_colors: dict[str, str]) -> dict[str, tuple[str, str]]:
    """(text, colour) of each measure as kiosk_state says the bench's latest line is (pure).

    Live: each value in its colour (`live_colors`, the colours of the line's values now). No longer
    live: greyed (the panel's header says how old). Cut: the current says it no longer flows, the
    other values stay readable. No line: "—".
    """
    if view.line is None:
        return {key: (UNKNOWN, MUTED) for key, _name in MEASURES}
    cells = {key: (text, live_colors.get(key, TEXT) if view.fresh else STALE_COLOR)
             for key, text in measure_texts(view.line).items()}
    if view.current_cut:
        cells["current"] = (CURRENT_CUT_TEXT, STALE_COLOR)
    return cells
