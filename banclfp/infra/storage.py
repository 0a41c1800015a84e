"""Safe files: atomic JSON writes, locks on separate lock files, durable appends, quarantine.

Every JSON file of the project is written through `atomic_write_json` (other whole files, such as
the report's PNG and BDF exports, through `atomic_write`); every shared
read-modify-write holds `file_lock`; every append-only file (data.csv, rejected.csv, the journal) is
written through `AppendFile` (`append_durably` for one line at a time).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
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


# Rows kept in memory while the disk refuses them (about two days of 1 Hz rows); beyond
# that new rows are dropped and counted rather than letting the Pi run out of memory.
MAX_PENDING_BYTES = 16 * 1024 * 1024
# How far back a torn last line is looked for at a time: a line is a few hundred bytes (an
# ext4 zero-filled tail a page), so one read nearly always finds the newline before it.
_TORN_SEARCH_BYTES = 64 * 1024

# Durable appends whose write or fsync failed and whose bytes could not be cut back:
# (st_dev, st_ino) -> (the size before them, the bytes). The next AppendFile opened on that file
# in this process (append_durably opens one per line) cuts them first, or writes nothing.
_unsure_tails: dict[tuple[int, int], tuple[int, bytes]] = {}
_unsure_lock = threading.Lock()


class AppendFile:
    """Append-only file written with os.write on an O_APPEND descriptor: whole lines, opened once.

    open() cuts a torn last line (a power cut mid-write; kept in `torn` for the caller to
    report) so that the next line never glues onto it, and writes the header of a new file.
    append() hands the bytes to the OS before returning (no user-space buffer to lose in a
    kill). The fsync policy: a `durable` file is fsynced after every line, before append()
    returns; any other is fsynced when its owner calls sync() (banc.py: every
    BANC_FSYNC_INTERVAL_S, when the recorder's clock says so). When the OS refuses a line
    (disk full, read-only, EFBIG...), append() returns False with the failure in `error`: a
    partial write is undone and the whole line is kept in memory, in order, behind anything
    already waiting; flush_pending() retries (write_now() raises instead, for a caller with
    nothing to keep it in). The descriptor is opened read-write so that a file deleted under
    us can be put back from it (removed, restore).

    A durable line counts as written only once its fsync succeeded. When the fsync (or
    the write) fails and the bytes cannot be cut back either, they may still be in the
    file, but an fsync that failed once cannot be trusted to push them later: the line
    stays in memory, the file's tail is `unsure`, and nothing more is written until the
    file is back at its last fsynced size (`size`): the retry cuts first, then writes the
    line again, so it is on disk once and only once.
    """

    def __init__(self, path: Path, header: Sequence[str] = (), writer: Callable[[int, bytes], int] = os.write,
                 max_pending_bytes: int = MAX_PENDING_BYTES, durable: bool = False,
                 fsync: Callable[[int], None] = os.fsync,
                 truncate: Callable[[int, int], None] = os.ftruncate) -> None:
        self.path = Path(path)
        self.header_line = (",".join(header) + "\n").encode("ascii") if header else b""
        self.fd: Optional[int] = None
        self._write = writer
        self._fsync = fsync
        self._truncate = truncate
        self._pending: list[bytes] = []
        self.pending_bytes = 0
        self.max_pending_bytes = max_pending_bytes
        self.durable = durable
        self.dropped_rows = 0
        self.dirty = False
        self.size = 0  # bytes known written (fsynced when durable): where a failed write is cut back to
        # Durable only: bytes past `size` may be in the file (neither fsynced nor cut); none is written until cut.
        self.unsure = False
        self.error: Optional[OSError] = None
        self.torn = b""  # the torn last line open() cut

    def open(self) -> None:
        """Open for appending: cut a torn last line, write the header when the file is new or empty (raises OSError)."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            stat = os.fstat(fd)
            self.size = stat.st_size
            self._cut_left_over(fd, (stat.st_dev, stat.st_ino))
            self.torn = self._cut_torn_line(fd)
            if self.size == 0 and self.header_line:
                self._write_all(fd, self.header_line)
                self._fsync(fd)
                self.size = len(self.header_line)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _cut_left_over(self, fd: int, key: tuple[int, int]) -> None:
        """Cut what an earlier durable append in this process left unsure at the end of this file (raises OSError)."""
        with _unsure_lock:
            unsure = _unsure_tails.get(key)
        if unsure is None:
            return
        known, left = unsure
        tail = os.pread(fd, self.size - known, known) if self.size > known else b""
        if tail and left.startswith(tail):  # still our bytes, and nothing after them
            self._truncate(fd, known)  # raises: nothing is written after an unknown tail
            logger.warning("%s: %d bytes of an append never fsynced cut", self.path, len(tail))
            self.size = known
        elif tail:
            logger.error("%s: an append never fsynced is followed by other bytes: kept", self.path)
        with _unsure_lock:
            _unsure_tails.pop(key, None)

    def _cut_torn_line(self, fd: int) -> bytes:
        """Cut the bytes after the last newline (a line torn by a power cut) and return them; only the tail is read."""
        if self.size == 0 or os.pread(fd, 1, self.size - 1) == b"\n":
            return b""
        keep, end = 0, self.size
        while end > 0:
            start = max(0, end - _TORN_SEARCH_BYTES)
            newline = os.pread(fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        torn = os.pread(fd, self.size - keep, keep)
        self._truncate(fd, keep)
        logger.warning("%s: torn last line of %d bytes removed", self.path, self.size - keep)
        self.size = keep
        return torn

    def _write_all(self, fd: int, data: bytes) -> int:
        written = 0
        try:
            while written < len(data):
                # A slice copy: only a short write (a filling disk) comes here more than once.
                n = self._write(fd, data[written:] if written else data)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                written += n
        except OSError as exc:
            exc.written = written  # type: ignore[attr-defined]
            raise
        return written

    @property
    def failing(self) -> bool:
        """True while some bytes wait in memory."""
        return bool(self._pending)

    @property
    def pending_rows(self) -> int:
        """Complete lines waiting in memory."""
        return sum(chunk.count(b"\n") for chunk in self._pending)

    def _settle(self) -> bool:
        """Bring an `unsure` file back to its last fsynced size; False (error set) while it cannot be."""
        assert self.fd is not None
        try:
            actual = os.fstat(self.fd).st_size
            if actual > self.size:
                self._truncate(self.fd, self.size)
        except OSError as exc:
            self.error = exc
            return False
        if actual < self.size:  # cut by someone else: nothing of ours is past its end
            logger.error("%s is %d bytes shorter than what was fsynced", self.path.name, self.size - actual)
            self.size = actual
        elif actual > self.size:
            logger.warning("%s: %d bytes never fsynced cut; their records are written again", self.path.name,
                           actual - self.size)
        self.unsure = False
        self._forget_unsure()
        return True

    def _forget_unsure(self) -> None:
        """Nothing of ours is left unsure in this file: the next opening has nothing to cut."""
        with contextlib.suppress(OSError):
            assert self.fd is not None
            stat = os.fstat(self.fd)
            with _unsure_lock:
                _unsure_tails.pop((stat.st_dev, stat.st_ino), None)

    def _put(self, data: bytes) -> int:
        """Write `data` at the end (fsynced when durable); on failure cut back and return the bytes kept, else 0."""
        assert self.fd is not None
        if self.unsure and not self._settle():
            return len(data)  # the tail is unknown: nothing is written after it
        first = 0
        try:
            # One os.write nearly always takes the whole record; _write_all only finishes a short write.
            first = max(0, self._write(self.fd, data))
            if first < len(data):
                self._write_all(self.fd, data[first:])
            if self.durable:
                self._fsync(self.fd)
            self.error = None
        except OSError as exc:
            self.error = exc
            written = first + getattr(exc, "written", 0)
            if written or self.durable:
                try:
                    self._truncate(self.fd, self.size)  # no torn record left behind
                except OSError as cut:
                    if self.durable:
                        # Maybe in the file, never fsynced: not written. The whole record waits; the
                        # retry cuts first (never a second copy) and writes it again (a new fsync).
                        self.unsure = True
                        with contextlib.suppress(OSError):
                            stat = os.fstat(self.fd)
                            with _unsure_lock:  # whoever opens this file next in this process cuts them too
                                _unsure_tails[(stat.st_dev, stat.st_ino)] = (self.size, bytes(data))
                        logger.error("%s: %s, and the record could not be cut (%s); nothing more is written "
                                     "until it is", self.path.name, exc, cut)
                        return len(data)
                    self.size += written  # could not cut: keep exactly the unwritten rest
                    return len(data) - written
            return len(data)
        if self.size == 0 and self.durable:
            fsync_dir(self.path.parent)  # the file's first line: its name must survive a power cut too
        self.size += len(data)
        self.dirty = not self.durable
        return 0

    def append(self, data: bytes) -> bool:
        """Append one record; False when it was kept in memory (or dropped when memory is full)."""
        if self._pending or self.fd is None:
            if self.pending_bytes + len(data) > self.max_pending_bytes:
                self.dropped_rows += 1
                return False
            self._pending.append(data)
            self.pending_bytes += len(data)
            return False
        kept = self._put(data)
        if kept:
            self._pending.append(data[len(data) - kept:])
            self.pending_bytes += kept
            return False
        return True

    def write_now(self, data: bytes) -> None:
        """Append one record now, durably when the file is `durable`, or raise OSError (nothing kept in memory)."""
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        if self._put(data):
            raise self.error or OSError(errno.EIO, f"{self.path}: append not written")

    def flush_pending(self) -> bool:
        """Try to write what waits in memory; True when nothing waits any more."""
        if not self._pending or self.fd is None:
            return not self._pending
        data = b"".join(self._pending)
        kept = self._put(data)
        rest = data[len(data) - kept:] if kept else b""
        self._pending = [rest] if rest else []
        self.pending_bytes = len(rest)
        return not rest

    def sync(self) -> None:
        """fsync when something was written since the last fsync."""
        if self.fd is None or not self.dirty:
            return
        self.dirty = False
        try:
            self._fsync(self.fd)
        except OSError as exc:
            logger.error("fsync of %s failed: %s", self.path.name, exc)

    def removed(self) -> bool:
        """True when the file we write is no longer at its path (deleted, or its folder removed)."""
        if self.fd is None:
            return False
        try:
            ours = os.fstat(self.fd)
        except OSError:
            return False
        if ours.st_nlink == 0:
            return True
        try:
            there = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino)

    def restore(self) -> int:
        """Put our content back at our path (folder recreated) and go on writing there; return its size.

        An `unsure` tail is left behind: only the fsynced bytes are copied, its records wait in memory.
        """
        assert self.fd is not None
        limit = self.size if self.unsure else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            quarantine(self.path, "a file replaced the one banc.py writes")
        tmp = self.path.with_name(f".{self.path.name}.restore")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            offset = 0
            while limit is None or offset < limit:
                chunk = os.pread(self.fd, 1 << 20 if limit is None else min(1 << 20, limit - offset), offset)
                if not chunk:
                    break
                self._write_all(fd, chunk)
                offset += len(chunk)
            self._fsync(fd)
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
            new_fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a half copy must not hold the last free space of the disk
            raise
        finally:
            os.close(fd)
        # The old descriptor is closed only once the new one exists: never a dangling fd.
        self._forget_unsure()  # what the old file kept unsure stays behind with it
        os.close(self.fd)
        self.fd = new_fd
        self.size = offset
        self.unsure = False
        return offset

    def close(self) -> int:
        """Last write attempt, fsync and close; return the number of bytes that could not be written."""
        self.flush_pending()
        if self.fd is not None:
            try:
                self._fsync(self.fd)
            except OSError as exc:
                logger.error("fsync of %s failed: %s", self.path.name, exc)
            os.close(self.fd)
            self.fd = None
        return self.pending_bytes

    def release(self) -> None:
        """Close the descriptor without a last write or fsync (write_now already fsynced a durable line)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def append_durably(path: Path, data: bytes, *, fsync: Callable[[int], None] = os.fsync,
                   truncate: Callable[[int, int], None] = os.ftruncate) -> None:
    """Append the line(s) `data` to `path` and fsync before returning (raises OSError; a partial write is undone).

    One durable AppendFile opened for this line: a torn last line is cut first, so the new line
    never glues onto it. Returning means the fsync succeeded; OSError means the line is not
    durable. When its bytes could not be cut back after the failure they may stay in the file
    (never fsynced: an fsync that failed once cannot be trusted with them): the next append to
    that file in this process cuts them first, so a retry never leaves two copies, and raises
    without writing while it cannot. `fsync` and `truncate` stand for os.fsync and os.ftruncate (tests).
    """
    target = AppendFile(path, durable=True, fsync=fsync, truncate=truncate)
    target.open()
    try:
        target.write_now(data)
    finally:
        target.release()
