"""esp_clock: the offset between the Pi's clock and an ESP boot's uptime, from live lines only (pure, injected times)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

import esp_clock
import record
from esp_clock import OffsetEstimator

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=record.LOCAL_TZ)
BOOT_S = 1000.0  # monotonic time at which the ESP booted (the true offset)


def feed(estimator: OffsetEstimator, seconds: int, delay_s, rate: float = 1.0, start_s: float = 0.0) -> None:
    """One line per second for `seconds`, measured at BOOT_S + t*rate on the ESP's clock, received `delay_s(t)` later."""
    for t in range(seconds):
        mono = BOOT_S + start_s + t
        uptime_ms = round((start_s + t) * rate * 1000.0)
        estimator.add(mono + delay_s(t), uptime_ms)


@pytest.mark.parametrize("name, delay_s, tolerance_s", [
    ("constant 5 ms", lambda t: 0.005, 0.0051),
    ("first line 2 s late, then 5 ms", lambda t: 2.0 if t == 0 else 0.005, 0.0051),
    ("jitter 5..300 ms", lambda t: 0.005 + 0.295 * random.Random(t).random(), 0.02),
    ("a 10 s stall every minute", lambda t: 10.0 if t % 60 == 30 else 0.004, 0.0041),
])
def test_network_delay_never_pushes_the_estimate_late(name: str, delay_s, tolerance_s: float) -> None:
    estimator = OffsetEstimator()
    feed(estimator, 900, delay_s)
    assert estimator.offset_s is not None
    assert 0.0 <= estimator.offset_s - BOOT_S <= tolerance_s, name


@pytest.mark.parametrize("ppm", [-50.0, 30.0])
def test_a_real_drift_is_followed(ppm: float) -> None:
    # The ESP's crystal runs `ppm` fast or slow: after 4 hours its uptime is off by 0.7 s.
    estimator = OffsetEstimator()
    hours = 4
    feed(estimator, hours * 3600, lambda t: 0.003, rate=1 + ppm * 1e-6)
    assert estimator.offset_s is not None
    true_now = BOOT_S - (hours * 3600 - 1) * ppm * 1e-6  # receipt - uptime at the last line, without delay
    assert abs(estimator.offset_s - true_now) < 0.03


def test_a_simulator_at_x400_keeps_its_own_pace() -> None:
    # Uptime runs 400 times faster than the Pi's clock: past the warm-up the offset barely moves,
    # so consecutive lines are one simulated second apart by measured_at.
    estimator = OffsetEstimator()
    times = []
    for k in range(4000):
        mono = BOOT_S + k / 400.0
        uptime_ms = k * 1000
        estimator.add(mono + 0.001, uptime_ms)
        offset = estimator.offset_s
        assert offset is not None
        times.append(offset + uptime_ms / 1000.0)
    spacing = [b - a for a, b in zip(times[20:], times[21:])]
    assert min(spacing) == pytest.approx(1.0, abs=1e-3) and max(spacing) == pytest.approx(1.0, abs=1e-3)


def test_a_seeded_offset_stamps_a_backlog_without_any_sample() -> None:
    estimator = OffsetEstimator()
    estimator.seed(5000.0, BOOT_S)
    assert estimator.offset_s == BOOT_S
    estimator.add(5000.5, round((5000.5 - BOOT_S - 0.004) * 1000))  # a live line 4 ms late: no change beyond the slew
    assert estimator.offset_s == pytest.approx(BOOT_S, abs=1e-6)


def test_a_wall_clock_step_moves_the_journal_offset_not_the_estimate() -> None:
    estimator = OffsetEstimator()
    feed(estimator, 60, lambda t: 0.002)
    offset = estimator.offset_s
    assert offset is not None
    mono = BOOT_S + 60
    before = esp_clock.offset_wall_ms(offset, esp_clock.wall_minus_mono_s(T0, mono))
    stepped = T0 + timedelta(hours=1)  # NTP sets the Pi's clock an hour later
    anchor = esp_clock.WallAnchor()
    anchor.update(T0, mono)
    stepped_anchor = anchor.update(stepped, mono)  # a real step moves the anchor
    assert esp_clock.offset_wall_ms(offset, stepped_anchor) - before == 3600_000
    # A line measured 2 s before receipt is 2 s before receipt on either clock.
    uptime_ms = round((mono - 2.0 - offset) * 1000)
    assert esp_clock.measured_wall(offset, uptime_ms, stepped_anchor, stepped) == pytest.approx(
        stepped - timedelta(seconds=2), abs=timedelta(milliseconds=1))
    assert esp_clock.offset_mono_s(esp_clock.offset_wall_ms(offset, stepped_anchor), stepped_anchor) == pytest.approx(
        offset, abs=1e-3)


def test_the_wall_anchor_ignores_read_jitter_so_stamps_1000_ms_apart_stay_1000_ms_apart() -> None:
    anchor = esp_clock.WallAnchor()
    offset = BOOT_S
    stamps = []
    for i, jitter_s in enumerate([0.0, 0.0007, -0.0004, 0.0009, 0.0]):  # wall and monotonic read a little apart
        mono = BOOT_S + 100 + i
        wall = T0 + timedelta(seconds=100 + i + jitter_s)
        stamps.append(esp_clock.measured_wall(offset, (100 + i) * 1000, anchor.update(wall, mono), wall))
    assert [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])] == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("rate, kept", [(1.0, False), (400.0, True)])
def test_a_seed_contradicted_by_live_lines_is_dropped_unless_the_clock_runs_fast(rate: float, kept: bool) -> None:
    # The journal's offset converted while the Pi's clock was an hour late (no RTC, NTP not yet
    # synchronised): live lines would be measured an hour after their receipt.
    estimator = OffsetEstimator()
    estimator.seed(BOOT_S + 4999.0, BOOT_S + 3600.0)  # at the restart, a second before the first live line
    for k in range(20):
        mono = BOOT_S + 5000.0 + k / rate
        estimator.add(mono + 0.004, round((5000.0 + k) * 1000))
    assert estimator.offset_s is not None
    if kept:  # a simulator: its own pace, from the seed on
        assert estimator.offset_s == pytest.approx(BOOT_S + 3600.0, abs=0.01)
    else:
        assert estimator.offset_s == pytest.approx(BOOT_S + 0.004, abs=1e-6)
