#!/usr/bin/env python3
"""ui.py [--windowed]: the operator kiosk (how it works: banclfp/kiosk/app.py, docs/kiosque.md)."""

import sys

from banclfp.kiosk.app import App, main

__all__ = ['App', 'main']

if __name__ == "__main__":
    sys.exit(main())
