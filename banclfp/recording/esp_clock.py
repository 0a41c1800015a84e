"""esp_clock.py — when a BMS line was measured, from the ESP's own clock (docs/protocole.md §7). Pure.

An 11-field BMS line carries `uptime_ms`, the ESP's milliseconds since its boot. The Pi
estimates, per ESP boot, the offset between its clock and that uptime from the lines it
receives live: receipt time minus uptime is the offset plus the network delay, so the
smallest value over the last few minutes is the best estimate (a delay never pushes a time
late; a sliding window follows the drift between the two crystals). A backlog or a replay
gives no sample: its lines arrive late on purpose.

The estimate is kept in the monotonic clock's terms, so that a step of the Pi's wall clock
(NTP at boot, an operator setting the time) neither corrupts it nor lingers in the window;
it is converted to the wall clock at the moment a row is written (`measured_wall`) and for
the journal (`offset_wall_ms`), which is what a restarted banc.py and the readers use.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Optional

WINDOW_S = 300.0
"""How far back the smallest receipt-minus-uptime sample is looked for (drift is followed within this)."""
WARMUP_SAMPLES = 10
"""The first samples of a boot set the offset freely (the smallest so far): a first line delayed by the network is corrected at once."""
RESEED_S = 1.0
"""A live line that would have been measured more than this after its receipt by a seeded offset
proves the seed wrong (the Pi's clock was not yet set when banc.py started): estimate afresh."""
RESEED_EARLY_S = 60.0
"""A live line that a seeded offset puts more than this before its receipt (twice in a row) proves
the seed wrong the other way: a live line is never a minute late."""
MAX_SLEW = 200e-6
"""After the warm-up the offset moves by at most this per second (200 ppm): real crystals drift by
tens of ppm, so the estimate follows them; a clock that runs at another pace altogether (a simulator
at x400) keeps its own, and its durations stay its own."""


class OffsetEstimator:
    """The offset of one ESP boot's clock, in monotonic seconds at uptime 0.

    Each live line gives a sample, receipt minus uptime: the offset plus the network delay.
    The estimate is the smallest sample of the last `window_s` seconds (a monotonic deque: the
    front is the minimum, samples that can never be it again are dropped at once), reached
    freely during the first `warmup_samples` samples and then at most `max_slew` s per second.
    """

    def __init__(self, window_s: float = WINDOW_S, warmup_samples: int = WARMUP_SAMPLES,
                 max_slew: float = MAX_SLEW) -> None:
        self.window_s = window_s
        self.warmup_samples = warmup_samples
        self.max_slew = max_slew
        self.samples = 0
        self._window: collections.deque[tuple[float, float]] = collections.deque()  # (mono_s, sample_s)
        self._offset: Optional[float] = None
        self._updated_s = 0.0
        self._seeded = False  # the offset came from the journal, not from live lines
        self._first_live: Optional[tuple[float, int]] = None  # (mono_s, uptime_ms) of the first live line since
        self._early_lines = 0  # consecutive live lines the seed puts RESEED_EARLY_S before their receipt

    def add(self, mono_s: float, uptime_ms: int) -> None:
        """One live line received at monotonic time `mono_s` with the ESP's `uptime_ms`."""
        sample = mono_s - uptime_ms / 1000.0
        if self._seeded and self._offset is not None and sample > self._offset + RESEED_EARLY_S:
            # Live lines measured minutes before their receipt by the seed: the seed was journaled
            # while the Pi's clock was wrong (no RTC, NTP not yet synchronised), and a clock step
            # is set aside within a run. Twice in a row: estimate afresh from the live lines.
            if self._early_lines >= 1:
                self._window.clear()
                self._offset, self.samples, self._seeded = None, 0, False
            self._early_lines += 1
        else:
            self._early_lines = 0
        if self._seeded and self._offset is not None and sample < self._offset - RESEED_S:
            if self._first_live is None:
                self._first_live = (mono_s, uptime_ms)
            elif not self._accelerated(mono_s, uptime_ms):
                # Not a clock running faster than the Pi's (a simulator): the seed is wrong.
                self._window.clear()
                self._offset, self.samples, self._seeded = None, 0, False
        self._push(mono_s, sample)
        target = self._window[0][1]
        self.samples += 1
        if self._offset is None or self.samples <= self.warmup_samples:
            self._offset = target
        else:
            slew = self.max_slew * max(0.0, mono_s - self._updated_s)
            self._offset = min(max(target, self._offset - slew), self._offset + slew)
        self._updated_s = mono_s

    def seed(self, mono_s: float, offset_s: float) -> None:
        """An offset known otherwise (the folder's estimate at a restart), as if it were the warmed-up estimate at `mono_s`."""
        self._push(mono_s, offset_s)
        self._offset, self._updated_s = offset_s, mono_s
        self.samples = max(self.samples, self.warmup_samples)
        self._seeded = True

    def _accelerated(self, mono_s: float, uptime_ms: int) -> bool:
        """Whether the ESP's clock ran at least 1.5 times faster than the Pi's since the first live line."""
        assert self._first_live is not None
        first_mono, first_uptime = self._first_live
        if mono_s - first_mono <= 0.0:
            return True  # not measurable yet: keep the seed one more line
        return (uptime_ms - first_uptime) / 1000.0 / (mono_s - first_mono) > 1.5

    def _push(self, mono_s: float, sample_s: float) -> None:
        window = self._window
        while window and window[-1][1] >= sample_s:
            window.pop()
        window.append((mono_s, sample_s))
        while window[0][0] < mono_s - self.window_s:
            window.popleft()

    @property
    def offset_s(self) -> Optional[float]:
        """The estimate (monotonic seconds at uptime 0), or None before any sample."""
        return self._offset

    def __len__(self) -> int:
        return len(self._window)


WALL_STEP_S = 0.010
"""A change of the wall clock against the monotonic clock beyond this, once steps are set aside, is
NTP's slew adding up: the anchor follows it. Below it, it is the jitter between reading one clock
and the other, which never moves a stamp."""
CLOCK_STEP_S = 0.128
"""A jump of the wall clock against the monotonic clock between two readings beyond this (plus
SLEW_MAX times the time between them) is a step: NTP steps the clock beyond 128 ms, an operator
sets the date by hand. A slew adds at most 500 ppm."""
SLEW_MAX = 500e-6


class WallAnchor:
    """The wall clock minus the monotonic clock, held steady: a step of the wall clock never moves it (docs/protocole.md §8).

    Read jitter (below `step_s`) is ignored; a slow slew is followed; a step (a jump between two
    readings beyond CLOCK_STEP_S) is set aside, so that times keep the monotonic clock's
    intervals, and is handed out once by `take_step` to be journaled.
    """

    def __init__(self, step_s: float = WALL_STEP_S) -> None:
        self.step_s = step_s
        self.value_s: Optional[float] = None
        self._last: Optional[tuple[float, float]] = None  # (mono_s, reading) of the previous reading
        self._set_aside_s = 0.0  # the steps seen so far, added up
        self._new_steps: list[float] = []
        self._last_wall: Optional[datetime] = None

    def update(self, wall: datetime, mono_s: float) -> float:
        """The anchor after one (wall, monotonic) reading, seconds."""
        if self.value_s is not None and self._last_wall is wall and self._last is not None and self._last[0] == mono_s:
            return self.value_s  # the same reading again (one event reads the clocks once)
        self._last_wall = wall
        reading = wall_minus_mono_s(wall, mono_s)
        if self._last is not None:
            last_mono, last_reading = self._last
            jump = reading - last_reading
            if abs(jump) > CLOCK_STEP_S + SLEW_MAX * abs(mono_s - last_mono):
                self._set_aside_s += jump
                self._new_steps.append(jump)
        self._last = (mono_s, reading)
        steady = reading - self._set_aside_s
        if self.value_s is None or abs(steady - self.value_s) > self.step_s:
            self.value_s = steady
        return self.value_s

    def take_step(self) -> Optional[float]:
        """The wall clock's steps (seconds, added up) seen since the last call, or None."""
        if not self._new_steps:
            return None
        total, self._new_steps = sum(self._new_steps), []
        return total

    def unstepped(self, wall: datetime) -> datetime:
        """A wall-clock reading with the steps seen so far taken out: the reading itself while there was none."""
        if not self._set_aside_s:
            return wall
        return wall - timedelta(seconds=self._set_aside_s)


def from_unix_ms(unix_ms: int, like: datetime) -> datetime:
    """Unix milliseconds as a datetime in `like`'s timezone, exactly (no float rounding)."""
    return (_EPOCH + timedelta(milliseconds=unix_ms)).astimezone(like.tzinfo)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wall_minus_mono_s(wall: datetime, mono_s: float) -> float:
    """The wall clock minus the monotonic clock at one instant, seconds."""
    return wall.timestamp() - mono_s


def offset_wall_ms(offset_mono_s: float, anchor_s: float) -> int:
    """A monotonic offset as Unix milliseconds at uptime 0 (what the journal keeps), given the wall anchor."""
    return round((offset_mono_s + anchor_s) * 1000.0)


def offset_mono_s(offset_wall_ms_value: int, anchor_s: float) -> float:
    """The journal's offset (Unix ms at uptime 0) in monotonic seconds, given the wall anchor."""
    return offset_wall_ms_value / 1000.0 - anchor_s


def measured_wall(offset_mono: float, uptime_ms: int, anchor_s: float, like: datetime) -> datetime:
    """When a line was measured, on the wall clock (`anchor_s` = wall minus monotonic), in `like`'s timezone.

    In whole milliseconds: lines 1 000 ms apart on the ESP are stamped exactly 1.000 s apart.
    Not bounded by the receipt: a few milliseconds after it while the estimate catches up with a
    drift, and far after it for a simulator running faster than real time, whose lines are
    spaced by its own clock.
    """
    return from_unix_ms(offset_wall_ms(offset_mono, anchor_s) + uptime_ms, like)
