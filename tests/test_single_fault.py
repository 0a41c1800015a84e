"""No single fault changes a grade or rewinds a test (docs/protocole.md §8): the wide matrix, on the sans-I/O core.

One complete clean test is played by the firmware model (testkit.fault_run); then, for each
fault and each position (each phase, inside and outside the full-charge window), the same
test is played again with that one fault, through banc.py's own recorder, and concluded by
the product's verdict. Each run is graded under three rule sets (the clean test gets A, REJET
on the cell spread, REJET on the temperature), and must give the clean test's grade, or
À VÉRIFIER with an alert; never another grade in silence. The phase reached is never below
the clean one, and every line the ESP measured is in data.csv once (but lines the fault made
impossible to get back). The process-level sample, with the real broker and banc.py, is in
tests/test_single_fault_process.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from banclfp.recording import record, store
from banclfp.recording.store import Store
from banclfp.testkit import fault_run
from banclfp.testkit.fault_run import CleanTest, Conditions, Message
from banclfp.verdict import conclude as verdict, grading
from banclfp.wire import protocol

GRADE_TO_CHECK = grading.GRADE_TO_CHECK


@pytest.fixture(scope="module")
def clean() -> CleanTest:
    """The clean test, played once per worker (about 8,400 lines)."""
    return fault_run.play_reference_test()


rules_for = fault_run.rules_for
positions = fault_run.positions
index_at = fault_run.index_at


def grades(home: Path, folder: Path, rules: dict[str, dict]) -> dict[str, str]:
    """The grade of the folder's test under each rule set."""
    summary = store.read_test_config(folder)
    assert summary is not None
    out = {}
    for name, content in rules.items():
        (home / grading.GRADING_FILE).write_text(json.dumps(content))
        out[name] = verdict.compute_verdict(Store(home), folder, summary).grade
    return out


@pytest.fixture(scope="module")
def clean_grades(clean: CleanTest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The clean test's grades: A, REJET, REJET (checked once)."""
    home = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BANC_HOME", str(home))
        rules = rules_for(clean)
        (home / grading.GRADING_FILE).write_text(json.dumps(rules["A"]))
        run = fault_run.run_test(home, clean)
        out = grades(home, run.folder, rules)
    assert out == {"A": "A", "spread": grading.GRADE_REJECT, "temperature": grading.GRADE_REJECT}
    assert run.alerts == [] and sorted(run.row_keys()) == sorted(keys(clean.lines()))
    return out


def keys(lines: list[Message]) -> list[tuple[int, int]]:
    """(seq, uptime_ms) of lines."""
    out = []
    for message in lines:
        line = protocol.parse_bms_line(message.payload)
        assert line.uptime_ms is not None
        out.append((line.seq, line.uptime_ms))
    return out


# =========================================================================== the faults


@dataclass(frozen=True)
class Faulted:
    """What one fault makes of the clean test: the messages that arrive, the conditions, the lines that cannot come back."""

    messages: list[Message]
    conditions: Conditions = dataclasses.field(default_factory=Conditions)
    unrecoverable: frozenset[int] = frozenset()  # seqs the ESP cannot re-send


def with_line(fields: Callable[[protocol.BmsLine], dict]) -> Callable[[CleanTest, float], Faulted]:
    """A fault that changes fields of the one line at the position."""
    def fault(clean: CleanTest, at_s: float) -> Faulted:
        messages = list(clean.messages)
        i = index_at(messages, at_s)
        messages[i] = fault_run.garble_line(messages[i], **fields(protocol.parse_bms_line(messages[i].payload)))
        return Faulted(messages)
    return fault


def clock_step(step_s: float) -> Callable[[CleanTest, float], Faulted]:
    """The Pi's wall clock stepped by `step_s` at the position (NTP, a date set by hand)."""
    def fault(clean: CleanTest, at_s: float) -> Faulted:
        return Faulted(list(clean.messages), Conditions(wall_shift_s=lambda t: step_s if t >= at_s else 0.0))
    return fault


def step_lost(clean: CleanTest, at_s: float) -> Faulted:
    """The broker lost the first step message after the position."""
    messages = list(clean.messages)
    del messages[index_at(messages, at_s, protocol.KIND_STEP)]
    return Faulted(messages)


def retained_step(payload: bytes) -> Callable[[CleanTest, float], Faulted]:
    """A step message some client left retained, delivered to banc.py before anything else."""
    def fault(clean: CleanTest, at_s: float) -> Faulted:
        return Faulted([Message(protocol.KIND_STEP, payload, 0.0, retained=True), *clean.messages])
    return fault


def inserted(kind: str, payload: bytes) -> Callable[[CleanTest, float], Faulted]:
    """One more message at the position."""
    def fault(clean: CleanTest, at_s: float) -> Faulted:
        messages = list(clean.messages)
        i = index_at(messages, at_s)
        messages.insert(i, Message(kind, payload, messages[i].at_s))
        return Faulted(messages)
    return fault


def redelivered(clean: CleanTest, at_s: float) -> Faulted:
    """The broker delivers one line a second time (DUP), a little later."""
    messages = list(clean.messages)
    i = index_at(messages, at_s)
    messages.insert(i + 3, dataclasses.replace(messages[i], at_s=messages[i + 3].at_s, redelivered=True))
    return Faulted(messages)


def truncated(clean: CleanTest, at_s: float) -> Faulted:
    """One line cut on the way (it no longer parses): the ESP re-sends it on request."""
    messages = list(clean.messages)
    i = index_at(messages, at_s)
    messages[i] = fault_run.replace_payload(messages[i], messages[i].payload[:25])
    return Faulted(messages)


def late(clean: CleanTest, at_s: float) -> Faulted:
    """One line held up by the network: it arrives 30 s later, after newer ones."""
    messages = list(clean.messages)
    i = index_at(messages, at_s)
    message = messages.pop(i)
    j = index_at(messages, message.at_s + 30)
    messages.insert(j, dataclasses.replace(message, at_s=messages[j].at_s))
    return Faulted(messages)


def lost_lines(replayable: bool) -> Callable[[CleanTest, float], Faulted]:
    """30 consecutive lines lost by the broker; the ESP still holds them, or not (it rebooted, a v1 firmware)."""
    def fault(clean: CleanTest, at_s: float) -> Faulted:
        messages = list(clean.messages)
        i = index_at(messages, at_s)
        gone = [m for m in messages[i:i + 40] if m.kind == protocol.KIND_BMS][:30]
        seqs = frozenset(protocol.parse_bms_line(m.payload).seq for m in gone)
        kept = [m for m in messages if not any(m is g for g in gone)]
        if replayable:
            return Faulted(kept)
        return Faulted(kept, Conditions(replayable=lambda seq: seq not in seqs), seqs)
    return fault


FAULTS: dict[str, Callable[[CleanTest, float], Faulted]] = {
    "seq bit 20 flipped": with_line(lambda line: {"seq": line.seq ^ (1 << 20)}),
    "seq bit 5 flipped": with_line(lambda line: {"seq": line.seq ^ (1 << 5)}),
    "seq bit 1 flipped": with_line(lambda line: {"seq": line.seq ^ (1 << 1)}),
    "uptime years ahead": with_line(lambda line: {"uptime_ms": (line.uptime_ms or 0) ^ (1 << 40)}),
    "uptime 65 s ahead": with_line(lambda line: {"uptime_ms": (line.uptime_ms or 0) + 65_536}),
    "uptime 20 min behind": with_line(lambda line: {"uptime_ms": max(0, (line.uptime_ms or 0) - 1_200_000)}),
    "esp_step one phase ahead": with_line(lambda line: {"esp_step": min((line.esp_step or 1) + 1, 5)}),
    "esp_step one phase back": with_line(lambda line: {"esp_step": max((line.esp_step or 1) - 1, 1)}),
    "temperature spike": with_line(lambda line: {"temperature_c": 140.0}),
    "cell spread spike": with_line(lambda line: {"cell_min_mv": 2000.0}),
    "cell spread dip": with_line(lambda line: {"cell_min_mv": line.cell_max_mv}),
    "capacity 8 Ah too high": with_line(lambda line: {"capacity_ah": line.capacity_ah + 8.0,
                                                      "energy_wh": line.energy_wh + 400.0}),
    "capacity 8 Ah too low": with_line(lambda line: {"capacity_ah": max(0.0, line.capacity_ah - 8.0)}),
    "clock stepped back 1 h": clock_step(-3600.0),
    "clock stepped ahead 1 h": clock_step(3600.0),
    "step message lost": step_lost,
    "line redelivered": redelivered,
    "line truncated": truncated,
    "line late": late,
    "30 lines lost, replayed": lost_lines(True),
    "30 lines lost for good": lost_lines(False),
    "Ri 1e-9 ohm": inserted(protocol.KIND_RI, b'{"ri_discharge": 0.000000001}'),
    "Ri 10 ohm": inserted(protocol.KIND_RI, b'{"ri_discharge": 10.0, "temperature_c": 25.0}'),
    "Ri beyond a float": inserted(protocol.KIND_RI, b'{"ri_discharge": 1' + b"0" * 400 + b"}"),
}
POSITIONLESS: dict[str, Callable[[CleanTest, float], Faulted]] = {
    "retained step 5": retained_step(b"5"),
    "retained step 9": retained_step(b"9"),
    "retained step 3": retained_step(b"3"),
}


POSITION_NAMES = ("phase 1", "phase 2", "phase 2, full-charge window", "phase 2, before the window", "phase 3",
                  "phase 4")
CASES = ([(fault, where) for fault in FAULTS for where in POSITION_NAMES] + [(fault, "start") for fault in POSITIONLESS]
         + [(fault, "phase 3, its last line") for fault in ("capacity 8 Ah too high", "capacity 8 Ah too low")])


@pytest.fixture
def home(banc_home: Path) -> Iterator[Path]:
    yield banc_home


@pytest.mark.parametrize("fault, where", CASES, ids=[f"{f} @ {w}" for f, w in CASES])
def test_a_single_fault_never_changes_a_grade_in_silence(fault: str, where: str, clean: CleanTest,
                                                        clean_grades: dict[str, str], home: Path) -> None:
    rules = rules_for(clean)
    (home / grading.GRADING_FILE).write_text(json.dumps(rules["A"]))
    at_s = 0.0 if where == "start" else clean.phase_start_s[4] - 1 if where.endswith("its last line") \
        else positions(clean)[where]
    faulted = {**FAULTS, **POSITIONLESS}[fault](clean, at_s)
    run = fault_run.run_test(home, clean, faulted.messages, faulted.conditions)

    # The test went through to its end: never stopped, ended or rewound by the fault.
    assert run.step_reached == protocol.STEP_FINISHED
    events, _ = record.read_events(run.folder)
    steps = [e.step for e in events if isinstance(e, record.StepEvent) and e.step is not None]
    assert steps == sorted(steps), f"the phase went back: {steps}"
    # Every line the ESP measured is in data.csv, once (but those it can no longer re-send).
    expected = Counter(key for key in keys(fault_run.CleanTest.lines(clean)) if key[0] not in faulted.unrecoverable)
    written = Counter(run.row_keys())
    assert +(expected - written) == Counter(), "lines missing"
    assert max(written.values()) == 1, "a line written twice"
    # Each row in the phase the ESP measured it in, but a line whose phase field was garbled.
    every_line = [m for m in clean.messages if m.kind == protocol.KIND_BMS]  # those after the end too
    phases = {key: protocol.parse_bms_line(m.payload).esp_step for key, m in zip(keys(every_line), every_line)}
    wrong = [r for r in run.rows if phases.get((int(r["seq"]), int(r["uptime_ms"]))) != int(r["step"])]
    assert len(wrong) <= (1 if fault.startswith("esp_step") else 0), wrong[:3]

    # The grade: the clean test's, or À VÉRIFIER with an alert that says so — and À VÉRIFIER only
    # where the data really cannot support a grade (a test that turned everything into À VÉRIFIER
    # would pass a weaker check).
    got = grades(home, run.folder, rules)
    for name, grade in got.items():
        if grade != clean_grades[name]:
            assert grade == GRADE_TO_CHECK, f"{name}: {clean_grades[name]} became {grade} ({fault} @ {where})"
            assert run.alerts, f"{name}: À VÉRIFIER without an alert"
            assert may_need_a_check(fault, where, clean, at_s), f"{name}: À VÉRIFIER for a fault the data survives"


def may_need_a_check(fault: str, where: str, clean: CleanTest, at_s: float) -> bool:
    """Where a single fault leaves data that cannot support a grade (docs/protocole.md §8)."""
    if fault == "30 lines lost for good":
        return where == "phase 2, full-charge window"  # lines lost in the window
    if fault == "step message lost":  # the charge or the discharge started without its message
        return clean.phase_of(at_s) in (1, 2)
    return False


def test_the_matrix_covers_every_phase_and_both_sides_of_the_window(clean: CleanTest) -> None:
    at = positions(clean)
    assert [clean.phase_of(at[name]) for name in POSITION_NAMES] == [1, 2, 2, 2, 3, 4]
    window_start = clean.phase_start_s[3] - grading.FULL_CHARGE_WINDOW_S
    assert at["phase 2, full-charge window"] > window_start > at["phase 2, before the window"]


def test_a_fault_the_recorder_rejects_is_written_in_rejected_csv(clean: CleanTest, home: Path) -> None:
    (home / grading.GRADING_FILE).write_text(json.dumps(rules_for(clean)["A"]))
    faulted = FAULTS["seq bit 20 flipped"](clean, positions(clean)["phase 2"])
    run = fault_run.run_test(home, clean, faulted.messages)
    rejected = (run.folder / record.REJECTED_CSV_FILE).read_text()
    assert rejected.count("implausible") == 1
