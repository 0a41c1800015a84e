#!/usr/bin/env python3
"""banc.py bancN SERIAL: one test's recording process (exit codes and how it works: banclfp/recording/bench_process.py, docs/enregistrement.md)."""

import sys

from banclfp.recording.bench_process import main
from utils import load_or_create_config

__all__ = ["load_or_create_config", "main"]

if __name__ == "__main__":
    sys.exit(main())
