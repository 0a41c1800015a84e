"""esp_clock.py — when a BMS line was measured, from the ESP's own clock (contract v2 §3b). Pure.

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
from datetime import datetime, timedelta
from typing import Optional

WINDOW_S = 300.0
"""How far back the smallest receipt-minus-uptime sample is looked for (drift is followed within this)."""


class OffsetEstimator:
    """Smallest (receipt - uptime) over the last `window_s` seconds of live samples, monotonic seconds.

    A monotonic deque: the front is the minimum; samples that can never be the minimum
    again (older and larger than a newer one) are dropped at once, so memory stays small.
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (mono_s, offset_s)

    def add(self, mono_s: float, uptime_ms: int) -> None:
        """One live line received at monotonic time `mono_s` with the ESP's `uptime_ms`."""
        self.seed(mono_s, mono_s - uptime_ms / 1000.0)

    def seed(self, mono_s: float, offset_s: float) -> None:
        """An offset known otherwise (the folder's estimate at a restart), as if sampled at `mono_s`."""
        samples = self._samples
        while samples and samples[-1][1] >= offset_s:
            samples.pop()
        samples.append((mono_s, offset_s))
        while samples[0][0] < mono_s - self.window_s:
            samples.popleft()

    @property
    def offset_s(self) -> Optional[float]:
        """The estimate (monotonic seconds at uptime 0), or None before any sample."""
        return self._samples[0][1] if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)


def wall_minus_mono_s(wall: datetime, mono_s: float) -> float:
    """The wall clock minus the monotonic clock at one instant, seconds."""
    return wall.timestamp() - mono_s


def offset_wall_ms(offset_mono_s: float, wall: datetime, mono_s: float) -> int:
    """A monotonic offset as Unix milliseconds at uptime 0 (what the journal keeps)."""
    return round((offset_mono_s + wall_minus_mono_s(wall, mono_s)) * 1000.0)


def offset_mono_s(offset_wall_ms_value: int, wall: datetime, mono_s: float) -> float:
    """The journal's offset (Unix ms at uptime 0) in monotonic seconds, at the instant (wall, mono_s)."""
    return offset_wall_ms_value / 1000.0 - wall_minus_mono_s(wall, mono_s)


def measured_wall(offset_mono: float, uptime_ms: int, wall: datetime, mono_s: float) -> datetime:
    """When a line was measured, on the wall clock of the instant (wall, mono_s); never after that instant.

    A time later than the receipt can only be an estimate gone stale (drift past the window):
    the receipt is the better bound.
    """
    age_s = mono_s - (offset_mono + uptime_ms / 1000.0)
    return wall - timedelta(seconds=max(0.0, age_s))
