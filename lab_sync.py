#!/usr/bin/env python3
"""This Pi's tests into the lab database (docs/labo-serveur.md).

    python lab_sync.py            the service: keeps the lab database up to date
    python lab_sync.py --once     send what is pending and exit (0: all sent, 3: unreachable)
    python lab_sync.py --migrate  create or upgrade the lab database's schema
"""

import sys

from banclfp.lab.cli import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
