"""The web monitor (monitor.py, docs/moniteur.md): a read-only view of the lab in a browser."""
