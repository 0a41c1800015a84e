"""Bytes banc.py reads from a test folder's files when it resumes a test (strace, no broker needed).

A BANC_HOME is made with one unfinished test of banc1 whose data.csv holds --rows rows (phase 2,
one line a second); banc.py's main() then runs up to the network loop (BancProcess.run is
replaced by a return) under `strace -f -y -e trace=read,pread64`, and the bytes each read
returned are summed per file. Any checkout can be measured (--root), so the same command
gives the "before" and the "after" figures of a rework.

    .venv/bin/python bench/resume_reads.py [--rows 100000] [--root PATH]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

from banclfp.recording import record
from banclfp.testkit.support import project_env

REPO_DIR = Path(__file__).resolve().parent.parent
SERIAL = "RW-RESUME01"
# read(3</path/to/data.csv>, "..."..., 1048576) = 1048576
_READ = re.compile(r'^(?:\d+\s+)?(?:read|pread64)\(\d+<([^>]+)>, .*\) = (\d+)$')

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from banclfp.recording import bench_process
bench_process.BancProcess.run = lambda self: 0  # start-up only: no broker
sys.exit(bench_process.main(["banc1", sys.argv[2]]))
"""


def make_home(home: Path, rows: int) -> Path:
    """A BANC_HOME with one unfinished test of banc1 (phase 2) whose data.csv holds `rows` rows."""
    start = record.now_local() - timedelta(seconds=rows + 60)
    folder = home / "data" / "banc1" / record.folder_name(SERIAL, start.date())
    folder.mkdir(parents=True)
    journal = record.encode_event(record.StartEvent(record.event_time(start), SERIAL, "banc1", record.iso(start),
                                                    software_version=record.SOFTWARE_VERSION))
    journal += record.encode_event(record.StepEvent(record.event_time(start), 2))
    (folder / record.EVENTS_FILE).write_bytes(journal)
    with open(folder / record.DATA_CSV_FILE, "wb") as fh:
        fh.write((",".join(record.DATA_CSV_HEADER) + "\n").encode("ascii"))
        for i in range(rows):
            at = record.iso(start + timedelta(seconds=i), millis=True)
            fields = [str(i), "53.10", "20.0", "60.0", "25.0", "0.0", "0.0", "3300", "3320", "0"]
            fh.write(record.format_data_row(at, 2, fields, uptime_ms=1000 * i, measured_at=at))
    return folder


def measure(root: Path, rows: int) -> tuple[Counter[str], int]:
    """Bytes read per file name (data.csv, events.jsonl...) by `root`'s banc.py resuming a test of `rows` rows,
    and data.csv's size."""
    with tempfile.TemporaryDirectory(prefix="resume-reads-") as tmp:
        home = Path(tmp) / "home"
        folder = make_home(home, rows)
        size = (folder / record.DATA_CSV_FILE).stat().st_size
        trace = Path(tmp) / "trace"
        command = ["strace", "-f", "-y", "-qq", "-e", "trace=read,pread64", "-o", str(trace),
                   sys.executable, "-c", CHILD, str(root), SERIAL]
        done = subprocess.run(command, env=project_env(home), cwd=root, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"banc.py start failed ({done.returncode}): {done.stderr[-2000:]}")
        totals: Counter[str] = Counter()
        for line in trace.read_text(errors="replace").splitlines():
            match = _READ.match(line)
            if match and match.group(1).startswith(str(folder)):
                totals[Path(match.group(1)).name] += int(match.group(2))
        return totals, size


def main() -> int:
    """Print the bytes read from each file of the test folder at a resume."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in data.csv (default 100000)")
    parser.add_argument("--root", type=Path, default=REPO_DIR, help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    totals, size = measure(args.root.resolve(), args.rows)
    print(f"resume of a {args.rows}-row test by {args.root} (data.csv: {size} bytes):")
    for name, count in sorted(totals.items()):
        print(f"  {name}: {count} bytes read ({count / size:.2f} x data.csv's size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
