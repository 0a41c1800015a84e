"""The kiosk: scan workflow, what it knows of each bench, its worker thread, its window and widgets."""
