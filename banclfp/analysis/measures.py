"""One test's data analysed: data.csv loaded into numpy arrays, coulomb counting, phases, stops, the summary.

Pure numpy (never matplotlib nor customtkinter), so the CLI summary stays fast and the kiosk
can run all of it in a worker thread. Only `load_test_data` and `load_report` touch files.
"""

from __future__ import annotations

import bisect
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

import numpy as np

from banclfp.recording import datafile, record, store
from banclfp.verdict import grading
from banclfp.wire import protocol

CAPACITY_FLAG_PCT = 2.0
"""Our coulomb count and the ESP's capacity_ah differing by more than this is flagged."""

CHARGE_PHASE = 2
DISCHARGE_PHASE = 3
MIN_GAP_S = 30.0
"""Default shortest silence taken for a stop (the shell passes BANC_BMS_TIMEOUT_S)."""
GAP_MEDIAN_FACTOR = 10.0
"""A silence of more than this many typical sampling intervals is also a stop."""

_CHUNK_BYTES = 1 << 20  # parse data.csv by slices: cache-friendly, and other threads run between slices
_TS_WIDTH = 40  # bytes kept per timestamp field; the canonical form has 29
_MAX_LINE_NOTES = 5

NUMERIC_COLUMNS: tuple[str, ...] = record.DATA_CSV_HEADER_V1[1:]
"""The numeric columns every data.csv has (TestData.columns); `uptime_ms` is added for a 14-column file."""
_HEADERS: dict[bytes, int] = {",".join(h).encode("ascii"): len(h)
                              for h in (record.DATA_CSV_HEADER, record.DATA_CSV_HEADER_V1)}
_HEADER_BYTES = ",".join(record.DATA_CSV_HEADER).encode("ascii")
_ROW_DTYPE_V1 = np.dtype([("timestamp", f"S{_TS_WIDTH}")] + [(name, "f8") for name in NUMERIC_COLUMNS])
# uptime_ms is read as text (empty for a 10-field line) and converted column-wise.
_ROW_DTYPE = np.dtype(_ROW_DTYPE_V1.descr + [("uptime_ms", "S24"), ("measured_at", f"S{_TS_WIDTH}")])
_DTYPES = {len(record.DATA_CSV_HEADER_V1): _ROW_DTYPE_V1, len(record.DATA_CSV_HEADER): _ROW_DTYPE}

RESISTANCE_LABELS: dict[str, str] = {
    "ri_discharge": "Ri décharge",
    "ri_charge": "Ri charge",
    "diffusion_discharge": "Diffusion décharge",
    "diffusion_charge": "Diffusion charge",
}


class ReportError(ValueError):
    """The test folder cannot be reported on (missing folder, no data.csv, wrong header)."""


# =========================================================================== loading data.csv


@dataclass
class TestData:
    """The rows of a data.csv as numpy arrays, in the order they were measured, and what was skipped."""

    __test__ = False  # not a pytest test class, despite the name

    unix_s: np.ndarray  # when each row was measured (measured_at; the receipt for a 12-column file)
    columns: dict[str, np.ndarray]
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)
    received_s: Optional[np.ndarray] = None  # when banc.py received each row (timestamp)
    recomputed_rows: int = 0  # rows stamped at receipt before their ESP boot had an offset, recomputed
    # Where each row is in data.csv (0 = its first valid row) when the rows were put in measurement
    # order; None when they are in the file's order. The ESP's own order starts from the file's.
    file_index: Optional[np.ndarray] = None

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
    return record.as_local(datetime.fromisoformat(text)).timestamp()  # naive times are Paris time


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


def _parse_line(line: bytes, width: int = len(record.DATA_CSV_HEADER)) -> Optional[tuple[Union[bytes, float], ...]]:
    """One data.csv line as a row of the dtype of its `width`, or None when it is not a valid row."""
    parts = line.split(b",")
    if len(parts) != width:
        return None
    numeric = len(NUMERIC_COLUMNS) + 1
    try:
        row: tuple[Union[bytes, float], ...] = (parts[0].strip(), *(float(part) for part in parts[1:numeric]))
    except ValueError:
        return None
    if width == len(record.DATA_CSV_HEADER):
        uptime, measured = parts[numeric].strip(), parts[numeric + 1].strip()
        if uptime and not uptime.isdigit():
            return None
        row += (uptime, measured)
    return row


def _parse_slice(text: bytes, width: int = len(record.DATA_CSV_HEADER)) -> np.ndarray:
    """Rows of a slice of complete lines: numpy's C parser, or line by line when a line is bad.

    A bad line becomes a row of NaN (dropped later as invalid), so row k is still line k of
    the slice and the notes can give exact line numbers.
    """
    dtype = _DTYPES[width]
    try:
        return np.atleast_1d(np.loadtxt(io.BytesIO(text), delimiter=",", dtype=dtype, comments=None, ndmin=1))
    except ValueError:
        pass
    rows = []
    bad_row = (b"",) + (math.nan,) * len(NUMERIC_COLUMNS) + ((b"x", b"") if width == len(record.DATA_CSV_HEADER) else ())
    for line in text.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        parsed = _parse_line(line, width)
        rows.append(parsed if parsed is not None else bad_row)
    return np.array(rows, dtype=dtype)


def _uptime_column(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uptime_ms as floats (NaN when empty: a 10-field line), and a mask of the values that are valid."""
    out = np.full(text.shape[0], math.nan)
    present = text != b""
    valid = np.ones(text.shape[0], dtype=bool)
    if present.any():
        digits = np.char.isdigit(text[present])
        values = np.full(digits.shape[0], math.nan)
        values[digits] = text[present][digits].astype(np.float64)
        out[present] = values
        valid[np.flatnonzero(present)[~digits]] = False
    return out, valid


def recompute_measured(unix_s: np.ndarray, received_s: np.ndarray, stamped_at_receipt: np.ndarray,
                       seq: np.ndarray, uptime_ms: np.ndarray, row_stamps: np.ndarray,
                       boots: Sequence[record.EspBoot]) -> tuple[np.ndarray, int]:
    """Measurement times with the rows written before their ESP boot had an offset recomputed (pure).

    Rows are in file order. Boot k starts at the row the journal names (its timestamp, seq and
    uptime) and runs until the next boot's; a row of boot k whose measured_at is its receipt
    time, received no later than the boot's first offset was estimated, gets that offset plus
    its uptime (docs/protocole.md §7). A boot whose journal line is unreadable (a hole in `boots`)
    cannot be found: its rows keep their stamps (received after the previous boot's estimate,
    none of them is taken for that boot's). Returns the times and how many rows were recomputed.
    """
    out = unix_s.copy()
    starts: list[tuple[int, record.EspBoot]] = []
    for boot in boots:
        if boot.row_t is None or boot.seq is None or boot.uptime_ms is None:
            continue  # a hole: no row is known to start it
        hits = np.flatnonzero((row_stamps == boot.row_t.encode("ascii", "replace")) & (seq == boot.seq)
                              & (uptime_ms == boot.uptime_ms))
        if hits.size:
            starts.append((int(hits[0]), boot))
    starts.sort(key=lambda item: item[0])
    recomputed = 0
    for k, (start, boot) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else unix_s.size
        estimated_at = record.parse_time(boot.first_offset_t)
        if boot.first_offset_ms is None or estimated_at is None:
            continue  # no live line of that boot ever: its rows keep their receipt time
        span = slice(start, end)
        fix = stamped_at_receipt[span] & np.isfinite(uptime_ms[span]) & (received_s[span] <= estimated_at.timestamp())
        if fix.any():
            index = np.flatnonzero(fix) + start
            out[index] = (boot.first_offset_ms + uptime_ms[index]) / 1000.0
            recomputed += int(index.size)
    return out, recomputed


def parse_data_csv(raw: bytes, boots: Sequence[record.EspBoot] = ()) -> TestData:
    """Parse the bytes of a data.csv (pure): header checked, torn last line and bad lines skipped with a note.

    A 14-column file's rows are timed by `measured_at` (rows stamped before their ESP boot had
    an offset recomputed from the journal's `boots`) and put in the order they were measured;
    a 12-column file (earlier version) is timed by its receipt timestamps, in file order.
    """
    notes: list[str] = []
    header_end = raw.find(b"\n")
    header = (raw if header_end < 0 else raw[:header_end]).rstrip(b"\r").lstrip(b"\xef\xbb\xbf")
    width = _HEADERS.get(header)
    if width is None:
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

    v2 = width == len(record.DATA_CSV_HEADER)
    names = NUMERIC_COLUMNS + (("uptime_ms",) if v2 else ())
    stamps: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    raw_stamps: dict[str, list[np.ndarray]] = {"timestamp": [], "measured_at": [], "received": []}
    while start < stop:
        end = body.find(b"\n", min(start + _CHUNK_BYTES, stop - 1), stop) + 1 or stop
        # Slice by slice: each slice's columns are extracted while its rows are still in the CPU cache.
        rows = _parse_slice(body[start:end], width)
        unix_part, valid_part = parse_iso_timestamps(rows["timestamp"])
        for name in NUMERIC_COLUMNS:
            column = np.ascontiguousarray(rows[name])
            valid_part &= np.isfinite(column)
            parts[name].append(column)
        if v2:
            uptime, uptime_valid = _uptime_column(rows["uptime_ms"])
            measured_part, measured_valid = parse_iso_timestamps(rows["measured_at"])
            valid_part &= uptime_valid & measured_valid
            parts["uptime_ms"].append(uptime)
            raw_stamps["timestamp"].append(np.ascontiguousarray(rows["timestamp"]))
            raw_stamps["measured_at"].append(np.ascontiguousarray(rows["measured_at"]))
            raw_stamps["received"].append(unix_part)
            unix_part = measured_part
        stamps.append(unix_part)
        valids.append(valid_part)
        start = end
    unix = np.concatenate(stamps) if stamps else np.zeros(0)
    valid = np.concatenate(valids) if valids else np.zeros(0, dtype=bool)
    all_columns = {name: np.concatenate(parts[name]) if stamps else np.zeros(0) for name in names}
    received = np.concatenate(raw_stamps["received"]) if v2 and stamps else unix
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
        unix, received = unix[valid], received[valid]
    recomputed = 0
    file_index: Optional[np.ndarray] = None
    if v2:
        row_stamps = np.concatenate(raw_stamps["timestamp"]) if stamps else np.zeros(0, dtype="S1")
        measured_stamps = np.concatenate(raw_stamps["measured_at"]) if stamps else np.zeros(0, dtype="S1")
        if bad.size:
            row_stamps, measured_stamps = row_stamps[valid], measured_stamps[valid]
        if boots:
            unix, recomputed = recompute_measured(unix, received, measured_stamps == row_stamps, columns["seq"],
                                                  columns["uptime_ms"], row_stamps, boots)
        if unix.size > 1 and np.any(np.diff(unix) < 0):
            # Replayed lines come after later ones in the file: rows are read in measurement order.
            order = np.argsort(unix, kind="stable")
            unix, received = unix[order], received[order]
            columns = {name: column[order] for name, column in columns.items()}
            file_index = order
    elif unix.size > 1 and np.any(np.diff(unix) < 0):
        notes.append(f"horodatage non croissant {int(np.sum(np.diff(unix) < 0))} fois (horloge remise à l'heure ?)")
    return TestData(unix_s=unix, columns=columns, skipped_lines=skipped, notes=notes, received_s=received,
                    recomputed_rows=recomputed, file_index=file_index)


def load_test_data(folder: Path) -> TestData:
    """Read and parse data.csv of a test folder (ReportError when missing or not a data.csv), with the journal's ESP boots."""
    path = Path(folder) / record.DATA_CSV_FILE
    try:
        raw = datafile.read_bytes(path)
    except FileNotFoundError:
        raise ReportError(f"{path} n'existe pas") from None
    except OSError as exc:
        raise ReportError(f"{path} illisible : {exc}") from exc
    events, _ = record.read_events(Path(folder))
    return parse_data_csv(raw, record.fold_events(events).esp_boots if events else ())


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
    """Cumulative capacities and energies per row (coulomb counting over the measurement times)."""

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
    """One Ri/diffusion result: mean as measured, and mean of its pulses each brought to 25 °C (record.ri_at_25c)."""

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
    ri_temperature_c: Optional[float]  # the last Ri result's (config.json's seed key)
    voltage_range_v: Optional[tuple[float, float]]
    temperature_range_c: Optional[tuple[float, float]]
    max_cell_spread_mv: Optional[float]
    notes: list[str] = field(default_factory=list)
    verdict: Optional[record.Verdict] = None  # config.json's verdict (docs/verdict.md) once the test is concluded
    # Lowest and highest temperature of the Ri pulses (each corrected to 25 °C with its own).
    ri_temperature_range_c: Optional[tuple[float, float]] = None

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


def _number(value: Optional[float]) -> Optional[float]:
    """A summary's number as a float (None when it has none or it is not finite)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def identity_from_folder(folder: Path) -> tuple[str, str]:
    """Serial and bench guessed from data/bancN/DDMMYYYY-SERIAL (for a folder without config.json)."""
    folder = Path(folder)
    match = record.FOLDER_RE.match(folder.name)  # the name's date is not checked: any 8 digits will do
    serial = match.group(4) if match else folder.name
    try:
        banc = protocol.banc_id(folder.parent.name) if folder.parent.name[:4].lower() == "banc" else "?"
    except ValueError:  # "banc0", "bancX": not a bench folder
        banc = "?"
    return serial, banc


def compute_summary(
    data: TestData, config: record.TestSummary, gap_s: float, correct: Callable[[float, Optional[float]], float],
    folder: Optional[Path] = None,
) -> Summary:
    """Summary of a test from its rows and its config.json (pure: `correct` brings an Ri to 25 °C)."""
    notes = list(data.notes)
    serial, banc = identity_from_folder(folder) if folder is not None else ("?", "?")
    serial = config.battery_serial or serial
    banc = config.banc or banc
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

    esp_ah = _number(config.capacity_ah)
    esp_wh = _number(config.capacity_wh)
    if n and (esp_ah is None or config.status != record.TEST_FINISHED):
        # config.json without it, or a running test's (rewritten every 5 minutes): the ESP's counters
        # as its rows give them now, by the same rule the recorder keeps them.
        counter = record.CapacityCounter()
        for step, seq, ah, wh in zip(data.step.tolist(), data["seq"].tolist(), data["capacity_ah"].tolist(),
                                     data["energy_wh"].tolist()):
            counter.see(int(step), int(seq), float(ah), float(wh))
        if counter.ah is not None:
            esp_ah, esp_wh = counter.ah, counter.wh
    diff_pct = None
    if counted_ah is not None and esp_ah:
        diff_pct = (counted_ah - esp_ah) / esp_ah * 100.0
    flag = diff_pct is not None and abs(diff_pct) > CAPACITY_FLAG_PCT

    ri_temperature = _number(config.ri_temperature_c)
    resistances = []
    for key in protocol.RI_KEYS:
        raw = _number(config.ri_averages.get(key))
        at_25 = None
        if raw is not None:
            try:
                at_25 = record.ri_at_25c(config, key, correct)  # each pulse at its own temperature
            except (ValueError, OSError) as exc:  # a broken temperature_coefficients.json: say so, keep the raw value
                notes.append(f"correction à 25 °C impossible : {exc}")
        resistances.append(Resistance(key, RESISTANCE_LABELS.get(key, key), raw, at_25, config.ri_counts.get(key, 0)))

    spread = data["cell_max_mv"] - data["cell_min_mv"] if n else None
    return Summary(
        serial=serial,
        banc=banc,
        status=config.status or "?",
        current_step=config.current_step or None,
        first_handle=record.parse_time(config.first_handle),
        end_time=record.parse_time(config.end_time),
        first_row_s=float(data.unix_s[0]) if n else None,
        last_row_s=float(data.unix_s[-1]) if n else None,
        rows=n,
        skipped_lines=data.skipped_lines,
        rejected_count=config.rejected_count,
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
        verdict=config.verdict,
        ri_temperature_range_c=record.ri_temperature_range(config),
    )


# =========================================================================== what the verdict needs
#
# Contract v3: a fact of the verdict is never decided by one row. The rows are put in the ESP's
# own order (`esp_order`): boot by boot, in the order data.csv received the boots, and by seq
# within a boot; each row is timed on its boot's clock (uptime_ms; seq x the line period for a
# firmware without it), never by measured_at, which a Pi clock step, a backlog or one garbled
# uptime can move. The full-charge window is the last FULL_CHARGE_WINDOW_S of that clock in
# the last boot that measured phase 2 (`full_charge_window`); a value counts when it holds for
# two consecutive rows in that order (`held_max`). When the rows cannot support a fact (too few
# rows in the window, lines lost in it, a phase recovered from the lines), `test_facts` says why
# (grading.Doubt) and the verdict is À VÉRIFIER.

MIN_WINDOW_SHARE = 0.5
"""A full-charge window holding fewer rows than this share of what its line period gives cannot support a grade."""
MIN_WINDOW_ROWS = 2
"""Nor can one with fewer rows than this: a value must hold for two consecutive rows."""
_SHOWN_SPANS = 3  # lost seq spans named in a reason


def split_boots(seq: np.ndarray, uptime_ms: np.ndarray, journal_starts: np.ndarray) -> np.ndarray:
    """The ESP boot (0, 1, 2...) of each row, the rows in data.csv's order (pure).

    `journal_starts` marks the rows the journal names as a boot's first (EVENT_ESP_BOOT: its
    row_t, seq and uptime_ms). How boots are told apart:
      - a row with uptime_ms, when the journal names any boot's row: a boot starts at a row the
        journal names, unless its seq continues the boot before (the next seq, or one filling a
        hole: the recorder took an uptime garbled ahead, then the next one, for a reboot);
      - otherwise (no journal, rows without uptime_ms): a boot starts where seq goes back outside
        every hole of the boot (record.SeqHoles, as the recount of data.csv says "restart"), or
        jumps ahead while uptime_ms goes back (the ESP rebooted while banc.py was away).
    A replayed row (it fills a hole) stays in its boot, wherever it is in the file.
    """
    n = int(seq.size)
    boots = np.zeros(n, dtype=np.int64)
    if n < 2 or (not journal_starts[1:].any() and bool(np.all(np.diff(seq) == 1))):
        return boots  # one boot, every line in order: the common case, without the loop below
    journal_mode = bool(journal_starts.any())
    holes = record.SeqHoles()
    boot = 0
    last_uptime = math.nan  # of the newest row (not a replayed one)
    for i, (s, u, named) in enumerate(zip(seq.astype(np.int64).tolist(), uptime_ms.tolist(),
                                          journal_starts.tolist())):
        verdict = holes.see(s)
        if i:
            if journal_mode and not math.isnan(u):  # a row with uptime_ms
                new = named and verdict not in ("next", "fill")
            else:
                new = verdict == "restart" or (verdict == "gap" and u < last_uptime)
            if new:
                boot += 1
                holes = record.SeqHoles(s)
                last_uptime = math.nan
        boots[i] = boot
        if verdict != "fill" and not math.isnan(u):
            last_uptime = u
    return boots


def monotone_keep(values: np.ndarray) -> np.ndarray:
    """Mask of a longest non-decreasing run of `values` (not necessarily contiguous), ending as low as possible (pure).

    The rows of one boot in seq order: a time garbled far ahead or far behind breaks the run and is
    left out, wherever it is but last (a time ahead at the very end cannot be told from a pause).
    """
    n = int(values.size)
    if n < 2 or bool(np.all(np.diff(values) >= 0)):
        return np.ones(n, dtype=bool)
    tails: list[float] = []  # the lowest last value of a run of each length
    ends: list[int] = []
    before = np.full(n, -1, dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        k = bisect.bisect_right(tails, value)
        if k:
            before[i] = ends[k - 1]
        if k == len(tails):
            tails.append(value)
            ends.append(i)
        else:
            tails[k], ends[k] = value, i
    keep = np.zeros(n, dtype=bool)
    i = ends[-1]
    while i >= 0:
        keep[i] = True
        i = int(before[i])
    return keep


def line_period_s(seq: np.ndarray, times_s: np.ndarray) -> float:
    """The ESP's line period: the median of time over seq steps between successive rows (NaN when none)."""
    d_seq, d_t = np.diff(seq), np.diff(times_s)
    ok = (d_seq >= 1) & (d_t > 0)
    return float(np.median(d_t[ok] / d_seq[ok])) if ok.any() else math.nan


def boot_clock_s(seq: np.ndarray, uptime_ms: np.ndarray, unix_s: np.ndarray) -> np.ndarray:
    """Each row's time on its boot's clock (s), the boot's rows in seq order (pure); non-decreasing.

    uptime_ms when the boot's rows have it, a garbled one (out of the longest non-decreasing run)
    taking the time of the row before it; without uptime_ms, seq x the line period, which
    measured_at only gives (its median: a clock step or a backlog moves no row).
    """
    has = np.isfinite(uptime_ms)
    if not has.any():
        period = line_period_s(seq, unix_s)
        return (seq - seq[0]) * (period if math.isfinite(period) else 0.0)
    keep = has.copy()
    keep[has] = monotone_keep(uptime_ms[has])
    index = np.maximum.accumulate(np.where(keep, np.arange(keep.size), -1))
    index[index < 0] = int(np.argmax(keep))  # rows before the first sound one: its time
    return uptime_ms[index] / 1000.0


@dataclass(frozen=True)
class EspOrder:
    """A test's rows in the ESP's own order: boot by boot, seq within a boot, each with its time on its boot's clock."""

    rows: np.ndarray  # TestData row indices
    boot: np.ndarray  # each one's boot: 0, 1, 2... in the order data.csv received them
    time_s: np.ndarray  # non-decreasing within a boot
    journal_boots: tuple[frozenset[int], ...]  # per boot, the journal's numbers of the EVENT_ESP_BOOT it holds


def esp_order(data: TestData, journal: Optional[record.RecordState] = None) -> EspOrder:
    """Put the rows in the ESP's order (see split_boots for how boots are told apart)."""
    n = len(data)
    order = np.arange(n) if data.file_index is None else np.argsort(data.file_index, kind="stable")
    seq = data["seq"][order]
    uptime = data.columns["uptime_ms"][order] if "uptime_ms" in data.columns else np.full(n, math.nan)
    received = (data.received_s if data.received_s is not None else data.unix_s)[order]
    starts = np.zeros(n, dtype=bool)
    numbers: dict[int, int] = {}  # file position -> journal boot number
    for number, named_boot in enumerate(journal.esp_boots if journal is not None else ()):
        if not named_boot.located or not n:
            continue
        assert named_boot.row_t is not None
        at, valid = parse_iso_timestamps(np.array([named_boot.row_t.encode("ascii", "replace")[:_TS_WIDTH]]))
        if not valid[0]:
            continue
        hits = np.flatnonzero((received == at[0]) & (seq == named_boot.seq) & (uptime == named_boot.uptime_ms))
        if hits.size:
            starts[hits[0]] = True
            numbers.setdefault(int(hits[0]), number)
    boots_in_file = split_boots(seq, uptime, starts)
    by_esp = np.lexsort((seq, boots_in_file))  # stable: a copy of a line stays where it was
    rows, boot, seq, uptime = order[by_esp], boots_in_file[by_esp], seq[by_esp], uptime[by_esp]
    times = np.zeros(n)
    edges = np.flatnonzero(np.diff(boot)) + 1
    for start, stop in zip(np.concatenate(([0], edges)).tolist(), np.concatenate((edges, [n])).tolist()):
        if stop > start:
            times[start:stop] = boot_clock_s(seq[start:stop], uptime[start:stop], data.unix_s[rows[start:stop]])
    count = int(boot[-1]) + 1 if n else 0
    named: list[set[int]] = [set() for _ in range(count)]
    for position, number in numbers.items():
        named[int(boots_in_file[position])].add(number)
    return EspOrder(rows, boot, times, tuple(frozenset(s) for s in named))


def held_max(values: np.ndarray) -> Optional[float]:
    """The largest value that two consecutive values both reach: max over i of min(v[i], v[i+1]) (None under 2).

    One value alone, spike or dip, never decides it; a level that lasts is found whatever one
    value among it says.
    """
    if values.size < 2:
        return None
    return float(np.max(np.minimum(values[:-1], values[1:])))


def last_window_mask(times_s: np.ndarray, step: np.ndarray, phase: int, window_s: float) -> np.ndarray:
    """Rows of `phase` measured in its last `window_s` seconds (by time, whatever the rows' order)."""
    in_phase = step == phase
    if not in_phase.any():
        return in_phase
    end = times_s[in_phase].max()
    return in_phase & (times_s >= end - window_s)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count > 1 else ''}"


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in sorted(span for span in spans if span[0] <= span[1]):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def full_charge_window(data: TestData, order: EspOrder, journal: Optional[record.RecordState] = None,
                       window_s: float = grading.FULL_CHARGE_WINDOW_S) -> tuple[np.ndarray, list[str]]:
    """The full-charge window's rows (TestData indices, in the ESP's order) and why they cannot support a grade.

    The window is phase 2's last `window_s` on the clock of the last ESP boot that measured
    phase 2. It cannot support a grade when it holds fewer than MIN_WINDOW_ROWS rows or than
    MIN_WINDOW_SHARE of what the line period gives over `window_s` (over phase 2 when it was
    shorter in a boot that measured all of it; an ESP reboot in the window's time leaves its
    earlier part on another clock), or when lines are missing in it: seq holes among its rows or
    at its edges (a line lost at its end may have been phase 2's last), and the journal's lost
    seq spans of that boot.
    """
    step = data.step[order.rows]
    # A phase-2 row alone between rows of other phases (one garbled phase field) is not phase 2:
    # the phase, like every fact of the verdict, counts from two consecutive rows.
    charge_rows = step == CHARGE_PHASE
    paired = np.zeros_like(charge_rows)
    paired[1:] |= charge_rows[:-1]
    paired[:-1] |= charge_rows[1:]
    step = np.where(charge_rows & ~paired, -1, step)
    in_phase = step == CHARGE_PHASE
    if not in_phase.any():
        return np.zeros(0, dtype=np.int64), ["fenêtre de pleine charge : aucune ligne mesurée en phase 2"]
    boot = int(order.boot[in_phase].max())
    positions = np.flatnonzero(order.boot == boot)  # contiguous
    times, steps = order.time_s[positions], step[positions]
    seq = data["seq"][order.rows[positions]].astype(np.int64)
    inside = np.flatnonzero(last_window_mask(times, steps, CHARGE_PHASE, window_s))
    rows = order.rows[positions[inside]]
    charge = steps == CHARGE_PHASE
    end = float(times[charge].max())
    period = line_period_s(seq[charge], times[charge])
    span = end - float(times[charge].min())
    earlier = bool(np.any(order.boot[in_phase] < boot))
    covered = window_s if earlier else min(window_s, span)
    expected = max(MIN_WINDOW_ROWS, int(covered / period + 1e-6) + 1) if math.isfinite(period) else MIN_WINDOW_ROWS
    doubts = []
    if rows.size < MIN_WINDOW_ROWS or rows.size < MIN_WINDOW_SHARE * expected:
        doubts.append(f"fenêtre de pleine charge : {_plural(int(rows.size), 'ligne')} sur {expected} attendues")
    elif not math.isfinite(period):  # phase 2's rows all at one time: where its last 10 minutes begin is unknown
        doubts.append("fenêtre de pleine charge : horloge immobile en phase 2, ses 10 dernières minutes sont inconnues")

    first, last = int(inside[0]), int(inside[-1])
    lost: list[tuple[int, int]] = []
    window_seq = seq[first:last + 1]
    for a, b in zip(window_seq[:-1].tolist(), window_seq[1:].tolist()):
        if b > a + 1:
            lost.append((a + 1, b - 1))
    low = int(seq[first])  # the first seq that may be the window's
    if first > 0 and seq[first] > seq[first - 1] + 1:
        # A hole just before the window: its lines measured within the window's time (spread
        # evenly between the rows around it) count.
        s0, s1, t0, t1 = int(seq[first - 1]), int(seq[first]), float(times[first - 1]), float(times[first])
        start = end - window_s
        if t1 > t0:
            low = max(s0 + 1, math.ceil(s0 + (start - t0) * (s1 - s0) / (t1 - t0) - 1e-9))
        elif t0 >= start:
            low = s0 + 1
        low = min(low, s1)
        if low < s1:
            lost.append((low, s1 - 1))
    after = int(seq[last + 1]) - 1 if last + 1 < seq.size else None
    if after is not None and after > seq[last]:
        lost.append((int(seq[last]) + 1, after))
    if journal is not None:
        mapped = set().union(*order.journal_boots) if order.journal_boots else set()
        ours = order.journal_boots[boot] if boot < len(order.journal_boots) else frozenset()
        high = after if after is not None else math.inf
        for number, a, b in journal.seq_lost_spans:
            if number is not None and number in mapped and number not in ours:
                continue  # another boot's (a span of an unknown boot may be this one's: it counts)
            if b >= low and a <= high:
                lost.append((max(a, low), int(min(b, high))))
    spans = _merged(lost)
    if spans:
        count = sum(b - a + 1 for a, b in spans)
        named = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in spans[:_SHOWN_SPANS])
        more = ", …" if len(spans) > _SHOWN_SPANS else ""
        doubts.append(f"fenêtre de pleine charge : {_plural(count, 'ligne')} "
                      f"perdue{'s' if count > 1 else ''} (seq {named}{more})")
    return rows, doubts


def test_facts(data: TestData, journal: Optional[record.RecordState] = None) -> grading.TestFacts:
    """What data.csv (and the test's journal) give the grade, each fact held by two consecutive rows.

    The cell spread at full charge (phase 2's last 10 minutes of the ESP's clock) and the
    highest temperature of the test; and what the data cannot support (grading.Doubt): the
    window's rows too few or lines lost in it, a phase recovered from the lines.
    """
    spread_check, temperature_check = (grading.CHECK_SPREAD,), (grading.CHECK_TEMPERATURE,)
    doubts: list[grading.Doubt] = []
    if journal is not None:
        # Only a phase whose start the checks depend on: the charge (its full-charge window) and
        # the discharge (the capacity); the storage recharge and the end decide nothing.
        for step, seq in dict.fromkeys((s, q) for s, q in journal.recovered_steps if s in (2, 3)):
            at = "" if seq is None else f", seq {seq}"
            doubts.append(grading.Doubt(
                f"phase {step} reconstituée à partir des lignes BMS (son message d'étape n'est jamais arrivé{at})",
                (grading.CHECK_SOH, grading.CHECK_SPREAD)))
    if not len(data):
        doubts.append(grading.Doubt("data.csv : aucune ligne mesurée", spread_check + temperature_check))
        return grading.TestFacts(cell_spread_mv=None, temperature_max_c=None, doubts=tuple(doubts))
    order = esp_order(data, journal)
    window, window_doubts = full_charge_window(data, order, journal)
    doubts += [grading.Doubt(reason, spread_check) for reason in window_doubts]
    temperature = held_max(data["temperature_c"][order.rows])
    if temperature is None:
        doubts.append(grading.Doubt("température maximale : moins de deux lignes mesurées", temperature_check))
    return grading.TestFacts(
        cell_spread_mv=held_max(data["cell_max_mv"][window] - data["cell_min_mv"][window]),
        temperature_max_c=temperature,
        doubts=tuple(doubts),
    )


# =========================================================================== one test folder (files)


@dataclass
class Report:
    """A loaded test: folder, rows, config.json and summary."""

    folder: Path
    data: TestData
    config: record.TestSummary
    summary: Summary


def load_report(folder: Path, correct_to_25c: Callable[[float, Optional[float]], float], min_gap_s: float) -> Report:
    """Load a test folder (data.csv, config.json tolerantly) and compute its summary.

    `correct_to_25c` is the home's StaticFiles.correct_to_25c; `min_gap_s` the shortest silence
    that is a stop (the settings' bms_timeout_s).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} n'est pas un dossier de test")
    data = load_test_data(folder)
    config = store.read_test_config(folder)
    if config is None:
        data.notes.append("config.json absent ou illisible : résultats de l'ESP inconnus")
        config = record.TestSummary()
    rejected_csv = folder / record.REJECTED_CSV_FILE
    if config.rejected_count is None and rejected_csv.exists():
        try:
            config = replace(config, rejected_count=datafile.count_csv_rows(rejected_csv))
        except OSError:
            pass
    gap = stop_gap_s(data.unix_s, min_gap_s)
    summary = compute_summary(data, config, gap, correct_to_25c, folder=folder)
    return Report(folder=folder, data=data, config=config, summary=summary)
