"""The test record (record.py): journal fold, summary and bench-state rebuild. Pure tables, then small folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from banclfp.analysis import calibration
from banclfp.infra import environment
from banclfp.recording import record
from banclfp.recording.store import Store

T0 = datetime(2026, 11, 24, 10, 30, tzinfo=record.LOCAL_TZ)


def ev(kind: str, minute: int = 0, **fields: object) -> record.Event:
    """A journal event at T0 + `minute` minutes, read from its line's object (any fields: the reader's tolerance)."""
    return record.event_from_json({"t": record.event_time(T0.replace(minute=30 + minute)), "event": kind, **fields})


def line(kind: str, **fields: object) -> bytes:
    """A journal line at T0."""
    return record.encode_event(record.event_from_json({"t": record.event_time(T0), "event": kind, **fields}))


START = ev(record.EVENT_START, serial="RW-ab12cd", banc="banc1", first_handle="2026-11-24T10:30:00+01:00")


@pytest.mark.parametrize(
    "events, step, status",
    [
        ([START], 1, record.TEST_RUNNING),
        ([START, ev("step", 1, step=2), ev("step", 2, step=3)], 3, record.TEST_RUNNING),
        ([START, ev("step", 1, step=3), ev("stop", 2)], 3, record.TEST_STOPPED),
        ([START, ev("step", 1, step=3), ev("stop", 2), ev("resume", 3)], 3, record.TEST_RUNNING),
        ([START, ev("step", 1, step=4), ev("step", 2, step=5)], 5, record.TEST_FINISHED),
        # Nothing changes a finished test: not a late step, a stop or an abandon.
        ([START, ev("step", 1, step=5), ev("step", 2, step=2), ev("stop", 3), ev("abandon", 4)], 5, record.TEST_FINISHED),
        ([START, ev("step", 1, step=2), ev("abandon", 2)], 2, record.TEST_ABANDONED),
        ([START, ev("step", 1, step=7), ev("step", 2, step="3"), ev("bogus", 3)], 1, record.TEST_RUNNING),
        # The ESP may go back a phase: the journal follows the last step, as it was recorded.
        ([START, ev("step", 1, step=3), ev("step", 2, step=2)], 2, record.TEST_RUNNING),
    ],
)
def test_fold_events_phase_and_status(events: list, step: int, status: str) -> None:
    state = record.fold_events(events)
    assert (state.step, state.status) == (step, status)
    assert state.first_handle == "2026-11-24T10:30:00+01:00" and state.serial == "RW-ab12cd"


def test_fold_events_ri_running_means_match_the_values_sent() -> None:
    values = [0.030, 0.032, 0.031, 0.035]
    events = [START] + [ev("ri", i, values={"ri_discharge": v, "temperature_c": 20.0 + i}) for i, v in enumerate(values)]
    events.append(ev("ri", 9, values={"diffusion_charge": 0.012}))
    state = record.fold_events(events)
    assert state.ri_means["ri_discharge"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert state.ri_counts == {"ri_discharge": 4, "ri_charge": 0, "diffusion_discharge": 0, "diffusion_charge": 1}
    assert state.ri_temperature_c == 23.0


@pytest.mark.parametrize(
    "raw, count, bad",
    [
        (b"", 0, 0),
        (line("step", step=2), 1, 0),
        (line("step", step=2) + b'{"t":"x","event":"st', 1, 1),  # torn last line
        (b"garbage\n" + line("step", step=2), 1, 1),
        (b'[1,2]\n{"no_event": 1}\n\n', 0, 2),
    ],
)
def test_parse_events_skips_torn_and_damaged_lines(raw: bytes, count: int, bad: int) -> None:
    events, bad_lines = record.parse_events(raw)
    assert (len(events), bad_lines) == (count, bad)


@pytest.mark.parametrize(
    "config, data_step, step",
    [
        ({"current_step": 3}, 2, 3),
        ({"current_step": 1}, 3, 3),  # a stale config.json never rewinds what data.csv shows
        ({}, 4, 4),
        ({"current_step": "x"}, None, 1),
    ],
)
def test_migration_takes_the_highest_phase_shown(config: dict, data_step: int | None, step: int) -> None:
    assert record.migration_event(record.TestSummary.from_json(config), data_step, T0, "RW-ab12cd", "banc1").step == step


def test_migration_keeps_ri_means_and_counts() -> None:
    config = {"current_step": 2, "first_handle": "2026-11-20T09:00:00+01:00", "ri_discharge_average": 0.03,
              "ri_discharge_count": 3, "ri_charge_average": None}
    state = record.fold_events([record.migration_event(record.TestSummary.from_json(config), 2, T0, "RW-ab12cd",
                                                       "banc1")])
    assert (state.step, state.first_handle) == (2, "2026-11-20T09:00:00+01:00")
    assert (state.ri_means["ri_discharge"], state.ri_counts["ri_discharge"]) == (0.03, 3)
    assert state.ri_means["ri_charge"] is None


def row(seq: int, step: int, capacity: float = 0.0) -> bytes:
    """A data.csv line."""
    return f"2026-11-24T10:30:{seq % 60:02d}.000+01:00,{step},{seq},52.0,-1.0,50.0,25.0,{capacity},{capacity * 50},3250,3262,0\n".encode()


def test_count_data_lines_recounts_counters_and_holds_the_phase_3_capacity() -> None:
    # (A real counter moves by at most 0.14 Ah a line: 0.5 Ah a line apart, the values agree.)
    lines = [b"timestamp,step,seq\n", row(0, 3, 29.0), row(1, 3, 29.4), row(5, 3, 30.0),  # one gap
             row(0, 4, 0.0), row(1, 4, 0.0), b"garbage,1\n"]  # an ESP reboot in phase 4 (counters lost)
    counts = record.count_data_lines(lines)
    assert (counts.rows, counts.seq_gaps, counts.seq_restarts, counts.last_seq, counts.bad_rows) == (5, 1, 1, 1, 1)
    assert counts.measured_capacity(4) == (30.0, 1500.0)


def test_the_recount_takes_no_capacity_from_one_garbled_row() -> None:
    lines = [b"timestamp,step,seq\n", *(row(k, 3, 20.0 + k / 100) for k in range(10)),
             row(10, 3, 28.1), row(11, 4, 28.1)]  # phase 3's last row garbled (+8 Ah), held into phase 4
    assert record.count_data_lines(lines).measured_capacity(4) == (20.09, 20.09 * 50)


def test_rebuild_summary_takes_the_journal_over_a_stale_config() -> None:
    state = record.fold_events([START, ev("step", 1, step=3), ev("ri", 2, values={"ri_charge": 0.02})])
    counts = record.count_data_lines([row(0, 3, 2.3), row(1, 3, 2.5)])  # two rows that agree: the capacity
    stale = {"battery_serial": "RW-AB12CD", "current_step": 1, "duplicate_count": 4, "rows_count": 999,
             "ri_charge_average": 0.5, "ri_charge_count": 9}
    summary = record.rebuild_summary(stale, state, counts, rejected_rows=2)
    assert summary["current_step"] == 3 and summary["status"] == record.TEST_RUNNING
    assert (summary["ri_charge_average"], summary["ri_charge_count"]) == (0.02, 1)
    assert (summary["rows_count"], summary["rejected_count"], summary["duplicate_count"]) == (2, 2, 4)
    assert (summary["capacity_ah"], summary["first_handle"]) == (2.5, "2026-11-24T10:30:00+01:00")
    assert set(record.new_summary("banc1", "RW-X1234", "t")) <= set(summary)


@pytest.mark.parametrize("a, b, same", [("RW-ab12", "RW-AB12", True), ("RW-ab12", "RW-ab13", False), (None, "RW-ab12", False)])
def test_serials_compare_without_letter_case(a: object, b: object, same: bool) -> None:
    assert record.same_serial(a, b) is same


def make_test(data: Path, banc: str, name: str, events: list[bytes]) -> Path:
    """A test folder with a journal."""
    folder = data / banc / name
    folder.mkdir(parents=True)
    (folder / record.EVENTS_FILE).write_bytes(b"".join(events))
    return folder


def test_rebuild_bancs_config_from_the_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    start = line("start", serial="RW-aaaa1", banc="banc1", first_handle="2026-11-24T10:30:00+01:00")
    make_test(data, "banc1", "24112026-RW-aaaa1", [start, line("step", step=3),
                                                   line("stop")])
    make_test(data, "banc2", "24112026-RW-bbbb2", [start.replace(b"aaaa1", b"bbbb2"), line("step", step=5)])
    make_test(data, "banc3", "24112026-RW-cccc3", [start.replace(b"aaaa1", b"cccc3"), line("abandon")])
    # banc4: an older finished test, then an unfinished one of the same battery (its latest)
    make_test(data, "banc4", "20112026-RW-dddd4", [start.replace(b"aaaa1", b"dddd4"), line("step", step=5)])
    make_test(data, "banc4", "24112026-RW-dddd4", [start.replace(b"aaaa1", b"dddd4"), line("step", step=2)])
    config = record.rebuild_bancs_config(data, 5)
    assert list(config.bancs) == [
        record.bench_entry(1, record.STATUS_OCCUPIED, "RW-aaaa1", 3),
        record.bench_entry(2), record.bench_entry(3),
        record.bench_entry(4, record.STATUS_OCCUPIED, "RW-dddd4", 2),
        record.bench_entry(5),
    ]


@pytest.mark.parametrize("damage", [b"", b'{"bancs": [{"na', b"\x00\xff garbage", b'{"bancs": 3}'])
def test_damaged_bancs_config_is_rebuilt_never_reset(store: Store, banc_home: Path, damage: bytes) -> None:
    folder, _ = store.find_or_create_test_folder("banc2", "RW-KEEP1234", T0)
    store.open_test_record(folder, "banc2", "RW-KEEP1234", T0)
    store.update_config(folder, 3, T0)
    record.append_event(folder, record.StopEvent(record.event_time(T0)))
    store.bancs_config_path.write_bytes(damage)
    info = store.get_banc_info("banc2")
    assert (info.status, info.serial_pending, info.current_step) == ("occupied", "RW-KEEP1234", 3)
    kept = [p for p in banc_home.iterdir() if p.name.startswith("bancs_config.json.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == damage


@pytest.mark.parametrize("damage", [None, b"", b"{ not json", b'{"battery_serial": "RW-OTHER999"}'])
def test_damaged_config_json_is_rebuilt_from_the_journal(store: Store, banc_home: Path, damage: bytes | None) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ab12cd", T0)
    store.open_test_record(folder, "banc1", "RW-ab12cd", T0)
    store.update_config_ri_results(folder, {"ri_discharge": 0.03}, T0)
    store.update_config_ri_results(folder, {"ri_discharge": 0.05}, T0)
    store.update_config(folder, 3, T0)
    written = record.corrected_summary_file(folder)
    assert written is not None
    first = written["first_handle"]
    path = folder / "config.json"
    path.unlink() if damage is None else path.write_bytes(damage)
    # The resume may come with the serial in another letter case: same battery, same test.
    state, config = store.open_test_record(folder, "banc1", "RW-AB12CD", T0.replace(hour=15))
    assert (state.step, config["current_step"], config["first_handle"]) == (3, 3, first)
    assert (config["ri_discharge_average"], config["ri_discharge_count"]) == (pytest.approx(0.04), 2)
    assert config["battery_serial"] == "RW-ab12cd"


def test_data_counts_know_the_phase_each_hole_was_measured_in() -> None:
    """A hole's phase is the step of the row just before it; a replayed line splitting it passes its own on."""
    counts = record.DataCounts()

    def row(seq: int, step: int) -> list[bytes]:
        parts = [b"0"] * len(record.DATA_CSV_HEADER)
        parts[record.DATA_COLUMN["seq"]], parts[record.DATA_COLUMN["step"]] = str(seq).encode(), str(step).encode()
        return parts

    for seq, step in [(0, 2), (1, 2), (6, 3), (7, 3), (3, 2), (10, 4)]:  # gap 2..5 in phase 2, 3 replayed, gap 8..9
        counts.add(row(seq, step))
    assert counts.holes.holes == [[2, 2], [4, 5], [8, 9]]
    assert [counts.hole_steps.get(first) for first, _last in counts.holes.holes] == [2, 2, 3]
    counts.add(row(0, 1))  # the ESP rebooted: its holes are forgotten, and their phases
    assert counts.holes.holes == [] and counts.hole_steps == {}


@pytest.mark.parametrize("journal_step, finished, config_step, data_step, expected", [
    (2, False, 2, 2, None),
    (2, False, 4, None, 4),  # config.json shows phase 4: the journal lost its line
    (2, False, None, 4, 4),  # data.csv's rows do
    (2, False, 3, 4, 4),
    (4, False, 3, 2, None),  # the ESP went back a phase: the journal says so, it stays
    (5, True, 9, 4, None),  # a finished test is never touched
    (2, False, 9, "4", None),  # not phases
])
def test_the_phase_a_damaged_journal_is_brought_back_to(journal_step: int, finished: bool, config_step: object,
                                                       data_step: object, expected: int | None) -> None:
    events = [START, ev("step", 1, step=journal_step)]
    assert record.fold_events(events).finished is finished
    assert record.step_to_restore(record.fold_events(events), config_step, data_step) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("config_damaged", [False, True])
def test_a_journal_that_lost_its_step_lines_never_rewinds_the_test(store: Store, banc_home: Path, config_damaged: bool) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ab12cd", T0)
    store.open_test_record(folder, "banc1", "RW-ab12cd", T0)
    for step in (2, 3, 4):
        store.update_config(folder, step, T0)
    store.create_data_csv(folder)
    with open(folder / record.DATA_CSV_FILE, "ab") as fh:
        fh.write(row(0, 4, 10.0))
    journal = folder / record.EVENTS_FILE
    lines = journal.read_bytes().split(b"\n")
    damaged = [i for i, line in enumerate(lines) if b'"step":3' in line or b'"step":4' in line]
    for i in damaged:
        lines[i] = lines[i][:10] + b"\xff" + lines[i][11:]  # a bad sector
    journal.write_bytes(b"\n".join(lines))
    if config_damaged:
        (folder / record.TEST_CONFIG_FILE).write_bytes(b"{ not json")
    state, config = store.open_test_record(folder, "banc1", "RW-ab12cd", T0.replace(hour=15))
    assert (state.step, config["current_step"]) == (4, 4)
    assert store.open_test_record(folder, "banc1", "RW-ab12cd", T0.replace(hour=16))[0].step == 4
    assert sum(b'"restored":true' in line for line in journal.read_bytes().split(b"\n")) == 1


def test_a_row_whose_seq_no_line_can_carry_is_a_bad_row() -> None:
    """A damaged seq (beyond 2**32 - 1, or negative) would leave a hole no replay can name: banc.py could not start."""
    lines = [row(seq, 2) for seq in range(3)] + [row(99999999999, 2), row(-5, 2)] + [row(seq, 2) for seq in (4, 5)]
    counts = record.count_data_lines(lines)
    assert (counts.rows, counts.bad_rows, counts.last_seq, counts.holes.holes) == (5, 2, 5, [[3, 3]])


def _lose_start_line(folder: Path) -> None:
    journal = folder / record.EVENTS_FILE
    raw = journal.read_bytes()
    journal.write_bytes(b"#" + raw[1:])  # the first line (the start) unreadable


def test_a_journal_that_lost_its_start_line_is_started_again_once(store: Store, banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ab12cd", T0)
    store.open_test_record(folder, "banc1", "RW-ab12cd", T0)
    store.update_config(folder, 2, T0)
    _lose_start_line(folder)
    state, config = store.open_test_record(folder, "banc1", "RW-ab12cd", T0.replace(hour=15))
    assert (state.serial, state.step, config["battery_serial"], config["banc"]) == ("RW-ab12cd", 2, "RW-ab12cd", "banc1")
    store.open_test_record(folder, "banc1", "RW-ab12cd", T0.replace(hour=16))
    assert sum(b'"restored":true' in line for line in (folder / record.EVENTS_FILE).read_bytes().split(b"\n")) == 1


def test_a_journal_without_its_start_line_never_makes_config_json_quarantined(store: Store, banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ab12cd", T0)
    store.open_test_record(folder, "banc1", "RW-ab12cd", T0)
    store.update_config(folder, 2, T0)
    _lose_start_line(folder)
    for rows in range(3):
        store.update_config_counters(folder, {"rows_count": rows})
    assert [p.name for p in folder.iterdir() if ".corrupt-" in p.name] == []
    config = record.corrected_summary_file(folder)
    assert config is not None and config["battery_serial"] == "RW-ab12cd" and config["rows_count"] == 2


# --------------------------------------------------------------------------- ESP boots by number


def boot_ev(minute: int, seq: int, number: int | None = None) -> record.Event:
    """An EVENT_ESP_BOOT: its row at T0 + `minute`, numbered when `number` is given (the recorder from now on)."""
    fields: dict = {"row_t": f"2026-11-24T10:{30 + minute:02d}:00.000+01:00", "seq": seq, "uptime_ms": 500 + seq}
    if number is not None:
        fields["boot"] = number
    return ev(record.EVENT_ESP_BOOT, minute, **fields)


def journal_of_three_boots(numbered: bool) -> list[bytes]:
    """Journal lines: boots 0, 1, 2, each with an offset (and a lost span in boot 2)."""
    events = [START]
    for k in range(3):
        events += [boot_ev(1 + 3 * k, 10 * k, k if numbered else None),
                   ev(record.EVENT_ESP_CLOCK, 2 + 3 * k, boot=k, offset_ms=1_000_000 * (k + 1))]
    events.append(ev(record.EVENT_SEQ_LOST, 9, boot=2, first=24, last=25, count=2))
    return [record.encode_event(event) for event in events]


def test_esp_boots_are_keyed_by_their_number_so_an_unreadable_boot_line_shifts_nothing() -> None:
    lines = journal_of_three_boots(numbered=True)
    lines[3] = lines[3][:25] + b"\x00garbled\n"  # boot 1's line
    events, bad = record.parse_events(b"".join(lines))
    assert bad == 1
    state = record.fold_events(events)
    assert [boot.located for boot in state.esp_boots] == [True, False, True]
    assert [boot.offset_ms for boot in state.esp_boots] == [1_000_000, 2_000_000, 3_000_000]
    assert (state.esp_boots[2].seq, state.esp_boots[2].uptime_ms) == (20, 520)  # boot 2's row, its own offset
    assert state.esp_boots[1] == record.EspBoot(None, None, None, 2_000_000, state.esp_boots[1].first_offset_t,
                                                2_000_000)  # a hole keeps its number and its offsets
    assert (state.current_boot, state.next_boot_number) == (2, 3)
    assert state.seq_lost_spans == [(2, 24, 25)]


@pytest.mark.parametrize("damaged", [None, 1, 3, 5])
def test_a_journal_without_boot_numbers_folds_as_before(damaged: int | None) -> None:
    """Earlier journals number their boots by position; with the field or without, an intact journal folds the same."""
    old, new = journal_of_three_boots(numbered=False), journal_of_three_boots(numbered=True)
    if damaged is None:
        assert record.fold_events(record.parse_events(b"".join(old))[0]).esp_boots == \
            record.fold_events(record.parse_events(b"".join(new))[0]).esp_boots
        boots = record.fold_events(record.parse_events(b"".join(old))[0]).esp_boots
        assert [(b.seq, b.first_offset_ms, b.offset_ms) for b in boots] == [
            (0, 1_000_000, 1_000_000), (10, 2_000_000, 2_000_000), (20, 3_000_000, 3_000_000)]
        return
    # A boot's line lost in an old journal (boot 0, 1 or 2): the clock lines still name their
    # boots, so the offsets after it land on the boot they were estimated for.
    del old[damaged]
    state = record.fold_events(record.parse_events(b"".join(old))[0])
    assert state.next_boot_number == 3
    assert state.esp_boots[2].offset_ms == 3_000_000


@pytest.mark.parametrize("last_line", ["clock", "seq_lost"])
def test_the_current_boot_counts_a_boot_whose_line_is_unreadable(last_line: str) -> None:
    """The newest boot's own line is lost, yet a later line names it: the next boot never reuses its number."""
    events = [START, boot_ev(1, 0, 0), ev(record.EVENT_ESP_CLOCK, 2, boot=0, offset_ms=5)]
    events.append(ev(record.EVENT_ESP_CLOCK, 4, boot=1, offset_ms=7) if last_line == "clock"
                  else ev(record.EVENT_SEQ_LOST, 4, boot=1, first=3, last=3, count=1))
    state = record.fold_events(events)
    assert (state.current_boot, state.next_boot_number) == (1, 2)
    assert not state.esp_boots[1].located
    assert state.esp_boots[1].offset_ms == (7 if last_line == "clock" else None)


def test_boot_numbers_out_of_reach_and_copies_of_a_boot_line_change_nothing() -> None:
    events = [START, boot_ev(1, 0, 0), boot_ev(2, 5, 0),  # the same number again: the first line stays
              ev(record.EVENT_ESP_CLOCK, 3, boot=10**9, offset_ms=1),  # damage, not a boot
              ev(record.EVENT_ESP_CLOCK, 3, boot=True, offset_ms=1),
              ev(record.EVENT_ESP_CLOCK, 3, boot=0, offset_ms=True)]
    state = record.fold_events(events)
    assert [(b.seq, b.offset_ms) for b in state.esp_boots] == [(0, None)]
    assert (record.fold_events([START]).current_boot, record.fold_events([START]).next_boot_number) == (None, 0)


def test_a_journal_line_written_twice_counts_once() -> None:
    """A copy of a line (same time to the ms, same fields) never biases the Ri means nor the lost lines."""
    ri = ev("ri", 1, values={"ri_discharge": 0.030})
    lost = ev(record.EVENT_SEQ_LOST, 2, boot=0, first=3, last=4, count=2)
    again = ev("ri", 3, values={"ri_discharge": 0.030})  # the same values at another time: another pulse
    raw = b"".join(record.encode_event(e) for e in (START, ri, ri, lost, lost, again))
    state = record.fold_events(record.parse_events(raw)[0])
    assert (state.ri_counts["ri_discharge"], state.seq_lost_count, len(state.seq_lost_spans)) == (2, 2, 1)
    assert state.ri_means["ri_discharge"] == pytest.approx(0.030)


# --------------------------------------------------------------------------- Ri: plausible values, 25 °C pulse by pulse


@pytest.mark.parametrize(
    "value, folded",
    [
        (0.020, True),
        (0.0005, True),  # the default range's bounds are plausible
        (1.0, True),
        (1e-9, False),  # garbled: nothing a 16S pack gives
        (0.000499, False),
        (1.000001, False),
        (10.0, False),  # a broken connection (the contract's own maximum)
    ],
)
def test_the_fold_skips_an_implausible_ri_of_a_journal_written_before_the_recorder_refused_it(
    value: float, folded: bool,
) -> None:
    events = [START, ev("ri", 1, values={"ri_discharge": 0.020, "temperature_c": 20.0}),
              ev("ri", 2, values={"ri_discharge": value, "temperature_c": 30.0})]
    state = record.fold_events(events)
    assert state.ri_counts["ri_discharge"] == (2 if folded else 1)
    assert state.ri_means["ri_discharge"] == pytest.approx((0.020 + value) / 2 if folded else 0.020)
    assert state.ri_temperature_c == (30.0 if folded else 20.0)  # a result wholly refused is as if never sent
    assert [pulse[0] for pulse in state.ri_pulses["ri_discharge"]] == ([0.020, value] if folded else [0.020])
    assert len(state.recent_ri) == 2  # still recognised as a copy if the broker sends it again


def test_the_fold_keeps_the_plausible_values_of_a_result_and_their_temperature() -> None:
    state = record.fold_events([START, ev("ri", 1, values={"ri_discharge": 1e-9, "diffusion_discharge": 0.006,
                                                           "temperature_c": 27.0})])
    assert state.ri_counts == {"ri_discharge": 0, "ri_charge": 0, "diffusion_discharge": 1, "diffusion_charge": 0}
    assert state.ri_means["ri_discharge"] is None and state.ri_pulses["diffusion_discharge"] == [(0.006, 27.0, 1)]
    assert state.ri_temperature_c == 27.0


@pytest.mark.parametrize(
    "ri, temperature, pulses",
    [
        ({"ri_discharge": [0.021, 3]}, 20.0, [(0.021, 20.0, 3)]),  # one block of 3 at its one temperature
        ({"ri_discharge": [0.021, 3]}, None, [(0.021, None, 3)]),
        ({"ri_discharge": [5.0, 3]}, 20.0, []),  # a mean no pack gives (an old config.json): skipped
        ({"ri_discharge": [0.021, 0]}, 20.0, [(0.021, 20.0, 1)]),  # a mean is of one value at least
    ],
)
def test_a_migrated_mean_is_one_block_at_its_temperature(ri: dict, temperature: object, pulses: list) -> None:
    migrate = ev(record.EVENT_MIGRATE, serial="RW-ab12cd", banc="banc1", step=2, ri=ri, ri_temperature_c=temperature)
    state = record.fold_events([migrate])
    assert state.ri_pulses["ri_discharge"] == pulses
    assert state.ri_counts["ri_discharge"] == sum(count for _, _, count in pulses)
    summary = record.apply_state(record.new_summary("banc1", "RW-ab12cd", "x"), state)
    expected = None if not pulses else pulses[0][0] * (2.0 if temperature == 20.0 else 1.0)
    assert record.ri_at_25c(record.TestSummary.from_json(summary), "ri_discharge", cold_doubles) == expected


def cold_doubles(ohm: float, temperature_c: float | None) -> float:
    return ohm * 2.0 if temperature_c is not None and temperature_c < 25.0 else ohm


def project_curve() -> Callable[[float, float | None], float]:
    """utils.correct_to_25c with the project's temperature_coefficients.json, without a BANC_HOME."""
    curve = calibration.load_temp_coeffs(environment.PROJECT_DIR / environment.TEMP_COEFFS_FILE)
    return lambda ohm, temperature_c: ohm if temperature_c is None else ohm * curve(temperature_c)


CORRECT = project_curve()

pulse_values = st.floats(min_value=0.0005, max_value=1.0, allow_nan=False)
pulse_temperatures = st.one_of(st.none(), st.floats(min_value=-40.0, max_value=150.0, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(pulse_values, pulse_temperatures), min_size=1, max_size=40))
def test_the_25c_mean_is_the_mean_of_each_pulse_corrected_with_its_own_temperature(
    pulses: list[tuple[float, float | None]],
) -> None:
    """For any pulses: config.json's figure at 25 °C is the mean of the pulses each corrected with its temperature.

    A pulse without a temperature was measured at the previous pulse's; none before it: at 25 °C (uncorrected).
    """
    events = [START]
    for i, (ohm, temperature) in enumerate(pulses):
        values: dict = {"ri_charge": ohm}
        if temperature is not None:
            values["temperature_c"] = temperature
        events.append(ev("ri", i % 29, values=values))
    summary = record.TestSummary.from_json(json.loads(json.dumps(record.apply_state(
        record.new_summary("banc1", "RW-ab12cd", "x"), record.fold_events(events)))))  # as config.json holds it
    corrected, known = [], None
    for ohm, temperature in pulses:
        known = temperature if temperature is not None else known
        corrected.append(CORRECT(ohm, known))
    assert summary.ri_averages["ri_charge"] == pytest.approx(sum(p[0] for p in pulses) / len(pulses), rel=1e-9)
    assert summary.ri_counts["ri_charge"] == len(pulses)
    assert record.ri_at_25c(summary, "ri_charge", CORRECT) == pytest.approx(sum(corrected) / len(corrected), rel=1e-9)
    assert record.ri_at_25c(summary, "ri_discharge", CORRECT) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.pop("ri_pulses"),  # an earlier version's config.json
        lambda s: s.update(ri_pulses="x"),
        lambda s: s["ri_pulses"].update(ri_discharge=[[0.02, "warm", 1], [0.04, 35.0, 1]]),
        lambda s: s["ri_pulses"].update(ri_discharge=[[0.02, 25.0, 1]]),  # not what the mean was made of
        lambda s: s.update(ri_discharge_count=3),
        lambda s: s.update(ri_discharge_average=0.031),  # the mean edited by hand
    ],
)
def test_pulses_that_are_not_what_the_mean_is_made_of_give_way_to_the_mean(change: object) -> None:
    """Then the mean is corrected with ri_temperature_c, as the earlier version did."""
    state = record.fold_events([START, ev("ri", 1, values={"ri_discharge": 0.02, "temperature_c": 25.0}),
                                ev("ri", 2, values={"ri_discharge": 0.04, "temperature_c": 35.0})])
    summary = record.apply_state(record.new_summary("banc1", "RW-ab12cd", "x"), state)
    def at_25c(config: dict) -> float | None:
        return record.ri_at_25c(record.TestSummary.from_json(config), "ri_discharge", cold_doubles)

    assert at_25c(summary) == pytest.approx(0.03)
    assert at_25c({**summary, "ri_temperature_c": 20.0}) == pytest.approx(0.03)
    assert callable(change)
    change(summary)
    summary["ri_temperature_c"] = 20.0
    mean = summary["ri_discharge_average"]
    assert at_25c(summary) == pytest.approx(mean * 2.0)


def test_load_summary_rebuilds_the_pulses_of_a_config_json_written_before_them(store: Store, banc_home: Path) -> None:
    """A folder whose journal has its Ri results and whose config.json predates `ri_pulses`: read pulse by pulse."""
    folder = banc_home / "data" / "banc1" / "24112026-RW-ab12cd"
    folder.mkdir(parents=True)
    events = [START, ev("ri", 1, values={"ri_discharge": 0.02, "temperature_c": 10.0}),
              ev("ri", 2, values={"ri_discharge": 0.04, "temperature_c": 30.0})]
    (folder / record.EVENTS_FILE).write_bytes(b"".join(record.encode_event(event) for event in events))
    old = record.apply_state(record.new_summary("banc1", "RW-ab12cd", "x"), record.fold_events(events))
    del old["ri_pulses"]
    (folder / record.TEST_CONFIG_FILE).write_text(json.dumps(old), encoding="utf-8")
    summary = record.load_summary(folder)
    assert summary is not None and summary.ri_pulses["ri_discharge"] == ((0.02, 10.0, 1), (0.04, 30.0, 1))
    assert record.ri_at_25c(summary, "ri_discharge", store.static.correct_to_25c) == pytest.approx(
        (store.static.correct_to_25c(0.02, 10.0) + store.static.correct_to_25c(0.04, 30.0)) / 2)
