"""The kiosk's time left (time_left.py) against the time really left, phase by phase, on the firmware model.

    .venv/bin/python bench/bench_time_left.py [--every 10] [--seeds 1] [--packs NAME ...]

For each pack of testkit.time_left_runs.PACKS, battery_model.BenchFirmware runs a whole test
second by second (phases 1 to 5); the estimator is fed a line every --every seconds, with what
the kiosk has (the phase's start from the journal, the charge's facts from data.csv, its end
time averaged by time_left.Smoother), and judged at 10, 25, 50, 75 and 90 % of each phase:
estimate / actual time left in minutes, and the error (estimate - actual) / actual. One table per
phase, then the median and the worst error per pack. With --seeds N, each pack runs with N
seeds and a table gives the worst error over them (packs drawn again: other cells, other noise).
Last, before -> after: the worst error of the kiosk's previous estimate (kiosk_state at 1868669:
the lab's charge_profile.csv read at the pack's voltage, a 15-min phase 1 counted from when the
kiosk saw it start, nothing at rest) on the same runs, "—" where it gave no estimate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from banclfp.analysis import calibration
from banclfp.testkit import time_left_runs
from banclfp.wire import protocol

REPO_DIR = Path(__file__).resolve().parent.parent

PHASE_TITLES = {1: "Phase 1 — Ri (impulsions)", 2: "Phase 2 — charge CC-CV jusqu'au plein",
                3: "Phase 3 — repos puis décharge", 4: "Phase 4 — repos puis recharge de stockage"}
BOUND = 0.15


def pct(value: float) -> str:
    return f"{value * 100:+.1f} %".replace(".", ",")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}".replace(".", ",")


LAB_PROFILE = calibration.load_charge_profile(REPO_DIR / "charge_profile.csv")


def previous_estimate(step: int, line: protocol.BmsLine, elapsed_s: float) -> Optional[float]:
    """The kiosk's estimate before time_left.py (kiosk_state.estimate_time_left_s at 1868669), with the lab's profile."""
    amps = abs(line.current_a)
    if step == 1:
        return max(0.0, 15 * 60 - elapsed_s)
    if step == 2:
        return LAB_PROFILE(line.voltage_v)
    if amps < 0.5:
        return None
    if step == 3:
        if line.capacity_ah > 1.0 and line.soc_pct < 99.0:
            return line.capacity_ah * line.soc_pct / (100.0 - line.soc_pct) / amps * 3600.0
        return 100.0 * line.soc_pct / 100.0 / amps * 3600.0
    full_ah = line.capacity_ah if line.capacity_ah > 1.0 else 100.0
    return max(0.0, 50.0 - line.soc_pct) / 100.0 * full_ah / amps * 3600.0


def previous_worst(played: time_left_runs.Played) -> dict[int, Optional[float]]:
    """The previous estimate's worst error over 10-90 % of each phase (None: it gave no estimate at some point)."""
    worst: dict[int, Optional[float]] = {}
    for phase in time_left_runs.PHASES:
        start, end = played.span(phase)
        errors: list[Optional[float]] = []
        for fraction in time_left_runs.FRACTIONS:
            t_s, _, line = next(s for s in played.samples if s[0] >= start + fraction * (end - start))
            estimate = previous_estimate(phase, line, t_s - start)
            errors.append(None if estimate is None else (estimate - (end - t_s)) / (end - t_s))
        known = [e for e in errors if e is not None]
        worst[phase] = max(known, key=abs) if len(known) == len(errors) else None
    return worst


def run(name: str, seed_offset: int, every_s: float) -> tuple[time_left_runs.Played, dict[int, time_left_runs.PhaseErrors]]:
    pack = time_left_runs.PACKS[name]
    pack = replace(pack, seed=pack.seed + seed_offset)
    played = time_left_runs.play(pack, dt_s=1.0, every_s=every_s)
    return played, time_left_runs.errors(played, time_left_runs.model_for(pack))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=10.0, help="une ligne au estimateur toutes les N s (10)")
    parser.add_argument("--seeds", type=int, default=1, help="tirages par pack (1 : la graine du pack seule)")
    parser.add_argument("--packs", nargs="*", default=list(time_left_runs.PACKS), help="packs (noms de PACKS)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    runs = {name: run(name, 0, args.every) for name in args.packs}
    results = {name: errors for name, (_, errors) in runs.items()}
    fractions = time_left_runs.FRACTIONS
    heads = " | ".join(f"à {f:.0%}".replace("%", " %") for f in fractions)
    for phase in time_left_runs.PHASES:
        print(f"\n#### {PHASE_TITLES[phase]}\n")
        print("estimé / réel restant (min) et écart ; durée de la phase ; médiane et pire écart sur 10–90 %\n")
        print(f"| pack | durée (min) | {heads} | médiane | pire |")
        print("|---|---:|" + "---:|" * len(fractions) + "---:|---:|")
        for name, by_phase in results.items():
            result = by_phase[phase]
            cells = " | ".join(f"{minutes(est)} / {minutes(act)} ({pct((est - act) / act)})"
                               for _, est, act in result.points)
            print(f"| {name} | {minutes(result.duration_s)} | {cells} | {pct(result.median)} | {pct(result.worst)} |")
    worst_all = max(abs(r.worst) for by_phase in results.values() for r in by_phase.values())
    print(f"\nPire écart, tous packs et phases : {pct(worst_all)}")
    if args.seeds > 1:
        print(f"\n#### Pire écart sur {args.seeds} tirages par pack (10–90 % de chaque phase)\n")
        print("| pack | phase 1 | phase 2 | phase 3 | phase 4 | tirages hors ±15 % |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.packs:
            worst = dict.fromkeys(time_left_runs.PHASES, 0.0)
            outside = 0
            for offset in range(args.seeds):
                by_phase = results[name] if offset == 0 else run(name, offset, args.every)[1]
                outside += any(abs(r.worst) > BOUND for r in by_phase.values())
                for phase, result in by_phase.items():
                    worst[phase] = max(worst[phase], result.worst, key=abs)
            print(f"| {name} | " + " | ".join(pct(worst[p]) for p in time_left_runs.PHASES) + f" | {outside} |")
    print("\n#### Avant → après : pire écart sur 10–90 % de chaque phase\n")
    print("| pack | phase 1 | phase 2 | phase 3 | phase 4 |")
    print("|---|---:|---:|---:|---:|")
    for name, (played, by_phase) in runs.items():
        before = previous_worst(played)
        changes = []
        for phase in time_left_runs.PHASES:
            was = before[phase]
            changes.append(f"{'—' if was is None else pct(was)} → {pct(by_phase[phase].worst)}")
        print(f"| {name} | " + " | ".join(changes) + " |")
    medians = [abs(r.median) for by_phase in results.values() for r in by_phase.values()]
    print(f"\n({len(args.packs)} packs, une ligne toutes les {args.every:g} s, médiane des médianes "
          f"{pct(statistics.median(medians))}, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
