"""Benchmark of the verdict's outputs: the history index at 10,000 tests, and a 48-hour test's certificate.

    .venv/bin/python bench/bench_verdict.py [--tests 10000] [--rows 172800] [--keep DIR]

Writes a lab of --tests finished, graded test folders (journal + config.json, over 16
benches and --tests/3 batteries), then times, in the same run, end to end (a new
`python report.py` process each time, imports included, as an operator runs it):
  (a) `report.py --results FILE.csv` with no index yet: the index rebuilt from every folder (baseline),
  (b) `report.py --results FILE.csv` again: the index brought in line with the folders (stat only),
  (c) `report.py --history SERIAL` (one battery's tests, newest first),
  (d) (b) after one more test finished (one folder re-read),
  (b') and (c') the same work in this process (the index alone, without Python's start-up and imports),
and for one synthetic 48-hour test (--rows at 1 Hz, with data.csv):
  (e) `report.py FOLDER --png FILE` (baseline: the charts alone),
  (f) `report.py FOLDER --certificate FILE` (verdict, SHA-256, both pages, QR code).
Each figure is the best of --repeat runs; ratios are against (a) and (e).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from banclfp.history import index as history
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test

REPO_DIR = Path(__file__).resolve().parent.parent

GRADES = (("A", 95.0), ("B", 85.0), ("C", 75.0), ("REJET", 60.0))


def write_lab(home: Path, tests: int, seed: int = 1) -> list[str]:
    """`tests` finished, graded folders over 16 benches; returns the serials (three tests each on average)."""
    rng = random.Random(seed)
    serials = [f"RW-B{n:07d}" for n in range(max(1, tests // 3))]
    start = datetime(2024, 1, 8, 8, 0, tzinfo=record.LOCAL_TZ)
    for n in range(tests):
        serial = serials[n % len(serials)]
        grade, soh = GRADES[rng.randrange(len(GRADES))]
        moment = start + timedelta(hours=3 * n)  # never two tests of a battery the same day
        write_finished_record(home, f"banc{1 + n % 16}", serial, moment, 20 * 3600.0, soh, grade, soh)
    return serials


def run_report(home: Path, *args: str) -> float:
    """Seconds taken by `python report.py ARGS` (a fresh process, like the operator's)."""
    env = {**os.environ, "BANC_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO_DIR / "report.py"), *args], env=env, cwd=REPO_DIR,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"report.py {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def timed(action: Callable[[], object]) -> float:
    """Seconds taken by `action()` in this process."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def best(repeat: int, action: Callable[[], float]) -> float:
    """The least noisy of `repeat` timings (the machine is shared)."""
    return min(action() for _ in range(repeat))


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=172_800)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the lab in this folder and keep it")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="bench_verdict_"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        print(f"lab of {args.tests} finished tests in {home} ...", flush=True)
        started = time.perf_counter()
        serials = write_lab(home, args.tests)
        print(f"  written in {time.perf_counter() - started:.1f} s")
        results = home / "results.csv"
        index = home / history.INDEX_FILE

        def cold() -> float:
            index.unlink(missing_ok=True)
            return run_report(home, "--results", str(results))

        a = best(args.repeat, cold)
        b = best(args.repeat, lambda: run_report(home, "--results", str(results)))
        c = best(args.repeat, lambda: run_report(home, "--history", serials[len(serials) // 2]))
        rows = len(results.read_text(encoding="utf-8").splitlines()) - 1
        index_of_home = Store(home).history
        b_in = best(args.repeat, lambda: timed(index_of_home.lab_results_csv))
        c_in = best(args.repeat, lambda: timed(lambda: index_of_home.battery_history(serials[len(serials) // 2])))

        added = iter(range(1, 1000))

        def one_more() -> float:
            serial = f"RW-BNEW{next(added):04d}"
            write_finished_record(home, "banc3", serial, datetime.now(record.LOCAL_TZ), 3600.0, 91.0, "A", 91.0)
            return run_report(home, "--results", str(results))

        d = best(args.repeat, one_more)
        print(f"(a) --results, index rebuilt from {args.tests} folders : {a:7.3f} s   1.00")
        print(f"(b) --results, index up to date ({rows} rows)          : {b:7.3f} s   {b / a:.2f}")
        print(f"(c) --history SERIAL                                   : {c:7.3f} s   {c / a:.2f}")
        print(f"(b') the index's work of (b), in process               : {b_in:7.3f} s   {b_in / a:.2f}")
        print(f"(c') the index's work of (c), in process               : {c_in:7.3f} s   {c_in / a:.2f}")
        print(f"(d) --results after one more finished test             : {d:7.3f} s   {d / a:.2f}")

        print(f"48-hour test ({args.rows} rows) ...", flush=True)
        test_home = home / "long"
        synthetic = write_synthetic_test(test_home, rows=args.rows, stop_s=0.0)
        (test_home / "grading.json").write_text((REPO_DIR / "grading.json").read_text(encoding="utf-8"),
                                                encoding="utf-8")
        size_mb = (synthetic.folder / "data.csv").stat().st_size / 1e6
        e = best(args.repeat, lambda: run_report(test_home, str(synthetic.folder), "--png", str(home / "c.png")))
        f = best(args.repeat, lambda: run_report(test_home, str(synthetic.folder), "--certificate",
                                                 str(home / "certificate.pdf")))
        print(f"(e) report.py --png (data.csv {size_mb:.1f} MB)                : {e:7.3f} s   1.00")
        print(f"(f) report.py --certificate                            : {f:7.3f} s   {f / e:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
