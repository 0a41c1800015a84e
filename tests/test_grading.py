"""grading.py: grading.json's validation and the grade at every boundary (pure tables, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import pytest

from banclfp.analysis import measures as analysis
from banclfp.recording import record
from banclfp.testkit.support import REPO_DIR
from banclfp.verdict import grading

RULES_JSON: dict[str, Any] = {
    "version": "test-1",
    "models": [
        {"name": "LFP 16S 100 Ah", "serial_pattern": "^RW-", "nominal_capacity_ah": 100.0,
         "grades": [{"grade": "A", "min_soh_pct": 90}, {"grade": "B", "min_soh_pct": 80},
                    {"grade": "C", "min_soh_pct": 70}],
         "ri_discharge_max_ohm": 0.040, "cell_spread_max_mv": 300, "temperature_max_c": 50},
    ],
}
RULES = grading.parse_rules(json.dumps(RULES_JSON))


def no_correction(ohm: float, temperature_c: Optional[float]) -> float:
    return ohm


def double_below_25(ohm: float, temperature_c: Optional[float]) -> float:
    """A stand-in correction: a resistance measured cold counts double at 25 °C."""
    return ohm * 2 if temperature_c is not None and temperature_c < 25 else ohm


def summary(capacity_ah: Optional[float] = 95.0, ri: Optional[float] = 0.020, serial: str = "RW-ABCD1234",
            ri_temperature_c: Optional[float] = 25.0) -> dict[str, Any]:
    return {"battery_serial": serial, "capacity_ah": capacity_ah, "ri_discharge_average": ri,
            "ri_temperature_c": ri_temperature_c}


def grade_json(summary: dict[str, Any], test_facts: grading.TestFacts, rules: grading.Rules,
               correct: Callable[[float, Optional[float]], float]) -> dict[str, Any]:
    """grading.grade on a config.json object, its verdict as the journal writes it."""
    return grading.grade(record.TestSummary.from_json(summary), test_facts, rules, correct).to_json()


def facts(spread: Optional[float] = 40.0, temperature: Optional[float] = 35.0) -> grading.TestFacts:
    return grading.TestFacts(cell_spread_mv=spread, temperature_max_c=temperature)


def shown_agrees(verdict: dict[str, Any]) -> None:
    """Each check's value as kept (and shown) gives the same result as the check: no "70,0 % (min 70 %) non conforme"."""
    for check in verdict["checks"]:
        if check["value"] is None:
            continue
        shown = float(grading.check_text(record.Check(**check)).split(" : ")[1].split("\u00a0")[0].replace(",", "."))
        limit = check["limit"] * 1000 if check["name"] == grading.CHECK_RI else check["limit"]
        assert check["ok"] == (shown >= limit if check["name"] == grading.CHECK_SOH else shown <= limit), check


@pytest.mark.parametrize(
    "capacity_ah, expected_grade, expected_soh",
    [
        (100.0, "A", 100.0),
        (90.0, "A", 90.0),
        (89.95, "B", 89.9),  # below 90 %: a B, shown rounded down (never "90,0 %" beside a B)
        (89.9999, "B", 89.9),
        (89.94, "B", 89.9),
        (90.0001, "A", 90.0),
        (80.0, "B", 80.0),
        (79.99, "C", 79.9),
        (79.94, "C", 79.9),
        (70.0, "C", 70.0),
        (69.951, "REJET", 69.9),  # 69.951 % < 70 %: not a C, and not shown as 70,0 %
        (69.94, "REJET", 69.9),  # below the lowest band: the SOH check fails
        (120.0, "A", 120.0),  # more than nominal is still A
    ],
)
def test_grade_bands_at_their_boundaries(capacity_ah: float, expected_grade: str, expected_soh: float) -> None:
    verdict = grade_json(summary(capacity_ah), facts(), RULES, no_correction)
    assert (verdict["grade"], verdict["soh_pct"]) == (expected_grade, expected_soh)
    shown_agrees(verdict)
    assert verdict["model"] == "LFP 16S 100 Ah" and verdict["grading_version"] == "test-1"
    assert [check["name"] for check in verdict["checks"]] == list(grading.CHECK_NAMES)


@pytest.mark.parametrize(
    "ri, ri_temperature, spread, temperature, failed",
    [
        (0.040, 25.0, 300.0, 50.0, []),  # every value exactly at its limit passes
        (0.040004, 25.0, 300.0, 50.0, ["ri_discharge"]),  # above 40 mΩ: fails, shown 40,01 mΩ (rounded up)
        (0.0400049, 25.0, 300.0, 50.0, ["ri_discharge"]),
        (0.040005, 25.0, 300.0, 50.0, ["ri_discharge"]),  # 40,01 mΩ
        (0.0399999, 25.0, 300.0, 50.0, []),  # within: shown 40,00 mΩ
        (0.021, 20.0, 40.0, 35.0, ["ri_discharge"]),  # 21 mΩ measured cold is 42 mΩ at 25 °C
        (0.021, 30.0, 40.0, 35.0, []),
        (0.020, 25.0, 300.4, 35.0, ["cell_spread"]),  # above 300 mV: fails, shown 301 mV
        (0.020, 25.0, 300.5, 35.0, ["cell_spread"]),
        (0.020, 25.0, 299.6, 35.0, []),  # shown 300 mV
        (0.020, 25.0, 40.0, 50.04, ["temperature_max"]),  # shown 50,1 °C
        (0.020, 25.0, 40.0, 50.05, ["temperature_max"]),
        (0.020, 25.0, 40.0, 49.96, []),  # shown 50,0 °C
        (None, None, 40.0, 35.0, ["ri_discharge"]),  # never measured: the check cannot pass
        (0.020, 25.0, None, 35.0, ["cell_spread"]),  # no row in phase 2
        (0.080, 25.0, 900.0, 70.0, ["ri_discharge", "cell_spread", "temperature_max"]),
    ],
)
def test_checks_at_their_limits(ri: Optional[float], ri_temperature: Optional[float], spread: Optional[float],
                                temperature: Optional[float], failed: list[str]) -> None:
    verdict = grade_json(summary(95.0, ri, ri_temperature_c=ri_temperature), facts(spread, temperature), RULES,
                            double_below_25)
    assert [check["name"] for check in verdict["checks"] if not check["ok"]] == failed
    assert verdict["grade"] == ("REJET" if failed else "A")
    shown_agrees(verdict)
    if failed:
        assert verdict["reason"].startswith("contrôle non passé : ")
        assert all(grading.CHECK_LABELS[name] in verdict["reason"] for name in failed)


@pytest.mark.parametrize("nominal_ah, capacity_ah", [(2.2, 1.98), (1.1, 0.99), (2.6, 2.34)])
def test_a_capacity_of_exactly_a_band_s_minimum_meets_it(nominal_ah: float, capacity_ah: float) -> None:
    """1.98 / 2.2 × 100 is 89.99999999999999 in binary floating point, 90 % as written: an A."""
    rules = json.loads(json.dumps(RULES_JSON))
    rules["models"][0]["nominal_capacity_ah"] = nominal_ah
    verdict = grade_json(summary(capacity_ah), facts(), grading.parse_rules(json.dumps(rules)), no_correction)
    assert (verdict["grade"], verdict["soh_pct"]) == ("A", 90.0)


def test_a_check_carries_value_limit_and_result_as_config_json_keeps_them() -> None:
    verdict = grade_json(summary(85.04, 0.0213), facts(120.0, 41.26), RULES, no_correction)
    assert verdict == {
        "grade": "B", "soh_pct": 85.0, "model": "LFP 16S 100 Ah", "grading_version": "test-1",
        "checks": [
            {"name": "soh", "value": 85.0, "limit": 70.0, "ok": True},
            {"name": "ri_discharge", "value": 0.0213, "limit": 0.04, "ok": True},
            {"name": "cell_spread", "value": 120.0, "limit": 300.0, "ok": True},
            {"name": "temperature_max", "value": 41.3, "limit": 50.0, "ok": True},
        ],
        "reason": "SOH 85,0\u00a0% ≥ 80\u00a0% et tous les contrôles passés",
    }
    assert record.is_verdict(verdict)
    assert json.loads(json.dumps(verdict)) == verdict


@pytest.mark.parametrize(
    "case, reason_part",
    [
        (summary(serial="XX-ABCD1234"), "aucun modèle"),
        (summary(capacity_ah=None), "capacité jamais mesurée"),
        (summary(capacity_ah=0.0), "capacité jamais mesurée"),
    ],
)
def test_unclassified(case: dict[str, Any], reason_part: str) -> None:
    verdict = grade_json(case, facts(), RULES, no_correction)
    assert verdict["grade"] == grading.GRADE_UNCLASSIFIED and verdict["soh_pct"] is None
    assert reason_part in verdict["reason"]


def test_first_matching_model_applies_case_insensitively() -> None:
    rules = json.loads(json.dumps(RULES_JSON))
    small = {**rules["models"][0], "name": "LFP 8S 50 Ah", "serial_pattern": "^rw-s", "nominal_capacity_ah": 50.0}
    rules["models"].insert(0, small)
    parsed = grading.parse_rules(json.dumps(rules))
    verdict = grade_json(summary(47.5, serial="RW-S0001"), facts(), parsed, no_correction)
    assert (verdict["model"], verdict["soh_pct"], verdict["grade"]) == ("LFP 8S 50 Ah", 95.0, "A")
    assert grade_json(summary(47.5), facts(), parsed, no_correction)["grade"] == "REJET"  # the 100 Ah model


def _broken(change: Any) -> str:
    data = json.loads(json.dumps(RULES_JSON))
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "grading.json:1 : JSON invalide"),
        ("[]", "doit contenir un objet JSON"),
        (_broken(lambda d: d.pop("version")), "version doit être un texte"),
        (_broken(lambda d: d.update(models=[])), "models doit être une liste non vide"),
        (_broken(lambda d: d["models"][0].update(nominal_capacity_ah=0)), "nominal_capacity_ah doit être un nombre > 0"),
        (_broken(lambda d: d["models"][0].update(nominal_capacity_ah="100")), "nominal_capacity_ah doit être un nombre > 0"),
        (_broken(lambda d: d["models"][0].update(ri_discharge_max_ohm=True)), "ri_discharge_max_ohm doit être un nombre > 0"),
        (_broken(lambda d: d["models"][0].pop("cell_spread_max_mv")), "cell_spread_max_mv doit être un nombre > 0"),
        (_broken(lambda d: d["models"][0].update(temperature_max_c=-5)), "temperature_max_c doit être un nombre > 0"),
        (_broken(lambda d: d["models"][0].update(serial_pattern="^RW-(")), "serial_pattern n'est pas une expression"),
        (_broken(lambda d: d["models"][0].update(grades=[])), "grades doit être une liste non vide"),
        (_broken(lambda d: d["models"][0]["grades"].reverse()), "les min_soh_pct doivent décroître"),
        (_broken(lambda d: d["models"][0]["grades"][1].update(grade="A")), "réservée ou en double"),
        (_broken(lambda d: d["models"][0]["grades"][1].update(grade="REJET")), "réservée ou en double"),
    ],
)
def test_an_invalid_grading_json_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(grading.GradingError) as caught:
        grading.parse_rules(text, "grading.json")
    assert str(caught.value).startswith("grading.json") and message in str(caught.value)


def test_the_project_grading_json_is_valid_and_is_the_contract_model() -> None:
    rules = grading.load_rules(REPO_DIR / "grading.json")
    model = rules.model_for("RW-ANY0001")
    assert model is not None and model.nominal_capacity_ah == 100.0
    assert [(band.grade, band.min_soh_pct) for band in model.grades] == [("A", 90), ("B", 80), ("C", 70)]


@pytest.mark.parametrize(
    "times, steps, expected",
    [
        # phase 2 from t=0 to t=1000: its last 600 s are t >= 400, whatever the rows' order
        ([0, 399, 400, 1000, 1100], [2, 2, 2, 2, 3], [False, False, True, True, False]),
        ([1000, 0, 400, 399], [2, 2, 2, 2], [True, False, True, False]),  # a replayed row comes later
        ([0, 10, 20], [1, 3, 4], [False, False, False]),  # no phase 2
    ],
)
def test_last_window_of_phase_2_by_row_time(times: list[float], steps: list[int], expected: list[bool]) -> None:
    mask = analysis.last_window_mask(np.array(times, dtype=float), np.array(steps), 2, 600.0)
    assert mask.tolist() == expected


def test_test_facts_read_the_spread_at_full_charge_and_the_hottest_row() -> None:
    header = ",".join(record.DATA_CSV_HEADER_V1)
    rows = []
    for minute in range(37):  # phase 2 from 10:00 to 10:35, a line a minute, then two of phase 3
        spread = 200 if minute < 20 else 60  # 200 mV early (balancing not done), 60 mV in its last 10 minutes
        rows.append(f"2026-12-01T10:{minute:02d}:00.000+01:00,2,{minute},57.0,5.0,99.0,{30 + minute / 20:.1f},0,0,"
                    f"3400,{3400 + spread},1")
    rows[-1] = rows[-1].replace(",2,36,", ",3,36,").replace(",31.8,", ",44.5,")
    rows.append("2026-12-01T10:37:00.000+01:00,3,37,52.0,-50.0,90.0,44.6,5.0,256.0,3300,3310,0")
    data = analysis.parse_data_csv(("\n".join([header, *rows]) + "\n").encode())
    # The hottest value held by two consecutive lines: 44.5 °C (44.6 °C is one line's).
    assert analysis.test_facts(data) == grading.TestFacts(cell_spread_mv=60.0, temperature_max_c=44.5)
    empty = analysis.parse_data_csv((header + "\n").encode())
    assert analysis.test_facts(empty) == grading.TestFacts(
        cell_spread_mv=None, temperature_max_c=None,
        doubts=(grading.Doubt("data.csv : aucune ligne mesurée", (grading.CHECK_SPREAD, grading.CHECK_TEMPERATURE)),))


BACKLOG_ROWS = [  # timestamp (receipt), ..., uptime_ms, measured_at
    "2026-12-01T10:30:00.000+01:00,2,1,57.0,5.0,99.0,31.0,0,0,3400,3460,1,1800000,2026-12-01T10:30:00.000+01:00",
    "2026-12-01T10:35:00.000+01:00,2,2,57.6,2.0,100.0,32.0,0,0,3420,3480,0,2100000,2026-12-01T10:35:00.000+01:00",
    # Measured at 10:00 (spread 200 mV), received at 10:36 with the backlog of a restarted banc.py.
    "2026-12-01T10:36:00.000+01:00,2,0,52.0,50.0,60.0,30.0,0,0,3300,3500,1,0,2026-12-01T10:00:00.000+01:00",
]


def test_the_full_charge_window_is_in_measurement_time() -> None:
    """A phase-2 line measured early but delivered late (a backlog) is not "at full charge": in the ESP's order it comes first."""
    header = ",".join(record.DATA_CSV_HEADER)
    data = analysis.parse_data_csv(("\n".join([header, *BACKLOG_ROWS]) + "\n").encode())
    # The journal names the boot's first line banc.py saw (seq 1): seq 0 after it is a line of that boot.
    boot = {"event": record.EVENT_ESP_BOOT, "t": "2026-12-01T10:30:00.000+01:00", "row_t": "2026-12-01T10:30:00.000+01:00",
            "seq": 1, "uptime_ms": 1800000}
    facts = analysis.test_facts(data, record.fold_events(map(record.event_from_json, [boot])))
    assert (facts.cell_spread_mv, facts.doubts) == (60.0, ())


def test_a_seq_going_back_without_a_journal_is_a_reboot_and_its_window_too_short() -> None:
    """Without the journal, a lower seq outside every hole is an ESP reboot (the recount's rule): one line of phase 2, no grade."""
    header = ",".join(record.DATA_CSV_HEADER)
    data = analysis.parse_data_csv(("\n".join([header, *BACKLOG_ROWS]) + "\n").encode())
    facts = analysis.test_facts(data)
    assert facts.cell_spread_mv is None
    assert [doubt.reason for doubt in facts.doubts] == ["fenêtre de pleine charge : 1 ligne sur 2 attendues"]


# --------------------------------------------------------------------------- one row never decides (protocol v3)

COLUMN = record.DATA_COLUMN
SOUND_ROWS = 3000  # phase 2: 900 lines a second apart, its last 10 minutes 601 of them


@pytest.fixture(scope="module")
def sound_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[list[str]]]:
    """A sound finished test in the contract format (testkit.synthetic): header and rows as fields."""
    from banclfp.testkit.synthetic import write_synthetic_test

    folder = write_synthetic_test(tmp_path_factory.mktemp("sound"), rows=SOUND_ROWS).folder
    header, *body = (folder / record.DATA_CSV_FILE).read_text(encoding="ascii").splitlines()
    return header, [line.split(",") for line in body]


def rows_of(sound: tuple[str, list[list[str]]]) -> list[list[str]]:
    return [list(row) for row in sound[1]]


def parse(header: str, rows: list[list[str]]) -> analysis.TestData:
    return analysis.parse_data_csv(("\n".join([header, *(",".join(row) for row in rows)]) + "\n").encode("ascii"))


def verdict_of(header: str, rows: list[list[str]], journal: Optional[record.RecordState] = None,
               ri: float = 0.020, capacity_ah: Optional[float] = 95.0) -> dict[str, Any]:
    return graded(analysis.test_facts(parse(header, rows), journal), ri, capacity_ah)


def graded(facts: grading.TestFacts, ri: float = 0.020, capacity_ah: Optional[float] = 95.0) -> dict[str, Any]:
    return grade_json(summary(capacity_ah, ri), facts, RULES, no_correction)


def phase_rows(rows: list[list[str]], phase: int) -> list[int]:
    return [i for i, row in enumerate(rows) if int(row[COLUMN["step"]]) == phase]


def window_rows(rows: list[list[str]]) -> list[int]:
    """The row indices of phase 2's last 600 s on the ESP's clock (the synthetic test has one boot)."""
    charge = phase_rows(rows, 2)
    end = int(rows[charge[-1]][COLUMN["uptime_ms"]])
    return [i for i in charge if int(rows[i][COLUMN["uptime_ms"]]) >= end - 600_000]


def high_spread(rows: list[list[str]], mv: int = 350) -> list[list[str]]:
    """The cells `mv` apart all through the full-charge window: a battery to reject."""
    for i in window_rows(rows):
        rows[i][COLUMN["cell_max_mv"]] = str(int(rows[i][COLUMN["cell_min_mv"]]) + mv)
    return rows


def _shift_iso(text: str, seconds: float) -> str:
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(text) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def garble(rows: list[list[str]], i: int, kind: str) -> None:
    """One row damaged in one way, as a line that passed every check could be."""
    row = rows[i]
    if kind == "uptime far ahead":
        row[COLUMN["uptime_ms"]] = str(int(row[COLUMN["uptime_ms"]]) + 3 * 365 * 86_400_000)
    elif kind == "uptime far ahead, measured_at with it":  # as the recorder stamps it from the uptime
        row[COLUMN["uptime_ms"]] = str(int(row[COLUMN["uptime_ms"]]) + 3 * 365 * 86_400_000)
        row[COLUMN["measured_at"]] = _shift_iso(row[COLUMN["measured_at"]], 3 * 365 * 86400)
    elif kind == "uptime far behind":
        row[COLUMN["uptime_ms"]] = "0"
    elif kind == "measured_at far ahead":
        row[COLUMN["measured_at"]] = _shift_iso(row[COLUMN["measured_at"]], 3 * 365 * 86400)
    elif kind == "measured_at far behind":
        row[COLUMN["measured_at"]] = _shift_iso(row[COLUMN["measured_at"]], -20 * 365 * 86400)
    elif kind == "spread spike":
        row[COLUMN["cell_max_mv"]] = str(int(row[COLUMN["cell_min_mv"]]) + 900)
    elif kind == "spread dip":
        row[COLUMN["cell_max_mv"]] = row[COLUMN["cell_min_mv"]]
    elif kind == "temperature spike":
        row[COLUMN["temperature_c"]] = "95.0"
    else:
        raise AssertionError(kind)


GARBLINGS = ("uptime far ahead", "uptime far ahead, measured_at with it", "uptime far behind", "measured_at far ahead", "measured_at far behind",
             "spread spike", "spread dip", "temperature spike")


def positions(rows: list[list[str]], seed: int) -> list[int]:
    """Where one damaged row is tried: the window's edges and neighbours, phase 2's end, the test's ends, and at random."""
    window, charge = window_rows(rows), phase_rows(rows, 2)
    edges = {0, 1, len(rows) - 2, len(rows) - 1, window[0] - 1, window[0], window[0] + 1, window[len(window) // 2],
             window[-2], window[-1], window[-1] + 1, charge[0]}
    rng = np.random.default_rng(seed)
    return sorted(edges | set(rng.choice(window, 8, replace=False).tolist())
                  | set(rng.integers(0, len(rows), 8).tolist()))


@pytest.mark.parametrize("kind", GARBLINGS)
@pytest.mark.parametrize("battery", ["sound", "cells apart"])
def test_one_garbled_row_anywhere_never_changes_the_grade(sound_test: tuple[str, list[list[str]]], kind: str,
                                                          battery: str) -> None:
    header = sound_test[0]
    base = rows_of(sound_test) if battery == "sound" else high_spread(rows_of(sound_test))
    expected = verdict_of(header, base)
    assert expected["grade"] == ("A" if battery == "sound" else "REJET")
    if battery == "cells apart":  # held all through the window: a real spread is found
        assert [c["value"] for c in expected["checks"] if c["name"] == "cell_spread"] == [350.0]
    clean_facts = analysis.test_facts(parse(header, base))
    for i in positions(base, seed=len(kind)):
        rows = [list(row) for row in base]
        garble(rows, i, kind)
        facts = analysis.test_facts(parse(header, rows))
        given = graded(facts)
        assert (given["grade"], given["reason"]) == (expected["grade"], expected["reason"]), (kind, i, given)
        if kind.startswith(("uptime", "measured_at")):  # a time alone moves no row in or out of the window
            assert facts.doubts == () and facts.cell_spread_mv == clean_facts.cell_spread_mv, (kind, i, facts)


@pytest.mark.parametrize("shift_s", [-3600.0, -86400.0, 3600.0, 86400.0])
@pytest.mark.parametrize("battery", ["sound", "cells apart"])
def test_a_pi_clock_step_never_changes_the_grade(sound_test: tuple[str, list[list[str]]], shift_s: float,
                                                 battery: str) -> None:
    """The Pi's clock stepped inside phase 2's last 10 minutes: every row after it is stamped `shift_s` off."""
    header = sound_test[0]
    base = rows_of(sound_test) if battery == "sound" else high_spread(rows_of(sound_test))
    expected = verdict_of(header, base)
    window = window_rows(base)
    for at in (window[0] - 30, window[0] + 5, window[len(window) // 2], window[-1]):
        rows = [list(row) for row in base]
        for row in rows[at:]:
            for column in ("timestamp", "measured_at"):
                row[COLUMN[column]] = _shift_iso(row[COLUMN[column]], shift_s)
        assert verdict_of(header, rows) == expected, (shift_s, at)


def test_old_12_column_folders_are_graded_as_before_when_sound(tmp_path: Any) -> None:
    from banclfp.testkit.synthetic import write_synthetic_test

    folder = write_synthetic_test(tmp_path, rows=SOUND_ROWS, v1=True).folder
    header, *body = (folder / record.DATA_CSV_FILE).read_text(encoding="ascii").splitlines()
    rows = [line.split(",") for line in body]
    facts = analysis.test_facts(parse(header, rows))
    assert facts.doubts == () and facts.cell_spread_mv is not None and facts.temperature_max_c is not None
    assert verdict_of(header, rows)["grade"] == "A"
    # Its window is phase 2's last 10 minutes of lines: the cells apart there are found, one line apart is not.
    charge = phase_rows(rows, 2)
    for i in charge[-300:]:
        rows[i][COLUMN["cell_max_mv"]] = str(int(rows[i][COLUMN["cell_min_mv"]]) + 350)
    assert verdict_of(header, rows)["grade"] == "REJET"
    rows[charge[-1]][COLUMN["timestamp"]] = "2031-01-01T00:00:00.000+01:00"  # a receipt time garbled
    assert verdict_of(header, rows)["grade"] == "REJET"


def test_a_simulator_faster_than_real_time_is_graded(sound_test: tuple[str, list[list[str]]]) -> None:
    """The ESP's clock at x100 (10 ms a line): phase 2 lasts 9 s of it, all of which is its window."""
    header, rows = sound_test[0], rows_of(sound_test)
    for i, row in enumerate(rows):
        row[COLUMN["uptime_ms"]] = str(3_600_000 + 10 * i)
    facts = analysis.test_facts(parse(header, rows))
    assert facts.doubts == ()
    assert verdict_of(header, rows)["grade"] == "A"


# The causes of À VÉRIFIER, each with its reason.


def test_an_esp_reboot_in_the_last_10_minutes_leaves_too_few_rows(sound_test: tuple[str, list[list[str]]]) -> None:
    header, rows = sound_test[0], rows_of(sound_test)
    rebooted_at = phase_rows(rows, 2)[-120]  # two minutes before the end of phase 2
    for k, row in enumerate(rows[rebooted_at:]):
        row[COLUMN["seq"]], row[COLUMN["uptime_ms"]] = str(k), str(1000 * k + 500)
    given = verdict_of(header, rows)
    assert given["grade"] == grading.GRADE_TO_CHECK
    assert given["reason"] == ("données insuffisantes pour classer : "
                               "fenêtre de pleine charge : 120 lignes sur 601 attendues")
    assert [c["name"] for c in given["checks"] if c.get("uncertain")] == ["cell_spread"]
    # Before the reboot's window, the same rows gave a grade.
    assert verdict_of(header, rows_of(sound_test))["grade"] == "A"


@pytest.mark.parametrize("battery", ["sound", "cells apart"])
def test_lines_lost_in_the_window_give_to_check(sound_test: tuple[str, list[list[str]]], battery: str) -> None:
    header = sound_test[0]
    rows = rows_of(sound_test) if battery == "sound" else high_spread(rows_of(sound_test))
    window = window_rows(rows)
    middle = window[len(window) // 2]
    lost = rows[middle:middle + 5]
    del rows[middle:middle + 5]
    first, last = lost[0][COLUMN["seq"]], lost[-1][COLUMN["seq"]]
    given = verdict_of(header, rows)
    # Not REJET either: the spread that fails is measured on a window that cannot support it.
    assert given["grade"] == grading.GRADE_TO_CHECK, given
    assert given["reason"].startswith("données insuffisantes pour classer : "
                                      f"fenêtre de pleine charge : 5 lignes perdues (seq {first}..{last})")
    if battery == "cells apart":
        assert "non conforme sur ces données : Écart entre cellules à pleine charge : 350" in given["reason"]


def test_lines_lost_at_the_end_of_phase_2_count(sound_test: tuple[str, list[list[str]]]) -> None:
    """The last lines of phase 2 lost: the window's true end is unknown."""
    header, rows = sound_test[0], rows_of(sound_test)
    end = phase_rows(rows, 2)[-1]
    seqs = [rows[i][COLUMN["seq"]] for i in (end - 1, end)]
    del rows[end - 1:end + 1]
    assert verdict_of(header, rows)["reason"].endswith(f"2 lignes perdues (seq {seqs[0]}..{seqs[1]})")


def test_lines_lost_across_the_window_s_start_count_for_their_part_in_it(
    sound_test: tuple[str, list[list[str]]],
) -> None:
    """Six lines lost, three of them measured before the window: the three after its start count."""
    header, rows = sound_test[0], rows_of(sound_test)
    start = window_rows(rows)[0]
    seqs = [rows[i][COLUMN["seq"]] for i in range(start - 3, start + 3)]
    del rows[start - 3:start + 3]
    reason = verdict_of(header, rows)["reason"]
    # The lost lines' times are estimated evenly between the rows around the hole: the line just
    # before the window's start (the rows jitter by up to 50 ms) may be taken for one of it.
    assert reason.endswith((f"3 lignes perdues (seq {seqs[3]}..{seqs[5]})",
                            f"4 lignes perdues (seq {seqs[2]}..{seqs[5]})")), reason
    # Lost just before the window only: not in it.
    rows = rows_of(sound_test)
    del rows[start - 5:start]
    assert verdict_of(header, rows)["grade"] == "A"


def test_the_journal_s_lost_lines_in_the_window_give_to_check(sound_test: tuple[str, list[list[str]]]) -> None:
    header, rows = sound_test[0], rows_of(sound_test)
    window = window_rows(rows)
    first = int(rows[window[10]][COLUMN["seq"]])
    span = {"event": record.EVENT_SEQ_LOST, "t": "2024-03-04T10:00:00.000+01:00", "boot": 0, "first": first,
            "last": first + 2, "count": 3}
    boot = {"event": record.EVENT_ESP_BOOT, "t": "2024-03-04T08:00:00.000+01:00", "boot": 0,
            "row_t": rows[0][COLUMN["timestamp"]], "seq": 0, "uptime_ms": int(rows[0][COLUMN["uptime_ms"]])}
    given = verdict_of(header, rows, record.fold_events(map(record.event_from_json, [boot, span])))
    assert given["grade"] == grading.GRADE_TO_CHECK
    assert given["reason"].endswith(f"3 lignes perdues (seq {first}..{first + 2})")
    # Lost lines outside the window (phase 3) leave the grade alone.
    far = {**span, "first": 2000, "last": 2010, "count": 11}
    assert verdict_of(header, rows, record.fold_events(map(record.event_from_json, [boot, far])))["grade"] == "A"


@pytest.mark.parametrize("ri, expected", [(0.020, grading.GRADE_TO_CHECK), (0.080, grading.GRADE_REJECT)])
def test_a_phase_recovered_from_lines_gives_to_check_unless_a_sound_check_fails(
    sound_test: tuple[str, list[list[str]]], ri: float, expected: str,
) -> None:
    header, rows = sound_test[0], rows_of(sound_test)
    seq = int(rows[phase_rows(rows, 3)[0]][COLUMN["seq"]])
    journal = record.fold_events(map(record.event_from_json, [
        {"event": record.EVENT_STEP, "t": "2024-03-04T08:00:00.000+01:00", "step": 2},
        {"event": record.EVENT_STEP, "t": "2024-03-04T09:00:00.000+01:00", "step": 3,
         "recovered": record.STEP_RECOVERED_FROM_LINES, "seq": seq},
    ]))
    given = verdict_of(header, rows, journal, ri=ri)
    assert given["grade"] == expected
    recovered = f"phase 3 reconstituée à partir des lignes BMS (son message d'étape n'est jamais arrivé, seq {seq})"
    if expected == grading.GRADE_TO_CHECK:
        assert given["reason"] == f"données insuffisantes pour classer : {recovered}"
    else:  # the Ri fails whatever the phases: the battery is rejected, the doubt said
        assert given["reason"].startswith("contrôle non passé : Ri décharge à 25 °C : 80,00")
        assert recovered in given["reason"]
    assert {c["name"] for c in given["checks"] if c.get("uncertain")} == {"soh", "cell_spread"}


@pytest.mark.parametrize("clock", ["uptime_ms", "measured_at"])
def test_a_clock_that_never_moves_in_phase_2_gives_to_check(sound_test: tuple[str, list[list[str]]], clock: str) -> None:
    """Every phase-2 row at one time: where its last 10 minutes begin cannot be told."""
    header, rows = sound_test[0], rows_of(sound_test)
    if clock == "measured_at":  # a firmware without uptime_ms: the rows' times give the line period
        header = ",".join(record.DATA_CSV_HEADER_V1)
        rows = [row[:len(record.DATA_CSV_HEADER_V1)] for row in rows]
        for row in rows:
            row[COLUMN["timestamp"]] = rows[0][COLUMN["timestamp"]]
    else:
        for i in phase_rows(rows, 2):
            row = rows[i]
            row[COLUMN["uptime_ms"]] = rows[phase_rows(rows, 2)[0]][COLUMN["uptime_ms"]]
    given = verdict_of(header, rows)
    assert given["grade"] == grading.GRADE_TO_CHECK
    assert given["reason"].startswith("données insuffisantes pour classer : fenêtre de pleine charge : "
                                      "horloge immobile en phase 2")


def test_no_phase_2_gives_to_check(sound_test: tuple[str, list[list[str]]]) -> None:
    header, rows = sound_test[0], rows_of(sound_test)
    rows = [row for row in rows if row[COLUMN["step"]] != "2"]
    given = verdict_of(header, rows)
    assert given["grade"] == grading.GRADE_TO_CHECK
    assert given["reason"].startswith("données insuffisantes pour classer : "
                                      "fenêtre de pleine charge : aucune ligne mesurée en phase 2")


def test_no_model_or_no_capacity_stays_unclassified_whatever_the_doubts(
    sound_test: tuple[str, list[list[str]]],
) -> None:
    header, rows = sound_test[0], rows_of(sound_test)
    rows = [row for row in rows if row[COLUMN["step"]] != "2"]
    assert verdict_of(header, rows, capacity_ah=None)["grade"] == grading.GRADE_UNCLASSIFIED


DOUBT_SPREAD = grading.Doubt("fenêtre de pleine charge : 12 lignes sur 601 attendues", (grading.CHECK_SPREAD,))


@pytest.mark.parametrize(
    "spread, temperature, ri, doubts, grade_, reason",
    [
        (40.0, 35.0, 0.020, (), "A", "SOH 95,0\u00a0% ≥ 90\u00a0% et tous les contrôles passés"),
        (40.0, 35.0, 0.020, (DOUBT_SPREAD,), "À VÉRIFIER",
         "données insuffisantes pour classer : fenêtre de pleine charge : 12 lignes sur 601 attendues"),
        # The doubted check fails: not a REJET, the data cannot support it.
        (400.0, 35.0, 0.020, (DOUBT_SPREAD,), "À VÉRIFIER",
         "données insuffisantes pour classer : fenêtre de pleine charge : 12 lignes sur 601 attendues ; "
         "non conforme sur ces données : Écart entre cellules à pleine charge : 400\u00a0mV (max 300\u00a0mV)"),
        # A check the doubt does not touch fails on sound data: REJET, the doubt said too.
        (40.0, 70.0, 0.020, (DOUBT_SPREAD,), "REJET",
         "contrôle non passé : Température maximale : 70,0\u00a0°C (max 50\u00a0°C) (données incertaines par "
         "ailleurs : fenêtre de pleine charge : 12 lignes sur 601 attendues)"),
        # The same doubt twice is said once.
        (40.0, 35.0, 0.020, (DOUBT_SPREAD, DOUBT_SPREAD), "À VÉRIFIER",
         "données insuffisantes pour classer : fenêtre de pleine charge : 12 lignes sur 601 attendues"),
    ],
)
def test_precedence_of_to_check(spread: float, temperature: float, ri: float, doubts: tuple[grading.Doubt, ...],
                                grade_: str, reason: str) -> None:
    given = grade_json(summary(95.0, ri), grading.TestFacts(spread, temperature, doubts), RULES, no_correction)
    assert (given["grade"], given["reason"]) == (grade_, reason)
    assert given["soh_pct"] == 95.0 and record.is_verdict(given)
    assert [c["name"] for c in given["checks"] if c.get("uncertain")] == (["cell_spread"] if doubts else [])


def test_to_check_is_a_reserved_grade_name() -> None:
    with pytest.raises(grading.GradingError, match="réservée ou en double"):
        grading.parse_rules(_broken(lambda d: d["models"][0]["grades"][1].update(grade="à vérifier")))


@pytest.mark.parametrize(
    "seq, uptime, named, expected",
    [
        ([0, 1, 2, 3], [1, 2, 3, 4], [], [0, 0, 0, 0]),
        ([0, 1, 2, 0, 1], [1, 2, 3, 1, 2], [], [0, 0, 0, 1, 1]),  # seq back to 0: a reboot
        ([0, 1, 3, 4, 2], [1, 2, 4, 5, 3], [], [0, 0, 0, 0, 0]),  # seq 2 replayed after 4: it fills a hole
        ([5, 6, 9, 10], [5000, 6000, 200, 1200], [], [0, 0, 1, 1]),  # ahead, uptime back: rebooted while away
        ([0, 1, 2, 3], [1, 2, 9**9, 4], [], [0, 0, 0, 0]),  # one uptime garbled ahead: not a boot
        # The journal names rows: a boot there unless its seq goes on (the recorder misled by a garbled uptime).
        ([0, 1, 2, 3, 4], [1, 2, 9**9, 4, 5], [0, 3], [0, 0, 0, 0, 0]),
        ([0, 0, 1], [1, 1, 2], [0, 1], [0, 1, 1]),  # a boot that sent one line, then rebooted
        ([1, 2, 0], [1800, 2100, 0], [0], [0, 0, 0]),  # with a journal, a lower seq it does not name is a late line
        ([1, 2, 0], [1800, 2100, 0], [], [0, 0, 1]),  # without one, a reboot
    ],
)
def test_how_boots_are_told_apart(seq: list[int], uptime: list[int], named: list[int], expected: list[int]) -> None:
    starts = np.zeros(len(seq), dtype=bool)
    starts[named] = True
    boots = analysis.split_boots(np.array(seq, dtype=float), np.array(uptime, dtype=float), starts)
    assert boots.tolist() == expected


@pytest.mark.parametrize(
    "values, kept",
    [
        ([1, 2, 3], [1, 2, 3]),
        ([1, 2, 1000, 4, 5], [1, 2, 4, 5]),  # ahead
        ([1, 2, 0, 4, 5], [1, 2, 4, 5]),  # behind
        ([1000, 1, 2, 3], [1, 2, 3]),
        ([1, 2, 3, 1000, 4], [1, 2, 3, 4]),  # ahead, one before the end: the lower end wins
        ([1, 2, 3, 0], [1, 2, 3]),
        ([3, 3, 3], [3, 3, 3]),
    ],
)
def test_monotone_keep(values: list[float], kept: list[float]) -> None:
    array = np.array(values, dtype=float)
    assert array[analysis.monotone_keep(array)].tolist() == kept


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], None), ([5.0], None), ([5.0, 7.0], 5.0),
        ([10, 10, 900, 10, 10], 10.0),  # a spike: one row alone
        ([350, 350, 0, 350, 350], 350.0),  # a dip hides nothing that lasts
        ([10, 20, 30, 40], 30.0),
    ],
)
def test_a_value_counts_when_two_consecutive_rows_hold_it(values: list[float], expected: Optional[float]) -> None:
    assert analysis.held_max(np.array(values, dtype=float)) == expected


# --------------------------------------------------------------------------- ri_plausible_ohm (protocol v3)


def _with_range(value: Any) -> str:
    return _broken(lambda d: d["models"][0].update(ri_plausible_ohm=value))


@pytest.mark.parametrize(
    "value, message",
    [
        ("0.0005-1", "ri_plausible_ohm doit être une liste [min, max] en ohms"),
        ([0.001], "ri_plausible_ohm doit être une liste [min, max] en ohms"),
        ([0.001, 0.5, 1.0], "ri_plausible_ohm doit être une liste [min, max] en ohms"),
        ({"min": 0.001, "max": 0.5}, "ri_plausible_ohm doit être une liste [min, max] en ohms"),
        ([0, 0.5], "ri_plausible_ohm[0] doit être un nombre > 0 (trouvé 0)"),
        ([-0.001, 0.5], "ri_plausible_ohm[0] doit être un nombre > 0"),
        (["0.001", 0.5], "ri_plausible_ohm[0] doit être un nombre > 0"),
        ([0.001, True], "ri_plausible_ohm[1] doit être un nombre > 0"),
        ([0.001, None], "ri_plausible_ohm[1] doit être un nombre > 0"),
        ([0.5, 0.001], "le min doit être inférieur au max (trouvé [0.5, 0.001])"),
        ([0.01, 0.01], "le min doit être inférieur au max"),
        # Wider than the default: the journal's fold would drop what the recorder accepted.
        ([0.0001, 0.5], "ri_plausible_ohm doit rester dans [0.0005, 1] Ω"),
        ([0.001, 2.0], "ri_plausible_ohm doit rester dans [0.0005, 1] Ω"),
    ],
)
def test_an_invalid_ri_plausible_ohm_is_a_clear_error(value: Any, message: str) -> None:
    with pytest.raises(grading.GradingError) as caught:
        grading.parse_rules(_with_range(value), "grading.json")
    text = str(caught.value)
    assert text.startswith("grading.json : modèle « LFP 16S 100 Ah » : ") and message in text, text


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, (0.0005, 1.0)),  # absent: the default
        ([0.0005, 1.0], (0.0005, 1.0)),  # the default's own bounds are allowed
        ([0.002, 0.2], (0.002, 0.2)),
        ([0.001, 1], (0.001, 1.0)),  # an integer bound
    ],
)
def test_a_valid_ri_plausible_ohm(value: Any, expected: tuple[float, float]) -> None:
    data = json.loads(json.dumps(RULES_JSON))
    if value is not None:
        data["models"][0]["ri_plausible_ohm"] = value
    model = grading.parse_rules(json.dumps(data)).models[0]
    assert model.ri_plausible_ohm == expected
    assert all(isinstance(bound, float) for bound in model.ri_plausible_ohm)


def test_the_default_plausible_range_is_defined_once() -> None:
    assert grading.RI_PLAUSIBLE_OHM_DEFAULT == record.RI_PLAUSIBLE_OHM_DEFAULT == (0.0005, 1.0)
    assert RULES.models[0].ri_plausible_ohm == grading.RI_PLAUSIBLE_OHM_DEFAULT  # RULES_JSON leaves it out


def _two_models() -> grading.Rules:
    data = json.loads(json.dumps(RULES_JSON))
    small = {**data["models"][0], "name": "LFP 8S 50 Ah", "serial_pattern": "^RW-S", "nominal_capacity_ah": 50.0,
             "ri_plausible_ohm": [0.002, 0.5]}
    data["models"].insert(0, small)
    data["models"][1]["ri_plausible_ohm"] = [0.001, 0.2]
    return grading.parse_rules(json.dumps(data))


@pytest.mark.parametrize(
    "rules, serial, expected",
    [
        (_two_models(), "RW-S0001", (0.002, 0.5)),  # the first matching model's (file order)
        (_two_models(), "rw-s0001", (0.002, 0.5)),  # serials match case-insensitively
        (_two_models(), "RW-ABCD1234", (0.001, 0.2)),
        (_two_models(), "XX-0001", (0.0005, 1.0)),  # no model: the default
        (RULES, "RW-ABCD1234", (0.0005, 1.0)),  # a model without the key: the default
        (RULES, "", (0.0005, 1.0)),
    ],
)
def test_ri_plausible_range(rules: grading.Rules, serial: str, expected: tuple[float, float]) -> None:
    assert grading.ri_plausible_range(rules, serial) == expected


def test_the_project_grading_json_writes_the_plausible_range_out() -> None:
    data = json.loads((REPO_DIR / "grading.json").read_text(encoding="utf-8"))
    assert [model["ri_plausible_ohm"] for model in data["models"]] == [[0.0005, 1.0]]
    rules = grading.load_rules(REPO_DIR / "grading.json")
    assert grading.ri_plausible_range(rules, "RW-ANY0001") == grading.RI_PLAUSIBLE_OHM_DEFAULT


# --------------------------------------------------------------------------- Ri at 25 °C, pulse by pulse


def per_degree(ohm: float, temperature_c: Optional[float]) -> float:
    """A stand-in correction: +1 % per degree above 25 °C (unchanged when the temperature is unknown)."""
    return ohm if temperature_c is None else ohm * (1 + (temperature_c - 25.0) / 100)


def pulses_summary(pulses: list[tuple[float, Optional[float]]], capacity_ah: float = 95.0) -> dict[str, Any]:
    """A summary as record.apply_state writes it, from Ri décharge results (ohm, temperature)."""
    events: list[dict[str, Any]] = [{"event": "start", "t": "2026-12-01T10:00:00+01:00", "serial": "RW-ABCD1234", "banc": "banc1"}]
    for ohm, temperature in pulses:
        values: dict[str, Any] = {"ri_discharge": ohm}
        if temperature is not None:
            values["temperature_c"] = temperature
        events.append({"event": "ri", "t": "2026-12-01T10:05:00+01:00", "values": values})
    out = record.apply_state(record.new_summary("banc1", "RW-ABCD1234", "2026-12-01T10:00:00+01:00"),
                             record.fold_events(map(record.event_from_json, events)))
    out["capacity_ah"] = capacity_ah
    return out


@pytest.mark.parametrize(
    "pulses, graded",
    [
        # Each pulse corrected with its own temperature, then averaged: (0.020 * 1.0 + 0.040 * 1.1) / 2,
        # in any order (the mean corrected with the last temperature alone gave 0.033, then 0.030).
        ([(0.020, 25.0), (0.040, 35.0)], 0.032),
        ([(0.040, 35.0), (0.020, 25.0)], 0.032),
        # A result without its temperature was measured at the previous one's.
        ([(0.020, 35.0), (0.020, None)], 0.022),
        ([(0.020, None), (0.020, 35.0)], 0.021),  # none before it: taken as at 25 °C
        ([(0.039, 25.0), (0.041, 25.0)], 0.040),  # at the limit: passes
    ],
)
def test_the_graded_ri_corrects_each_pulse_with_its_own_temperature(
    pulses: list[tuple[float, Optional[float]]], graded: float,
) -> None:
    verdict = grade_json(pulses_summary(pulses), facts(), RULES, per_degree)
    check = next(check for check in verdict["checks"] if check["name"] == grading.CHECK_RI)
    assert check["value"] == pytest.approx(graded, abs=1e-5) and check["ok"] == (graded <= 0.040 + 1e-12)
    assert verdict["grade"] == ("A" if check["ok"] else "REJET")


def test_a_summary_of_the_earlier_version_is_graded_from_its_mean_and_last_temperature() -> None:
    """config.json without `ri_pulses` (an older folder): its mean corrected with ri_temperature_c, as before."""
    old = summary(95.0, 0.030, ri_temperature_c=35.0)
    assert "ri_pulses" not in old
    check = grade_json(old, facts(), RULES, per_degree)["checks"][1]
    assert check["value"] == pytest.approx(0.033) and check["ok"]
    # Pulses that are not what the mean was made of (the mean edited by hand) are not used either.
    edited = {**pulses_summary([(0.020, 25.0), (0.040, 35.0)]), "ri_discharge_average": 0.030, "ri_temperature_c": 35.0}
    assert grade_json(edited, facts(), RULES, per_degree)["checks"][1]["value"] == pytest.approx(0.032)
    edited["ri_discharge_average"] = 0.031
    assert grade_json(edited, facts(), RULES, per_degree)["checks"][1]["value"] == pytest.approx(0.0341, abs=2e-5)


@pytest.mark.parametrize("battery", ["sound", "cells apart"])
def test_one_row_whose_phase_reads_2_after_the_charge_never_moves_the_window(
        sound_test: tuple[str, list[list[str]]], battery: str) -> None:
    header = sound_test[0]
    base = rows_of(sound_test) if battery == "sound" else high_spread(rows_of(sound_test))
    expected, clean = verdict_of(header, base), analysis.test_facts(parse(header, base))
    after = [i for i, row in enumerate(base) if int(row[COLUMN["step"]]) > 2]
    for i in (after[len(after) // 4], after[len(after) // 2], after[-2]):
        rows = [list(row) for row in base]
        rows[i][COLUMN["step"]] = "2"  # one garbled phase field, well after phase 2
        assert analysis.test_facts(parse(header, rows)) == clean, i
        assert verdict_of(header, rows) == expected, i
