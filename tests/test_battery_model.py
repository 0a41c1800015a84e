"""Unit tests of the pure bench model (battery_model.py): physics, firmware sequence, no broker."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from banclfp.recording.store import Store
from banclfp.simulation.battery_model import (
    CELL_MAX_V,
    FINISHED,
    HISTORY_LINES,
    IDLE,
    OVERFLOW_RI_TEXT,
    PACK_MIN_V,
    RUNNING,
    SEQ_BITFLIP,
    STOPPED,
    UPTIME_GARBLED,
    BenchFirmware,
    Event,
    LfpPack,
    NurseBank,
    PackParams,
    RiMeasured,
    SecurityAlert,
    SequenceParams,
    StepChanged,
    arrhenius_factor,
    cell_ocv,
    ocv_integral,
    run_until,
    soc_from_ocv,
)
from banclfp.wire import protocol

# --------------------------------------------------------------------------- helpers


def run_test(fw: BenchFirmware, dt_s: float = 0.5, limit_s: float = 100_000.0,
             until_phase: int | None = None) -> tuple[list[Event], list[tuple[float, int, protocol.BmsLine]]]:
    """Command phase 1 and run; return (events, samples) with one (clock, phase, BmsLine) per simulated second."""
    events = fw.handle_command(1)
    samples = []
    elapsed = 0.0
    next_sample = 1.0
    while fw.state == RUNNING and elapsed < limit_s:
        if until_phase is not None and fw.phase >= until_phase:
            break
        events += fw.advance(dt_s)
        elapsed += dt_s
        if elapsed >= next_sample - 1e-9:
            next_sample += 1.0
            if fw.engaged:
                samples.append((fw.clock_s, fw.phase, fw.measure()))
    return events, samples


def steps_of(events: Iterable[Event]) -> list[int]:
    return [e.step for e in events if isinstance(e, StepChanged)]


def ri_of(events: Iterable[Event]) -> list[dict]:
    return [e.values for e in events if isinstance(e, RiMeasured)]


def phase3_capacity(capacity_ah: float, c_rate: float, seed: int, dt_s: float, **pack: Any) -> float:
    """Measured capacity (firmware counter at the end of phase 3) of a test at `c_rate`."""
    current = c_rate * capacity_ah
    fw = BenchFirmware(
        PackParams(capacity_ah=capacity_ah, seed=seed, initial_soc_pct=80.0, **pack),
        SequenceParams(charge_current_a=current, discharge_current_a=current, pulse_pairs=1, rest_s=60.0,
                       taper_current_a=min(0.05, c_rate / 2) * capacity_ah),
    )
    events, _ = run_test(fw, dt_s=dt_s, until_phase=4)
    assert steps_of(events) == [1, 2, 3, 4]
    return fw.capacity_ah


# --------------------------------------------------------------------------- open-circuit voltage


def test_ocv_is_strictly_increasing_with_flat_plateau_and_steep_ends() -> None:
    socs = [i / 2000 for i in range(-40, 2041)]
    volts = [cell_ocv(s) for s in socs]
    assert all(b > a for a, b in zip(volts, volts[1:]))
    assert cell_ocv(0.0) == pytest.approx(2.5) and cell_ocv(1.0) == pytest.approx(CELL_MAX_V)
    plateau = [cell_ocv(s / 100) for s in range(20, 91)]
    assert min(plateau) >= 3.24 and max(plateau) <= 3.35  # the LFP plateau around 3.3 V
    slope = lambda a, b: (cell_ocv(b) - cell_ocv(a)) / (b - a)  # noqa: E731
    assert slope(0.0, 0.01) > 20 * slope(0.3, 0.8)
    assert slope(0.99, 1.0) > 20 * slope(0.3, 0.8)


@pytest.mark.parametrize("soc", [0.0, 0.003, 0.05, 0.33, 0.5, 0.62, 0.97, 0.999, 1.0])
def test_soc_from_ocv_inverts_the_curve(soc: float) -> None:
    assert soc_from_ocv(cell_ocv(soc)) == pytest.approx(soc, abs=1e-9)


@pytest.mark.parametrize("soc", [0.0, 0.004, 0.25, 0.655, 1.0, 1.01])
def test_ocv_integral_matches_numerical_integration(soc: float) -> None:
    n = 20000
    numeric = sum(cell_ocv((k + 0.5) * soc / n) for k in range(n)) * soc / n
    assert ocv_integral(soc) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("temperature_c", [-10.0, 0.0, 10.0, 25.0, 37.5, 45.0, 60.0])
def test_resistance_law_matches_the_project_temperature_coefficients(store: Store, banc_home: Path, temperature_c: float) -> None:
    # A resistance measured at T and corrected with temperature_coefficients.json gives back R(25 °C).
    measured = 0.02 * arrhenius_factor(temperature_c)
    assert store.static.correct_to_25c(measured, temperature_c) == pytest.approx(0.02, rel=0.01)


# --------------------------------------------------------------------------- physics


def test_pack_is_built_from_the_seeded_configuration() -> None:
    params = PackParams(capacity_ah=100.0, ri_ohm=0.03, seed=7)
    pack = LfpPack(params)
    capacities = [c.capacity_ah for c in pack.cells]
    assert len(capacities) == 16
    assert min(capacities) == pytest.approx(100.0)  # the rated capacity is the weakest cell's
    assert max(capacities) <= 103.0 and len(set(round(c, 6) for c in capacities)) > 10
    assert pack.ohmic_resistance_ohm == pytest.approx(0.03)
    assert pack.voltage_v() == pytest.approx(pack.ocv_v())
    assert 16 * 3.25 < pack.ocv_v() < 16 * 3.30  # 30 % state of charge on the plateau
    weak = LfpPack(PackParams(capacity_ah=100.0, ri_ohm=0.03, seed=7, weak_cell=True))
    assert weak.weak_index is not None
    assert weak.cells[weak.weak_index].capacity_ah < 0.83 * 100.0
    assert weak.ohmic_resistance_ohm > 0.03


def test_rc_integration_is_exact_whatever_the_step() -> None:
    # Constant current: the RC, charge and thermal equations are integrated exactly, so dt does not matter.
    coarse, fine = LfpPack(PackParams(seed=3)), LfpPack(PackParams(seed=3))
    for _ in range(600):
        coarse.step(-40.0, 1.0)
    for _ in range(12000):
        fine.step(-40.0, 0.05)
    assert coarse.voltage_v() == pytest.approx(fine.voltage_v(), abs=2e-4)
    assert coarse.temperature_c == pytest.approx(fine.temperature_c, abs=1e-3)
    assert [c.charge_ah for c in coarse.cells] == pytest.approx([c.charge_ah for c in fine.cells], abs=1e-9)


def test_charge_and_energy_are_conserved_over_a_cycle() -> None:
    pack = LfpPack(PackParams(capacity_ah=40.0, seed=5, initial_soc_pct=60.0, imbalance_pct=1.0))
    q0 = [c.charge_ah for c in pack.cells]
    chem0, cap0 = pack.chemical_energy_j, pack.capacitor_energy_j
    profile = [(20.0, 4000), (0.0, 300), (-20.0, 5000), (10.0, 2000), (0.0, 600), (35.0, 1500)]
    dt = 0.5
    charge_ah = 0.0
    terminal_j = 0.0
    balanced = False
    for current, seconds in profile:
        for _ in range(int(seconds / dt)):
            v_start = pack.voltage_v(current)
            pack.step(current, dt)
            terminal_j += (v_start + pack.voltage_v()) / 2 * current * dt
            charge_ah += current * dt / 3600.0
            balanced = balanced or pack.balancing
    assert balanced  # the profile pushes the top cells into the balancing zone
    # Charge: every cell received what went through the terminals, minus what its balancing resistor bled.
    for cell, start in zip(pack.cells, q0):
        assert cell.charge_ah - start + cell.bled_ah == pytest.approx(charge_ah, abs=1e-9)
    # Energy: terminal energy = stored chemical energy + energy in the RC pairs + heat (ohmic, RC, bleed).
    stored = pack.chemical_energy_j - chem0 + pack.capacitor_energy_j - cap0
    throughput_j = sum(abs(i) * s for i, s in profile) * 52.0
    assert terminal_j == pytest.approx(stored + pack.heat_j, abs=2e-4 * throughput_j)
    assert pack.heat_j > 0


def test_temperature_rises_with_current_stays_bounded_and_relaxes_to_ambient() -> None:
    params = PackParams(capacity_ah=100.0, ri_ohm=0.02, ambient_c=20.0, seed=2)
    pack = LfpPack(params)
    g = params.thermal_conductance_w_per_k
    bound = 20.0 + 100.0**2 * 0.02 * 1.5 * arrhenius_factor(20.0) / g  # I^2 (R0 + R1), cold resistance
    temps = []
    for _ in range(4000):
        pack.step(-100.0 if pack.mean_soc > 0.1 else 0.0, 1.0)
        temps.append(pack.temperature_c)
    assert max(temps) > 25.0  # I^2 R heats the pack
    assert all(20.0 - 1e-9 <= t <= bound for t in temps)
    for _ in range(12 * 3600 // 10):
        pack.step(0.0, 10.0)
    assert pack.temperature_c == pytest.approx(20.0, abs=0.1)


def test_nurse_bank_conserves_energy_and_switches_nurses() -> None:
    import random

    bank = NurseBank(capacity_wh=1000.0, rng=random.Random(1), efficiency=0.9)
    start = bank.total_energy_j
    bank.exchange(-4000.0 * 3600)  # the battery gives 4 kWh: more than the nurses can take
    assert max(bank.soc_pct()) <= 95
    assert bank.grid_j < 0  # the remainder went to the mains
    bank.exchange(500.0 * 3600)  # then takes 0.5 kWh back
    moved = bank.total_energy_j - start
    assert moved - bank.grid_j == pytest.approx((4000.0 * 0.9 - 500.0 / 0.9) * 3600, rel=1e-9)
    assert bank.loss_j == pytest.approx((4000.0 * 0.1 + 500.0 / 0.9 - 500.0) * 3600, rel=1e-9)


# --------------------------------------------------------------------------- firmware: measurements


@pytest.mark.slow  # whole charges and discharges of four packs: the full suite's, not --fast's
@pytest.mark.parametrize(
    "capacity_ah, c_rate, seed, tolerance",
    [
        (100.0, 0.05, 1, 0.01),  # low current: within 1 % of the rated capacity
        (280.0, 0.1, 3, 0.01),
        (100.0, 0.5, 4, 0.015),  # the bench's default 0.5 C loses a little more to the ohmic drop
    ],
)
def test_measured_capacity_matches_the_configured_one(capacity_ah: float, c_rate: float, seed: int,
                                                      tolerance: float) -> None:
    measured = phase3_capacity(capacity_ah, c_rate, seed, dt_s=2.0)
    assert measured <= capacity_ah * 1.001  # never more than the weakest cell holds
    assert measured == pytest.approx(capacity_ah, rel=tolerance)


def test_weak_cell_limits_the_measured_capacity() -> None:
    measured = phase3_capacity(100.0, 0.2, 6, dt_s=2.0, weak_cell=True)
    assert measured == pytest.approx(80.0, rel=0.02)


@pytest.mark.parametrize(
    "capacity_ah, ri_ohm, ambient_c, seed",
    [
        (100.0, 0.020, 25.0, 1),
        (50.0, 0.050, 25.0, 2),
        (200.0, 0.008, 25.0, 3),
        (30.0, 0.100, 25.0, 4),
        (100.0, 0.020, 10.0, 5),  # cold lab: higher raw Ri, corrected to 25 °C by the project's coefficients
    ],
)
def test_ri_from_pulses_matches_the_configured_resistance(store: Store,
    banc_home: Path, capacity_ah: float, ri_ohm: float, ambient_c: float, seed: int
) -> None:
    fw = BenchFirmware(PackParams(capacity_ah=capacity_ah, ri_ohm=ri_ohm, ambient_c=ambient_c, seed=seed))
    events, _ = run_test(fw, until_phase=2)
    results = ri_of(events)
    assert len(results) == 6
    kinds = {k for r in results for k in r if k != "temperature_c"}
    assert kinds == set(protocol.RI_KEYS)
    for values in results:
        # What goes on the wire is what the contract accepts.
        assert protocol.parse_ri_results(protocol.encode_ri_results(values))
        ri = values.get("ri_discharge", values.get("ri_charge"))
        assert ri is not None
        corrected = store.static.correct_to_25c(ri, values["temperature_c"])
        assert corrected == pytest.approx(ri_ohm, rel=0.05)
        if ambient_c == 25.0:
            assert ri == pytest.approx(ri_ohm, rel=0.05)
        else:
            assert ri > 1.5 * ri_ohm  # Arrhenius: a cold pack is more resistive
        # Diffusion: the RC pair's rise over the 30 s pulse, R1 (1 - exp(-30/tau)); R1 and tau follow Arrhenius.
        diffusion = values.get("diffusion_discharge", values.get("diffusion_charge"))
        factor = arrhenius_factor(values["temperature_c"])
        expected = 0.4 * ri_ohm * factor * (1 - math.exp(-30.0 / (30.0 * factor)))
        assert diffusion == pytest.approx(expected, rel=0.15)


def test_full_test_sequence_bms_lines_and_counters() -> None:
    fw = BenchFirmware(PackParams(capacity_ah=100.0, seed=11))
    events, samples = run_test(fw, dt_s=1.0)
    assert steps_of(events) == [1, 2, 3, 4, 5]
    assert [type(e) for e in events if not isinstance(e, (StepChanged, RiMeasured))] == []
    assert fw.state != RUNNING and not fw.engaged
    by_phase: dict[int, list[protocol.BmsLine]] = {}
    for _, phase, line in samples:
        # Every line is valid on the wire.
        assert protocol.parse_bms_line(protocol.encode_bms_line(line)) is not None
        by_phase.setdefault(phase, []).append(line)
    seqs = [line.seq for _, _, line in samples]
    assert seqs == list(range(len(seqs)))
    # Counters: 0 before phase 3, growing during it, held after it.
    assert all(line.capacity_ah == 0 and line.energy_wh == 0 for p in (1, 2) for line in by_phase[p])
    caps = [line.capacity_ah for line in by_phase[3]]
    assert caps == sorted(caps) and caps[-1] == pytest.approx(100.0, rel=0.015)
    assert {line.capacity_ah for line in by_phase[4]} == {fw.capacity_ah}
    energy = by_phase[3][-1].energy_wh
    assert 3.15 * 16 * fw.capacity_ah < energy < 3.3 * 16 * fw.capacity_ah  # mean discharge voltage ~51-52 V
    # Phase 2 charges towards 58.4 V and the balancing flag shows at the top; phase 3 ends at 40 V / 2.5 V per cell.
    assert max(line.voltage_v for line in by_phase[2]) <= 58.5
    assert any(line.balancing for line in by_phase[2])
    assert not any(line.balancing for line in by_phase[3][2:])  # the BMS stops bleeding once charging stops
    last3 = by_phase[3][-1]
    assert last3.voltage_v <= PACK_MIN_V + 1.0 or last3.cell_min_mv <= 2510
    # Plateau: cells within a few tens of mV; at the bottom knee the spread opens up.
    mid = by_phase[3][len(by_phase[3]) // 2]
    assert 0 < mid.cell_spread_mv < 40
    assert last3.cell_spread_mv > 100
    # Storage: phase 4 stops at 50 % state of charge.
    assert by_phase[4][-1].soc_pct == pytest.approx(50.0, abs=0.5)
    assert fw.pack.mean_soc == pytest.approx(0.5, abs=0.02)
    # Temperature stayed reasonable at 0.5 C.
    assert 25.0 <= max(line.temperature_c for line in by_phase[3]) < 45.0


def test_nurses_absorb_the_discharge_and_supply_the_charges() -> None:
    fw = BenchFirmware(PackParams(capacity_ah=60.0, seed=12))
    stored0 = fw.pack.chemical_energy_j + fw.pack.capacitor_energy_j
    nurses0 = fw.nurses.total_energy_j
    _events, samples = run_test(fw, dt_s=1.0, until_phase=4)
    nurses_after_discharge = fw.nurses.total_energy_j
    # Terminal energy into the battery, from the pack's own bookkeeping...
    battery_in_j = fw.pack.chemical_energy_j + fw.pack.capacitor_energy_j - stored0 + fw.pack.heat_j
    # ...equals what the nurse side gave, minus the converter losses (plus the mains, unused here).
    nurse_out_j = nurses0 - fw.nurses.total_energy_j + fw.nurses.grid_j
    assert fw.nurses.grid_j == 0
    assert battery_in_j == pytest.approx(nurse_out_j - fw.nurses.loss_j, rel=2e-3)
    # The discharge of phase 3 went into the nurses.
    phase3_in = [line for _, p, line in samples if p == 3]
    assert phase3_in and nurses_after_discharge > nurses0 - 0.5 * 60 * 51.2 * 3600


def test_same_seed_same_run_other_seed_other_run() -> None:
    def lines(seed: int) -> list[str]:
        fw = BenchFirmware(PackParams(seed=seed))
        events, samples = run_test(fw, limit_s=1500.0)
        return [protocol.encode_bms_line(line) for _, _, line in samples] + [
            protocol.encode_ri_results(values) for values in ri_of(events)
        ]

    assert lines(4) == lines(4)
    assert lines(4) != lines(5)


# --------------------------------------------------------------------------- firmware: protocol duties


def fresh(**sequence: Any) -> BenchFirmware:
    return BenchFirmware(PackParams(capacity_ah=20.0, seed=9), SequenceParams(**sequence))


def test_idle_until_command_then_end_stops_with_9() -> None:
    fw = fresh()
    assert not fw.engaged
    assert run_until(fw, lambda f: False, 1.0, 100.0) == []
    assert fw.pack.current_a == 0
    assert fw.handle_command(1) == [StepChanged(1)]
    run_until(fw, lambda f: f.pack.current_a != 0, 1.0, 500.0)
    assert fw.pack.current_a < 0 and fw.engaged  # first pulse: discharge
    assert fw.handle_command(protocol.COMMAND_END) == [StepChanged(protocol.STEP_STOP)]
    fw.advance(1.0)
    assert fw.pack.current_a == 0 and fw.state == STOPPED and not fw.engaged


def test_same_step_is_acknowledged_other_step_jumps() -> None:
    fw = fresh()
    fw.handle_command(2)
    run_until(fw, lambda f: False, 1.0, 300.0)
    soc = fw.pack.mean_soc
    assert fw.handle_command(2) == [StepChanged(2)]  # a restarted banc.py re-sends its step
    assert fw.phase == 2 and fw.pack.mean_soc == soc
    assert fw.handle_command(4) == [StepChanged(4)]
    assert fw.phase == 4


def test_resume_at_3_without_counters_charges_first_and_keeps_them_otherwise() -> None:
    fw = fresh(rest_s=10.0)
    assert fw.handle_command(3) == [StepChanged(2)]  # no capacity run started yet: from full only
    run_until(fw, lambda f: f.phase == 3, 1.0, 20_000.0)
    run_until(fw, lambda f: f.capacity_ah > 5.0, 1.0, 20_000.0)
    assert fw.handle_command("end") == [StepChanged(9)]
    held = fw.capacity_ah
    run_until(fw, lambda f: False, 1.0, 3600.0)  # the night
    assert fw.capacity_ah == held
    assert fw.handle_command(3) == [StepChanged(3)]
    run_until(fw, lambda f: f.phase == 4, 1.0, 20_000.0)
    assert fw.capacity_ah == pytest.approx(20.0, rel=0.015)  # the two halves add up


def test_reboot_restarts_seq_keeps_flash_and_reports_once_reconnected() -> None:
    fw = fresh(rest_s=10.0)
    fw.handle_command(2)
    run_until(fw, lambda f: f.phase == 3 and f.capacity_ah > 2.0, 1.0, 20_000.0)
    for _ in range(5):
        fw.measure()
    assert fw.seq == 5
    run_until(fw, lambda f: False, 1.0, 61.0)  # counters reach flash every minute
    saved = fw.capacity_ah
    fw.reboot()
    assert fw.seq == 0 and fw.pack.current_a == 0 and not fw.engaged
    assert fw.capacity_ah == pytest.approx(saved, abs=0.05)
    pending = fw.take_pending()
    assert isinstance(pending[0], SecurityAlert) and pending[1] == StepChanged(9)
    assert fw.take_pending() == []
    assert fw.handle_command(3) == [StepChanged(3)]  # the phase-3 context survived in flash
    assert fw.measure().seq == 0


def test_broker_loss_trips_to_safe_state_after_the_timeout_only() -> None:
    fw = fresh(safe_timeout_s=30.0)
    fw.handle_command(2)
    run_until(fw, lambda f: False, 1.0, 60.0)
    fw.set_connected(False)
    assert run_until(fw, lambda f: False, 1.0, 20.0) == []  # short outage: the test carries on
    fw.set_connected(True)
    assert fw.engaged and fw.pack.current_a > 0
    fw.set_connected(False)
    events = run_until(fw, lambda f: not f.engaged, 1.0, 60.0)
    assert fw.clock_s - 60 - 20 == pytest.approx(30.0, abs=1.0)
    assert isinstance(events[0], SecurityAlert) and "MQTT" in events[0].message
    assert events[1] == StepChanged(9)
    fw.advance(1.0)
    assert fw.pack.current_a == 0 and fw.state == STOPPED
    fw.set_connected(True)
    run_until(fw, lambda f: False, 1.0, 60.0)
    assert fw.pack.current_a == 0  # resumes only on a new command
    assert fw.handle_command(2) == [StepChanged(2)]


def test_over_temperature_trips_and_blocks_a_hot_restart() -> None:
    fw = fresh()
    fw.handle_command(2)
    assert fw.pack.params.heat_capacity_j_per_k is not None  # filled by PackParams.__post_init__
    fw.extra_heat_w = float(fw.pack.params.heat_capacity_j_per_k) * 0.1  # +0.1 K/s
    events = run_until(fw, lambda f: not f.engaged, 1.0, 1000.0)
    assert isinstance(events[-2], SecurityAlert) and "Surchauffe" in events[-2].message
    assert events[-1] == StepChanged(9)
    assert 55.0 <= fw.pack.temperature_c < 56.0
    fw.extra_heat_w = 0.0
    refused = fw.handle_command(2)
    assert isinstance(refused[0], SecurityAlert) and refused[-1] == StepChanged(9)
    assert not fw.engaged
    run_until(fw, lambda f: f.pack.temperature_c < 49.0, 10.0, 50_000.0)
    assert fw.handle_command(2) == [StepChanged(2)]


def test_a_new_test_after_a_finished_one_gets_a_new_battery() -> None:
    fw = fresh()
    assert fw.handle_command(5) == [StepChanged(5)]
    first = [c.capacity_ah for c in fw.pack.cells]
    assert fw.handle_command(1) == [StepChanged(1)]
    assert [c.capacity_ah for c in fw.pack.cells] != first
    assert fw.capacity_ah == 0 and fw.seq == 0


def test_the_firmware_keeps_its_lines_for_replay_and_times_them_on_its_own_clock() -> None:
    fw = BenchFirmware(PackParams(capacity_ah=50.0, seed=3))
    fw.handle_command(2)
    sent = []
    for _ in range(5):
        fw.advance(1.0)
        sent.append(protocol.encode_bms_line(fw.measure()))
    # uptime_ms runs in simulated time: one line per simulated second, whatever the speed.
    assert [protocol.parse_bms_line(text).uptime_ms for text in sent] == [1000, 2000, 3000, 4000, 5000]
    # A replay re-sends exactly the text that was sent; seqs no longer held are left out.
    assert [protocol.encode_bms_line(line) for line in fw.replay(1, 3)] == sent[1:4]
    assert [line.seq for line in fw.replay(3, 99)] == [3, 4]
    fw.reboot()  # RAM lost: nothing to replay, seq and uptime start again
    fw.handle_command(2)
    fw.advance(1.0)
    assert fw.replay(0, 99) == [] and (fw.measure().seq, fw.uptime_ms) == (0, 1000)


def test_the_ring_holds_the_last_3600_lines() -> None:
    fw = BenchFirmware(PackParams(capacity_ah=50.0, seed=3))
    for _ in range(HISTORY_LINES + 10):
        fw.measure()
    held = fw.replay(0, HISTORY_LINES + 10)
    assert (len(held), held[0].seq, held[-1].seq) == (HISTORY_LINES, 10, HISTORY_LINES + 9)


# --------------------------------------------------------------------------- field 12: the phase of each line


def test_each_line_carries_the_phase_in_force_when_it_was_measured() -> None:
    fw = fresh(rest_s=10.0, pulse_pairs=1, pulse_rest_s=10.0, pulse_s=5.0)
    assert (fw.state, fw.measure().esp_step) == (IDLE, protocol.ESP_STEP_IDLE)  # booted, no command yet
    fw.handle_command(1)
    seen: list[int] = []
    while fw.state == RUNNING:
        steps = steps_of(fw.advance(1.0))
        line = fw.measure()
        # The phase the firmware runs at the measurement: a change in this second is already in force.
        assert line.esp_step == (fw.phase if fw.state == RUNNING else protocol.STEP_FINISHED)
        if steps:
            assert line.esp_step == steps[-1]
        if not seen or seen[-1] != line.esp_step:
            seen.append(line.esp_step)
        assert protocol.encode_bms_line(line).count(",") == 11  # 12 fields on the wire
    assert seen == [1, 2, 3, 4, 5]
    assert (fw.state, fw.measure().esp_step) == (FINISHED, protocol.STEP_FINISHED)


def test_field_12_is_the_phase_run_not_the_command_nor_the_last_step_sent() -> None:
    fw = fresh(rest_s=10.0)
    assert fw.handle_command(protocol.COMMAND_END) == [StepChanged(9)]  # acknowledged...
    assert (fw.state, fw.measure().esp_step) == (IDLE, 0)  # ...but nothing was running: still idle
    assert fw.handle_command(3) == [StepChanged(2)]  # no capacity run yet: it charges first
    assert fw.measure().esp_step == 2
    fw.advance(1.0)
    assert fw.handle_command(protocol.COMMAND_END) == [StepChanged(9)]
    assert (fw.state, fw.measure().esp_step) == (STOPPED, protocol.STEP_STOP)  # end of day, test suspended
    fw.handle_command(2)
    run_until(fw, lambda f: False, 1.0, 10.0)
    fw.reboot()  # during a phase: stopped, waiting for a command
    assert (fw.state, fw.measure().esp_step) == (STOPPED, protocol.STEP_STOP)
    fw.handle_command(protocol.COMMAND_END)
    fw.reboot()  # after an end: nothing suspended in flash, the ESP boots idle
    assert (fw.state, fw.measure().esp_step) == (IDLE, protocol.ESP_STEP_IDLE)


def test_a_replay_keeps_the_phase_each_line_was_measured_in() -> None:
    fw = fresh(rest_s=10.0)
    fw.handle_command(2)
    sent = []
    for _ in range(3):
        fw.advance(1.0)
        sent.append(protocol.encode_bms_line(fw.measure()))
    fw.handle_command(4)
    fw.advance(1.0)
    later = fw.measure()
    assert later.esp_step == 4
    replayed = fw.replay(0, later.seq)
    assert [protocol.encode_bms_line(line) for line in replayed[:3]] == sent
    assert [line.esp_step for line in replayed] == [2, 2, 2, 4]


@pytest.mark.parametrize(("contract", "fields", "ring"), [(3, 12, True), (2, 11, True), (1, 10, False)])
def test_an_older_firmware_is_emulated_field_for_field(contract: int, fields: int, ring: bool) -> None:
    fw = BenchFirmware(PackParams(capacity_ah=20.0, seed=9), contract=contract)
    fw.handle_command(2)
    fw.advance(1.0)
    text = protocol.encode_bms_line(fw.measure())
    assert len(text.split(",")) == fields
    line = protocol.parse_bms_line(text)
    assert (line.uptime_ms is not None, line.esp_step is not None) == (contract >= 2, contract >= 3)
    # The replay ring came with protocol v2: a v1 firmware has nothing to re-send.
    assert [protocol.encode_bms_line(held) for held in fw.replay(0, 0)] == ([text] if ring else [])


def test_an_unknown_contract_is_refused() -> None:
    with pytest.raises(ValueError):
        BenchFirmware(PackParams(seed=1), contract=4)


# --------------------------------------------------------------------------- fault injection (pure)


def test_seq_bitflip_garbles_one_line_on_the_way_out_and_the_ring_keeps_it_right() -> None:
    fw = fresh()
    fw.handle_command(2)
    lines = [fw.measure() for _ in range(3)]
    fw.garble_next_line(SEQ_BITFLIP)
    flipped = fw.measure()
    after = [fw.measure() for _ in range(2)]
    assert flipped.seq == 3 ^ (1 << 20) == 3 + 2**20
    assert protocol.parse_bms_line(protocol.encode_bms_line(flipped)).seq == flipped.seq  # valid, but not the ESP's
    assert [line.seq for line in lines + after] == [0, 1, 2, 4, 5]  # the counter went on normally
    (held,) = fw.replay(3, 3)
    assert held.seq == 3 and held.uptime_ms == flipped.uptime_ms and held.esp_step == flipped.esp_step


def test_uptime_garbled_puts_one_line_decades_ahead() -> None:
    fw = fresh()
    fw.handle_command(2)
    fw.advance(1.0)
    fw.measure()
    fw.advance(1.0)
    fw.garble_next_line(UPTIME_GARBLED)
    garbled = fw.measure()
    fw.advance(1.0)
    normal = fw.measure()
    assert garbled.uptime_ms == 2000 + 2**40  # bit 40 flipped: about 35 years ahead
    assert garbled.uptime_ms - 2000 > 30 * 365 * 86_400_000
    assert (garbled.seq, normal.seq, normal.uptime_ms) == (1, 2, 3000)
    assert fw.replay(1, 1)[0].uptime_ms == 2000
    with pytest.raises(ValueError):
        fw.garble_next_line("meteor")
    with pytest.raises(ValueError):  # a v1 firmware sends no uptime_ms to garble
        BenchFirmware(PackParams(seed=1), contract=1).garble_next_line(UPTIME_GARBLED)


def test_absurd_ri_results_are_what_the_fault_promises() -> None:
    fw = fresh()
    low, high, overflow = (event.payload() for event in fw.absurd_ri_results())
    # Inside the contract's own range (the plausibility check is banc.py's), one each way.
    assert protocol.parse_ri_results(low)["ri_discharge"] == 1e-9
    assert protocol.parse_ri_results(high)["ri_charge"] == 10.0
    assert overflow == OVERFLOW_RI_TEXT == '{"ri_discharge": 1' + "0" * 400 + "}"
    number = json.loads(overflow)["ri_discharge"]
    assert number == 10**400
    with pytest.raises(OverflowError):
        float(number)
    assert fw.state == IDLE and fw.seq == 0  # nothing else moved


@pytest.mark.parametrize("contract, answered", [(3, 3), (2, 2)])
def test_a_v3_firmware_never_goes_back_to_an_older_phase(contract: int, answered: int) -> None:
    # A Pi that missed the step message of phase 3 announces 2: a v3 ESP says 3 again and resumes
    # it (counters kept); older firmware restarts phase 2, as its guide said.
    fw = BenchFirmware(PackParams(capacity_ah=20.0), contract=contract)
    fw.handle_command(1)
    run_until(fw, lambda f: f.phase == 3 and f.capacity_ah > 1.0, 1.0, 20_000.0)
    fw.handle_command(protocol.COMMAND_END)
    assert fw.handle_command(2) == [StepChanged(answered)]
    assert fw.phase == answered and (fw.capacity_ah > 1.0) == (contract == 3)


def test_a_finished_v3_firmware_stays_finished_when_told_an_older_phase() -> None:
    fw = BenchFirmware(PackParams(capacity_ah=20.0), SequenceParams(rest_s=60.0, pulse_pairs=1))
    fw.handle_command(1)
    run_until(fw, lambda f: f.state == "finished", 1.0, 40_000.0)
    assert fw.handle_command(4) == [StepChanged(protocol.STEP_FINISHED)] and fw.state == "finished"
    assert fw.handle_command(1) == [StepChanged(1)]  # a new battery: a new test
