"""The kiosk's time left (time_left.py) against the time really left, phase by phase, on the firmware model.

    .venv/bin/python bench/bench_time_left.py [--every 10] [--seeds 1] [--first-seed 0] [--baseline 0d3a0e0] [--packs NAME ...]

For each pack of testkit.time_left_runs.PACKS, battery_model.BenchFirmware runs a whole test
second by second (phases 1 to 5); the estimator is fed a line every --every seconds, with what
the kiosk has (the phase's start from the journal, the charge's facts from data.csv, its end
time averaged by time_left.Smoother), and judged at 10, 25, 50, 75 and 90 % of each phase:
estimate / actual time left in minutes, and the error (estimate - actual) / actual. One table per
phase, then the median and the worst error per pack. With --seeds N, each pack runs with N
seeds and a table gives the worst error over them (packs drawn again: other cells, other noise),
with --first-seed the first draw (0: the pack's own seed; 8 and on: draws the tuning never saw), and
the same runs through time_left.py as it is in --baseline's commit (git show), before -> after.
Last, before -> after: the worst error of the kiosk's previous estimate (kiosk_state at 1868669:
the lab's charge_profile.csv read at the pack's voltage, a 15-min phase 1 counted from when the
kiosk saw it start, nothing at rest) on the same runs, "—" where it gave no estimate.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
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
BASELINE = "0d3a0e0"  # time_left.py before phase 2 weighed the leading cell's hypotheses


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


def baseline_module(revision: str) -> types.ModuleType:
    """time_left.py as it is in `revision` (git show), loaded as a module of its own."""
    source = subprocess.run(["git", "-C", str(REPO_DIR), "show", f"{revision}:banclfp/analysis/time_left.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"time_left_{revision}")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{revision}:banclfp/analysis/time_left.py", "exec"), module.__dict__)  # the project's own history
    return module


Errors = dict[int, time_left_runs.PhaseErrors]


def run(name: str, seed_offset: int, every_s: float,
        baseline: Optional[types.ModuleType] = None) -> tuple[time_left_runs.Played, Errors, Optional[Errors]]:
    """One whole test of pack `name` drawn with seed + `seed_offset`: the lines, the errors, the baseline's errors."""
    pack = time_left_runs.PACKS[name]
    pack = replace(pack, seed=pack.seed + seed_offset)
    played = time_left_runs.play(pack, dt_s=1.0, every_s=every_s)
    model = time_left_runs.model_for(pack)
    before = None if baseline is None else time_left_runs.errors(played, model, estimator=baseline)
    return played, time_left_runs.errors(played, model), before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=10.0, help="une ligne au estimateur toutes les N s (10)")
    parser.add_argument("--seeds", type=int, default=1, help="tirages par pack (1 : la graine du pack seule)")
    parser.add_argument("--first-seed", type=int, default=0, help="premier tirage (0 : la graine du pack)")
    parser.add_argument("--baseline", default=BASELINE, help=f"révision de time_left.py pour l'avant ({BASELINE} ; '' : aucune)")
    parser.add_argument("--packs", nargs="*", default=list(time_left_runs.PACKS), help="packs (noms de PACKS)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    baseline = baseline_module(args.baseline) if args.baseline else None
    runs = {name: run(name, args.first_seed, args.every, baseline) for name in args.packs}
    results = {name: errors for name, (_, errors, _) in runs.items()}
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
        last = args.first_seed + args.seeds - 1
        print(f"\n#### Pire écart sur {args.seeds} tirages par pack (graines +{args.first_seed} à +{last}, 10–90 % "
              "de chaque phase)" + (f" : {args.baseline} → ce code" if baseline else "") + "\n")
        print("| pack | phase 1 | phase 2 | phase 3 | phase 4 | tirages hors ±15 % |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.packs:
            worst = dict.fromkeys(time_left_runs.PHASES, 0.0)
            worst_before = dict.fromkeys(time_left_runs.PHASES, 0.0)
            outside = outside_before = 0
            for offset in range(args.first_seed, args.first_seed + args.seeds):
                _, by_phase, before = runs[name] if offset == args.first_seed else run(name, offset, args.every, baseline)
                outside += any(abs(r.worst) > BOUND for r in by_phase.values())
                for phase, result in by_phase.items():
                    worst[phase] = max(worst[phase], result.worst, key=abs)
                if before is not None:
                    outside_before += any(abs(r.worst) > BOUND for r in before.values())
                    for phase, result in before.items():
                        worst_before[phase] = max(worst_before[phase], result.worst, key=abs)
            if baseline is None:
                print(f"| {name} | " + " | ".join(pct(worst[p]) for p in time_left_runs.PHASES) + f" | {outside} |")
            else:
                print(f"| {name} | " + " | ".join(f"{pct(worst_before[p])} → {pct(worst[p])}" for p in time_left_runs.PHASES)
                      + f" | {outside_before} → {outside} |")
    print("\n#### Avant → après : pire écart sur 10–90 % de chaque phase\n")
    print("| pack | phase 1 | phase 2 | phase 3 | phase 4 |")
    print("|---|---:|---:|---:|---:|")
    for name, (played, by_phase, _) in runs.items():
        kiosk_before = previous_worst(played)
        changes = []
        for phase in time_left_runs.PHASES:
            was = kiosk_before[phase]
            changes.append(f"{'—' if was is None else pct(was)} → {pct(by_phase[phase].worst)}")
        print(f"| {name} | " + " | ".join(changes) + " |")
    medians = [abs(r.median) for by_phase in results.values() for r in by_phase.values()]
    print(f"\n({len(args.packs)} packs, une ligne toutes les {args.every:g} s, médiane des médianes "
          f"{pct(statistics.median(medians))}, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
