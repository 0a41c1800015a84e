"""The LFP test lab's software, below its entry points (banc.py, ui.py, simulator.py, report.py): see docs/architecture.md."""
