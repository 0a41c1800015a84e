"""Which banc.py runs (the bench's lifetime lock file run/bancN.lock, holding the pid, and a psutil check), and the kiosk's supervisor of the banc.py it starts.

Every function takes the BANC_HOME it works in, so two installations on one machine never
see each other's tests.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from banclfp.wire import protocol

log = logging.getLogger("banc.processes")

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


@dataclass(frozen=True)
class ChildExit:
    """A banc.py started by the kiosk that has ended."""

    banc: str
    pid: int
    code: int
    early: bool  # ended within the early-exit delay after its start: a failure worth showing


class BancSupervisor:
    """Owns the banc.py processes the kiosk starts: spawning, reaping, and "is a test running on this bench".

    Not thread-safe on purpose: one thread (the kiosk's worker) owns it. Its checks take a
    lock file and scan the process table, so they must never run on the Tk thread.
    """

    def __init__(self, home: Path, banc_script: Path, *, python: str = sys.executable, cwd: Optional[Path] = None,
                 environment: Optional[Callable[[], dict[str, str]]] = None,
                 early_exit_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self.banc_script = banc_script
        self.python = python
        self.cwd = cwd or banc_script.parent
        self.environment = environment
        self.early_exit_s = early_exit_s
        self.clock = clock
        self.children: dict[str, tuple[subprocess.Popen, float]] = {}

    def spawn(self, banc: str, serial: str) -> subprocess.Popen:
        """Start `python banc.py bancN SERIAL` in its own session (it outlives a restart of the kiosk)."""
        args = [self.python, str(self.banc_script), protocol.banc_id(banc), serial]
        log.info("starting %s", args)
        proc = subprocess.Popen(
            args, cwd=str(self.cwd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            env=None if self.environment is None else self.environment(),  # None: inherit ours
        )
        self.children[protocol.banc_id(banc)] = (proc, self.clock())
        return proc

    def child(self, banc: str) -> Optional[subprocess.Popen]:
        """The banc.py this supervisor started for the bench and has not reaped yet."""
        entry = self.children.get(protocol.banc_id(banc))
        return entry[0] if entry else None

    def is_running(self, banc: str) -> bool:
        """A test runs on the bench: our own child (before it has taken its lock) or any banc.py holding it."""
        child = self.child(banc)
        return (child is not None and child.poll() is None) or is_banc_running(self.home, banc)

    def reap(self) -> list[ChildExit]:
        """Collect the children that have exited (no zombies)."""
        ended = []
        for banc, (proc, started) in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[banc]
            log.info("banc.py %s (pid %d) exited with code %d", banc, proc.pid, code)
            ended.append(ChildExit(banc, proc.pid, code, code != 0 and self.clock() - started < self.early_exit_s))
        return ended
