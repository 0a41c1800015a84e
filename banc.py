#!/usr/bin/env python3
"""banc.py — one process per running test: records one bench's data and results (seed §3).

Usage: python banc.py bancN SERIAL

Exit codes:
  0  the test reached step 5 (finished), step 9 (stopped for the day), or SIGTERM/SIGINT
     (the test stays unfinished and is resumed by the next start)
  1  unexpected failure at start (test folder or files cannot be created)
  2  invalid bench, serial or setting (one line on stderr, nothing created on disk)
  3  another banc.py already runs for this bench (nothing written)
  4  the bench holds another battery's unfinished test in bancs_config.json

One thread: paho's read loop runs the message callbacks (every row is written and handed to
the OS there, before paho acknowledges the QoS 1 message); between reads a 0.2 s
tick runs the watchdog, fsync, config.json saves, write retries and shutdown.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from paho.mqtt.client import MQTT_ERR_SUCCESS

import protocol
import utils

logger = logging.getLogger("banc")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_BENCH_BUSY = 4

TICK_S = 0.2
# A row reaches the OS (page cache) before its message is acknowledged, so killing the
# process loses nothing. Only a power cut can lose what the kernel has not written yet:
# data.csv is fsynced every BANC_FSYNC_INTERVAL_S (utils.Settings.fsync_interval_s, default
# 1 s), which bounds that to about one second of data without a per-row fsync that would
# cap the ingest rate. The price on an SD card (bench/RESULTS.md): each fsync rewrites the
# partly filled last page, ~4 KiB per bench per second; a site with a UPS may raise it.
# config.json holds a summary (capacity, energy, counters) that data.csv also holds row by
# row, and banc.py recomputes it from data.csv when it resumes. Rewriting it (atomically,
# with two fsyncs, ~0.8 kB) often would write more than the rows themselves: it is saved
# every 5 minutes, and at once on a step change, a Ri result, a stop and at exit.
SUMMARY_SAVE_INTERVAL_S = 300.0
WRITE_RETRY_INTERVAL_S = 1.0
# Rows kept in memory while the disk refuses them (about two days of 1 Hz rows); beyond
# that new rows are dropped and counted rather than letting the Pi run out of memory.
MAX_PENDING_BYTES = 16 * 1024 * 1024
REJECT_PAYLOAD_MAX_CHARS = 200
KEEPALIVE_S = 20
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
READ_BURST = 64  # packets read back to back (a few ms) before the periodic work gets a turn
# After (re)starting, the broker first delivers what was queued while banc.py was down
# (possibly a newer step). The start step is announced once that backlog has drained:
# after this much quiet, or at the latest ANNOUNCE_MAX_WAIT_S after connecting.
ANNOUNCE_QUIET_S = 0.3
ANNOUNCE_MAX_WAIT_S = 3.0
SHUTDOWN_MQTT_TIMEOUT_S = 3.0
# A redelivered (DUP) message whose seq is at most this far behind the last accepted one
# was already written before a crash; further back, or without DUP, it is an ESP reboot.
SEQ_REDELIVERY_WINDOW = 1000
REJECT_LOG_PER_MINUTE = 10

_ERRNO_FR = {
    errno.ENOSPC: "disque plein",
    errno.EDQUOT: "quota disque dépassé",
    errno.EROFS: "disque en lecture seule",
    errno.EACCES: "permission refusée",
    errno.EPERM: "opération non permise",
    errno.EFBIG: "fichier trop gros",
    errno.EIO: "erreur d'entrée/sortie",
    errno.ENOENT: "fichier disparu",
}


def describe_os_error(exc: BaseException) -> str:
    """Short French description of a file error for an operator alert."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FR:
        return _ERRNO_FR[exc.errno]
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:60]


# =========================================================================== pure helpers

SEQ_FIRST = "first"
SEQ_NEXT = "next"
SEQ_GAP = "gap"
SEQ_RESTART = "restart"
SEQ_DUPLICATE = "duplicate"


class SeqTracker:
    """Classifies each BMS line by its seq against the last accepted one (contract §3)."""

    def __init__(self, last: Optional[int] = None, window: int = SEQ_REDELIVERY_WINDOW) -> None:
        self.last = last
        self.window = window

    def classify(self, seq: int, redelivered: bool = False) -> str:
        """Return SEQ_*; every verdict but SEQ_DUPLICATE makes `seq` the last accepted one."""
        last = self.last
        if last is None:
            verdict = SEQ_FIRST
        elif seq == last:
            return SEQ_DUPLICATE
        elif seq == last + 1:
            verdict = SEQ_NEXT
        elif seq > last:
            verdict = SEQ_GAP
        elif redelivered and last - seq <= self.window:
            # The broker re-sent (DUP flag) a message banc.py wrote but had not acknowledged.
            return SEQ_DUPLICATE
        else:
            # Lower seq without DUP: the ESP rebooted (seq restarts at 0) — not a gap.
            verdict = SEQ_RESTART
        self.last = seq
        return verdict


class AlertLatch:
    """Remembers which alert conditions are raised, so each is published once per episode."""

    def __init__(self) -> None:
        self._raised: set[str] = set()

    def raise_(self, key: str) -> bool:
        """Mark `key` raised; True only when it was not already."""
        if key in self._raised:
            return False
        self._raised.add(key)
        return True

    def clear(self, key: str) -> bool:
        """Mark `key` cleared; True only when it was raised."""
        if key in self._raised:
            self._raised.discard(key)
            return True
        return False

    def is_raised(self, key: str) -> bool:
        """Whether `key` is currently raised."""
        return key in self._raised


class RateLimiter:
    """At most `per_minute` events allowed per minute; counts the suppressed ones."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.window_start: Optional[float] = None
        self.count = 0

    def allow(self, now: float) -> tuple[bool, int]:
        """(whether to log this event, number suppressed in the window that just ended)."""
        suppressed = 0
        if self.window_start is None or now - self.window_start >= 60.0:
            suppressed = max(0, self.count - self.per_minute)
            self.window_start, self.count = now, 0
        self.count += 1
        return self.count <= self.per_minute, suppressed


class BmsWatchdog:
    """BMS silence detector: one alert per silence, one recovery note when data returns."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last_data: Optional[float] = None
        self.silence_since: Optional[float] = None  # set while an alert is raised

    def feed(self, now: float) -> Optional[float]:
        """Record BMS data at `now`; return the silence length (s) when it ends an alerted silence."""
        silence = None if self.silence_since is None else now - self.silence_since
        self.silence_since = None
        self.last_data = now
        return silence

    def check(self, now: float, connected_since: Optional[float]) -> Optional[float]:
        """Return the silence length (s) when an alert is due now, else None.

        Silence counts from the last data or the last (re)connection, whichever is later:
        while the broker is unreachable nobody can hear the BMS, and that is not its fault.
        """
        if connected_since is None or self.silence_since is not None:
            return None
        since = connected_since if self.last_data is None else max(self.last_data, connected_since)
        if now - since >= self.timeout_s:
            self.silence_since = since
            return now - since
        return None


def bms_fields_text(payload: bytes) -> str:
    """The validated BMS payload as it goes into data.csv: ASCII, whitespace removed, the 10 BMS_FIELDS.

    A contract v2 line may carry the ESP's uptime_ms as an 11th field: it is not a data.csv
    column (the header has always been the 10 fields), so it is left out of the row.
    """
    return ",".join("".join(payload.decode("ascii").split()).split(",")[: len(protocol.BMS_FIELDS)])


def format_data_row(timestamp: str, step: int, fields_text: str) -> bytes:
    """One data.csv row (timestamp, step, then the 10 BMS fields), newline included."""
    return f"{timestamp},{step},{fields_text}\n".encode("ascii")


def held_capacity(
    step: int, stored_ah: Optional[float], stored_wh: Optional[float], line_ah: float, line_wh: float
) -> tuple[Optional[float], Optional[float], bool]:
    """Capacity and energy to keep after a BMS line; the flag is True when the ESP's counter went backwards.

    Contract §3: the counters run from the start of phase 3 and are held after it. In phase 4 a
    lower value is a counter the ESP lost (a reboot without its saved counters), not a new
    measurement: the measured result is kept rather than overwritten. After 5 or 9 nothing changes.
    """
    if step in (protocol.STEP_FINISHED, protocol.STEP_STOP):
        return stored_ah, stored_wh, False
    if step == 4 and stored_ah is not None and line_ah < stored_ah:
        return stored_ah, stored_wh, True
    return line_ah, line_wh, False


def safe_text(raw: bytes | str, max_chars: int = REJECT_PAYLOAD_MAX_CHARS) -> str:
    """Printable one-line rendering of untrusted bytes: escapes, cut to `max_chars` (+ size note)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    # surrogateescape maps each invalid byte to U+DC80..U+DCFF, escaped back as \\xNN below.
    text = data[: max_chars * 4].decode("utf-8", errors="surrogateescape")
    out: list[str] = []
    length = 0
    for ch in text:
        if ch == "\\":
            piece = "\\\\"
        elif ch.isprintable():
            piece = ch
        else:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:
                code -= 0xDC00
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        if length + len(piece) > max_chars:
            out.append(f"…({len(data)} octets)")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


def format_rejected_row(timestamp: str, topic: str, reason: str, payload: bytes) -> bytes:
    """One rejected.csv row; every field is made safe so a hostile payload cannot break the file."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [timestamp, safe_text(topic, 100), safe_text(reason, 200), safe_text(payload)]
    )
    return buf.getvalue().encode("utf-8")


@dataclass
class CsvScan:
    """What scan_csv found in a CSV file written by banc.py."""

    size: int = 0
    lines: int = 0  # complete lines, header included
    valid_size: int = 0  # bytes up to and including the last newline
    torn: bytes = b""  # bytes after the last newline: a row cut by a power loss
    tail_lines: list[bytes] = field(default_factory=list)  # last complete lines, oldest first


def scan_csv(path: Path, tail_bytes: int = 64 * 1024, chunk_bytes: int = 1 << 20) -> CsvScan:
    """Count the complete lines of a CSV file and return its last lines and torn tail (missing file: empty)."""
    scan = CsvScan()
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return scan
    with fh:
        tail = b""
        offset = 0
        last_nl = -1
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
        if len(parts) != len(utils.DATA_CSV_HEADER):
            continue
        try:
            return LastRow(int(parts[2]), float(parts[7]), float(parts[8]))
        except ValueError:
            continue
    return None


# =========================================================================== files


class AppendFile:
    """Append-only file written with os.write on an O_APPEND descriptor.

    append() hands the bytes to the OS before returning (no user-space buffer to lose in a
    kill). When the OS refuses them (disk full, read-only, EFBIG...), they are kept in
    memory, in order, behind anything already waiting; flush_pending() retries. A partial
    write keeps exactly the unwritten remainder, so nothing is written twice or reordered.
    """

    def __init__(self, path: Path, header: Sequence[str], writer: Callable[[int, bytes], int] = os.write,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.path = Path(path)
        self.header_line = (",".join(header) + "\n").encode("ascii")
        self.fd: Optional[int] = None
        self._write = writer
        self._pending: list[bytes] = []
        self.pending_bytes = 0
        self.max_pending_bytes = max_pending_bytes
        self.dropped_rows = 0
        self.dirty = False
        self.error: Optional[OSError] = None

    def open(self) -> None:
        """Open for appending; write the header when the file is new or empty (raises OSError)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                self._write_all(fd, self.header_line)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _write_all(self, fd: int, data: bytes) -> int:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                n = self._write(fd, view[written:])
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

    def append(self, data: bytes) -> bool:
        """Append one row; False when it was kept in memory (or dropped when memory is full)."""
        if self._pending or self.fd is None:
            if self.pending_bytes + len(data) > self.max_pending_bytes:
                self.dropped_rows += 1
                return False
            self._pending.append(data)
            self.pending_bytes += len(data)
            return False
        n = 0
        try:
            n = self._write(self.fd, data)
            if n < len(data):  # a short write: the disk is filling up; the next write says why
                n += self._write_all(self.fd, data[n:])
        except OSError as exc:
            n += getattr(exc, "written", 0)
            self.error = exc
        if n > 0:
            self.dirty = True
        if n < len(data):
            rest = data[n:]
            self._pending.append(rest)
            self.pending_bytes += len(rest)
            return False
        return True

    def flush_pending(self) -> bool:
        """Try to write what waits in memory; True when nothing waits any more."""
        if not self._pending or self.fd is None:
            return not self._pending
        data = b"".join(self._pending)
        try:
            written = self._write_all(self.fd, data)
            self.error = None
        except OSError as exc:
            written = getattr(exc, "written", 0)
            self.error = exc
        if written:
            self.dirty = True
        rest = data[written:]
        self._pending = [rest] if rest else []
        self.pending_bytes = len(rest)
        return not rest

    def sync(self) -> None:
        """fsync when something was written since the last fsync."""
        if self.fd is None or not self.dirty:
            return
        self.dirty = False
        try:
            os.fsync(self.fd)
        except OSError as exc:
            logger.error("fsync of %s failed: %s", self.path.name, exc)

    def close(self) -> int:
        """Last write attempt, fsync and close; return the number of bytes that could not be written."""
        self.flush_pending()
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                logger.error("fsync of %s failed: %s", self.path.name, exc)
            os.close(self.fd)
            self.fd = None
        return self.pending_bytes


def _read_counter(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


# =========================================================================== recorder

COUNTER_KEYS = ("rows_count", "rejected_count", "duplicate_count", "seq_gap_count", "seq_restart_count")


class Recorder:
    """One test's records: data.csv, rejected.csv and config.json, fed by the MQTT callbacks.

    `alert` publishes a French text on bancN/security; `clock` gives the wall time of
    receipt and `mono` the monotonic time (both injectable).
    """

    def __init__(
        self,
        folder: Path,
        banc: str,
        serial: str,
        step: int,
        alert: Callable[[str], None],
        clock: Callable[[], datetime] = utils.now_local,
        mono: Callable[[], float] = time.monotonic,
        writer: Callable[[int, bytes], int] = os.write,
    ) -> None:
        self.folder = Path(folder)
        self.banc = banc
        self.serial = serial
        self.step = step
        self.alert = alert
        self.clock = clock
        self.mono = mono
        self.topics = protocol.topics(banc)
        # The process is single-threaded today; the locks cost ~0.1 us and keep the files
        # and counters consistent should the callbacks or the tick ever move to a thread.
        self.lock = threading.Lock()
        self.config_lock = threading.RLock()
        self.seq = SeqTracker()
        self.data = AppendFile(self.folder / utils.DATA_CSV_FILE, utils.DATA_CSV_HEADER, writer)
        self.rejected = AppendFile(self.folder / utils.REJECTED_CSV_FILE, utils.REJECTED_CSV_HEADER, writer)
        self.counters = dict.fromkeys(COUNTER_KEYS, 0)
        self.capacity_ah: Optional[float] = None
        self.energy_wh: Optional[float] = None
        self.last_row_time: Optional[datetime] = None
        self.summary_dirty = False
        self.last_summary_save = mono()
        self.last_fsync = mono()
        self.fsync_interval_s = utils.get_settings().fsync_interval_s
        self.next_retry = 0.0
        self.pending_step: Optional[int] = None
        self.pending_ri: list[dict[str, float]] = []
        self.ended: Optional[int] = None  # 5 or 9 once received: nothing more is recorded
        self.ignored_after_end = 0
        self.last_message = mono()
        self.latch = AlertLatch()
        self.watchdog = BmsWatchdog(utils.get_settings().bms_timeout_s)
        self.reject_log = RateLimiter(REJECT_LOG_PER_MINUTE)
        self.anomaly_log = RateLimiter(REJECT_LOG_PER_MINUTE)

    # ------------------------------------------------------------------ start

    def open(self, config: dict[str, Any]) -> None:
        """Repair a torn tail, open the CSV files and restore seq and counters (raises OSError)."""
        for key in COUNTER_KEYS:
            self.counters[key] = _read_counter(config, key)
        for key, value in (("capacity_ah", config.get("capacity_ah")), ("energy_wh", config.get("capacity_wh"))):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(self, key, float(value))
        data_scan = self._repair(self.data)
        rejected_scan = self._repair(self.rejected)
        self.data.open()
        self.rejected.open()
        # Counted from the files themselves: exact even when config.json lagged behind a crash.
        self.counters["rows_count"] = max(0, data_scan.lines - 1)
        self.counters["rejected_count"] = max(0, rejected_scan.lines - 1)
        last = last_data_row(data_scan.tail_lines)
        if last is not None:
            self.seq.last = last.seq
            if self.step not in (protocol.STEP_FINISHED, protocol.STEP_STOP) and (
                self.capacity_ah != last.capacity_ah or self.energy_wh != last.energy_wh
            ):
                self.capacity_ah, self.energy_wh = last.capacity_ah, last.energy_wh
                self.summary_dirty = True
        now = self.clock()
        if data_scan.torn:
            self.reject(now, self.topics.bms_data, "ligne incomplète en fin de data.csv (arrêt brutal)", data_scan.torn)
        if rejected_scan.torn:
            logger.warning("torn line removed from rejected.csv: %s", safe_text(rejected_scan.torn))
        if self.counters != {k: _read_counter(config, k) for k in COUNTER_KEYS}:
            self.summary_dirty = True
        logger.info(
            "data.csv: %d rows, last seq %s; rejected.csv: %d rows",
            self.counters["rows_count"], self.seq.last, self.counters["rejected_count"],
        )

    @staticmethod
    def _repair(target: AppendFile) -> CsvScan:
        """Scan a CSV file and cut a torn last line (power loss mid-write) so appends start on a fresh line."""
        scan = scan_csv(target.path)
        if scan.torn:
            os.truncate(target.path, scan.valid_size)
            logger.warning("%s ended with a torn line of %d bytes; removed", target.path.name, len(scan.torn))
        return scan

    # ------------------------------------------------------------------ messages

    def _parse(self, parse: Callable[[bytes], Any], topic: str, payload: bytes) -> Optional[tuple[datetime, Any]]:
        """(receipt time, parsed payload), or None once the refused payload is recorded."""
        now = self.clock()
        try:
            return now, parse(payload)
        except protocol.PayloadError as exc:
            self.reject(now, topic, str(exc), payload)
            return None

    def _admit(self) -> Optional[float]:
        """Under self.lock: the monotonic receipt time, or None (counted) once the test has ended."""
        if self.ended is not None:
            self.ignored_after_end += 1
            return None
        self.last_message = self.mono()
        return self.last_message

    def handle_bms(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/bms/data message: validate, drop duplicates, append a data.csv row."""
        parsed = self._parse(protocol.parse_bms_line, self.topics.bms_data, payload)
        if parsed is None:
            return
        now, line = parsed
        seq = line.seq
        with self.lock:
            mono_now = self._admit()
            if mono_now is None:
                return
            recovered = self.watchdog.feed(mono_now)
            previous_seq = self.seq.last
            verdict = self.seq.classify(seq, redelivered)
            if verdict == SEQ_DUPLICATE:
                self.counters["duplicate_count"] += 1
                self.summary_dirty = True
            else:
                if verdict == SEQ_GAP:
                    self.counters["seq_gap_count"] += 1
                elif verdict == SEQ_RESTART:
                    self.counters["seq_restart_count"] += 1
                was_failing = self.data.failing
                dropped_before = self.data.dropped_rows
                # The row keeps the ESP's own (validated) text: no float round trip.
                row = format_data_row(utils.iso(now, millis=True), self.step, bms_fields_text(payload))
                self.data.append(row)
                dropped = self.data.dropped_rows > dropped_before
                if not dropped:
                    self.counters["rows_count"] += 1
                self.capacity_ah, self.energy_wh, counter_lost = held_capacity(
                    self.step, self.capacity_ah, self.energy_wh, line.capacity_ah, line.energy_wh
                )
                counter_lost = counter_lost and self.latch.raise_("capacity:held")
                self.last_row_time = now
                self.summary_dirty = True
                newly_failing = self.data.failing and not was_failing
                log_it, suppressed = (
                    self.anomaly_log.allow(mono_now) if verdict in (SEQ_GAP, SEQ_RESTART) else (False, 0)
                )
        if recovered is not None:
            logger.info("BMS data back after %.1f s", recovered)
            self.alert(f"Données BMS rétablies après {recovered:.0f} s de silence")
        if verdict == SEQ_DUPLICATE:
            return
        if counter_lost:
            logger.warning("ESP capacity counter went back to %.3f Ah in phase 4; keeping %.3f Ah",
                           line.capacity_ah, self.capacity_ah or 0.0)
            self.alert(f"Compteur de capacité de l'ESP remis à zéro en phase 4 : capacité mesurée "
                       f"conservée ({self.capacity_ah or 0.0:.2f} Ah)")
        if suppressed:
            logger.info("%d more seq anomalies in the last minute", suppressed)
        if log_it:
            logger.info("seq %d after %s: %s", seq, previous_seq, "ESP restart" if verdict == SEQ_RESTART else "gap")
        if newly_failing:
            self._file_failed(self.data)
        if dropped and self.latch.raise_("dropped:data.csv"):
            logger.error("memory buffer full: BMS rows are being dropped")
            self.alert("Mémoire tampon pleine : des mesures BMS sont perdues, libérer le disque")

    def handle_step(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/step message: 1-5 record the new phase (5 ends the test), 9 stops, else reject."""
        parsed = self._parse(protocol.parse_step, self.topics.step, payload)
        if parsed is None:
            return
        now, step = parsed
        with self.lock:
            if self._admit() is None:
                return
            previous = self.step
            if step == protocol.STEP_STOP:
                self.ended = step
            else:
                self.step = step
                self.pending_step = step
                if step == protocol.STEP_FINISHED:
                    self.ended = step
        if step == protocol.STEP_STOP:
            logger.info("step 9: stop for the day at step %d (step and bench status left as they are)", previous)
            return
        if step < previous:
            logger.warning("step %d after step %d (the ESP went back)", step, previous)
        else:
            logger.info("step %d (was %d)", step, previous)
        # The step is written before this callback returns, hence before the broker gets
        # its acknowledgement: a crash right after cannot lose a phase change.
        self._write_step(now)
        self.save_summary(force=True)

    def handle_ri(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/ri/results message: fold the values into config.json's running means."""
        parsed = self._parse(protocol.parse_ri_results, self.topics.ri_results, payload)
        if parsed is None:
            return
        now, results = parsed
        with self.lock:
            if self._admit() is None:
                return
        logger.info("Ri results at step %d: %s", self.step, results)
        with self.config_lock:
            self.pending_ri.append(results)
            self._write_ri(now)

    def reject(self, now: datetime, topic: str, reason: str, payload: bytes) -> None:
        """Record a refused message in rejected.csv and count it."""
        row = format_rejected_row(now.isoformat(timespec="milliseconds"), topic, reason, payload)
        with self.lock:
            if self._admit() is None:
                return
            was_failing = self.rejected.failing
            self.rejected.append(row)
            self.counters["rejected_count"] += 1
            self.summary_dirty = True
            newly_failing = self.rejected.failing and not was_failing
            log_it, suppressed = self.reject_log.allow(self.mono())
        if suppressed:
            logger.warning("%d more rejected messages in the last minute", suppressed)
        if log_it:
            logger.warning("rejected on %s: %s (%s)", topic, safe_text(reason, 120), safe_text(payload, 60))
        if newly_failing:
            self._file_failed(self.rejected)

    # ------------------------------------------------------------------ config.json

    def _config_failed(self, what: str, exc: BaseException) -> None:
        if self.latch.raise_("config"):
            logger.error("config.json: %s not saved: %s (retrying every second)", what, exc)
            self.alert(f"Écriture impossible dans config.json ({describe_os_error(exc)}) : nouvel essai chaque seconde")

    def _config_ok(self) -> None:
        if self.latch.clear("config"):
            logger.info("config.json writable again")
            self.alert("Écriture dans config.json rétablie")

    def _rebuild_config(self, exc: BaseException, now: datetime) -> None:
        """config.json vanished or is unreadable: rebuild it from what this process knows."""
        if not isinstance(exc, (FileNotFoundError, ValueError)):
            return  # a disk problem: retrying is the cure
        try:
            # Moves an unreadable file aside (kept for inspection) and writes a fresh one.
            utils.load_or_create_config(self.folder, self.banc, self.serial, now)
        except (OSError, ValueError) as again:
            logger.error("config.json cannot be rebuilt: %s", again)
            return
        logger.error("config.json rebuilt (%s); step, counters and capacity restored", exc)
        with self.lock:
            if self.pending_step is None:
                self.pending_step = self.step
            self.summary_dirty = True

    def _write_step(self, now: datetime) -> bool:
        """Write the pending step to config.json and bancs_config.json (5 also frees the bench)."""
        with self.config_lock:
            with self.lock:
                step = self.pending_step
            if step is None:
                return True
            try:
                utils.update_config(self.folder, step, now)
                if step == protocol.STEP_FINISHED:
                    utils.reset_banc_config(self.banc)
            except (OSError, ValueError) as exc:
                self._config_failed(f"step {step}", exc)
                self._rebuild_config(exc, now)
                return False
            with self.lock:
                if self.pending_step == step:  # a newer step may have arrived meanwhile
                    self.pending_step = None
            self._config_ok()
            return True

    def _write_ri(self, now: datetime) -> bool:
        """Fold the pending Ri results, in arrival order, into config.json."""
        with self.config_lock:
            while self.pending_ri:
                try:
                    utils.update_config_ri_results(self.folder, self.pending_ri[0], now)
                except (OSError, ValueError) as exc:
                    self._config_failed("Ri results", exc)
                    self._rebuild_config(exc, now)
                    return False
                self.pending_ri.pop(0)
            self._config_ok()
            return True

    def save_summary(self, force: bool = False) -> bool:
        """Save capacity, energy and counters in config.json when due (or `force`); True when saved or clean."""
        with self.config_lock:
            with self.lock:
                if not self.summary_dirty:
                    return True
                if not force and self.mono() - self.last_summary_save < SUMMARY_SAVE_INTERVAL_S:
                    return True
                counters = dict(self.counters)
                capacity_ah, energy_wh, when = self.capacity_ah, self.energy_wh, self.last_row_time
                self.summary_dirty = False
                self.last_summary_save = self.mono()
            try:
                if capacity_ah is not None and energy_wh is not None and when is not None:
                    utils.update_config_bms(self.folder, capacity_ah, energy_wh, when, counters)
                else:
                    utils.update_config_counters(self.folder, counters)
            except (OSError, ValueError) as exc:
                with self.lock:
                    self.summary_dirty = True
                self._config_failed("summary", exc)
                self._rebuild_config(exc, self.clock())
                return False
            self._config_ok()
            return True

    # ------------------------------------------------------------------ files

    def _file_failed(self, target: AppendFile) -> None:
        """First failure of an episode: log and alert once."""
        exc = target.error
        if self.latch.raise_(f"file:{target.path.name}"):
            logger.error("%s: write failed (%s); rows kept in memory, retrying every second", target.path.name, exc)
            self.alert(
                f"Écriture impossible dans {target.path.name} ({describe_os_error(exc) if exc else 'écriture partielle'}) : "
                "mesures gardées en mémoire, nouvel essai chaque seconde"
            )

    def _retry_files(self) -> None:
        for target in (self.data, self.rejected):
            with self.lock:
                if not target.failing:
                    continue
                rows = target.pending_rows
                ok = target.flush_pending()
                dropped = target.dropped_rows
            key = f"file:{target.path.name}"
            if ok:
                logger.info("%s writable again: %d rows caught up", target.path.name, rows)
                if self.latch.clear(key):
                    note = f"Écriture dans {target.path.name} rétablie : {rows} lignes rattrapées"
                    if dropped:
                        note += f", {dropped} perdues (mémoire pleine)"
                    self.alert(note)
                self.latch.clear(f"dropped:{target.path.name}")
            else:
                self._file_failed(target)

    def sync(self) -> None:
        """fsync the CSV files that changed since the last fsync."""
        with self.lock:
            self.data.sync()
            self.rejected.sync()
        self.last_fsync = self.mono()

    def tick(self, connected_since: Optional[float]) -> None:
        """Periodic work (main thread): watchdog, write retries, fsync, config.json saves."""
        now = self.mono()
        with self.lock:
            silence = None if self.ended is not None else self.watchdog.check(now, connected_since)
        if silence is not None:
            timeout = self.watchdog.timeout_s
            logger.warning("no BMS data for %.1f s", silence)
            self.alert(f"Aucune donnée BMS valide depuis {timeout:g} s : vérifier l'ESP32, le BMS et leur liaison")
        if now >= self.next_retry:
            self.next_retry = now + WRITE_RETRY_INTERVAL_S
            self._retry_files()
            if self.pending_step is not None:
                self._write_step(self.clock())
            if self.pending_ri:
                self._write_ri(self.clock())
            if self.latch.is_raised("config"):
                self.save_summary(force=True)
        if now - self.last_fsync >= self.fsync_interval_s:
            self.sync()
        self.save_summary()

    def all_written(self) -> bool:
        """True when nothing waits in memory (rows, step, Ri results, summary)."""
        with self.lock:
            files_ok = not self.data.failing and not self.rejected.failing
            summary_ok = not self.summary_dirty
        return files_ok and summary_ok and self.pending_step is None and not self.pending_ri

    def flush_all(self) -> bool:
        """One attempt to write everything that waits; True when all is on disk (fsynced)."""
        self._retry_files()
        if self.pending_step is not None:
            self._write_step(self.clock())
        if self.pending_ri:
            self._write_ri(self.clock())
        self.save_summary(force=True)
        self.sync()
        return self.all_written()

    def close(self) -> int:
        """Close both CSV files; return the bytes that could not be written."""
        with self.lock:
            self.ended = self.ended or protocol.STEP_STOP
            lost = self.data.close() + self.rejected.close()
        return lost


# =========================================================================== process


def discard_stale_session(client_id: str, timeout_s: float = 3.0) -> bool:
    """Connect once with a clean session under `client_id`, dropping what the broker queued for it.

    Used before a NEW test: a bench's session may still hold messages of an older test
    whose banc.py died; they must not land in the new test's data.csv.
    """
    settings = utils.get_settings()
    client = protocol.make_client(client_id, persistent=False)
    done = threading.Event()
    client.on_connect = lambda *args: done.set()
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=KEEPALIVE_S)
    except OSError as exc:
        logger.warning("broker unreachable, stale session not checked: %s", exc)
        return False
    client.loop_start()
    ok = done.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    return ok


class BancProcess:
    """The running banc.py: MQTT client, callbacks, network loop with periodic work, shutdown.

    Everything runs in the main thread: the network is served with a short select() timeout
    and the periodic work runs between calls. Single-threaded, paho acknowledges each QoS 1 message
    right after its callback (no thread hand-off per message), and a signal handler only
    has to set a flag that the loop reads within TICK_S.
    """

    def __init__(self, banc: str, serial: str, folder: Path, step: int, resumed: bool) -> None:
        self.banc = banc
        self.serial = serial
        self.folder = folder
        self.resumed = resumed
        self.topics = protocol.topics(banc)
        self.client_id = f"banc_script_{banc}"
        self.recorder = Recorder(folder, banc, serial, step, self.send_alert)
        self.client = protocol.make_client(self.client_id, persistent=True, will=(self.topics.banc_status, protocol.STATUS_OFFLINE))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_unsubscribe = self._on_unsubscribe
        self.handlers: dict[str, Callable[[bytes, bool], None]] = {
            self.topics.bms_data: self.recorder.handle_bms,
            self.topics.step: self.recorder.handle_step,
            self.topics.ri_results: self.recorder.handle_ri,
        }
        self.connected_since: Optional[float] = None
        self.announced = False
        self.unsubscribed = False
        self.stop_signal: Optional[int] = None
        self.next_connect_at = 0.0
        self.reconnect_delay_s = RECONNECT_MIN_S
        self.connect_failures = 0
        self.messages_in = 0

    # ------------------------------------------------------------------ MQTT callbacks (never raise)

    def send_alert(self, text: str) -> None:
        """Publish a security alert (kept by paho and sent once the broker is back)."""
        try:
            protocol.publish(self.client, self.topics.security, protocol.encode_security(text))
        except Exception:  # an alert must never take the process down
            logger.exception("security alert not published: %s", text)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            if reason_code.is_failure:
                logger.error("broker refused the connection: %s", reason_code)
                return
            # Re-subscribe on every connection: a broker that lost its state forgets them.
            protocol.subscribe_all(client, protocol.banc_process_subscriptions(self.banc))
            protocol.publish(client, self.topics.banc_status, protocol.STATUS_ONLINE)
            self.connected_since = time.monotonic()
            self.reconnect_delay_s = RECONNECT_MIN_S
            self.connect_failures = 0
            logger.info("connected to the broker (session present: %s)", flags.session_present)
        except Exception:
            logger.exception("on_connect failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        try:
            self.connected_since = None
            if reason_code.is_failure:
                logger.warning("broker connection lost (%s); reconnecting", reason_code)
        except Exception:
            logger.exception("on_disconnect failed")

    def _on_message(self, client, userdata, message) -> None:
        self.messages_in += 1
        try:
            handler = self.handlers.get(message.topic)
            if handler is None:
                logger.warning("message on unexpected topic %s ignored", safe_text(message.topic, 100))
                return
            handler(message.payload, bool(message.dup))
        except Exception:
            logger.exception("message on %s not processed", safe_text(message.topic, 100))

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.unsubscribed = True

    # ------------------------------------------------------------------ network

    def _network(self, timeout_s: float) -> None:
        """Let paho work for up to `timeout_s`; (re)connect with a capped backoff when there is no connection.

        paho's "external event loop" API (select + loop_read/loop_write/loop_misc) rather than
        loop(): loop() sets up a wake-up socket pair for threaded use that costs two extra
        system calls per message; single-threaded, paho writes each PUBACK directly.
        """
        sock = self.client.socket()
        if sock is not None:
            client = self.client
            try:
                readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [], timeout_s)
            except (OSError, ValueError):  # socket closed under us: loop_read reports the loss
                readable, writable = [sock], []
            rc = MQTT_ERR_SUCCESS
            if readable:
                # paho reads one packet per loop_read(); while messages keep coming (a backlog
                # after a restart), read on without a select() and loop_misc() per message.
                for _ in range(READ_BURST):
                    before = self.messages_in
                    rc = client.loop_read()
                    if rc != MQTT_ERR_SUCCESS or self.messages_in == before or client.socket() is None:
                        break
            if rc == MQTT_ERR_SUCCESS and writable and client.socket() is not None:
                rc = client.loop_write()
            if rc == MQTT_ERR_SUCCESS and client.socket() is not None:
                rc = client.loop_misc()
            if rc != MQTT_ERR_SUCCESS or client.socket() is None:
                # paho closed the socket (and called on_disconnect): retry after the backoff.
                self.next_connect_at = time.monotonic() + self.reconnect_delay_s
                self.reconnect_delay_s = min(self.reconnect_delay_s * 2, RECONNECT_MAX_S)
            return
        now = time.monotonic()
        if now < self.next_connect_at:
            time.sleep(min(timeout_s, self.next_connect_at - now))
            return
        try:
            self.client.reconnect()  # TCP + CONNECT; the CONNACK arrives in loop_read()
        except Exception as exc:  # refused, unreachable, DNS...: never fatal
            self.connect_failures += 1
            if self.connect_failures == 1 or self.reconnect_delay_s >= RECONNECT_MAX_S:
                logger.warning("broker %s unreachable: %s (retry in %.0f s)",
                               utils.get_settings().mqtt_host, exc, self.reconnect_delay_s)
            self.next_connect_at = now + self.reconnect_delay_s
            self.reconnect_delay_s = min(self.reconnect_delay_s * 2, RECONNECT_MAX_S)

    def _pump(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Run the network until `done()` or `timeout_s`; return done()."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            if self.client.socket() is None:
                return done()
            self._network(0.05)
        return done()

    # ------------------------------------------------------------------ main loop

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the handler may interrupt the main thread anywhere, even inside a lock.
        self.stop_signal = signum

    def _maybe_announce(self) -> None:
        if self.announced or self.connected_since is None:
            return
        now = time.monotonic()
        quiet = now - max(self.recorder.last_message, self.connected_since) >= ANNOUNCE_QUIET_S
        if quiet or now - self.connected_since >= ANNOUNCE_MAX_WAIT_S:
            step = self.recorder.step
            if step in protocol.PHASES and self.recorder.ended is None:
                protocol.publish(self.client, self.topics.command, protocol.encode_command(step))
                logger.info("announced step %d on %s", step, self.topics.command)
            self.announced = True

    def run(self) -> int:
        """Connect, serve until step 5/9 or a signal, shut down; return the exit code."""
        settings = utils.get_settings()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if not self.resumed:
            discard_stale_session(self.client_id)
        self.client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=KEEPALIVE_S)
        # No sd_notify here: banc.py is the kiosk's child and inherits its NOTIFY_SOCKET;
        # notifying would feed the kiosk's systemd watchdog on its behalf.
        next_tick = 0.0
        while True:
            self._network(TICK_S)
            if self.stop_signal is not None:
                return self._shutdown_on_signal()
            if self.recorder.ended is not None:
                return self._finish(self.recorder.ended)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK_S
                try:
                    self._maybe_announce()
                    self.recorder.tick(self.connected_since)
                except Exception:
                    logger.exception("periodic work failed")

    def _publish_offline(self) -> None:
        if self.connected_since is None:
            return
        try:
            info = protocol.publish(self.client, self.topics.banc_status, protocol.STATUS_OFFLINE)
            self._pump(info.is_published, SHUTDOWN_MQTT_TIMEOUT_S)
        except Exception:
            logger.exception("offline status not published")

    def _finish(self, step: int) -> int:
        """Step 5 or 9: write everything, close the files, leave the broker; exit code 0."""
        logger.info("test %s at step %d", "finished" if step == protocol.STEP_FINISHED else "stopped", self.recorder.step)
        while not self.recorder.flush_all():
            # The disk refuses data that was acknowledged: keep trying (the alerts are out);
            # the network keeps running so they reach the kiosk.
            if self.stop_signal is not None:
                break
            deadline = time.monotonic() + WRITE_RETRY_INTERVAL_S
            while time.monotonic() < deadline:
                self._network(TICK_S)
        lost = self.recorder.close()
        if self.recorder.ignored_after_end:
            logger.info("%d messages after the end ignored", self.recorder.ignored_after_end)
        self._publish_offline()
        # The test is over: stop the broker queueing this bench's messages for a session
        # nobody will read (after 9 they would land in the next day's rows, timed wrongly).
        if self.connected_since is not None:
            self.unsubscribed = False
            self.client.unsubscribe([topic for topic, _ in protocol.banc_process_subscriptions(self.banc)])
            self._pump(lambda: self.unsubscribed, SHUTDOWN_MQTT_TIMEOUT_S)
        self.client.disconnect()
        if lost:
            logger.error("%d bytes of data could not be written", lost)
            return EXIT_ERROR
        return EXIT_OK

    def _shutdown_on_signal(self) -> int:
        """SIGTERM/SIGINT: not a test end; close cleanly, keep the session for the restart."""
        logger.info("signal %d: closing (the test stays resumable at step %d)", self.stop_signal, self.recorder.step)
        self._publish_offline()
        # From here no message is processed, so none is acknowledged: what the broker still
        # holds is delivered to the next banc.py through the persistent session.
        self.client.disconnect()
        for _ in range(3):
            if self.recorder.flush_all():
                break
            time.sleep(0.5)
        lost = self.recorder.close()
        if lost:
            logger.error("%d bytes of data could not be written before exit", lost)
            return EXIT_ERROR
        return EXIT_OK


# =========================================================================== entry point


def _fail(message: str, code: int) -> int:
    print(f"banc.py: {message}", file=sys.stderr)
    return code


def validate_args(argv: Sequence[str]) -> tuple[Optional[tuple[str, str]], str]:
    """((banc, serial), "") for valid arguments, else (None, one-line reason)."""
    if len(argv) != 2:
        return None, "usage: banc.py bancN SERIAL"
    banc_arg, serial = argv
    if not utils.is_valid_banc(banc_arg):
        return None, f"banc invalide: {safe_text(banc_arg, 40)} (attendu banc1..banc{utils.get_settings().num_bancs})"
    if not utils.is_valid_serial(serial):
        return None, f"numéro de série invalide: {safe_text(serial, 40)} (motif {utils.SERIAL_PATTERN})"
    return (utils.normalize_banc(banc_arg), serial), ""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one test: `banc.py bancN SERIAL`; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        utils.get_settings()
    except utils.SettingsError as exc:
        return _fail(f"réglage invalide: {exc}", EXIT_USAGE)
    valid, reason = validate_args(args)
    if valid is None:
        return _fail(reason, EXIT_USAGE)
    banc, serial = valid
    try:
        lock_fd = utils.acquire_banc_lock(banc)
    except OSError as exc:
        return _fail(f"verrou {utils.banc_lock_path(banc)} impossible: {exc}", EXIT_ERROR)
    if lock_fd is None:
        return _fail(f"un banc.py tourne déjà pour {banc}", EXIT_ALREADY_RUNNING)

    utils.setup_logging("banc.py")
    try:
        info = utils.get_banc_info(banc)
        pending = info.get("serial-pending")
        if info.get("status") == utils.STATUS_OCCUPIED and isinstance(pending, str) and pending.upper() != serial.upper():
            logger.error("%s holds the unfinished test of %s; refusing %s", banc, pending, serial)
            return _fail(f"{banc} est occupé par {safe_text(pending, 40)}", EXIT_BENCH_BUSY)
        now = utils.now_local()
        folder, resumed = utils.find_or_create_test_folder(banc, serial, now)
        config = utils.load_or_create_config(folder, banc, serial, now)
        step = config.get("current_step")
        if step not in protocol.PHASES or step == protocol.STEP_FINISHED:
            logger.warning("config.json step %r unusable; starting at step 1", step)
            step = 1
        utils.create_data_csv(folder)
        process = BancProcess(banc, serial, folder, step, resumed)
        process.recorder.open(config)
        utils.set_banc_status(banc, utils.STATUS_OCCUPIED, serial, step)
    except (OSError, ValueError) as exc:
        logger.exception("cannot start the test of %s on %s", serial, banc)
        return _fail(f"démarrage impossible: {exc}", EXIT_ERROR)
    logger.info("%s %s on %s, folder %s, step %d", "resuming" if resumed else "starting", serial, banc, folder, step)
    code = process.run()
    logger.info("exit %d", code)
    os.close(lock_fd)
    return code


if __name__ == "__main__":
    sys.exit(main())
