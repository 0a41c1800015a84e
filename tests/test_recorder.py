"""recorder.RecorderCore in-process: no broker, no file, an injected clock, exact effects.

Each test feeds the core messages, ticks and write outcomes at chosen instants and compares
the effects it returns with the ones written out here. What only a real process can show
(fsync before the acknowledgement, files restored from open descriptors, kill -9) stays in
test_banc.py and test_crash.py.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Optional, TypeVar

import pytest

from banclfp.recording import record
from banclfp.recording.recorder import (
    DATA,
    JOURNAL,
    REJECTED,
    SUMMARY_SAVE_INTERVAL_S,
    Alert,
    Append,
    CaughtUp,
    Command,
    Effect,
    FilesRestored,
    Instant,
    Log,
    RecorderCore,
    Refused,
    RestoreFailed,
    Retry,
    SaveSummary,
    SummaryRefused,
    SummarySaved,
    Sync,
    sync_due,
)
from banclfp.testkit.banc_helpers import bms_line
from banclfp.wire import protocol

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=record.LOCAL_TZ)
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR
ENOSPC = "[Errno 28] No space left on device"
E = TypeVar("E", Append, Retry, Sync, SaveSummary, Alert, Log, Command)


def at(s: float) -> Instant:
    """The instant `s` seconds after T0 (monotonic time = s)."""
    return Instant(T0 + timedelta(seconds=s), s)


def new_core(step: int = 1, fsync_interval_s: float = 1.0, bms_timeout_s: float = 30.0) -> RecorderCore:
    """A core on banc1 whose clock started at 0 s."""
    return RecorderCore("banc1", step, fsync_interval_s=fsync_interval_s, bms_timeout_s=bms_timeout_s, start_s=0.0)


def bms(seq: int, **values: float) -> bytes:
    """A valid BMS payload."""
    return bms_line(seq, **values).encode()


def data_row(seq: int, s: float, step: int = 1, **values: float) -> Append:
    """The data.csv row expected for bms(seq, **values) received at `s`."""
    stamp = record.iso(at(s).wall, millis=True)
    return Append(DATA, f"{stamp},{step},{bms_line(seq, **values)},,{stamp}\n".encode())  # 10 fields: no uptime


def event(kind: str, s: float, **fields: Any) -> Append:
    """The journal line expected for an event at `s`, spelled out as docs/fichiers.md §2 has it (the bytes
    banc.py has always written), not through record's event classes: it checks them."""
    line = json.dumps({"t": record.iso(at(s).wall, millis=True), "event": kind, **fields}, ensure_ascii=True,
                      separators=(",", ":"))
    return Append(JOURNAL, (line + "\n").encode("ascii"))


def of_type(effects: list[Effect], kind: type[E]) -> list[E]:
    """The effects of this type, in order."""
    return [e for e in effects if isinstance(e, kind)]


def not_logs(effects: list[Effect]) -> list[Effect]:
    """The effects other than Log, in order."""
    return [e for e in effects if not isinstance(e, Log)]


def counters(core: RecorderCore) -> tuple[int, ...]:
    """(rows, rejected, duplicates, gaps, restarts)."""
    return tuple(core.counters[key] for key in ("rows_count", "rejected_count", "duplicate_count",
                                                "seq_gap_count", "seq_restart_count"))


# =========================================================================== BMS lines and seq


@pytest.mark.parametrize(
    "last, messages, written, expected",
    [
        # messages: (seq, redelivered); written: which messages become rows;
        # expected: (rows, rejected, duplicates, gaps, restarts)
        (None, [(0, False), (1, False), (2, False)], [0, 1, 2], (3, 0, 0, 0, 0)),
        (None, [(57, False)], [0], (1, 0, 0, 0, 0)),
        (None, [(0, False), (0, False), (0, True)], [0], (1, 0, 2, 0, 0)),  # QoS 1 duplicates
        (4, [(5, False), (9, False), (10, False)], [0, 1, 2], (3, 0, 0, 1, 0)),
        (4, [(9, True)], [0], (1, 0, 0, 1, 0)),  # a redelivered line never written is new data
        (500, [(0, False), (1, False)], [0, 1], (2, 0, 0, 0, 1)),  # ESP reboot: not a gap
        (500, [(498, True), (499, True), (501, False)], [2], (1, 0, 2, 0, 0)),  # written before a crash
        (500, [(498, False)], [0], (1, 0, 0, 0, 1)),  # lower without DUP: a reboot whose first lines were lost
        (5000, [(3000, True)], [0], (1, 0, 0, 0, 1)),  # DUP but far behind: a reboot
    ],
)
def test_seq_classification_decides_rows_and_counters(last: Optional[int], messages: list, written: list,
                                                       expected: tuple) -> None:
    core = new_core()
    core.resume({}, last_seq=last)
    rows: list[Append] = []
    for i, (seq, redelivered) in enumerate(messages):
        rows += of_type(core.on_bms(bms(seq), redelivered, at(i)), Append)
    assert rows == [data_row(messages[i][0], i) for i in written]
    assert counters(core) == expected
    assert not core.blocked


@pytest.mark.parametrize("redelivered", [False, True])
def test_a_copy_of_a_line_of_this_boot_is_a_duplicate_with_or_without_the_dup_flag(redelivered: bool) -> None:
    # A broker restored from its file re-sends lines it had already delivered, often without DUP.
    core = new_core()
    for seq in range(10, 20):
        core.on_bms(bms11(seq, seq * 1000), False, at(seq))
    assert of_type(core.on_bms(bms11(12, 12_000), redelivered, at(30)), Append) == []
    assert of_type(core.on_bms(bms11(20, 20_000), False, at(31)), Command) == []  # goes on from 19
    assert counters(core) == (11, 0, 1, 0, 0)


@pytest.mark.parametrize("redelivered, written, restarts", [(True, 0, 0), (False, 1, 1)])
def test_a_10_field_line_repeating_a_remembered_text_needs_the_dup_flag_to_be_a_copy(
        redelivered: bool, written: int, restarts: int) -> None:
    # At rest an ESP without a clock sends the same text after a reboot: only DUP tells a copy.
    core = new_core()
    for seq in range(10):
        core.on_bms(bms(seq), False, at(seq))
    assert len(of_type(core.on_bms(bms(3), redelivered, at(20)), Append)) == written
    assert counters(core)[4] == restarts


def test_a_lower_seq_with_another_measurement_is_a_new_boot_even_with_the_dup_flag() -> None:
    core = new_core()
    for seq in range(10):
        core.on_bms(bms(seq, soc_pct=50.0), False, at(seq))
    # The ESP rebooted; the broker re-sends (DUP) its new seq 3, which measured something else.
    assert of_type(core.on_bms(bms(3, soc_pct=80.0), True, at(20)), Append) == [data_row(3, 20, soc_pct=80.0)]
    assert counters(core) == (11, 0, 0, 0, 1)


def test_a_bms_line_is_one_exact_row_and_anomalies_are_logged() -> None:
    core = new_core(step=2)
    assert core.on_bms(bms(7, capacity_ah=1.5), False, at(0.25)) == [
        Append(DATA, b"2026-12-01T10:00:00.250+01:00,2,7,52.000,-10.000,50.0,25.0,1.500,0.0,3250,3262,0,,"
                     b"2026-12-01T10:00:00.250+01:00\n")
    ]
    assert core.on_bms(bms(9), False, at(1)) == [data_row(9, 1, step=2), Command("replay 8 8"),
                                                 Log(INFO, "seq 9 after 7: gap")]
    # The ESP rebooted before answering: its RAM (line 8) is gone.
    assert core.on_bms(bms(0), False, at(2)) == [
        event(record.EVENT_SEQ_LOST, 2, boot=None, first=8, last=8, count=1),
        Log(WARNING, "1 BMS lines lost (seq 8..8): l'ESP a redémarré"),
        Alert("1 ligne BMS perdue (seq 8..8) : l'ESP a redémarré"),
        data_row(0, 2, step=2), Log(INFO, "seq 0 after 9: ESP restart")]
    assert core.on_bms(bms(0), False, at(3)) == []  # the duplicate costs no write
    assert core.on_bms(bms(0, current_a=5.0), True, at(4)) == []  # same seq re-sent: a duplicate whatever it says


def test_seq_anomaly_logs_are_rate_limited() -> None:
    core = new_core()
    core.resume({}, last_seq=0)
    logs = []
    for i in range(15):
        logs += of_type(core.on_bms(bms(2 * i + 2), False, at(i)), Log)
    assert len(logs) == 10 and counters(core) == (15, 0, 0, 15, 0)
    assert of_type(core.on_bms(bms(100), False, at(60)), Log) == [
        Log(INFO, "5 more seq anomalies in the last minute"), Log(INFO, "seq 100 after 30: gap")]


def test_capacity_is_held_when_the_esp_counter_goes_back_in_phase_4() -> None:
    core = new_core(step=3)
    core.on_bms(bms(0, capacity_ah=29.5, energy_wh=1534.0), False, at(0))
    core.on_step(b"4", False, at(1))
    assert not_logs(core.on_bms(bms(1, capacity_ah=29.5, energy_wh=1534.0), False, at(2))) == [
        data_row(1, 2, step=4, capacity_ah=29.5, energy_wh=1534.0)]
    lost = core.on_bms(bms(0, capacity_ah=0.0), False, at(3))
    assert lost[:3] == [
        data_row(0, 3, step=4),  # the row itself is recorded as sent
        Log(WARNING, "ESP capacity counter went back to 0.000 Ah in phase 4; keeping 29.500 Ah"),
        Alert("Compteur de capacité de l'ESP remis à zéro en phase 4 : capacité mesurée conservée (29.50 Ah)"),
    ]
    assert of_type(core.on_bms(bms(1, capacity_ah=0.0), False, at(4)), Alert) == []  # once per test
    assert (core.capacity_ah, core.energy_wh) == (29.5, 1534.0)


# =========================================================================== steps


@pytest.mark.parametrize(
    "current, payload, redelivered, effects, step, ended",
    [
        (1, b"2", False, [event("step", 5, step=2), Log(INFO, "step 2 (was 1)")], 2, None),
        (2, b"2", False, [], 2, None),  # a repeated step costs no write
        (2, b"2", True, [], 2, None),
        (3, b"2", True, [], 3, None),  # a DUP lower step: already passed before a crash, ignored
        (3, b"2", False, [event("step", 5, step=2), Log(WARNING, "step 2 after step 3 (the ESP went back)")], 2, None),
        (3, b"4", True, [event("step", 5, step=4), Log(INFO, "step 4 (was 3)")], 4, None),  # DUP but new
        (4, b"5", False, [event("step", 5, step=5), Log(INFO, "step 5 (was 4)")], 5, 5),
        (3, b"9", False, [event("stop", 5), Log(INFO, "step 9: stop for the day at step 3")], 3, 9),
        (3, b"9", True, [event("stop", 5), Log(INFO, "step 9: stop for the day at step 3")], 3, 9),
        (1, b"05", False, [Append(REJECTED, b"2026-12-01T10:00:05.000+01:00,banc1/step,invalid step: '05',05\n"),
                           Log(WARNING, "rejected on banc1/step: invalid step: '05' (05)")], 1, None),
    ],
)
def test_steps(current: int, payload: bytes, redelivered: bool, effects: list, step: int,
               ended: Optional[int]) -> None:
    core = new_core(step=current)
    assert core.on_step(payload, redelivered, at(5)) == effects
    assert (core.step, core.ended) == (step, ended)


@pytest.mark.parametrize("step, bench_step", [(2, 2), (5, None)])  # after 5 banc.py frees the bench instead
def test_a_step_shows_in_config_json_and_the_bench_at_the_next_tick(step: int, bench_step: Optional[int]) -> None:
    core = new_core()
    core.on_bms(bms(0, capacity_ah=0.5, energy_wh=26.0), False, at(0.1))
    core.on_step(str(step).encode(), False, at(0.2))
    saves = of_type(core.tick(at(0.4), 0.0), SaveSummary)
    assert saves == [SaveSummary({**dict.fromkeys(record.COUNTER_KEYS, 0), "rows_count": 1},
                                 0.5, 26.0, at(0.1).wall, bench_step)]
    assert core.report(SummarySaved(), at(0.4)) == []
    assert core.all_written() and of_type(core.tick(at(0.6), 0.0), SaveSummary) == []


def test_nothing_is_recorded_after_the_end() -> None:
    core = new_core(step=4)
    core.on_step(b"5", False, at(0))
    assert core.on_bms(bms(0), False, at(1)) == []
    assert core.on_step(b"9", False, at(2)) == []
    assert core.on_ri(b'{"ri_discharge": 0.03}', False, at(3)) == []
    assert core.on_bms(b"garbage", False, at(4)) == []
    assert core.ignored_after_end == 4 and core.ended == 5
    assert of_type(core.tick(at(100), 0.0), Alert) == []  # no BMS watchdog once the test is over


# =========================================================================== Ri results


R1, R2 = b'{"ri_discharge": 0.030}', b'{"ri_discharge": 0.034}'


@pytest.mark.parametrize(
    "journal, payload, redelivered, recorded",
    [
        ([], R1, False, True),
        ([], R1, True, True),  # DUP of a result the journal does not hold: never recorded yet
        ([{"ri_discharge": 0.03}], R1, True, False),  # DUP already in the recent journal: ignored
        ([{"ri_discharge": 0.03}], R1, False, True),  # not a DUP: a new pulse that measured the same
        ([{"ri_discharge": 0.03}], R2, True, True),
        ([{"ri_discharge": 0.03}] + [{"ri_charge": 0.001 * i} for i in range(1, protocol.RECEIVE_MAXIMUM)],
         R1, True, False),  # still within the last RECEIVE_MAXIMUM results
        ([{"ri_discharge": 0.03}] + [{"ri_charge": 0.001 * i} for i in range(1, protocol.RECEIVE_MAXIMUM + 1)],
         R1, True, True),  # older than any unacknowledged message can be
    ],
)
def test_ri_results_and_their_redelivered_copies(journal: list, payload: bytes, redelivered: bool,
                                                 recorded: bool) -> None:
    core = new_core()
    core.resume({}, recent_ri=journal)
    values = protocol.parse_ri_results(payload)
    effects = core.on_ri(payload, redelivered, at(2))
    if recorded:
        assert effects == [event("ri", 2, values=values), Log(INFO, f"Ri results at step 1: {values}")]
        assert core.counters["duplicate_count"] == 0 and core.view_dirty
    else:
        assert effects == [Log(INFO, f"Ri results redelivered, already recorded: {values}")]
        assert core.counters["duplicate_count"] == 1 and not core.view_dirty


def test_a_recorded_ri_result_is_recognised_when_redelivered() -> None:
    core = new_core()
    assert of_type(core.on_ri(R1, False, at(0)), Append) == [event("ri", 0, values={"ri_discharge": 0.03})]
    assert of_type(core.on_ri(R1, True, at(1)), Append) == []


# =========================================================================== rejects


def test_rejected_messages_are_all_written_and_their_logs_rate_limited() -> None:
    core = new_core()
    first = core.on_bms(b"hello", False, at(0))
    assert first == [
        Append(REJECTED, b'2026-12-01T10:00:00.000+01:00,banc1/bms/data,"expected 10, 11 or 12 fields, got 1",hello\n'),
        Log(WARNING, "rejected on banc1/bms/data: expected 10, 11 or 12 fields, got 1 (hello)"),
    ]
    effects = [first]
    for i in range(1, 15):
        effects.append(core.on_ri(b'{"x": 1}', False, at(i)))
    assert [len(of_type(e, Append)) for e in effects] == [1] * 15  # every one is in rejected.csv
    assert [len(of_type(e, Log)) for e in effects] == [1] * 10 + [0] * 5
    assert core.on_step(b"7", False, at(60)) == [
        Append(REJECTED, b"2026-12-01T10:01:00.000+01:00,banc1/step,invalid step: '7',7\n"),
        Log(WARNING, "5 more rejected messages in the last minute"),
        Log(WARNING, "rejected on banc1/step: invalid step: '7' (7)"),
    ]
    assert counters(core) == (0, 16, 0, 0, 0) and core.summary_dirty


# =========================================================================== BMS watchdog


@pytest.mark.parametrize(
    "script, alerted",
    [
        # (time, "tick" with connected_since | "bms"); alerted: the times an alert (or its recovery) came
        ([(0, "tick", 0), (29.8, "tick", 0), (30, "tick", 0), (45, "tick", 0)], [(30, "silence")]),
        ([(0, "tick", 0), (30, "tick", 0), (50, "bms", None), (79.8, "tick", 0), (80, "tick", 0)],
         [(30, "silence"), (50, "back after 50"), (80, "silence")]),
        ([(0, "tick", None), (100, "tick", None)], []),  # broker away: not the BMS's fault
        ([(5, "bms", None), (34, "tick", 0), (40, "tick", 20), (49.8, "tick", 20), (50, "tick", 20)],
         [(50, "silence")]),  # silence counts from the last data or (re)connection, whichever is later
    ],
)
def test_bms_silence_alert_and_recovery(script: list, alerted: list) -> None:
    core = new_core(bms_timeout_s=30.0)
    seen = []
    for s, action, connected_since in script:
        if action == "tick":
            effects = core.tick(at(s), connected_since)
        else:
            effects = core.on_bms(bms(int(s)), False, at(s))
        for alert in of_type(effects, Alert):
            if alert.text == "Aucune donnée BMS valide depuis 30 s : vérifier l'ESP32, le BMS et leur liaison":
                seen.append((s, "silence"))
            else:
                assert alert.text.startswith("Données BMS rétablies après ")
                seen.append((s, "back after " + alert.text.split()[4]))
    assert seen == alerted


def test_the_silence_alert_is_logged_with_its_length() -> None:
    core = new_core(bms_timeout_s=1.0)
    assert core.tick(at(1.2), 0.0) == [
        Log(WARNING, "no BMS data for 1.2 s"),
        Alert("Aucune donnée BMS valide depuis 1 s : vérifier l'ESP32, le BMS et leur liaison"),
        Sync(),
    ]
    assert not_logs(core.on_bms(bms(0), False, at(3.7)))[1:] == [Alert("Données BMS rétablies après 4 s de silence")]


# =========================================================================== timers: fsync and config.json


@pytest.mark.parametrize(
    "fsync_interval_s, ticks, synced",
    [
        (1.0, [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.8, 2.0, 2.2], [1.0, 2.0]),
        (0.0, [0.2, 0.4], [0.2, 0.4]),  # every tick
        (5.0, [1, 2, 3, 4, 4.9, 5, 9.9, 10], [5, 10]),
    ],
)
def test_csv_files_are_fsynced_every_interval(fsync_interval_s: float, ticks: list, synced: list) -> None:
    core = new_core(fsync_interval_s=fsync_interval_s)
    assert [s for s in ticks if Sync() in core.tick(at(s), 0.0)] == synced


def test_fsyncs_of_every_bench_fall_on_one_grid_of_the_monotonic_clock() -> None:
    """Issue 26: two banc.py started at different times fsync in the same instants (one journal commit)."""
    early = RecorderCore("banc1", 1, fsync_interval_s=1.0, bms_timeout_s=30.0, start_s=0.3)
    late = RecorderCore("banc2", 1, fsync_interval_s=1.0, bms_timeout_s=30.0, start_s=0.9)
    ticks = [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2]
    assert [s for s in ticks if Sync() in early.tick(at(s), 0.0)] == [1.0, 2.0]
    assert [s for s in ticks if s > 0.9 and Sync() in late.tick(at(s), 0.0)] == [1.0, 2.0]
    # The bound holds: no row waits more than one interval (plus a tick) for its fsync.
    assert [sync_due(0.3, s, 5.0) for s in (4.9, 5.0, 9.9)] == [False, True, True]


def test_counters_are_saved_every_summary_interval_and_journal_events_at_once() -> None:
    core = new_core()
    core.on_bms(bms(0), False, at(1))
    core.on_bms(b"bad", False, at(2))
    saves = []
    for s in (2.2, 150, SUMMARY_SAVE_INTERVAL_S - 0.2, SUMMARY_SAVE_INTERVAL_S, SUMMARY_SAVE_INTERVAL_S + 0.2):
        for effect in of_type(core.tick(at(s), 0.0), SaveSummary):
            saves.append((s, effect))
            core.report(SummarySaved(), at(s))
    expected = SaveSummary({"rows_count": 1, "rejected_count": 1, "duplicate_count": 0, "seq_gap_count": 0,
                            "seq_restart_count": 0, "seq_lost_count": 0}, 0.0, 0.0, at(1).wall)
    assert saves == [(SUMMARY_SAVE_INTERVAL_S, expected)]
    core.on_bms(bms(1), False, at(301))
    assert of_type(core.tick(at(301.2), 0.0), SaveSummary) == []  # counters wait for the next interval
    core.on_ri(R1, False, at(302))
    assert len(of_type(core.tick(at(302.2), 0.0), SaveSummary)) == 1  # a journal event does not wait


def test_flush_saves_the_summary_at_once() -> None:
    core = new_core()
    core.on_bms(bms(0), False, at(1))
    assert core.flush(at(2)) == [SaveSummary({**dict.fromkeys(record.COUNTER_KEYS, 0), "rows_count": 1},
                                             0.0, 0.0, at(1).wall), Sync()]
    assert not core.all_written()
    core.report(SummarySaved(), at(2))
    assert core.all_written() and core.flush(at(3)) == [Sync()]


def test_a_refused_summary_alerts_once_is_retried_and_its_return_is_noted() -> None:
    core = new_core()
    core.on_step(b"2", False, at(0.1))
    [save] = of_type(core.tick(at(0.2), 0.0), SaveSummary)
    assert core.report(SummaryRefused("permission refusée", "[Errno 13] Permission denied"), at(0.2)) == [
        Log(ERROR, "config.json: summary not saved: [Errno 13] Permission denied (retrying every second)"),
        Alert("Écriture impossible dans config.json (permission refusée) : nouvel essai chaque seconde"),
    ]
    assert of_type(core.tick(at(0.4), 0.0), SaveSummary) == [save]  # the step is still not shown
    assert core.report(SummaryRefused("permission refusée"), at(0.4)) == []
    assert core.report(SummarySaved(was_missing=True), at(0.6)) == [
        Log(ERROR, "config.json missing or unreadable: rebuilt from the journal and data.csv"),
        Alert("config.json endommagé ou supprimé : reconstruit depuis le dossier du test, rien n'est perdu"),
        Log(INFO, "config.json writable again"),
        Alert("Écriture dans config.json rétablie"),
    ]
    assert core.all_written()


def test_refused_counters_are_retried_every_second_not_every_tick() -> None:
    core = new_core()
    core.on_bms(bms(0), False, at(0.1))
    core.report(SummaryRefused("disque plein"), at(0.1))  # as if a flush had failed
    core.tick(at(0.2), 0.0)  # the retry clock starts (with a first attempt)
    saves = [s for s in (0.4, 0.6, 0.8, 1.0, 1.2, 2.2) if of_type(core.tick(at(s), 0.0), SaveSummary)]
    assert saves == [1.2, 2.2]


# =========================================================================== write failures and acknowledgements


def test_a_refused_row_holds_the_acknowledgements_until_it_is_caught_up() -> None:
    core = new_core()
    assert core.tick(at(0), 0.0) == []  # the retry clock starts: every second from here
    assert not_logs(core.on_bms(bms(0), False, at(0.1))) == [data_row(0, 0.1)]
    assert core.report(Refused(DATA, "disque plein", ENOSPC), at(0.1)) == [
        Log(ERROR, f"data.csv: write failed ({ENOSPC}); messages held (not acknowledged), retrying every second"),
        Alert("Écriture impossible dans data.csv (disque plein) : mesures gardées par le broker, "
              "nouvel essai chaque seconde"),
    ]
    assert core.blocked
    assert core.on_bms(bms(1), False, at(0.3)) == [data_row(1, 0.3)]  # still decided: it waits behind
    assert core.report(Refused(DATA, "disque plein", ENOSPC), at(0.3)) == []  # one alert per episode
    assert core.tick(at(0.6), 0.0) == []
    assert core.tick(at(1.0), 0.0) == [Retry(DATA), Sync()]
    assert core.report(Refused(DATA, "disque plein", ENOSPC), at(1.0)) == []
    assert core.blocked
    assert core.tick(at(2.0), 0.0) == [Retry(DATA), Sync()]
    assert core.report(CaughtUp(DATA, rows=2), at(2.0)) == [
        Log(INFO, "data.csv writable again: 2 records caught up"),
        Alert("Écriture dans data.csv rétablie : 2 lignes rattrapées"),
    ]
    assert not core.blocked and counters(core) == (2, 0, 0, 0, 0)
    assert Retry(DATA) not in core.tick(at(3.0), 0.0)


@pytest.mark.parametrize(
    "file, payload, handler",
    [(DATA, bms(0), "on_bms"), (REJECTED, b"bad", "on_bms"), (JOURNAL, b"2", "on_step"), (JOURNAL, R1, "on_ri")],
)
def test_every_file_holds_the_acknowledgements_while_refused(file: str, payload: bytes, handler: str) -> None:
    core = new_core()
    effects = getattr(core, handler)(payload, False, at(0))
    assert [e.file for e in of_type(effects, Append)] == [file]
    assert of_type(core.report(Refused(file, "disque en lecture seule"), at(0)), Alert) == [
        Alert(f"Écriture impossible dans {file} (disque en lecture seule) : mesures gardées par le broker, "
              "nouvel essai chaque seconde")]
    assert core.blocked and not core.all_written()
    assert of_type(core.tick(at(1), 0.0), Retry) == [Retry(file)]
    core.report(CaughtUp(file, 1), at(1))
    assert not core.blocked


def test_the_view_waits_for_a_refused_journal_line_and_follows_it_at_once() -> None:
    core = new_core()
    core.tick(at(0), 0.0)
    core.on_step(b"2", False, at(0.1))
    core.report(Refused(JOURNAL, "disque plein"), at(0.1))
    assert of_type(core.tick(at(0.2), 0.0), SaveSummary) == []  # config.json never runs ahead of the journal
    assert core.flush(at(0.3)) == [Retry(JOURNAL), Sync()]
    assert core.report(Refused(JOURNAL, "disque plein"), at(0.3)) == []
    assert core.step == 2 and not core.all_written()
    assert core.report(CaughtUp(JOURNAL, 1), at(1.0)) == [
        Log(INFO, "events.jsonl writable again: 1 records caught up"),
        Alert("Écriture dans events.jsonl rétablie : 1 lignes rattrapées"),
        SaveSummary(dict.fromkeys(record.COUNTER_KEYS, 0), None, None, None, bench_step=2),
    ]


def test_rows_dropped_when_memory_is_full_are_not_counted_and_alerted_once() -> None:
    core = new_core()
    for seq in range(4):
        core.on_bms(bms(seq), False, at(seq))
        outcome = Refused(DATA, "disque plein", dropped=seq >= 2)
        alerts = of_type(core.report(outcome, at(seq)), Alert)
        assert [a.text.split(" :")[0] for a in alerts] == {
            0: ["Écriture impossible dans data.csv (disque plein)"], 1: [],
            2: ["Mémoire tampon pleine"], 3: []}[seq]
    assert counters(core) == (2, 0, 0, 0, 0)
    assert of_type(core.report(CaughtUp(DATA, rows=2, dropped_rows=2), at(5)), Alert) == [
        Alert("Écriture dans data.csv rétablie : 2 lignes rattrapées, 2 perdues (mémoire pleine)")]


# =========================================================================== files deleted under the process


def test_deleted_files_hold_the_acknowledgements_until_they_are_back() -> None:
    core = new_core()
    core.on_bms(bms(0), False, at(0))
    core.report(SummarySaved(), at(0))
    failed = RestoreFailed(("events.jsonl", "data.csv", "rejected.csv"), "disque plein", ENOSPC)
    assert core.report(failed, at(1)) == [
        Log(ERROR, f"events.jsonl, data.csv, rejected.csv removed and cannot be restored: {ENOSPC} "
                   "(retrying every second)"),
        Alert("Dossier du test supprimé (events.jsonl, data.csv, rejected.csv) et impossible à recréer "
              "(disque plein) : mesures gardées par le broker, nouvel essai chaque seconde"),
    ]
    assert core.blocked and core.report(failed, at(2)) == []
    restored = FilesRestored((("events.jsonl", 200), ("data.csv", 160), ("rejected.csv", 34)), folder_gone=True)
    assert core.report(restored, at(3)) == [
        Log(ERROR, "folder and events.jsonl, data.csv, rejected.csv removed while the test runs; restored "
                   "(events.jsonl: 200 bytes, data.csv: 160 bytes, rejected.csv: 34 bytes)"),
        Alert("Dossier du test supprimé pendant le test : recréé sans perte, l'enregistrement continue"),
    ]
    assert not core.blocked
    assert len(of_type(core.tick(at(3.2), 0.0), SaveSummary)) == 1  # config.json is rebuilt at once


def test_a_deleted_data_csv_alone_is_named() -> None:
    core = new_core()
    assert of_type(core.report(FilesRestored((("data.csv", 99),)), at(0)), Alert) == [
        Alert("data.csv supprimé pendant le test : recréé sans perte, l'enregistrement continue")]


# =========================================================================== resuming


def test_resume_from_the_rebuilt_summary_and_the_recount() -> None:
    core = new_core(step=3)
    summary = {"rows_count": 7, "rejected_count": 1, "duplicate_count": 4, "seq_gap_count": 2,
               "seq_restart_count": "x", "capacity_ah": 12.5, "capacity_wh": 640, "current_step": 3}
    core.resume(summary, recent_ri=[{"ri_charge": 0.02}], rows=10, rejected_rows=2, last_seq=41)
    assert counters(core) == (10, 2, 4, 2, 0)  # the files' recount wins; a malformed counter is 0
    assert core.on_bms(bms(41), True, at(0)) == []
    assert core.on_ri(b'{"ri_charge": 0.020}', True, at(1)) == [
        Log(INFO, "Ri results redelivered, already recorded: {'ri_charge': 0.02}")]
    assert not_logs(core.on_bms(bms(42), False, at(2))) == [data_row(42, 2, step=3)]
    # One phase-3 line saying 0 Ah after 12.5 Ah is not confirmed (docs/protocole.md §8): the capacity stays.
    assert core.flush(at(3))[0] == SaveSummary({"rows_count": 11, "rejected_count": 2, "duplicate_count": 6,
                                                "seq_gap_count": 2, "seq_restart_count": 0, "seq_lost_count": 0}, 12.5, 640.0, at(2).wall)


# =========================================================================== ESP clock and replay (docs/protocole.md §6, §7)


def bms11(seq: int, uptime_ms: int, **values: float) -> bytes:
    """A valid 11-field BMS payload (with the ESP's uptime)."""
    return f"{bms_line(seq, **values)},{uptime_ms}".encode()


def row_times(effects: list[Effect]) -> list[tuple[int, str, str]]:
    """(seq, timestamp, measured_at) of the data.csv rows among `effects`."""
    out = []
    for effect in of_type(effects, Append):
        if effect.file == DATA:
            parts = effect.data.decode().rstrip("\n").split(",")
            out.append((int(parts[2]), parts[0], parts[13]))
    return out


def iso_at(s: float) -> str:
    return record.iso(at(s).wall, millis=True)


def test_live_lines_estimate_the_offset_and_a_backlog_is_spaced_as_measured() -> None:
    core = new_core()
    # Before the marker: the first line of a boot is journaled, stamped at receipt (no estimate yet).
    effects = core.on_bms(bms11(0, 5_000), False, at(10.0))
    assert effects[0] == event(record.EVENT_ESP_BOOT, 10.0, row_t=iso_at(10.0), seq=0, uptime_ms=5_000, boot=0)
    assert row_times(effects) == [(0, iso_at(10.0), iso_at(10.0))]
    core.backlog_received()
    # Live: uptime 6 s received at 11.02 s: the ESP booted at 5.02 s at the latest.
    effects = core.on_bms(bms11(1, 6_000), False, at(11.02))
    assert effects[0] == event(record.EVENT_ESP_CLOCK, 11.02, boot=0, offset_ms=round(at(5.02).wall.timestamp() * 1000))
    assert row_times(effects) == [(1, iso_at(11.02), iso_at(11.02))]
    core.on_bms(bms11(2, 7_000), False, at(12.005))  # a faster line: booted at 5.005 s at the latest
    # A burst delivered within 3 ms is stamped 1 s apart, by the ESP's clock.
    burst = [row_times(core.on_bms(bms11(seq, 1_000 * (seq + 5)), False, at(40.0 + seq / 1000)))[0]
             for seq in (3, 4, 5)]
    assert [m for _, _, m in burst] == [iso_at(13.005), iso_at(14.005), iso_at(15.005)]
    assert core.counters["rows_count"] == 6 and counters(core)[3:] == (0, 0)


def test_an_uptime_past_any_calendar_is_written_at_its_receipt_time() -> None:
    # The first line of a boot has nothing to be judged against: its measurement time (past any
    # calendar) cannot be computed and the receipt stands in, without an OverflowError.
    core = new_core()
    effects = core.on_bms(bms11(0, 2**63 - 1), False, at(3))  # the contract's largest uptime_ms
    assert row_times(effects) == [(0, iso_at(3), iso_at(3))]


def test_an_uptime_years_ahead_of_the_previous_line_is_rejected_as_implausible() -> None:
    # Protocol v3, docs/protocole.md §8: in a running boot such a line is garbled, not a measurement to stamp (it
    # used to be written at its receipt time, and to start a spurious new ESP boot for the next line).
    core = new_core()
    core.backlog_received()
    for seq in range(20):  # past the estimator's warm-up: the offset no longer jumps
        core.on_bms(bms11(seq, seq * 1000), False, at(seq))
    effects = core.on_bms(bms11(20, 2**63 - 1), False, at(20))
    assert row_times(effects) == []
    assert [e.data.count(b"implausible") for e in of_type(effects, Append) if e.file == REJECTED] == [1]
    assert row_times(core.on_bms(bms11(21, 21_000), False, at(21))) == [(21, iso_at(21), iso_at(21))]
    assert core.seq.last == 21 and core.counters["rows_count"] == 21
    assert core.counters["seq_restart_count"] == 0 and core.boots_seen == 1


def test_a_restarted_core_stamps_the_backlog_from_the_journal_offset() -> None:
    boot = record.EspBoot("x", 0, 0)
    boot.clock("t", round(at(0).wall.timestamp() * 1000))  # the ESP booted at 0 s
    core = new_core()
    core.resume({}, last_seq=99, now=at(500), boots=[boot], last_uptime_ms=99_000)
    effects = [row_times(core.on_bms(bms11(seq, seq * 1000), False, at(500 + seq / 1000)))[0] for seq in (100, 101)]
    assert effects == [(100, iso_at(500.1), iso_at(100)), (101, iso_at(500.101), iso_at(101))]
    assert of_type(core.on_bms(bms11(102, 102_000), False, at(500.2)), Command) == []  # same boot, no gap


def test_an_esp_reboot_starts_a_new_boot_without_an_estimate() -> None:
    core = new_core()
    core.backlog_received()
    core.on_bms(bms11(40, 40_000), False, at(40.0))
    effects = core.on_bms(bms11(0, 900), False, at(50.0))  # seq and uptime restarted
    assert effects[0] == event(record.EVENT_ESP_BOOT, 50.0, row_t=iso_at(50.0), seq=0, uptime_ms=900, boot=1)
    assert effects[1] == event(record.EVENT_ESP_CLOCK, 50.0, boot=1, offset_ms=round(at(49.1).wall.timestamp() * 1000))
    assert counters(core)[4] == 1


def test_a_gap_is_asked_for_filled_once_and_in_its_step() -> None:
    core = new_core(step=3)
    core.backlog_received()
    core.on_bms(bms11(10, 10_000), False, at(10.0))
    effects = core.on_bms(bms11(14, 14_000), False, at(14.0))
    assert of_type(effects, Command) == [Command("replay 11 13")]
    core.on_step(b"4", False, at(14.5))
    replay = core.on_replay(bms11(12, 12_000), False, at(15.0))
    # Written in the phase it was measured in, timed by the ESP's clock.
    assert row_times(replay) == [(12, iso_at(15.0), iso_at(12.0))]
    assert replay[0].data.decode().split(",")[1] == "3"  # type: ignore[union-attr]
    assert core.on_replay(bms11(12, 12_000), False, at(15.1)) == []  # never twice
    assert core.on_replay(bms11(10, 10_000), False, at(15.2)) == []  # never asked for: already written
    assert len(row_times(core.on_replay(bms11(11, 11_000), False, at(15.3)))) == 1
    assert of_type(core.on_replay(bms11(13, 13_000), False, at(15.4)), Log) == [
        Log(INFO, "seq 11..13: gap filled by the ESP's replay")]
    assert core.counters["duplicate_count"] == 2 and core.counters["rows_count"] == 5
    assert of_type(core.tick(at(700), None), Alert) == []  # nothing missing: no alert, ever (None: no watchdog)
    assert core.counters["seq_lost_count"] == 0


def test_a_line_a_gap_misses_delivered_late_by_the_broker_fills_it_and_is_no_reboot() -> None:
    # A broker killed and restored from its file delivers what it had saved after newer lines.
    core = new_core(step=2)
    core.backlog_received()
    for seq in (10, 11):
        core.on_bms(bms11(seq, seq * 1000), False, at(seq))
    assert of_type(core.on_bms(bms11(15, 15_000), False, at(15.0)), Command) == [Command("replay 12 14")]
    core.on_step(b"3", False, at(15.5))
    late = core.on_bms(bms11(13, 13_000), False, at(16.0))  # no DUP flag: its first delivery
    assert row_times(late) == [(13, iso_at(16.0), iso_at(13.0))]
    assert of_type(late, Append)[0].data.decode().split(",")[1] == "2"  # the phase it was measured in
    assert of_type(core.on_bms(bms11(13, 13_000), False, at(16.1)), Append) == []  # never twice
    assert of_type(core.on_bms(bms11(16, 16_000), False, at(16.2)), Command) == []  # goes on from 15
    core.on_replay(bms11(12, 12_000), False, at(16.3))
    assert of_type(core.on_bms(bms11(14, 14_000), False, at(16.4)), Log) == [
        Log(INFO, "seq 12..14: gap filled by the broker, late")]
    assert counters(core) == (7, 0, 1, 1, 0)
    assert of_type(core.tick(at(700), None), Alert) == [] and core.counters["seq_lost_count"] == 0


@pytest.mark.parametrize("restarted", [False, True])
def test_a_gap_is_written_in_the_phase_of_the_row_before_it_restarted_or_not(restarted: bool) -> None:
    # The step came between the last row of phase 2 and the line that shows the gap: the missing
    # lines get phase 2 live, as the recount of data.csv gives them after a restart.
    core = new_core(step=2)
    rows = [e.data for e in core.on_bms(bms(10), False, at(10)) if isinstance(e, Append)]
    core.on_step(b"3", False, at(10.5))
    if restarted:
        counts = record.count_data_lines(rows)
        core = new_core(step=3)
        core.resume({}, last_seq=counts.last_seq, recent=counts.recent_lines(), last_row_step=counts.last_step)
    assert of_type(core.on_bms(bms(14), False, at(14)), Command) == [Command("replay 11 13")]
    replayed = [e.data for e in core.on_replay(bms(12), False, at(15)) if isinstance(e, Append) and e.file == DATA]
    assert [row.split(b",")[1] for row in replayed] == [b"2"]


def test_an_unanswered_gap_is_asked_every_minute_then_counted_lost_with_one_alert() -> None:
    core = new_core()
    core.on_bms(bms(0), False, at(0))
    core.on_bms(bms(5), False, at(1))  # 1..4 missing, asked at once
    core.on_replay(bms(2), False, at(2))
    asks = {s: of_type(core.tick(at(s), 0.0), Command) for s in (30, 61, 100, 121, 181)}
    assert asks == {30: [], 61: [Command("replay 1 4")], 100: [], 121: [Command("replay 1 4")],
                    181: [Command("replay 1 4")]}
    effects = []
    for s in range(182, 700):
        effects += core.tick(at(s), 0.0)
    assert of_type(effects, Alert) == [Alert("3 lignes BMS perdues (seq 1..4) : pas renvoyées par l'ESP en 10 min")]
    assert event(record.EVENT_SEQ_LOST, 601, boot=None, first=1, last=4, count=3) in effects
    assert core.counters["seq_lost_count"] == 3
    assert core.on_replay(bms(3), False, at(700)) == []  # too late: counted lost, not written


def test_a_resumed_core_asks_for_the_holes_data_csv_still_has() -> None:
    core = new_core(step=3)
    # A hole measured in phase 2 (the restart came in phase 3), and one whose phase is unknown.
    core.resume({}, last_seq=50, now=at(0), holes=[(20, 24, 2), (30, 31, None)])
    assert of_type(core.tick(at(0.2), 0.0), Command) == [Command("replay 20 24"), Command("replay 30 31")]
    effects = core.on_replay(bms(22), False, at(1))
    assert len(row_times(effects)) == 1
    rows = [e.data for e in effects if isinstance(e, Append) and e.file == DATA]
    assert [row.split(b",")[1] for row in rows] == [b"2"]  # written in the phase it was measured in
    rows = [e.data for e in core.on_replay(bms(30), False, at(2)) if isinstance(e, Append) and e.file == DATA]
    assert [row.split(b",")[1] for row in rows] == [b"3"]


def test_a_restarted_core_knows_the_last_lines_it_wrote_by_their_text() -> None:
    """The recount of data.csv gives back the ESP's lines as sent (10 or 11 fields), so after a restart a
    re-sent copy is a duplicate and a rebooted ESP's line under a remembered seq is a new boot, DUP or not."""
    core = new_core()
    core.backlog_received()
    payloads = [bms11(seq, seq * 1000, soc_pct=float(seq)) for seq in range(5)] + [bms(5), bms(8), bms(6)]
    rows = [e.data for i, p in enumerate(payloads) for e in core.on_bms(p, False, at(i))
            if isinstance(e, Append) and e.file == DATA]
    counts = record.count_data_lines(rows)
    assert counts.recent_lines() == core.seq.recent == {protocol.parse_bms_line(p).seq: p for p in payloads}
    restarted = new_core()
    restarted.resume({}, last_seq=counts.last_seq, holes=[(7, 7, 1)], recent=counts.recent_lines())
    assert of_type(restarted.on_bms(payloads[2], True, at(10)), Append) == []  # written before the crash
    assert of_type(restarted.on_bms(bms(7), True, at(11)), Append) == [data_row(7, 11)]  # the hole, at last
    # The ESP rebooted while banc.py was down: its seq 1 measured something else.
    assert of_type(restarted.on_bms(bms(1, soc_pct=90.0), True, at(12)), Append) == [
        data_row(1, 12, soc_pct=90.0)]
    assert counters(restarted)[2:] == (1, 0, 1)


def test_a_gap_still_open_at_step_5_is_counted_lost() -> None:
    core = new_core(step=4)
    core.on_bms(bms(0), False, at(0))
    core.on_bms(bms(3), False, at(1))
    core.on_step(b"5", False, at(2))
    assert of_type(core.flush(at(3)), Alert) == [Alert("2 lignes BMS perdues (seq 1..2) : test terminé avant leur renvoi")]
    assert of_type(core.flush(at(4)), Alert) == []


def test_a_folder_of_the_earlier_version_keeps_12_columns() -> None:
    core = new_core()
    core.resume({}, data_width=len(record.DATA_CSV_HEADER_V1))
    assert core.on_bms(bms11(0, 1000), False, at(0.25)) [-1] == Append(
        DATA, b"2026-12-01T10:00:00.250+01:00,1,0,52.000,-10.000,50.0,25.0,0.000,0.0,3250,3262,0\n")
