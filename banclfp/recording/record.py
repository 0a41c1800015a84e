"""The test record: the one definition of what a test folder and bancs_config.json hold.

A test folder `data/bancN/DDMMYYYY-SERIAL/` holds:
  - `events.jsonl`: the test's journal, append-only, each line fsynced before banc.py
    acknowledges the message behind it: start, step changes, Ri results, stop (9),
    resume, abandon (operator reset). It is the truth of the phase reached, the Ri and
    diffusion means, `first_handle` and the end of the test. Step 5 is one line: a test
    is finished exactly when that line is on disk.
  - `data.csv`: one row per accepted BMS line (`DATA_CSV_HEADER`), the truth of the
    measurements and of the counters (rows, seq gaps and restarts are recounted from it).
    A replayed line comes after later ones: readers order rows by `measured_at`. A folder of
    the earlier version keeps its 12 columns (`DATA_CSV_HEADER_V1`) when its test resumes.
    The journal also holds the ESP's boots (`EVENT_ESP_BOOT`), the clock offset estimated for
    each (`EVENT_ESP_CLOCK`) and the lines that never came back (`EVENT_SEQ_LOST`).
  - `rejected.csv`: refused messages (`REJECTED_CSV_HEADER`).
  - `config.json`: a summary, a view of the above with the seed's keys (the Ri/diffusion
    `<key>_average` are the raw means; `ri_pulses` holds each value with its pulse's temperature,
    from which readers take the figures at 25 °C: `ri_at_25c`). When it is missing,
    unreadable or disagrees with the journal it is rebuilt (`rebuild_summary`), never trusted
    over the journal.
`bancs_config.json` (the benches' state) is likewise rebuilt from the folders
(`rebuild_bancs_config`) when it is damaged.

Everything here is pure except the functions that name a folder or a file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeGuard, Union, assert_never
from zoneinfo import ZoneInfo

from banclfp.infra import storage
from banclfp.wire import protocol

logger = logging.getLogger("banc.record")

SOFTWARE_VERSION = "1.1.0"
LOCAL_TZ = ZoneInfo("Europe/Paris")

# --------------------------------------------------------------------------- file names

BANCS_CONFIG_FILE = "bancs_config.json"
TEST_CONFIG_FILE = "config.json"
DATA_CSV_FILE = "data.csv"
REJECTED_CSV_FILE = "rejected.csv"
EVENTS_FILE = "events.jsonl"
CERTIFICATE_FILE = "certificate.pdf"  # written after step 5 (verdict.py, report.py --certificate)

DATA_CSV_HEADER_V1: tuple[str, ...] = ("timestamp", "step") + protocol.BMS_FIELDS
"""data.csv of the earlier version: receipt time, phase, then the 10 BMS fields as the ESP sent them."""
DATA_CSV_HEADER: tuple[str, ...] = DATA_CSV_HEADER_V1 + ("uptime_ms", "measured_at")
"""data.csv columns (docs/fichiers.md): the 12 above, the ESP's clock (empty for a 10-field line), the measurement time."""
DATA_COLUMN: dict[str, int] = {name: i for i, name in enumerate(DATA_CSV_HEADER)}
DATA_CSV_WIDTHS: tuple[int, ...] = (len(DATA_CSV_HEADER_V1), len(DATA_CSV_HEADER))
_SEQ_MIN, _SEQ_MAX = (int(bound) for bound in protocol.BMS_RANGES["seq"])
# The lines of the current ESP boot whose text is remembered (banc.py's recorder, and the
# recount of data.csv that starts it): a copy of one of them is recognised by its text.
RECENT_LINES_KEPT = 1000
RI_PULSES_KEY = "ri_pulses"
"""config.json: per Ri/diffusion key, the [ohm, temperature_c, count] its mean is made of (RecordState.ri_pulses)."""
_BMS_TEXT = slice(DATA_COLUMN["seq"], DATA_COLUMN["seq"] + len(protocol.BMS_FIELDS))
REJECTED_CSV_HEADER: tuple[str, ...] = ("timestamp", "topic", "reason", "payload")

STATUS_AVAILABLE = "available"
STATUS_OCCUPIED = "occupied"

TEST_RUNNING = "running"
TEST_STOPPED = "stopped"
TEST_FINISHED = "finished"
TEST_ABANDONED = "abandoned"
STATUS_LABELS = {TEST_RUNNING: "en cours", TEST_FINISHED: "terminé", TEST_STOPPED: "arrêté",
                 TEST_ABANDONED: "abandonné"}
"""A test's status as people read it (kiosk history, report, charts)."""

COUNTER_KEYS: tuple[str, ...] = (
    "rows_count", "rejected_count", "duplicate_count", "seq_gap_count", "seq_restart_count", "seq_lost_count",
)

FOLDER_RE = re.compile(r"^(\d{2})(\d{2})(\d{4})-(RW-[A-Za-z0-9]{4,32})(?:-(\d+))?$")
BANC_DIR_RE = re.compile(r"^banc[1-9][0-9]*$")


# --------------------------------------------------------------------------- times and serials


def now_local() -> datetime:
    """Current time, timezone-aware in Europe/Paris."""
    return datetime.now(LOCAL_TZ)


def iso(moment: datetime, millis: bool = False) -> str:
    """ISO 8601 with UTC offset (milliseconds optional)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.isoformat(timespec="milliseconds" if millis else "seconds")


def as_local(moment: datetime) -> datetime:
    """The same moment, timezone-aware: a naive time is taken as Paris local time (the lab's files)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=LOCAL_TZ)


def parse_time(text: object) -> Optional[datetime]:
    """Parse an ISO 8601 time from a file; naive times are taken as Paris local time."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return as_local(moment)


def serial_key(serial: str) -> str:
    """The identity of a battery: serials compare without regard to letter case."""
    return serial.upper()


def same_serial(a: object, b: object) -> bool:
    """True when `a` and `b` are the same battery's serial (any letter case)."""
    return isinstance(a, str) and isinstance(b, str) and serial_key(a) == serial_key(b)


RI_PLAUSIBLE_OHM_DEFAULT: tuple[float, float] = (0.0005, 1.0)
"""The Ri/diffusion values (ohm) a pack can give (protocol v3): a 16S LFP pack's Ri is tens of mΩ,
so 1e-9 Ω or 10 Ω is a garbled or broken measurement. grading.json's `ri_plausible_ohm` can only
narrow it per model (grading.py); the journal's fold skips any value outside it, so a journal written
before the recorder refused them never lets one into a mean."""


def ri_plausible(value: float, plausible: tuple[float, float] = RI_PLAUSIBLE_OHM_DEFAULT) -> bool:
    """True when `value` (ohm) is within `plausible` [low, high], bounds included."""
    return plausible[0] <= value <= plausible[1]


def running_mean(mean: Optional[float], count: int, value: float) -> tuple[float, int]:
    """Fold `value` into a mean of `count` values; return (new mean, new count)."""
    if mean is None or count <= 0:
        return float(value), 1
    count += 1
    return mean + (value - mean) / count, count


# --------------------------------------------------------------------------- data.csv rows


def format_data_row(timestamp: str, step: int, fields: Sequence[str], uptime_ms: Optional[int] = None,
                    measured_at: Optional[str] = None, width: int = len(DATA_CSV_HEADER)) -> bytes:
    """One data.csv row (timestamp, step, the 10 BMS fields as sent, then uptime_ms and measured_at), newline included.

    `width` 12 writes a row of the earlier layout (a resumed folder keeps its header);
    `measured_at` defaults to the receipt time.
    """
    row = f"{timestamp},{step}," + ",".join(fields[: len(protocol.BMS_FIELDS)])
    if width == len(DATA_CSV_HEADER):
        row += f",{'' if uptime_ms is None else uptime_ms},{measured_at or timestamp}"
    return (row + "\n").encode("ascii")


def header_width(header_line: bytes) -> Optional[int]:
    """The width of a data.csv header line (12 or 14), or None when it is not one of ours."""
    header = header_line.rstrip(b"\r\n").lstrip(b"\xef\xbb\xbf").decode("ascii", "replace")
    for columns in (DATA_CSV_HEADER, DATA_CSV_HEADER_V1):
        if header == ",".join(columns):
            return len(columns)
    return None


class SeqHoles:
    """The seqs missing within the current ESP boot (gaps), so that a replayed line fills one exactly once.

    `see(seq)` folds a line in the order written: "next", "gap" (a hole opens), "fill" (a
    replayed line inside a hole), "restart" (a lower seq outside every hole: the ESP
    rebooted, the holes are forgotten) or "duplicate" (a seq already held). Holes are
    ranges; at most `max_holes` are kept (the oldest are dropped: nothing can answer them).
    """

    def __init__(self, last: Optional[int] = None, max_holes: int = 1000) -> None:
        self.last = last
        self.holes: list[list[int]] = []  # [first, last] inclusive, oldest first
        self.max_holes = max_holes

    def missing(self) -> int:
        """Number of seqs in the holes."""
        return sum(b - a + 1 for a, b in self.holes)

    def hole_of(self, seq: int) -> Optional[int]:
        """Index of the hole holding `seq`, or None."""
        for index, (a, b) in enumerate(self.holes):
            if a <= seq <= b:
                return index
        return None

    def see(self, seq: int) -> str:
        """Classify `seq` and fold it in (see the class)."""
        last = self.last
        if last is None:
            self.last = seq
            return "next"
        if seq == last + 1:
            self.last = seq
            return "next"
        if seq > last:
            self.holes.append([last + 1, seq - 1])
            del self.holes[: max(0, len(self.holes) - self.max_holes)]
            self.last = seq
            return "gap"
        index = self.hole_of(seq)
        if index is not None:
            self.fill(index, seq)
            return "fill"
        if seq == last:
            return "duplicate"
        self.holes = []
        self.last = seq
        return "restart"

    def fill(self, index: int, seq: int) -> None:
        """Take `seq` out of hole `index`."""
        a, b = self.holes[index]
        pieces = [piece for piece in ([a, seq - 1], [seq + 1, b]) if piece[0] <= piece[1]]
        self.holes[index : index + 1] = pieces


CAPACITY_AGREE_AH_PER_LINE = 0.5
"""How far two phase-3 lines of a real counter can be apart per line between them (500 A for one
second is 0.14 Ah): further, one of them is garbled."""


@dataclass
class CapacityCounter:
    """The ESP's discharge counters as a test keeps them (docs/protocole.md §2: 0 before phase 3, held after it).

    A phase-3 value counts once the next phase-3 line agrees with it (docs/protocole.md §8: no single
    row decides), so one garbled line, even the phase's last, never becomes the capacity. After
    phase 3 nothing moves it; a lower value there is a counter the ESP lost (`see` says so).
    Used by the recorder for each line and by the recount of data.csv: one rule for both.
    """

    ah: Optional[float] = None
    wh: Optional[float] = None
    last: Optional[tuple[int, float, float]] = None  # (seq, ah, wh) of the newest phase-3 line, to be confirmed

    def see(self, step: int, seq: int, ah: float, wh: float) -> bool:
        """Fold one line measured in `step`; True when it shows the counter lost after phase 3."""
        if step in (1, 2):
            self.ah, self.wh, self.last = ah, wh, None
            return False
        if step == 3 or (step == 4 and self.ah is None):  # (resumed in phase 4 with nothing kept: count it)
            last = self.last
            if last is not None and abs(ah - last[1]) <= CAPACITY_AGREE_AH_PER_LINE * max(1, abs(seq - last[0])):
                self.ah, self.wh = ah, wh
            self.last = (seq, ah, wh)
            return False
        return step == 4 and self.ah is not None and ah < self.ah - CAPACITY_AGREE_AH_PER_LINE


@dataclass
class DataCounts:
    """What data.csv says about a test: counters recounted row by row, and its last values."""

    rows: int = 0
    seq_gaps: int = 0
    seq_restarts: int = 0
    last_seq: Optional[int] = None
    last_step: Optional[int] = None
    capacity_ah: Optional[float] = None
    energy_wh: Optional[float] = None
    last_time: Optional[str] = None
    capacity: CapacityCounter = field(default_factory=CapacityCounter)  # the counters as the test keeps them
    bad_rows: int = 0
    last_uptime_ms: Optional[int] = None  # of the newest line (not a replayed one)

    holes: SeqHoles = field(default_factory=SeqHoles)
    # The phase each hole was measured in: the step of the row just before its first seq.
    hole_steps: dict[int, int] = field(default_factory=dict)
    # The split rows of the last RECENT_LINES_KEPT lines of the current boot (see recent_lines).
    recent_rows: deque[Sequence[bytes]] = field(default_factory=lambda: deque(maxlen=RECENT_LINES_KEPT))

    def add(self, parts: Sequence[bytes]) -> None:
        """Fold one split data.csv row (pure); a replayed row (it fills a gap) counts neither a gap nor a restart."""
        try:
            seq = int(parts[DATA_COLUMN["seq"]])
            step = int(parts[DATA_COLUMN["step"]])
            capacity, energy = float(parts[DATA_COLUMN["capacity_ah"]]), float(parts[DATA_COLUMN["energy_wh"]])
        except (ValueError, IndexError):
            self.bad_rows += 1
            return
        if not _SEQ_MIN <= seq <= _SEQ_MAX:  # a damaged row: no line carries it (a replay could not name it)
            self.bad_rows += 1
            return
        self.rows += 1
        previous_step = self.last_step
        verdict = self.holes.see(seq)
        if verdict == "gap":
            self.seq_gaps += 1
            if previous_step is not None:
                self.hole_steps[self.holes.holes[-1][0]] = previous_step
        elif verdict == "restart":
            self.seq_restarts += 1
            self.hole_steps.clear()
            self.recent_rows.clear()
        self.recent_rows.append(parts)
        if verdict == "fill":
            self.hole_steps[seq + 1] = step  # a hole split by this line goes on after it, in its phase
            return  # measured earlier: the last values stay those of the newest line
        self.last_seq = seq
        uptime = parts[DATA_COLUMN["uptime_ms"]] if len(parts) > DATA_COLUMN["uptime_ms"] else b""
        self.last_uptime_ms = int(uptime) if uptime.isdigit() else None
        self.last_step = step
        self.capacity_ah, self.energy_wh = capacity, energy
        self.capacity.see(step, seq, capacity, energy)
        self.last_time = parts[DATA_COLUMN["timestamp"]].decode("ascii", "replace")

    def add_line(self, line: bytes) -> None:
        """Fold one complete data.csv line (pure): the header is skipped, a line of another width is a bad row."""
        parts = line.rstrip(b"\r\n").split(b",")
        if parts[0] == b"timestamp":
            return  # the header
        if len(parts) in DATA_CSV_WIDTHS:
            self.add(parts)
        elif line.strip():
            self.bad_rows += 1

    def recent_lines(self) -> dict[int, bytes]:
        """seq -> the ESP's line as it sent it, for the last lines of the current boot (oldest first)."""
        recent: dict[int, bytes] = {}
        for parts in self.recent_rows:
            uptime = parts[DATA_COLUMN["uptime_ms"]] if len(parts) > DATA_COLUMN["uptime_ms"] else b""
            remember_line(recent, int(parts[DATA_COLUMN["seq"]]),
                          b",".join(parts[_BMS_TEXT]) + (b"," + uptime if uptime else b""))
        return recent

    def measured_capacity(self, step: int) -> tuple[Optional[float], Optional[float]]:
        """Capacity and energy to report (CapacityCounter: confirmed in phase 3, held after it)."""
        return self.capacity.ah, self.capacity.wh


def remember_line(recent: dict[int, bytes], seq: int, text: bytes) -> None:
    """Keep a line's text under its seq, newest last, at most RECENT_LINES_KEPT of them."""
    recent.pop(seq, None)
    recent[seq] = text
    if len(recent) > RECENT_LINES_KEPT:
        del recent[next(iter(recent))]


def count_data_lines(lines: Iterable[bytes]) -> DataCounts:
    """Recount a test's rows from complete data.csv lines, header included or not (pure)."""
    counts = DataCounts()
    for line in lines:
        counts.add_line(line)
    return counts


# --------------------------------------------------------------------------- the journal

EVENT_START = "start"
EVENT_STEP = "step"
EVENT_RI = "ri"
EVENT_STOP = "stop"
EVENT_RESUME = "resume"
EVENT_ABANDON = "abandon"
EVENT_MIGRATE = "migrate"  # a folder of the earlier version: its config.json taken as the journal's start
# The ESP's clock (docs/protocole.md §7): a new ESP boot seen (the data.csv row that starts it: its
# timestamp `row_t`, `seq`, `uptime_ms`, and its number `boot`), and the offset estimated for
# boot number `boot`: measured_at = offset_ms + uptime_ms (Unix ms). Boots are numbered 0, 1, 2...
# in the journal's order; an EVENT_ESP_BOOT without `boot` (earlier journals) takes the next number.
EVENT_ESP_BOOT = "esp_boot"
EVENT_ESP_CLOCK = "esp_clock"
# Seqs `first`..`last` asked for again and never re-sent: `count` lines lost (docs/protocole.md §6).
EVENT_SEQ_LOST = "seq_lost"
# A wall-clock step of the Pi: {"event": "clock_step", "delta_s": D} (D seconds, signed).
EVENT_CLOCK_STEP = "clock_step"
# A phase change the recorder recovered from the BMS lines (its step message never arrived):
# {"event": "step", "step": N, "recovered": STEP_RECOVERED_FROM_LINES, "seq": S}.
STEP_RECOVERED_FROM_LINES = "lines"
EVENT_VERDICT = "verdict"  # after step 5: the grade (docs/verdict.md), kept once given
# A text received on bancN/security (banc.py's own alerts and the ESP's): {"event": "alert", "text": T}.
# A kiosk that starts shows the alarms still active from them (kiosk_messages.replay_alerts).
EVENT_ALERT = "alert"


# One dataclass per kind of journal line (docs/fichiers.md §2), each with `to_json` (the line's object,
# keys in the order banc.py has always written them, so the file stays byte-identical) and one
# reader, `event_from_json`, as tolerant as the fold always was: a value of the wrong type reads as
# None (the fold then ignores it, as it ignored the dict's), an unknown kind is kept as UnknownEvent,
# and keys a kind does not define are dropped (nothing read them). `t` is the line's time as written
# (event_time), None when the line has none: such an event changes the state but not its time.


def event_time(at: datetime) -> str:
    """The `t` of a journal line written at `at` (ISO 8601, milliseconds and UTC offset)."""
    return iso(at, millis=True)


def _as_int(value: object) -> Optional[int]:
    """An integer as the file holds it (a bool is not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_flag(value: object) -> Optional[bool]:
    return value if isinstance(value, bool) else None


def _event_head(t: Optional[str], kind: str) -> dict[str, object]:
    """The keys every journal line starts with: its time, then its kind."""
    return {"event": kind} if t is None else {"t": t, "event": kind}


def _put(out: dict[str, object], key: str, value: object) -> None:
    """Write an optional key: absent when None (banc.py writes it only when it has it)."""
    if value is not None:
        out[key] = value


@dataclass(frozen=True)
class StartEvent:
    """`start`: the folder was created for a battery on a bench (`restored`: its unreadable start written again)."""

    kind: ClassVar[str] = EVENT_START
    t: Optional[str]
    serial: Optional[str]
    banc: Optional[str]
    first_handle: Optional[str]
    software_version: Optional[str] = None
    restored: Optional[bool] = None

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out.update(serial=self.serial, banc=self.banc, first_handle=self.first_handle)
        _put(out, "software_version", self.software_version)
        _put(out, "restored", self.restored)
        return out


@dataclass(frozen=True)
class MigrateEvent:
    """`migrate`: a folder of the earlier version, its config.json (and data.csv's phase) taken as the journal's start.

    `ri` holds per key [raw mean, count]. `first_handle_defaulted`: config.json had none, so the
    migration's own time was taken; banc.py then wrote it last, after `ri_temperature_c`.
    """

    kind: ClassVar[str] = EVENT_MIGRATE
    t: Optional[str]
    serial: Optional[str]
    banc: Optional[str]
    step: Optional[int]
    first_handle: Optional[str] = None
    end_time: Optional[str] = None
    ri: Optional[Mapping[str, tuple[float, int]]] = None
    ri_temperature_c: Optional[float] = None
    first_handle_defaulted: bool = False

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out.update(serial=self.serial, banc=self.banc, step=self.step)
        if not self.first_handle_defaulted:
            _put(out, "first_handle", self.first_handle)
        _put(out, "end_time", self.end_time)
        if self.ri is not None:
            out["ri"] = {key: [mean, count] for key, (mean, count) in self.ri.items()}
        _put(out, "ri_temperature_c", self.ri_temperature_c)
        if self.first_handle_defaulted:
            _put(out, "first_handle", self.first_handle)
        return out


@dataclass(frozen=True)
class StepEvent:
    """`step`: a new phase; `recovered` (STEP_RECOVERED_FROM_LINES) with the `seq` of the line that showed it,
    or `restored` when banc.py's start brought back a phase the journal had lost."""

    kind: ClassVar[str] = EVENT_STEP
    t: Optional[str]
    step: Optional[int]
    recovered: Optional[str] = None
    seq: Optional[int] = None
    restored: Optional[bool] = None

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out["step"] = self.step
        _put(out, "recovered", self.recovered)
        _put(out, "seq", self.seq)
        _put(out, "restored", self.restored)
        return out


@dataclass(frozen=True)
class RiEvent:
    """`ri`: one Ri/diffusion result, its values (ohm, and `temperature_c` when sent) as banc.py received them."""

    kind: ClassVar[str] = EVENT_RI
    t: Optional[str]
    values: Optional[Mapping[str, float]]  # None: the line's `values` is not an object

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out["values"] = None if self.values is None else dict(self.values)
        return out


@dataclass(frozen=True)
class StopEvent:
    """`stop`: the ESP stopped for the day (step 9); `recovered` with `seq` when only its lines showed it."""

    kind: ClassVar[str] = EVENT_STOP
    t: Optional[str]
    recovered: Optional[str] = None
    seq: Optional[int] = None

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        _put(out, "recovered", self.recovered)
        _put(out, "seq", self.seq)
        return out


@dataclass(frozen=True)
class ResumeEvent:
    """`resume`: a new banc.py took the test up again."""

    kind: ClassVar[str] = EVENT_RESUME
    t: Optional[str]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        return _event_head(self.t, self.kind)


@dataclass(frozen=True)
class AbandonEvent:
    """`abandon`: the operator reset the bench of this unfinished test."""

    kind: ClassVar[str] = EVENT_ABANDON
    t: Optional[str]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        return _event_head(self.t, self.kind)


@dataclass(frozen=True)
class EspBootEvent:
    """`esp_boot`: a new ESP boot, the data.csv row that starts it (`row_t`, `seq`, `uptime_ms`) and its number
    (`boot`; absent in earlier journals: the next one)."""

    kind: ClassVar[str] = EVENT_ESP_BOOT
    t: Optional[str]
    row_t: Optional[str]
    seq: Optional[int]
    uptime_ms: Optional[int]
    boot: Optional[int] = None

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out.update(row_t=self.row_t, seq=self.seq, uptime_ms=self.uptime_ms)
        _put(out, "boot", self.boot)
        return out


@dataclass(frozen=True)
class EspClockEvent:
    """`esp_clock`: the clock offset of boot `boot`, Unix ms at uptime 0."""

    kind: ClassVar[str] = EVENT_ESP_CLOCK
    t: Optional[str]
    boot: Optional[int]
    offset_ms: Optional[int]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out.update(boot=self.boot, offset_ms=self.offset_ms)
        return out


@dataclass(frozen=True)
class SeqLostEvent:
    """`seq_lost`: seqs `first`..`last` of boot `boot` (None before any boot) asked for again and never re-sent."""

    kind: ClassVar[str] = EVENT_SEQ_LOST
    t: Optional[str]
    boot: Optional[int]
    first: Optional[int]
    last: Optional[int]
    count: Optional[int]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out.update(boot=self.boot, first=self.first, last=self.last, count=self.count)
        return out


@dataclass(frozen=True)
class ClockStepEvent:
    """`clock_step`: the Pi's wall clock stepped by `delta_s` seconds (signed)."""

    kind: ClassVar[str] = EVENT_CLOCK_STEP
    t: Optional[str]
    delta_s: Optional[float]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out["delta_s"] = self.delta_s
        return out


@dataclass(frozen=True)
class VerdictEvent:
    """`verdict`: the grade given after step 5 (None when the line's object is not a verdict)."""

    kind: ClassVar[str] = EVENT_VERDICT
    t: Optional[str]
    verdict: Optional[Verdict]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out["verdict"] = None if self.verdict is None else self.verdict.to_json()
        return out


@dataclass(frozen=True)
class AlertEvent:
    """`alert`: a text received on bancN/security."""

    kind: ClassVar[str] = EVENT_ALERT
    t: Optional[str]
    text: Optional[str]

    def to_json(self) -> dict[str, object]:
        """The journal line's object."""
        out = _event_head(self.t, self.kind)
        out["text"] = self.text
        return out


@dataclass(frozen=True)
class UnknownEvent:
    """A journal line of a kind this version does not know (a later version's): kept as read, folded as nothing."""

    t: Optional[str]
    kind: str
    fields: Mapping[str, object]  # the whole line's object, as parsed

    def to_json(self) -> dict[str, object]:
        """The journal line's object, as it was read."""
        return dict(self.fields)


KnownEvent = Union[StartEvent, MigrateEvent, StepEvent, RiEvent, StopEvent, ResumeEvent, AbandonEvent, EspBootEvent,
                   EspClockEvent, SeqLostEvent, ClockStepEvent, VerdictEvent, AlertEvent]
Event = Union[KnownEvent, UnknownEvent]
"""One line of events.jsonl, typed (event_from_json reads one, encode_event writes one)."""


def _migrated_ri(value: object) -> Optional[dict[str, tuple[float, int]]]:
    """A migrate line's `ri`: per key [mean, count]; an entry that is not one is dropped (the fold skipped it)."""
    if not isinstance(value, dict):
        return None
    ri: dict[str, tuple[float, int]] = {}
    for key, pair in value.items():
        mean = _as_number(pair[0]) if isinstance(pair, list) and len(pair) == 2 else None
        if mean is not None:
            ri[key] = (mean, _count(pair[1]))
    return ri


def _first_handle_defaulted(data: Mapping[str, object]) -> bool:
    """True when a migrate line's `first_handle` was written after its config.json's keys (none was there)."""
    keys = list(data)
    if "first_handle" not in keys:
        return False
    after = keys[keys.index("first_handle") + 1:]
    return not after and any(key in keys for key in ("end_time", "ri", "ri_temperature_c"))


def event_from_json(data: Mapping[str, object]) -> Event:
    """The event a journal line's object holds (never raises: see the section's comment)."""
    kind, at = data.get("event"), _as_text(data.get("t"))
    get = data.get
    if kind == EVENT_START:
        return StartEvent(at, _as_text(get("serial")), _as_text(get("banc")), _as_text(get("first_handle")),
                          _as_text(get("software_version")), _as_flag(get("restored")))
    if kind == EVENT_MIGRATE:
        return MigrateEvent(at, _as_text(get("serial")), _as_text(get("banc")), _as_int(get("step")),
                            _as_text(get("first_handle")), _as_text(get("end_time")), _migrated_ri(get("ri")),
                            _as_number(get("ri_temperature_c")), _first_handle_defaulted(data))
    if kind == EVENT_STEP:
        return StepEvent(at, _as_int(get("step")), _as_text(get("recovered")), _as_int(get("seq")),
                         _as_flag(get("restored")))
    if kind == EVENT_RI:
        values = get("values")
        # Only numbers are values (the fold never read anything else); not an object: no values at all.
        return RiEvent(at, {key: value for key, value in values.items()
                            if isinstance(value, (int, float)) and not isinstance(value, bool)}
                       if isinstance(values, dict) else None)
    if kind == EVENT_STOP:
        return StopEvent(at, _as_text(get("recovered")), _as_int(get("seq")))
    if kind == EVENT_RESUME:
        return ResumeEvent(at)
    if kind == EVENT_ABANDON:
        return AbandonEvent(at)
    if kind == EVENT_ESP_BOOT:
        return EspBootEvent(at, _as_text(get("row_t")), _as_int(get("seq")), _as_int(get("uptime_ms")),
                            _as_int(get("boot")))
    if kind == EVENT_ESP_CLOCK:
        return EspClockEvent(at, _as_int(get("boot")), _as_int(get("offset_ms")))
    if kind == EVENT_SEQ_LOST:
        return SeqLostEvent(at, _as_int(get("boot")), _as_int(get("first")), _as_int(get("last")),
                            _as_int(get("count")))
    if kind == EVENT_CLOCK_STEP:
        return ClockStepEvent(at, _as_number(get("delta_s")))
    if kind == EVENT_VERDICT:
        return VerdictEvent(at, Verdict.from_json(get("verdict")))
    if kind == EVENT_ALERT:
        return AlertEvent(at, _as_text(get("text")))
    return UnknownEvent(at, str(kind), dict(data))


def encode_event(event: Event) -> bytes:
    """One journal line: the event's object as compact ASCII JSON, newline included (the module's serializer)."""
    return (json.dumps(event.to_json(), ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def parse_events(raw: bytes) -> tuple[list[Event], int]:
    """Journal lines -> (events, number of unreadable lines); a torn last line is not an event (pure)."""
    events: list[Event] = []
    bad = 0
    lines = raw.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a line cut by a power loss
    if torn.strip():
        bad += 1
    for line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(data, dict) and isinstance(data.get("event"), str):
            events.append(event_from_json(data))
        else:
            bad += 1
    return events, bad


def read_events(folder: Path) -> tuple[list[Event], int]:
    """The journal of a test folder (empty when there is none)."""
    try:
        raw = (Path(folder) / EVENTS_FILE).read_bytes()
    except FileNotFoundError:
        return [], 0
    return parse_events(raw)


def append_event(folder: Path, event: Event) -> None:
    """Append one event to the folder's journal, durably (fsynced) before returning (raises OSError)."""
    storage.append_durably(Path(folder) / EVENTS_FILE, encode_event(event))


def _number(value: object) -> Optional[float]:
    number = _as_number(value)
    return None if number is None else float(number)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# A boot number further than this past the journal's known ones is damage, not a boot (the event is ignored).
ESP_BOOT_NUMBER_REACH = 1000


@dataclass
class EspBoot:
    """One ESP boot as the journal holds it: the data.csv row that starts it, and its clock offsets.

    A boot whose EVENT_ESP_BOOT line is unreadable is a hole (`located` False): it keeps its
    number and the offsets journaled for it, but its rows cannot be found (they keep their stamps).
    """

    row_t: Optional[str]  # timestamp of its first data.csv row (None: a hole)
    seq: Optional[int]
    uptime_ms: Optional[int]
    first_offset_ms: Optional[int] = None  # the first estimate (Unix ms at uptime 0) and when it was made
    first_offset_t: Optional[str] = None
    offset_ms: Optional[int] = None  # the latest estimate

    @property
    def located(self) -> bool:
        """True when the journal names the data.csv row that starts this boot (False: a hole)."""
        return self.row_t is not None and self.seq is not None and self.uptime_ms is not None

    def clock(self, at: str, offset_ms: int) -> None:
        """Fold one EVENT_ESP_CLOCK of this boot."""
        if self.first_offset_ms is None:
            self.first_offset_ms, self.first_offset_t = offset_ms, at
        self.offset_ms = offset_ms


@dataclass
class RecordState:
    """What the journal says of a test (fold_events)."""

    serial: Optional[str] = None
    banc: Optional[str] = None
    first_handle: Optional[str] = None
    step: int = 1
    status: str = TEST_RUNNING
    end_time: Optional[str] = None
    last_update: Optional[str] = None
    ri_means: dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(protocol.RI_KEYS))
    ri_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(protocol.RI_KEYS, 0))
    ri_temperature_c: Optional[float] = None  # the last result's (the seed's key; each pulse has its own below)
    # What each mean is made of, to bring it to 25 °C pulse by pulse (ri_at_25c): per key, the
    # values in journal order as (ohm, temperature_c, count). A result without a temperature was
    # measured at the previous result's (pulses are minutes apart), none before it: at 25 °C
    # (left uncorrected); a migrated mean is one entry of its count at its one temperature.
    ri_pulses: dict[str, list[tuple[float, Optional[float], int]]] = field(
        default_factory=lambda: {key: [] for key in protocol.RI_KEYS})
    # The latest Ri results, to recognise a copy the broker re-sends after a crash (at most
    # protocol.RECEIVE_MAXIMUM messages can have been written but not yet acknowledged).
    recent_ri: list[Mapping[str, float]] = field(default_factory=list)
    # Indexed by boot number (holes where a boot's EVENT_ESP_BOOT line is unreadable): the last
    # is the current boot, len() the next boot's number (current_boot, next_boot_number).
    esp_boots: list[EspBoot] = field(default_factory=list)
    seq_lost_count: int = 0
    seq_lost_spans: list[tuple[Optional[int], int, int]] = field(default_factory=list)  # (boot, first, last)
    # The phases the recorder recovered from the BMS lines (their step message never arrived):
    # (step, seq of the line that showed it or None). The verdict cannot rest on their boundaries.
    recovered_steps: list[tuple[int, Optional[int]]] = field(default_factory=list)
    # The verdict given after step 5 (grading.grade): the first one recorded stays, so a
    # later edit of grading.json never changes a test already concluded.
    verdict: Optional[Verdict] = None

    # The latest events, to fold a line written twice (same time to the ms, same fields) once.
    _recent_events: deque[Event] = field(default_factory=lambda: deque(maxlen=32), repr=False,
                                                  compare=False)

    @property
    def finished(self) -> bool:
        """True once step 5 is in the journal."""
        return self.status == TEST_FINISHED

    @property
    def current_boot(self) -> Optional[int]:
        """The number of the ESP's latest boot the journal names (None before any)."""
        return len(self.esp_boots) - 1 if self.esp_boots else None

    @property
    def next_boot_number(self) -> int:
        """The number the ESP's next boot takes: one past every boot the journal names, even unreadable ones."""
        return len(self.esp_boots)

    def esp_boot(self, number: Optional[int]) -> Optional[EspBoot]:
        """Boot `number`, holes added up to it; None when `number` is not a boot number within reach."""
        if number is None or not _is_count(number) or number >= len(self.esp_boots) + ESP_BOOT_NUMBER_REACH:
            return None
        while len(self.esp_boots) <= number:
            self.esp_boots.append(EspBoot(None, None, None))
        return self.esp_boots[number]

    def apply(self, event: Event) -> None:
        """Fold one journal event (pure; unknown events and malformed values change nothing)."""
        at = event.t
        if isinstance(event, (RiEvent, SeqLostEvent)):  # the events that count: a copy of a line must not count twice
            if at and event in self._recent_events:
                return
            self._recent_events.append(event)
        match event:
            case StartEvent():
                self._start(event.serial, event.banc, event.first_handle, at)
            case MigrateEvent():
                self._start(event.serial, event.banc, event.first_handle, at)
                self._migrate(event, at)
            case StepEvent():
                self._step(event, at)
            case RiEvent():
                if event.values is not None and not self.finished:
                    self.recent_ri = [*self.recent_ri[-(protocol.RECEIVE_MAXIMUM - 1):], event.values]
                    self._fold_ri(event.values)
            case StopEvent():
                if not self.finished:
                    self.status = TEST_STOPPED
            case ResumeEvent():
                if not self.finished:
                    self.status = TEST_RUNNING
            case AbandonEvent():
                if not self.finished:
                    self.status = TEST_ABANDONED
            case EspBootEvent():
                seq, uptime, row_t = event.seq, event.uptime_ms, event.row_t
                if seq is not None and seq >= 0 and uptime is not None and uptime >= 0 and row_t is not None:
                    # Keyed by its own number: an unreadable boot line before it shifts nothing.
                    boot = self.esp_boot(event.boot if _is_count(event.boot) else len(self.esp_boots))
                    if boot is not None and not boot.located:  # a copy of a boot line changes nothing
                        boot.row_t, boot.seq, boot.uptime_ms = row_t, seq, uptime
            case EspClockEvent():
                clocked = self.esp_boot(event.boot)
                if clocked is not None and event.offset_ms is not None and at:
                    clocked.clock(at, event.offset_ms)
            case SeqLostEvent():
                self.seq_lost_count += _count(event.count)
                self.esp_boot(event.boot)  # a boot whose line is unreadable still takes its number
                if event.first is not None and event.last is not None:
                    self.seq_lost_spans.append((event.boot, event.first, event.last))
            case VerdictEvent():
                if self.finished and self.verdict is None and event.verdict is not None:
                    self.verdict = event.verdict
            case ClockStepEvent() | AlertEvent() | UnknownEvent():
                pass  # nothing of the test's state (the kiosk replays alerts: kiosk.messages.replay_alerts)
            case _:
                assert_never(event)
        if at:
            self.last_update = at

    def _start(self, serial: Optional[str], banc: Optional[str], first_handle: Optional[str], at: Optional[str]) -> None:
        """Fold who the test is for (a start or a migration); the first event's time is its start if none is said."""
        self.serial = serial if serial is not None else self.serial
        self.banc = banc if banc is not None else self.banc
        self.first_handle = first_handle if first_handle is not None else self.first_handle
        if self.first_handle is None and at:
            self.first_handle = at

    def _migrate(self, event: MigrateEvent, at: Optional[str]) -> None:
        """Fold the phase, end and Ri means an earlier version's config.json held."""
        step = event.step
        if step is not None and step in protocol.PHASES:
            self.step = step
            if step == protocol.STEP_FINISHED:
                self.status = TEST_FINISHED
                self.end_time = event.end_time if event.end_time is not None else at
        self.ri_temperature_c = _number(event.ri_temperature_c)
        migrated = event.ri or {}
        for key in protocol.RI_KEYS:
            pair = migrated.get(key)
            mean = None if pair is None else _number(pair[0])
            if pair is not None and mean is not None and ri_plausible(mean):
                self.ri_means[key], self.ri_counts[key] = mean, max(1, pair[1])
                self.ri_pulses[key] = [(mean, self.ri_temperature_c, self.ri_counts[key])]

    def _step(self, event: StepEvent, at: Optional[str]) -> None:
        """Fold a phase change (none after step 5)."""
        step = event.step
        if step is None or step not in protocol.PHASES or self.finished:
            return
        self.step = step
        if step == protocol.STEP_FINISHED:
            self.status, self.end_time = TEST_FINISHED, at
        else:
            self.status = TEST_RUNNING
        if event.recovered == STEP_RECOVERED_FROM_LINES:
            self.recovered_steps.append((step, event.seq if _is_count(event.seq) else None))
        else:
            # Its message came after all (later than the lines that showed the phase).
            self.recovered_steps = [(s, q) for s, q in self.recovered_steps if s != step]

    def _fold_ri(self, values: Mapping[str, float]) -> None:
        """Fold one Ri result's plausible values into the means, each with its pulse's temperature."""
        accepted = {key: value for key in protocol.RI_KEYS
                    if (value := _number(values.get(key))) is not None and ri_plausible(value)}
        if not accepted:
            return  # nothing a pack can give (a journal written before the recorder refused it): as if never sent
        temperature = _number(values.get("temperature_c"))
        if temperature is not None:
            self.ri_temperature_c = temperature
        for key, value in accepted.items():
            self.ri_means[key], self.ri_counts[key] = running_mean(self.ri_means[key], self.ri_counts[key], value)
            self.ri_pulses[key].append((value, self.ri_temperature_c, 1))


def is_verdict(value: object) -> bool:
    """True when `value` has the shape of a verdict object (grade, checks, reason)."""
    return (isinstance(value, dict) and isinstance(value.get("grade"), str) and isinstance(value.get("checks"), list)
            and isinstance(value.get("reason"), str))


# --------------------------------------------------------------------------- the verdict, typed


def _as_number(value: object) -> Optional[float]:
    """A finite number as the file holds it (an int stays an int, so that writing it back gives the same bytes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        finite = math.isfinite(value)
    except OverflowError:  # a JSON integer no float holds: damage, not a measurement
        return None
    return value if finite else None


def _as_text(value: object) -> Optional[str]:
    return value if isinstance(value, str) else None


def _as_count(value: object) -> Optional[int]:
    return value if _is_count(value) else None


@dataclass(frozen=True)
class Check:
    """One check of a verdict (docs/fichiers.md §8): its name, the value as shown, the limit, passed or not."""

    name: str
    value: Optional[float]  # None: never measured (the check cannot pass)
    limit: Optional[float]
    ok: bool
    uncertain: bool = False  # measured on data that cannot support it (protocol v3)

    @classmethod
    def from_json(cls, data: object) -> Optional[Check]:
        """The check a journal or config.json object holds; None when it is not an object (tolerant of bad values)."""
        if not isinstance(data, dict):
            return None
        return cls(name=str(data.get("name", "")), value=_as_number(data.get("value")),
                   limit=_as_number(data.get("limit")), ok=bool(data.get("ok")), uncertain=bool(data.get("uncertain")))

    def to_json(self) -> dict[str, object]:
        """The check as the journal and config.json write it (`uncertain` only when true)."""
        out: dict[str, object] = {"name": self.name, "value": self.value, "limit": self.limit, "ok": self.ok}
        if self.uncertain:
            out["uncertain"] = True
        return out


@dataclass(frozen=True)
class Verdict:
    """The verdict of a finished test (docs/fichiers.md §8), as the journal's `verdict` event and config.json hold it."""

    grade: str
    soh_pct: Optional[float]
    model: Optional[str]
    grading_version: Optional[str]
    checks: tuple[Check, ...]
    reason: str

    @classmethod
    def from_json(cls, data: object) -> Optional[Verdict]:
        """The verdict an object holds; None when it lacks a verdict's shape (is_verdict), as every reader took it."""
        if not isinstance(data, dict) or not is_verdict(data):
            return None
        checks = tuple(check for check in map(Check.from_json, data["checks"]) if check is not None)
        return cls(grade=data["grade"], soh_pct=_as_number(data.get("soh_pct")), model=_as_text(data.get("model")),
                   grading_version=_as_text(data.get("grading_version")), checks=checks, reason=data["reason"])

    def to_json(self) -> dict[str, object]:
        """The verdict object as the journal and config.json write it (keys in the documented order)."""
        return {"grade": self.grade, "soh_pct": self.soh_pct, "model": self.model,
                "grading_version": self.grading_version, "checks": [check.to_json() for check in self.checks],
                "reason": self.reason}

    def check(self, name: str) -> Optional[Check]:
        """The check called `name`, or None."""
        return next((check for check in self.checks if check.name == name), None)


def fold_events(events: Iterable[Event]) -> RecordState:
    """The state of a test after its journal's events, in order (pure)."""
    state = RecordState()
    for event in events:
        state.apply(event)
    return state


def migration_event(config: TestSummary, data_step: Optional[int], at: datetime, serial: Optional[str],
                    banc: Optional[str], first_handle: Optional[str] = None) -> MigrateEvent:
    """The EVENT_MIGRATE that starts the journal of an earlier version's folder, written at `at` (pure).

    The phase is the highest that config.json or data.csv's step column shows: neither can
    claim a phase the test did not reach, and a damaged config.json must not rewind it.
    `first_handle` is taken when config.json has none.
    """
    steps = [s for s in (config.current_step, data_step) if s in protocol.PHASES]
    ri: dict[str, tuple[float, int]] = {}
    for key in protocol.RI_KEYS:
        mean = _number(config.ri_averages.get(key))
        if mean is not None:
            ri[key] = (mean, max(1, config.ri_counts.get(key, 0)))
    return MigrateEvent(event_time(at), serial, banc, max(steps) if steps else 1,
                        config.first_handle if config.first_handle is not None else first_handle,
                        config.end_time, ri or None, config.ri_temperature_c,
                        first_handle_defaulted=config.first_handle is None)


def step_to_restore(state: RecordState, config_step: object, data_step: Optional[int]) -> Optional[int]:
    """The phase a journal that lost lines must be brought back to, or None (pure).

    Steps are journaled (fsynced) before anything of their phase is written, so a config.json
    or a data.csv row showing a later phase than the journal means the journal lost that
    line: the test must not go back to an earlier phase (docs/fichiers.md).
    """
    if state.finished:
        return None
    steps = [s for s in (config_step, data_step) if s in protocol.PHASES]
    highest = max(steps, default=None)
    return highest if highest is not None and highest > state.step else None


# --------------------------------------------------------------------------- config.json, the summary

RiPulse = tuple[float, Optional[float], int]
"""One entry of `ri_pulses`: a value (ohm), the temperature of its pulse (°C, None when unknown), how many it weighs."""


def _pulses_of(entries: object) -> Optional[tuple[RiPulse, ...]]:
    """A key's `ri_pulses` entries, or None when they are missing or are not pulses (edited by hand, damaged)."""
    if not isinstance(entries, list):
        return None
    pulses: list[RiPulse] = []
    for entry in entries:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            return None
        ohm, temperature, weight = _as_number(entry[0]), _as_number(entry[1]), entry[2]
        if ohm is None or (entry[1] is not None and temperature is None) or not _is_count(weight) or weight < 1:
            return None
        pulses.append((ohm, temperature, weight))
    return tuple(pulses)


def _no_pulses() -> dict[str, Optional[tuple[RiPulse, ...]]]:
    return dict.fromkeys(protocol.RI_KEYS)


@dataclass(frozen=True)
class TestSummary:
    """config.json, typed (docs/fichiers.md §5): `from_json` reads any file, `to_json` writes today's.

    `from_json` is as tolerant as the readers were: a missing or malformed value is None (a
    count: 0), never an error, so a damaged or partial file loads what it can. Numbers keep the
    type the file gave them (70 stays 70) so that `to_json(from_json(x))` gives `x` back.
    """

    __test__ = False  # a record, not a pytest class (its name starts with "Test")

    battery_serial: Optional[str] = None
    banc: Optional[str] = None
    current_step: Optional[int] = None
    first_handle: Optional[str] = None
    timestamp_last_update: Optional[str] = None
    status: Optional[str] = None  # TEST_RUNNING...; None in a config.json of the seed (it had none)
    end_time: Optional[str] = None
    capacity_ah: Optional[float] = None
    capacity_wh: Optional[float] = None
    # Per Ri/diffusion key (protocol.RI_KEYS): the raw mean (`<key>_average`), its count (`<key>_count`),
    # and the pulses it is made of (`ri_pulses`; None when the file holds none that are readable).
    ri_averages: Mapping[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(protocol.RI_KEYS))
    ri_counts: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(protocol.RI_KEYS, 0))
    ri_temperature_c: Optional[float] = None
    ri_pulses: Mapping[str, Optional[tuple[RiPulse, ...]]] = field(default_factory=_no_pulses)
    # The counters (COUNTER_KEYS); None when the file has none (the seed had none: unknown, not 0).
    rows_count: Optional[int] = None
    rejected_count: Optional[int] = None
    duplicate_count: Optional[int] = None
    seq_gap_count: Optional[int] = None
    seq_restart_count: Optional[int] = None
    seq_lost_count: Optional[int] = None
    software_version: Optional[str] = None
    verdict: Optional[Verdict] = None

    @classmethod
    def from_json(cls, data: object) -> TestSummary:
        """The summary a config.json object holds (anything else: an empty summary)."""
        if not isinstance(data, dict):
            return cls()
        table = data.get(RI_PULSES_KEY)
        return cls(
            battery_serial=_as_text(data.get("battery_serial")),
            banc=_as_text(data.get("banc")),
            current_step=_as_count(data.get("current_step")),
            first_handle=_as_text(data.get("first_handle")),
            timestamp_last_update=_as_text(data.get("timestamp_last_update")),
            status=_as_text(data.get("status")),
            end_time=_as_text(data.get("end_time")),
            capacity_ah=_as_number(data.get("capacity_ah")),
            capacity_wh=_as_number(data.get("capacity_wh")),
            ri_averages={key: _as_number(data.get(f"{key}_average")) for key in protocol.RI_KEYS},
            ri_counts={key: _count(data.get(f"{key}_count")) for key in protocol.RI_KEYS},
            ri_temperature_c=_as_number(data.get("ri_temperature_c")),
            ri_pulses={key: _pulses_of(table.get(key)) if isinstance(table, dict) else None
                       for key in protocol.RI_KEYS},
            rows_count=_as_count(data.get("rows_count")),
            rejected_count=_as_count(data.get("rejected_count")),
            duplicate_count=_as_count(data.get("duplicate_count")),
            seq_gap_count=_as_count(data.get("seq_gap_count")),
            seq_restart_count=_as_count(data.get("seq_restart_count")),
            seq_lost_count=_as_count(data.get("seq_lost_count")),
            software_version=_as_text(data.get("software_version")),
            verdict=Verdict.from_json(data.get("verdict")),
        )

    def to_json(self) -> dict[str, Any]:
        """config.json as banc.py writes it: the seed's keys first, then ours (docs/fichiers.md §5)."""
        out: dict[str, Any] = {
            "battery_serial": self.battery_serial,
            "banc": self.banc,
            "current_step": self.current_step,
            "first_handle": self.first_handle,
            "timestamp_last_update": self.timestamp_last_update,
            "status": self.status,
            "end_time": self.end_time,
            "capacity_ah": self.capacity_ah,
            "capacity_wh": self.capacity_wh,
        }
        for key in protocol.RI_KEYS:
            out[f"{key}_average"] = self.ri_averages.get(key)
            out[f"{key}_count"] = self.ri_counts.get(key, 0)
        out["ri_temperature_c"] = self.ri_temperature_c
        out[RI_PULSES_KEY] = {key: [list(pulse) for pulse in self.ri_pulses.get(key) or ()] for key in protocol.RI_KEYS}
        out.update({key: getattr(self, key) for key in COUNTER_KEYS})
        out["software_version"] = self.software_version
        out["verdict"] = None if self.verdict is None else self.verdict.to_json()
        return out

    @property
    def finished(self) -> bool:
        """True when the summary says the test reached step 5."""
        return self.status == TEST_FINISHED or self.current_step == protocol.STEP_FINISHED

    @property
    def abandoned(self) -> bool:
        """True when the operator reset the bench of this unfinished test."""
        return self.status == TEST_ABANDONED

    @property
    def last_activity(self) -> Optional[datetime]:
        """End time of a finished test, else its last update, else its start (None when none is readable)."""
        for text in (self.end_time, self.timestamp_last_update, self.first_handle):
            moment = parse_time(text)
            if moment is not None:
                return moment
        return None

    @property
    def counters(self) -> dict[str, int]:
        """The counters (COUNTER_KEYS), a missing or malformed one 0."""
        return {key: getattr(self, key) or 0 for key in COUNTER_KEYS}


def new_summary(banc: str, serial: str, first_handle: str) -> dict[str, Any]:
    """config.json of a test that starts now (the seed's keys first)."""
    return TestSummary(battery_serial=serial, banc=banc, current_step=1, first_handle=first_handle,
                       timestamp_last_update=first_handle, status=TEST_RUNNING,
                       software_version=SOFTWARE_VERSION).to_json()


def apply_state(summary: dict[str, Any], state: RecordState) -> dict[str, Any]:
    """The summary with what the journal says written over it (the journal wins; pure)."""
    out = dict(summary)
    if state.serial:
        out["battery_serial"] = state.serial
    if state.banc:
        out["banc"] = state.banc
    if state.first_handle:
        out["first_handle"] = state.first_handle
    out["current_step"] = state.step
    out["status"] = state.status
    out["end_time"] = state.end_time
    for key in protocol.RI_KEYS:
        out[f"{key}_average"] = state.ri_means[key]
        out[f"{key}_count"] = state.ri_counts[key]
    out["ri_temperature_c"] = state.ri_temperature_c
    out[RI_PULSES_KEY] = {key: [list(pulse) for pulse in state.ri_pulses[key]] for key in protocol.RI_KEYS}
    out["seq_lost_count"] = max(state.seq_lost_count, _count(out.get("seq_lost_count")))
    if state.verdict is not None:
        out["verdict"] = state.verdict.to_json()
    elif not state.finished:
        out["verdict"] = None  # only a finished test has one
    event_time = parse_time(state.last_update)
    if event_time is not None:
        summary_time = parse_time(out.get("timestamp_last_update"))
        if summary_time is None or summary_time < event_time:
            out["timestamp_last_update"] = iso(event_time)
    if state.end_time and parse_time(state.end_time):
        out["end_time"] = iso(parse_time(state.end_time))  # type: ignore[arg-type]
    return out


def set_summary_measures(summary: dict[str, Any], capacity_ah: float, capacity_wh: float, now: datetime) -> None:
    """Write the ESP's capacity and energy, and the time of that update, into a config.json object."""
    summary["capacity_ah"] = round(float(capacity_ah), 4)
    summary["capacity_wh"] = round(float(capacity_wh), 3)
    summary["timestamp_last_update"] = iso(now)


def mean_at_25c(pulses: Iterable[tuple[float, Optional[float], int]],
                correct: Callable[[float, Optional[float]], float]) -> Optional[float]:
    """The mean of the values each brought to 25 °C with its own temperature (weighted by count; None when empty).

    `correct(ohm, temperature_c)` is environment.correct_to_25c (unchanged for an unknown temperature).
    """
    total = weight = 0.0
    for ohm, temperature, count in pulses:
        total += count * correct(ohm, temperature)
        weight += count
    return total / weight if weight > 0 else None


def summary_pulses(summary: TestSummary, key: str) -> Optional[tuple[RiPulse, ...]]:
    """The pulses `key`'s mean in `summary` is made of, or None when the summary does not hold them.

    None for a config.json of an earlier version (no `ri_pulses`), or one whose `ri_pulses` are not
    what its `<key>_average` and `<key>_count` were folded from (edited by hand): that mean is then
    all there is.
    """
    pulses = summary.ri_pulses.get(key)
    mean = summary.ri_averages.get(key)
    if not pulses or mean is None:
        return None
    weights = sum(weight for _, _, weight in pulses)
    folded = sum(ohm * weight for ohm, _, weight in pulses) / weights
    if weights != summary.ri_counts.get(key) or not math.isclose(folded, mean, rel_tol=1e-9):
        return None
    return pulses


def ri_at_25c(summary: TestSummary, key: str,
              correct: Callable[[float, Optional[float]], float]) -> Optional[float]:
    """`key`'s mean in `summary` at 25 °C: each pulse corrected with its own temperature, then averaged.

    The one reading of the Ri/diffusion figures at 25 °C (verdict, report, certificate, kiosk,
    history). A summary without its pulses (`summary_pulses`) has its mean corrected with
    `ri_temperature_c`, as the earlier version did. Errors of `correct` (a broken
    temperature_coefficients.json) are raised.
    """
    mean = _number(summary.ri_averages.get(key))
    if mean is None:
        return None
    pulses = summary_pulses(summary, key)
    if pulses is None:
        return correct(mean, _number(summary.ri_temperature_c))
    return mean_at_25c(pulses, correct)


def ri_temperature_range(summary: TestSummary) -> Optional[tuple[float, float]]:
    """The lowest and highest temperature of the pulses the summary's means are made of (None when unknown)."""
    temperatures = [temperature for key in protocol.RI_KEYS for _, temperature, _ in summary_pulses(summary, key) or ()
                    if temperature is not None]
    if not temperatures:
        temperature = _number(summary.ri_temperature_c)
        return None if temperature is None else (temperature, temperature)
    return min(temperatures), max(temperatures)


def read_summary_file(folder: Path) -> Optional[dict[str, Any]]:
    """config.json as it is on disk, or None when missing or unreadable."""
    try:
        data = storage.read_json(Path(folder) / TEST_CONFIG_FILE)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def corrected_summary_file(folder: Path) -> Optional[dict[str, Any]]:
    """config.json corrected by the journal, as the file banc.py would write now (None without either).

    Without a journal (a folder of the earlier version) config.json is taken as it is.
    """
    summary = read_summary_file(folder)
    events, _ = read_events(folder)
    if not events:
        return summary
    state = fold_events(events)
    # A journal without its start (an older folder that was only marked abandoned) describes
    # the test its config.json names.
    matches = state.serial is None or same_serial((summary or {}).get("battery_serial"), state.serial)
    base = summary if summary is not None and matches else None
    if base is None:
        base = new_summary(state.banc or "", state.serial or "", state.first_handle or "")
    return apply_state(base, state)


def load_summary(folder: Path) -> Optional[TestSummary]:
    """A test's summary for readers (kiosk, report, history): config.json corrected by the journal, typed."""
    summary = corrected_summary_file(folder)
    return None if summary is None else TestSummary.from_json(summary)


def summary_finished(summary: Optional[TestSummary]) -> bool:
    """True when a summary says the test reached step 5."""
    return summary is not None and summary.finished


def summary_abandoned(summary: Optional[TestSummary]) -> bool:
    """True when the operator reset the bench of this unfinished test."""
    return summary is not None and summary.abandoned


def rebuild_summary(
    previous: Optional[dict[str, Any]], state: RecordState, counts: DataCounts, rejected_rows: int
) -> dict[str, Any]:
    """config.json rebuilt from the journal and the recount of the CSV files (pure).

    `previous` is the old config.json when readable: only what nothing else holds comes from
    it (the number of QoS duplicates dropped, which no file records row by row).
    """
    summary = new_summary(state.banc or "", state.serial or "", state.first_handle or "")
    if previous is not None:
        summary["duplicate_count"] = _count(previous.get("duplicate_count"))
        if isinstance(previous.get("timestamp_last_update"), str):
            summary["timestamp_last_update"] = previous["timestamp_last_update"]
    summary = apply_state(summary, state)
    capacity_ah, energy_wh = counts.measured_capacity(state.step)
    if capacity_ah is not None and energy_wh is not None:
        summary["capacity_ah"] = round(capacity_ah, 4)
        summary["capacity_wh"] = round(energy_wh, 3)
    elif previous is not None:  # no row to recount from: keep what the summary knew
        summary["capacity_ah"] = _number(previous.get("capacity_ah"))
        summary["capacity_wh"] = _number(previous.get("capacity_wh"))
    summary["rows_count"] = counts.rows
    summary["seq_gap_count"] = counts.seq_gaps
    summary["seq_restart_count"] = counts.seq_restarts
    summary["seq_lost_count"] = state.seq_lost_count
    summary["rejected_count"] = rejected_rows
    row_time = parse_time(counts.last_time)
    summary_time = parse_time(summary.get("timestamp_last_update"))
    if row_time is not None and (summary_time is None or row_time > summary_time):
        summary["timestamp_last_update"] = iso(row_time)
    return summary


# --------------------------------------------------------------------------- test folders


@dataclass(frozen=True)
class FolderName:
    """The parts of a test folder's name DDMMYYYY-SERIAL[-K]."""

    serial: str
    day: date
    index: int


def parse_folder_name(name: str) -> Optional[FolderName]:
    """Parse a test folder name; None when it is not one."""
    match = FOLDER_RE.match(name)
    if not match:
        return None
    try:
        day = date(int(match.group(3)), int(match.group(2)), int(match.group(1)))
    except ValueError:
        return None
    return FolderName(match.group(4), day, int(match.group(5) or 1))


def folder_name(serial: str, day: date, index: int = 1) -> str:
    """Folder name DDMMYYYY-SERIAL (with -K for the K-th test of the same battery the same day)."""
    base = f"{day:%d%m%Y}-{serial}"
    return base if index == 1 else f"{base}-{index}"


# --------------------------------------------------------------------------- bancs_config.json


# The keys of one bench's entry on disk (docs/fichiers.md §6): spelled here only.
_BENCH_NAME, _BENCH_STATUS, _BENCH_SERIAL, _BENCH_STEP = "name", "status", "serial-pending", "current_step"


@dataclass(frozen=True)
class BenchEntry:
    """One bench of bancs_config.json: free, or occupied by a battery at a phase."""

    name: str  # as on disk ("Banc3"); `banc` is the canonical id
    status: str = STATUS_AVAILABLE
    serial_pending: Optional[str] = None
    current_step: Optional[int] = None

    @property
    def banc(self) -> str:
        """Canonical bench id ("banc3"); ValueError for a name that is no bench."""
        return protocol.banc_id(self.name)

    @property
    def occupied(self) -> bool:
        """True when a battery holds the bench."""
        return self.status == STATUS_OCCUPIED

    def to_json(self) -> dict[str, object]:
        """The entry as bancs_config.json holds it (the seed's keys)."""
        return {_BENCH_NAME: self.name, _BENCH_STATUS: self.status, _BENCH_SERIAL: self.serial_pending,
                _BENCH_STEP: self.current_step}

    @classmethod
    def from_json(cls, data: object) -> BenchEntry:
        """The entry of a bancs_config.json dict; ValueError when it has no name or an unknown status."""
        if not isinstance(data, dict) or not isinstance(data.get(_BENCH_NAME), str):
            raise ValueError(f"bench entry without a name: {data!r}")
        if data.get(_BENCH_STATUS) not in (STATUS_AVAILABLE, STATUS_OCCUPIED):
            raise ValueError(f"bench entry with an unknown status: {data!r}")
        serial, step = data.get(_BENCH_SERIAL), data.get(_BENCH_STEP)
        # A value of the wrong type (a hand edit) reads as unknown, as every reader treated it.
        return cls(data[_BENCH_NAME], data[_BENCH_STATUS], serial if isinstance(serial, str) else None,
                   step if isinstance(step, int) and not isinstance(step, bool) else None)


def bench_entry(number: int, status: str = STATUS_AVAILABLE, serial: Optional[str] = None,
                step: Optional[int] = None) -> BenchEntry:
    """One bench of bancs_config.json, in the seed's shape (serial and step only while occupied)."""
    occupied = status == STATUS_OCCUPIED
    return BenchEntry(f"Banc{number}", status, serial if occupied else None, step if occupied else None)


@dataclass(frozen=True)
class BenchesState:
    """bancs_config.json: every bench's entry (other top-level keys kept as they were)."""

    bancs: tuple[BenchEntry, ...]
    extra: tuple[tuple[str, object], ...] = ()

    def to_json(self) -> dict[str, object]:
        """The file's dict: {"bancs": [entry, ...]} (and the keys it held besides)."""
        return {**dict(self.extra), "bancs": [entry.to_json() for entry in self.bancs]}

    @classmethod
    def from_json(cls, data: object) -> BenchesState:
        """The state a bancs_config.json dict holds; ValueError when it has not the file's shape."""
        if not isinstance(data, dict) or not isinstance(data.get("bancs"), list):
            raise ValueError("bancs_config without a list of benches")
        return cls(tuple(BenchEntry.from_json(entry) for entry in data["bancs"]),
                   tuple((key, value) for key, value in data.items() if key != "bancs"))

    def entry(self, banc: Union[int, str]) -> BenchEntry:
        """The entry of one bench; ValueError when the file has none."""
        number = protocol.banc_number(banc)
        for entry in self.bancs:
            if protocol.banc_number(entry.name) == number:
                return entry
        raise ValueError(f"no such bench: {banc!r}")

    def replaced(self, new: BenchEntry) -> BenchesState:
        """This state with the entry of `new`'s bench replaced by `new`."""
        number = protocol.banc_number(new.name)
        return dataclasses.replace(self, bancs=tuple(new if protocol.banc_number(e.name) == number else e
                                                     for e in self.bancs))

    def banc_for_serial(self, serial: str) -> Optional[str]:
        """Bench id ("bancN") whose battery is `serial` (any case), or None."""
        for entry in self.bancs:
            if entry.occupied and same_serial(entry.serial_pending, serial):
                return entry.banc
        return None


def valid_bancs_config(data: object) -> bool:
    """True when `data` has the shape of bancs_config.json."""
    try:
        BenchesState.from_json(data)
    except ValueError:
        return False
    return True


def rebuild_bancs_config(data_dir: Path, num_bancs: int) -> BenchesState:
    """bancs_config.json rebuilt from the test folders: a bench whose latest test is unfinished holds it."""
    entries = {n: bench_entry(n) for n in range(1, num_bancs + 1)}
    for banc_dir in sorted(Path(data_dir).glob("banc*")):
        if not BANC_DIR_RE.match(banc_dir.name) or not banc_dir.is_dir():
            continue
        number = int(banc_dir.name[4:])
        latest: Optional[tuple[tuple[date, int, float], str, TestSummary]] = None
        for folder in banc_dir.iterdir():
            name = parse_folder_name(folder.name)
            if name is None or not folder.is_dir():
                continue
            summary = load_summary(folder) or TestSummary()
            first = parse_time(summary.first_handle)
            key = (name.day, name.index, first.timestamp() if first else 0.0)
            if latest is None or key > latest[0]:
                latest = (key, name.serial, summary)
        if latest is None:
            continue
        _, folder_serial, summary = latest
        if summary.finished or summary.abandoned:
            continue
        step = summary.current_step if summary.current_step in protocol.PHASES else 1
        serial = summary.battery_serial if summary.battery_serial is not None else folder_serial
        entries[number] = bench_entry(number, STATUS_OCCUPIED, serial, step)
    return BenchesState(tuple(entries[n] for n in sorted(entries)))
