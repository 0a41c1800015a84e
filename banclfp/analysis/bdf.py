"""Battery Data Format (BDF) export of a test: one CSV row per data.csv row, and its metadata sidecar.

Columns and labels follow the Battery Data Alliance's ontology (1.3.0); capacities and energies
are our own coulomb counting (`analysis.coulomb_count`), never decimated.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from banclfp.analysis.measures import Summary, TestData, coulomb_count
from banclfp.infra import storage
from banclfp.recording import record

# Battery Data Alliance column labels (BDF ontology 1.3.0): label -> machine-readable name.
BDF_LABELS: dict[str, str] = {
    "Test Time / s": "test_time_second",
    "Unix Time / s": "unix_time_second",
    "Voltage / V": "voltage_volt",
    "Current / A": "current_ampere",
    "Step Count / 1": "step_count",
    "Step ID": "step_id",
    "Surface Temperature T1 / degC": "temperature_t1_celsius",
    "Charging Capacity / Ah": "charging_capacity_ah",
    "Discharging Capacity / Ah": "discharging_capacity_ah",
    "Charging Energy / Wh": "charging_energy_wh",
    "Discharging Energy / Wh": "discharging_energy_wh",
}
BDF_HEADER: tuple[str, ...] = tuple(BDF_LABELS)
_BDF_ROW_FORMAT = "%.3f,%.3f,%.4f,%.4f,%d,%d,%.2f,%.6f,%.6f,%.4f,%.4f"
_BDF_CHUNK_ROWS = 100_000


def bdf_metadata_path(bdf_path: Path) -> Path:
    """Sidecar of a BDF file: x.bdf.csv, x.csv, x.bdf and x all give x.bdf.metadata.json."""
    name = Path(bdf_path).name
    for suffix in (".csv", ".bdf"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return Path(bdf_path).with_name(f"{name}.bdf.metadata.json")


def bdf_step_count(step: np.ndarray) -> np.ndarray:
    """BDF "Step Count": 1, then +1 at every change of phase (a resume in the same phase is the same step)."""
    if step.size == 0:
        return np.zeros(0, dtype=np.int64)
    changes = np.concatenate(([0], (step[1:] != step[:-1]).astype(np.int64)))
    return 1 + np.cumsum(changes)


def bdf_columns(data: TestData, gap_s: float) -> dict[str, np.ndarray]:
    """The BDF columns (label -> array), one value per data row; capacities and energies by coulomb counting."""
    count = coulomb_count(data, gap_s)
    step = data.step
    start = data.unix_s[0] if len(data) else 0.0
    return {
        "Test Time / s": data.unix_s - start,
        "Unix Time / s": data.unix_s,
        "Voltage / V": data["voltage_v"],
        "Current / A": data["current_a"],
        "Step Count / 1": bdf_step_count(step),
        "Step ID": step,
        "Surface Temperature T1 / degC": data["temperature_c"],
        "Charging Capacity / Ah": count.charge_ah,
        "Discharging Capacity / Ah": count.discharge_ah,
        "Charging Energy / Wh": count.charge_wh,
        "Discharging Energy / Wh": count.discharge_wh,
    }


def _json_time(moment: Optional[float | datetime]) -> Optional[str]:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), tz=record.LOCAL_TZ)
    return record.iso(moment, millis=True)


def bdf_metadata(summary: Summary, bdf_path: Path, rows: int, sha256: str, source: Optional[Path]) -> dict[str, object]:
    """The sidecar's content: identity of the battery and test, results, and how the columns were made."""
    return {
        "format": "Battery Data Format (BDF), CSV",
        "data_file": Path(bdf_path).name,
        "data_file_sha256": sha256,
        "rows": rows,
        "columns": [{"label": label, "machine_readable_name": BDF_LABELS[label]} for label in BDF_HEADER],
        "battery_serial": summary.serial,
        "bench": summary.banc,
        "start_time": _json_time(summary.first_handle) or _json_time(summary.first_row_s),
        "first_row_time": _json_time(summary.first_row_s),
        "last_row_time": _json_time(summary.last_row_s),
        "end_time": _json_time(summary.end_time),
        "status": summary.status,
        "results": {
            "capacity_ah_esp": summary.esp_capacity_ah,
            "capacity_wh_esp": summary.esp_capacity_wh,
            "capacity_ah_coulomb_counting_phase3": summary.counted_capacity_ah,
            "energy_wh_coulomb_counting_phase3": summary.counted_energy_wh,
            "capacity_difference_pct": summary.capacity_diff_pct,
            "capacity_difference_flag": summary.capacity_flag,
            "ri_temperature_c": summary.ri_temperature_c,
            **{f"{r.key}_ohm": r.raw_ohm for r in summary.resistances},
            **{f"{r.key}_25c_ohm": r.at_25c_ohm for r in summary.resistances},
            **{f"{r.key}_count": r.count for r in summary.resistances},
            "phase_duration_s": {str(k): v for k, v in sorted(summary.phase_active_s.items())},
            "stops": [
                {"start": _json_time(s.t0_s), "end": _json_time(s.t1_s), "phase_before": s.step_before,
                 "phase_after": s.step_after}
                for s in summary.stops
            ],
        },
        "conventions": {
            "current_sign": "positive = charging the battery under test",
            "time_source": "measurement time of each BMS line (measured_at: the ESP's uptime plus its clock offset)",
            "step_id": "phase of the test: 1 Ri/diffusion, 2 charge, 3 discharge, 4 storage recharge, 5 finished",
            "step_count": "1, +1 at each change of phase (a resume after a stop keeps its step)",
            "capacity_energy": (
                "cumulative, trapezoidal integration of current (and voltage x current) over time, split at zero "
                f"crossings; silences longer than {summary.gap_s:g} s (stops) are not integrated"
            ),
        },
        "source": {"data_csv": str(source) if source else None, "skipped_lines": summary.skipped_lines},
        "software": {"name": "banc-lfp report.py", "version": record.SOFTWARE_VERSION},
        "generated_at": record.now_local().isoformat(timespec="seconds"),
    }


def write_bdf(path: Path, data: TestData, summary: Summary, source: Optional[Path] = None) -> Path:
    """Write the BDF CSV and its metadata sidecar (both atomically); return the sidecar path."""
    columns = bdf_columns(data, summary.gap_s)
    values = [columns[label] for label in BDF_HEADER]
    digest = hashlib.sha256()

    def write(fh: BinaryIO) -> None:
        head = (",".join(BDF_HEADER) + "\n").encode("utf-8")
        digest.update(head)
        fh.write(head)
        for start in range(0, len(data), _BDF_CHUNK_ROWS):
            stop = start + _BDF_CHUNK_ROWS
            lists = [column[start:stop].tolist() for column in values]
            chunk = ("\n".join([_BDF_ROW_FORMAT % row for row in zip(*lists)]) + "\n").encode("ascii")
            digest.update(chunk)
            fh.write(chunk)

    storage.atomic_write(Path(path), write)
    sidecar = bdf_metadata_path(path)
    storage.atomic_write_json(sidecar, bdf_metadata(summary, path, len(data), digest.hexdigest(), source))
    return sidecar
