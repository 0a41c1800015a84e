#!/usr/bin/env python3
"""banc.py — one process per running test: records one bench's data and results (docs/enregistrement.md).

Usage: python banc.py bancN SERIAL

Exit codes:
  0  the test reached step 5 (finished), step 9 (stopped for the day), or SIGTERM/SIGINT
     (the test stays unfinished and is resumed by the next start)
  1  unexpected failure at start (test folder or files cannot be created)
  2  invalid bench, serial or setting (one line on stderr, nothing created on disk)
  3  another banc.py already runs for this bench (nothing written)
  4  the bench holds another battery's unfinished test, or this battery is under test on another bench
  5  this battery finished a test less than 48 business hours ago (nothing created)

What a message or the clock means for the test (rows, steps, counters, alerts, timers) is
decided in recorder.py (RecorderCore, no I/O); this file carries it out: the files
(AppendFile, config.json), MQTT and the process's life.

One thread: paho's read loop runs the message callbacks (every row is written and handed to
the OS there, before paho acknowledges the QoS 1 message); between reads a 0.2 s
tick runs the watchdog, fsync, config.json saves, write retries and shutdown.
"""

import sys

from banclfp.recording.bench_process import main
from utils import load_or_create_config

__all__ = ["load_or_create_config", "main"]

if __name__ == "__main__":
    sys.exit(main())
