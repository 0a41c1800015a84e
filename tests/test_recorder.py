"""recorder.RecorderCore in-process: no broker, no file, an injected clock, exact effects.

Each test feeds the core messages, ticks and write outcomes at chosen instants and compares
the effects it returns with the ones written out here. What only a real process can show
(fsync before the acknowledgement, files restored from open descriptors, kill -9) stays in
test_banc.py and test_crash.py.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Optional, TypeVar

import pytest

import protocol
import record
from recorder import (
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
)
from testkit.banc_helpers import bms_line

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=record.LOCAL_TZ)
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR
ENOSPC = "[Errno 28] No space left on device"
E = TypeVar("E", Append, Retry, Sync, SaveSummary, Alert, Log)


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
    """The journal line expected for an event at `s`."""
    return Append(JOURNAL, record.encode_event(kind, at(s).wall, **fields))


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
        Append(REJECTED, b'2026-12-01T10:00:00.000+01:00,banc1/bms/data,"expected 10 or 11 fields, got 1",hello\n'),
        Log(WARNING, "rejected on banc1/bms/data: expected 10 or 11 fields, got 1 (hello)"),
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
    assert core.flush(at(3))[0] == SaveSummary({"rows_count": 11, "rejected_count": 2, "duplicate_count": 6,
                                                "seq_gap_count": 2, "seq_restart_count": 0, "seq_lost_count": 0}, 0.0, 0.0, at(2).wall)
