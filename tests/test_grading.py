"""grading.py: grading.json's validation and the grade at every boundary (pure tables, no I/O)."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import pytest

import analysis
import grading
import record
from testkit.support import REPO_DIR

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


def facts(spread: Optional[float] = 40.0, temperature: Optional[float] = 35.0) -> grading.TestFacts:
    return grading.TestFacts(cell_spread_mv=spread, temperature_max_c=temperature)


def shown_agrees(verdict: dict[str, Any]) -> None:
    """Each check's value as kept (and shown) gives the same result as the check: no "70,0 % (min 70 %) non conforme"."""
    for check in verdict["checks"]:
        if check["value"] is None:
            continue
        shown = float(grading.check_text(check).split(" : ")[1].split("\u00a0")[0].replace(",", "."))
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
    verdict = grading.grade(summary(capacity_ah), facts(), RULES, no_correction)
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
    verdict = grading.grade(summary(95.0, ri, ri_temperature_c=ri_temperature), facts(spread, temperature), RULES,
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
    verdict = grading.grade(summary(capacity_ah), facts(), grading.parse_rules(json.dumps(rules)), no_correction)
    assert (verdict["grade"], verdict["soh_pct"]) == ("A", 90.0)


def test_a_check_carries_value_limit_and_result_as_config_json_keeps_them() -> None:
    verdict = grading.grade(summary(85.04, 0.0213), facts(120.0, 41.26), RULES, no_correction)
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
    verdict = grading.grade(case, facts(), RULES, no_correction)
    assert verdict["grade"] == grading.GRADE_UNCLASSIFIED and verdict["soh_pct"] is None
    assert reason_part in verdict["reason"]


def test_first_matching_model_applies_case_insensitively() -> None:
    rules = json.loads(json.dumps(RULES_JSON))
    small = {**rules["models"][0], "name": "LFP 8S 50 Ah", "serial_pattern": "^rw-s", "nominal_capacity_ah": 50.0}
    rules["models"].insert(0, small)
    parsed = grading.parse_rules(json.dumps(rules))
    verdict = grading.grade(summary(47.5, serial="RW-S0001"), facts(), parsed, no_correction)
    assert (verdict["model"], verdict["soh_pct"], verdict["grade"]) == ("LFP 8S 50 Ah", 95.0, "A")
    assert grading.grade(summary(47.5), facts(), parsed, no_correction)["grade"] == "REJET"  # the 100 Ah model


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
    rows = [  # spread 200 mV early in phase 2 (balancing not done), 60 mV in its last 10 minutes
        "2026-12-01T10:00:00.000+01:00,2,0,52.0,50.0,60.0,30.0,0,0,3300,3500,1",
        "2026-12-01T10:30:00.000+01:00,2,1,57.0,5.0,99.0,31.0,0,0,3400,3460,1",
        "2026-12-01T10:35:00.000+01:00,2,2,57.6,2.0,100.0,32.0,0,0,3420,3450,0",
        "2026-12-01T11:00:00.000+01:00,3,3,52.0,-50.0,90.0,44.5,5.0,256.0,3300,3310,0",
    ]
    data = analysis.parse_data_csv(("\n".join([header, *rows]) + "\n").encode())
    assert analysis.test_facts(data) == grading.TestFacts(cell_spread_mv=60.0, temperature_max_c=44.5)
    empty = analysis.parse_data_csv((header + "\n").encode())
    assert analysis.test_facts(empty) == grading.TestFacts(cell_spread_mv=None, temperature_max_c=None)


def test_the_full_charge_window_is_in_measurement_time() -> None:
    """A phase-2 line measured early but delivered late (a backlog) is not "at full charge"."""
    header = ",".join(record.DATA_CSV_HEADER)
    rows = [  # timestamp (receipt), ..., uptime_ms, measured_at
        "2026-12-01T10:30:00.000+01:00,2,1,57.0,5.0,99.0,31.0,0,0,3400,3460,1,1800000,2026-12-01T10:30:00.000+01:00",
        "2026-12-01T10:35:00.000+01:00,2,2,57.6,2.0,100.0,32.0,0,0,3420,3450,0,2100000,2026-12-01T10:35:00.000+01:00",
        # Measured at 10:00 (spread 200 mV), received at 10:36 with the backlog of a restarted banc.py.
        "2026-12-01T10:36:00.000+01:00,2,0,52.0,50.0,60.0,30.0,0,0,3300,3500,1,0,2026-12-01T10:00:00.000+01:00",
    ]
    data = analysis.parse_data_csv(("\n".join([header, *rows]) + "\n").encode())
    assert analysis.test_facts(data).cell_spread_mv == 60.0


# --------------------------------------------------------------------------- ri_plausible_ohm (contract v3)


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
                             record.fold_events(events))
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
    verdict = grading.grade(pulses_summary(pulses), facts(), RULES, per_degree)
    check = next(check for check in verdict["checks"] if check["name"] == grading.CHECK_RI)
    assert check["value"] == pytest.approx(graded, abs=1e-5) and check["ok"] == (graded <= 0.040 + 1e-12)
    assert verdict["grade"] == ("A" if check["ok"] else "REJET")


def test_a_summary_of_the_earlier_version_is_graded_from_its_mean_and_last_temperature() -> None:
    """config.json without `ri_pulses` (an older folder): its mean corrected with ri_temperature_c, as before."""
    old = summary(95.0, 0.030, ri_temperature_c=35.0)
    assert "ri_pulses" not in old
    check = grading.grade(old, facts(), RULES, per_degree)["checks"][1]
    assert check["value"] == pytest.approx(0.033) and check["ok"]
    # Pulses that are not what the mean was made of (the mean edited by hand) are not used either.
    edited = {**pulses_summary([(0.020, 25.0), (0.040, 35.0)]), "ri_discharge_average": 0.030, "ri_temperature_c": 35.0}
    assert grading.grade(edited, facts(), RULES, per_degree)["checks"][1]["value"] == pytest.approx(0.032)
    edited["ri_discharge_average"] = 0.031
    assert grading.grade(edited, facts(), RULES, per_degree)["checks"][1]["value"] == pytest.approx(0.0341, abs=2e-5)
