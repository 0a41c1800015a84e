"""The verdict of a finished test (the README's verdict section): grading.json's rules, and the grade they give.

Pure: `parse_rules` validates the file's content (the loader only reads the text), and
`grade` turns a test's summary (config.json's values), the facts measured in data.csv
(`TestFacts`, from analysis.test_facts) and the rules into the verdict object that
config.json keeps. An invalid grading.json raises GradingError naming the file and what is
wrong: nothing is graded rather than graded wrongly. Facts the data cannot support
(`TestFacts.doubts`) give GRADE_TO_CHECK rather than a grade (protocol v3; precedence in `grade`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Optional

from banclfp.presentation.formatting import format_limit, format_milliohm, format_number
from banclfp.recording import record

GRADING_FILE = "grading.json"

GRADE_REJECT = "REJET"
GRADE_UNCLASSIFIED = "NON CLASSÉ"
GRADE_TO_CHECK = "À VÉRIFIER"
"""The data of the test cannot support a grade (protocol v3): no grade until a person checks them."""
RESERVED_GRADES: tuple[str, ...] = (GRADE_REJECT, GRADE_UNCLASSIFIED, GRADE_TO_CHECK)
TO_CHECK_REASON = "données insuffisantes pour classer : "
"""How the reason of a verdict À VÉRIFIER starts; what follows is each doubt's reason."""

CHECK_SOH = "soh"
CHECK_RI = "ri_discharge"
CHECK_SPREAD = "cell_spread"
CHECK_TEMPERATURE = "temperature_max"
CHECK_NAMES: tuple[str, ...] = (CHECK_SOH, CHECK_RI, CHECK_SPREAD, CHECK_TEMPERATURE)

CHECK_LABELS: dict[str, str] = {
    CHECK_SOH: "État de santé (SOH)",
    CHECK_RI: "Ri décharge à 25 °C",
    CHECK_SPREAD: "Écart entre cellules à pleine charge",
    CHECK_TEMPERATURE: "Température maximale",
}
"""How each check is named to people (certificate, kiosk)."""

FULL_CHARGE_WINDOW_S = 600.0
"""Phase 2's last 10 minutes: the cells at full charge, after balancing."""

# Each check compares the value itself with its limit (the README's verdict section); the verdict keeps the value
# as it is shown (SOH 0.1 %, Ri 0.01 mΩ, spread 1 mV, 0.1 °C) rounded toward failing (down for a
# minimum, up for a maximum), so that a number on the certificate never contradicts its check:
# 69.951 % fails "min 70 %" and shows 69,9 %; 40.0041 mΩ fails "max 40 mΩ" and shows 40,01 mΩ.
# (This holds for limits written with no more decimals than the value is shown with.)
SOH_DECIMALS = 1
RI_DECIMALS = 5
SPREAD_DECIMALS = 0
TEMPERATURE_DECIMALS = 1

RI_PLAUSIBLE_OHM_DEFAULT: tuple[float, float] = record.RI_PLAUSIBLE_OHM_DEFAULT
"""A model's `ri_plausible_ohm` when grading.json leaves it out; defined once in record.py, whose
fold of the journal skips any value outside it: a model's range can only narrow it."""


class GradingError(ValueError):
    """grading.json is invalid; the message names the file and what is wrong (French, for the operator)."""


@dataclass(frozen=True)
class Band:
    """One grade and the lowest SOH that earns it."""

    grade: str
    min_soh_pct: float


@dataclass(frozen=True)
class Model:
    """A battery model: which serials it covers, its nominal capacity, its grades and limits."""

    name: str
    serial_pattern: str
    nominal_capacity_ah: float
    grades: tuple[Band, ...]
    ri_discharge_max_ohm: float
    cell_spread_max_mv: float
    temperature_max_c: float
    # [low, high] ohm: an Ri/diffusion result outside it is refused by the recorder (protocol v3).
    ri_plausible_ohm: tuple[float, float] = RI_PLAUSIBLE_OHM_DEFAULT

    def matches(self, serial: str) -> bool:
        """True when this model covers `serial` (its pattern searched case-insensitively)."""
        return re.search(self.serial_pattern, serial, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Rules:
    """The content of a valid grading.json."""

    version: str
    models: tuple[Model, ...]

    def model_for(self, serial: str) -> Optional[Model]:
        """The first model (file order) whose pattern matches `serial`, or None."""
        return next((model for model in self.models if model.matches(serial)), None)


@dataclass(frozen=True)
class Doubt:
    """Why the data cannot support some checks (protocol v3): the reason for people, and the checks it leaves open."""

    reason: str  # French, precise: "fenêtre de pleine charge : 12 lignes sur 601 attendues"
    checks: tuple[str, ...]


@dataclass(frozen=True)
class TestFacts:
    """What data.csv says that the grade needs (analysis.test_facts reads them).

    Each value holds for at least two consecutive rows in the ESP's order: one row never decides it.
    """

    __test__ = False  # not a pytest class

    cell_spread_mv: Optional[float]  # cell_max_mv - cell_min_mv at full charge (phase 2's last 10 minutes)
    temperature_max_c: Optional[float]  # highest temperature_c of the test
    doubts: tuple[Doubt, ...] = ()  # what the data cannot support (empty: every fact is sound)


# =========================================================================== grading.json


def _positive(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GradingError(f"{source} : {where} doit être un nombre > 0 (trouvé {json.dumps(value)})")
    return float(value)


def _text(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GradingError(f"{source} : {where} doit être un texte non vide")
    return value


def _plausible_range(value: Any, where: str, source: str) -> tuple[float, float]:
    """`ri_plausible_ohm`: absent -> the default; else [low, high] ohm within the default, 0 < low < high."""
    if value is None:
        return RI_PLAUSIBLE_OHM_DEFAULT
    floor, ceiling = RI_PLAUSIBLE_OHM_DEFAULT
    shown = json.dumps(value)
    if not isinstance(value, list) or len(value) != 2:
        raise GradingError(f"{source} : {where} : ri_plausible_ohm doit être une liste [min, max] en ohms "
                           f"(trouvé {shown})")
    low = _positive(value[0], f"{where} : ri_plausible_ohm[0]", source)
    high = _positive(value[1], f"{where} : ri_plausible_ohm[1]", source)
    if low >= high:
        raise GradingError(f"{source} : {where} : ri_plausible_ohm : le min doit être inférieur au max "
                           f"(trouvé {shown})")
    if low < floor or high > ceiling:
        # The journal's fold keeps only the default range (it cannot read grading.json): a wider one
        # would accept results that no mean would ever hold.
        raise GradingError(f"{source} : {where} : ri_plausible_ohm doit rester dans [{floor:g}, {ceiling:g}] Ω "
                           f"(trouvé {shown})")
    return low, high


def _parse_model(data: Any, index: int, source: str) -> Model:
    where = f"models[{index}]"
    if not isinstance(data, dict):
        raise GradingError(f"{source} : {where} doit être un objet")
    name = _text(data.get("name"), f"{where}.name", source)
    where = f"modèle « {name} »"
    pattern = _text(data.get("serial_pattern"), f"{where} : serial_pattern", source)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise GradingError(f"{source} : {where} : serial_pattern n'est pas une expression régulière valide ({exc})") from None
    grades = data.get("grades")
    if not isinstance(grades, list) or not grades:
        raise GradingError(f"{source} : {where} : grades doit être une liste non vide")
    bands: list[Band] = []
    for k, band in enumerate(grades):
        if not isinstance(band, dict):
            raise GradingError(f"{source} : {where} : grades[{k}] doit être un objet")
        grade = _text(band.get("grade"), f"{where} : grades[{k}].grade", source)
        if grade.upper() in RESERVED_GRADES or any(b.grade == grade for b in bands):
            raise GradingError(f"{source} : {where} : la classe « {grade} » est réservée ou en double")
        minimum = _positive(band.get("min_soh_pct"), f"{where} : grades[{k}].min_soh_pct", source)
        if bands and minimum >= bands[-1].min_soh_pct:
            # The first band met wins: a later band with a higher minimum could never be given.
            raise GradingError(f"{source} : {where} : les min_soh_pct doivent décroître "
                               f"(« {grade} » {minimum:g} après « {bands[-1].grade} » {bands[-1].min_soh_pct:g})")
        bands.append(Band(grade, minimum))
    return Model(
        name=name,
        serial_pattern=pattern,
        nominal_capacity_ah=_positive(data.get("nominal_capacity_ah"), f"{where} : nominal_capacity_ah", source),
        grades=tuple(bands),
        ri_discharge_max_ohm=_positive(data.get("ri_discharge_max_ohm"), f"{where} : ri_discharge_max_ohm", source),
        cell_spread_max_mv=_positive(data.get("cell_spread_max_mv"), f"{where} : cell_spread_max_mv", source),
        temperature_max_c=_positive(data.get("temperature_max_c"), f"{where} : temperature_max_c", source),
        ri_plausible_ohm=_plausible_range(data.get("ri_plausible_ohm"), where, source),
    )


def parse_rules(text: str, source: str = GRADING_FILE) -> Rules:
    """Validate grading.json's text (pure); GradingError names `source` and what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", "?")
        raise GradingError(f"{source}:{line} : JSON invalide ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise GradingError(f"{source} : doit contenir un objet JSON")
    version = _text(data.get("version"), "version", source)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise GradingError(f"{source} : models doit être une liste non vide")
    return Rules(version, tuple(_parse_model(model, i, source) for i, model in enumerate(models)))


def load_rules(path: Path) -> Rules:
    """Read and validate a grading.json; GradingError when it is unreadable or invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GradingError(f"{path} : lecture impossible ({exc})") from None
    return parse_rules(text, str(path))


def ri_plausible_range(rules: Rules, serial: str) -> tuple[float, float]:
    """[low, high] ohm of the Ri/diffusion values a battery of `serial` can give: its model's, else the default."""
    model = rules.model_for(serial)
    return RI_PLAUSIBLE_OHM_DEFAULT if model is None else model.ri_plausible_ohm


# =========================================================================== the grade


def _decimal(value: float) -> Decimal:
    """`value` as it is written (config.json, grading.json): 89.95 is 89.95, not its binary neighbour."""
    return Decimal(repr(float(value)))


def _shown_at_least(value: Decimal, decimals: int) -> float:
    """A value checked against a minimum, as shown: rounded down (never shown as meeting a minimum it misses)."""
    return float(value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_FLOOR))


def _shown_at_most(value: float, decimals: int) -> float:
    """A value checked against a maximum, as shown: rounded up (never shown within a maximum it exceeds)."""
    return float(_decimal(value).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_CEILING))


def _max_check(name: str, value: Optional[float], limit: float, decimals: int) -> record.Check:
    """A check that `value` (unrounded) is at most `limit`; the value kept as shown."""
    if value is None:
        return _check(name, None, limit, False)  # never measured: the check cannot pass
    return _check(name, _shown_at_most(value, decimals), limit, value <= limit)


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _check(name: str, value: Optional[float], limit: float, ok: bool) -> record.Check:
    return record.Check(name, value, limit, ok)


def _unclassified(reason: str, model: Optional[str], version: str) -> record.Verdict:
    return record.Verdict(GRADE_UNCLASSIFIED, None, model, version, (), reason)


def doubts_text(doubts: tuple[Doubt, ...]) -> str:
    """The reasons of `doubts` for people, each once, in order."""
    return " ; ".join(dict.fromkeys(doubt.reason for doubt in doubts))


def check_text(check: record.Check) -> str:
    """One check for people: "Ri décharge à 25 °C : 21,40 mΩ (max 40,00 mΩ)"."""
    name, value, limit = check.name, _finite(check.value), _finite(check.limit)
    if name == CHECK_RI:
        shown = format_milliohm(value, "mΩ")
        bound = f"max {format_limit(None if limit is None else round(limit * 1000, 6), 'mΩ')}"
    elif name == CHECK_SOH:
        shown, bound = format_number(value, SOH_DECIMALS, "%"), f"min {format_limit(limit, '%')}"
    elif name == CHECK_SPREAD:
        shown, bound = format_number(value, SPREAD_DECIMALS, "mV"), f"max {format_limit(limit, 'mV')}"
    else:
        shown, bound = format_number(value, TEMPERATURE_DECIMALS, "°C"), f"max {format_limit(limit, '°C')}"
    if value is None:
        shown = "non mesuré"
    return f"{CHECK_LABELS.get(name, name)} : {shown} ({bound})"


def grade(summary: record.TestSummary, facts: TestFacts, rules: Rules,
          correct_to_25c: Callable[[float, Optional[float]], float]) -> record.Verdict:
    """The verdict of a finished test (pure): grade, SOH, every check with value, limit and result, reason.

    `summary` is the test's config.json (serial, capacity_ah, the Ri décharge pulses or, for an
    earlier version's, ri_discharge_average and ri_temperature_c); `correct_to_25c(ohm, temperature_c)`
    brings a resistance to 25 °C: each pulse with its own temperature (record.ri_at_25c).
    """
    serial = summary.battery_serial
    model = rules.model_for(serial) if serial is not None else None
    if model is None:
        return _unclassified(f"aucun modèle de {GRADING_FILE} ne correspond au numéro de série {serial}",
                             None, rules.version)
    capacity = _finite(summary.capacity_ah)
    if capacity is None or capacity <= 0:
        return _unclassified("capacité jamais mesurée (pas de décharge en phase 3)", model.name, rules.version)

    # In decimal, from the numbers as written: a capacity of exactly 70 % of nominal is 70 %,
    # not 69.99999999999999 %.
    soh_exact = _decimal(capacity) * 100 / _decimal(model.nominal_capacity_ah)
    soh = _shown_at_least(soh_exact, SOH_DECIMALS)
    lowest = model.grades[-1].min_soh_pct
    ri_25 = record.ri_at_25c(summary, CHECK_RI, correct_to_25c)
    checks = [
        _check(CHECK_SOH, soh, lowest, soh_exact >= _decimal(lowest)),
        _max_check(CHECK_RI, ri_25, model.ri_discharge_max_ohm, RI_DECIMALS),
        _max_check(CHECK_SPREAD, facts.cell_spread_mv, model.cell_spread_max_mv, SPREAD_DECIMALS),
        _max_check(CHECK_TEMPERATURE, facts.temperature_max_c, model.temperature_max_c, TEMPERATURE_DECIMALS),
    ]
    # Precedence (protocol v3): a check that fails on sound data rejects the battery whatever
    # else is uncertain; otherwise any doubt gives À VÉRIFIER (a check that fails on data that
    # cannot support it is no REJET, one that passes on such data no grade).
    doubted = {name for doubt in facts.doubts for name in doubt.checks}
    checks = [replace(check, uncertain=True) if check.name in doubted else check for check in checks]
    failed = [check for check in checks if not check.ok]
    certain = [check for check in failed if check.name not in doubted]
    if certain:
        verdict_grade = GRADE_REJECT
        reason = "contrôle non passé : " + " ; ".join(check_text(check) for check in certain)
        if facts.doubts:
            reason += " (données incertaines par ailleurs : " + doubts_text(facts.doubts) + ")"
    elif facts.doubts:
        verdict_grade = GRADE_TO_CHECK
        reason = TO_CHECK_REASON + doubts_text(facts.doubts)
        if failed:
            reason += " ; non conforme sur ces données : " + " ; ".join(check_text(check) for check in failed)
    else:
        band = next(band for band in model.grades if soh_exact >= _decimal(band.min_soh_pct))  # the lowest is met
        verdict_grade = band.grade
        reason = (f"SOH {format_number(soh, SOH_DECIMALS, '%')} ≥ {format_limit(band.min_soh_pct, '%')}"
                  " et tous les contrôles passés")
    return record.Verdict(verdict_grade, soh, model.name, rules.version, tuple(checks), reason)

