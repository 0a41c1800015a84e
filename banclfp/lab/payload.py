"""What a Pi sends of one test folder: its summary fields, its rows for charts, its certificate.

Pure functions turn a summary and data.csv's bytes into the values sent; `read_test` and
`read_rows` are the thin readers of one folder (with the project's readers: record.load_summary,
the 25 °C correction of record.ri_at_25c). Nothing here talks to the database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from banclfp.recording import record
from banclfp.verdict import grading
from banclfp.wire import protocol

ROW_BUCKET_S = 5
"""Width of a chart bucket: the first row of each 5 s bucket is sent, so sent rows are at most 10 s apart."""
ROWS_CHUNK_BYTES = 4 << 20
"""data.csv read per transaction: a week of backlog goes in bounded steps, each committed."""


def test_id(site: str, relative: str) -> str:
    """The id of a test in the lab: 'SITE:bancN/DDMMYYYY-SERIAL[-K]', fixed at its first start."""
    return f"{site}:{relative}"


@dataclass(frozen=True)
class TestPayload:
    """One row of lab.tests, as sent (the certificate goes apart: it is sent only when it changed)."""

    __test__ = False

    test_id: str
    site: str
    banc: str
    folder: str
    serial: str
    serial_key: str
    start_at: Optional[datetime]
    end_at: Optional[datetime]
    status: str
    phase: Optional[int]
    grade: Optional[str]
    soh_pct: Optional[float]
    model: Optional[str]
    grading_version: Optional[str]
    reason: Optional[str]
    verdict: Optional[str]  # JSON text of config.json's verdict
    capacity_ah: Optional[float]
    capacity_wh: Optional[float]
    ri_discharge_25c_ohm: Optional[float]
    ri_charge_25c_ohm: Optional[float]
    diffusion_discharge_25c_ohm: Optional[float]
    diffusion_charge_25c_ohm: Optional[float]
    data_sha256: Optional[str]
    content_sha256: str

    @property
    def graded(self) -> bool:
        """True when the test has its verdict (it then never changes on disk but by hand)."""
        return self.verdict is not None

    def values(self) -> tuple[Any, ...]:
        """The fields in column order."""
        return astuple(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TestPayload))


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def payload_from_summary(site: str, relative: str, summary: record.TestSummary,
                         at_25c: Mapping[str, Optional[float]], data_sha256: Optional[str]) -> TestPayload:
    """The test's lab row from its summary, its Ri/diffusion means at 25 °C and data.csv's hash (pure)."""
    verdict = summary.verdict
    serial = summary.battery_serial or ""
    # As the history index: the verdict's Ri (the one the grade rests on) before a recomputed one.
    judged = verdict.check(grading.CHECK_RI) if verdict is not None else None
    judged_ri = _number(judged.value) if judged is not None else None
    at_25c = {**at_25c, grading.CHECK_RI: judged_ri} if judged_ri is not None else at_25c
    values: dict[str, Any] = {
        "test_id": test_id(site, relative), "site": site, "banc": summary.banc or relative.split("/")[0],
        "folder": relative, "serial": serial, "serial_key": record.serial_key(serial),
        "start_at": record.parse_time(summary.first_handle), "end_at": record.parse_time(summary.end_time),
        "status": summary.status or "",
        "phase": summary.current_step,
        "grade": verdict.grade if verdict is not None else None,
        "soh_pct": verdict.soh_pct if verdict is not None else None,
        "model": verdict.model if verdict is not None else None,
        "grading_version": verdict.grading_version if verdict is not None else None,
        "reason": verdict.reason if verdict is not None else None,
        "verdict": json.dumps(verdict.to_json(), sort_keys=True, ensure_ascii=False) if verdict is not None else None,
        "capacity_ah": _number(summary.capacity_ah), "capacity_wh": _number(summary.capacity_wh),
        **{f"{key}_25c_ohm": at_25c.get(key) for key in protocol.RI_KEYS},
        "data_sha256": data_sha256,
    }
    # The hash of what is sent: the database rewrites a test only when it differs, and keeps
    # what a graded test said before a hand edit (lab.test_revisions).
    canonical = json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()},
                           sort_keys=True, ensure_ascii=False)
    values["content_sha256"] = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return TestPayload(**values)


def file_sha256(path: Path) -> Optional[str]:
    """SHA-256 of a file (None when it is missing)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def read_test(site: str, folder: Path, correct_to_25c: Callable[[float, Optional[float]], float]) -> Optional[TestPayload]:
    """The payload of one test folder (None when it holds no test yet); `correct_to_25c`: its home's curve."""
    summary = record.load_summary(folder)
    if summary is None:
        return None
    at_25c: dict[str, Optional[float]] = {}
    for key in protocol.RI_KEYS:
        try:
            at_25c[key] = record.ri_at_25c(summary, key, correct_to_25c)
        except (ValueError, OSError):
            at_25c[key] = None  # a broken temperature_coefficients.json: sent without, as the history does
    # data.csv is hashed once the test is finished (the certificate's hash); a running test's grows.
    data_sha = file_sha256(folder / record.DATA_CSV_FILE) if record.summary_finished(summary) else None
    return payload_from_summary(site, f"{folder.parent.name}/{folder.name}", summary, at_25c, data_sha)


def folder_signature(folder: Path) -> Optional[str]:
    """Size and mtime of what a change of the test changes (journal, config.json, data.csv, certificate)."""
    parts = []
    for name in (record.EVENTS_FILE, record.TEST_CONFIG_FILE, record.DATA_CSV_FILE, record.CERTIFICATE_FILE):
        try:
            st = os.stat(folder / name)
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return None if parts[:2] == ["-", "-"] else "/".join(parts)


# --------------------------------------------------------------------------- rows for charts

RowValues = tuple[Any, ...]
"""(bucket, measured_at, step, voltage_v, current_a, soc_pct, temperature_c, capacity_ah, energy_wh, cell_min_mv, cell_max_mv)."""
ROW_COLUMNS: tuple[str, ...] = ("bucket", "measured_at", "step", "voltage_v", "current_a", "soc_pct", "temperature_c",
                                "capacity_ah", "energy_wh", "cell_min_mv", "cell_max_mv")
_VALUE_COLUMNS = ROW_COLUMNS[3:]


def _float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def chart_rows(header: list[str], lines: Iterable[str]) -> list[RowValues]:
    """The first row of each ROW_BUCKET_S bucket of measured_at among `lines` (data.csv rows, file order; pure).

    A file of the earlier version has no measured_at: its receipt time stands for it.
    """
    column = {name: i for i, name in enumerate(header)}
    time_col = column.get("measured_at", column.get("timestamp"))
    if time_col is None:
        return []
    seen: set[int] = set()
    out: list[RowValues] = []
    for fields_ in csv.reader(lines):
        if len(fields_) != len(header):
            continue  # a torn or foreign line: data.csv's readers skip it too
        text = fields_[time_col] or fields_[column.get("timestamp", time_col)]
        moment = record.parse_time(text)
        if moment is None:
            continue
        bucket = math.floor(moment.timestamp() / ROW_BUCKET_S)
        if bucket in seen:
            continue
        seen.add(bucket)
        step_text = fields_[column["step"]] if "step" in column else ""
        values = [_float(fields_[column[name]]) if name in column else None for name in _VALUE_COLUMNS]
        out.append((bucket, moment, int(step_text) if step_text.isdigit() else None, *values))
    return out


def read_rows(path: Path, offset: int, chunk_bytes: int = ROWS_CHUNK_BYTES) -> tuple[list[RowValues], int]:
    """Chart rows of data.csv's complete lines from byte `offset` (0: the start), and the offset after them."""
    try:
        with open(path, "rb") as fh:
            header_line = fh.readline()
            if not header_line.endswith(b"\n"):
                return [], offset
            start = max(offset, len(header_line))
            fh.seek(start)
            chunk = fh.read(chunk_bytes)
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1  # a line still being written is left for the next time
    if end == 0:
        return [], start
    header = header_line.decode("ascii", "replace").strip().split(",")
    text = io.StringIO(chunk[:end].decode("utf-8", "replace"))
    return chart_rows(header, text), start + end
