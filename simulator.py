#!/usr/bin/env python3
"""simulator.py: the simulated ESP32s of the benches (options: banclfp/simulation/simulator.py, docs/simulateur.md)."""

import sys

from banclfp.simulation.simulator import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
