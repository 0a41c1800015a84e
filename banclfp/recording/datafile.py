"""data.csv read back: the one reader of the CSV files banc.py writes, and a test folder read once at resume.

Every read of data.csv goes through here: `scan_csv` (one pass: line count, torn tail, last
lines, and with a `record.DataCounts` the recount of the rows, the header's width and what
the ESP timeline relearns from), `read_bytes` (the whole file for numpy's parser),
`chunks` (its bytes in order, for a hash), `DataFollower` (the rows written since the last
read, for a running test). `read_folder` gives banc.py's start the journal and both CSV
files in one `FolderSnapshot`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from banclfp.recording import record

CHUNK_BYTES = 1 << 20


def chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The bytes of a file in order, `chunk_bytes` at a time (raises OSError, FileNotFoundError when missing)."""
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(chunk_bytes), b"")


def read_bytes(path: Path) -> bytes:
    """The whole file in one read (raises OSError, FileNotFoundError when missing)."""
    return Path(path).read_bytes()


def count_csv_rows(path: Path) -> int:
    """Complete lines after the header of a CSV file, without parsing (0 when missing)."""
    try:
        lines = sum(chunk.count(b"\n") for chunk in chunks(path))
    except FileNotFoundError:
        return 0
    return max(0, lines - 1)


@dataclass
class CsvScan:
    """What scan_csv found in a CSV file written by banc.py."""

    size: int = 0
    lines: int = 0  # complete lines, header included
    valid_size: int = 0  # bytes up to and including the last newline
    torn: bytes = b""  # bytes after the last newline: a row cut by a power loss
    tail_lines: list[bytes] = field(default_factory=list)  # last complete lines, oldest first
    width: Optional[int] = None  # data.csv's header: 12 (earlier version) or 14 columns; None when not one of ours
    counts: Optional[record.DataCounts] = None  # the rows recounted, when asked for


def scan_csv(path: Path, tail_bytes: int = 64 * 1024, chunk_bytes: int = CHUNK_BYTES,
             counts: Optional[record.DataCounts] = None) -> CsvScan:
    """One pass over a CSV file: its complete lines counted, last lines and torn tail (missing file: empty).

    With `counts` (a data.csv), every complete line is also folded into it and the header's
    width read: the one recount of data.csv.
    """
    scan = CsvScan(counts=counts)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return scan
    with fh:
        tail = b""
        offset = 0
        last_nl = -1
        rest = b""  # the start of a line the next chunk ends (counts only)
        header_seen = False
        while True:
            chunk = fh.read(chunk_bytes)
            if not chunk:
                break
            scan.lines += chunk.count(b"\n")
            pos = chunk.rfind(b"\n")
            if pos >= 0:
                last_nl = offset + pos
            offset += len(chunk)
            tail = (tail + chunk)[-tail_bytes:]
            if counts is not None:
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                if lines and not header_seen:
                    header_seen = True
                    scan.width = record.header_width(lines[0])
                for line in lines:
                    counts.add_line(line)
    scan.size = offset
    scan.valid_size = last_nl + 1
    torn_len = scan.size - scan.valid_size
    scan.torn = tail[len(tail) - torn_len :] if torn_len else b""
    body = tail[: len(tail) - torn_len] if torn_len else tail
    lines = body.split(b"\n")[:-1]
    if scan.valid_size > len(body):
        lines = lines[1:]  # the first line of the tail window may be cut
    scan.tail_lines = lines[-8:]
    return scan


def scan_data_csv(path: Path, chunk_bytes: int = CHUNK_BYTES) -> record.DataCounts:
    """Recount data.csv (complete lines only; a missing file counts nothing)."""
    counts = record.DataCounts()
    scan_csv(path, chunk_bytes=chunk_bytes, counts=counts)
    return counts


@dataclass(frozen=True)
class LastRow:
    """What banc.py needs from the last row of data.csv to resume."""

    seq: int
    capacity_ah: float
    energy_wh: float


def last_data_row(lines: Sequence[bytes]) -> Optional[LastRow]:
    """The last parseable data row among `lines` (oldest first), or None (header or garbage only)."""
    for raw in reversed(lines):
        parts = raw.decode("ascii", errors="replace").strip().split(",")
        if len(parts) not in record.DATA_CSV_WIDTHS:
            continue
        try:
            return LastRow(int(parts[record.DATA_COLUMN["seq"]]), float(parts[record.DATA_COLUMN["capacity_ah"]]),
                           float(parts[record.DATA_COLUMN["energy_wh"]]))
        except ValueError:
            continue
    return None


class DataFollower:
    """A growing data.csv read on from where the last read stopped, whole lines only (a running test's rows)."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.offset = 0
        self._partial = b""

    def read_on(self, on_rewind: Callable[[], None] = lambda: None) -> Iterator[list[bytes]]:
        """The complete lines written since the last read, a chunk's worth at a time (raises OSError).

        A file shorter than what was read (rewritten by a repair) is read again from its start,
        after `on_rewind()`. A line still being written comes with a later read.
        """
        with open(self.path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < self.offset:
                self.offset, self._partial = 0, b""
                on_rewind()
            fh.seek(self.offset)
            while True:
                chunk = fh.read(self.chunk_bytes)
                if not chunk:
                    return
                self.offset += len(chunk)
                lines = (self._partial + chunk).split(b"\n")
                self._partial = lines.pop()
                yield lines


# --------------------------------------------------------------------------- a test folder at resume


@dataclass
class FolderSnapshot:
    """A test folder read once at banc.py's start: the journal, data.csv's recount and rejected.csv's line count.

    The events banc.py's start appends go through `append_event`, so the snapshot stays the
    folder's journal without reading it again.
    """

    folder: Path
    events: list[record.Event]
    bad_events: int  # unreadable journal lines
    data: CsvScan  # data.csv (width, lines, torn tail)
    counts: record.DataCounts  # data.csv's rows recounted (also data.counts)
    rejected: CsvScan  # rejected.csv (its lines)

    @property
    def rejected_rows(self) -> int:
        """Complete lines of rejected.csv after its header."""
        return max(0, self.rejected.lines - 1)

    def append_event(self, event: record.Event) -> None:
        """Append one event to the folder's journal (durably, raises OSError), and to the snapshot's events."""
        record.append_event(self.folder, event)
        self.events.append(event)  # as it reads back (record's round trip)


def read_folder(folder: Path) -> FolderSnapshot:
    """Read a test folder once: its journal, data.csv (one pass) and rejected.csv."""
    folder = Path(folder)
    events, bad = record.read_events(folder)
    counts = record.DataCounts()
    data = scan_csv(folder / record.DATA_CSV_FILE, counts=counts)
    rejected = scan_csv(folder / record.REJECTED_CSV_FILE)
    return FolderSnapshot(folder, events, bad, data, counts, rejected)
