"""report.py's command line: charts, exports, history, results and the verdict of a test folder."""
