#!/usr/bin/env python3
"""report.py TEST_FOLDER | --history SERIAL | --results FILE: charts, exports, certificate, label (banclfp/reporting/report.py, docs/rapport.md)."""

import sys

from banclfp.reporting.report import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
