"""Test folders in the exact contract format (data.csv, config.json), with what their data must give.

`write_synthetic_test` builds the finished tests that tests/test_report.py checks and that
bench/bench_report.py times at scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from banclfp.infra import storage
from banclfp.recording import record

SERIAL = "RW-TEST0001"

PHASE_SHARES = ((1, 0.05), (2, 0.30), (3, 0.40), (4, 0.20), (5, 0.05))
DISCHARGE_BASE_A = 25.0
DISCHARGE_RIPPLE_A = 5.0
DISCHARGE_PERIOD_S = 600.0


def discharge_current_a(t_in_phase_s: np.ndarray) -> np.ndarray:
    """The known phase-3 profile: -(25 + 5 sin(2πt/600)) A."""
    return -(DISCHARGE_BASE_A + DISCHARGE_RIPPLE_A * np.sin(2 * np.pi * t_in_phase_s / DISCHARGE_PERIOD_S))


def discharge_integral_as(t0_s: float, t1_s: float) -> float:
    """Exact ∫ |i| dt of the phase-3 profile from t0 to t1 (ampere-seconds)."""
    w = 2 * math.pi / DISCHARGE_PERIOD_S
    return DISCHARGE_BASE_A * (t1_s - t0_s) + DISCHARGE_RIPPLE_A / w * (math.cos(w * t0_s) - math.cos(w * t1_s))


@dataclass
class Synthetic:
    """A test folder written by write_synthetic_test and what its data should give."""

    folder: Path
    rows: int
    expected_discharge_ah: float
    stop_s: float
    unix_s: np.ndarray


def write_synthetic_test(
    root: Path,
    rows: int = 6000,
    *,
    interval_s: float = 1.0,
    stop_s: float = 14 * 3600.0,
    esp_error: float = 0.0,
    start: datetime = datetime(2024, 3, 4, 8, 0, tzinfo=record.LOCAL_TZ),
    banc: str = "banc1",
    serial: str = SERIAL,
    finished: bool = True,
    jitter_s: float = 0.05,
    seed: int = 1,
    v1: bool = False,
) -> Synthetic:
    """Write data/bancN/DDMMYYYY-SERIAL/{data.csv,config.json} with phases 1-5 and a stop inside phase 3.

    Phase 3 follows `discharge_current_a`; its exact capacity is returned. config.json's
    capacity_ah is that capacity times (1 + esp_error). `v1`: data.csv of the earlier version (12 columns).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "data" / banc / f"{start:%d%m%Y}-{serial}"
    folder.mkdir(parents=True, exist_ok=True)
    counts = [max(4, int(rows * share)) for _phase, share in PHASE_SHARES]
    counts[2] += rows - sum(counts)
    step = np.concatenate([np.full(c, phase) for (phase, _s), c in zip(PHASE_SHARES, counts)])
    n = step.size
    nominal = np.arange(n) * interval_s
    stop_at = counts[0] + counts[1] + counts[2] // 2  # first row after the stop
    nominal[stop_at:] += stop_s
    unix = start.timestamp() + nominal + rng.uniform(0.0, jitter_s, n)

    current = np.zeros(n)
    p1 = step == 1
    t1 = unix[p1] - unix[p1][0]
    current[p1] = np.where((t1 % 60) < 10, -20.0, np.where((t1 % 60) < 20, 20.0, 0.0))
    current[step == 2] = 50.0
    p3 = np.flatnonzero(step == 3)
    t3_start = unix[p3[0]]
    # The profile is a function of the time spent discharging: it pauses during the stop.
    t3 = unix[p3] - t3_start - np.where(p3 >= stop_at, unix[stop_at] - unix[stop_at - 1], 0.0)
    current[p3] = discharge_current_a(t3)
    current[step == 4] = 20.0
    first, last = p3[0], p3[-1]
    expected_as = discharge_integral_as(t3[0], t3[stop_at - first - 1]) + discharge_integral_as(
        t3[stop_at - first], t3[last - first]
    )
    expected_ah = expected_as / 3600.0

    dt = np.diff(unix, prepend=unix[0])
    dt[stop_at] = 0.0
    esp_ah = np.where(step == 3, -current, 0.0) * dt / 3600.0
    esp_ah = np.cumsum(esp_ah)
    esp_ah[step < 3] = 0.0
    esp_ah[step > 3] = esp_ah[last]
    soc = np.clip(50.0 + np.cumsum(current * dt) / 3600.0 / 1.2, 0.0, 100.0)
    voltage = 48.0 + 6.0 * soc / 100.0 + 0.01 * current
    temperature = 24.0 + 3.0 * np.sin(np.arange(n) / 900.0)
    cell_min = np.round(3000 + 300 * soc / 100.0)
    cell_max = cell_min + 10 + np.round(20 * (soc / 100.0) ** 4)
    balancing = (cell_max - cell_min > 25).astype(int)

    moments = [datetime.fromtimestamp(t, tz=record.LOCAL_TZ).isoformat(timespec="milliseconds") for t in unix.tolist()]
    template = "{},{},{},{:.3f},{:.3f},{:.1f},{:.1f},{:.4f},{:.1f},{:.0f},{:.0f},{}"
    columns = [moments, step.tolist(), range(n), voltage.tolist(), current.tolist(), soc.tolist(),
               temperature.tolist(), esp_ah.tolist(), (esp_ah * 51.2).tolist(), cell_min.tolist(), cell_max.tolist(),
               balancing.tolist()]
    header = record.DATA_CSV_HEADER_V1
    if not v1:
        # The ESP booted 1 h before the first row; received when measured (measured_at = timestamp).
        uptime = np.round((unix - unix[0] + 3600.0) * 1000.0).astype(np.int64)
        template += ",{},{}"
        columns += [uptime.tolist(), moments]
        header = record.DATA_CSV_HEADER
    body = "\n".join(map(template.format, *columns))
    (folder / record.DATA_CSV_FILE).write_text(",".join(header) + "\n" + body + "\n", encoding="ascii")

    end = datetime.fromtimestamp(unix[-1], tz=record.LOCAL_TZ)
    # A config.json without a journal (as the earlier version left them): no pulses, the means alone.
    config = record.TestSummary(
        battery_serial=serial,
        banc=banc,
        current_step=5 if finished else 3,
        first_handle=start.isoformat(timespec="seconds"),
        timestamp_last_update=end.isoformat(timespec="seconds"),
        status=record.TEST_FINISHED if finished else record.TEST_RUNNING,
        end_time=end.isoformat(timespec="seconds") if finished else None,
        capacity_ah=round(expected_ah * (1 + esp_error), 4),
        capacity_wh=round(expected_ah * (1 + esp_error) * 51.2, 3),
        ri_averages={"ri_discharge": 0.012, "ri_charge": 0.011, "diffusion_discharge": 0.004,
                     "diffusion_charge": None},
        ri_counts={"ri_discharge": 3, "ri_charge": 3, "diffusion_discharge": 2, "diffusion_charge": 0},
        ri_temperature_c=15.0,
        rows_count=n,
        rejected_count=2,
        software_version=record.SOFTWARE_VERSION,
    )
    written = config.to_json()
    del written[record.RI_PULSES_KEY]  # the earlier version kept the means alone
    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, written)
    return Synthetic(folder=folder, rows=n, expected_discharge_ah=expected_ah, stop_s=stop_s, unix_s=unix)




def write_finished_record(root: Path, banc: str, serial: str, start: datetime, duration_s: float,
                          capacity_ah: float, grade: str, soh_pct: float) -> Path:
    """A finished, graded test folder as banc.py leaves it, without its data.csv (journal + config.json).

    Many thousands of them make the lab the history index is timed on: what --history and
    --results read is the journal and the summary, never the rows. Plain writes (no fsync).
    """
    from banclfp.recording import record

    folder = Path(root) / "data" / banc / record.folder_name(serial, start.date())
    folder.mkdir(parents=True, exist_ok=True)
    end = datetime.fromtimestamp(start.timestamp() + duration_s, tz=record.LOCAL_TZ)
    verdict = record.Verdict(grade, soh_pct, "LFP 16S 100 Ah", "bench",
                             (record.Check("soh", soh_pct, 70.0, soh_pct >= 70.0),
                              record.Check("ri_discharge", 0.021, 0.04, True)), "synthétique")
    begun, ended = record.event_time(start), record.event_time(end)
    journal = [
        record.encode_event(record.StartEvent(begun, serial, banc, record.iso(start),
                                              software_version=record.SOFTWARE_VERSION)),
        *(record.encode_event(record.StepEvent(begun, step)) for step in (2, 3, 4)),
        record.encode_event(record.StepEvent(ended, 5)),
        record.encode_event(record.VerdictEvent(ended, verdict)),
    ]
    (folder / record.EVENTS_FILE).write_bytes(b"".join(journal))
    summary = record.TestSummary.from_json(record.apply_state(
        record.new_summary(banc, serial, record.iso(start)),
        record.fold_events(record.parse_events(b"".join(journal))[0])))
    summary = replace(summary, capacity_ah=capacity_ah, capacity_wh=round(capacity_ah * 51.2, 3),
                      ri_averages={**summary.ri_averages, "ri_discharge": 0.021},
                      ri_counts={**summary.ri_counts, "ri_discharge": 3}, ri_temperature_c=25.0)
    (folder / record.TEST_CONFIG_FILE).write_text(json.dumps(summary.to_json()), encoding="utf-8")
    return folder
