"""A test's summary as text: the printout of `report.py TEST_FOLDER` and the results panel beside the charts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

from banclfp.analysis.measures import CAPACITY_FLAG_PCT, Summary
from banclfp.presentation.formatting import (
    PHASE_COLORS,
    darker,
    format_duration,
    format_milliohm,
    format_number,
    grade_color,
)
from banclfp.recording import record
from banclfp.verdict import grading
from banclfp.wire import protocol

STATUS_LABELS = record.STATUS_LABELS  # re-exported: charts and report take it from here


def format_time(moment: Optional[float | datetime]) -> str:
    """Paris time dd/mm/yyyy HH:MM:SS of a unix time or datetime ("—" when unknown)."""
    if moment is None:
        return "—"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), tz=UTC)
    return moment.astimezone(record.LOCAL_TZ).strftime("%d/%m/%Y %H:%M:%S")


def test_span(summary: Summary) -> tuple[Optional[float | datetime], Optional[float | datetime]]:
    """When the test began and ended, as every page says it: its journal's start and phase 5 (the Pi's
    clock), else its first and last measurements. One place, so that the certificate's pages agree even
    when the ESP's clock ran faster (an accelerated simulator) than the Pi's."""
    start = summary.first_handle if summary.first_handle is not None else summary.first_row_s
    end = summary.end_time if summary.end_time is not None else summary.last_row_s
    return start, end


def _fmt(value: Optional[float], decimals: int, unit: str = "", signed: bool = False) -> str:
    """A French number (formatting.format_number); `signed` writes "+" before a positive value."""
    text = format_number(value, decimals, unit)
    return f"+{text}" if signed and value is not None and round(value, decimals) > 0 else text


def phase_name(step: int) -> str:
    """French name of a phase ("Charge"...), or "phase N" for an unexpected value."""
    return protocol.PHASE_NAMES.get(step, f"phase {step}")


def ri_temperature_text(summary: Summary, unknown: str = "inconnue", between: str = " à ") -> str:
    """The temperature(s) the Ri pulses were measured at: "25,3 °C", "24,8 à 27,3 °C" or `unknown`.

    Each pulse is brought to 25 °C with its own temperature: a span says so better than the last one.
    """
    span = summary.ri_temperature_range_c
    if span is None:
        return unknown if summary.ri_temperature_c is None else _fmt(summary.ri_temperature_c, 1, "°C")
    low, high = (_fmt(value, 1) for value in span)
    return f"{high} °C" if low == high else f"{low}{between}{high} °C"


def capacity_flag_text(summary: Summary) -> str:
    """The warning line shown when the coulomb count and the ESP differ by more than 2 %."""
    return (
        f"ATTENTION : écart de {_fmt(summary.capacity_diff_pct, 2, '%', signed=True)} "
        f"(> {format_number(CAPACITY_FLAG_PCT, 0, '%')}) entre le comptage "
        "coulométrique et la capacité de l'ESP"
    )


def format_summary(summary: Summary, folder: Optional[Path] = None) -> str:
    """The plain-text summary printed by `report.py TEST_FOLDER`."""
    status = STATUS_LABELS.get(summary.status, summary.status)
    lines = [f"Test {summary.serial} — {summary.banc} — {status}"]
    if folder is not None:
        lines.append(f"Dossier : {folder}")
    if summary.verdict is not None:
        lines.append(f"Verdict             : {verdict_text(summary.verdict)} — {summary.verdict.reason}")
        if summary.verdict.grade == grading.GRADE_TO_CHECK:
            lines.append(f"                      {TO_CHECK_TEXT}")
    lines.append(f"Début (config.json) : {format_time(summary.first_handle)}")
    lines.append(f"Première mesure     : {format_time(summary.first_row_s)}")
    lines.append(f"Dernière mesure     : {format_time(summary.last_row_s)}")
    if summary.end_time is not None:
        lines.append(f"Fin (phase 5)       : {format_time(summary.end_time)}")
    lines.append(
        f"Durée totale        : {format_duration(summary.wall_s)}, dont arrêts {format_duration(summary.stopped_s)}"
    )
    skipped = f" ({summary.skipped_lines} ligne(s) ignorée(s))" if summary.skipped_lines else ""
    lines.append(f"Mesures             : {summary.rows} ligne(s){skipped}")
    if summary.rejected_count is not None:
        lines.append(f"Messages rejetés    : {summary.rejected_count}")
    lines.append("")
    lines.append("Durée par phase (hors arrêts)")
    if not summary.phase_active_s:
        lines.append("  aucune mesure")
    for phase in sorted(summary.phase_active_s):
        lines.append(f"  {phase} {phase_name(phase):<20} {format_duration(summary.phase_active_s[phase])}")
    lines.append(f"Arrêts (silences > {format_number(summary.gap_s, 0, 's')}) : {len(summary.stops)}")
    for stop in summary.stops:
        lines.append(
            f"  {format_time(stop.t0_s)} -> {format_time(stop.t1_s)} ({format_duration(stop.duration_s)}), "
            f"phase {stop.step_before} -> {stop.step_after}"
        )
    lines.append("")
    lines.append("Capacité (décharge, phase 3)")
    lines.append(
        f"  ESP (config.json)          : {_fmt(summary.esp_capacity_ah, 3, 'Ah')}   "
        f"{_fmt(summary.esp_capacity_wh, 1, 'Wh')}"
    )
    lines.append(
        f"  Comptage coulométrique     : {_fmt(summary.counted_capacity_ah, 3, 'Ah')}   "
        f"{_fmt(summary.counted_energy_wh, 1, 'Wh')}"
    )
    lines.append(f"  Écart                      : {_fmt(summary.capacity_diff_pct, 2, '%', signed=True)}")
    if summary.capacity_flag:
        lines.append(f"  {capacity_flag_text(summary)}")
    lines.append(
        f"  Sur tout le test           : {_fmt(summary.total_charge_ah, 3, 'Ah')} chargés, "
        f"{_fmt(summary.total_discharge_ah, 3, 'Ah')} déchargés"
    )
    lines.append("")
    lines.append(f"Résistances (mΩ)  mesurée à 25 °C  n   [température des mesures : {ri_temperature_text(summary)}, "
                 "chacune corrigée avec la sienne]")
    for item in summary.resistances:
        lines.append(f"  {item.label:<20} {format_milliohm(item.raw_ohm):>8} {format_milliohm(item.at_25c_ohm):>8} {item.count:>3}")
    lines.append("")
    if summary.voltage_range_v:
        lines.append(f"Tension             : {_fmt(summary.voltage_range_v[0], 2)} à "
                     f"{_fmt(summary.voltage_range_v[1], 2, 'V')}")
    if summary.temperature_range_c:
        lines.append(
            f"Température         : {_fmt(summary.temperature_range_c[0], 1)} à "
            f"{_fmt(summary.temperature_range_c[1], 1, '°C')}"
        )
    if summary.max_cell_spread_mv is not None:
        lines.append(f"Écart cellules max  : {_fmt(summary.max_cell_spread_mv, 0, 'mV')}")
    if summary.notes:
        lines.append("")
        lines.append("Remarques")
        lines.extend(f"  - {note}" for note in summary.notes)
    return "\n".join(lines) + "\n"


PANEL_RED, PANEL_TEXT, PANEL_GREY = "#c0392b", "#222222", "#555555"
_SHORT_PHASE = {4: "Recharge stock."}
_SHORT_RESISTANCE = {"diffusion_discharge": "Diff. décharge", "diffusion_charge": "Diff. charge"}


def verdict_text(verdict: record.Verdict) -> str:
    """A verdict in a few words: "A, SOH 93,2 %" ("NON CLASSÉ" alone without a SOH, "À VÉRIFIER" alone: no grade)."""
    if verdict.grade == grading.GRADE_TO_CHECK or verdict.soh_pct is None:
        return verdict.grade
    return f"{verdict.grade}, SOH {format_number(verdict.soh_pct, 1, '%')}"


TO_CHECK_TEXT = "Aucune classe n'est attribuée tant qu'une personne n'a pas vérifié les données du test."
"""What a verdict À VÉRIFIER means, beneath it (printout; the certificate says it too)."""


def panel_lines(summary: Summary) -> list[tuple[str, str]]:
    """(text, colour) lines of the results panel beside the charts (at most ~29 characters each)."""
    red, black, grey = PANEL_RED, PANEL_TEXT, PANEL_GREY
    out: list[tuple[str, str]] = [("Résultats", black)]
    if summary.verdict is not None:
        out.append((f"Verdict : {verdict_text(summary.verdict)}", grade_color(summary.verdict.grade)))
        if summary.verdict.grade == grading.GRADE_TO_CHECK:
            out.append(("Classe après vérification", grade_color(grading.GRADE_TO_CHECK)))
    out.append((f"{'Capacité':<11}{'Ah':>8}{'Wh':>8}", grey))
    out.append((f"{'ESP':<11}{_fmt(summary.esp_capacity_ah, 2):>8}{_fmt(summary.esp_capacity_wh, 0):>8}", black))
    out.append((f"{'Compté ph.3':<11}{_fmt(summary.counted_capacity_ah, 2):>8}"
                f"{_fmt(summary.counted_energy_wh, 0):>8}", black))
    out.append((f"{'Écart':<11}{_fmt(summary.capacity_diff_pct, 2, '%', signed=True):>10}",
                red if summary.capacity_flag else black))
    if summary.capacity_flag:
        out.append((f"ÉCART > {format_number(CAPACITY_FLAG_PCT, 0, '%')} : à vérifier", red))
    out.append(("", black))
    out.append((f"{'Résist. (mΩ)':<14}{'mes.':>6}{'25 °C':>7}", grey))
    for item in summary.resistances:
        label = _SHORT_RESISTANCE.get(item.key, item.label)
        out.append((f"{label:<14}{format_milliohm(item.raw_ohm):>6}{format_milliohm(item.at_25c_ohm):>7}", black))
    out.append((f"{'T mesure Ri':<12}{ri_temperature_text(summary, '—', '-'):>15}", grey))
    out.append(("", black))
    out.append(("Durées (hors arrêts)", black))
    for phase in sorted(summary.phase_active_s):
        name = _SHORT_PHASE.get(phase, phase_name(phase))
        out.append((f"{phase} {name:<15}{format_duration(summary.phase_active_s[phase]):>11}",
                    darker(PHASE_COLORS[phase]) if phase in PHASE_COLORS else black))
    out.append((f"Arrêts : {len(summary.stops)} ({format_duration(summary.stopped_s)})", grey))
    out.append((f"Total : {format_duration(summary.wall_s)}", grey))
    out.append((f"Mesures : {summary.rows}", grey))
    if summary.skipped_lines:
        out.append((f"Lignes ignorées : {summary.skipped_lines}", red))
    if summary.rejected_count:
        out.append((f"Messages rejetés : {summary.rejected_count}", grey))
    if summary.max_cell_spread_mv is not None:
        out.append((f"Écart cellules max : {_fmt(summary.max_cell_spread_mv, 0, 'mV')}", grey))
    return out
