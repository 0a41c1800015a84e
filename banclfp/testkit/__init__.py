"""Real parts shared by the tests (tests/) and the benchmarks (bench/): a private broker, an Xvfb display, banc.py runners.

Neither tests/ nor bench/ is imported by the other's helpers: both import this package.
"""
