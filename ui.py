#!/usr/bin/env python3
"""The operator kiosk (docs/kiosque.md): one panel per bench, the scan workflow, the `end` and `stop` scans.

Threads: the Tk thread only touches widgets and never waits. paho's network thread parses
the topic and puts a typed message (queue_messages) on a queue; the kiosk's worker thread
(kiosk_worker.py) does every file read and write, lock, fsync and process check: scans
submitted to it come back on the same queue as decisions performed, with the benches'
file and process states. The Tk thread drains that queue with after(), a bounded batch
per tick, keeping only the latest BMS line per bench. Tests are started as `banc.py`
processes in their own session, so they outlive a restart of the kiosk.

    python ui.py              # full screen (the kiosk)
    python ui.py --windowed   # in a window, for a desk
"""

import sys

from banclfp.kiosk.app import App, main

__all__ = ['App', 'main']

if __name__ == "__main__":
    sys.exit(main())
