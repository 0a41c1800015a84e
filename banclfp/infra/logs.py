"""Logging of every process: console + logs.log in BANC_HOME, whole lines from several processes."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from pathlib import Path
from typing import Optional

LOG_FILE = "logs.log"

# =========================================================================== logging

_logging_configured = False
_log_listener: Optional[logging.handlers.QueueListener] = None


class _FlushingWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """Appends whole lines with O_APPEND; reopens the file after logrotate moves it.

    Several processes append to logs.log. Each record is written by one write() on a
    file opened with O_APPEND, so lines from different processes never interleave.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except Exception:  # a full disk must not take the process down with it
            self.handleError(record)


def setup_logging(process_name: str, home: Path, level: int = logging.INFO, log_file: Optional[Path] = None,
                  background: bool = False) -> None:
    """Configure the root logger once: console + logs.log in `home` (BANC_HOME), process name and pid in each line.

    With `background`, records are handed to a thread that writes them (the kiosk: its Tk
    thread must never wait on the disk); `stop_logging()` flushes it at exit.
    """
    global _logging_configured, _log_listener
    if _logging_configured:
        return
    _logging_configured = True
    fmt = logging.Formatter(
        f"%(asctime)s %(levelname)-7s {process_name}[%(process)d] %(name)s: %(message)s"
    )
    root = logging.getLogger()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    path = log_file or (Path(home) / LOG_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _FlushingWatchedFileHandler(path, encoding="utf-8", delay=True)
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
    except OSError as exc:
        console.handle(logging.makeLogRecord({"msg": f"cannot open log file {path}: {exc} (console only)",
                                              "levelno": logging.ERROR, "levelname": "ERROR"}))
    if background:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        root.addHandler(logging.handlers.QueueHandler(records))
        _log_listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
        _log_listener.start()
    else:
        for handler in handlers:
            root.addHandler(handler)
    logging.raiseExceptions = False  # a logging failure (disk full) is reported once on stderr, never raised


def stop_logging() -> None:
    """Write what the background logging thread still holds (at exit)."""
    global _log_listener
    if _log_listener is not None:
        _log_listener.stop()
        _log_listener = None


def log(message: str, level: str = "info", logger: str = "banc") -> None:
    """The seed's log(): log `message` at `level` ("debug", "info", "warning", "error", "critical")."""
    logging.getLogger(logger).log(getattr(logging, level.upper(), logging.INFO), message)


