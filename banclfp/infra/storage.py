"""Safe files: atomic JSON writes, locks on separate lock files, durable appends, quarantine.

Every JSON file of the project is written through `atomic_write_json` (other whole files, such as
the report's PNG and BDF exports, through `atomic_write`); every shared
read-modify-write holds `file_lock`; every append-only journal goes through `append_durably`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Optional

logger = logging.getLogger("banc.storage")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` + ".lock" (a separate file, so the data file can be replaced)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def fsync_dir(folder: Path) -> None:
    """fsync a directory so that a file created, renamed or removed in it survives a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], fsync: bool = True) -> None:
    """Write a file atomically through `write(fh)` (binary): temp file in the same folder, flush, fsync, os.replace.

    A reader sees the old file or the new one, never a part; on any failure the old file stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            if fsync:
                os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any, fsync: bool = True) -> None:
    """Write JSON atomically: temp file in the same folder, flush, fsync, os.replace."""
    encoded = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(path, lambda fh: fh.write(encoded), fsync=fsync)


def read_json(path: Path) -> Any:
    """Read a JSON file (raises OSError / ValueError)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def quarantine(path: Path, reason: str) -> Optional[Path]:
    """Move a damaged file aside (kept for inspection, never deleted); return its new path."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    try:
        os.replace(path, target)
    except OSError as exc:
        logger.error("cannot move damaged %s aside: %s", path, exc)
        return None
    logger.error("%s was damaged (%s); kept as %s", path, reason, target.name)
    return target


# Appends whose write or fsync failed and whose bytes could not be cut back: (st_dev, st_ino) ->
# (the size before them, the bytes). The next append to that file cuts them first, or writes nothing.
_unsure_tails: dict[tuple[int, int], tuple[int, bytes]] = {}
_unsure_lock = threading.Lock()


def append_durably(path: Path, data: bytes, *, fsync: Callable[[int], None] = os.fsync,
                   truncate: Callable[[int, int], None] = os.ftruncate) -> None:
    """Append the line(s) `data` to `path` and fsync before returning (raises OSError; a partial write is undone).

    A torn last line (a power cut mid-write) is cut first, so the new line never glues onto it.
    Returning means the fsync succeeded; OSError means the line is not durable. When its bytes
    could not be cut back after the failure they may stay in the file (never fsynced: an fsync
    that failed once cannot be trusted with them): the next append to that file in this process
    cuts them first, so a retry never leaves two copies, and raises without writing while it cannot.
    `fsync` and `truncate` stand for os.fsync and os.ftruncate (tests).
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        stat = os.fstat(fd)
        key, size = (stat.st_dev, stat.st_ino), stat.st_size
        with _unsure_lock:
            unsure = _unsure_tails.get(key)
        if unsure is not None:
            known, left = unsure
            tail = os.pread(fd, size - known, known) if size > known else b""
            if tail and left.startswith(tail):  # still our bytes, and nothing after them
                truncate(fd, known)  # raises: nothing is written after an unknown tail
                logger.warning("%s: %d bytes of an append never fsynced cut", path, len(tail))
                size = known
            elif tail:
                logger.error("%s: an append never fsynced is followed by other bytes: kept", path)
            with _unsure_lock:
                _unsure_tails.pop(key, None)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            content = os.pread(fd, size, 0)
            keep = content.rfind(b"\n") + 1
            truncate(fd, keep)
            logger.warning("%s: torn last line of %d bytes removed", path, size - keep)
            size = keep
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError("write returned 0")
                view = view[n:]
            fsync(fd)
        except OSError as exc:
            # A torn or unsynced record must not stay in the journal: cut back to where it was.
            try:
                truncate(fd, size)
            except OSError as cut:
                with _unsure_lock:
                    _unsure_tails[key] = (size, bytes(data))
                logger.error("%s: %s, and the append could not be cut (%s): cut before the next one",
                             path, exc, cut)
            raise
    finally:
        os.close(fd)
    if size == 0:
        fsync_dir(path.parent)
