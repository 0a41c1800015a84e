"""Which banc.py runs: the bench's lifetime lock file (run/bancN.lock, holding the pid) and a psutil check.

Every function takes the BANC_HOME it works in, so two installations on one machine never
see each other's tests.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional, Union

import protocol

RUN_DIR = "run"


def banc_lock_path(home: Path, banc: Union[int, str]) -> Path:
    """Lock file banc.py holds for its whole life (run/bancN.lock in BANC_HOME); it contains the pid."""
    return home / RUN_DIR / f"{protocol.banc_id(banc)}.lock"


def acquire_banc_lock(home: Path, banc: Union[int, str]) -> Optional[int]:
    """Take the bench's lifetime lock and write our pid in it; return the fd, or None if held."""
    path = banc_lock_path(home, banc)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _is_banc_cmdline(cmdline: list[str], banc: str) -> bool:
    for i, arg in enumerate(cmdline):
        if os.path.basename(arg) == "banc.py":
            rest = cmdline[i + 1 : i + 2]
            return bool(rest) and rest[0].lower() == banc
    return False


def is_banc_running(home: Path, banc: Union[int, str]) -> bool:
    """True when a live `banc.py bancN` process of this BANC_HOME runs (psutil)."""
    return banc_process_pid(home, banc) is not None


def banc_process_pid(home: Path, banc: Union[int, str]) -> Optional[int]:
    """Pid of the live `banc.py bancN` process of this BANC_HOME, or None.

    The pid comes from the bench's lock file (so two installations on one machine do not
    see each other's tests) and must be a live, non-zombie process whose command line is
    `... banc.py bancN ...`; a recycled pid or a stale file is not taken for a test.
    """
    import psutil  # local import: the business rules above do not need it

    banc = protocol.banc_id(banc)
    path = banc_lock_path(home, banc)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass  # held: a banc.py is (or was just) running; verify the pid below
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds the lock
        text = os.read(fd, 64).decode(errors="replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit():
        return None
    try:
        proc = psutil.Process(int(text))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not _is_banc_cmdline(proc.cmdline(), banc):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return proc.pid
