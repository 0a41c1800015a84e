"""recorder.py — what one running test records, decided without any I/O (banc.py's core).

`RecorderCore` is told what happens, each time with `now` (an `Instant`): an MQTT message
(payload and DUP flag), a tick, the outcome of a write. It answers with the effects to carry
out, in order: append lines to data.csv, rejected.csv or the journal (events.jsonl, fsynced),
retry the lines waiting in memory, fsync the CSV files, save the config.json view, publish
an alert on bancN/security, log. It holds no file, reads no clock and no setting (they are
passed in as plain values): the same pattern as battery_model.BenchFirmware, which returns
the events to publish.

banc.Recorder, the executor, carries the effects out and reports what went wrong or came
right (`Refused`, `CaughtUp`, `SummarySaved`, `SummaryRefused`, `FilesRestored`,
`RestoreFailed`) through `RecorderCore.report`, which answers with more effects. A write that
goes through reports nothing. `blocked` is True from a refused write until its file has
caught up (and while a deleted file is not back): banc.py holds the MQTT acknowledgements
meanwhile, so the broker keeps those messages.
"""

from __future__ import annotations

import collections
import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Union

from banclfp.recording import esp_clock, record
from banclfp.wire import protocol

# config.json holds a summary (capacity, energy, counters) that data.csv also holds row by
# row, and banc.py recomputes it from data.csv when it resumes. Rewriting it (atomically,
# with two fsyncs, ~0.8 kB) often would write more than the rows themselves: it is saved
# every 5 minutes, and at once after a journal event (step, Ri result, stop) and at exit.
SUMMARY_SAVE_INTERVAL_S = 300.0


def sync_due(last_sync_s: float, now_s: float, interval_s: float) -> bool:
    """True when the monotonic clock crossed a multiple of `interval_s` since the last fsync (0: every tick).

    The fsyncs fall on a grid of the monotonic clock, which every process of the Pi shares,
    rather than `interval_s` after each process's own last one: the benches' banc.py then
    fsync in the same instant and the file system writes one journal commit for all of them
    instead of one each (bench/RESULTS.md, issue 26). A row still waits at most `interval_s`
    (plus a tick) for its fsync.
    """
    if interval_s <= 0:
        return True
    return math.floor(now_s / interval_s) > math.floor(last_sync_s / interval_s)
WRITE_RETRY_INTERVAL_S = 1.0
REJECT_PAYLOAD_MAX_CHARS = 200
# A redelivered (DUP) message whose text is not remembered and whose seq is at most this far
# behind the last accepted one was written before; further back, or without DUP, it is an
# ESP reboot.
SEQ_REDELIVERY_WINDOW = record.RECENT_LINES_KEPT
REJECT_LOG_PER_MINUTE = 10
# docs/protocole.md §6: a gap is asked for once, then again at most every REPLAY_RETRY_S while lines
# are missing, for REPLAY_GIVE_UP_S; what has not come back by then is lost.
REPLAY_RETRY_S = 60.0
REPLAY_GIVE_UP_S = 600.0
# The ESP's clock offset goes into the journal (fsynced) when first estimated, then only when
# it moved by CLOCK_SAVE_MIN_MS, at most every CLOCK_SAVE_INTERVAL_S: enough for a restarted
# banc.py to stamp a backlog within that, without a journal line a minute.
CLOCK_SAVE_MIN_MS = 100
CLOCK_SAVE_INTERVAL_S = 600.0
# Plausibility of a BMS line against the previous one of the same ESP boot (docs/protocole.md §8): its
# `seq` counts lines and its `uptime_ms` counts time, one line per period (1 s by the firmware,
# whatever the simulator's speed), so each field checks the other. Lines never come faster than
# LINES_FASTEST of the period; the ESP's clock may run ahead of its lines (a loop held up by a
# reconnection, a BMS that did not answer) by STALL_MAX_MS, never by years.
ESP_PERIOD_MS = 1000.0
ESP_PERIOD_MIN_MS = 1.0  # a bench publisher runs at 50 lines/s; the estimate follows the data
PERIOD_SAMPLES = 15
LINES_FASTEST = 0.75
# The longest a line may take after the previous one: a v3 firmware sends one every 10 s while
# finished or stopped (battery_model.REST_LINE_PERIOD_S), with margin; plus a stall, which the
# firmware bounds (a BMS silent for 10 s stops the phase).
LINE_SLOWEST_MS = 15_000.0
STALL_MAX_MS = 15_000.0
# A line whose seq went back while its uptime did not is a new boot's only within the boot's first
# minute (a reboot loop, each boot sending a line); later it is a garbled seq. A boot whose first
# line comes later (the ESP waited for a command) is taken after REANCHOR_LINES agreeing lines.
BOOT_YOUNG_MS = 60_000.0
# Lines rejected as implausible that agree with each other, this many in a row: the reference
# they were judged against was wrong (or the ESP really jumped); they are taken after all.
REANCHOR_LINES = 3
# 10-field lines (no uptime): a seq may jump ahead by at most this many lines plus twice what the
# arrival rate allows in the time elapsed.
SEQ_JUMP_SLACK = 10
# A phase change seen in the lines (field 12) counts once this many consecutive lines agree: one
# garbled field never moves the test.
PHASE_CONFIRM_LINES = 2
# After the backlog, a resumed test's banc.py waits this long (3 periods) for a live line that tells
# the ESP's phase before it announces the step: an ESP already further than the journal must never
# be sent an older phase. A new test has nothing to wait for: it starts at phase 1.
ANNOUNCE_WAIT_S = 3.0
# A later phase seen in one line is waited for up to two rest periods (a finished ESP sends a line
# every 10 s), then the test's own phase is announced (the firmware never goes back on it).
ANNOUNCE_CONFIRM_WAIT_S = 25.0
# Lines of a stopped ESP (field 12 = 9) this long after the announcement mean it stopped.
STOP_GRACE_S = 15.0
# An ESP that reboots this often within BOOT_BURST_S is reported (each boot is journaled).
BOOT_BURST_COUNT = 3
BOOT_BURST_S = 600.0

# The files effects name, in the order their retries are tried.
JOURNAL = record.EVENTS_FILE
DATA = record.DATA_CSV_FILE
REJECTED = record.REJECTED_CSV_FILE
FILES: tuple[str, ...] = (JOURNAL, DATA, REJECTED)


# =========================================================================== pure helpers

SEQ_FIRST = "first"
SEQ_NEXT = "next"
SEQ_GAP = "gap"
SEQ_RESTART = "restart"
SEQ_DUPLICATE = "duplicate"

# What EspTimeline.judge says of a line against the previous accepted one.
TL_NONE = "none"  # nothing to judge against (first line, a 10-field line without a reference)
TL_FORWARD = "forward"  # later in the same boot
TL_SAME = "same"  # the same seq and uptime: a copy
TL_BACK = "back"  # seq and uptime both earlier: an older line of this boot, or a new boot
TL_BOOT = "boot"  # a new ESP boot
TL_IMPLAUSIBLE = "implausible"
# Field 12 of an ESP that runs no phase: idle, finished, stopped.
REST_STEPS: frozenset[int] = frozenset((protocol.ESP_STEP_IDLE, protocol.STEP_FINISHED, protocol.STEP_STOP))


@dataclass(frozen=True)
class HeldLine:
    """A live line rejected as implausible, kept in case the lines after it prove the reference wrong."""

    payload: bytes
    line: protocol.BmsLine
    redelivered: bool


class EspTimeline:
    """Whether a BMS line is one the ESP could have sent after the previous accepted one (docs/protocole.md §8).

    Pure. `seq` counts lines and `uptime_ms` counts the ESP's time, one line a period: a jump of
    one field that the other does not show is a garbled line, rejected as implausible, never a
    gap, a replay or a new boot. A boot is told by its uptime going back (or being a boot's
    first seconds), not by `seq` alone. 10-field lines have no uptime: a live line's seq jump is
    checked against the time elapsed since the previous one instead.
    """

    def __init__(self) -> None:
        self.ref: Optional[tuple[int, Optional[int]]] = None  # (seq, uptime_ms) of the last accepted line
        self.before_ref: Optional[tuple[int, Optional[int]]] = None  # and of the one before it
        self.ref_at_rest = False  # the reference is a line of an idle, finished or stopped ESP
        self.rate_anchor: Optional[tuple[float, int]] = None  # (mono_s, uptime_ms) of this boot's first live line
        self.ref_mono_s: Optional[float] = None  # when it came, if live
        self.periods: collections.deque[float] = collections.deque(maxlen=PERIOD_SAMPLES)
        self.period_ms = ESP_PERIOD_MS
        self.arrivals: collections.deque[float] = collections.deque(maxlen=PERIOD_SAMPLES)
        self.held: list[HeldLine] = []

    def judge(self, line: protocol.BmsLine, now_s: float, live: bool,
              ref: Optional[tuple[int, Optional[int]]] = None) -> tuple[str, str]:
        """(TL_*, the reason when implausible) for `line` received at monotonic `now_s`, against `ref` (default the reference)."""
        ref = self.ref if ref is None else ref
        if ref is None:
            return TL_NONE, ""
        ref_seq, ref_uptime = ref
        ds = line.seq - ref_seq
        if line.uptime_ms is None or ref_uptime is None:
            return self._judge_unstamped(line.seq, ds, now_s, live)
        du = line.uptime_ms - ref_uptime
        p = self.period_ms
        if ds >= 1:
            if du < 0:
                return TL_IMPLAUSIBLE, (f"uptime_ms {line.uptime_ms} before the previous line's {ref_uptime}, "
                                        f"seq {ref_seq} -> {line.seq}")
            if du < (ds - 1) * LINES_FASTEST * p:
                return TL_IMPLAUSIBLE, f"seq {ref_seq} -> {line.seq}: {ds} lines in {du} ms"
            at_rest = self.ref_at_rest or line.esp_step in REST_STEPS
            if du > ds * LINE_SLOWEST_MS + STALL_MAX_MS and not at_rest:
                # (At rest the ESP sends a line every 10 s, and none while it cannot reach the broker.)
                return TL_IMPLAUSIBLE, f"uptime_ms {ref_uptime} -> {line.uptime_ms} for {ds} line(s)"
            return TL_FORWARD, ""
        if ds == 0 and du == 0:
            return TL_SAME, ""
        if line.uptime_ms < (line.seq - 1) * LINES_FASTEST * p - ESP_PERIOD_MS:
            return TL_IMPLAUSIBLE, f"seq {line.seq} needs more time than uptime_ms {line.uptime_ms}"
        if du < 0:
            return (TL_BOOT if ds == 0 else TL_BACK), ""  # one seq never holds two measurements in a boot
        if line.uptime_ms <= BOOT_YOUNG_MS and not self._too_old_for_a_reboot(line.uptime_ms, now_s, live):
            return TL_BOOT, ""  # seq back, uptime a boot's first seconds: the ESP rebooted since
        return TL_IMPLAUSIBLE, f"seq {ref_seq} -> {line.seq} while uptime_ms goes on ({ref_uptime} -> {line.uptime_ms})"

    def _too_old_for_a_reboot(self, uptime_ms: int, now_s: float, live: bool) -> bool:
        """Whether a live line's uptime is more than the ESP's clock can have run since the previous line came.

        A boot since then cannot be older than that: such a line is the current boot's, its seq garbled.
        """
        if not live or self.ref_mono_s is None:
            return False
        return uptime_ms > (now_s - self.ref_mono_s) * self.clock_rate_ms_per_s() * 1.5 + 2_000.0

    def clock_rate_ms_per_s(self) -> float:
        """The ESP's milliseconds per second of the Pi's monotonic clock, over this boot's live lines (1000 until measured)."""
        if self.rate_anchor is None or self.ref is None or self.ref[1] is None or self.ref_mono_s is None:
            return 1000.0
        anchor_s, anchor_uptime = self.rate_anchor
        if self.ref_mono_s - anchor_s < 1.0:
            return 1000.0
        return max(1000.0, (self.ref[1] - anchor_uptime) / (self.ref_mono_s - anchor_s))

    def second_opinion(self, line: protocol.BmsLine, now_s: float, live: bool) -> bool:
        """Whether a line the reference contradicts follows on from the line before the reference.

        Then the reference is the odd one out (a clock garbled by less than the tolerance, a
        seq off by one): the line is taken, and the ESP is asked for the reference's seq again.
        """
        if self.before_ref is None or self.ref is None or line.uptime_ms is None:
            return False
        if not self.before_ref[0] < self.ref[0] < line.seq:
            return False
        return self.judge(line, now_s, live, ref=self.before_ref)[0] == TL_FORWARD

    def _judge_unstamped(self, seq: int, ds: int, now_s: float, live: bool) -> tuple[str, str]:
        if not live or self.ref_mono_s is None:
            return TL_NONE, ""
        allowed = SEQ_JUMP_SLACK + 2.0 * self._rate() * max(0.0, now_s - self.ref_mono_s)
        if ds > 1 and ds - 1 > allowed:
            return TL_IMPLAUSIBLE, f"seq {seq - ds} -> {seq}: {ds} lines in {now_s - self.ref_mono_s:.1f} s"
        if ds < -SEQ_JUMP_SLACK and seq > allowed + SEQ_JUMP_SLACK:
            return TL_IMPLAUSIBLE, f"seq {seq - ds} -> {seq}: back, yet not a new boot's"
        return TL_NONE, ""

    def _rate(self) -> float:
        """Lines per second of the live lines lately (1 until measured)."""
        if len(self.arrivals) < 3 or self.arrivals[-1] <= self.arrivals[0]:
            return 1.0
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])

    def accept(self, line: protocol.BmsLine, now_s: float, live: bool, judged: str) -> None:
        """`line` was written as the newest of its boot: it is the reference from now on."""
        if judged == TL_FORWARD and self.ref is not None and line.seq - self.ref[0] == 1 \
                and line.uptime_ms is not None and self.ref[1] is not None and line.uptime_ms > self.ref[1]:
            # The period that bounds how fast lines come: the shortest lately, never above the
            # firmware's 1 s (slower lines, at rest, must not make a real gap look too fast).
            self.periods.append(float(line.uptime_ms - self.ref[1]))
            self.period_ms = max(ESP_PERIOD_MIN_MS, min(ESP_PERIOD_MS, min(self.periods)))
        self.before_ref = self.ref if judged in (TL_FORWARD, TL_NONE) else None
        self.ref = (line.seq, line.uptime_ms)
        self.ref_at_rest = line.esp_step in REST_STEPS
        if judged == TL_BOOT or not live or line.uptime_ms is None:
            self.rate_anchor = None
        if live and line.uptime_ms is not None and self.rate_anchor is None:
            self.rate_anchor = (now_s, line.uptime_ms)
        self.ref_mono_s = now_s if live else None
        if live:
            self.arrivals.append(now_s)
        self.held.clear()

    def learn_period(self, recent: Mapping[int, bytes]) -> None:
        """The period from lines already written (seq -> text, as data.csv keeps them), at a restart."""
        uptimes: dict[int, int] = {}
        for seq, text in recent.items():
            fields = text.split(b",")
            if len(fields) > len(protocol.BMS_FIELDS) and fields[len(protocol.BMS_FIELDS)].isdigit():
                uptimes[seq] = int(fields[len(protocol.BMS_FIELDS)])
        for seq in sorted(uptimes):
            if seq + 1 in uptimes and uptimes[seq + 1] > uptimes[seq]:
                self.periods.append(float(uptimes[seq + 1] - uptimes[seq]))
        if self.periods:
            self.period_ms = max(ESP_PERIOD_MIN_MS, min(ESP_PERIOD_MS, min(self.periods)))

    def hold(self, held: HeldLine) -> list[HeldLine]:
        """Keep a live line rejected as implausible; the held lines when REANCHOR_LINES of them agree."""
        if self.held:
            last = self.held[-1].line
            line = held.line
            agree = line.seq == last.seq + 1 and (
                line.uptime_ms is None or last.uptime_ms is None
                or 0 <= line.uptime_ms - last.uptime_ms <= LINE_SLOWEST_MS + STALL_MAX_MS)
            if not agree:
                self.held.clear()
        self.held.append(held)
        if len(self.held) < REANCHOR_LINES:
            return []
        taken, self.held = self.held, []
        self.ref, self.before_ref, self.ref_mono_s = None, None, None
        return taken


class SeqTracker:
    """Classifies each BMS line by its seq against the last accepted one (docs/protocole.md §2).

    It remembers the text of the last `window` lines of the current ESP boot. A lower seq
    with another text than the one remembered is a new boot's line, DUP flag or not. A lower
    seq with the same text is a copy when the line carries the ESP's clock (uptime_ms makes
    each measurement's text unique): a broker restored from its file re-sends lines it had
    delivered, with or without the DUP flag. A 10-field line at rest can repeat its text
    across a reboot, so for those only the DUP flag tells a copy.
    """

    def __init__(self, last: Optional[int] = None, window: int = SEQ_REDELIVERY_WINDOW) -> None:
        self.last = last
        self.window = window
        self.recent: dict[int, bytes] = {}  # seq -> line text, oldest first (record.remember_line)

    def remember(self, seq: int, payload: bytes) -> None:
        """Keep the text of a line written for this boot (a live line or one filling a gap)."""
        record.remember_line(self.recent, seq, line_identity(payload))

    def is_copy(self, seq: int, payload: bytes) -> bool:
        """Whether this very line (same measurement) was written for the current boot and is remembered."""
        return self.recent.get(seq) == line_identity(payload)

    def is_written(self, seq: int) -> bool:
        """Whether a line of the current boot with this seq is among the remembered ones."""
        return seq in self.recent

    def classify(self, seq: int, redelivered: bool = False, payload: Optional[bytes] = None,
                 stamped: bool = False, boot: bool = False) -> str:
        """Return SEQ_*; every verdict but SEQ_DUPLICATE makes `seq` the last accepted one.

        `stamped`: the line has uptime_ms; `boot`: its uptime says it is a new ESP boot's (EspTimeline).
        """
        last = self.last
        known = self.recent.get(seq)
        if payload is not None:
            payload = line_identity(payload)
        if last is None:
            verdict = SEQ_FIRST
        elif boot:
            verdict = SEQ_RESTART
        elif seq == last:
            return SEQ_DUPLICATE
        elif seq == last + 1:
            verdict = SEQ_NEXT
        elif seq > last:
            verdict = SEQ_GAP
        elif known is not None and payload is not None and known != payload:
            verdict = SEQ_RESTART  # the same seq, another measurement: the ESP rebooted
        elif known is not None and stamped:
            return SEQ_DUPLICATE  # the same measurement, sent again
        elif redelivered and last - seq <= self.window:
            # The broker re-sent (DUP flag) a message banc.py wrote but had not acknowledged
            # (before this process started: its text is not remembered).
            return SEQ_DUPLICATE
        else:
            # Lower seq without DUP: the ESP rebooted (seq restarts at 0) — not a gap.
            verdict = SEQ_RESTART
        if verdict == SEQ_RESTART:
            self.recent.clear()
        self.last = seq
        if payload is not None:
            record.remember_line(self.recent, seq, payload)
        return verdict


def line_identity(payload: bytes) -> bytes:
    """What tells one measurement from another: the line without field 12, as data.csv keeps it (record.DataCounts.recent_lines)."""
    if payload.count(b",") == len(protocol.BMS_FIELDS_V3) - 1:
        return payload.rpartition(b",")[0]
    return payload


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


@dataclass
class Gap:
    """Seqs `first`..`last` found missing (docs/protocole.md §6), measured during `step`; `holes` still missing."""

    first: int
    last: int
    step: int
    opened_s: float
    next_ask_s: float
    holes: list[list[int]]
    # The uptimes of the lines either side of the gap, when known: a line that fills it was measured between them.
    uptime_after: Optional[int] = None
    uptime_before: Optional[int] = None

    def fits(self, uptime_ms: Optional[int]) -> bool:
        """Whether a line with this uptime can be one the gap misses."""
        if uptime_ms is None:
            return True
        # Bounds included: the line after the gap may be the one whose seq was garbled.
        return ((self.uptime_after is None or uptime_ms >= self.uptime_after)
                and (self.uptime_before is None or uptime_ms <= self.uptime_before))

    def missing(self) -> int:
        """How many seqs are still missing."""
        return sum(b - a + 1 for a, b in self.holes)


class GapBook:
    """The gaps of the current ESP boot that were asked for again: which seqs a replay may still fill, and when to ask or give up."""

    def __init__(self, retry_s: float = REPLAY_RETRY_S, give_up_s: float = REPLAY_GIVE_UP_S) -> None:
        self.retry_s = retry_s
        self.give_up_s = give_up_s
        self.gaps: list[Gap] = []

    def open(self, first: int, last: int, step: int, now_s: float,
             uptimes: tuple[Optional[int], Optional[int]] = (None, None)) -> Command:
        """A new gap (and the uptimes of the lines either side, when known): ask for it now."""
        self.gaps.append(Gap(first, last, step, now_s, now_s + self.retry_s, [[first, last]], *uptimes))
        return Command(protocol.encode_replay(first, last))

    def find(self, seq: int) -> Optional[Gap]:
        """The gap that misses `seq`, or None."""
        for gap in self.gaps:
            if any(a <= seq <= b for a, b in gap.holes):
                return gap
        return None

    def fill(self, seq: int) -> Optional[Gap]:
        """Take `seq` out of the gap that misses it; that gap, or None when no gap misses it (a copy)."""
        for gap in self.gaps:
            for index, (a, b) in enumerate(gap.holes):
                if a <= seq <= b:
                    gap.holes[index : index + 1] = [h for h in ([a, seq - 1], [seq + 1, b]) if h[0] <= h[1]]
                    if not gap.holes:
                        self.gaps.remove(gap)
                    return gap
        return None

    def due(self, now_s: float) -> tuple[list[Command], list[Gap]]:
        """The replays to ask again now, and the gaps given up (removed: what they miss is lost)."""
        asks: list[Command] = []
        lost: list[Gap] = []
        for gap in list(self.gaps):
            if now_s - gap.opened_s >= self.give_up_s:
                self.gaps.remove(gap)
                lost.append(gap)
            elif now_s >= gap.next_ask_s:
                gap.next_ask_s = now_s + self.retry_s
                asks.append(Command(protocol.encode_replay(gap.holes[0][0], gap.holes[-1][1])))
        return asks, lost

    def drop_all(self) -> list[Gap]:
        """Every gap, removed (the ESP rebooted and lost its lines, or the test ended)."""
        lost, self.gaps = self.gaps, []
        return lost


def bms_fields(payload: bytes) -> list[str]:
    """The 10 data.csv fields of a validated BMS payload, as the ESP wrote them (the clock field is not a column)."""
    return payload.decode("ascii").split(",")[: len(protocol.BMS_FIELDS)]


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


def summary_counters(summary: Mapping[str, Any]) -> dict[str, int]:
    """The counters a config.json holds (a missing or malformed one is 0)."""
    return record.TestSummary.from_json(summary).counters


# =========================================================================== inputs and effects


@dataclass(frozen=True)
class Instant:
    """When something happens: the wall time written in the files and the monotonic time the timers use."""

    wall: datetime
    mono_s: float


@dataclass(frozen=True)
class Append:
    """Append `data` (whole lines) to `file`; the journal's lines are fsynced before the next effect."""

    file: str
    data: bytes


@dataclass(frozen=True)
class Retry:
    """Write again what waits in memory for `file` (the disk refused it)."""

    file: str


@dataclass(frozen=True)
class Sync:
    """fsync data.csv and rejected.csv where something was written since the last time."""


@dataclass(frozen=True)
class SaveSummary:
    """Rewrite config.json with these values (the journal's facts are folded in by the writer).

    `bench_step`, when not None, is also written as the bench's current_step in bancs_config.json.
    """

    counters: dict[str, int]
    capacity_ah: Optional[float]
    energy_wh: Optional[float]
    last_row_at: Optional[datetime]
    bench_step: Optional[int] = None


@dataclass(frozen=True)
class Alert:
    """Publish `text` (French, for the operator) on bancN/security."""

    text: str


@dataclass(frozen=True)
class Log:
    """Write `message` in the process log at `level` (logging.INFO...)."""

    level: int
    message: str


@dataclass(frozen=True)
class Command:
    """Publish `text` on bancN/command (a `replay FIRST LAST` request to the ESP)."""

    text: str


Effect = Union[Append, Retry, Sync, SaveSummary, Alert, Log, Command]


@dataclass(frozen=True)
class Refused:
    """An Append or Retry of `file` was not (wholly) written: it waits in memory, or was dropped (memory full)."""

    file: str
    error: str  # French, for the operator ("disque plein")
    detail: str = ""  # the system's words, for the log
    dropped: bool = False


@dataclass(frozen=True)
class CaughtUp:
    """A Retry wrote everything that waited for `file`: `rows` lines, `dropped_rows` lost to a full memory."""

    file: str
    rows: int
    dropped_rows: int = 0


@dataclass(frozen=True)
class SummarySaved:
    """A SaveSummary went through; `was_missing`: config.json was missing or unreadable and was rebuilt."""

    was_missing: bool = False


@dataclass(frozen=True)
class SummaryRefused:
    """A SaveSummary failed (it is tried again)."""

    error: str
    detail: str = ""


@dataclass(frozen=True)
class FilesRestored:
    """Files deleted under the process were put back from its open descriptors: (name, bytes) each.

    Empty when files missing earlier are back by other means.
    """

    restored: tuple[tuple[str, int], ...]
    folder_gone: bool = False


@dataclass(frozen=True)
class RestoreFailed:
    """Files deleted under the process could not be put back (they are tried again)."""

    names: tuple[str, ...]
    error: str
    detail: str = ""


Outcome = Union[Refused, CaughtUp, SummarySaved, SummaryRefused, FilesRestored, RestoreFailed]


# =========================================================================== the core


class RecorderCore:
    """One test's recording decisions: seq, steps, Ri results, rejects, counters, alerts, timers.

    Handlers take the message and `now` and return the effects to carry out; `report` takes
    what became of them. `step` is the phase reached, `ended` 5 or 9 once recorded (nothing
    more is), `blocked` whether acknowledgements must wait.
    """

    def __init__(self, banc: str, step: int, *, fsync_interval_s: float, bms_timeout_s: float,
                 start_s: float = 0.0,
                 ri_plausible_ohm: tuple[float, float] = record.RI_PLAUSIBLE_OHM_DEFAULT) -> None:
        self.topics = protocol.topics(banc)
        self.step = step
        self.ri_plausible_ohm = ri_plausible_ohm
        self.timeline = EspTimeline()
        self.phase_candidate: Optional[tuple[int, int]] = None  # (a later phase the lines show, lines in a row)
        self.boot_times: collections.deque[float] = collections.deque()
        self.live_since_s: Optional[float] = None  # when banc.py's marker came back
        self.live_line_seen = False  # a live line since then
        self.waits_for_esp_phase = False  # a test resumed with rows: the ESP may be further than its journal
        self.announced_s: Optional[float] = None  # when banc.py announced the step to the ESP
        self.recovered_step: Optional[int] = None  # the phase last taken from the lines, until its message comes
        self.stop_lines = 0  # consecutive lines of a stopped ESP after the announcement
        self.fsync_interval_s = fsync_interval_s
        self.seq = SeqTracker()
        # The phase of the newest live row: a gap opened by the next line was measured in it
        # (as record.DataCounts.hole_steps says when a restarted banc.py finds the hole).
        self.last_row_step: Optional[int] = None
        self.counters = dict.fromkeys(record.COUNTER_KEYS, 0)
        self.capacity_ah: Optional[float] = None
        self.capacity = record.CapacityCounter()
        self.energy_wh: Optional[float] = None
        self.last_row_at: Optional[datetime] = None
        self.summary_dirty = False  # counters or capacity not yet in config.json
        self.view_dirty = False  # a journal event not yet shown in config.json
        self.bench_step_dirty = False  # bancs_config.json's current_step behind the journal
        self.last_summary_save_s = start_s
        self.last_fsync_s = start_s
        self.next_retry_s = 0.0
        self.waiting: set[str] = set()  # files whose lines wait in memory (the disk refused them)
        self.restore_pending = False  # a deleted file not yet put back
        self.ended: Optional[int] = None
        self.ignored_after_end = 0
        self.repeated_steps = 0
        # Values of the latest Ri results in the journal: a redelivered copy is one of them.
        self.recent_ri: collections.deque[Mapping[str, float]] = collections.deque(maxlen=protocol.RECEIVE_MAXIMUM)
        self.latch = AlertLatch()
        self.watchdog = BmsWatchdog(bms_timeout_s)
        self.reject_log = RateLimiter(REJECT_LOG_PER_MINUTE)
        self.anomaly_log = RateLimiter(REJECT_LOG_PER_MINUTE)
        # data.csv's width: 14 columns, or 12 for a folder of the earlier version (its header is kept).
        self.data_width = len(record.DATA_CSV_HEADER)
        # The ESP's clock (docs/protocole.md §7): lines are samples only once banc.py's marker came back
        # (what arrives before it may be a backlog); `boot` is the current boot's number in the journal.
        self.live = False
        self.boot: Optional[int] = None
        self.boots_seen = 0
        self.boot_uptime_ms: Optional[int] = None
        self.clock = esp_clock.OffsetEstimator()
        self.wall_anchor = esp_clock.WallAnchor()
        self.saved_offset_ms: Optional[int] = None
        self.saved_offset_s = 0.0
        self.gaps = GapBook()

    def resume(self, summary: Mapping[str, Any], recent_ri: Sequence[Mapping[str, float]] = (),
               rows: int = 0, rejected_rows: int = 0, last_seq: Optional[int] = None, *,
               now: Optional[Instant] = None, boots: Sequence[record.EspBoot] = (),
               last_uptime_ms: Optional[int] = None,
               holes: Sequence[tuple[int, int, Optional[int]]] = (),
               recent: Mapping[int, bytes] = {}, last_row_step: Optional[int] = None,
               data_width: int = len(record.DATA_CSV_HEADER)) -> None:
        """Start from a test's rebuilt summary, the journal's latest Ri results and the recount of its CSV files.

        `boots` are the journal's ESP boots (the last one is the current boot, its latest offset
        the clock's estimate until live lines refine it); `holes` the seqs still missing from
        the current boot in data.csv (first, last, the phase they were measured in when known),
        asked for again at the first tick; `recent` the text of its last lines, by seq;
        `last_row_step` the phase of its newest row.
        """
        self.recent_ri.extend(recent_ri)
        self.data_width = data_width
        self.boots_seen = len(boots)
        if boots:
            self.boot = len(boots) - 1
            self.boot_uptime_ms = last_uptime_ms
            offset_ms = boots[-1].offset_ms
            if offset_ms is not None and now is not None:
                anchor_s = self.wall_anchor.update(now.wall, now.mono_s)
                self.clock.seed(now.mono_s, esp_clock.offset_mono_s(offset_ms, anchor_s))
                self.saved_offset_ms, self.saved_offset_s = offset_ms, now.mono_s
        start_s = now.mono_s if now is not None else 0.0
        for first, last, step in holes:
            # A replayed line is written in the phase it was measured in, not the phase of the restart.
            self.gaps.open(first, last, self.step if step is None else step, start_s - REPLAY_RETRY_S)
        self.counters = summary_counters(summary)
        # Counted from the files themselves: exact even when config.json lagged behind a crash.
        self.counters["rows_count"] = rows
        self.counters["rejected_count"] = rejected_rows
        self.waits_for_esp_phase = rows > 0
        typed = record.TestSummary.from_json(summary)
        if typed.capacity_ah is not None:
            self.capacity_ah = float(typed.capacity_ah)
        if typed.capacity_wh is not None:
            self.energy_wh = float(typed.capacity_wh)
        self.capacity = record.CapacityCounter(self.capacity_ah, self.energy_wh)
        self.seq.last = last_seq
        self.seq.recent = dict(recent)
        self.last_row_step = last_row_step
        if last_seq is not None:
            self.timeline.ref = (last_seq, last_uptime_ms)
        self.timeline.learn_period(recent)

    @property
    def blocked(self) -> bool:
        """True while a record waits in memory or a deleted file is not back: acknowledgements must wait."""
        return self.restore_pending or bool(self.waiting)

    def all_written(self) -> bool:
        """True when nothing waits (rows, events, summary, bench step)."""
        return not self.blocked and not self.summary_dirty and not self.view_dirty and not self.bench_step_dirty

    # ------------------------------------------------------------------ messages

    def _admit(self) -> bool:
        """False (counted) once the test has ended: nothing more is recorded."""
        if self.ended is not None:
            self.ignored_after_end += 1
            return False
        return True

    def backlog_received(self, now: Optional[Instant] = None) -> None:
        """banc.py's marker came back: every line from now on is live, a sample of the ESP's clock."""
        self.live = True
        self.live_since_s = now.mono_s if now is not None else 0.0

    def _event(self, event: record.Event) -> Append:
        """One journal line; config.json shows it at the next save."""
        self.view_dirty = True
        return Append(JOURNAL, record.encode_event(event))

    def on_bms(self, payload: bytes, redelivered: bool, now: Instant) -> list[Effect]:
        """A bancN/bms/data message: validate, judge against the previous line, drop duplicates, append a data.csv row."""
        try:
            line = protocol.parse_bms_line(payload)
        except protocol.PayloadError as exc:
            return self.reject(now, self.topics.bms_data, str(exc), payload)
        if not self._admit():
            return []
        effects = self._clock(now)
        previous_seq = self.seq.last
        if previous_seq is not None and line.seq < previous_seq and not self.seq.is_written(line.seq):
            # A line a gap misses, delivered late: a broker restored from its file sends what it
            # had saved after lines that came in since. Not an ESP reboot.
            gap = self.gaps.find(line.seq)
            if gap is not None and gap.fits(line.uptime_ms):
                self.gaps.fill(line.seq)
                return effects + self._fill_gap(payload, line, gap, now, "by the broker, late") + self._fed(now)
        judged, why = self.timeline.judge(line, now.mono_s, self.live)
        if judged == TL_IMPLAUSIBLE and self.timeline.second_opinion(line, now.mono_s, self.live):
            assert self.timeline.ref is not None
            suspect = self.timeline.ref[0]
            judged = TL_FORWARD
            effects += [Log(logging.WARNING, f"seq {line.seq} contradicts the previous line (seq {suspect}) and follows "
                                             f"the one before it: seq {suspect} asked for again"),
                        self.gaps.open(suspect, suspect, self.last_row_step or self.step, now.mono_s)]
        if judged == TL_IMPLAUSIBLE:
            effects += self.reject(now, self.topics.bms_data, f"implausible: {why}", payload)
            if self.timeline.ref is not None and line.seq == self.timeline.ref[0] and self.gaps.find(line.seq) is None:
                # Two measurements under one seq: one of them is garbled. The ESP is asked for its
                # own copy, written unless it is the one already in data.csv.
                effects.append(self.gaps.open(line.seq, line.seq, self.last_row_step or self.step, now.mono_s))
            taken = self.timeline.hold(HeldLine(payload, line, redelivered))
            if taken:
                effects += self._reanchor(taken, now)
            return effects
        return effects + self._accept(payload, line, redelivered, now, judged) + self._fed(now)

    def _accept(self, payload: bytes, line: protocol.BmsLine, redelivered: bool, now: Instant,
                judged: str) -> list[Effect]:
        """A plausible line: a copy is counted, anything else written as the newest row of its boot."""
        previous_seq = self.seq.last
        verdict = self.seq.classify(line.seq, redelivered, payload, stamped=line.uptime_ms is not None,
                                    boot=judged == TL_BOOT)
        self.live_line_seen = self.live_line_seen or self.live
        if verdict == SEQ_DUPLICATE:
            self.counters["duplicate_count"] += 1
            self.summary_dirty = True
            return []
        effects: list[Effect] = []
        previous_uptime = self.timeline.ref[1] if self.timeline.ref is not None else None
        if verdict == SEQ_RESTART:
            effects += self._lost(self.gaps.drop_all(), now, "l'ESP a redémarré")
            effects += self._boot_burst(now)
        self.timeline.accept(line, now.mono_s, self.live, judged)
        effects += self._esp_clock(line, verdict, now)
        row_step = self._row_step(line, self.step)
        # The row keeps the ESP's own (validated, plain decimal) text: no float round trip.
        effects.append(Append(DATA, self._row(payload, line, row_step, now)))
        self.counters["rows_count"] += 1
        if verdict == SEQ_GAP and previous_seq is not None:
            gap_step = self.step if self.last_row_step is None else self.last_row_step
            effects.append(self.gaps.open(previous_seq + 1, line.seq - 1, gap_step, now.mono_s,
                                          (previous_uptime, line.uptime_ms)))
        self.last_row_step = row_step
        if verdict == SEQ_GAP:
            self.counters["seq_gap_count"] += 1
        elif verdict == SEQ_RESTART:
            self.counters["seq_restart_count"] += 1
        counter_lost = self.capacity.see(row_step, line.seq, line.capacity_ah, line.energy_wh)
        self.capacity_ah, self.energy_wh = self.capacity.ah, self.capacity.wh
        self.last_row_at = now.wall
        self.summary_dirty = True
        if counter_lost and self.latch.raise_("capacity:held"):
            held = self.capacity_ah or 0.0
            effects += [
                Log(logging.WARNING, f"ESP capacity counter went back to {line.capacity_ah:.3f} Ah in phase 4; "
                                     f"keeping {held:.3f} Ah"),
                Alert(f"Compteur de capacité de l'ESP remis à zéro en phase 4 : capacité mesurée "
                      f"conservée ({held:.2f} Ah)"),
            ]
        if verdict in (SEQ_GAP, SEQ_RESTART):
            log_it, suppressed = self.anomaly_log.allow(now.mono_s)
            if suppressed:
                effects.append(Log(logging.INFO, f"{suppressed} more seq anomalies in the last minute"))
            if log_it:
                what = "ESP restart" if verdict == SEQ_RESTART else "gap"
                effects.append(Log(logging.INFO, f"seq {line.seq} after {previous_seq}: {what}"))
        return effects + self._phase_from_line(line, now)

    @staticmethod
    def _row_step(line: protocol.BmsLine, otherwise: int) -> int:
        """The phase a row was measured in: the ESP's own (field 12: a phase, or 9 stopped), else `otherwise`."""
        esp_step = line.esp_step
        return esp_step if esp_step is not None and esp_step in protocol.VALID_STEPS else otherwise

    def _reanchor(self, taken: Sequence[HeldLine], now: Instant) -> list[Effect]:
        """Lines rejected as implausible that agree with each other: the reference was wrong; they are written after all."""
        first, last = taken[0].line.seq, taken[-1].line.seq
        effects: list[Effect] = [
            Log(logging.WARNING, f"{len(taken)} consecutive lines (seq {first}..{last}) contradicted the previous "
                                 f"line (seq {self.seq.last}) and agree with each other: they are taken after all"),
            Alert(f"Lignes BMS incohérentes avec la précédente (seq {self.seq.last}) : les {len(taken)} suivantes "
                  f"(seq {first} à {last}) concordent, elles sont enregistrées ; vérifier l'ESP"),
        ]
        first_line, last_uptime = taken[0].line, self.boot_uptime_ms
        # Their clock behind the previous line's: a boot (one whose seq went beyond the previous
        # boot's while banc.py was away, or one that waited for a command before its first line).
        # (A previous line garbled alone was already set aside by the second opinion.)
        first_judged = TL_NONE
        if first_line.uptime_ms is not None and last_uptime is not None and first_line.uptime_ms < last_uptime:
            first_judged = TL_BOOT
        for held in taken:
            effects += self._accept(held.payload, held.line, held.redelivered, now,
                                    first_judged if held is taken[0] else TL_FORWARD)
        return effects

    def _phase_from_line(self, line: protocol.BmsLine, now: Instant) -> list[Effect]:
        """A later phase that the lines show (field 12) and no step message announced: taken once confirmed.

        PHASE_CONFIRM_LINES consecutive lines must say so (one garbled field never moves the
        test); the phase is journaled as recovered from the lines, never moves backwards.
        """
        esp_step = line.esp_step
        if esp_step == protocol.STEP_STOP:
            return self._stop_from_lines(line, now)
        self.stop_lines = 0
        if esp_step not in protocol.PHASES or esp_step <= self.step:
            self.phase_candidate = None
            return []
        count = self.phase_candidate[1] + 1 if self.phase_candidate and self.phase_candidate[0] == esp_step else 1
        self.phase_candidate = (esp_step, count)
        if count < PHASE_CONFIRM_LINES:
            return []
        previous, self.phase_candidate = self.step, None
        self.step = self.recovered_step = esp_step
        self.bench_step_dirty = True
        if esp_step == protocol.STEP_FINISHED:
            self.ended = esp_step
        return [self._event(record.StepEvent(record.event_time(now.wall), esp_step,
                                             recovered=record.STEP_RECOVERED_FROM_LINES, seq=line.seq)),
                Log(logging.WARNING, f"step {esp_step} recovered from the BMS lines (was {previous}): "
                                     "its step message never arrived"),
                Alert(f"Phase {esp_step} ({protocol.PHASE_NAMES[esp_step]}) déduite des lignes BMS : "
                      "le message d'étape de l'ESP n'est pas arrivé")]

    def _stop_from_lines(self, line: protocol.BmsLine, now: Instant) -> list[Effect]:
        """An ESP whose lines say it is stopped (9) well after banc.py told it its phase: its 9 was lost.

        Lines of a stopped ESP before the announcement are expected (it waits for the command);
        PHASE_CONFIRM_LINES of them STOP_GRACE_S after it mean the ESP stopped and its step
        message never came: the stop is recorded (journaled as recovered), with an alert.
        """
        self.phase_candidate = None
        if self.announced_s is None or now.mono_s - self.announced_s < STOP_GRACE_S:
            self.stop_lines = 0
            return []
        self.stop_lines += 1
        if self.stop_lines < PHASE_CONFIRM_LINES:
            return []
        self.ended = protocol.STEP_STOP
        return [self._event(record.StopEvent(record.event_time(now.wall), recovered=record.STEP_RECOVERED_FROM_LINES,
                                             seq=line.seq)),
                Log(logging.WARNING, f"stop recovered from the BMS lines at step {self.step}: "
                                     "its step message never arrived"),
                Alert(f"L'ESP s'est arrêté en phase {self.step} (lignes BMS) sans que son message d'arrêt "
                      "arrive : vérifier le banc ; le test reprendra à cette phase")]

    def _boot_burst(self, now: Instant) -> list[Effect]:
        """Each ESP boot counted; an ESP that reboots again and again is reported once per burst."""
        self.boot_times.append(now.mono_s)
        while self.boot_times and self.boot_times[0] < now.mono_s - BOOT_BURST_S:
            self.boot_times.popleft()
        if len(self.boot_times) < BOOT_BURST_COUNT:
            self.latch.clear("boots")
            return []
        if not self.latch.raise_("boots"):
            return []
        minutes = BOOT_BURST_S / 60
        return [Log(logging.WARNING, f"the ESP rebooted {len(self.boot_times)} times within {minutes:.0f} min"),
                Alert(f"L'ESP a redémarré {len(self.boot_times)} fois en moins de {minutes:.0f} min : "
                      "vérifier son alimentation et son câblage")]

    def _clock(self, now: Instant) -> list[Effect]:
        """The wall anchor read at each event: a step of the Pi's clock is journaled, never followed (docs/protocole.md §8)."""
        self.wall_anchor.update(now.wall, now.mono_s)
        step_s = self.wall_anchor.take_step()
        if step_s is None:
            return []
        return [Append(JOURNAL, record.encode_event(record.ClockStepEvent(record.event_time(now.wall), round(step_s, 3)))),
                Log(logging.WARNING, f"the Pi's wall clock stepped by {step_s:+.3f} s: measurement times keep "
                                     "the monotonic clock")]

    def on_retained(self, topic: str, payload: bytes, now: Instant) -> list[Effect]:
        """A retained message on a topic the ESP publishes as news (docs/protocole.md §5): stored before we came, never acted on."""
        return self.reject(now, topic, "retained: stored by the broker before this subscription, not news", payload)

    def on_failure(self, topic: str, payload: bytes, error: BaseException, now: Instant) -> list[Effect]:
        """A message whose handling raised: rejected as bad input (then acknowledged), never redelivered for ever."""
        return [Log(logging.ERROR, f"handling a message on {safe_text(topic, 100)} failed: "
                                   f"{type(error).__name__}: {safe_text(str(error), 200)}")] + \
            self.reject(now, topic, f"not handled: {type(error).__name__}: {error}", payload)

    def announce_step(self, now: Instant) -> Optional[int]:
        """The step to announce to the ESP now that the backlog is in, or None to wait a little more.

        Never an older phase than the ESP runs: banc.py waits up to ANNOUNCE_WAIT_S for a live line
        telling the ESP's phase (field 12), and for a phase change seen once to be confirmed.
        """
        if self.ended is not None or self.live_since_s is None:
            return None
        waited = now.mono_s - self.live_since_s
        if self.phase_candidate is not None and waited < ANNOUNCE_CONFIRM_WAIT_S:
            return None  # the lines show a later phase once: wait for the next (10 s apart at rest)
        if waited < ANNOUNCE_WAIT_S and self.waits_for_esp_phase and not self.live_line_seen:
            return None
        self.announced_s = now.mono_s
        return self.step

    def _fed(self, now: Instant) -> list[Effect]:
        """A BMS line came: the watchdog is fed; a notice when it ends a silence."""
        recovered = self.watchdog.feed(now.mono_s)
        if recovered is None:
            return []
        return [Log(logging.INFO, f"BMS data back after {recovered:.1f} s"),
                Alert(f"Données BMS rétablies après {recovered:.0f} s de silence")]

    def on_replay(self, payload: bytes, redelivered: bool, now: Instant) -> list[Effect]:
        """A bancN/bms/replay message: a line re-sent on request, written once if a gap misses it."""
        try:
            line = protocol.parse_bms_line(payload)
        except protocol.PayloadError as exc:
            return self.reject(now, self.topics.bms_replay, str(exc), payload)
        if not self._admit():
            return []
        effects = self._clock(now)
        gap = self.gaps.find(line.seq)
        if gap is not None and not gap.fits(line.uptime_ms):
            return effects + self.reject(now, self.topics.bms_replay,
                                         f"implausible: uptime_ms {line.uptime_ms} outside the gap it would fill",
                                         payload)
        if gap is None or self.seq.is_copy(line.seq, payload):
            if gap is not None:
                self.gaps.fill(line.seq)  # asked for again, and it is the line already written
            self.counters["duplicate_count"] += 1  # already written (or not asked for): never twice
            self.summary_dirty = True
            return effects
        self.gaps.fill(line.seq)
        return effects + self._fill_gap(payload, line, gap, now, "by the ESP's replay")

    def _fill_gap(self, payload: bytes, line: protocol.BmsLine, gap: Gap, now: Instant, how: str) -> list[Effect]:
        """Write a line a gap missed (already taken out of it), in the phase it was measured in."""
        self.seq.remember(line.seq, payload)
        self.counters["rows_count"] += 1
        self.summary_dirty = True
        effects: list[Effect] = [Append(DATA, self._row(payload, line, self._row_step(line, gap.step), now))]
        if not gap.holes:
            effects.append(Log(logging.INFO, f"seq {gap.first}..{gap.last}: gap filled {how}"))
        return effects

    def _row(self, payload: bytes, line: protocol.BmsLine, step: int, now: Instant) -> bytes:
        """The data.csv row of a line: measured_at from the ESP's clock when its boot has an estimate, else the receipt.

        Both on the steady wall anchor: a step of the Pi's clock moves neither (docs/protocole.md §8).
        """
        self.wall_anchor.update(now.wall, now.mono_s)
        # The receipt, as readers recognise it (measured_at == timestamp) until a step was set aside.
        measured = self.wall_anchor.unstepped(now.wall)
        offset = self.clock.offset_s
        if line.uptime_ms is not None and offset is not None:
            # From a steady wall anchor: the jitter between reading two clocks never moves a stamp.
            try:
                measured = esp_clock.measured_wall(offset, line.uptime_ms,
                                                   self.wall_anchor.update(now.wall, now.mono_s), now.wall)
            except (OverflowError, ValueError):  # an uptime (valid up to 2**63-1 ms) past any calendar
                pass
        return record.format_data_row(record.iso(now.wall, millis=True), step, bms_fields(payload),
                                      line.uptime_ms, record.iso(measured, millis=True), self.data_width)

    def _esp_clock(self, line: protocol.BmsLine, verdict: str, now: Instant) -> list[Effect]:
        """A new ESP boot into the journal; a live line's sample of the clock; the offset into the journal when due."""
        uptime = line.uptime_ms
        if uptime is None:
            return []
        effects: list[Effect] = []
        if self.boot is None or verdict == SEQ_RESTART:
            self.boot, self.boots_seen = self.boots_seen, self.boots_seen + 1
            self.clock = esp_clock.OffsetEstimator()
            self.saved_offset_ms = None
            effects.append(Append(JOURNAL, record.encode_event(record.EspBootEvent(
                record.event_time(now.wall), row_t=record.event_time(now.wall), seq=line.seq, uptime_ms=uptime,
                boot=self.boot))))
        self.boot_uptime_ms = uptime
        if not self.live:
            return effects
        self.clock.add(now.mono_s, uptime)
        offset_s = self.clock.offset_s
        assert offset_s is not None
        offset_ms = esp_clock.offset_wall_ms(offset_s, self.wall_anchor.update(now.wall, now.mono_s))
        saved = self.saved_offset_ms
        if saved is None or (abs(offset_ms - saved) >= CLOCK_SAVE_MIN_MS
                             and now.mono_s - self.saved_offset_s >= CLOCK_SAVE_INTERVAL_S):
            self.saved_offset_ms, self.saved_offset_s = offset_ms, now.mono_s
            effects.append(Append(JOURNAL, record.encode_event(record.EspClockEvent(
                record.event_time(now.wall), boot=self.boot, offset_ms=offset_ms))))
        return effects

    def _lost(self, gaps: Sequence[Gap], now: Instant, why: str) -> list[Effect]:
        """Lines asked for again that will never come: counted, journaled, one alert for them all."""
        effects: list[Effect] = []
        total = 0
        for gap in gaps:
            count = gap.missing()
            if not count:
                continue
            total += count
            effects.append(Append(JOURNAL, record.encode_event(record.SeqLostEvent(
                record.event_time(now.wall), boot=self.boot, first=gap.first, last=gap.last, count=count))))
        if not total:
            return []
        self.counters["seq_lost_count"] += total
        self.summary_dirty = True
        spans = ", ".join(f"{gap.first}..{gap.last}" for gap in [g for g in gaps if g.missing()][:3]) + (
            ", …" if len(gaps) > 3 else "")
        return effects + [Log(logging.WARNING, f"{total} BMS lines lost (seq {spans}): {why}"),
                          Alert(f"{total} ligne{'s' if total > 1 else ''} BMS perdue{'s' if total > 1 else ''} "
                                f"(seq {spans}) : {why}")]

    def on_step(self, payload: bytes, redelivered: bool, now: Instant) -> list[Effect]:
        """A bancN/step message: 1-5 record the new phase (5 ends the test), 9 stops, else reject.

        The step is one journal line, fsynced before the message is acknowledged; a step
        equal to the current one costs nothing.
        """
        try:
            step = protocol.parse_step(payload)
        except protocol.PayloadError as exc:
            return self.reject(now, self.topics.step, str(exc), payload)
        if not self._admit():
            return []
        return self._clock(now) + self._step(step, redelivered, now)

    def _step(self, step: int, redelivered: bool, now: Instant) -> list[Effect]:
        if self.phase_candidate is not None and step >= self.phase_candidate[0]:
            self.phase_candidate = None  # the message came after all
        previous = self.step
        if step == protocol.STEP_STOP:
            self.ended = step
            return [self._event(record.StopEvent(record.event_time(now.wall))),
                    Log(logging.INFO, f"step 9: stop for the day at step {previous}")]
        if step == previous and self.recovered_step == step:
            # The message of a phase taken from the lines came after all (late, not lost): the
            # journal says so, and the phase no longer counts as recovered.
            self.recovered_step = None
            return [self._event(record.StepEvent(record.event_time(now.wall), step)),
                    Log(logging.INFO, f"step {step}: its message came after the lines had shown it")]
        if step == previous or (redelivered and step < previous):
            # Equal: nothing to record. Lower and re-sent (DUP): a step this test has already
            # gone past, written before a crash and delivered again, not the ESP going back.
            self.repeated_steps += 1
            return []
        self.step = step
        if step == protocol.STEP_FINISHED:
            self.ended = step
        self.bench_step_dirty = True
        if step < previous:
            note = Log(logging.WARNING, f"step {step} after step {previous} (the ESP went back)")
        else:
            note = Log(logging.INFO, f"step {step} (was {previous})")
        return [self._event(record.StepEvent(record.event_time(now.wall), step)), note]

    def on_ri(self, payload: bytes, redelivered: bool, now: Instant) -> list[Effect]:
        """A bancN/ri/results message: one journal line; config.json's running means follow from it."""
        try:
            results = protocol.parse_ri_results(payload)
        except protocol.PayloadError as exc:
            return self.reject(now, self.topics.ri_results, str(exc), payload)
        if not self._admit():
            return []
        low, high = self.ri_plausible_ohm
        absurd = [key for key in protocol.RI_KEYS
                  if key in results and not record.ri_plausible(results[key], self.ri_plausible_ohm)]
        effects: list[Effect] = []
        if absurd:
            # Each value on its own: an absurd diffusion does not take the pulse's Ri with it.
            effects = self.reject(now, self.topics.ri_results, "implausible: " + ", ".join(
                f"{key} {results[key]:g} Ω" for key in absurd) + f" outside [{low:g}, {high:g}] Ω", payload)
            results = {key: value for key, value in results.items() if key not in absurd}
            if not set(results) & set(protocol.RI_KEYS):
                return effects
        return effects + self._ri(results, redelivered, now)

    def _ri(self, results: dict[str, float], redelivered: bool, now: Instant) -> list[Effect]:
        if redelivered and results in self.recent_ri:
            # The broker re-sent (DUP) a result this journal already holds: a kill or a lost
            # connection came between its fsync and its acknowledgement. Counting it again
            # would bias the means.
            self.counters["duplicate_count"] += 1
            self.summary_dirty = True
            return [Log(logging.INFO, f"Ri results redelivered, already recorded: {results}")]
        self.recent_ri.append(results)
        return [self._event(record.RiEvent(record.event_time(now.wall), results)),
                Log(logging.INFO, f"Ri results at step {self.step}: {results}")]

    def on_security(self, payload: bytes, now: Instant) -> list[Effect]:
        """A bancN/security message (this process's own alerts and the ESP's): one journal line, fsynced before
        the message is acknowledged, from which a kiosk that starts shows the alarms still active."""
        if self.ended is not None:
            return []  # the test is over: its journal is closed, and nobody reads alarms of an ended test from it
        text = protocol.parse_security(payload)  # any bytes: a text of 200 characters at most, never refused
        return [Append(JOURNAL, record.encode_event(record.AlertEvent(record.event_time(now.wall), text)))]

    def reject(self, now: Instant, topic: str, reason: str, payload: bytes) -> list[Effect]:
        """Record a refused message in rejected.csv and count it (its log is rate-limited)."""
        if not self._admit():
            return []
        row = format_rejected_row(now.wall.isoformat(timespec="milliseconds"), topic, reason, payload)
        self.counters["rejected_count"] += 1
        self.summary_dirty = True
        effects: list[Effect] = [Append(REJECTED, row)]
        log_it, suppressed = self.reject_log.allow(now.mono_s)
        if suppressed:
            effects.append(Log(logging.WARNING, f"{suppressed} more rejected messages in the last minute"))
        if log_it:
            effects.append(Log(logging.WARNING,
                               f"rejected on {topic}: {safe_text(reason, 120)} ({safe_text(payload, 60)})"))
        return effects

    # ------------------------------------------------------------------ time

    def tick(self, now: Instant, connected_since_s: Optional[float]) -> list[Effect]:
        """Periodic work: BMS watchdog, write retries (every WRITE_RETRY_INTERVAL_S), fsync, config.json saves."""
        effects: list[Effect] = self._clock(now)
        silence = None if self.ended is not None else self.watchdog.check(now.mono_s, connected_since_s)
        if silence is not None:
            effects += [
                Log(logging.WARNING, f"no BMS data for {silence:.1f} s"),
                Alert(f"Aucune donnée BMS valide depuis {self.watchdog.timeout_s:g} s : "
                      "vérifier l'ESP32, le BMS et leur liaison"),
            ]
        if self.ended is None:
            asks, lost = self.gaps.due(now.mono_s)
            effects += asks
            effects += self._lost(lost, now, f"pas renvoyées par l'ESP en {REPLAY_GIVE_UP_S / 60:.0f} min")
        force = False
        if now.mono_s >= self.next_retry_s:
            self.next_retry_s = now.mono_s + WRITE_RETRY_INTERVAL_S
            effects += [Retry(name) for name in FILES if name in self.waiting]
            force = self.latch.is_raised("config")
        if sync_due(self.last_fsync_s, now.mono_s, self.fsync_interval_s):
            effects.append(self._sync(now))
        return effects + self._save_summary(now, force)

    def flush(self, now: Instant) -> list[Effect]:
        """One attempt to write everything that waits (at the end); all_written() says whether it all went."""
        retries: list[Effect] = [Retry(name) for name in FILES if name in self.waiting]
        if self.ended == protocol.STEP_FINISHED:
            # The test is over: nobody will ask for these lines again (after 9 or a signal the
            # next banc.py asks for what data.csv still misses).
            retries += self._lost(self.gaps.drop_all(), now, "test terminé avant leur renvoi")
        return retries + self._save_summary(now, force=True) + [self._sync(now)]

    def close(self) -> None:
        """Nothing more is recorded (a signal ends the process without a 5 or 9: it counts as a stop)."""
        self.ended = self.ended or protocol.STEP_STOP

    def _sync(self, now: Instant) -> Sync:
        self.last_fsync_s = now.mono_s
        return Sync()

    def _save_summary(self, now: Instant, force: bool = False) -> list[Effect]:
        """A SaveSummary when config.json is behind and due (a journal event, the interval, or `force`)."""
        if not (self.summary_dirty or self.view_dirty):
            return []
        if not force and not self.view_dirty and now.mono_s - self.last_summary_save_s < SUMMARY_SAVE_INTERVAL_S:
            return []
        if JOURNAL in self.waiting:
            return []  # the view must never run ahead of the journal
        # After 5 the bench is freed instead (banc.py's end), not set to step 5.
        bench_step = self.step if self.bench_step_dirty and self.step != protocol.STEP_FINISHED else None
        return [SaveSummary(dict(self.counters), self.capacity_ah, self.energy_wh, self.last_row_at, bench_step)]

    # ------------------------------------------------------------------ outcomes

    def report(self, outcome: Outcome, now: Instant) -> list[Effect]:
        """What became of an effect (or of the watch over the files): the effects that follow."""
        if isinstance(outcome, Refused):
            return self._refused(outcome)
        if isinstance(outcome, CaughtUp):
            return self._caught_up(outcome, now)
        if isinstance(outcome, SummarySaved):
            return self._summary_saved(outcome, now)
        if isinstance(outcome, SummaryRefused):
            if not self.latch.raise_("config"):
                return []
            return [Log(logging.ERROR, f"config.json: summary not saved: {outcome.detail} (retrying every second)"),
                    Alert(f"Écriture impossible dans config.json ({outcome.error}) : nouvel essai chaque seconde")]
        if isinstance(outcome, FilesRestored):
            return self._restored(outcome)
        return self._restore_failed(outcome)

    def _refused(self, outcome: Refused) -> list[Effect]:
        self.waiting.add(outcome.file)
        effects: list[Effect] = []
        if self.latch.raise_(f"file:{outcome.file}"):
            effects += [
                Log(logging.ERROR, f"{outcome.file}: write failed ({outcome.detail}); "
                                   "messages held (not acknowledged), retrying every second"),
                Alert(f"Écriture impossible dans {outcome.file} ({outcome.error}) : "
                      "mesures gardées par le broker, nouvel essai chaque seconde"),
            ]
        if outcome.dropped and outcome.file == DATA:
            self.counters["rows_count"] -= 1  # counted when decided, it never reached the file
            if self.latch.raise_(f"dropped:{DATA}"):
                effects += [Log(logging.ERROR, "memory buffer full: BMS rows are being dropped"),
                            Alert("Mémoire tampon pleine : des mesures BMS sont perdues, libérer le disque")]
        return effects

    def _caught_up(self, outcome: CaughtUp, now: Instant) -> list[Effect]:
        self.waiting.discard(outcome.file)
        effects: list[Effect] = [Log(logging.INFO, f"{outcome.file} writable again: {outcome.rows} records caught up")]
        if self.latch.clear(f"file:{outcome.file}"):
            note = f"Écriture dans {outcome.file} rétablie : {outcome.rows} lignes rattrapées"
            if outcome.dropped_rows:
                note += f", {outcome.dropped_rows} perdues (mémoire pleine)"
            effects.append(Alert(note))
        self.latch.clear(f"dropped:{outcome.file}")
        if outcome.file == JOURNAL:
            effects += self._save_summary(now)  # the events that waited are shown at once
        return effects

    def _summary_saved(self, outcome: SummarySaved, now: Instant) -> list[Effect]:
        effects: list[Effect] = []
        if outcome.was_missing and self.latch.raise_("config:rebuilt"):
            effects += [Log(logging.ERROR, "config.json missing or unreadable: rebuilt from the journal and data.csv"),
                        Alert("config.json endommagé ou supprimé : reconstruit depuis le dossier du test, "
                              "rien n'est perdu")]
        self.latch.clear("config:rebuilt")
        self.summary_dirty = self.view_dirty = self.bench_step_dirty = False
        self.last_summary_save_s = now.mono_s
        if self.latch.clear("config"):
            effects += [Log(logging.INFO, "config.json writable again"), Alert("Écriture dans config.json rétablie")]
        return effects

    def _restored(self, outcome: FilesRestored) -> list[Effect]:
        self.restore_pending = False
        self.latch.clear("folder")
        if not outcome.restored:
            return [Log(logging.INFO, "the test's files are back at their place")]
        self.view_dirty = True  # config.json is rebuilt from the restored journal and rows
        names = ", ".join(name for name, _ in outcome.restored)
        sizes = ", ".join(f"{name}: {size} bytes" for name, size in outcome.restored)
        what = "Dossier du test supprimé" if outcome.folder_gone else f"{names} supprimé"
        return [Log(logging.ERROR, f"{'folder and ' if outcome.folder_gone else ''}{names} removed while the test "
                                   f"runs; restored ({sizes})"),
                Alert(f"{what} pendant le test : recréé sans perte, l'enregistrement continue")]

    def _restore_failed(self, outcome: RestoreFailed) -> list[Effect]:
        # Until the files are back, rows written meanwhile live only in the deleted files,
        # which a kill would lose: the acknowledgements wait.
        self.restore_pending = True
        if not self.latch.raise_("folder"):
            return []
        names = ", ".join(outcome.names)
        return [Log(logging.ERROR, f"{names} removed and cannot be restored: {outcome.detail} (retrying every second)"),
                Alert(f"Dossier du test supprimé ({names}) et impossible à recréer ({outcome.error}) : "
                      "mesures gardées par le broker, nouvel essai chaque seconde")]
