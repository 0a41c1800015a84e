"""Pure model of a bench: a 16S LFP pack, its six nurse batteries and the ESP32 firmware's test sequence.

No I/O, no MQTT, no clock: everything moves by an explicit simulated `dt_s`, and all
randomness comes from a seeded `random.Random`, so a run is reproducible. `simulator.py`
is the thin MQTT shell around it.

Physics (per cell, series string of 16):
    v_terminal = OCV(soc) + v_rc + i * R0(T)          (i > 0 charges the cell)
    dv_rc/dt   = (i * R1(T) - v_rc) / (R1(T) * C1)     (one RC pair: diffusion / polarisation)
    dq/dt      = i - i_balance                         (passive balancing bleeds the cell)
    Cth dT/dt  = heat - G (T - T_ambient)              (lumped thermal mass and conductance)
R0 and R1 follow Arrhenius with the activation energy of temperature_coefficients.json, so
a resistance measured at T and corrected with that file gives back the 25 °C value.
Within one step the current is constant and the RC, charge and thermal equations are
integrated exactly (exponentials), so the result barely depends on `dt_s`.
"""

from __future__ import annotations

import bisect
import collections
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Optional, Union

from banclfp.wire import protocol

CELLS = 16
CELL_MAX_V = 3.65  # charge limit per cell
CELL_MIN_V = 2.50  # discharge limit per cell
PACK_MAX_V = CELLS * CELL_MAX_V  # 58.4 V
PACK_MIN_V = CELLS * CELL_MIN_V  # 40.0 V
NOMINAL_CELL_V = 3.2

KELVIN = 273.15
GAS_CONSTANT = 8.314462618
ACTIVATION_ENERGY_J_PER_MOL = 32000.0  # same law as temperature_coefficients.json

# LFP (graphite / LiFePO4) open-circuit voltage of one cell against state of charge:
# steep below 5 %, a flat plateau around 3.3 V with the small step near 65 %, steep above 98 %.
# 100 % is defined as the state a CC-CV charge to 3.65 V reaches when its current has tapered off.
OCV_POINTS: tuple[tuple[float, float], ...] = (
    (0.000, 2.500),
    (0.005, 2.750),
    (0.010, 2.900),
    (0.020, 3.000),
    (0.050, 3.100),
    (0.100, 3.200),
    (0.200, 3.250),
    (0.300, 3.275),
    (0.400, 3.290),
    (0.500, 3.300),
    (0.600, 3.305),
    (0.650, 3.320),
    (0.700, 3.328),
    (0.800, 3.332),
    (0.900, 3.340),
    (0.950, 3.350),
    (0.980, 3.380),
    (0.990, 3.420),
    (0.995, 3.480),
    (1.000, 3.650),
)
_OCV_SOC = tuple(p[0] for p in OCV_POINTS)
_OCV_V = tuple(p[1] for p in OCV_POINTS)
_SLOPE_LOW = (_OCV_V[1] - _OCV_V[0]) / (_OCV_SOC[1] - _OCV_SOC[0])
_SLOPE_HIGH = (_OCV_V[-1] - _OCV_V[-2]) / (_OCV_SOC[-1] - _OCV_SOC[-2])
# Cumulative integral of OCV over SOC at each table point (trapezoids of a piecewise-linear curve are exact).
_OCV_INTEGRAL: tuple[float, ...] = tuple(
    sum((_OCV_V[i] + _OCV_V[i + 1]) / 2 * (_OCV_SOC[i + 1] - _OCV_SOC[i]) for i in range(k)) for k in range(len(OCV_POINTS))
)


def cell_ocv(soc: float) -> float:
    """Open-circuit voltage (V) of one LFP cell at state of charge `soc` (0..1, extrapolated outside)."""
    if soc <= _OCV_SOC[0]:
        return _OCV_V[0] + _SLOPE_LOW * (soc - _OCV_SOC[0])
    if soc >= _OCV_SOC[-1]:
        return _OCV_V[-1] + _SLOPE_HIGH * (soc - _OCV_SOC[-1])
    i = bisect.bisect_right(_OCV_SOC, soc)
    s0, s1, v0, v1 = _OCV_SOC[i - 1], _OCV_SOC[i], _OCV_V[i - 1], _OCV_V[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


def ocv_integral(soc: float) -> float:
    """Integral of cell_ocv from 0 to `soc` (V); times capacity in coulombs it is the stored energy in J."""
    if soc <= _OCV_SOC[0]:
        return (_OCV_V[0] + cell_ocv(soc)) / 2 * soc
    if soc >= _OCV_SOC[-1]:
        return _OCV_INTEGRAL[-1] + (_OCV_V[-1] + cell_ocv(soc)) / 2 * (soc - _OCV_SOC[-1])
    i = bisect.bisect_right(_OCV_SOC, soc)
    s0 = _OCV_SOC[i - 1]
    return _OCV_INTEGRAL[i - 1] + (_OCV_V[i - 1] + cell_ocv(soc)) / 2 * (soc - s0)


def soc_from_ocv(voltage_v: float) -> float:
    """State of charge (0..1) of a resting cell at this open-circuit voltage (inverse of cell_ocv, clamped)."""
    if voltage_v <= _OCV_V[0]:
        return 0.0
    if voltage_v >= _OCV_V[-1]:
        return 1.0
    i = bisect.bisect_right(_OCV_V, voltage_v)
    s0, s1, v0, v1 = _OCV_SOC[i - 1], _OCV_SOC[i], _OCV_V[i - 1], _OCV_V[i]
    return s0 + (s1 - s0) * (voltage_v - v0) / (v1 - v0)


def arrhenius_factor(temperature_c: float, activation_energy_j_per_mol: float = ACTIVATION_ENERGY_J_PER_MOL) -> float:
    """R(T) / R(25 °C) of an electrochemical resistance (lower when warm)."""
    t_k = temperature_c + KELVIN
    return math.exp(activation_energy_j_per_mol / GAS_CONSTANT * (1.0 / t_k - 1.0 / (25.0 + KELVIN)))


# =========================================================================== pack


@dataclass
class PackParams:
    """Configuration of one simulated battery; None fields get a value derived from the capacity."""

    capacity_ah: float = 100.0  # rated capacity = capacity of the weakest healthy cell
    ri_ohm: Optional[float] = None  # pack ohmic resistance R0 at 25 °C (default 2.0 ohm.Ah / capacity)
    diffusion_ohm: Optional[float] = None  # pack RC resistance R1 at 25 °C (default 0.4 * ri_ohm)
    diffusion_tau_s: float = 30.0  # R1 * C1 at 25 °C
    cells: int = CELLS
    capacity_spread_pct: float = 3.0  # healthy cells hold 0..3 % more than the rated capacity
    resistance_spread_pct: float = 5.0  # cell-to-cell spread of R0 and R1 (uniform +-)
    initial_soc_pct: float = 30.0  # batteries arrive at storage charge
    imbalance_pct: float = 0.3  # standard deviation of the initial cell SOCs, % points
    ambient_c: float = 25.0
    heat_capacity_j_per_k: Optional[float] = None  # default 21 J/K per Ah per cell (about 1 kJ/kg/K)
    thermal_time_constant_s: float = 3 * 3600.0  # thermal mass / conductance to ambient
    weak_cell: bool = False  # one cell with reduced capacity and raised resistance
    weak_capacity_factor: float = 0.8
    weak_resistance_factor: float = 2.0
    balance_current_a: Optional[float] = None  # passive bleed per cell (default 0.002 * capacity)
    balance_start_v: float = 3.40
    balance_delta_v: float = 0.010
    activation_energy_j_per_mol: float = ACTIVATION_ENERGY_J_PER_MOL
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.capacity_ah > 0:
            raise ValueError("capacity_ah must be > 0")
        if self.ri_ohm is None:
            self.ri_ohm = 2.0 / self.capacity_ah
        if self.diffusion_ohm is None:
            self.diffusion_ohm = 0.4 * self.ri_ohm
        if not (self.ri_ohm > 0 and self.diffusion_ohm > 0 and self.diffusion_tau_s > 0):
            raise ValueError("ri_ohm, diffusion_ohm and diffusion_tau_s must be > 0")
        if self.heat_capacity_j_per_k is None:
            self.heat_capacity_j_per_k = 21.0 * self.capacity_ah * self.cells
        if self.balance_current_a is None:
            self.balance_current_a = 0.002 * self.capacity_ah
        if not 0 <= self.initial_soc_pct <= 100:
            raise ValueError("initial_soc_pct must be within 0..100")

    @property
    def thermal_conductance_w_per_k(self) -> float:
        """Heat flow to ambient per kelvin of temperature rise."""
        assert self.heat_capacity_j_per_k is not None  # filled by __post_init__
        return float(self.heat_capacity_j_per_k) / self.thermal_time_constant_s


@dataclass
class Cell:
    """State and constants of one cell."""

    capacity_ah: float
    charge_ah: float
    r0_ohm_25c: float
    r1_ohm_25c: float
    c1_farad: float
    v_rc: float = 0.0
    balancing: bool = False
    bled_ah: float = 0.0
    ocv_v: float = 0.0  # open-circuit voltage, kept in step with charge_ah by set_charge

    def __post_init__(self) -> None:
        self.set_charge(self.charge_ah)

    def set_charge(self, charge_ah: float) -> None:
        """Set the stored charge (Ah) and refresh the open-circuit voltage."""
        self.charge_ah = charge_ah
        self.ocv_v = cell_ocv(charge_ah / self.capacity_ah)

    @property
    def soc(self) -> float:
        """State of charge, fraction (may leave 0..1 slightly when abused)."""
        return self.charge_ah / self.capacity_ah

    @property
    def chemical_energy_j(self) -> float:
        """Energy stored relative to an empty cell, J."""
        return self.capacity_ah * 3600.0 * ocv_integral(self.soc)


class LfpPack:
    """A 16S LFP pack with its BMS balancing; `step` advances it with a constant current."""

    def __init__(self, params: PackParams) -> None:
        self.params = params
        rng = random.Random(f"pack:{params.seed}")
        n = params.cells
        spread = params.capacity_spread_pct / 100.0
        capacities = [params.capacity_ah * (1.0 + spread * rng.random()) for _ in range(n)]
        # The rated capacity is the weakest healthy cell's: a series pack holds no more.
        capacities[rng.randrange(n)] = params.capacity_ah
        self.weak_index: Optional[int] = rng.randrange(n) if params.weak_cell else None
        r_spread = params.resistance_spread_pct / 100.0
        r0_weights = [1.0 + r_spread * (2 * rng.random() - 1) for _ in range(n)]
        r1_weights = [1.0 + r_spread * (2 * rng.random() - 1) for _ in range(n)]
        r0_sum, r1_sum = sum(r0_weights), sum(r1_weights)
        assert params.ri_ohm is not None and params.diffusion_ohm is not None  # filled by __post_init__
        self.cells: list[Cell] = []
        for i in range(n):
            r0 = float(params.ri_ohm) * r0_weights[i] / r0_sum
            r1 = float(params.diffusion_ohm) * r1_weights[i] / r1_sum
            capacity = capacities[i]
            if i == self.weak_index:
                capacity *= params.weak_capacity_factor
                r0 *= params.weak_resistance_factor
                r1 *= params.weak_resistance_factor
            soc = params.initial_soc_pct / 100.0 + rng.gauss(0.0, params.imbalance_pct / 100.0)
            soc = min(max(soc, 0.0), 1.0)
            self.cells.append(Cell(capacity, capacity * soc, r0, r1, params.diffusion_tau_s / r1))
        self.temperature_c = params.ambient_c  # also sets resistance_factor
        self.current_a = 0.0
        # Bookkeeping for conservation checks.
        self.heat_j = 0.0
        self.charge_in_ah = 0.0  # integral of the terminal current
        self.extra_heat_j = 0.0  # heat injected from outside (fault), not from the cells
        self.time_s = 0.0

    # ----------------------------------------------------------------- observations

    @property
    def temperature_c(self) -> float:
        """Pack temperature, °C."""
        return self._temperature_c

    @temperature_c.setter
    def temperature_c(self, value: float) -> None:
        self._temperature_c = value
        self.resistance_factor = arrhenius_factor(value, self.params.activation_energy_j_per_mol)

    def cell_voltages(self, current_a: Optional[float] = None) -> list[float]:
        """Terminal voltage of each cell with `current_a` flowing (default: the present current), V.

        Switching the current changes only the ohmic drop at once: the RC voltage and the
        charge are continuous, which is what a fast ADC sample right after a step sees.
        """
        i = self.current_a if current_a is None else current_a
        f = self.resistance_factor
        return [c.ocv_v + c.v_rc + i * c.r0_ohm_25c * f for c in self.cells]

    def voltage_v(self, current_a: Optional[float] = None) -> float:
        """Pack terminal voltage with `current_a` flowing (default: the present current), V."""
        return sum(self.cell_voltages(current_a))

    def ocv_v(self) -> float:
        """Pack open-circuit voltage (sum of cell OCVs), V."""
        return sum(c.ocv_v for c in self.cells)

    @property
    def ohmic_resistance_ohm(self) -> float:
        """Pack R0 at the present temperature, ohm."""
        return sum(c.r0_ohm_25c for c in self.cells) * self.resistance_factor

    @property
    def chemical_energy_j(self) -> float:
        """Energy stored in the cells (relative to empty cells), J."""
        return sum(c.chemical_energy_j for c in self.cells)

    @property
    def capacitor_energy_j(self) -> float:
        """Energy held in the RC pairs, J."""
        return sum(0.5 * c.c1_farad * c.v_rc**2 for c in self.cells)

    @property
    def balancing(self) -> bool:
        """True while the BMS bleeds at least one cell."""
        return any(c.balancing for c in self.cells)

    @property
    def mean_soc(self) -> float:
        """Mean cell state of charge, fraction."""
        return sum(c.soc for c in self.cells) / len(self.cells)

    def max_current_for_limits(self, pack_limit_v: float, cell_limit_v: float, dt_s: float) -> float:
        """Largest charging current that keeps the pack and every cell under their limits at the end of `dt_s`.

        That is what a CV charger does; the RC voltage's rise during the step is included.
        """
        f = self.resistance_factor
        best = math.inf
        pack_e = 0.0
        pack_r = 0.0
        for c in self.cells:
            r1 = c.r1_ohm_25c * f
            decay = math.exp(-dt_s / (r1 * c.c1_farad))
            e = c.ocv_v + c.v_rc * decay
            r = c.r0_ohm_25c * f + r1 * (1.0 - decay)
            best = min(best, (cell_limit_v - e) / r)
            pack_e += e
            pack_r += r
        best = min(best, (pack_limit_v - pack_e) / pack_r)
        return max(best, 0.0)

    # ----------------------------------------------------------------- dynamics

    def _update_balancing(self, current_a: float) -> None:
        """BMS passive balancing: bleed the cells well above the lowest one near the top of a charge."""
        volts = self.cell_voltages(current_a)
        low = min(volts)
        for c, v in zip(self.cells, volts):
            if current_a <= 0 or v < self.params.balance_start_v:
                c.balancing = False
            elif v - low >= self.params.balance_delta_v:
                c.balancing = True
            elif v - low < self.params.balance_delta_v / 2:  # hysteresis
                c.balancing = False

    def step(self, current_a: float, dt_s: float, extra_heat_w: float = 0.0) -> None:
        """Advance by `dt_s` seconds with a constant terminal current (A, > 0 charges)."""
        if dt_s <= 0:
            raise ValueError("dt_s must be > 0")
        self._update_balancing(current_a)
        self.current_a = current_a
        f = self.resistance_factor
        heat_j = 0.0
        assert self.params.balance_current_a is not None  # filled by __post_init__
        bleed_a = float(self.params.balance_current_a)
        for c in self.cells:
            r0 = c.r0_ohm_25c * f
            r1 = c.r1_ohm_25c * f
            tau = r1 * c.c1_farad
            decay = math.exp(-dt_s / tau)
            v_inf = current_a * r1
            v0 = c.v_rc
            v1 = v_inf + (v0 - v_inf) * decay
            # Energy into the RC pair = i * integral(v_rc dt); what does not stay in C1 is heat in R1.
            rc_in_j = current_a * (v_inf * dt_s + (v0 - v_inf) * tau * (1.0 - decay))
            rc_heat_j = rc_in_j - 0.5 * c.c1_farad * (v1 * v1 - v0 * v0)
            c.v_rc = v1
            bleed = bleed_a if c.balancing else 0.0
            # The bleed resistor sits across the cell: its energy comes from the cell's chemistry.
            ocv0 = c.ocv_v
            c.set_charge(c.charge_ah + (current_a - bleed) * dt_s / 3600.0)
            if bleed:
                heat_j += (ocv0 + c.ocv_v) / 2 * bleed * dt_s
                c.bled_ah += bleed * dt_s / 3600.0
            heat_j += current_a * current_a * r0 * dt_s + rc_heat_j
        self.heat_j += heat_j
        self.charge_in_ah += current_a * dt_s / 3600.0
        self.extra_heat_j += extra_heat_w * dt_s
        # Lumped thermal model, exact for constant power over the step.
        assert self.params.heat_capacity_j_per_k is not None  # filled by __post_init__
        cth = float(self.params.heat_capacity_j_per_k)
        g = self.params.thermal_conductance_w_per_k
        power_w = heat_j / dt_s + extra_heat_w
        t_inf = self.params.ambient_c + power_w / g
        self.temperature_c = t_inf + (self.temperature_c - t_inf) * math.exp(-g * dt_s / cth)
        self.time_s += dt_s


# =========================================================================== nurse batteries


class NurseBank:
    """The six nurse batteries a bench discharges into (phase 3) and charges from (phases 2 and 4).

    The bench's DC/DC converter connects one nurse at a time: the emptiest one while it
    absorbs energy (until it is 95 % full), the fullest one while it supplies (down to 10 %).
    Energy no nurse can take or give goes to / comes from the mains supply (`grid_j`).
    """

    FULL_FRACTION = 0.95
    EMPTY_FRACTION = 0.10

    def __init__(self, capacity_wh: float, rng: random.Random, count: int = protocol.NURSE_COUNT,
                 efficiency: float = 0.95) -> None:
        if not capacity_wh > 0 or not 0 < efficiency <= 1:
            raise ValueError("capacity_wh must be > 0 and efficiency within (0, 1]")
        self.capacity_j = capacity_wh * 3600.0
        self.efficiency = efficiency
        self.energy_j = [self.capacity_j * rng.uniform(0.35, 0.65) for _ in range(count)]
        self.active: Optional[int] = None
        self.absorbing: Optional[bool] = None
        self.grid_j = 0.0  # > 0: energy taken from the mains, < 0: sent to it
        self.loss_j = 0.0  # converter losses

    def soc_pct(self) -> list[int]:
        """State of charge of each nurse, integer percent (what goes on bancX/nJ)."""
        return [int(round(100.0 * e / self.capacity_j)) for e in self.energy_j]

    def _pick(self, absorbing: bool) -> Optional[int]:
        if absorbing:
            candidates = [i for i, e in enumerate(self.energy_j) if e < self.FULL_FRACTION * self.capacity_j]
            return min(candidates, key=lambda i: self.energy_j[i]) if candidates else None
        candidates = [i for i, e in enumerate(self.energy_j) if e > self.EMPTY_FRACTION * self.capacity_j]
        return max(candidates, key=lambda i: self.energy_j[i]) if candidates else None

    def exchange(self, battery_energy_j: float) -> None:
        """Account for `battery_energy_j` into the battery under test (< 0: out of it, into the nurses)."""
        if battery_energy_j == 0:
            return
        absorbing = battery_energy_j < 0
        if absorbing:
            wanted = -battery_energy_j * self.efficiency  # what reaches the nurse side
            self.loss_j += -battery_energy_j - wanted
        else:
            wanted = battery_energy_j / self.efficiency  # what the nurse side must supply
            self.loss_j += wanted - battery_energy_j
        if self.absorbing != absorbing:
            self.absorbing, self.active = absorbing, None
        while wanted > 1e-9:
            if self.active is None:
                self.active = self._pick(absorbing)
                if self.active is None:
                    # Every nurse is full (or empty): the mains supply takes (or gives) the rest.
                    self.grid_j += -wanted if absorbing else wanted
                    return
            j = self.active
            if absorbing:
                room = self.FULL_FRACTION * self.capacity_j - self.energy_j[j]
            else:
                room = self.energy_j[j] - self.EMPTY_FRACTION * self.capacity_j
            moved = min(max(room, 0.0), wanted)
            self.energy_j[j] += moved if absorbing else -moved
            wanted -= moved
            if moved >= room:
                self.active = None  # this nurse is full (or empty): switch to another one

    @property
    def total_energy_j(self) -> float:
        """Energy held by all nurses, J."""
        return sum(self.energy_j)


# =========================================================================== firmware


@dataclass(frozen=True)
class StepChanged:
    """The firmware entered a phase (1..5) or stopped (9): publish on bancX/step."""

    step: int


@dataclass(frozen=True)
class RiMeasured:
    """One pulse's results: publish `payload()` on bancX/ri/results."""

    values: dict
    text: Optional[str] = None  # the JSON as sent, when a fault makes it other than encode_ri_results(values)

    def payload(self) -> str:
        """The JSON text the firmware publishes."""
        return protocol.encode_ri_results(self.values) if self.text is None else self.text


@dataclass(frozen=True)
class SecurityAlert:
    """A safety event for the operator: publish on bancX/security."""

    message: str


Event = Union[StepChanged, RiMeasured, SecurityAlert]

HISTORY_LINES = 3600  # BMS lines the firmware keeps in RAM for replays: one hour at 1 Hz (docs/protocole.md §6)
REST_LINE_PERIOD_S = 10.0  # v3: one line every 10 s while finished (5) or stopped (9)

# Contract versions a firmware can speak (docs/protocole.md §2): v1 sends 10 fields and keeps no
# lines for replays, v2 adds uptime_ms (11th field) and the replay ring, v3 adds esp_step (12th).
CONTRACTS: tuple[int, ...] = (1, 2, 3)
CONTRACT_LATEST = CONTRACTS[-1]

# Fault injection, one line garbled on its way out (the ring keeps the line as measured):
SEQ_BITFLIP = "seq-bitflip"  # seq with one high bit flipped
UPTIME_GARBLED = "uptime-garbled"  # uptime_ms years ahead
LINE_GLITCHES: tuple[str, ...] = (SEQ_BITFLIP, UPTIME_GARBLED)
SEQ_BITFLIP_BIT = 20  # seq ^ 2**20: a million lines ahead, 12 days at 1 Hz
UPTIME_GARBLED_BIT = 40  # uptime_ms ^ 2**40: about 35 years ahead
# Pulse results no 16S pack gives, yet accepted by the contract's own range (0, RI_MAX_OHM]...
ABSURD_RI_OHM: tuple[float, ...] = (1e-9, 10.0)
# ...and one whose number is too large for a float: 1 followed by 400 zeros, written literally.
OVERFLOW_RI_TEXT = '{"ri_discharge": 1' + "0" * 400 + "}"

IDLE = "idle"  # powered, no test engaged
RUNNING = "running"
STOPPED = "stopped"  # current off, waiting for a command (end of day, trip, broker loss, reboot)
FINISHED = "finished"


@dataclass
class SequenceParams:
    """The bench's test sequence; None currents are derived from the rated capacity."""

    charge_current_a: Optional[float] = None  # default 0.5 C
    discharge_current_a: Optional[float] = None  # default 0.5 C
    pulse_current_a: Optional[float] = None  # default 0.5 C
    pulse_s: float = 30.0
    pulse_rest_s: float = 120.0
    pulse_pairs: int = 3  # each pair: one discharge pulse, one charge pulse
    taper_current_a: Optional[float] = None  # end of CV: 0.05 C
    rest_s: float = 600.0  # relaxation before the capacity discharge and before the storage charge
    storage_soc_pct: float = 50.0
    over_temperature_c: float = 55.0
    restart_margin_c: float = 5.0  # a stopped bench restarts only below over_temperature_c minus this
    cell_abs_max_v: float = 3.80  # BMS protection limits (never reached by a normal run)
    cell_abs_min_v: float = 2.00
    safe_timeout_s: float = 30.0  # broker lost this long -> current off, wait for a new command
    nvs_save_period_s: float = 60.0  # how often the phase-3 counters go to flash
    nurse_efficiency: float = 0.95
    nurse_capacity_wh: Optional[float] = None  # default: the battery's nominal energy
    voltage_noise_v: float = 0.005
    current_noise_a: float = 0.02
    cell_noise_mv: float = 1.0

    def resolve(self, capacity_ah: float) -> SequenceParams:
        """Fill the None currents from the rated capacity (returns self)."""
        self.charge_current_a = self.charge_current_a or 0.5 * capacity_ah
        self.discharge_current_a = self.discharge_current_a or 0.5 * capacity_ah
        self.pulse_current_a = self.pulse_current_a or 0.5 * capacity_ah
        self.taper_current_a = self.taper_current_a or 0.05 * capacity_ah
        self.nurse_capacity_wh = self.nurse_capacity_wh or capacity_ah * CELLS * NOMINAL_CELL_V
        for name in ("charge_current_a", "discharge_current_a", "pulse_current_a", "taper_current_a"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        return self


@dataclass
class _Nvs:
    """What the firmware keeps in flash (ESP32 NVS): survives a reboot, not a new battery."""

    running: bool = False  # a phase was running (current on) when this was saved
    phase: int = 0
    phase3_started: bool = False
    capacity_ah: float = 0.0
    energy_wh: float = 0.0


@dataclass
class _Pulse:
    """Samples of one Ri pulse, taken like the firmware does."""

    kind: str  # "discharge" or "charge"
    v_before: float
    i_before: float
    v_after: float
    i_after: float


class BenchFirmware:
    """The ESP32 firmware of one bench around its battery: phases, pulses, counters, safety.

    Call `handle_command` for each bancX/command, `advance(dt_s)` for each physics step
    and `measure()` once per second for the BMS line. Each returns the events to publish.
    """

    def __init__(
        self, pack_params: PackParams, sequence: Optional[SequenceParams] = None, connected: bool = True,
        contract: int = CONTRACT_LATEST,
    ) -> None:
        if contract not in CONTRACTS:
            raise ValueError(f"unknown contract version: {contract!r} (one of {CONTRACTS})")
        self.contract = contract  # what this firmware sends (CONTRACTS): an older one can be emulated
        self.pack_params = pack_params
        self.seq_params = (sequence or SequenceParams()).resolve(pack_params.capacity_ah)
        self.rng = random.Random(f"firmware:{pack_params.seed}")
        self.pack = LfpPack(pack_params)
        assert self.seq_params.nurse_capacity_wh is not None  # filled by resolve()
        self.nurses = NurseBank(self.seq_params.nurse_capacity_wh, self.rng, efficiency=self.seq_params.nurse_efficiency)
        self.batteries_tested = 0
        self.nvs = _Nvs()
        self.clock_s = 0.0
        self.boot_clock_s = 0.0  # clock_s at the last boot: uptime_ms counts from it
        self._last_rest_line_s: Optional[float] = None  # clock_s of the last line sent while finished or stopped
        # The last HISTORY_LINES BMS lines, in RAM (lost at a reboot), for `replay` (docs/protocole.md §6).
        self.history: collections.deque[protocol.BmsLine] = collections.deque(maxlen=HISTORY_LINES)
        self._glitches: collections.deque[str] = collections.deque()  # LINE_GLITCHES for the next lines
        self.connected = connected
        self._lost_at_s: Optional[float] = None if connected else 0.0
        self._boot()
        # The BMS is a separate board powered by the pack: it keeps counting through ESP reboots.
        self.bms_soc_pct = self._soc_from_rest()
        self.extra_heat_w = 0.0
        self.last_trip: Optional[str] = None

    # ----------------------------------------------------------------- state

    def _boot(self) -> None:
        """Power-on / reboot: RAM is lost, flash (NVS) is kept, the current is off."""
        self.seq = 0
        self.boot_clock_s = self.clock_s
        self.history.clear()
        self.state = IDLE
        self.phase = 0
        self._open_relay()
        self.capacity_ah = self.nvs.capacity_ah
        self.energy_wh = self.nvs.energy_wh
        self._phase_clock_s = 0.0
        self._segment = 0
        self._segment_s = 0.0
        self._pulse: Optional[_Pulse] = None
        self._cv = False
        self._last_nvs_save_s = self.clock_s
        self._pending: list[Event] = []
        if self.nvs.running:
            # The ESP was in a test when it went down: tell the lab and wait for a new command.
            self.state = STOPPED
            self.phase = self.nvs.phase
            self._pending = [
                SecurityAlert(f"ESP redémarré pendant la phase {self.phase} : courant coupé, en attente d'une commande"),
                StepChanged(protocol.STEP_STOP),
            ]

    def _soc_from_rest(self) -> float:
        """SOC the BMS estimates at power-on from the mean resting cell voltage, %."""
        mean_ocv = self.pack.ocv_v() / len(self.pack.cells)
        return 100.0 * soc_from_ocv(mean_ocv)

    @property
    def engaged(self) -> bool:
        """True while a test runs: BMS lines are published once per second."""
        return self.state == RUNNING

    def line_due(self) -> bool:
        """Whether a BMS line goes out this second: every second while a phase runs; from protocol v3,
        every REST_LINE_PERIOD_S while finished or stopped, so that the Pi always knows the phase
        (field 12) even when a step message was lost."""
        if self.state == RUNNING:
            self._last_rest_line_s = None
            return True
        if self.contract < 3 or self.state not in (FINISHED, STOPPED):
            return False
        if self._last_rest_line_s is not None and self.clock_s - self._last_rest_line_s < REST_LINE_PERIOD_S - 1e-9:
            return False
        self._last_rest_line_s = self.clock_s
        return True

    @property
    def esp_step(self) -> int:
        """The phase in force now, as field 12 reports it (protocol.ESP_STEPS).

        0 idle: booted, no test engaged and none suspended (an `end` received while idle is
        acknowledged with 9 on bancX/step but leaves the firmware idle); the running phase 1..4;
        5 once the test is finished; 9 stopped with a test suspended (end of day, a safety
        trip, a lost broker, a reboot during a phase), waiting for a command.
        """
        if self.state == RUNNING:
            return self.phase
        if self.state == FINISHED:
            return protocol.STEP_FINISHED
        if self.state == STOPPED:
            return protocol.STEP_STOP
        return protocol.ESP_STEP_IDLE

    def take_pending(self) -> list[Event]:
        """Events produced outside advance/command (e.g. after a reboot)."""
        events, self._pending = self._pending, []
        return events

    # ----------------------------------------------------------------- inputs

    def reboot(self) -> None:
        """The ESP resets (watchdog, brown-out): seq restarts at 0, current off, NVS kept."""
        self._save_nvs()
        self._boot()

    def set_connected(self, connected: bool) -> None:
        """Broker connection state, as the MQTT client reports it."""
        if connected == self.connected:
            return
        self.connected = connected
        self._lost_at_s = None if connected else self.clock_s

    def handle_command(self, command: Union[int, str]) -> list[Event]:
        """React to a bancX/command payload (already parsed): a phase 1..5 or "end"."""
        if command == protocol.COMMAND_END:
            self._stop()
            return [StepChanged(protocol.STEP_STOP)]
        step = int(command)
        if step not in protocol.PHASES:
            raise ValueError(f"invalid command: {command!r}")
        if self.state == RUNNING and step == self.phase:
            return [StepChanged(step)]  # a restarted banc.py re-sends its step: acknowledge, carry on
        reached = self.nvs.phase
        if self.contract >= 3 and step != 1 and reached in protocol.PHASES and step < reached:
            # Never backwards (v3): a Pi that missed a step message announces an older phase;
            # the phase reached is said again (and resumed when stopped), never restarted lower.
            if self.state == FINISHED or reached == protocol.STEP_FINISHED:
                return [StepChanged(protocol.STEP_FINISHED)]
            if self.state == RUNNING:
                return [StepChanged(self.phase)]
            step = reached
        hot_limit = self.seq_params.over_temperature_c - self.seq_params.restart_margin_c
        if step != protocol.STEP_FINISHED and self.pack.temperature_c >= hot_limit:
            self._stop()
            return [
                SecurityAlert(
                    f"Température batterie {self.pack.temperature_c:.1f} °C : redémarrage refusé "
                    f"(attendre moins de {hot_limit:.0f} °C)"
                ),
                StepChanged(protocol.STEP_STOP),
            ]
        if step == 1 and self.state in (IDLE, FINISHED) and self.nvs.phase == protocol.STEP_FINISHED:
            self._new_battery()
        if step == 3 and not self.nvs.phase3_started:
            # A capacity is only measured from full: without this test's phase-3 counters, charge first.
            step = 2
        return self._enter(step)

    def _new_battery(self) -> None:
        """The previous battery finished its test: the operator put a new one on the bench."""
        self.batteries_tested += 1
        self.pack = LfpPack(
            PackParams(**{**self.pack_params.__dict__, "seed": self.pack_params.seed + 1000 * self.batteries_tested})
        )
        self.bms_soc_pct = self._soc_from_rest()
        self.nvs = _Nvs()
        self.capacity_ah = self.energy_wh = 0.0

    def _open_relay(self) -> None:
        """Current off now (the next physics step starts from zero current)."""
        self.current_a = 0.0
        self.pack.current_a = 0.0

    def _stop(self) -> None:
        self._open_relay()
        self._pulse = None
        if self.state == RUNNING:
            self.state = STOPPED
        self.nvs.running = False
        self._save_nvs()

    def _enter(self, step: int) -> list[Event]:
        """Start (or resume) phase `step`."""
        self.phase = step
        self._phase_clock_s = 0.0
        self._segment = 0
        self._segment_s = 0.0
        self._pulse = None
        self._cv = False
        self.current_a = 0.0
        if step in (1, 2):
            # Counters are "0 before phase 3": a (re)started charge belongs to the next capacity run.
            self.capacity_ah = self.energy_wh = 0.0
            self.nvs.phase3_started = False
        if step == protocol.STEP_FINISHED:
            self.state = FINISHED
            self.nvs.running = False
        else:
            self.state = RUNNING
            self.nvs.running = True
        self.nvs.phase = step
        self._save_nvs()
        return [StepChanged(step)]

    def _save_nvs(self) -> None:
        self.nvs.capacity_ah = self.capacity_ah
        self.nvs.energy_wh = self.energy_wh
        self._last_nvs_save_s = self.clock_s

    def _trip(self, message: str) -> list[Event]:
        """Protection: current off at once, alert, stop (the test resumes on a new command)."""
        self.last_trip = message
        self._stop()
        return [SecurityAlert(message), StepChanged(protocol.STEP_STOP)]

    # ----------------------------------------------------------------- measurement

    def _noisy(self, value: float, sigma: float) -> float:
        return value + self.rng.gauss(0.0, sigma) if sigma > 0 else value

    def measured_voltage(self, current_a: Optional[float] = None) -> float:
        """Pack voltage as the ESP's ADC reads it (noisy), V."""
        return self._noisy(self.pack.voltage_v(current_a), self.seq_params.voltage_noise_v)

    def measured_current(self, current_a: Optional[float] = None) -> float:
        """Current as the shunt reads it: noisy while the relay is closed, exactly 0 when open, A."""
        i = self.pack.current_a if current_a is None else current_a
        if i == 0:
            return 0.0
        return self._noisy(i, self.seq_params.current_noise_a + 0.001 * abs(i))

    def measure(self) -> protocol.BmsLine:
        """The BMS line of this second; `seq` goes up by one per line.

        The fields follow `contract`: uptime_ms from v2, esp_step (the phase in force at the
        measurement) from v3. The ring keeps the line as measured; a glitch queued by
        `garble_next_line` changes only the line returned, the one that goes on the wire.
        """
        p = self.seq_params
        cells = [self._noisy(v * 1000.0, p.cell_noise_mv) for v in self.pack.cell_voltages()]
        line = protocol.BmsLine(
            seq=self.seq,
            voltage_v=self.measured_voltage(),
            current_a=self.measured_current(),
            soc_pct=min(max(self.bms_soc_pct, 0.0), 100.0),
            temperature_c=self._noisy(self.pack.temperature_c, 0.05),
            capacity_ah=self.capacity_ah,
            energy_wh=self.energy_wh,
            cell_min_mv=min(cells),
            cell_max_mv=max(cells),
            balancing=1 if self.pack.balancing else 0,
            uptime_ms=self.uptime_ms if self.contract >= 2 else None,
            esp_step=self.esp_step if self.contract >= 3 else None,
        )
        self.seq += 1
        if self.contract >= 2:  # the replay ring came with protocol v2
            self.history.append(line)
        if self._glitches:
            return self._garble(line, self._glitches.popleft())
        return line

    def garble_next_line(self, kind: str) -> None:
        """Fault injection: the next line measured leaves garbled once (`kind` in LINE_GLITCHES).

        `seq-bitflip`: its seq has bit SEQ_BITFLIP_BIT flipped; `uptime-garbled`: its uptime_ms
        has bit UPTIME_GARBLED_BIT flipped, decades ahead (needs protocol v2). The counters are
        untouched, so the lines after it are normal, and the ring holds the true line: a replay
        of its real seq sends it right.
        """
        if kind not in LINE_GLITCHES:
            raise ValueError(f"unknown line glitch: {kind!r}")
        if kind == UPTIME_GARBLED and self.contract < 2:
            raise ValueError("uptime-garbled needs uptime_ms (protocol v2 or later)")
        self._glitches.append(kind)

    @staticmethod
    def _garble(line: protocol.BmsLine, kind: str) -> protocol.BmsLine:
        if kind == SEQ_BITFLIP:
            return replace(line, seq=line.seq ^ (1 << SEQ_BITFLIP_BIT))
        assert line.uptime_ms is not None  # checked by garble_next_line
        return replace(line, uptime_ms=line.uptime_ms ^ (1 << UPTIME_GARBLED_BIT))

    def absurd_ri_results(self) -> list[RiMeasured]:
        """Fault injection: three pulse results to publish now, none a battery gives.

        A discharge Ri of 1e-9 ohm and a charge Ri of 10 ohm (both inside the contract's range,
        outside any plausible one), then OVERFLOW_RI_TEXT, a number too large for a float.
        """
        temperature_c = round(self.pack.temperature_c, 2)
        low, high = ABSURD_RI_OHM
        return [
            RiMeasured({"ri_discharge": low, "temperature_c": temperature_c}),
            RiMeasured({"ri_charge": high, "temperature_c": temperature_c}),
            RiMeasured({"ri_discharge": 10**400}, text=OVERFLOW_RI_TEXT),
        ]

    @property
    def uptime_ms(self) -> int:
        """Milliseconds since the ESP booted, on the simulated clock (the 11th BMS field)."""
        return round((self.clock_s - self.boot_clock_s) * 1000.0)

    def replay(self, first: int, last: int) -> list[protocol.BmsLine]:
        """The lines `first`..`last` (seq, inclusive) still held in RAM, unchanged, oldest first.

        Unchanged means as measured, esp_step included: the phase of the line's measurement,
        not the phase now. A protocol v1 firmware keeps no lines: nothing comes back.
        """
        return [line for line in self.history if first <= line.seq <= last]

    # ----------------------------------------------------------------- dynamics

    def _phase1_segments(self) -> list[tuple[float, float]]:
        """(current, duration) of phase 1: rest, discharge pulse, rest, charge pulse, ... , rest."""
        p = self.seq_params
        assert p.pulse_current_a is not None  # filled by resolve()
        segments: list[tuple[float, float]] = []
        for _ in range(p.pulse_pairs):
            segments += [(0.0, p.pulse_rest_s), (-p.pulse_current_a, p.pulse_s)]
            segments += [(0.0, p.pulse_rest_s), (p.pulse_current_a, p.pulse_s)]
        segments.append((0.0, p.pulse_rest_s))
        return segments

    def _control(self, dt_s: float) -> float:
        """Current the bench applies during the next step."""
        p = self.seq_params
        if self.state != RUNNING:
            return 0.0
        if self.phase == 1:
            segments = self._phase1_segments()
            current, _ = segments[min(self._segment, len(segments) - 1)]
            if current != 0.0 and self._pulse is None:
                # Pulse start: sample just before and right after closing the relay (same battery state).
                self._pulse = _Pulse(
                    "discharge" if current < 0 else "charge",
                    self.measured_voltage(0.0), self.measured_current(0.0),
                    self.measured_voltage(current), self.measured_current(current),
                )
            return current
        if self.phase in (2, 4):
            if self.phase == 4 and self._phase_clock_s < p.rest_s:
                return 0.0
            assert p.charge_current_a is not None  # filled by resolve()
            limit = self.pack.max_current_for_limits(PACK_MAX_V, CELL_MAX_V, dt_s)
            self._cv = limit < p.charge_current_a
            return min(p.charge_current_a, limit)
        if self.phase == 3:
            assert p.discharge_current_a is not None  # filled by resolve()
            return 0.0 if self._phase_clock_s < p.rest_s else -p.discharge_current_a
        return 0.0

    def advance(self, dt_s: float) -> list[Event]:
        """Run the firmware and the battery for `dt_s` simulated seconds."""
        events: list[Event] = []
        p = self.seq_params
        self.clock_s += dt_s
        if (
            self.state == RUNNING
            and not self.connected
            and self._lost_at_s is not None
            and self.clock_s - self._lost_at_s >= p.safe_timeout_s
        ):
            lost_s = self.clock_s - self._lost_at_s
            events += self._trip(
                f"Connexion MQTT perdue depuis {lost_s:.0f} s pendant la phase {self.phase} : "
                "courant coupé par sécurité, en attente d'une commande"
            )
        self.current_a = self._control(dt_s)
        measured_i = self.measured_current(self.current_a) if self.current_a else 0.0
        v0 = self.pack.voltage_v(self.current_a)
        self.pack.step(self.current_a, dt_s, self.extra_heat_w)
        volts = self.pack.cell_voltages()
        v1 = sum(volts)
        # Energy exchanged with the nurse batteries (trapezoid of the terminal power over the step).
        self.nurses.exchange((v0 + v1) / 2 * self.current_a * dt_s)
        # The BMS counts coulombs with its own shunt and its rated capacity.
        self.bms_soc_pct += 100.0 * self.current_a * dt_s / 3600.0 / self.pack_params.capacity_ah
        self.bms_soc_pct = min(max(self.bms_soc_pct, 0.0), 100.0)
        if self.state == RUNNING:
            self._phase_clock_s += dt_s
            if self.phase == 3 and measured_i < 0:
                # Like the firmware: integrate its own measured current and voltage.
                v_meas = self._noisy((v0 + v1) / 2, p.voltage_noise_v)
                self.capacity_ah += -measured_i * dt_s / 3600.0
                self.energy_wh += -measured_i * v_meas * dt_s / 3600.0
                if self.clock_s - self._last_nvs_save_s >= p.nvs_save_period_s:
                    self._save_nvs()
            events += self._after_step(dt_s, volts)
        return events

    def _after_step(self, dt_s: float, volts: list[float]) -> list[Event]:
        """Phase ends, pulse results and protections after one step (`volts`: cell voltages now)."""
        p = self.seq_params
        assert p.taper_current_a is not None  # filled by resolve()
        events: list[Event] = []
        if self.pack.temperature_c >= p.over_temperature_c:
            return self._trip(
                f"Surchauffe batterie : {self.pack.temperature_c:.1f} °C >= {p.over_temperature_c:.0f} °C, courant coupé"
            )
        if max(volts) > p.cell_abs_max_v or min(volts) < p.cell_abs_min_v:
            return self._trip(
                f"Tension cellule hors limites ({min(volts) * 1000:.0f}-{max(volts) * 1000:.0f} mV), courant coupé"
            )
        if self.phase == 1:
            segments = self._phase1_segments()
            self._segment_s += dt_s
            current, duration = segments[self._segment]
            if self._segment_s >= duration - 1e-9:
                if current != 0.0 and self._pulse is not None:
                    events.append(RiMeasured(self._pulse_results(self._pulse, current)))
                    self._pulse = None
                self._segment += 1
                self._segment_s = 0.0
                if self._segment >= len(segments):
                    events += self._enter(2)
        elif self.phase == 2:
            if self._cv and self.current_a < p.taper_current_a:
                self.bms_soc_pct = 100.0  # the BMS recalibrates at full
                events += self._enter(3)
                self.nvs.phase3_started = True
                self.capacity_ah = self.energy_wh = 0.0
                self._save_nvs()
        elif self.phase == 3:
            if self.current_a < 0 and (sum(volts) <= PACK_MIN_V or min(volts) <= CELL_MIN_V):
                self.bms_soc_pct = 0.0  # and at empty
                self._save_nvs()
                events += self._enter(4)
        elif self.phase == 4 and self.current_a > 0 and (
            self.bms_soc_pct >= p.storage_soc_pct or (self._cv and self.current_a < p.taper_current_a)
        ):
            events += self._enter(protocol.STEP_FINISHED)
        return events

    def _pulse_results(self, pulse: _Pulse, current_a: float) -> dict[str, float]:
        """Ri and diffusion of one pulse from the sampled voltages, as the firmware computes them."""
        v_end = self.measured_voltage(current_a)
        i_end = self.measured_current(current_a)
        delta_i = (pulse.i_after + i_end) / 2 - pulse.i_before
        results: dict[str, float] = {}
        ri = (pulse.v_after - pulse.v_before) / delta_i
        diffusion = (v_end - pulse.v_after) / delta_i
        if 0 < ri <= protocol.RI_MAX_OHM:
            results[f"ri_{pulse.kind}"] = round(ri, 6)
        if 0 < diffusion <= protocol.RI_MAX_OHM:
            results[f"diffusion_{pulse.kind}"] = round(diffusion, 6)
        results["temperature_c"] = round(self.pack.temperature_c, 2)
        return results


def run_until(firmware: BenchFirmware, predicate: Callable[[BenchFirmware], bool], dt_s: float,
              limit_s: float) -> list[Event]:
    """Advance `firmware` until `predicate(firmware)` is true or `limit_s` passed; return all events."""
    events: list[Event] = []
    elapsed = 0.0
    while elapsed < limit_s and not predicate(firmware):
        events += firmware.advance(dt_s)
        elapsed += dt_s
    return events


__all__ = [
    "ABSURD_RI_OHM",
    "CONTRACTS",
    "CONTRACT_LATEST",
    "LINE_GLITCHES",
    "OVERFLOW_RI_TEXT",
    "SEQ_BITFLIP",
    "SEQ_BITFLIP_BIT",
    "UPTIME_GARBLED",
    "UPTIME_GARBLED_BIT",
    "BenchFirmware",
    "Cell",
    "LfpPack",
    "NurseBank",
    "PackParams",
    "RiMeasured",
    "SecurityAlert",
    "SequenceParams",
    "StepChanged",
    "arrhenius_factor",
    "cell_ocv",
    "ocv_integral",
    "run_until",
    "soc_from_ocv",
]
