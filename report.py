#!/usr/bin/env python3
"""Charts, summary and Battery Data Format export of one test (docs/rapport.md, docs/fichiers.md).

    python report.py TEST_FOLDER [--png FILE] [--bdf FILE] [--certificate FILE]
    python report.py --history SERIAL
    python report.py --results FILE.csv

Without an option it prints a plain-text summary. --certificate writes the certificate of a
finished test (concluding it first when banc.py could not: its verdict is then recorded);
--history lists every test of one battery, --results writes one CSV row per test of the lab. This file is the command line; the work
is done by one module per concept, and every name they export is re-exported here:
  analysis.py      data.csv into numpy arrays, coulomb counting, phases, stops, the summary (pure numpy)
  summary_text.py  the summary as text (this printout, the panel beside the charts)
  chart_data.py    what the charts draw: decimated series on a time axis with stops shortened
  charts.py        the matplotlib figure and the PNG (matplotlib imported lazily)
  bdf.py           the Battery Data Format export and its metadata sidecar
  chart_window.py  the kiosk's window (`show_charts`, CustomTkinter; data drawn by a child process)
  grading.py       grading.json and the grade (pure); verdict.py records it; certificate.py the PDF
  history.py       the SQLite index of the test folders behind --history and --results
"""

import sys

from banclfp.reporting.report import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
