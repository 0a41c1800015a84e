"""The firmware model's whole tests, second by second, and the time-left estimator fed along them.

`play` runs battery_model.BenchFirmware through phases 1 to 5 (as testkit.fault_run.play_clean_test
does) and keeps a line every `every_s` seconds with the phase it was measured in; `errors`
feeds time_left.estimate_s at given fractions of each phase, with the phase's start and the
charge's facts as the test folder would tell them (ChargeFactsReader fed every kept line), and
compares with the time the phase really had left.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Optional

from banclfp.analysis import time_left
from banclfp.simulation import battery_model
from banclfp.wire import protocol

FRACTIONS = (0.10, 0.25, 0.50, 0.75, 0.90)  # points of each phase where the estimate is judged
PHASES = (1, 2, 3, 4)

# The simulator's packs the estimator is judged on: a nominal 100 Ah, small ones, and packs whose
# charge ends at the first cell's knee (one weak cell, or cells resting at unequal charge).
PACKS: dict[str, battery_model.PackParams] = {
    "100 Ah": battery_model.PackParams(),
    "100 Ah graine 7": battery_model.PackParams(seed=7),
    "20 Ah": battery_model.PackParams(capacity_ah=20.0, seed=3),
    "5 Ah": battery_model.PackParams(capacity_ah=5.0, seed=4),
    "100 Ah 10 °C": battery_model.PackParams(ambient_c=10.0, seed=5),
    "déséquilibre 2 %": battery_model.PackParams(imbalance_pct=2.0, seed=4),
    "déséquilibre 5 %": battery_model.PackParams(imbalance_pct=5.0, seed=2),
    "cellule faible": battery_model.PackParams(weak_cell=True, seed=1),
}


def model_for(pack: battery_model.PackParams, sequence: Optional[battery_model.SequenceParams] = None) -> time_left.Model:
    """The estimator's model of a simulated pack: its sequence, and its CV taper as the pack model charges it.

    A balanced pack of the same cells (no spread, no weak cell) is charged CC-CV like the
    firmware does, from its arrival charge (so it warms as a real charge does): the CV part
    lasts from the first limited current to the taper current.
    """
    seq = replace(sequence or battery_model.SequenceParams()).resolve(pack.capacity_ah)
    assert seq.charge_current_a and seq.taper_current_a and seq.discharge_current_a
    balanced = battery_model.LfpPack(replace(pack, capacity_spread_pct=0.0, resistance_spread_pct=0.0,
                                             imbalance_pct=0.0, weak_cell=False))
    dt_s, t_s, cv_from = 1.0, 0.0, None
    while t_s < 24 * 3600.0:
        limit = balanced.max_current_for_limits(battery_model.PACK_MAX_V, battery_model.CELL_MAX_V, dt_s)
        current = min(seq.charge_current_a, limit)
        if current < seq.charge_current_a and cv_from is None:
            cv_from = t_s
        if cv_from is not None and current < seq.taper_current_a:
            break
        balanced.step(current, dt_s)
        t_s += dt_s
    cap = pack.capacity_ah
    return time_left.Model(
        capacity_ah=cap, cv_taper_s=t_s - (cv_from if cv_from is not None else t_s),
        charge_c=seq.charge_current_a / cap, discharge_c=seq.discharge_current_a / cap, taper_c=seq.taper_current_a / cap,
        pulse_pairs=seq.pulse_pairs, pulse_s=seq.pulse_s, pulse_rest_s=seq.pulse_rest_s, rest_s=seq.rest_s,
        storage_soc_pct=seq.storage_soc_pct)


@dataclass
class Played:
    """A whole test of the firmware model: its kept lines (second, phase, line) and when each phase started."""

    samples: list[tuple[float, int, protocol.BmsLine]]
    starts: dict[int, float]  # phase 1..5 -> the second it was entered (its step message)

    def span(self, phase: int) -> tuple[float, float]:
        return self.starts[phase], self.starts[phase + 1]


def play(pack: battery_model.PackParams, sequence: Optional[battery_model.SequenceParams] = None, dt_s: float = 1.0,
         every_s: float = 1.0, limit_s: float = 200_000.0) -> Played:
    """Run the firmware from its phase 1 to its phase 5, `dt_s` per physics step, a line kept every `every_s`."""
    firmware = battery_model.BenchFirmware(pack, replace(sequence or battery_model.SequenceParams()))
    starts: dict[int, float] = {}

    def note(events: Iterable[battery_model.Event], at_s: float) -> None:
        for event in events:
            if isinstance(event, battery_model.StepChanged) and event.step in protocol.PHASES:
                starts.setdefault(event.step, at_s)

    note(firmware.handle_command(1), 0.0)
    samples: list[tuple[float, int, protocol.BmsLine]] = []
    t_s, next_line_s = 0.0, 0.0
    while protocol.STEP_FINISHED not in starts:
        if t_s > limit_s:
            raise RuntimeError("the simulated test did not finish")
        t_s += dt_s
        note(firmware.advance(dt_s), t_s)
        if firmware.state == battery_model.RUNNING and t_s >= next_line_s - 1e-9:
            samples.append((t_s, firmware.phase, firmware.measure()))
            next_line_s = t_s + every_s
    return Played(samples, starts)


@dataclass
class PhaseErrors:
    """The estimate's error at each judged point of one phase: (estimate - actual) / actual."""

    phase: int
    duration_s: float
    points: list[tuple[float, float, float]] = field(default_factory=list)  # (fraction, estimate s, actual s)

    @property
    def errors(self) -> list[float]:
        return [(estimate - actual) / actual for _, estimate, actual in self.points]

    @property
    def median(self) -> float:
        return statistics.median(self.errors)

    @property
    def worst(self) -> float:
        return max(self.errors, key=abs)


def errors(played: Played, model: time_left.Model, fractions: Sequence[float] = FRACTIONS,
           phases: Sequence[int] = PHASES, estimator: ModuleType = time_left) -> dict[int, PhaseErrors]:
    """The estimate against the time really left, at each fraction of each phase.

    The estimator sees what the kiosk would: the latest line, the seconds since the phase's
    start (its step event in the journal), and the charge's facts from every line before.
    `estimator`: a module with time_left's ChargeFactsReader, Smoother and estimate_s (an older
    time_left, for a before -> after).
    """
    out = {phase: PhaseErrors(phase, played.span(phase)[1] - played.span(phase)[0]) for phase in phases}
    targets = sorted((played.span(p)[0] + f * out[p].duration_s, p, f) for p in phases for f in fractions)
    reader = estimator.ChargeFactsReader()
    smoother = estimator.Smoother()
    index = 0
    for t_s, phase, line in played.samples:
        reader.feed(phase, line)
        start = played.starts[phase]
        shown = smoother.update(phase, t_s, estimator.estimate_s(model, phase, line, t_s - start, reader.facts))
        while index < len(targets) and targets[index][0] <= t_s + 1e-9:
            _, target_phase, fraction = targets[index]  # judged at the first kept line at or after it
            index += 1
            if target_phase != phase:
                continue
            assert shown is not None, f"no estimate in phase {phase} at {t_s} s"
            out[phase].points.append((fraction, shown, played.span(phase)[1] - t_s))
    return out
