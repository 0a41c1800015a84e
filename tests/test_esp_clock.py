"""esp_clock: the offset between the Pi's clock and an ESP boot's uptime, from live lines only (pure, injected times)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from banclfp.analysis import measures as analysis
from banclfp.recording import esp_clock, record
from banclfp.recording.esp_clock import OffsetEstimator

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=record.LOCAL_TZ)
BOOT_S = 1000.0  # monotonic time at which the ESP booted (the true offset)


def feed(estimator: OffsetEstimator, seconds: int, delay_s: Callable[[int], float], rate: float = 1.0,
         start_s: float = 0.0) -> None:
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
def test_network_delay_never_pushes_the_estimate_late(name: str, delay_s: Callable[[int], float], tolerance_s: float) -> None:
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


@pytest.mark.parametrize("step_s", [3600.0, -3600.0, 0.5, -86400.0 * 365])
def test_a_wall_clock_step_moves_neither_the_estimate_nor_the_stamps_and_is_reported_once(step_s: float) -> None:
    # Protocol v3, docs/protocole.md §8 (it used to move the anchor, and every stamp after it, by the step).
    estimator = OffsetEstimator()
    feed(estimator, 60, lambda t: 0.002)
    offset = estimator.offset_s
    assert offset is not None
    mono = BOOT_S + 60
    anchor = esp_clock.WallAnchor()
    before = anchor.update(T0, mono)
    stepped = T0 + timedelta(seconds=1 + step_s)  # a second later, the clock set by NTP or by hand
    assert anchor.update(stepped, mono + 1) == before
    assert anchor.take_step() == pytest.approx(step_s, abs=1e-6)
    assert anchor.take_step() is None  # reported once
    uptime_ms = round((mono + 1 - 2.0 - offset) * 1000)  # measured 2 s before this receipt
    assert esp_clock.measured_wall(offset, uptime_ms, before, stepped) == pytest.approx(
        T0 + timedelta(seconds=1 - 2), abs=timedelta(milliseconds=1))
    assert anchor.unstepped(stepped) == T0 + timedelta(seconds=1)
    assert esp_clock.WallAnchor().unstepped(stepped) is stepped  # no step seen: the reading itself


def test_the_wall_anchor_follows_a_slew_but_not_read_jitter() -> None:
    anchor = esp_clock.WallAnchor()
    first = anchor.update(T0, BOOT_S)
    for k in range(1, 101):  # NTP slews the clock 500 ppm for 100 s: 50 ms in all
        anchor.update(T0 + timedelta(seconds=k * (1 + 500e-6)), BOOT_S + k)
    assert anchor.take_step() is None
    assert anchor.value_s == pytest.approx(first + 0.05, abs=esp_clock.WALL_STEP_S)


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


# --------------------------------------------------------------------------- the journal's boots, read back

UNIX0 = 1_700_000_000


def at_s(s: float) -> datetime:
    return datetime.fromtimestamp(UNIX0 + s, tz=record.LOCAL_TZ)


def three_boots(numbered: bool) -> tuple[bytes, list[bytes]]:
    """data.csv and journal lines of 3 ESP boots (at 7, 100 and 200 s): each a backlog of 2 lines stamped
    at receipt, then a live line that gave the boot its offset."""
    def stamp(s: float) -> str:
        return record.iso(at_s(s), millis=True)

    rows = [",".join(record.DATA_CSV_HEADER)]
    journal = [record.encode_event(record.StartEvent(stamp(0), "RW-ab12cd", "banc1", stamp(0)))]
    for k, booted in enumerate((7.0, 100.0, 200.0)):
        received = booted + 10.0
        for seq, uptime in ((0, 1000), (1, 2000)):  # the backlog: measured_at = receipt
            t = received + seq / 1000
            rows.append(f"{stamp(t)},3,{seq},52.1,-10.0,50.0,25.0,1.0,51.2,3250,3270,0,{uptime},{stamp(t)}")
        live = received + 0.010
        rows.append(f"{stamp(live)},3,2,52.1,-10.0,50.0,25.0,1.0,51.2,3250,3270,0,9000,{stamp(booted + 9.0)}")
        journal.append(record.encode_event(record.EspBootEvent(stamp(received), row_t=stamp(received), seq=0,
                                                               uptime_ms=1000, boot=k if numbered else None)))
        journal.append(record.encode_event(record.EspClockEvent(stamp(live), boot=k,
                                                                offset_ms=round((UNIX0 + booted) * 1000))))
    return ("\n".join(rows) + "\n").encode(), journal


def measured_by_receipt(raw: bytes, journal: list[bytes]) -> dict[float, float]:
    data = analysis.parse_data_csv(raw, record.fold_events(record.parse_events(b"".join(journal))[0]).esp_boots)
    assert data.received_s is not None
    return {round(float(r) - UNIX0, 3): round(float(m) - UNIX0, 3) for r, m in zip(data.received_s, data.unix_s)}


def test_an_unreadable_boot_line_leaves_the_later_boots_offsets_on_their_own_rows() -> None:
    raw, journal = three_boots(numbered=True)
    journal[3] = b'{"t":"2023-11-14T23:15:\x00\x00\x00\n'  # boot 1's line, garbled
    assert record.parse_events(b"".join(journal))[1] == 1
    assert measured_by_receipt(raw, journal) == {
        17.0: 8.0, 17.001: 9.0, 17.01: 16.0,  # boot 0: its backlog recomputed from its offset
        110.0: 110.0, 110.001: 110.001, 110.01: 109.0,  # boot 1 (no line): its rows keep their stamps
        210.0: 201.0, 210.001: 202.0, 210.01: 209.0,  # boot 2: its own offset, not boot 1's
    }


def test_a_journal_without_boot_numbers_still_recomputes_every_boot() -> None:
    raw, old = three_boots(numbered=False)
    expected = {17.0: 8.0, 17.001: 9.0, 17.01: 16.0, 110.0: 101.0, 110.001: 102.0, 110.01: 109.0,
                210.0: 201.0, 210.001: 202.0, 210.01: 209.0}
    assert measured_by_receipt(raw, old) == expected
    assert measured_by_receipt(raw, three_boots(numbered=True)[1]) == expected
