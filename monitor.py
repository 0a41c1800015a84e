#!/usr/bin/env python3
"""The web monitor: a read-only view of the lab in a browser (docs/moniteur.md).

    python monitor.py                  serve it (BANC_WEB_HOST, BANC_WEB_PORT, BANC_WEB_CERT, BANC_WEB_KEY)
    python monitor.py --add-user NOM   create or change an account (password on standard input)
"""

import sys

from banclfp.monitor.cli import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
