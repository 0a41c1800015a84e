"""The colour of each measurement (display_colors, pure): it agrees with what the lab decides with the same value."""

from __future__ import annotations

import json
import os
import queue
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from banclfp.kiosk import worker as kiosk_worker
from banclfp.presentation import display_colors as dc
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.support import REPO_DIR
from banclfp.wire import protocol

MODEL = dc.MeasureLimits(cell_spread_max_mv=300.0, temperature_max_c=50.0)  # grading.json's RW- model


def line(**values: float) -> protocol.BmsLine:
    fields = dict(seq=1, voltage_v=52.0, current_a=-49.9, soc_pct=50.0, temperature_c=25.0, capacity_ah=40.0,
                  energy_wh=2000.0, cell_min_mv=3250, cell_max_mv=3260, balancing=0)
    fields.update(values)
    return protocol.BmsLine(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("spread_mv,step,limits,color", [
    (252, 2, MODEL, dc.COLOR_WARN),  # the issue: red at 252 mV while the model accepts 300 and the grade is A
    (200, 2, MODEL, dc.COLOR_OK),
    (301, 2, MODEL, dc.COLOR_ALARM),  # beyond what the verdict accepts
    (400, 3, MODEL, dc.COLOR_WARN),  # near empty cells part: the verdict does not judge it there, never red
    (120, 2, None, dc.COLOR_ALARM),  # no grading model known (unknown serial, grading.json invalid): defaults
])
def test_cell_spread_follows_the_grading_model(spread_mv: int, step: int, limits: Optional[dc.MeasureLimits],
                                               color: str) -> None:
    colors = dc.measure_colors(line(cell_min_mv=3200, cell_max_mv=3200 + spread_mv), step, limits)
    assert colors["balance"] == color


@pytest.mark.parametrize("temperature_c,limits,color", [
    (44.0, MODEL, dc.COLOR_OK),
    (46.2, MODEL, dc.COLOR_WARN),  # within 5 °C of the model's maximum
    (50.5, MODEL, dc.COLOR_ALARM),  # beyond it: the verdict rejects it
    (52.0, None, dc.COLOR_WARN),  # no model: 45..55 °C orange
    (5.0, MODEL, dc.COLOR_WARN),  # cold: as before
])
def test_temperature_follows_the_grading_model(temperature_c: float, limits: Optional[dc.MeasureLimits],
                                               color: str) -> None:
    assert dc.measure_colors(line(temperature_c=temperature_c), 2, limits)["temperature"] == color


@pytest.mark.parametrize("soc_pct,step,color", [
    (0.0, 3, dc.TEXT),  # the issue: "0 %" red at a normal end of discharge
    (3.0, 4, dc.TEXT),  # the storage recharge starts from empty
    (9, protocol.STEP_STOP, dc.COLOR_ALARM),  # a stop's own colours: BancPanel.color_step passes the phase reached
    (15.0, 2, dc.COLOR_ALARM),
    (35.0, 1, dc.COLOR_WARN),
    (80.0, 2, dc.COLOR_OK),
])
def test_soc_is_no_alarm_while_a_phase_empties_the_pack(soc_pct: float, step: int, color: str) -> None:
    assert dc.measure_colors(line(soc_pct=soc_pct), step, MODEL)["soc"] == color
    fill = dc.soc_fill_color(soc_pct, step)
    assert fill == (dc.GAUGE_NEUTRAL_FILL if color == dc.TEXT else color)


@pytest.mark.parametrize("voltage_v,step,color", [
    (41.0, 3, dc.COLOR_OK),  # the discharge goes to the 40 V cut-off on purpose
    (39.5, 3, dc.COLOR_ALARM),  # below it
    (41.0, 2, dc.COLOR_WARN),  # low while charging: look
    (58.4, 2, dc.COLOR_OK),
])
def test_voltage_follows_the_phase(voltage_v: float, step: int, color: str) -> None:
    assert dc.measure_colors(line(voltage_v=voltage_v), step, MODEL)["voltage"] == color


def test_unknown_values_and_plain_ones() -> None:
    colors = dc.measure_colors(line(balancing=1), 2, MODEL)
    assert colors["capacity"] == colors["energy"] == dc.TEXT and colors["balancing"] == dc.COLOR_INFO
    assert dc.level_color(dc.PACK_VOLTAGE_THRESHOLDS_V, None) == dc.MUTED
    assert dc.soc_color(None, 3) == dc.MUTED


def test_the_worker_hands_the_model_limits_and_reads_grading_json_again_when_it_changes(store: Store, banc_home: Path) -> None:
    """Read off the Tk thread (the worker's snapshot carries them); an edited grading.json counts at once."""
    supervisor = SimpleNamespace(is_running=lambda banc: False, reap=lambda: [])
    worker = kiosk_worker.KioskWorker(store, ["banc1"], SimpleNamespace(prompt=lambda: ""), supervisor,  # type: ignore[arg-type]
                                      queue.Queue())
    assert worker.limits_for("RW-ABCD0001") == MODEL  # the project's grading.json
    assert worker.limits_for("XX-0001") is None and worker.limits_for(None) is None  # no model: default colours
    rules = json.loads((REPO_DIR / "grading.json").read_text(encoding="utf-8"))
    rules["models"][0]["cell_spread_max_mv"] = 150
    path = banc_home / "grading.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    assert worker.limits_for("RW-ABCD0001") == dc.MeasureLimits(150.0, 50.0)
    path.write_text("{", encoding="utf-8")  # invalid: no model, the default colours, the kiosk goes on
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert worker.limits_for("RW-ABCD0001") is None
    snapshot = worker.snapshot("banc1", record.BenchEntry("banc1", "occupied", "RW-ABCD0001", 1))
    assert snapshot.limits is None
