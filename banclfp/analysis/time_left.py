"""Time left of a test's running phase, estimated as a cycler does: pure, no I/O, no clock.

Each phase has its own arithmetic (the bench's sequence, deploy/FIRMWARE_ESP32.md §4):

1 Ri pulses      the schedule: pulse_pairs x (rest, discharge pulse, rest, charge pulse), then a
                 rest; what is left of it from the phase's start (as the test folder records it).
2 CC-CV charge   CC: the charge the BMS still needs to reach the SOC where the CV starts, at the
                 present current; then the CV taper, an exponential from the CC current down to
                 the taper current whose length the charge profile (the lab's packs) or the pack
                 model (the simulator's) gives. In CV: tau x ln(I / I_end).
                 The CC ends when the *first* cell reaches its knee: a pack whose cells rested at
                 unequal charge before the charge (cell_max above the mean) ends it earlier, and so does
                 a smaller cell, which runs ahead (leading_pace: sound, or aged as far as its resistance
                 says, weighed by the charge's first line, then by the pace the CC let read best).
3 discharge      the rest before it, then the charge the pack still holds at the present current.
                 What it holds: the BMS's SOC x rated capacity, or less when the charge that just
                 ended showed a weaker pack (it filled before the BMS's 100 %, or its lowest cell
                 rested low: that cell empties first).
4 storage        the rest, then the charge from the BMS's SOC to the storage SOC at the present current.

`estimate_s(model, step, line, elapsed_s, charge)` is the whole estimator. `ChargeFactsReader` is
fed the test's lines in order (data.csv rows, or the firmware model's lines) and keeps what the
charge tells: the rest before it, a reading early in its CC, and the SOC the BMS counted when it
ended. `phase_start` reads when the running phase started from the test's journal events;
`Smoother` averages the estimates' end time so that the time left counts down evenly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Optional

from banclfp.recording import record
from banclfp.simulation.battery_model import CELL_MAX_V, CELL_MIN_V, CELLS, arrhenius_factor, cell_ocv, soc_from_ocv
from banclfp.wire import protocol

REST_CURRENT_A = 0.5  # below this the relay is open (the firmware sends exactly 0)
CV_CURRENT_FRACTION = 0.95  # under CC current x this, near the cell or pack limit: the CV has begun
CV_CELL_MARGIN_MV = 100.0  # the first cell is within this of CELL_MAX_V: at the limit
CV_PACK_MARGIN_V = 0.5  # or the pack is within this of CELLS x CELL_MAX_V
MIN_CHARGE_PCT = 5.0  # a charge shorter than this tells nothing of the pack's capacity
CC_READING_PCT = 5.0  # the charge's reading of the first cell's ohmic and diffusion rise: this far into the CC
VOLTAGE_SIGMA_MV = 2.0  # how well a cell's open-circuit voltage is told under current (noise, the resistance's drift)
PRIOR_SIGMA_PCT = 1.5  # how well the rest before the charge tells where the CC ends (cells' capacities differ)
PACE_SIGMA = 0.05  # how well the leading cell's pace is known, as a fraction of what it has to go
MIN_TRACK_PCT = 20.0  # the first cell must have gone this far from its rest before its pace is read
# A cell at its end of life (cell datasheets, IEC 62620): 80 % of its rated capacity, or its resistance doubled.
EOL_CAPACITY_LOSS = 0.20
EOL_RESISTANCE_GAIN = 1.0
CELL_RISE_SPREAD = 0.05  # two healthy cells' ohmic and diffusion rises may differ this much (a batch's +-4-5 % each)
AGED_PRIOR = 0.5  # before its pace is read, a cell of raised resistance is as likely aged as sound


@dataclass(frozen=True)
class Model:
    """What the estimator knows of the bench's sequence and the pack (the firmware's defaults).

    `capacity_ah` is the rated capacity: the BMS counts its SOC against it. `cv_taper_s` is the
    CV part of a full charge, from the CC current down to the taper current.
    """

    capacity_ah: float = 100.0
    cv_taper_s: float = 900.0
    charge_c: float = 0.5
    discharge_c: float = 0.5
    taper_c: float = 0.05
    pulse_pairs: int = 3
    pulse_s: float = 30.0
    pulse_rest_s: float = 120.0
    rest_s: float = 600.0  # before the discharge (3) and before the storage charge (4)
    storage_soc_pct: float = 50.0
    cells: int = CELLS
    # The cell that rests highest (or lowest) is seldom the smallest (healthy cells hold 0-3 % more than
    # rated), and the extreme of the cells' noisy readings reads a little beyond it: that cell has this
    # much more room (or charge), % of the rated capacity.
    cell_margin_pct: float = 0.7
    cc_end_soc_pct: Optional[float] = None  # the BMS's SOC where a balanced pack's CC ends (None: from the taper)

    @property
    def charge_current_a(self) -> float:
        return self.charge_c * self.capacity_ah

    @property
    def discharge_current_a(self) -> float:
        return self.discharge_c * self.capacity_ah

    @property
    def taper_current_a(self) -> float:
        return self.taper_c * self.capacity_ah

    @property
    def phase1_s(self) -> float:
        """The pulse schedule's length: every pair's two rests and two pulses, then the last rest."""
        return self.pulse_pairs * 2 * (self.pulse_rest_s + self.pulse_s) + self.pulse_rest_s

    @property
    def cv_tau_s(self) -> float:
        """Time constant of the CV taper: I(t) = I_cc exp(-t / tau) reaches the taper current after cv_taper_s."""
        return self.cv_taper_s / math.log(self.charge_c / self.taper_c)

    @property
    def cv_start_soc_pct(self) -> float:
        """The BMS's SOC when a balanced pack's CC ends: cc_end_soc_pct, else 100 % less what the CV taper puts in."""
        if self.cc_end_soc_pct is not None:
            return self.cc_end_soc_pct
        cv_ah = self.cv_tau_s * (self.charge_current_a - self.taper_current_a) / 3600.0
        return 100.0 - 100.0 * cv_ah / self.capacity_ah


def model_from_profile(charge_duration: Callable[[float], float], capacity_ah: float = 100.0,
                       sequence: Model = Model()) -> Model:
    """The model of the lab's packs from charge_profile.csv (environment.get_charge_duration): its two ends.

    At the pack's limit voltage (CELLS x CELL_MAX_V) only the CV is left: the taper's length
    (900 s in the lab's file). From the empty pack (CELLS x CELL_MIN_V) the whole charge: what is
    more than the taper is the CC, which at the charge current puts in the SOC where the CV
    begins (8100 - 900 s at 0.5 C: 100 %). The points between were read on one pack's voltage,
    which on an LFP plateau tells little of its SOC: the estimator does not use them.
    """
    cv_taper_s = max(0.0, float(charge_duration(CELLS * CELL_MAX_V)))
    model = replace(sequence, capacity_ah=capacity_ah, cv_taper_s=cv_taper_s)  # `sequence`: the phases' other figures
    full_s = float(charge_duration(CELLS * CELL_MIN_V))
    cc_pct = max(0.0, full_s - cv_taper_s) * model.charge_c * 100.0 / 3600.0  # % of capacity per hour at charge_c
    if not 50.0 <= cc_pct <= 110.0:  # not a whole charge from empty: the taper alone tells where the CV begins
        return model
    return replace(model, cc_end_soc_pct=min(100.0, cc_pct))


@dataclass(frozen=True)
class Rest:
    """A line at rest (no current): the BMS's SOC and the extreme cells' open-circuit voltages."""

    soc_pct: float
    cell_min_mv: float
    cell_max_mv: float
    voltage_v: Optional[float] = None  # the pack's: the mean cell's open-circuit voltage x cells


@dataclass(frozen=True)
class CcReading:
    """The CC's lines CC_READING_PCT past the rest: how far the first cell's voltage rose over its rest voltage."""

    soc_pct: float
    cell_max_mv: float
    current_a: float
    temperature_c: float
    voltage_v: Optional[float] = None  # the pack's: with the rest's, the other cells' mean rise


@dataclass(frozen=True)
class PaceReading:
    """The leading cell's pace (BMS % per % of that cell) from the rest to one CC line, and how well that line told it."""

    pace: float
    doubt: float  # one sigma, in pace units: the cell's SOC read from its voltage over the distance it went


@dataclass(frozen=True)
class ChargeFacts:
    """What the test's lines tell of its charge (phase 2): the rest before it, a CC reading, the SOC when it ended."""

    rest: Optional[Rest] = None  # the rest lines before the test's first current (else those just before the charge)
    cc: Optional[CcReading] = None
    full_soc_pct: Optional[float] = None  # the BMS's SOC on the charge's last line, before it recalibrates to 100
    pace: Optional[PaceReading] = None  # the CC line that told the leading cell's pace best (the least doubt)
    first: Optional[CcReading] = None  # the charge's first line under current: the rises before the diffusion builds


class _Mean:
    """Running means of a few readings (one line's cell voltage is noisy: a reading is the mean of its lines)."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: list[float] = []

    def add(self, *values: float) -> None:
        self.sums = [a + b for a, b in zip(self.sums, values)] if self.count else list(values)
        self.count += 1

    def means(self) -> list[float]:
        return [value / self.count for value in self.sums]


class ChargeFactsReader:
    """Sans-I/O: fed a test's lines in order with their phase, it keeps the facts of its charge.

    The rest is the mean of the lines before the test's first pulse (the pack has rested since
    it arrived; a pulse's diffusion voltage still lingers on phase 1's last rest when the pack
    is cold); a test that starts at its charge takes the rest lines just before the charge. The
    CC reading is the mean of the charge's lines from CC_READING_PCT to one % more. Past it, each
    CC line reads the leading cell's pace (pace_reading); the one that tells it best is kept: the
    cell crosses its curve's steep parts (the step near 65 %, the knee) and then a plateau again.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._rest = _Mean()  # the lines before any current
        self._late_rest = _Mean()  # the last run of rest lines before the charge
        self._current_seen = False
        self._cc = _Mean()
        self._cc_done = False  # the charge went past the CC reading's window: its mean is final
        self._pace: Optional[PaceReading] = None
        self._first: Optional[CcReading] = None
        self._charging = False  # a charging line of phase 2 was seen: the rest before it is kept
        self._full_soc: Optional[float] = None
        self._after_charge = False  # a line of phase 3 or 4 was seen: the charge's last SOC is kept

    def feed(self, step: int, line: protocol.BmsLine) -> None:
        """One line of the test, in the phase it was recorded in (data.csv's step column)."""
        if step == 1 and (self._charging or self._after_charge):
            self._reset()  # the test went back to its start: a new charge
        at_rest = abs(line.current_a) < REST_CURRENT_A
        if step in (1, 2) and not self._charging:
            if not at_rest:
                self._late_rest = _Mean()
            else:
                reading = (line.soc_pct, line.cell_min_mv, line.cell_max_mv, line.voltage_v)
                self._late_rest.add(*reading)
                if not self._current_seen:
                    self._rest.add(*reading)
        self._current_seen = self._current_seen or not at_rest
        if step == 2 and line.current_a >= REST_CURRENT_A:
            if not self._charging:
                self._first = CcReading(line.soc_pct, line.cell_max_mv, line.current_a, line.temperature_c, line.voltage_v)
            self._charging = True
            rest = self._rest_reading()
            if rest is not None and rest.soc_pct + CC_READING_PCT <= line.soc_pct < rest.soc_pct + CC_READING_PCT + 1:
                self._cc.add(line.soc_pct, line.cell_max_mv, line.current_a, line.temperature_c, line.voltage_v)
            elif rest is not None and self._cc.count and line.soc_pct >= rest.soc_pct + CC_READING_PCT + 1:
                self._cc_done = True
            if self._cc_done and line.current_a >= CV_CURRENT_FRACTION * self._cc.means()[2]:  # still in CC
                paced = pace_reading(ChargeFacts(rest, CcReading(*self._cc.means())), line)
                if paced is not None and (self._pace is None or paced.doubt < self._pace.doubt):
                    self._pace = paced
        if step == 2 and not self._after_charge:
            self._full_soc = line.soc_pct
        if step in (3, 4):
            self._after_charge = True

    def _rest_reading(self) -> Optional[Rest]:
        rest = self._rest if self._rest.count else self._late_rest
        return Rest(*rest.means()) if rest.count else None

    @property
    def final(self) -> bool:
        """The charge is over: its facts will not change (a reader of data.csv may stop here)."""
        return self._after_charge

    @property
    def facts(self) -> ChargeFacts:
        charged = self._charging or self._after_charge
        return ChargeFacts(self._rest_reading() if charged else None,
                           CcReading(*self._cc.means()) if self._cc.count else None,
                           self._full_soc if self._after_charge else None, self._pace,
                           self._first if charged else None)


@dataclass(frozen=True)
class Progress:
    """What a test's folder tells the estimator (the kiosk's worker reads it; the Tk thread estimates).

    `phase_start_unix_s`: when the journal's running phase `step` started (phase_start), Unix
    seconds on the Pi's clock; `charge`: the facts of its charge from data.csv; `capacity_ah`: the
    battery model's nominal capacity (grading.json), None when no model covers the serial.
    """

    step: Optional[int] = None
    phase_start_unix_s: Optional[float] = None
    charge: ChargeFacts = ChargeFacts()
    capacity_ah: Optional[float] = None


def charge_facts(lines: Iterable[tuple[int, protocol.BmsLine]]) -> ChargeFacts:
    """The facts of a test's charge from its (phase, line) pairs, in order."""
    reader = ChargeFactsReader()
    for step, line in lines:
        reader.feed(step, line)
    return reader.facts


def phase_start(events: Iterable[record.Event]) -> tuple[Optional[int], Optional[str]]:
    """(phase, ISO time it started) from a test's journal events (record.read_events), in order.

    A phase starts at the step event that enters it; a stopped test (its ESP at 9) that resumes
    starts its phase again from the beginning (the ESP restarts the phase on the command), at
    the resume; while it is stopped its phase has no start (None). A banc.py restarted while the
    ESP runs resumes without a stop: nothing restarts.
    """
    step: Optional[int] = None
    start: Optional[str] = None
    stopped = False
    for event in events:
        at = event.t
        if at is None:
            continue
        if isinstance(event, record.StepEvent) and event.step is not None and event.step in protocol.PHASES:
            if event.step != step or stopped:
                step, start, stopped = event.step, at, False
        elif isinstance(event, record.StopEvent):
            stopped = True
        elif isinstance(event, record.ResumeEvent) and stopped:
            start, stopped = at, False
    return step, None if stopped else start


# =========================================================================== the estimate


def _top_soc_pct(rest: Rest) -> float:
    """SOC of the cell that rested highest (from its open-circuit voltage), %."""
    return 100.0 * soc_from_ocv(rest.cell_max_mv / 1000.0)


def _low_soc_pct(rest: Rest) -> float:
    """SOC of the cell that rested lowest, %."""
    return 100.0 * soc_from_ocv(rest.cell_min_mv / 1000.0)


def _soc_sigma_pct(ocv_v: float, sigma_mv: float = VOLTAGE_SIGMA_MV) -> float:
    """How well a cell's SOC is told by its open-circuit voltage read to `sigma_mv`: a quarter of the SOC span of +-2 sigma, %.

    Two sigmas: a reading at the foot of a steep part of the curve may come from the plateau below it.
    """
    sigma_v = sigma_mv / 1000.0
    return max(25.0 * (soc_from_ocv(ocv_v + 2.0 * sigma_v) - soc_from_ocv(ocv_v - 2.0 * sigma_v)), 1e-3)


def _ocv_sigma_mv(charge: ChargeFacts, cells: int = CELLS) -> float:
    """How well the leading cell's open-circuit voltage is told under current (_first_cell_ocv_v), mV.

    The line's noise and drift (VOLTAGE_SIGMA_MV); and, while the leading cell's rise is within
    the healthy cells' spread (CELL_RISE_SPREAD), which cell is highest: on a plateau the cells'
    voltages cross, and the one highest now may not be the one whose rise the CC reading measured.
    A cell whose rise stands beyond twice that spread stays the highest: no other's is confused with it.
    """
    others_v = _others_rise_v(charge, cells)
    rest, cc = charge.rest, charge.cc
    if rest is None or cc is None:
        return VOLTAGE_SIGMA_MV
    lead_v = _lead_rise_v(rest, cc)
    if others_v is None:
        others_v = max(0.0, lead_v)
    elif lead_v > (1.0 + 2.0 * CELL_RISE_SPREAD) * others_v:
        return VOLTAGE_SIGMA_MV
    return math.hypot(VOLTAGE_SIGMA_MV, CELL_RISE_SPREAD * others_v * 1000.0)


def _ocv_rise_v(from_soc_pct: float, by_pct: float) -> float:
    """How much a cell's open-circuit voltage rises when its charge goes `by_pct` further from `from_soc_pct`, V."""
    return cell_ocv((from_soc_pct + by_pct) / 100.0) - cell_ocv(from_soc_pct / 100.0)


def _lead_rise_v(rest: Rest, cc: CcReading) -> float:
    """The leading cell's ohmic and diffusion rise at the CC reading: its voltage over its rest, less its charge's, V."""
    return (cc.cell_max_mv - rest.cell_max_mv) / 1000.0 - _ocv_rise_v(_top_soc_pct(rest), cc.soc_pct - rest.soc_pct)


def _first_cell_ocv_v(charge: ChargeFacts, line: protocol.BmsLine) -> Optional[float]:
    """Open-circuit voltage of the cell that leads the charge: its voltage less its ohmic and diffusion rise, V.

    The rise is the CC reading's (_lead_rise_v), scaled to the present current and temperature
    (Arrhenius, the law of temperature_coefficients.json).
    """
    rest, cc = charge.rest, charge.cc
    if rest is None or cc is None or line.current_a < REST_CURRENT_A:
        return None
    rise_v = _lead_rise_v(rest, cc)
    rise_v *= line.current_a / cc.current_a * arrhenius_factor(line.temperature_c) / arrhenius_factor(cc.temperature_c)
    return line.cell_max_mv / 1000.0 - rise_v


def _first_cell_soc_pct(charge: ChargeFacts, line: protocol.BmsLine) -> Optional[float]:
    """SOC of the cell that leads the charge, from its open-circuit voltage (_first_cell_ocv_v), %."""
    ocv_v = _first_cell_ocv_v(charge, line)
    return None if ocv_v is None else 100.0 * soc_from_ocv(ocv_v)


def pace_reading(charge: ChargeFacts, line: protocol.BmsLine, cells: int = CELLS) -> Optional[PaceReading]:
    """The leading cell's pace from the rest to this CC line: the BMS's % over the cell's (None before MIN_TRACK_PCT).

    The cell's SOC now is read from its voltage (_first_cell_ocv_v), at rest from its rest
    voltage. On the plateau a few mV span many % (the reading's doubt is large); on the step near
    65 % and near the knee, a % or less.
    """
    ocv_v = _first_cell_ocv_v(charge, line)
    if ocv_v is None or charge.rest is None:
        return None
    track = 100.0 * soc_from_ocv(ocv_v) - _top_soc_pct(charge.rest)
    if track < MIN_TRACK_PCT:
        return None
    pace = min(1.5, max(0.5, (line.soc_pct - charge.rest.soc_pct) / track))
    return PaceReading(pace, _soc_sigma_pct(ocv_v, _ocv_sigma_mv(charge, cells)) / track * pace)


def _others_rise_v(charge: ChargeFacts, cells: int = CELLS) -> Optional[float]:
    """The other cells' mean rise at the CC reading: the pack's rise less the leading cell's (None without them), V."""
    rest, cc = charge.rest, charge.cc
    if rest is None or cc is None or rest.voltage_v is None or cc.voltage_v is None:
        return None
    mean_soc_pct = 100.0 * soc_from_ocv(rest.voltage_v / cells)
    mean_rise_v = (cc.voltage_v - rest.voltage_v) / cells - _ocv_rise_v(mean_soc_pct, cc.soc_pct - rest.soc_pct)
    others_v = (cells * mean_rise_v - _lead_rise_v(rest, cc)) / (cells - 1)
    return others_v if others_v > 0 else None


def resistance_ratio(charge: ChargeFacts, cells: int = CELLS) -> Optional[float]:
    """The leading cell's rise at the CC reading over the other cells' mean rise (None without the pack's voltages).

    Healthy cells of one batch are within a few % of each other; a cell far above them is aged
    (or badly connected).
    """
    others_v = _others_rise_v(charge, cells)
    lead_v = None if charge.rest is None or charge.cc is None else _lead_rise_v(charge.rest, charge.cc)
    return None if others_v is None or lead_v is None or lead_v <= 0 else lead_v / others_v


def aged_pace(ratio: float) -> float:
    """The pace of a cell aged as far as its resistance says: capacity lost in step with resistance gained.

    The end-of-life pair of cell datasheets and cyclers (IEC 62620's 80 % of rated capacity,
    the resistance doubled) read as a line from the new cell: 20 % of capacity per 100 % of
    resistance.
    """
    gained = max(0.0, ratio - 1.0)
    return max(0.5, 1.0 - EOL_CAPACITY_LOSS * gained / EOL_RESISTANCE_GAIN)


def aged_weight(charge: ChargeFacts, cells: int = CELLS) -> float:
    """How likely the leading cell's raised resistance is its ageing rather than a connection, from the charge's start.

    An aged cell's resistance rose in its ohmic and its diffusion parts alike: at the charge's
    first line (the diffusion barely built) its rise is the same share of its steady rise as the
    other cells'. A connection adds ohmic resistance only: its rise is there at once, a larger
    share. Each hypothesis predicts that share; the line's voltages (VOLTAGE_SIGMA_MV) weigh
    them against AGED_PRIOR. Without the charge's first line, or a leading cell like the others: AGED_PRIOR.
    """
    rest, cc, first = charge.rest, charge.cc, charge.first
    if rest is None or cc is None or first is None or first.current_a < REST_CURRENT_A:
        return AGED_PRIOR
    lead_v, others_v = _lead_rise_v(rest, cc) / cc.current_a, _others_rise_v(charge, cells)
    lead_first_v = _lead_rise_v(rest, first) / first.current_a
    others_first_v = _others_rise_v(replace(charge, cc=first), cells)
    if others_v is None or others_first_v is None or lead_v <= 0:
        return AGED_PRIOR
    others_v, others_first_v = others_v / cc.current_a, others_first_v / first.current_a
    share = lead_first_v / lead_v
    aged = others_first_v / others_v  # ohmic and diffusion scaled alike: the others' share
    excess_v = lead_v - others_v
    connection = (others_first_v + excess_v) / (others_v + excess_v)  # the excess all ohmic
    sigma = share * math.hypot(VOLTAGE_SIGMA_MV / 1000.0 / first.current_a / max(lead_first_v, 1e-9),
                               VOLTAGE_SIGMA_MV / 1000.0 / cc.current_a / lead_v)
    odds = AGED_PRIOR / (1.0 - AGED_PRIOR) * math.exp(
        max(-50.0, min(50.0, 0.5 * (((share - connection) / sigma) ** 2 - ((share - aged) / sigma) ** 2))))
    return odds / (1.0 + odds)


def leading_pace(charge: ChargeFacts, line: Optional[protocol.BmsLine] = None,
                 cells: int = CELLS) -> tuple[float, float]:
    """The leading cell's pace (BMS % per % of the cell) and its doubt (one sigma): two hypotheses weighed by evidence.

    A sound cell holds its rated capacity (pace 1, PACE_SIGMA); an aged one holds what its
    resistance says (aged_pace of resistance_ratio). The resistance alone does not tell which
    (a connection raises it as well): each weighs AGED_PRIOR until the pace is read. The best
    pace reading (the kept one, or this line's) then weighs each hypothesis by how likely it
    made that reading, and moves each pace toward it as far as the reading is sure.
    """
    ratio = resistance_ratio(charge, cells)
    aged = aged_weight(charge, cells)
    hypotheses = [(1.0, 1.0)] if ratio is None else [(1.0 - aged, 1.0), (aged, aged_pace(ratio))]
    readings = [r for r in (charge.pace, None if line is None else pace_reading(charge, line, cells)) if r is not None]
    reading = min(readings, key=lambda r: r.doubt) if readings else None
    weighed = []
    for weight, pace in hypotheses:
        sigma = PACE_SIGMA * pace
        if reading is not None:
            spread = math.hypot(sigma, reading.doubt)
            weight *= math.exp(-0.5 * ((reading.pace - pace) / spread) ** 2) / spread
            gain = sigma**2 / spread**2
            pace, sigma = pace + gain * (reading.pace - pace), sigma * math.sqrt(1.0 - gain)
        weighed.append((weight, pace, sigma))
    total = sum(w for w, _, _ in weighed)
    if total <= 0.0:  # a reading no hypothesis explains: the reading itself
        assert reading is not None
        return reading.pace, reading.doubt
    mean = sum(w * p for w, p, _ in weighed) / total
    variance = sum(w * (s**2 + (p - mean) ** 2) for w, p, s in weighed) / total
    return mean, math.sqrt(variance)


def cv_start_soc_pct(model: Model, line: Optional[protocol.BmsLine] = None,
                     charge: Optional[ChargeFacts] = None) -> float:
    """The BMS's SOC at which this pack's CC will end (the first cell reaches its knee).

    Two readings, weighed by how well each tells it:
    - the rest before the charge: the cell that rested highest has (knee - its SOC) to go where
      a balanced pack has (knee - the BMS's SOC) (its capacity unknown: PRIOR_SIGMA_PCT);
    - the leading cell's voltage now (_first_cell_soc_pct), the knee less its SOC to go. On the
      plateau its voltage tells little (VOLTAGE_SIGMA_MV over a flat curve); near its knee, much.
    Both at the leading cell's pace (leading_pace): a smaller cell runs ahead of the BMS's SOC.
    The doubt between the pace's hypotheses widens both.
    """
    knee = model.cv_start_soc_pct
    if charge is None or charge.rest is None:
        return knee
    rest = charge.rest
    headroom = knee - _top_soc_pct(rest) + model.cell_margin_pct
    pace, pace_sigma = leading_pace(charge, line, model.cells)
    hedge = max(0.0, pace_sigma**2 - (PACE_SIGMA * pace) ** 2) ** 0.5  # the doubt beyond a sound cell's
    prior = min(knee, rest.soc_pct + headroom * pace)
    prior_sigma = math.hypot(PRIOR_SIGMA_PCT, hedge * headroom)
    s_now = None if line is None else _first_cell_soc_pct(charge, line)
    if s_now is None or charge.cc is None or line is None:
        return prior
    ocv_v = _first_cell_ocv_v(charge, line)
    assert ocv_v is not None
    live = line.soc_pct + max(0.0, knee - s_now) * pace
    # The voltage's noise over the curve's slope, and the pace's own doubt over the distance to go.
    live_sigma = math.hypot(_soc_sigma_pct(ocv_v, _ocv_sigma_mv(charge, model.cells)) * pace, pace_sigma * (knee - s_now))
    w_prior, w_live = 1.0 / prior_sigma**2, 1.0 / max(live_sigma, 1e-6) ** 2
    return (prior * w_prior + live * w_live) / (w_prior + w_live)


def expected_discharge_ah(model: Model, charge: Optional[ChargeFacts]) -> Optional[float]:
    """What the pack will give in phase 3, from its charge: None without the charge's facts.

    The charge put in (full - rest) % of the rated capacity. Two cells may empty first: the one
    that rested lowest (its rest charge + the charge), or the one that filled first, when it is
    smaller than rated: it took the charge from the rest SOC to full, so it holds charge / (1 - rest).
    """
    if charge is None or charge.rest is None or charge.full_soc_pct is None:
        return None
    charged_pct = charge.full_soc_pct - charge.rest.soc_pct
    if charged_pct < MIN_CHARGE_PCT:
        return None
    charged_ah = charged_pct / 100.0 * model.capacity_ah
    lowest = charged_ah + (_low_soc_pct(charge.rest) + model.cell_margin_pct) / 100.0 * model.capacity_ah
    filled_first = charged_ah / max(1e-6, 1.0 - charge.rest.soc_pct / 100.0)
    return min(lowest, filled_first, model.capacity_ah)


def _rest_left_s(model: Model, elapsed_s: Optional[float]) -> Optional[float]:
    return None if elapsed_s is None else max(0.0, model.rest_s - elapsed_s)


def _charge_s(model: Model, line: protocol.BmsLine, charge: Optional[ChargeFacts]) -> float:
    i_cc = model.charge_current_a
    amps = line.current_a
    at_limit = (line.cell_max_mv >= CELL_MAX_V * 1000.0 - CV_CELL_MARGIN_MV
                or line.voltage_v >= model.cells * CELL_MAX_V - CV_PACK_MARGIN_V)
    if at_limit and model.taper_current_a <= amps < CV_CURRENT_FRACTION * i_cc:
        return model.cv_tau_s * math.log(amps / model.taper_current_a)  # in CV: the taper goes on
    if at_limit and 0 < amps < model.taper_current_a:
        return 0.0
    amps = amps if amps >= REST_CURRENT_A else i_cc
    cc_ah = max(0.0, cv_start_soc_pct(model, line, charge) - line.soc_pct) / 100.0 * model.capacity_ah
    return cc_ah / amps * 3600.0 + model.cv_taper_s


def _discharge_s(model: Model, line: protocol.BmsLine, charge: Optional[ChargeFacts], discharging: bool) -> float:
    amps = -line.current_a if discharging else model.discharge_current_a
    if line.capacity_ah > 0.01 * model.capacity_ah and line.soc_pct < 99.0:
        # What came out for (100 - soc) % of the BMS's scale: the rated capacity as the BMS counts it.
        held_ah = line.capacity_ah * line.soc_pct / (100.0 - line.soc_pct)
    else:
        held_ah = model.capacity_ah * line.soc_pct / 100.0
    expected = expected_discharge_ah(model, charge)
    if expected is not None:
        held_ah = min(held_ah, max(0.0, expected - line.capacity_ah))
    return held_ah / amps * 3600.0


def estimate_s(model: Model, step: Optional[int], line: protocol.BmsLine, elapsed_s: Optional[float],
               charge: Optional[ChargeFacts] = None) -> Optional[float]:
    """Seconds left in phase `step` at this line (None when it cannot be told).

    `elapsed_s`: seconds since the phase started (the journal's step event, or its first row),
    None when unknown; phases 1, 3 and 4 need it while the relay is open. `charge`: the facts of
    this test's charge (ChargeFactsReader), None when unknown.
    """
    if step == 1:
        return None if elapsed_s is None else max(0.0, model.phase1_s - elapsed_s)
    if step == 2:
        return _charge_s(model, line, charge)
    if step == 3:
        if line.current_a <= -REST_CURRENT_A:
            return _discharge_s(model, line, charge, discharging=True)
        rest = _rest_left_s(model, elapsed_s)
        return None if rest is None else rest + _discharge_s(model, line, charge, discharging=False)
    if step == 4:
        to_go_ah = max(0.0, model.storage_soc_pct - line.soc_pct) / 100.0 * model.capacity_ah
        if line.current_a >= REST_CURRENT_A:
            return to_go_ah / line.current_a * 3600.0
        rest = _rest_left_s(model, elapsed_s)
        return None if rest is None else rest + to_go_ah / model.charge_current_a * 3600.0
    if step == protocol.STEP_FINISHED:
        return 0.0
    return None


class Smoother:
    """Sans-I/O: the phase's end as the estimates place it, averaged over `tau_s`, so the time left counts down evenly.

    Each estimate places the end at now + estimate; one line's noise moves that end by minutes
    near the first cell's knee. `update` averages those ends exponentially (time constant
    `tau_s`, `now_s` injected) and starts again when the phase changes or no estimate comes.
    """

    def __init__(self, tau_s: float = 60.0) -> None:
        self.tau_s = tau_s
        self._phase: Optional[int] = None
        self._end_s: Optional[float] = None
        self._at_s = 0.0

    def update(self, phase: Optional[int], now_s: float, estimate: Optional[float]) -> Optional[float]:
        """The smoothed time left at `now_s` for this phase's latest estimate (None passes through)."""
        if estimate is None or phase != self._phase or self._end_s is None or now_s < self._at_s:
            self._phase, self._end_s = phase, None if estimate is None else now_s + estimate
        else:
            weight = 1.0 - math.exp(-(now_s - self._at_s) / self.tau_s)
            self._end_s += weight * (now_s + estimate - self._end_s)
        self._at_s = now_s
        return None if self._end_s is None else max(0.0, self._end_s - now_s)
