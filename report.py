"""Charts, summary and Battery Data Format export of one test (contract §1, §4, §5).

    python report.py TEST_FOLDER [--png FILE] [--bdf FILE]

Without an option it prints a plain-text summary. The core (loading `data.csv`, the
summary, coulomb counting, decimation, BDF columns) is pure numpy and never imports
matplotlib or customtkinter; plotting imports them lazily. `show_charts(master, folder)`
opens the same figure in a kiosk window (CustomTkinter + FigureCanvasTkAgg), loading the
data in a worker thread so that the kiosk never freezes on a long test.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import os
import queue
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

import formatting
import protocol
import utils
from formatting import format_duration, format_milliohm

if TYPE_CHECKING:  # matplotlib is imported lazily at run time
    from matplotlib.axes import Axes

logger = logging.getLogger("banc.report")

CAPACITY_FLAG_PCT = 2.0
"""Our coulomb count and the ESP's capacity_ah differing by more than this is flagged."""

DISCHARGE_PHASE = 3
MIN_GAP_S = 30.0
"""Default shortest silence taken for a stop (the shell passes BANC_BMS_TIMEOUT_S)."""
GAP_MEDIAN_FACTOR = 10.0
"""A silence of more than this many typical sampling intervals is also a stop."""

PNG_SIZE_IN = (16.0, 10.0)
PNG_DPI = 100
DISPLAY_BUCKETS = 1600
"""Min/max buckets per series for display: about one per horizontal pixel."""

_CHUNK_BYTES = 1 << 20  # parse data.csv by slices: cache-friendly, and other threads run between slices
_TS_WIDTH = 40  # bytes kept per timestamp field; the canonical form has 29
_MAX_LINE_NOTES = 5
_MAX_DISPLAY_RUNS = 2000
_MAX_HATCHED_STOPS = 300

NUMERIC_COLUMNS: tuple[str, ...] = utils.DATA_CSV_HEADER[1:]
_HEADER_BYTES = ",".join(utils.DATA_CSV_HEADER).encode("ascii")
_ROW_DTYPE = np.dtype([("timestamp", f"S{_TS_WIDTH}")] + [(name, "f8") for name in NUMERIC_COLUMNS])

PHASE_COLORS = formatting.PHASE_COLORS

STATUS_LABELS = {utils.TEST_RUNNING: "en cours", utils.TEST_FINISHED: "terminé", utils.TEST_STOPPED: "arrêté",
                 utils.TEST_ABANDONED: "abandonné"}
RESISTANCE_LABELS: dict[str, str] = {
    "ri_discharge": "Ri décharge",
    "ri_charge": "Ri charge",
    "diffusion_discharge": "Diffusion décharge",
    "diffusion_charge": "Diffusion charge",
}

# Battery Data Alliance column labels (BDF ontology 1.3.0): label -> machine-readable name.
BDF_LABELS: dict[str, str] = {
    "Test Time / s": "test_time_second",
    "Unix Time / s": "unix_time_second",
    "Voltage / V": "voltage_volt",
    "Current / A": "current_ampere",
    "Step Count / 1": "step_count",
    "Step ID": "step_id",
    "Temperature T1 / degC": "temperature_t1_celsius",
    "Charging Capacity / Ah": "charging_capacity_ah",
    "Discharging Capacity / Ah": "discharging_capacity_ah",
    "Charging Energy / Wh": "charging_energy_wh",
    "Discharging Energy / Wh": "discharging_energy_wh",
}
BDF_HEADER: tuple[str, ...] = tuple(BDF_LABELS)
_BDF_ROW_FORMAT = "%.3f,%.3f,%.4f,%.4f,%d,%d,%.2f,%.6f,%.6f,%.4f,%.4f"
_BDF_CHUNK_ROWS = 100_000


def _darker(color: str, factor: float = 0.72) -> str:
    """A darker shade of "#rrggbb", for text on white."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(c * factor) for c in (r, g, b)))


class ReportError(ValueError):
    """The test folder cannot be reported on (missing folder, no data.csv, wrong header)."""


# =========================================================================== loading data.csv


@dataclass
class TestData:
    """The rows of a data.csv as numpy arrays (file order), and what was skipped."""

    __test__ = False  # not a pytest test class, despite the name

    unix_s: np.ndarray
    columns: dict[str, np.ndarray]
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return int(self.unix_s.shape[0])

    @property
    def step(self) -> np.ndarray:
        """Phase of each row as integers."""
        return self.columns["step"].astype(np.int64)


_TS_DIGITS: tuple[tuple[int, int], ...] = (
    (0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 23), (24, 26), (27, 29)
)  # year, month, day, hour, minute, second, millisecond, offset hours, offset minutes
_TS_SEPARATORS: tuple[tuple[int, bytes], ...] = (
    (4, b"-"), (7, b"-"), (10, b"T"), (13, b":"), (16, b":"), (19, b"."), (26, b":")
)
_TS_WEIGHTS = np.zeros((_TS_WIDTH, len(_TS_DIGITS)), dtype=np.float32)
for _col, (_a, _b) in enumerate(_TS_DIGITS):
    for _k in range(_a, _b):
        _TS_WEIGHTS[_k, _col] = 10 ** (_b - 1 - _k)
_TS_DIGIT_POSITIONS = np.array([k for a, b in _TS_DIGITS for k in range(a, b)])


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorized, H. Hinnant's algorithm)."""
    year = year - (month <= 2)
    era = np.floor_divide(year, 400)
    yoe = year - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _parse_one_timestamp(raw: bytes) -> float:
    text = raw.decode("ascii", errors="strict").strip()
    if len(text) >= _TS_WIDTH:
        raise ValueError("timestamp too long")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=utils.LOCAL_TZ)
    return moment.timestamp()


def parse_iso_timestamps(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds of ISO 8601 byte strings, and a mask of the ones that parsed.

    The canonical form `YYYY-MM-DDTHH:MM:SS.mmm+HH:MM` is decoded with array arithmetic;
    anything else goes through `datetime.fromisoformat` (naive times are Paris time).
    """
    stamps = np.ascontiguousarray(stamps, dtype=f"S{_TS_WIDTH}")
    count = stamps.shape[0]
    if count == 0:
        return np.zeros(0), np.ones(0, dtype=bool)
    raw = stamps.view(np.uint8).reshape(count, _TS_WIDTH)
    canonical = (raw[:, 28] != 0) & (raw[:, 29] == 0) & ((raw[:, 23] == ord("+")) | (raw[:, 23] == ord("-")))
    for position, char in _TS_SEPARATORS:
        canonical &= raw[:, position] == char[0]
    digits = raw[:, _TS_DIGIT_POSITIONS]
    canonical &= ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    values = (raw.astype(np.float32) - ord("0")) @ _TS_WEIGHTS  # exact: every field < 2**24
    year, month, day, hour, minute, second, milli, off_h, off_m = values.astype(np.int64).T
    sign = np.where(raw[:, 23] == ord("+"), 1, -1)
    canonical &= (
        (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour <= 23)
        & (minute <= 59) & (second <= 60) & (off_h <= 23) & (off_m <= 59)
    )
    seconds = (
        _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        - sign * (off_h * 3600 + off_m * 60)
    )
    unix = seconds + milli / 1000.0
    valid = canonical.copy()
    for index in np.flatnonzero(~canonical):
        try:
            unix[index] = _parse_one_timestamp(bytes(stamps[index]))
            valid[index] = True
        except (ValueError, UnicodeDecodeError, OverflowError):
            valid[index] = False
    return unix, valid


def _parse_line(line: bytes) -> Optional[tuple[Any, ...]]:
    """One data.csv line as a row of _ROW_DTYPE, or None when it is not a valid row."""
    parts = line.split(b",")
    if len(parts) != len(utils.DATA_CSV_HEADER):
        return None
    try:
        return (parts[0].strip(),) + tuple(float(part) for part in parts[1:])
    except ValueError:
        return None


def _parse_slice(text: bytes) -> np.ndarray:
    """Rows of a slice of complete lines: numpy's C parser, or line by line when a line is bad.

    A bad line becomes a row of NaN (dropped later as invalid), so row k is still line k of
    the slice and the notes can give exact line numbers.
    """
    try:
        return np.atleast_1d(np.loadtxt(io.BytesIO(text), delimiter=",", dtype=_ROW_DTYPE, comments=None, ndmin=1))
    except ValueError:
        pass
    rows = []
    for line in text.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        parsed = _parse_line(line)
        rows.append(parsed if parsed is not None else (b"",) + (math.nan,) * len(NUMERIC_COLUMNS))
    return np.array(rows, dtype=_ROW_DTYPE)


def parse_data_csv(raw: bytes) -> TestData:
    """Parse the bytes of a data.csv (pure): header checked, torn last line and bad lines skipped with a note."""
    notes: list[str] = []
    header_end = raw.find(b"\n")
    header = (raw if header_end < 0 else raw[:header_end]).rstrip(b"\r").lstrip(b"\xef\xbb\xbf")
    if header != _HEADER_BYTES:
        if not header.strip():
            raise ReportError("data.csv est vide (pas d'en-tête)")
        raise ReportError(
            "data.csv : en-tête inattendu "
            f"({header[:80].decode('ascii', 'replace')!r}, attendu {_HEADER_BYTES.decode()!r})"
        )
    body_start = len(raw) if header_end < 0 else header_end + 1
    body_end = raw.rfind(b"\n") + 1
    skipped = 0
    if body_end < body_start:
        body_end = body_start
    if body_end < len(raw) and raw[body_end:].strip():
        # Without its newline a line may be cut anywhere (even inside a number): never trust it.
        skipped += 1
        notes.append("dernière ligne incomplète ignorée (écriture en cours ou arrêt brutal)")

    if raw.find(b"\r", body_start, body_end) >= 0 or raw.find(b"\n\n", body_start, body_end) >= 0:
        # Unusual line endings or blank lines: normalise once so that rows map to line numbers.
        lines = [line.rstrip(b"\r") for line in raw[body_start:body_end].split(b"\n")]
        line_numbers_all = [i + 2 for i, line in enumerate(lines) if line]
        body = b"\n".join(line for line in lines if line) + b"\n"
        start, stop = 0, (len(body) if len(body) > 1 else 0)  # b"\n" alone: only blank lines
        line_numbers = np.array(line_numbers_all, dtype=np.int64)
    else:
        # Offsets into raw rather than a copy of it: no 100 MB copy made while holding the GIL.
        body, start, stop = raw, body_start, body_end
        line_numbers = None

    stamps: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in NUMERIC_COLUMNS}
    while start < stop:
        end = body.find(b"\n", min(start + _CHUNK_BYTES, stop - 1), stop) + 1 or stop
        # Slice by slice: each slice's columns are extracted while its rows are still in the CPU cache.
        rows = _parse_slice(body[start:end])
        unix_part, valid_part = parse_iso_timestamps(rows["timestamp"])
        for name in NUMERIC_COLUMNS:
            column = np.ascontiguousarray(rows[name])
            valid_part &= np.isfinite(column)
            parts[name].append(column)
        stamps.append(unix_part)
        valids.append(valid_part)
        start = end
    unix = np.concatenate(stamps) if stamps else np.zeros(0)
    valid = np.concatenate(valids) if valids else np.zeros(0, dtype=bool)
    all_columns = {name: np.concatenate(parts[name]) if stamps else np.zeros(0) for name in NUMERIC_COLUMNS}
    if line_numbers is None:
        line_numbers = np.arange(2, unix.size + 2, dtype=np.int64)

    bad = np.flatnonzero(~valid)
    if bad.size:
        skipped += int(bad.size)
        shown = ", ".join(str(int(line_numbers[i])) for i in bad[:_MAX_LINE_NOTES])
        more = f" (et {bad.size - _MAX_LINE_NOTES} autres)" if bad.size > _MAX_LINE_NOTES else ""
        notes.append(f"{bad.size} ligne(s) illisible(s) ignorée(s) : ligne {shown}{more}")
    columns = {name: column[valid] for name, column in all_columns.items()} if bad.size else all_columns
    if bad.size:
        unix = unix[valid]
    if unix.size > 1 and np.any(np.diff(unix) < 0):
        notes.append(f"horodatage non croissant {int(np.sum(np.diff(unix) < 0))} fois (horloge remise à l'heure ?)")
    return TestData(unix_s=unix, columns=columns, skipped_lines=skipped, notes=notes)


def load_test_data(folder: Path) -> TestData:
    """Read and parse data.csv of a test folder (ReportError when missing or not a data.csv)."""
    path = Path(folder) / utils.DATA_CSV_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path} n'existe pas") from None
    except OSError as exc:
        raise ReportError(f"{path} illisible : {exc}") from exc
    return parse_data_csv(raw)


# =========================================================================== pure computations


def stop_gap_s(unix_s: np.ndarray, min_gap_s: float = MIN_GAP_S) -> float:
    """Shortest silence between two rows taken for a stop: max(min_gap_s, 10 x the median interval)."""
    if unix_s.size < 3:
        return float(min_gap_s)
    steps = np.diff(unix_s)
    steps = steps[steps > 0]
    if steps.size == 0:
        return float(min_gap_s)
    return float(max(min_gap_s, GAP_MEDIAN_FACTOR * float(np.median(steps))))


def continuous_intervals(unix_s: np.ndarray, gap_s: float) -> np.ndarray:
    """Mask of the intervals between consecutive rows that are measured time (0 < dt <= gap_s)."""
    dt = np.diff(unix_s)
    return (dt > 0) & (dt <= gap_s)


def split_trapezoid(y: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid areas of the positive and of the negative part (as magnitudes) of y, per interval.

    y is linear between samples; an interval where y changes sign is split at its zero,
    so a charge/discharge transition is attributed exactly.
    """
    a, b = y[:-1], y[1:]
    positive = np.where((a >= 0) & (b >= 0), (a + b) * 0.5, 0.0)
    negative = np.where((a <= 0) & (b <= 0), -(a + b) * 0.5, 0.0)
    crossing = (a * b) < 0
    if np.any(crossing):
        ac, bc = a[crossing], b[crossing]
        span = np.abs(ac) + np.abs(bc)
        pos_part = np.where(ac > 0, ac * ac, bc * bc) / (2 * span)
        neg_part = np.where(ac < 0, ac * ac, bc * bc) / (2 * span)
        positive[crossing] = pos_part
        negative[crossing] = neg_part
    return positive * dt, negative * dt


@dataclass(frozen=True)
class CoulombCount:
    """Cumulative capacities and energies per row (coulomb counting over receipt timestamps)."""

    charge_ah: np.ndarray
    discharge_ah: np.ndarray
    charge_wh: np.ndarray
    discharge_wh: np.ndarray
    discharge_increments_ah: np.ndarray  # per interval (len n-1), for phase sums
    discharge_increments_wh: np.ndarray


def coulomb_count(data: TestData, gap_s: float) -> CoulombCount:
    """Integrate current (Ah) and power (Wh) by the trapezoidal rule; stops (gaps) add nothing."""
    n = len(data)
    if n < 2:
        zeros = np.zeros(n)
        return CoulombCount(zeros, zeros, zeros, zeros, np.zeros(0), np.zeros(0))
    dt = np.diff(data.unix_s)
    dt = np.where(continuous_intervals(data.unix_s, gap_s), dt, 0.0)
    current = data["current_a"]
    power = current * data["voltage_v"]
    charge_as, discharge_as = split_trapezoid(current, dt)
    charge_ws, discharge_ws = split_trapezoid(power, dt)

    def cumulative(increments: np.ndarray, scale: float) -> np.ndarray:
        out = np.empty(n)
        out[0] = 0.0
        np.cumsum(increments / scale, out=out[1:])
        return out

    return CoulombCount(
        charge_ah=cumulative(charge_as, 3600.0),
        discharge_ah=cumulative(discharge_as, 3600.0),
        charge_wh=cumulative(charge_ws, 3600.0),
        discharge_wh=cumulative(discharge_ws, 3600.0),
        discharge_increments_ah=discharge_as / 3600.0,
        discharge_increments_wh=discharge_ws / 3600.0,
    )


@dataclass(frozen=True)
class Segment:
    """A run of rows in one phase without a stop: rows i0..i1, shaded from t0_s to t1_s."""

    step: int
    i0: int
    i1: int
    t0_s: float
    t1_s: float


@dataclass(frozen=True)
class Stop:
    """A silence longer than the stop threshold between two rows (end-of-day stop or interruption)."""

    t0_s: float
    t1_s: float
    step_before: int
    step_after: int

    @property
    def duration_s(self) -> float:
        """Length of the silence in seconds."""
        return self.t1_s - self.t0_s


def find_segments(unix_s: np.ndarray, step: np.ndarray, gap_s: float) -> tuple[list[Segment], list[Stop]]:
    """Split the rows into phase segments and stops (a stop is any silence longer than gap_s)."""
    n = unix_s.size
    if n == 0:
        return [], []
    dt = np.diff(unix_s)
    is_gap = dt > gap_s
    breaks = np.flatnonzero((step[1:] != step[:-1]) | is_gap | (dt < 0))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [n - 1]))
    segments = []
    for i0, i1 in zip(starts.tolist(), ends.tolist()):
        continuous_next = i1 + 1 < n and 0 <= dt[i1] <= gap_s
        t1 = unix_s[i1 + 1] if continuous_next else unix_s[i1]
        segments.append(Segment(int(step[i0]), i0, i1, float(unix_s[i0]), float(t1)))
    stops = [
        Stop(float(unix_s[i]), float(unix_s[i + 1]), int(step[i]), int(step[i + 1]))
        for i in np.flatnonzero(is_gap).tolist()
    ]
    return segments, stops


@dataclass(frozen=True)
class Resistance:
    """One Ri/diffusion result: mean as measured and brought to 25 °C."""

    key: str
    label: str
    raw_ohm: Optional[float]
    at_25c_ohm: Optional[float]
    count: int


@dataclass
class Summary:
    """Everything the text summary, the chart panel and the BDF metadata show."""

    serial: str
    banc: str
    status: str
    current_step: Optional[int]
    first_handle: Optional[datetime]
    end_time: Optional[datetime]
    first_row_s: Optional[float]
    last_row_s: Optional[float]
    rows: int
    skipped_lines: int
    rejected_count: Optional[int]
    gap_s: float
    phase_active_s: dict[int, float]
    segments: list[Segment]
    stops: list[Stop]
    esp_capacity_ah: Optional[float]
    esp_capacity_wh: Optional[float]
    counted_capacity_ah: Optional[float]
    counted_energy_wh: Optional[float]
    capacity_diff_pct: Optional[float]
    capacity_flag: bool
    total_charge_ah: float
    total_discharge_ah: float
    resistances: list[Resistance]
    ri_temperature_c: Optional[float]
    voltage_range_v: Optional[tuple[float, float]]
    temperature_range_c: Optional[tuple[float, float]]
    max_cell_spread_mv: Optional[float]
    notes: list[str] = field(default_factory=list)

    @property
    def stopped_s(self) -> float:
        """Total length of the stops."""
        return float(sum(stop.duration_s for stop in self.stops))

    @property
    def wall_s(self) -> float:
        """Time from the first to the last row."""
        if self.first_row_s is None or self.last_row_s is None:
            return 0.0
        return self.last_row_s - self.first_row_s


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


_FOLDER_RE = re.compile(r"^\d{8}-(?P<serial>RW-[A-Za-z0-9]{4,32})(?:-\d+)?$")


def identity_from_folder(folder: Path) -> tuple[str, str]:
    """Serial and bench guessed from data/bancN/DDMMYYYY-SERIAL (for a folder without config.json)."""
    folder = Path(folder)
    match = _FOLDER_RE.match(folder.name)
    serial = match.group("serial") if match else folder.name
    banc = folder.parent.name.lower() if re.fullmatch(r"(?i)banc[0-9]+", folder.parent.name) else "?"
    return serial, banc


def compute_summary(
    data: TestData, config: dict[str, Any], gap_s: float, correct: Callable[[float, Optional[float]], float],
    folder: Optional[Path] = None,
) -> Summary:
    """Summary of a test from its rows and its config.json (pure: `correct` brings an Ri to 25 °C)."""
    notes = list(data.notes)
    serial, banc = identity_from_folder(folder) if folder is not None else ("?", "?")
    serial = str(config.get("battery_serial") or serial)
    banc = str(config.get("banc") or banc)
    n = len(data)
    step = data.step
    segments, stops = find_segments(data.unix_s, step, gap_s)

    phase_active_s: dict[int, float] = {}
    counted_ah = counted_wh = None
    total_charge = total_discharge = 0.0
    if n >= 2:
        dt = np.diff(data.unix_s)
        continuous = continuous_intervals(data.unix_s, gap_s)
        for phase in np.unique(step).tolist():
            phase_active_s[int(phase)] = float(dt[continuous & (step[:-1] == phase)].sum())
        count = coulomb_count(data, gap_s)
        total_charge = float(count.charge_ah[-1])
        total_discharge = float(count.discharge_ah[-1])
        in_discharge = (step[:-1] == DISCHARGE_PHASE) & (step[1:] == DISCHARGE_PHASE)
        if in_discharge.any():
            counted_ah = float(count.discharge_increments_ah[in_discharge].sum())
            counted_wh = float(count.discharge_increments_wh[in_discharge].sum())
    elif n == 1:
        phase_active_s[int(step[0])] = 0.0

    esp_ah = _number(config.get("capacity_ah"))
    esp_wh = _number(config.get("capacity_wh"))
    if esp_ah is None and n:
        esp_ah = float(np.max(data["capacity_ah"]))  # config.json without it: the ESP's last word in data.csv
        esp_wh = float(np.max(data["energy_wh"]))
    diff_pct = None
    if counted_ah is not None and esp_ah:
        diff_pct = (counted_ah - esp_ah) / esp_ah * 100.0
    flag = diff_pct is not None and abs(diff_pct) > CAPACITY_FLAG_PCT

    ri_temperature = _number(config.get("ri_temperature_c"))
    resistances = []
    for key in protocol.RI_KEYS:
        raw = _number(config.get(f"{key}_average"))
        at_25 = None
        if raw is not None:
            try:
                at_25 = correct(raw, ri_temperature)
            except (ValueError, OSError) as exc:  # a broken temperature_coefficients.json: say so, keep the raw value
                notes.append(f"correction à 25 °C impossible : {exc}")
        resistances.append(Resistance(key, RESISTANCE_LABELS.get(key, key), raw, at_25, _count(config.get(f"{key}_count"))))

    rejected = config.get("rejected_count")
    spread = data["cell_max_mv"] - data["cell_min_mv"] if n else None
    return Summary(
        serial=serial,
        banc=banc,
        status=str(config.get("status") or "?"),
        current_step=_count(config.get("current_step")) or None,
        first_handle=utils.parse_time(config.get("first_handle")),
        end_time=utils.parse_time(config.get("end_time")),
        first_row_s=float(data.unix_s[0]) if n else None,
        last_row_s=float(data.unix_s[-1]) if n else None,
        rows=n,
        skipped_lines=data.skipped_lines,
        rejected_count=_count(rejected) if _number(rejected) is not None else None,
        gap_s=gap_s,
        phase_active_s=phase_active_s,
        segments=segments,
        stops=stops,
        esp_capacity_ah=esp_ah,
        esp_capacity_wh=esp_wh,
        counted_capacity_ah=counted_ah,
        counted_energy_wh=counted_wh,
        capacity_diff_pct=diff_pct,
        capacity_flag=flag,
        total_charge_ah=total_charge,
        total_discharge_ah=total_discharge,
        resistances=resistances,
        ri_temperature_c=ri_temperature,
        voltage_range_v=(float(data["voltage_v"].min()), float(data["voltage_v"].max())) if n else None,
        temperature_range_c=(float(data["temperature_c"].min()), float(data["temperature_c"].max())) if n else None,
        max_cell_spread_mv=float(spread.max()) if spread is not None else None,
        notes=notes,
    )


# =========================================================================== text


def format_time(moment: Optional[float | datetime]) -> str:
    """Paris time dd/mm/yyyy HH:MM:SS of a unix time or datetime ("—" when unknown)."""
    if moment is None:
        return "—"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), tz=UTC)
    return moment.astimezone(utils.LOCAL_TZ).strftime("%d/%m/%Y %H:%M:%S")


def _fmt(value: Optional[float], pattern: str, unit: str = "") -> str:
    return "—" if value is None else f"{pattern.format(value)}{unit}"


def phase_name(step: int) -> str:
    """French name of a phase ("Charge"...), or "phase N" for an unexpected value."""
    return protocol.PHASE_NAMES.get(step, f"phase {step}")


def capacity_flag_text(summary: Summary) -> str:
    """The warning line shown when the coulomb count and the ESP differ by more than 2 %."""
    return (
        f"ATTENTION : écart de {summary.capacity_diff_pct:+.2f} % (> {CAPACITY_FLAG_PCT:g} %) entre le comptage "
        "coulométrique et la capacité de l'ESP"
    )


def format_summary(summary: Summary, folder: Optional[Path] = None) -> str:
    """The plain-text summary printed by `report.py TEST_FOLDER`."""
    status = STATUS_LABELS.get(summary.status, summary.status)
    lines = [f"Test {summary.serial} — {summary.banc} — {status}"]
    if folder is not None:
        lines.append(f"Dossier : {folder}")
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
    lines.append(f"Arrêts (silences > {summary.gap_s:g} s) : {len(summary.stops)}")
    for stop in summary.stops:
        lines.append(
            f"  {format_time(stop.t0_s)} -> {format_time(stop.t1_s)} ({format_duration(stop.duration_s)}), "
            f"phase {stop.step_before} -> {stop.step_after}"
        )
    lines.append("")
    lines.append("Capacité (décharge, phase 3)")
    lines.append(
        f"  ESP (config.json)          : {_fmt(summary.esp_capacity_ah, '{:.3f}', ' Ah')}   "
        f"{_fmt(summary.esp_capacity_wh, '{:.1f}', ' Wh')}"
    )
    lines.append(
        f"  Comptage coulométrique     : {_fmt(summary.counted_capacity_ah, '{:.3f}', ' Ah')}   "
        f"{_fmt(summary.counted_energy_wh, '{:.1f}', ' Wh')}"
    )
    lines.append(f"  Écart                      : {_fmt(summary.capacity_diff_pct, '{:+.2f}', ' %')}")
    if summary.capacity_flag:
        lines.append(f"  {capacity_flag_text(summary)}")
    lines.append(
        f"  Sur tout le test           : {summary.total_charge_ah:.3f} Ah chargés, "
        f"{summary.total_discharge_ah:.3f} Ah déchargés"
    )
    lines.append("")
    temperature = "inconnue" if summary.ri_temperature_c is None else f"{summary.ri_temperature_c:g} °C"
    lines.append(f"Résistances (mΩ)  mesurée à 25 °C  n   [mesure à {temperature}]")
    for item in summary.resistances:
        lines.append(f"  {item.label:<20} {format_milliohm(item.raw_ohm):>8} {format_milliohm(item.at_25c_ohm):>8} {item.count:>3}")
    lines.append("")
    if summary.voltage_range_v:
        lines.append(f"Tension             : {summary.voltage_range_v[0]:.2f} à {summary.voltage_range_v[1]:.2f} V")
    if summary.temperature_range_c:
        lines.append(
            f"Température         : {summary.temperature_range_c[0]:.1f} à {summary.temperature_range_c[1]:.1f} °C"
        )
    if summary.max_cell_spread_mv is not None:
        lines.append(f"Écart cellules max  : {summary.max_cell_spread_mv:.0f} mV")
    if summary.notes:
        lines.append("")
        lines.append("Remarques")
        lines.extend(f"  - {note}" for note in summary.notes)
    return "\n".join(lines) + "\n"


PANEL_RED, PANEL_TEXT, PANEL_GREY = "#c0392b", "#222222", "#555555"
_SHORT_PHASE = {4: "Recharge stock."}
_SHORT_RESISTANCE = {"diffusion_discharge": "Diff. décharge", "diffusion_charge": "Diff. charge"}


def panel_lines(summary: Summary) -> list[tuple[str, str]]:
    """(text, colour) lines of the results panel beside the charts (at most ~29 characters each)."""
    red, black, grey = PANEL_RED, PANEL_TEXT, PANEL_GREY
    out: list[tuple[str, str]] = [("Résultats", black)]
    out.append((f"{'Capacité':<11}{'Ah':>8}{'Wh':>8}", grey))
    out.append((f"{'ESP':<11}{_fmt(summary.esp_capacity_ah, '{:.2f}'):>8}{_fmt(summary.esp_capacity_wh, '{:.0f}'):>8}",
                black))
    out.append((f"{'Compté ph.3':<11}{_fmt(summary.counted_capacity_ah, '{:.2f}'):>8}"
                f"{_fmt(summary.counted_energy_wh, '{:.0f}'):>8}", black))
    out.append((f"{'Écart':<11}{_fmt(summary.capacity_diff_pct, '{:+.2f}', ' %'):>10}",
                red if summary.capacity_flag else black))
    if summary.capacity_flag:
        out.append((f"ÉCART > {CAPACITY_FLAG_PCT:g} % : à vérifier", red))
    out.append(("", black))
    out.append((f"{'Résist. (mΩ)':<14}{'mes.':>6}{'25 °C':>7}", grey))
    for item in summary.resistances:
        label = _SHORT_RESISTANCE.get(item.key, item.label)
        out.append((f"{label:<14}{format_milliohm(item.raw_ohm):>6}{format_milliohm(item.at_25c_ohm):>7}", black))
    temperature = "—" if summary.ri_temperature_c is None else f"{summary.ri_temperature_c:.1f} °C"
    out.append((f"{'T mesure Ri':<14}{temperature:>13}", grey))
    out.append(("", black))
    out.append(("Durées (hors arrêts)", black))
    for phase in sorted(summary.phase_active_s):
        name = _SHORT_PHASE.get(phase, phase_name(phase))
        out.append((f"{phase} {name:<15}{format_duration(summary.phase_active_s[phase]):>11}",
                    _darker(PHASE_COLORS[phase]) if phase in PHASE_COLORS else black))
    out.append((f"Arrêts : {len(summary.stops)} ({format_duration(summary.stopped_s)})", grey))
    out.append((f"Total : {format_duration(summary.wall_s)}", grey))
    out.append((f"Mesures : {summary.rows}", grey))
    if summary.skipped_lines:
        out.append((f"Lignes ignorées : {summary.skipped_lines}", red))
    if summary.rejected_count:
        out.append((f"Messages rejetés : {summary.rejected_count}", grey))
    if summary.max_cell_spread_mv is not None:
        out.append((f"Écart cellules max : {summary.max_cell_spread_mv:.0f} mV", grey))
    return out


# =========================================================================== display decimation


def _runs(unix_s: np.ndarray, gap_s: float) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of the rows between stops (lines are broken at stops)."""
    n = unix_s.size
    if n == 0:
        return []
    dt = np.diff(unix_s)
    cuts = (np.flatnonzero((dt > gap_s) | (dt < 0)) + 1).tolist()
    if len(cuts) > _MAX_DISPLAY_RUNS:
        return [(0, n)]  # pathological flapping: one line rather than thousands of tiny ones
    bounds = [0] + cuts + [n]
    return list(zip(bounds[:-1], bounds[1:]))


def minmax_indices(y: np.ndarray, start: int, stop: int, bucket: int) -> np.ndarray:
    """Indices in [start, stop) keeping the min and the max of every bucket of rows, in order."""
    length = stop - start
    if length <= 2 * bucket or bucket <= 1:
        return np.arange(start, stop)
    full = length // bucket
    block = y[start:start + full * bucket].reshape(full, bucket)
    offsets = start + np.arange(full) * bucket
    picks = [offsets + block.argmin(axis=1), offsets + block.argmax(axis=1), np.array([start, stop - 1])]
    tail = start + full * bucket
    if tail < stop:
        rest = y[tail:stop]
        picks.append(np.array([tail + int(rest.argmin()), tail + int(rest.argmax())]))
    return np.unique(np.concatenate(picks))


def decimate(x: np.ndarray, y: np.ndarray, runs: Sequence[tuple[int, int]], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max envelope of y(x) for display (spikes survive), NaN between runs so lines break at stops."""
    n = x.size
    if n == 0:
        return x, y
    bucket = max(1, int(math.ceil(n / max(1, buckets))))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for start, stop in runs:
        idx = minmax_indices(y, start, stop, bucket)
        xs.append(x[idx])
        ys.append(y[idx])
        xs.append(np.array([np.nan]))
        ys.append(np.array([np.nan]))
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1])


@dataclass(frozen=True)
class TimeAxis:
    """Display abscissa: seconds of test time since the first row, each stop shortened to a narrow band.

    A test stopped every night (or a weekend) would otherwise be mostly empty hatching;
    the mapping is piecewise linear with slope 1 outside the stops, so charts keep their shape.
    """

    knots_unix: np.ndarray
    knots_x: np.ndarray

    def to_x(self, unix_s: Any) -> np.ndarray:
        """Display abscissa of unix times."""
        return np.interp(unix_s, self.knots_unix, self.knots_x)

    def to_unix(self, x: Any) -> np.ndarray:
        """Unix times of display abscissae."""
        return np.interp(x, self.knots_x, self.knots_unix)

    @property
    def width(self) -> float:
        """Length of the axis in display seconds."""
        return float(self.knots_x[-1])


STOP_BAND_FRACTION = 0.04
"""A stop is drawn at most this wide, as a fraction of the measured (non-stop) time."""


def time_axis(first_s: float, last_s: float, stops: Sequence[Stop]) -> TimeAxis:
    """The display axis of a test from its first to its last row, stops shortened."""
    stopped = sum(max(0.0, s.duration_s) for s in stops)
    active = max(last_s - first_s - stopped, 1.0)
    # Each stop gets at most 4 % of the measured time, and all of them together at most 30 %.
    band = active * min(STOP_BAND_FRACTION, 0.3 / max(1, len(stops)))
    knots_unix, knots_x = [first_s], [0.0]
    for stop in stops:
        if stop.t0_s < knots_unix[-1] or stop.t1_s <= stop.t0_s:
            continue  # clock set back: keep the mapping monotonic, draw this stop unshortened
        knots_x.append(knots_x[-1] + stop.t0_s - knots_unix[-1])
        knots_unix.append(stop.t0_s)
        knots_x.append(knots_x[-1] + min(stop.duration_s, band))
        knots_unix.append(stop.t1_s)
    end = max(last_s, knots_unix[-1] + 1e-3)  # a single row still gets an axis
    knots_x.append(knots_x[-1] + end - knots_unix[-1])
    knots_unix.append(end)
    return TimeAxis(np.array(knots_unix), np.array(knots_x))


_TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                 2 * 86400, 7 * 86400)


def _wall_clock_marks(a_s: float, b_s: float, step_s: int) -> list[datetime]:
    """Paris times in [a_s, b_s] that are round multiples of step_s (midnights, Mondays for a week)."""
    base = datetime.fromtimestamp(a_s, tz=utils.LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    if step_s == 7 * 86400:
        base -= timedelta(days=base.weekday())
    k = max(0, int((a_s - base.timestamp()) // step_s) - 1)
    marks: list[datetime] = []
    while True:
        moment = base + timedelta(seconds=k * step_s)  # wall-clock arithmetic: marks stay round across DST
        unix = moment.timestamp()
        if unix > b_s:
            return marks
        if unix >= a_s:
            marks.append(moment)
        k += 1


def time_ticks(axis: TimeAxis, max_ticks: int = 9) -> list[tuple[float, str]]:
    """Ticks at round Paris wall-clock times outside the stops: (display x, label), the date shown when it changes."""
    step = next((s for s in _TICK_STEPS_S if axis.width / s <= max_ticks), _TICK_STEPS_S[-1])
    knots = axis.knots_unix.tolist()
    ticks: list[tuple[float, str]] = []
    previous_day = None
    # The knots are first, stop starts and ends, last: measured time is between knots 0-1, 2-3, ...
    for a_s, b_s in zip(knots[0::2], knots[1::2]):
        for mark in _wall_clock_marks(a_s, b_s, step):
            # Labelled with the instant's real Paris time (02:00 does not exist on the night clocks go forward).
            moment = datetime.fromtimestamp(mark.timestamp(), tz=utils.LOCAL_TZ)
            x = float(axis.to_x(moment.timestamp()))
            if ticks and x - ticks[-1][0] < 0.6 * step:
                continue  # just after a shortened stop: would overlap the previous label
            day = moment.date()
            clock = "%H:%M:%S" if step < 60 else "%H:%M"
            label = moment.strftime(clock) if day == previous_day else moment.strftime(f"%d/%m\n{clock}")
            previous_day = day
            ticks.append((x, label))
    return ticks


@dataclass
class PlotData:
    """What the figure draws: decimated series on the display axis, its ticks, and the summary."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]
    summary: Summary
    axis: Optional[TimeAxis]
    ticks: list[tuple[float, str]]
    folder: Optional[Path] = None


PLOT_SERIES: tuple[tuple[str, str, str], ...] = (
    ("voltage_v", "Tension (V)", "#1f3a93"),
    ("current_a", "Courant (A)", "#c0392b"),
    ("soc_pct", "SOC (%)", "#16a085"),
    ("temperature_c", "Température (°C)", "#d35400"),
    ("cell_spread_mv", "Écart cellules (mV)", "#6c3483"),
)
SHORT_LABELS: dict[str, str] = {
    "voltage_v": "U (V)", "current_a": "I (A)", "soc_pct": "SOC (%)", "temperature_c": "T (°C)",
    "cell_spread_mv": "ΔU cell. (mV)",
}


def prepare_plot_data(data: TestData, summary: Summary, buckets: int = DISPLAY_BUCKETS,
                      folder: Optional[Path] = None) -> PlotData:
    """Decimate every plotted series and place it on the display axis (pure numpy; fine in a worker thread)."""
    if len(data) == 0:
        empty = (np.zeros(0), np.zeros(0))
        return PlotData({name: empty for name, _l, _c in PLOT_SERIES}, summary, None, [], folder)
    axis = time_axis(float(data.unix_s[0]), float(data.unix_s[-1]), summary.stops)
    runs = _runs(data.unix_s, summary.gap_s)
    series = {}
    for name, _label, _color in PLOT_SERIES:
        y = data["cell_max_mv"] - data["cell_min_mv"] if name == "cell_spread_mv" else data[name]
        x, y_shown = decimate(data.unix_s, y, runs, buckets)
        x_shown = axis.to_x(x)
        x_shown[np.isnan(x)] = np.nan  # keep the line breaks at stops
        series[name] = (x_shown, y_shown)
    return PlotData(series, summary, axis, time_ticks(axis), folder)


# =========================================================================== the figure (matplotlib, lazy)


@dataclass(frozen=True)
class FigureLayout:
    """Font sizes (points) and margins (figure fractions) fitted to a figure's size in pixels.

    The same figure goes to a 1600x1000 PNG and to a kiosk screen that may be 1024x600:
    text is sized in pixels against the room available, never below a legible floor.
    """

    tick_pt: float
    label_pt: float
    title_pt: float
    panel_pt: float
    panel_line_pt: float
    panel_fraction: float
    left: float
    right: float
    top: float
    bottom: float


def figure_layout(width_px: float, height_px: float, dpi: float, panel_rows: int, panel_chars: int) -> FigureLayout:
    """Fit fonts and margins to a figure of width_px x height_px (pure)."""
    width_px, height_px = max(width_px, 200.0), max(height_px, 150.0)
    pt = 72.0 / dpi  # points per pixel
    tick_px = float(np.clip(width_px / 135.0, 10.0, 11.5))
    label_px = tick_px + 1.0
    title_px = float(np.clip(width_px / 80.0, 13.0, 19.5))
    panel_px = float(np.clip(0.86 * height_px / ((max(panel_rows, 1) + 1) * 1.5), 9.5, 14.5))
    panel_width_px = 0.61 * panel_px * (panel_chars + 3)
    top_px = 1.5 * title_px + 1.6 * (tick_px + 2) + 6
    bottom_px = 2.6 * tick_px + 1.6 * label_px + 12
    left_px = 4.2 * tick_px + 1.8 * label_px + 10
    return FigureLayout(
        tick_pt=tick_px * pt,
        label_pt=label_px * pt,
        title_pt=title_px * pt,
        panel_pt=panel_px * pt,
        panel_line_pt=1.5 * panel_px * pt,
        panel_fraction=float(np.clip(panel_width_px / width_px, 0.14, 0.34)),
        left=left_px / width_px,
        right=0.995,
        top=1.0 - top_px / height_px,
        bottom=bottom_px / height_px,
    )


def draw_figure(figure: Any, plot: PlotData) -> None:
    """Draw the charts and the results panel on a matplotlib Figure (Agg or TkAgg), fitted to its size."""
    summary = plot.summary
    lines = panel_lines(summary)
    width_in, height_in = figure.get_size_inches()
    layout = figure_layout(width_in * figure.dpi, height_in * figure.dpi, figure.dpi, len(lines),
                           max(len(text) for text, _ in lines))
    figure.clear()
    figure.set_facecolor("white")
    chart_right = layout.right - layout.panel_fraction
    grid = figure.add_gridspec(len(PLOT_SERIES), 1, hspace=0.12, left=layout.left, right=chart_right,
                               top=layout.top, bottom=layout.bottom)
    status = STATUS_LABELS.get(summary.status, summary.status)
    figure.suptitle(
        f"{summary.serial} — {summary.banc} — {status} — "
        f"{format_time(summary.first_row_s)} → {format_time(summary.last_row_s)}",
        fontsize=layout.title_pt, fontweight="bold",
    )
    axes: list[Axes] = []
    axes_height_pt = (layout.top - layout.bottom) * height_in * 72.0 / (len(PLOT_SERIES) + 0.5)
    for row, (name, label, color) in enumerate(PLOT_SERIES):
        ax = figure.add_subplot(grid[row, 0], sharex=axes[0] if axes else None)
        axes.append(ax)
        x, y = plot.series[name]
        ax.plot(x, y, color=color, linewidth=0.9)
        if 0.62 * layout.label_pt * len(label) > axes_height_pt:
            label = SHORT_LABELS[name]  # a small screen: the full label would run into its neighbours
        ax.set_ylabel(label, fontsize=layout.label_pt)
        ax.tick_params(labelsize=layout.tick_pt)
        ax.yaxis.set_major_locator(_y_locator())
        ax.grid(True, alpha=0.3)
        if name == "current_a":
            ax.axhline(0.0, color="#555555", linewidth=0.6)
        if row < len(PLOT_SERIES) - 1:
            ax.tick_params(labelbottom=False)
    figure.align_ylabels(axes)
    if plot.axis is None:
        axes[0].text(0.5, 0.5, "Aucune mesure dans data.csv", transform=axes[0].transAxes,
                     ha="center", va="center", fontsize=layout.title_pt)
    else:
        _shade_phases(figure, axes, summary, plot.axis, layout)
        axes[-1].set_xticks([x for x, _ in plot.ticks], [label for _, label in plot.ticks])
        note = ", arrêts raccourcis" if summary.stops else ""
        axes[-1].set_xlabel(f"Heure de Paris (réception des mesures{note})", fontsize=layout.label_pt)
        pad = max(plot.axis.width * 0.005, 1e-3)
        axes[-1].set_xlim(-pad, plot.axis.width + pad)

    # The results panel: one text per line, spaced in points so that it never depends on the figure height.
    panel_left = chart_right + 0.012
    for i, (text, color) in enumerate(lines):
        # Baselines, not tops, are spaced evenly: accents (É) would otherwise push some lines down.
        figure.text(panel_left, layout.top, text, va="baseline", ha="left",
                    family="monospace", color=color,
                    fontsize=layout.panel_pt * (1.2 if i == 0 else 1.0),
                    fontweight="bold" if i == 0 or color == PANEL_RED else "normal",
                    **_offset_points(figure, 0.0, -(i + 1) * layout.panel_line_pt))


def _y_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, min_n_ticks=3)


def _offset_points(figure: Any, dx_pt: float, dy_pt: float) -> dict[str, Any]:
    """transform= keyword placing a text dx_pt, dy_pt points away from a figure-fraction position."""
    import matplotlib.transforms as mtransforms

    return {"transform": mtransforms.offset_copy(figure.transFigure, fig=figure, x=dx_pt, y=dy_pt, units="points")}


def _shade_phases(figure: Any, axes: list[Any], summary: Summary, axis: TimeAxis, layout: FigureLayout) -> None:
    """Shade each phase segment, hatch each stop, label both on the top chart.

    One collection per phase and one for the stops on each chart, whatever their number:
    a test with thousands of segments still draws in a fraction of a second.
    """
    import matplotlib.transforms as mtransforms

    span = max(axis.width, 1e-9)
    top = axes[0]
    chart_px = top.get_position().width * figure.get_size_inches()[0] * figure.dpi
    text_px = layout.tick_pt * figure.dpi / 72.0
    label_transform = mtransforms.blended_transform_factory(top.transData, top.transAxes)
    by_phase: dict[int, list[tuple[float, float]]] = {}
    labelled_until = -math.inf
    for segment in summary.segments:
        x0, x1 = (float(v) for v in axis.to_x([segment.t0_s, segment.t1_s]))
        by_phase.setdefault(segment.step, []).append((x0, x1 - x0))
        middle = (x0 + x1) / 2
        if (x1 - x0) / span * chart_px > 1.5 * text_px and middle > labelled_until:
            top.text(middle, 1.02, str(segment.step), transform=label_transform, ha="center", va="bottom",
                     fontsize=layout.tick_pt + 1, fontweight="bold",
                     color=_darker(PHASE_COLORS.get(segment.step, "#888888")))
            labelled_until = middle + span * 2.0 * text_px / chart_px
    stop_ranges = []
    for stop in summary.stops:
        x0, x1 = (float(v) for v in axis.to_x([stop.t0_s, stop.t1_s]))
        stop_ranges.append((x0, x1 - x0))
        if (x1 - x0) / span * chart_px > 2.8 * text_px:
            top.text((x0 + x1) / 2, 0.5, f"Arrêt\n{format_duration(stop.duration_s)}", transform=label_transform,
                     rotation=90, ha="center", va="center", fontsize=layout.tick_pt, color="#333333",
                     linespacing=1.1, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0})
    # Hatching costs about 1 ms per band and per chart in Agg: beyond a few hundred stops
    # (a flapping link), they are drawn as plain grey bands instead.
    hatched = len(stop_ranges) <= _MAX_HATCHED_STOPS
    edges = [x for x0, width in stop_ranges for x in (x0, x0 + width)] if hatched else []
    for ax in axes:
        band = ax.get_xaxis_transform()  # x in data, y from 0 to 1 of the chart
        for phase, ranges in by_phase.items():
            ax.broken_barh(_merge_ranges(ranges, span / 4000.0), (0, 1), transform=band,
                           facecolors=PHASE_COLORS.get(phase, "#bbbbbb"), alpha=0.15, linewidth=0, zorder=0)
        if stop_ranges and hatched:
            ax.broken_barh(stop_ranges, (0, 1), transform=band, facecolors="none", edgecolors="#888888",
                           hatch="///", linewidth=0, zorder=0.5)
            ax.vlines(edges, 0, 1, transform=band, colors="#666666", linewidth=0.7, linestyles="--")
        elif stop_ranges:
            ax.broken_barh(stop_ranges, (0, 1), transform=band, facecolors="#888888", alpha=0.35, linewidth=0,
                           zorder=0.5)


def _merge_ranges(ranges: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """(start, width) ranges in order, merged where they touch (gap below `tolerance`)."""
    merged: list[list[float]] = []
    for start, width in ranges:
        if merged and start - (merged[-1][0] + merged[-1][1]) <= tolerance:
            merged[-1][1] = max(merged[-1][1], start + width - merged[-1][0])
        else:
            merged.append([start, width])
    return [(start, width) for start, width in merged]


def _atomic_output(path: Path, write: Callable[[Any], None]) -> None:
    """Write a binary file through a temporary file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise


def render_png(plot: PlotData, path: Path) -> None:
    """Render the figure to a PNG file with the Agg backend (atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PNG_SIZE_IN, dpi=PNG_DPI)
    FigureCanvasAgg(figure)
    draw_figure(figure, plot)
    _atomic_output(Path(path), lambda fh: figure.savefig(fh, format="png", dpi=PNG_DPI))


# =========================================================================== Battery Data Format


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
        "Temperature T1 / degC": data["temperature_c"],
        "Charging Capacity / Ah": count.charge_ah,
        "Discharging Capacity / Ah": count.discharge_ah,
        "Charging Energy / Wh": count.charge_wh,
        "Discharging Energy / Wh": count.discharge_wh,
    }


def _json_time(moment: Optional[float | datetime]) -> Optional[str]:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), tz=UTC).astimezone(utils.LOCAL_TZ)
    return moment.isoformat(timespec="milliseconds")


def bdf_metadata(summary: Summary, bdf_path: Path, rows: int, sha256: str, source: Optional[Path]) -> dict[str, Any]:
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
            "time_source": "time of receipt of each BMS message by banc.py",
            "step_id": "phase of the test: 1 Ri/diffusion, 2 charge, 3 discharge, 4 storage recharge, 5 finished",
            "step_count": "1, +1 at each change of phase (a resume after a stop keeps its step)",
            "capacity_energy": (
                "cumulative, trapezoidal integration of current (and voltage x current) over time, split at zero "
                f"crossings; silences longer than {summary.gap_s:g} s (stops) are not integrated"
            ),
        },
        "source": {"data_csv": str(source) if source else None, "skipped_lines": summary.skipped_lines},
        "software": {"name": "banc-lfp report.py", "version": utils.SOFTWARE_VERSION},
        "generated_at": utils.now_local().isoformat(timespec="seconds"),
    }


def write_bdf(path: Path, data: TestData, summary: Summary, source: Optional[Path] = None) -> Path:
    """Write the BDF CSV and its metadata sidecar (both atomically); return the sidecar path."""
    columns = bdf_columns(data, summary.gap_s)
    values = [columns[label] for label in BDF_HEADER]
    digest = hashlib.sha256()

    def write(fh: Any) -> None:
        head = (",".join(BDF_HEADER) + "\n").encode("utf-8")
        digest.update(head)
        fh.write(head)
        for start in range(0, len(data), _BDF_CHUNK_ROWS):
            stop = start + _BDF_CHUNK_ROWS
            lists = [column[start:stop].tolist() for column in values]
            chunk = ("\n".join([_BDF_ROW_FORMAT % row for row in zip(*lists)]) + "\n").encode("ascii")
            digest.update(chunk)
            fh.write(chunk)

    _atomic_output(Path(path), write)
    sidecar = bdf_metadata_path(path)
    utils.atomic_write_json(sidecar, bdf_metadata(summary, path, len(data), digest.hexdigest(), source))
    return sidecar


# =========================================================================== shell: one test folder


@dataclass
class Report:
    """A loaded test: folder, rows, config.json and summary."""

    folder: Path
    data: TestData
    config: dict[str, Any]
    summary: Summary


def load_report(folder: Path, min_gap_s: Optional[float] = None) -> Report:
    """Load a test folder (data.csv, config.json tolerantly) and compute its summary."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} n'est pas un dossier de test")
    data = load_test_data(folder)
    config = utils.read_test_config(folder)
    if config is None:
        data.notes.append("config.json absent ou illisible : résultats de l'ESP inconnus")
        config = {}
    if config.get("rejected_count") is None and (folder / utils.REJECTED_CSV_FILE).exists():
        try:
            with open(folder / utils.REJECTED_CSV_FILE, "rb") as fh:
                config = {**config, "rejected_count": max(0, sum(1 for _ in fh) - 1)}
        except OSError:
            pass
    if min_gap_s is None:
        min_gap_s = utils.get_settings().bms_timeout_s
    gap = stop_gap_s(data.unix_s, min_gap_s)
    summary = compute_summary(data, config, gap, utils.correct_to_25c, folder=folder)
    return Report(folder=folder, data=data, config=config, summary=summary)


# =========================================================================== kiosk chart window


def show_charts(master: Any, test_folder: Path) -> Any:
    """Open the charts of a test in a kiosk window (non-blocking); returns the CTkToplevel."""
    return _chart_window_class()(master, Path(test_folder))


_CHART_WINDOW_CLASS: Optional[type] = None


def _chart_window_class() -> type:
    """Build the ChartWindow class on first use (customtkinter is imported only then)."""
    global _CHART_WINDOW_CLASS
    if _CHART_WINDOW_CLASS is not None:
        return _CHART_WINDOW_CLASS
    import customtkinter as ctk

    class ChartWindow(ctk.CTkToplevel):
        """Full-screen chart view of one test: data loaded in a thread, drawn on the Tk thread."""

        POLL_MS = 50

        def __init__(self, master: Any, folder: Path) -> None:
            super().__init__(master)
            self.folder = folder
            self.canvas: Any = None
            self.figure: Any = None
            self._results: queue.Queue[tuple[str, Any]] = queue.Queue()
            self._closed = False
            self._loading = False
            self._plot: Optional[PlotData] = None
            self._layout_px = (0, 0)
            self._relayout_pending: Optional[str] = None
            serial, banc = identity_from_folder(folder)
            self.title(f"Graphiques — {serial}")
            width, height = self.winfo_screenwidth(), self.winfo_screenheight()
            self.geometry(f"{width}x{height}+0+0")
            self.protocol("WM_DELETE_WINDOW", self.close)
            self.bind("<Escape>", lambda _event: self.close())

            bar = ctk.CTkFrame(self, fg_color="transparent")
            bar.pack(side="top", fill="x", padx=12, pady=(10, 4))
            self.title_label = ctk.CTkLabel(bar, text=f"{serial} — {banc}", font=ctk.CTkFont(size=24, weight="bold"))
            self.title_label.pack(side="left")
            self.close_button = ctk.CTkButton(bar, text="Fermer", width=200, height=64,
                                              font=ctk.CTkFont(size=26, weight="bold"), command=self.close)
            self.close_button.pack(side="right")
            self.refresh_button = ctk.CTkButton(bar, text="Actualiser", width=180, height=64,
                                                font=ctk.CTkFont(size=22), command=self.reload)
            self.refresh_button.pack(side="right", padx=12)
            self.body = ctk.CTkFrame(self, fg_color="white")
            self.body.pack(side="top", fill="both", expand=True, padx=8, pady=(0, 8))
            self.status_label = ctk.CTkLabel(self.body, text="Chargement des données…", text_color="#333333",
                                             font=ctk.CTkFont(size=22))
            self.status_label.place(relx=0.5, rely=0.5, anchor="center")
            # Read by the worker thread when it builds the figure: a tuple, replaced whole (no lock needed).
            self._target_px = (max(400, width - 16), max(300, height - 100))
            self.body.bind("<Configure>", self._on_body_configure, add="+")
            self.after(10, self._raise)
            self.reload()

        def _on_body_configure(self, event: Any) -> None:
            if event.width > 50 and event.height > 50:
                self._target_px = (event.width, event.height)
                if self.canvas is not None and self._relayout_pending is None:
                    # Fonts and margins are fitted to the size: lay the figure out again once resizing settles.
                    self._relayout_pending = self.after(250, self._relayout)

        def _relayout(self) -> None:
            self._relayout_pending = None
            if self._closed or self.canvas is None or self._plot is None:
                return
            width, height = self._target_px
            old_w, old_h = self._layout_px
            if abs(width - old_w) <= 0.05 * old_w and abs(height - old_h) <= 0.05 * old_h:
                return
            draw_figure(self.figure, self._plot)
            self._layout_px = (width, height)
            self.canvas.draw_idle()

        def _raise(self) -> None:
            # Above the full-screen kiosk, with or without a window manager.
            if self._closed:
                return
            self.attributes("-topmost", True)
            self.lift()
            self.focus_force()

        @property
        def loading(self) -> bool:
            """True while a worker thread is loading the data."""
            return self._loading

        def reload(self) -> None:
            """Load (again) the test's data in a worker thread; the figure is redrawn when it is ready."""
            if self._loading or self._closed:
                return
            self._loading = True
            self.refresh_button.configure(state="disabled")
            buckets = max(400, min(DISPLAY_BUCKETS, self.winfo_screenwidth()))
            threading.Thread(target=self._load, args=(buckets,), name="report-load", daemon=True).start()
            self.after(self.POLL_MS, self._poll)

        def _load(self, buckets: int) -> None:
            # Worker thread: files and numpy only, never a widget.
            try:
                report = load_report(self.folder)
                plot = prepare_plot_data(report.data, report.summary, buckets=buckets, folder=self.folder)
                from matplotlib.figure import Figure

                width, height = self._target_px
                figure = Figure(figsize=(width / PNG_DPI, height / PNG_DPI), dpi=PNG_DPI)
                draw_figure(figure, plot)  # artists built here, at the window's size; the Tk thread only rasterises
                self._results.put(("ok", (figure, plot, (width, height))))
            except ReportError as exc:
                self._results.put(("error", str(exc)))
            except Exception as exc:  # shown to the operator rather than lost in a dead thread
                logger.exception("chart loading failed for %s", self.folder)
                self._results.put(("error", f"erreur inattendue : {exc}"))

        def _poll(self) -> None:
            if self._closed:
                return
            try:
                kind, value = self._results.get_nowait()
            except queue.Empty:
                self.after(self.POLL_MS, self._poll)
                return
            self._loading = False
            self.refresh_button.configure(state="normal")
            if kind == "ok":
                figure, self._plot, self._layout_px = value
                self._show_figure(figure)
            else:
                self.status_label.configure(text=f"Impossible d'afficher ce test :\n{value}", text_color="#c0392b")
                self.status_label.lift()

        def _show_figure(self, figure: Any) -> None:
            from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg

            if self.canvas is not None:
                self.canvas.get_tk_widget().destroy()
            self.figure = figure
            self.canvas = FigureCanvasTkAgg(figure, master=self.body)
            self.canvas.get_tk_widget().configure(highlightthickness=0)
            self.canvas.get_tk_widget().pack(fill="both", expand=True)
            self.status_label.place_forget()
            self.canvas.draw_idle()
            self._raise()

        def close(self) -> None:
            """Close the window (the loading thread's result, if any, is dropped)."""
            if self._closed:
                return
            self._closed = True
            try:
                if self.canvas is not None:
                    self.canvas.get_tk_widget().destroy()
            finally:
                self.destroy()

    _CHART_WINDOW_CLASS = ChartWindow
    return ChartWindow


# =========================================================================== command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`report.py TEST_FOLDER [--png FILE] [--bdf FILE]`: summary on stdout, or the chart / the BDF export."""
    parser = argparse.ArgumentParser(
        prog="report.py",
        description="Graphiques, résumé et export Battery Data Format d'un test (dossier data/bancN/JJMMAAAA-SERIAL).",
    )
    parser.add_argument("test_folder", type=Path, help="dossier du test (contient data.csv et config.json)")
    parser.add_argument("--png", type=Path, metavar="FILE", help="écrire les graphiques dans ce fichier PNG")
    parser.add_argument("--bdf", type=Path, metavar="FILE",
                        help="écrire l'export Battery Data Format (CSV) et son FILE.bdf.metadata.json")
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):  # replaced (tests, pythonw): nothing to reconfigure
            continue
        try:
            stream.reconfigure(errors="replace")
        except ValueError:
            pass
    try:
        utils.get_settings()
    except utils.SettingsError as exc:
        print(f"report.py : configuration invalide : {exc}", file=sys.stderr)
        return 2
    utils.setup_logging("report", level=logging.WARNING)

    try:
        report = load_report(args.test_folder)
    except ReportError as exc:
        print(f"report.py : {exc}", file=sys.stderr)
        return 2
    for note in report.summary.notes:
        logger.warning("%s: %s", args.test_folder, note)
    if args.png is None and args.bdf is None:
        sys.stdout.write(format_summary(report.summary, args.test_folder))
        return 0
    try:
        if args.png is not None:
            render_png(prepare_plot_data(report.data, report.summary, folder=report.folder), args.png)
            print(f"PNG écrit : {args.png}")
        if args.bdf is not None:
            sidecar = write_bdf(args.bdf, report.data, report.summary, source=report.folder / utils.DATA_CSV_FILE)
            print(f"BDF écrit : {args.bdf} ({len(report.data)} lignes), métadonnées : {sidecar}")
    except OSError as exc:
        print(f"report.py : écriture impossible : {exc}", file=sys.stderr)
        return 1
    if report.summary.capacity_flag:
        print(capacity_flag_text(report.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
