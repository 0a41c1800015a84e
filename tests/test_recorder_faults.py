"""The recorder's single-fault rules (docs/protocole.md §2, §5, §8), decided without I/O: tables and properties.

The whole-test matrix (each fault at each position, graded) is tests/test_single_fault.py; this
file pins each rule of RecorderCore and EspTimeline on its own.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings, strategies as st

from banclfp.recording import bench_process as banc, record
from banclfp.recording.recorder import (
    ANNOUNCE_WAIT_S,
    DATA,
    JOURNAL,
    REJECTED,
    TL_BACK,
    TL_BOOT,
    TL_FORWARD,
    TL_IMPLAUSIBLE,
    TL_NONE,
    TL_SAME,
    Alert,
    Append,
    Command,
    Effect,
    EspTimeline,
    Instant,
    Log,
    RecorderCore,
)
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import bms_line
from banclfp.wire import protocol

T0 = datetime(2026, 12, 1, 10, 0, 0).astimezone()


def at(s: float, wall_shift_s: float = 0.0) -> Instant:
    return Instant(T0 + timedelta(seconds=s + wall_shift_s), s)


def line(seq: int, uptime_ms: int, esp_step: Optional[int] = 2, **values: float) -> bytes:
    text = f"{bms_line(seq, **values)},{uptime_ms}"
    return (text if esp_step is None else f"{text},{esp_step}").encode()


def core(step: int = 2) -> RecorderCore:
    c = RecorderCore("banc1", step, fsync_interval_s=1.0, bms_timeout_s=30.0)
    c.backlog_received(at(0))
    return c


def rows(effects: list[Effect]) -> list[list[str]]:
    return [e.data.decode().rstrip("\n").split(",") for e in effects if isinstance(e, Append) and e.file == DATA]


def rejected(effects: list[Effect]) -> list[str]:
    return [e.data.decode() for e in effects if isinstance(e, Append) and e.file == REJECTED]


def journal(effects: list[Effect]) -> list[str]:
    return [e.data.decode() for e in effects if isinstance(e, Append) and e.file == JOURNAL]


def alerts(effects: list[Effect]) -> list[str]:
    return [e.text for e in effects if isinstance(e, Alert)]


class EspWithRing:
    """Plays an ESP into a core, second by second, answering its replay requests from its ring at once."""

    def __init__(self, c: RecorderCore, ring: dict[int, bytes]) -> None:
        self.c, self.ring = c, ring
        self.written: list[tuple[int, int]] = []  # (seq, uptime_ms) of every data.csv row
        self.events: list[str] = []  # journal lines

    def send(self, payload: bytes, now: float) -> None:
        """One line at second `now` (then the core's tick)."""
        self._apply(self.c.on_bms(payload, False, at(now)), now)
        self._apply(self.c.tick(at(now), 0.0), now)

    def _apply(self, effects: list[Effect], now: float) -> None:
        self.written.extend((int(r[2]), int(r[12])) for r in rows(effects))
        self.events.extend(journal(effects))
        for command in [e.text for e in effects if isinstance(e, Command)]:
            replay = protocol.parse_command(command.encode())
            assert isinstance(replay, protocol.ReplayCommand)
            for seq in range(replay.first, replay.last + 1):
                if seq in self.ring:
                    self._apply(self.c.on_replay(self.ring[seq], False, at(now)), now)


def steady(c: RecorderCore, count: int, first_seq: int = 100, esp_step: int = 2) -> list[Effect]:
    """`count` lines at 1 Hz from seq `first_seq` (uptime = seq s + 5 s)."""
    out: list[Effect] = []
    for seq in range(first_seq, first_seq + count):
        out += c.on_bms(line(seq, (seq + 5) * 1000, esp_step), False, at(seq))
    return out


# =========================================================================== EspTimeline: one table


@pytest.mark.parametrize(
    "ref, seq, uptime_ms, verdict",
    [
        ((100, 105_000), 101, 106_000, TL_FORWARD),  # the next line
        ((100, 105_000), 131, 136_000, TL_FORWARD),  # 30 lines lost on the way: a gap
        ((100, 105_000), 110, 115_500, TL_FORWARD),  # a little jitter
        ((100, 105_000), 101, 115_000, TL_FORWARD),  # a 10 s stop/rest line (one every 10 s)
        ((100, 105_000), 100 ^ (1 << 20), 106_000, TL_IMPLAUSIBLE),  # seq bit flip: a million lines in 1 s
        ((100, 105_000), 100 ^ (1 << 3), 106_000, TL_IMPLAUSIBLE),  # 8 lines in 1 s
        ((100, 105_000), 101, 105_000 ^ (1 << 40), TL_IMPLAUSIBLE),  # a clock decades ahead
        ((100, 105_000), 101, 105_000 + 65_536, TL_IMPLAUSIBLE),  # 65 s for one line
        ((100, 105_000), 101, 90_000, TL_IMPLAUSIBLE),  # seq on, clock back
        ((100, 105_000), 100, 105_000, TL_SAME),  # the same line
        ((100, 105_000), 90, 95_000, TL_BACK),  # an older line of this boot (or a boot: text decides)
        ((2, 3_000), 2, 1_500, TL_BOOT),  # the same seq, clock back: one seq never holds two lines
        ((100, 105_000), 0, 1_500, TL_BACK),  # a reboot, or an older line: the text decides (SeqTracker)
        ((5, 9_000), 0, 9_500, TL_BOOT),  # a reboot in the first minute (a reboot loop)
        ((100, 105_000), 36, 106_000, TL_IMPLAUSIBLE),  # seq back (bit flip down), clock on
        ((100, 105_000), 90_000, 50_000, TL_IMPLAUSIBLE),  # seq back, yet more lines than its clock allows
        (None, 7, 8_000, TL_NONE),  # nothing to judge against
    ],
)
def test_the_timeline_judges_seq_and_uptime_against_each_other(
        ref: Optional[tuple[int, int]], seq: int, uptime_ms: int, verdict: str) -> None:
    timeline = EspTimeline()
    timeline.ref = ref
    bms = protocol.parse_bms_line(line(seq, uptime_ms))
    assert timeline.judge(bms, 0.0, live=True)[0] == verdict


@pytest.mark.parametrize("jump, verdict", [(5, TL_NONE), (40, TL_IMPLAUSIBLE), (-3, TL_NONE), (-5000, TL_IMPLAUSIBLE),
                                           (-10_004, TL_NONE)])
def test_without_uptime_a_live_seq_jump_is_judged_against_the_time_elapsed(jump: int, verdict: str) -> None:
    # -3: a copy, for the seq rules to tell; -10004: back to seq 0, a reboot.
    timeline = EspTimeline()
    for k in range(5):  # lines 1 s apart
        timeline.accept(protocol.parse_bms_line(bms_line(10_000 + k)), float(k), True, TL_FORWARD)
    nxt = protocol.parse_bms_line(bms_line(10_004 + jump))
    assert timeline.judge(nxt, 5.0, live=True)[0] == verdict
    assert timeline.judge(nxt, 5.0, live=False)[0] == TL_NONE  # a backlog arrives bunched: no judgement


# =========================================================================== garbled lines


def test_a_bit_flipped_seq_is_rejected_and_its_line_replayed_not_a_gap_of_a_million() -> None:
    c = core()
    steady(c, 20)
    flipped = c.on_bms(line(120 ^ (1 << 20), 125_000), False, at(120))
    assert rows(flipped) == [] and "implausible" in rejected(flipped)[0]
    after = c.on_bms(line(121, 126_000), False, at(121))
    assert [r[2] for r in rows(after)] == ["121"]
    assert [e.text for e in after if isinstance(e, Command)] == ["replay 120 120"]  # only the one line
    replayed = c.on_replay(line(120, 125_000), False, at(122))
    assert [r[2] for r in rows(replayed)] == ["120"]
    assert c.counters["seq_restart_count"] == 0 and c.counters["seq_gap_count"] == 1


def test_a_line_whose_clock_is_65_s_ahead_is_rejected_and_replayed() -> None:
    c = core()
    steady(c, 20)
    assert rows(c.on_bms(line(120, 125_000 + 65_536), False, at(120))) == []
    assert [r[2] for r in rows(c.on_bms(line(121, 126_000), False, at(121)))] == ["121"]
    assert c.boots_seen == 1


def test_a_line_within_tolerance_but_contradicted_by_the_next_is_asked_for_again() -> None:
    # The previous line's clock was garbled by less than the tolerance: it was written; the next
    # line contradicts it and follows the one before: it is taken at once, and the ESP is asked
    # for that previous seq again (its true line is written; a copy would not be).
    c = core()
    steady(c, 20)
    c.on_bms(line(120, 125_000 + 14_000), False, at(120))  # 14 s ahead: within what a stall allows
    effects = c.on_bms(line(121, 126_000), False, at(121))
    assert [r[2] for r in rows(effects)] == ["121"] and rejected(effects) == []
    assert [e.text for e in effects if isinstance(e, Command)] == ["replay 120 120"]
    assert [r[2] for r in rows(c.on_replay(line(120, 125_000), False, at(122)))] == ["120"]
    assert c.boots_seen == 1 and c.counters["seq_restart_count"] == 0


def test_lines_that_agree_with_each_other_but_not_with_the_previous_ones_are_taken_after_three() -> None:
    # An ESP that rebooted while banc.py was away and waited for a command: its seq went beyond
    # the previous boot's, its clock did not. Three agreeing lines make it a boot.
    c = core()
    steady(c, 20)
    effects: list[Effect] = []
    for seq in (300, 301, 302):
        effects += c.on_bms(line(seq, (seq - 200) * 1000), False, at(seq))
    assert [r[2] for r in rows(effects)] == ["300", "301", "302"]
    assert len(rejected(effects)) == 3 and any("incohérentes" in a for a in alerts(effects))
    assert c.boots_seen == 2 and c.counters["seq_restart_count"] == 1


def test_an_esp_rebooting_again_and_again_is_recorded_boot_by_boot_and_reported() -> None:
    c = core()
    steady(c, 5)
    effects: list[Effect] = []
    for k, uptime in enumerate((1_300, 1_250, 1_400, 1_350)):  # each boot sends one line, seq 0
        effects += c.on_bms(line(0, uptime, 9, voltage_v=52.0 + k / 10), False, at(200 + 20 * k))
    assert len(rows(effects)) == 4
    assert sum('"esp_boot"' in j for j in journal(effects)) == 4
    assert c.counters["seq_restart_count"] == 4 and c.counters["duplicate_count"] == 0
    assert sum("redémarré" in a for a in alerts(effects)) == 1  # once per burst


def test_a_redelivered_copy_of_a_12_field_line_is_still_a_copy_after_a_restart() -> None:
    # data.csv keeps no field 12: the text remembered from it must match the line's without it.
    c = core()
    remembered = {119: line(119, 124_000).rpartition(b",")[0]}
    c.resume({}, last_seq=119, last_uptime_ms=124_000, recent=remembered, boots=[record.EspBoot("x", 0, 0)],
             now=at(0))
    effects = c.on_bms(line(119, 124_000), True, at(1))
    assert rows(effects) == [] and c.counters["duplicate_count"] == 1 and c.counters["seq_restart_count"] == 0


# =========================================================================== the ESP's phase


def test_rows_take_the_esp_phase_and_a_later_phase_is_recovered_from_two_lines() -> None:
    c = core(step=2)
    steady(c, 5, esp_step=2)
    one = c.on_bms(line(105, 110_000, 3), False, at(105))
    assert [r[1] for r in rows(one)] == ["3"] and c.step == 2  # one line alone moves nothing
    two = c.on_bms(line(106, 111_000, 3), False, at(106))
    assert c.step == 3 and c.bench_step_dirty
    assert any('"recovered":"lines"' in j and '"step":3' in j for j in journal(two))
    assert alerts(two) and "Phase 3" in alerts(two)[0]
    late = c.on_step(b"3", False, at(107))  # the step message, late: journaled, the phase no longer "recovered"
    assert journal(late) == [f'{{"t":"{record.iso(at(107).wall, millis=True)}","event":"step","step":3}}\n']
    assert c.on_step(b"3", False, at(108)) == []  # and once only


@pytest.mark.parametrize("esp_step, row_step", [(1, "1"), (4, "4"), (5, "5"), (9, "9"), (0, "3"), (None, "3")])
def test_a_row_is_written_in_the_esp_phase_and_never_moves_the_test_backwards(
        esp_step: Optional[int], row_step: str) -> None:
    c = core(step=3)
    steady(c, 3, esp_step=3)
    effects: list[Effect] = []
    for seq in (103, 104, 105):
        effects += c.on_bms(line(seq, (seq + 5) * 1000, esp_step), False, at(seq))
    assert {r[1] for r in rows(effects)} == {row_step}
    assert c.step == (esp_step if esp_step in (4, 5) else 3)  # later phases recovered; never an earlier one
    assert c.ended == (5 if esp_step == 5 else None)


def test_a_later_phase_4_is_recovered_but_a_stop_is_not_taken_from_the_lines() -> None:
    c = core(step=3)
    steady(c, 3, esp_step=3)
    steady(c, 2, first_seq=103, esp_step=4)
    assert c.step == 4
    steady(c, 3, first_seq=105, esp_step=9)  # a stopped ESP: its step message says it, or the kiosk
    assert c.step == 4 and c.ended is None


def test_the_step_is_announced_only_once_the_esp_phase_is_known_or_after_a_wait() -> None:
    c = RecorderCore("banc1", 2, fsync_interval_s=1.0, bms_timeout_s=30.0)
    c.resume({}, rows=500)
    c.backlog_received(at(10))
    assert c.announce_step(at(11)) is None  # no live line yet
    c.on_bms(line(100, 105_000, 3), False, at(11))
    assert c.announce_step(at(11.5)) is None  # the ESP seems further: wait for a second line
    c.on_bms(line(101, 106_000, 3), False, at(12))
    assert c.announce_step(at(12)) == 3  # never the older 2
    fresh = RecorderCore("banc1", 1, fsync_interval_s=1.0, bms_timeout_s=30.0)
    fresh.backlog_received(at(10))
    assert fresh.announce_step(at(10)) == 1  # a new test: nothing to wait for
    stopped = RecorderCore("banc1", 2, fsync_interval_s=1.0, bms_timeout_s=30.0)
    stopped.resume({}, rows=500)
    stopped.backlog_received(at(10))
    assert stopped.announce_step(at(10 + ANNOUNCE_WAIT_S - 0.1)) is None
    assert stopped.announce_step(at(10 + ANNOUNCE_WAIT_S)) == 2  # an ESP that sends nothing: announce anyway


# =========================================================================== other messages


@pytest.mark.parametrize("kind", [protocol.KIND_STEP, protocol.KIND_BMS, protocol.KIND_REPLAY, protocol.KIND_RI])
def test_a_retained_message_on_a_news_topic_is_rejected_never_acted_on(kind: str) -> None:
    topic = f"banc1/{kind}"
    assert protocol.is_stale_retained(topic, True) and not protocol.is_stale_retained(topic, False)
    c = core()
    effects = c.on_retained(topic, b"5", at(1))
    assert rejected(effects) and "retained" in rejected(effects)[0] and c.step == 2 and c.ended is None


@pytest.mark.parametrize("kind", [protocol.KIND_ESP_STATUS, protocol.KIND_BANC_STATUS, protocol.KIND_SECURITY])
def test_retained_status_topics_are_news_as_always(kind: str) -> None:
    assert not protocol.is_stale_retained(f"banc1/{kind}", True)


def test_a_message_whose_handling_raised_is_rejected_with_its_error() -> None:
    effects = core().on_failure("banc1/ri/results", b"{}", OverflowError("int too large"), at(1))
    assert "OverflowError" in rejected(effects)[0]
    assert any(isinstance(e, Log) and e.level == logging.ERROR for e in effects)


@pytest.mark.parametrize("payload, taken", [
    (b'{"ri_discharge": 0.02}', True),
    (b'{"ri_discharge": 0.0005}', True),
    (b'{"ri_discharge": 1.0}', True),
    (b'{"ri_discharge": 0.000000001}', False),
    (b'{"ri_discharge": 10.0}', False),
    (b'{"ri_charge": 0.02, "diffusion_charge": 5.0}', True),  # the absurd value alone is refused (below)
    (b'{"ri_discharge": 1' + b"0" * 400 + b"}", False),  # beyond a float: a clean reject, no OverflowError
])
def test_ri_outside_the_plausible_range_never_enters_a_mean(payload: bytes, taken: bool) -> None:
    effects = core().on_ri(payload, False, at(1))
    assert bool(journal(effects)) == taken
    assert bool(rejected(effects)) == (not taken or b"5.0" in payload)
    assert all('"diffusion_charge"' not in j for j in journal(effects))


def test_a_step_of_the_pi_clock_is_journaled_and_moves_no_measurement_time() -> None:
    c = core()
    stamps = []
    for k in range(30):
        shift = -3600.0 if k >= 15 else 0.0  # NTP steps the clock back an hour
        effects = c.on_bms(line(100 + k, (105 + k) * 1000), False, at(100 + k, shift))
        stamps.append(datetime.fromisoformat(rows(effects)[0][13]))
        if k == 15:
            assert any('"clock_step"' in j and '"delta_s":-3600.0' in j for j in journal(effects))
    assert {(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])} == {1.0}


# =========================================================================== one garbled line, anywhere: a property

FIELDS = st.sampled_from(["seq", "uptime_ms", "esp_step", "truncated"])


@settings(max_examples=150, deadline=None)
@given(where=st.integers(min_value=12, max_value=180), field=FIELDS, bit=st.integers(min_value=0, max_value=62))
def test_one_garbled_line_anywhere_never_loses_or_doubles_a_true_line(where: int, field: str, bit: int) -> None:
    # A steady 1 Hz ESP; one line garbled on the way (one bit of one field, or cut); the ESP
    # answers replays from its ring. Every true line ends up written once, no spurious boot.
    c = core()
    ring = {seq: line(seq, (seq + 5) * 1000) for seq in range(100, 300)}
    esp = EspWithRing(c, ring)
    for seq in range(100, 300):
        payload = ring[seq]
        if seq == 100 + where:
            bms = protocol.parse_bms_line(payload)
            if field == "truncated":
                payload = payload[: 5 + bit % 20]
            elif field == "seq":
                payload = protocol.encode_bms_line(bms.__class__(**{**bms.__dict__, "seq": bms.seq ^ (1 << (bit % 32))})).encode()
            elif field == "uptime_ms":
                garbled = (bms.uptime_ms or 0) ^ (1 << bit)
                payload = protocol.encode_bms_line(bms.__class__(**{**bms.__dict__, "uptime_ms": garbled})).encode()
            else:
                payload = protocol.encode_bms_line(bms.__class__(**{**bms.__dict__, "esp_step": (1, 3, 4)[bit % 3]})).encode()
        esp.send(payload, float(seq))
    written = esp.written
    true = {(seq, (seq + 5) * 1000) for seq in ring}
    missing = true - set(written)
    # A garble the ESP could have measured (a clock off by a few ms or s, another plausible phase)
    # cannot be told from the truth: that one line stands for itself, and only that one.
    garbled_seq = 100 + where
    assert missing <= {(garbled_seq, (garbled_seq + 5) * 1000)}, sorted(missing)[:5]
    if missing:
        assert [k for k in written if k[0] == garbled_seq and k not in true], "neither the line nor its garble"
    assert len([k for k in written if k in true]) == len(true - missing)  # none twice
    assert c.counters["seq_restart_count"] == 0
    assert c.step == 2  # one garbled phase field never moves the test


def test_a_restarted_recorder_learns_the_esp_period_from_the_lines_already_written() -> None:
    # A bench publisher at 50 lines/s: after a restart, a backlog that skipped lines is a gap
    # (20 ms a line), not lines coming faster than the 1 s firmware period allows.
    c = RecorderCore("banc1", 3, fsync_interval_s=1.0, bms_timeout_s=30.0)
    recent = {seq: f"{bms_line(seq)},{1000 + 20 * seq}".encode() for seq in range(50, 100)}
    c.resume({}, rows=100, last_seq=99, last_uptime_ms=1000 + 20 * 99, recent=recent,
             boots=[record.EspBoot("x", 0, 1000)], now=at(0))
    assert c.timeline.period_ms == 20.0
    effects = c.on_bms(f"{bms_line(150)},{1000 + 20 * 150}".encode(), False, at(1))
    assert [r[2] for r in rows(effects)] == ["150"] and [e.text for e in effects if isinstance(e, Command)] == [
        "replay 100 149"]


# =========================================================================== found in review


def resumed(step: int, last_seq: int, last_uptime_ms: int) -> RecorderCore:
    c = RecorderCore("banc1", step, fsync_interval_s=1.0, bms_timeout_s=30.0)
    c.resume({}, rows=500, last_seq=last_seq, last_uptime_ms=last_uptime_ms,
             boots=[record.EspBoot("2026-12-01T09:00:00.000+01:00", 0, 5000, offset_ms=1_700_000_000_000,
                                   first_offset_ms=1_700_000_000_000)], now=at(0))
    return c


def test_a_finished_esp_at_rest_is_never_announced_an_older_phase() -> None:
    # The ESP finished (5) while banc.py was down and its step message was lost: the backlog
    # holds one rest line (field 12 = 5), the next comes 10 s later. banc.py waits for it.
    c = resumed(4, last_seq=999, last_uptime_ms=1_004_000)
    c.on_bms(line(1000, 1_005_000, 5), False, at(1))
    c.backlog_received(at(1.1))
    announced, t = None, 1.1
    while announced is None and t < 30 and c.ended is None:
        if t >= 11.0 and c.seq.last == 1000:
            c.on_bms(line(1001, 1_015_000, 5), False, at(t))
        announced = c.announce_step(at(t))
        t += 0.5
    assert announced is None and c.ended == protocol.STEP_FINISHED


def test_a_step_message_two_lines_late_leaves_no_recovered_phase() -> None:
    c = core(2)
    c.on_bms(line(100, 105_000, 2), False, at(100))
    effects = c.on_bms(line(101, 106_000, 3), False, at(101))  # the phase changed; its step message is queued
    effects += c.on_bms(line(102, 107_000, 3), False, at(102))
    effects += c.on_step(b"3", False, at(102.2))  # ... and arrives 1.2 s later
    state = record.fold_events(record.event_from_json(json.loads(text)) for text in journal(effects))
    assert state.step == 3 and state.recovered_steps == []


def test_one_implausible_diffusion_value_does_not_lose_the_ri_of_the_same_pulse() -> None:
    effects = core(1).on_ri(b'{"ri_discharge": 0.021, "diffusion_discharge": 0.0004, "temperature_c": 25.0}',
                            False, at(1))
    events = [json.loads(text) for text in journal(effects)]
    assert [e["values"] for e in events] == [{"ri_discharge": 0.021, "temperature_c": 25.0}]
    assert "diffusion_discharge" in rejected(effects)[0]


def test_rest_lines_after_a_link_drop_at_rest_are_not_rejected_in_a_backlog() -> None:
    # banc.py is down overnight; the stopped ESP sends a line every 10 s and none while its Wi-Fi
    # is down for 2 min (its seq goes on by one, its clock by 160 s).
    c = RecorderCore("banc1", 3, fsync_interval_s=1.0, bms_timeout_s=30.0)  # not live: a backlog
    effects: list[Effect] = []
    for k in range(5):
        effects += c.on_bms(line(5000 + k, 50_000_000 + 10_000 * k, 9), False, at(k))
    for k in range(30):
        effects += c.on_bms(line(5005 + k, 50_160_000 + 10_000 * k, 9), False, at(10 + k))
    assert rejected(effects) == [] and len(rows(effects)) == 35


def test_a_reboot_while_banc_py_is_down_after_a_short_boot_is_a_new_boot() -> None:
    # Boot A lived 40 s; the ESP rebooted while banc.py was down and its new boot, stopped, sends
    # its first line 75 s after booting (the access point was still starting): a backlog.
    c = RecorderCore("banc1", 3, fsync_interval_s=1.0, bms_timeout_s=30.0)
    for s in range(40):
        c.on_bms(line(s, 1_000 + 1000 * s, 3), False, at(s))
    effects: list[Effect] = []
    for k in range(20):
        effects += c.on_bms(line(k, 75_000 + 10_000 * k, 9), False, at(100 + k))
    assert len(rows(effects)) == 20 and sum('"esp_boot"' in j for j in journal(effects)) == 1
    assert c.counters["seq_restart_count"] == 1


def test_an_esp_stopped_whose_9_was_lost_is_taken_as_stopped_from_its_lines() -> None:
    # The ESP trips in phase 3 and publishes 9, which is lost; it then sends a line every 10 s
    # with field 12 = 9 (its rest lines also keep the BMS watchdog fed).
    c = core(3)
    assert c.announce_step(at(0)) == 3
    effects: list[Effect] = []
    for s in range(100, 110):
        effects += c.on_bms(line(s, (s + 5) * 1000, 3), False, at(s))
    for k in range(3):
        effects += c.on_bms(line(110 + k, (115 + 10 * k) * 1000, 9), False, at(110 + 10 * k))
    assert c.ended == protocol.STEP_STOP and c.step == 3
    assert any('"event":"stop"' in j and '"recovered":"lines"' in j for j in journal(effects))
    assert any("arrêté" in a for a in alerts(effects))


def test_lines_of_a_stopped_esp_before_the_announcement_are_expected() -> None:
    c = resumed(3, last_seq=99, last_uptime_ms=104_000)
    c.backlog_received(at(1))
    for k in range(3):  # the ESP waits for its command, stopped
        c.on_bms(line(100 + k, 114_000 + 10_000 * k, 9), False, at(1 + k))
    assert c.ended is None


def test_a_pi_clock_set_by_ntp_after_banc_py_started_is_not_carried_into_the_next_run() -> None:
    # The Pi (no RTC) boots an hour behind; banc.py starts; NTP steps the clock +1 h. Within that
    # run measurement times keep their steady clock (the step is set aside and journaled); the
    # next morning's run, the clock right, re-estimates the offset from its live lines instead of
    # carrying the seed an hour off.
    behind = 3600.0

    def instant(s: float, late: bool) -> Instant:
        return Instant(T0 + timedelta(seconds=s - (behind if late else 0.0)), s)

    c = RecorderCore("banc1", 3, fsync_interval_s=1.0, bms_timeout_s=30.0)
    c.backlog_received(instant(0, True))
    effects: list[Effect] = []
    for s in range(1, 700):
        effects += c.on_bms(line(s, (s + 5) * 1000, 3), False, instant(s, s < 50))
    run1 = [datetime.fromisoformat(r[13]) for r in rows(effects)]
    assert {(b - a).total_seconds() for a, b in zip(run1, run1[1:])} == {1.0}
    clocks = [json.loads(j) for j in journal(effects) if '"esp_clock"' in j]
    boot = next(json.loads(j) for j in journal(effects) if '"esp_boot"' in j)
    c2 = RecorderCore("banc1", 3, fsync_interval_s=1.0, bms_timeout_s=30.0)
    s0 = 40_000.0
    c2.resume({}, rows=699, last_seq=699, last_uptime_ms=704_000, now=instant(s0, False),
              boots=[record.EspBoot(boot["row_t"], boot["seq"], boot["uptime_ms"], offset_ms=clocks[-1]["offset_ms"])])
    c2.backlog_received(instant(s0, False))
    effects2: list[Effect] = []
    for k in range(1, 60):
        t = s0 + k
        effects2 += c2.on_bms(line(int(t), int((t + 5) * 1000), 3), False, instant(t, False))
    last = rows(effects2)[-1]
    true = T0 + timedelta(seconds=int(last[12]) / 1000 - 5)
    assert abs((datetime.fromisoformat(last[13]) - true).total_seconds()) < 2


# =========================================================================== guards the mutation check found untested


def test_a_clock_going_back_while_seq_goes_on_is_rejected_for_that_reason() -> None:
    timeline = EspTimeline()
    timeline.ref = (100, 105_000)
    verdict, why = timeline.judge(protocol.parse_bms_line(line(101, 90_000)), 0.0, live=True)
    assert verdict == TL_IMPLAUSIBLE and "before the previous line" in why, why


# 1e: EspTimeline.judge, "seq needs more time than uptime".


def test_a_new_boot_whose_first_line_has_a_garbled_seq_is_one_boot_not_two() -> None:
    c = core()
    effects = steady(c, 11)  # seq 100..110, uptime 105..115 s
    # The ESP reboots; its first line (seq 0) comes with bit 6 of seq flipped: seq 64 at uptime 1 s.
    effects += c.on_bms(line(64, 1_000), False, at(111))
    for seq in range(1, 6):
        effects += c.on_bms(line(seq, (seq + 1) * 1000), False, at(111 + seq))
    assert sum('"esp_boot"' in j for j in journal(effects)) == 2  # the first boot, and the one reboot
    assert c.counters["seq_restart_count"] == 1
    assert "64" not in [r[2] for r in rows(effects)]  # the garbled line is not a row
    assert any("implausible" in r for r in rejected(effects))


# 2e: Gap.fits (uptime bounds of a line that would fill a gap).


def test_a_live_line_garbled_into_an_open_gap_does_not_fill_it() -> None:
    c = core()
    ring = {seq: line(seq, (seq + 5) * 1000) for seq in range(100, 160)}
    effects: list[Effect] = []
    for seq in [*range(100, 110), *range(140, 150)]:  # 110..139 lost on the way: a gap, asked for again
        effects += c.on_bms(ring[seq], False, at(seq))
    # Line 150 with bit 4 of its seq flipped: seq 134, inside the gap, but measured after line 149.
    effects += c.on_bms(line(150 ^ (1 << 4), 155_000), False, at(150))
    for seq in range(151, 160):
        effects += c.on_bms(ring[seq], False, at(seq))
    written = [(int(r[2]), int(r[12])) for r in rows(effects)]
    for command in [e.text for e in effects if isinstance(e, Command)]:  # the ESP answers the replays now
        replay = protocol.parse_command(command.encode())
        assert isinstance(replay, protocol.ReplayCommand)
        for seq in range(replay.first, replay.last + 1):
            written += [(int(r[2]), int(r[12])) for r in rows(c.on_replay(ring[seq], False, at(161)))]
    assert sorted(written) == [(seq, (seq + 5) * 1000) for seq in range(100, 160)]


# 2f: line_identity (field 12 left out of the remembered texts).


def test_an_older_12_field_line_sent_again_after_a_restart_is_a_copy_not_a_reboot() -> None:
    # data.csv keeps no field 12: the texts banc.py remembers after a restart have none.
    c = core()
    remembered = {seq: line(seq, (seq + 5) * 1000).rpartition(b",")[0] for seq in (118, 119)}
    c.resume({}, last_seq=119, last_uptime_ms=124_000, recent=remembered, boots=[record.EspBoot("x", 0, 0)],
             now=at(0))
    effects = c.on_bms(line(118, 123_000), False, at(1))  # a broker restored from its file, no DUP flag
    assert rows(effects) == [] and c.counters["duplicate_count"] == 1 and c.counters["seq_restart_count"] == 0


# 4b: banc.Recorder.handle_message's on_failure path.


def test_a_message_whose_handler_raises_is_rejected_and_the_flow_goes_on(store: Store, banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-FAULT0001", T0)
    state, config = store.open_test_record(folder, "banc1", "RW-FAULT0001", T0)
    store.create_data_csv(folder)
    clock_s = [0.0]
    rec = banc.Recorder(store, folder, "banc1", "RW-FAULT0001", state.step, lambda text: None,
                        clock=lambda: T0 + timedelta(seconds=clock_s[0]), mono=lambda: 1000.0 + clock_s[0],
                        fsync_interval_s=3600.0, bms_timeout_s=30.0)
    rec.open(config, state)
    rec.backlog_received()
    topics = protocol.topics("banc1")

    def broken(*args: object) -> list[Effect]:
        raise ValueError("a bug in a handler")

    rec.core.on_ri = broken  # type: ignore[method-assign,assignment]
    assert rec.handle_message(topics.ri_results, b'{"ri_discharge": 0.02}') is True  # never raises
    clock_s[0] = 1.0
    assert rec.handle_message(topics.bms_data, line(100, 105_000, 1)) is True
    assert rec.flush_all()
    rec.close()
    assert "not handled: ValueError" in (folder / record.REJECTED_CSV_FILE).read_text()
    assert (folder / record.DATA_CSV_FILE).read_text().count("\n") == 2  # header and the line


def test_a_bit_flipped_seq_in_a_boot_s_first_minute_is_not_a_new_boot() -> None:
    # A steady 1 Hz ESP just booted (uptime = seq + 5 s); line 50 arrives with bit 5 of its seq
    # flipped (seq 18) while its uptime, 55 s, is still within BOOT_YOUNG_MS. The ESP answers
    # replays from its ring. Every true line must be written once, and no boot added.
    ring = {seq: line(seq, (seq + 5) * 1000) for seq in range(0, 80)}
    esp = EspWithRing(core(), ring)
    for seq in range(0, 80):
        esp.send(line(seq ^ (1 << 5), (seq + 5) * 1000) if seq == 50 else ring[seq], float(seq))
    written = esp.written
    true = {(seq, (seq + 5) * 1000) for seq in ring}
    assert sum('"esp_boot"' in e for e in esp.events) == 1, "a garbled seq taken for a reboot"
    assert not [k for k, n in Counter(written).items() if n > 1], "true lines written twice"
    assert true <= set(written) and set(written) <= true | {(18, 55_000)}
