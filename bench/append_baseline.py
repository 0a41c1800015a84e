"""Baseline for disk writes: the smallest appender of data.csv-like rows (no MQTT, no parsing).

Appends one 86-byte row per tick to each of --files files with os.write on O_APPEND, at
--rate rows/s per file, and fsyncs each file every --fsync-s seconds (0 = never: the
kernel's own writeback only), each file at its own moment as independent processes would. Prints {"rows", "write_bytes", "wchar"} (from /proc/self/io).

    python bench/append_baseline.py DIR --files 16 --rate 10 --duration 60 --fsync-s 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

ROW = b"2026-11-24T10:35:39.123+01:00,3,12345,51.234,-12.400,83.1,24.2,1.234,62.1,3251,3272,0\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Append rows at a steady rate; print what /proc/self/io counted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--fsync-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    fds = [os.open(args.dir / f"data{i}.csv", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for i in range(args.files)]

    def io() -> dict[str, int]:
        return {k: int(v) for k, _, v in (line.partition(":") for line in Path("/proc/self/io").read_text().splitlines())}

    before = io()
    rows = 0
    t0 = time.monotonic()
    # Staggered like 16 independent banc.py: each file's fsync falls at its own moment.
    next_sync = [t0 + (i + 1) * args.fsync_s / len(fds) for i in range(len(fds))]
    period = 1.0 / args.rate
    tick = 0
    while time.monotonic() - t0 < args.duration:
        for i, fd in enumerate(fds):
            os.write(fd, ROW)
            rows += 1
            if args.fsync_s and time.monotonic() >= next_sync[i]:
                os.fsync(fd)
                next_sync[i] += args.fsync_s
        tick += 1
        delay = t0 + tick * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    after = io()
    for fd in fds:
        os.close(fd)
    print(json.dumps({"rows": rows, "row_bytes": len(ROW), "write_bytes": after["write_bytes"] - before["write_bytes"],
                      "wchar": after["wchar"] - before["wchar"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
