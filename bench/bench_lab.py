"""Benchmark of the lab database (docs/labo-serveur.md) against a private PostgreSQL (TLS, verify-full).

    python bench/bench_lab.py [--tests 100000] [--sites 10] [--sync-tests 16] [--sync-rows 20000]
                              [--week-benches 16] [--week-hours 168] [--week-interval-s 1]

(a) `report.py --history SERIAL` and `report.py --results FILE` with `--tests` tests from `--sites`
    sites in the lab database (the contract: under 1 s), against the same commands on a Pi that
    stands alone with no test (the interpreter's start and imports: the baseline of this run);
(b) sync throughput: `lab_sync.py --once` sending `--sync-tests` finished tests of `--sync-rows`
    rows each to an empty lab (tests/s, rows/s read and rows/s sent), against reading the same
    folders without a database (payload.read_test + read_rows);
(c) catch-up: a Pi offline for `--week-hours` with `--week-benches` running benches (one BMS line
    every `--week-interval-s`), then `lab_sync.py --once`, against a pass with nothing pending.
Figures go to stdout, one line each, with their ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from banclfp.infra.environment import StaticFiles
from banclfp.lab import payload, runner, schema
from banclfp.recording import record
from banclfp.testkit.postgres import PostgresServer
from banclfp.testkit.support import REPO_DIR, project_env
from banclfp.testkit.synthetic import write_synthetic_test

DB = "banc_lab"
START = datetime(2026, 1, 5, 8, 0, tzinfo=record.LOCAL_TZ)


def best(repeat: int, action: Callable[[], float]) -> float:
    """The best of `repeat` timings (the least disturbed by the other processes of the machine)."""
    return min(action() for _ in range(repeat))


def run_timed(env: dict[str, str], script: str, *args: str) -> float:
    """Wall time of one command line of the project; raises if it fails."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO_DIR / script), *args], env=env, cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)}: exit {done.returncode}: {done.stderr[-500:]}")
    return elapsed


def fill_lab(server: PostgresServer, tests: int, sites: int) -> str:
    """`tests` tests spread over `sites` sites, straight into lab.tests (generate_series); one serial to look up."""
    server.sql(f"""
        INSERT INTO lab.tests (test_id, site, banc, folder, serial, serial_key, start_at, end_at, status, phase,
                               grade, soh_pct, model, grading_version, reason, capacity_ah, capacity_wh,
                               ri_discharge_25c_ohm, content_sha256)
        SELECT s || ':' || f, s, b, f, serial, upper(serial), t, t + interval '20 hours', 'finished', 5,
               'A', 90 + i % 10, 'LFP 16S 100 Ah', 'bench', NULL, 90 + i % 10, (90 + i % 10) * 51.2, 0.02, md5(i::text)
        FROM (SELECT i, 'site-' || (i % {sites}) AS s, 'banc' || (1 + i % 16) AS b,
                     'RW-B' || lpad((i % ({tests} / 3 + 1))::text, 8, '0') AS serial,
                     timestamptz '2026-01-01 08:00+01' + i * interval '7 minutes' AS t
              FROM generate_series(1, {tests}) AS i) g,
             LATERAL (SELECT 'banc' || (1 + i % 16) || '/' || to_char(t, 'DDMMYYYY') || '-' || serial
                             || '-' || i AS f) names
    """, DB)
    server.sql("ANALYZE lab.tests", DB)
    return "RW-B" + f"{(tests // 2) % (tests // 3 + 1):08d}"


def main() -> int:
    """Run the three measures; print one line per figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--sync-tests", type=int, default=16)
    parser.add_argument("--sync-rows", type=int, default=20_000)
    parser.add_argument("--week-benches", type=int, default=16)
    parser.add_argument("--week-hours", type=float, default=168.0)
    parser.add_argument("--week-interval-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    server = PostgresServer(tls=True, cert_hosts=("localhost",)).start()
    try:
        server.create_database(DB)
        with psycopg.connect(server.superuser_conninfo(DB), autocommit=True) as conn:
            schema.migrate(conn)
        server.create_login("banc_pi_bench", "bench", "banc_pi")
        server.sql("INSERT INTO lab.sites VALUES ('bench-pi', 'banc_pi_bench')", DB)
        passfile = server.write_passfile(work / "lab.pgpass", "banc_pi_bench", "bench")
        uri = server.uri("banc_pi_bench", DB, host="localhost")

        def pi_env(home: Path, lab: bool = True) -> dict[str, str]:
            extra = {"BANC_SITE": "bench-pi", "BANC_LAB_DB": uri, "PGPASSFILE": str(passfile)} if lab else {}
            return project_env(home, None, **extra)

        # ------------------------------------------------------------------ (a) --history / --results
        serial = fill_lab(server, args.tests, args.sites)
        empty = work / "alone"
        empty.mkdir()
        out = work / "results.csv"
        base_h = best(args.repeat, lambda: run_timed(pi_env(empty, lab=False), "report.py", "--history", serial))
        base_r = best(args.repeat, lambda: run_timed(pi_env(empty, lab=False), "report.py", "--results", str(out)))
        lab_h = best(args.repeat, lambda: run_timed(pi_env(empty), "report.py", "--history", serial))
        lab_r = best(args.repeat, lambda: run_timed(pi_env(empty), "report.py", "--results", str(out)))
        lines = out.read_text().count("\n") - 1
        print(f"(a) baseline: report.py --history, a Pi alone, no test : {base_h:7.3f} s")
        print(f"(a) --history SERIAL, {args.tests} tests of {args.sites} sites in the lab : {lab_h:7.3f} s  "
              f"x{lab_h / base_h:.2f}")
        print(f"(a) baseline: report.py --results, a Pi alone, no test : {base_r:7.3f} s")
        print(f"(a) --results FILE ({lines} rows)                       : {lab_r:7.3f} s  x{lab_r / base_r:.2f}")
        server.sql("TRUNCATE lab.tests, lab.test_rows", DB)

        # ------------------------------------------------------------------ (b) sync throughput
        home = work / "pi-sync"
        for i in range(args.sync_tests):
            write_synthetic_test(home, rows=args.sync_rows, banc=f"banc{1 + i % 16}", serial=f"RW-SYNC{i:04d}",
                                 start=START + timedelta(days=i))
        folders = runner.test_folders(home / "data")
        static = StaticFiles(home)
        began = time.monotonic()
        read_rows = 0
        for folder in folders:
            payload.read_test("bench-pi", folder, static.correct_to_25c)
            offset = 0
            while True:
                rows, nxt = payload.read_rows(folder / record.DATA_CSV_FILE, offset)
                read_rows += len(rows)
                if nxt == offset or not rows:
                    break
                offset = nxt
        base_read = time.monotonic() - began
        total_csv_rows = args.sync_tests * args.sync_rows
        sync_s = run_timed(pi_env(home), "lab_sync.py", "--once")
        sent = int(server.sql("SELECT count(*) FROM lab.test_rows", DB)[0][0])
        print(f"(b) baseline: reading {len(folders)} tests' folders, no database : {base_read:7.3f} s")
        print(f"(b) lab_sync.py --once, {len(folders)} tests, {total_csv_rows} data.csv rows -> {sent} chart rows : "
              f"{sync_s:7.3f} s  x{sync_s / base_read:.2f}  ({len(folders) / sync_s:.1f} tests/s, "
              f"{total_csv_rows / sync_s:,.0f} data.csv rows/s, {sent / sync_s:,.0f} rows sent/s)")
        server.sql("TRUNCATE lab.tests, lab.test_rows", DB)

        # ------------------------------------------------------------------ (c) a week offline
        week = work / "pi-week"
        rows_per_bench = int(args.week_hours * 3600 / args.week_interval_s)
        for n in range(1, args.week_benches + 1):
            write_synthetic_test(week, rows=rows_per_bench, interval_s=args.week_interval_s, stop_s=0.0,
                                 banc=f"banc{n}", serial=f"RW-WEEK{n:04d}", start=START, finished=False,
                                 seed=n)
        catch_up = run_timed(pi_env(week), "lab_sync.py", "--once")
        idle = best(args.repeat, lambda: run_timed(pi_env(week), "lab_sync.py", "--once"))
        sent = int(server.sql("SELECT count(*) FROM lab.test_rows", DB)[0][0])
        size_mb = sum(os.path.getsize(f / record.DATA_CSV_FILE) for f in runner.test_folders(week / "data")) / 1e6
        print(f"(c) baseline: lab_sync.py --once with nothing pending   : {idle:7.3f} s")
        print(f"(c) catch-up of {args.week_hours:g} h x {args.week_benches} benches ({rows_per_bench * args.week_benches} rows, "
              f"{size_mb:.0f} MB of data.csv -> {sent} chart rows) : {catch_up:7.3f} s  x{catch_up / idle:.1f}")
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
