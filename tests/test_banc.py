"""banc.py: pure helpers (tables) and the real process against a real Mosquitto (integration)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pytest

from banclfp.infra import storage
from banclfp.recording import bench_process as banc, record
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import (
    BANC_SCRIPT,
    DEFAULT_SERIAL,
    BancFleet,
    MqttProbe,
    battery_folders,
    bms_line,
    data_seqs,
    files_under,
    read_data_rows,
    read_rejected_rows,
    wait_until,
)
from banclfp.testkit.support import REPO_DIR, MosquittoBroker, project_env
from banclfp.wire import protocol

T = protocol.topics(1)
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$")


# =========================================================================== pure helpers


@pytest.mark.parametrize(
    "last, seq, redelivered, verdict, new_last",
    [
        (None, 0, False, banc.SEQ_FIRST, 0),
        (None, 57, False, banc.SEQ_FIRST, 57),
        (4, 5, False, banc.SEQ_NEXT, 5),
        (4, 4, False, banc.SEQ_DUPLICATE, 4),  # QoS 1 duplicate: same seq as the last accepted
        (4, 4, True, banc.SEQ_DUPLICATE, 4),
        (4, 9, False, banc.SEQ_GAP, 9),
        (4, 9, True, banc.SEQ_GAP, 9),  # a redelivered message never written is new data
        (500, 0, False, banc.SEQ_RESTART, 0),  # ESP reboot: seq starts again at 0, not a gap
        (500, 3, False, banc.SEQ_RESTART, 3),  # reboot whose first lines were lost
        (500, 498, True, banc.SEQ_DUPLICATE, 500),  # broker re-sends what was written before a crash
        (5000, 10, True, banc.SEQ_RESTART, 10),  # too far back for a redelivery
    ],
)
def test_seq_tracker(last: Optional[int], seq: int, redelivered: bool, verdict: str, new_last: int) -> None:
    tracker = banc.SeqTracker(last)
    assert tracker.classify(seq, redelivered) == verdict
    assert tracker.last == new_last


HEADER = ",".join(record.DATA_CSV_HEADER) + "\n"
ROW7 = "2025-04-15T10:00:00.000+02:00,3,7,52.1,-10.0,60.0,25.0,12.5,640.2,3250,3262,0\n"
ROW8 = "2025-04-15T10:00:01.000+02:00,3,8,52.1,-10.0,60.0,25.0,12.75,650.0,3250,3262,0\n"


@pytest.mark.parametrize(
    "content, lines, torn, last",
    [
        (b"", 0, b"", None),
        (HEADER.encode(), 1, b"", None),
        ((HEADER + ROW7).encode(), 2, b"", (7, 12.5, 640.2)),
        ((HEADER + ROW7 + ROW8).encode(), 3, b"", (8, 12.75, 650.0)),
        ((HEADER + ROW7 + ROW8[:30]).encode(), 2, ROW8[:30].encode(), (7, 12.5, 640.2)),  # row cut by a power loss
        ((HEADER + ROW7).encode() + b"\0" * 4096, 2, b"\0" * 4096, (7, 12.5, 640.2)),  # ext4 zero-filled tail
        ((HEADER + ROW7 + "garbage,line\n").encode(), 3, b"", (7, 12.5, 640.2)),  # unparseable last line skipped
        (HEADER[:20].encode(), 0, HEADER[:20].encode(), None),  # header itself torn
    ],
)
def test_scan_csv_and_last_row(tmp_path: Path, content: bytes, lines: int, torn: bytes, last: Optional[tuple]) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    scan = banc.scan_csv(path, chunk_bytes=64)  # tiny chunks: the chunk boundaries are exercised too
    assert (scan.lines, scan.torn, scan.size) == (lines, torn, len(content))
    assert scan.valid_size == len(content) - len(torn)
    row = banc.last_data_row(scan.tail_lines)
    assert (None if row is None else (row.seq, row.capacity_ah, row.energy_wh)) == last


def test_scan_csv_counts_a_long_file_and_keeps_the_real_tail(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    body = "".join(ROW7.replace(",7,", f",{i},", 1) for i in range(5000))
    path.write_text(HEADER + body)
    scan = banc.scan_csv(path, tail_bytes=1000, chunk_bytes=4096)
    assert scan.lines == 5001
    last = banc.last_data_row(scan.tail_lines)
    assert last is not None and last.seq == 4999
    assert scan.tail_lines[-1].endswith(b",0") and all(b"," in line for line in scan.tail_lines)
    assert banc.scan_csv(tmp_path / "missing.csv").lines == 0


HOSTILE_PAYLOADS = [
    b"",
    b"plain",
    b'a,b,"c\nd",e\r\nf',
    b"\x00\x01\x02\x1b[31m",
    b"\xff\xfe\xfd not utf-8",
    "é€😀 unicode".encode(),
    b"\\x41 backslash",
    b"=cmd|' /C calc'!A0",
    b"1," * 5000,
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS)
def test_rejected_row_is_one_safe_csv_line(payload: bytes) -> None:
    raw = banc.format_rejected_row("2025-04-15T10:00:00.000+02:00", "banc1/bms/data", 'bad "reason"\nx', payload)
    text = raw.decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    (row,) = list(csv.reader(io.StringIO(text)))
    assert len(row) == 4
    assert row[1] == "banc1/bms/data"
    assert all(ch.isprintable() for field in row for ch in field)
    assert len(row[3]) <= banc.REJECT_PAYLOAD_MAX_CHARS + 20
    if len(payload) <= 50 and payload.isascii() and all(32 <= b < 127 and b != 92 for b in payload):
        assert row[3] == payload.decode()  # harmless text is kept as it was


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"1,2", "1,2"),
        (b"a\nb", "a\\x0ab"),
        (b"a\\b", "a\\\\b"),
        (b"\xff", "\\xff"),
        (b"x" * 10, "xxxx…(10 octets)"),
    ],
)
def test_safe_text(raw: bytes, expected: str) -> None:
    assert banc.safe_text(raw, max_chars=4 if len(raw) == 10 else 200) == expected


@pytest.mark.parametrize(
    "payload, expected, uptime",
    [(b"1,52.0,-1.5,50.0,25.0,0.0,0.0,3250,3262,0", "1,52.0,-1.5,50.0,25.0,0.0,0.0,3250,3262,0", ""),
     # Contract v2: the 11th field (the ESP's uptime_ms) goes into its own column, uptime_ms.
     (b"1,52.0,-1.5,50.0,25.0,0.0,0.0,3250,3262,0,6632145", "1,52.0,-1.5,50.0,25.0,0.0,0.0,3250,3262,0", "6632145")],
)
def test_bms_fields_and_row(payload: bytes, expected: str, uptime: str) -> None:
    fields = banc.bms_fields(payload)
    assert ",".join(fields) == expected
    stamp, measured = "2025-04-15T10:00:00.000+02:00", "2025-04-15T09:59:59.990+02:00"
    row = record.format_data_row(stamp, 3, fields, int(uptime) if uptime else None, measured).decode()
    assert row == f"{stamp},3,{expected},{uptime},{measured}\n"
    assert len(next(csv.reader([row]))) == len(record.DATA_CSV_HEADER)
    # A folder of the earlier version keeps its 12 columns.
    old = record.format_data_row(stamp, 3, fields, 5, measured, width=len(record.DATA_CSV_HEADER_V1)).decode()
    assert old == f"{stamp},3,{expected}\n"


class ScriptedWriter:
    """os.write stand-in: follows a script of outcomes ("ok", "fail", or an int = bytes accepted)."""

    def __init__(self, script: list[str | int]) -> None:
        self.script = list(script)

    def __call__(self, fd: int, data: bytes) -> int:
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(step, len(data)) if isinstance(step, int) else len(data)
        return os.write(fd, bytes(data[:n]))


@pytest.mark.parametrize(
    "script",
    [
        [],
        ["fail", "fail", "fail"],
        [10, "fail", "fail"],  # a partial write, then the disk is full
        ["ok", 3, 0 + 1, "fail", "ok", 5],
        ["fail"] * 20,
    ],
)
def test_append_file_keeps_order_and_never_duplicates(tmp_path: Path, script: list) -> None:
    path = tmp_path / "data.csv"
    target = banc.AppendFile(path, ("a", "b"), writer=ScriptedWriter([]))
    target.open()
    target._write = ScriptedWriter(script)
    rows = [f"{i},{'x' * (i % 7)}\n".encode() for i in range(30)]
    for i, row in enumerate(rows):
        target.append(row)
        if i % 4 == 3:
            target.flush_pending()  # the tick's retry
    for _ in range(len(script) + 2):
        target.flush_pending()
    assert not target.failing
    target.close()
    assert path.read_bytes() == b"a,b\n" + b"".join(rows)


def test_append_file_memory_cap_drops_and_counts(tmp_path: Path) -> None:
    target = banc.AppendFile(tmp_path / "f.csv", ("a",), writer=ScriptedWriter([]), max_pending_bytes=20)
    target.open()
    target._write = ScriptedWriter(["fail"])
    for _ in range(10):
        target.append(b"123456789\n")
    assert target.pending_bytes == 20 and target.dropped_rows == 8 and target.pending_rows == 2
    assert target.flush_pending()
    target.close()
    assert (tmp_path / "f.csv").read_bytes() == b"a\n" + b"123456789\n" * 2


class DiskFaults:
    """os.fsync / os.ftruncate stand-ins that fail with EIO while their switch is on; the writes are counted."""

    def __init__(self) -> None:
        self.fsync_fails = False
        self.truncate_fails = False
        self.written: list[bytes] = []

    def write(self, fd: int, data: bytes) -> int:
        self.written.append(bytes(data))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_fails:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        if self.truncate_fails:
            raise OSError(errno.EIO, "Input/output error")
        os.ftruncate(fd, size)


@pytest.mark.parametrize("failure", ["fsync", "partial write", "nothing written"])
def test_a_journal_line_that_could_not_be_cut_back_is_never_durable_nor_written_twice(tmp_path: Path,
                                                                                   failure: str) -> None:
    """fsync (or the write) fails and so does the cut: the bytes may stay, the record is not written;
    nothing follows them until they are cut, then the record is written again, once, and fsynced."""
    faults = DiskFaults()
    path = tmp_path / record.EVENTS_FILE
    target = banc.AppendFile(path, (), writer=faults.write, durable=True, fsync=faults.fsync,
                             truncate=faults.truncate)
    target.open()
    assert target.append(b'{"event":"a"}\n')
    faults.truncate_fails = True
    if failure == "fsync":
        faults.fsync_fails = True
    else:
        target._write = ScriptedWriter([5, "fail"] if failure == "partial write" else ["fail"])
    assert not target.append(b'{"event":"ri"}\n')  # never reported written
    assert target.failing and target.error is not None
    left = {"fsync": b'{"event":"ri"}\n', "partial write": b'{"eve', "nothing written": b""}[failure]
    assert path.read_bytes() == b'{"event":"a"}\n' + left  # what the OS kept, unsynced
    assert target.unsure
    assert not target.append(b'{"event":"b"}\n')  # in memory, behind it
    target._write, faults.fsync_fails = faults.write, False
    faults.written.clear()
    if left:
        assert not target.flush_pending()  # the tail cannot be cut yet: nothing is written after it
        assert path.read_bytes() == b'{"event":"a"}\n' + left and faults.written == []
        assert target.pending_rows == 2
        faults.truncate_fails = False
    assert target.flush_pending()  # cut, then the record written again: one copy, fsynced
    assert faults.written == [b'{"event":"ri"}\n{"event":"b"}\n']
    assert path.read_bytes() == b'{"event":"a"}\n{"event":"ri"}\n{"event":"b"}\n'
    assert not target.unsure and target.size == path.stat().st_size and target.error is None
    assert target.close() == 0


def test_a_journal_deleted_while_its_tail_is_unsure_is_put_back_without_it(tmp_path: Path) -> None:
    faults = DiskFaults()
    path = tmp_path / record.EVENTS_FILE
    target = banc.AppendFile(path, (), durable=True, fsync=faults.fsync, truncate=faults.truncate)
    target.open()
    assert target.append(b"one\n")
    faults.fsync_fails = faults.truncate_fails = True
    assert not target.append(b"two\n")
    faults.fsync_fails = False
    path.unlink()
    assert target.removed()
    assert target.restore() == len(b"one\n")  # only what was fsynced
    assert path.read_bytes() == b"one\n" and not target.unsure
    assert target.flush_pending()  # the new file needs no cut
    assert path.read_bytes() == b"one\ntwo\n"
    target.close()


def test_a_recorder_whose_journal_cannot_be_cut_back_holds_the_ri_result_and_records_it_once(store: Store,
        banc_home: Path) -> None:
    """The Ri result is not acknowledged while its line is not fsynced; the means count it once."""
    recorder = open_recorder(banc_home, [])
    faults = DiskFaults()
    recorder.journal._fsync, recorder.journal._truncate = faults.fsync, faults.truncate
    faults.fsync_fails = faults.truncate_fails = True
    recorder.handle_ri(b'{"ri_discharge": 0.030}')
    assert recorder.blocked
    faults.fsync_fails = False
    assert not recorder.flush_all() and recorder.blocked  # fsync would work, but the line is still there uncut
    faults.truncate_fails = False
    assert recorder.flush_all() and not recorder.blocked
    recorder.close()
    events = record.read_events(recorder.folder)[0]
    assert [e.values for e in events if isinstance(e, record.RiEvent)] == [{"ri_discharge": 0.030}]
    config = record.corrected_summary_file(recorder.folder)
    assert config is not None and config["ri_discharge_count"] == 1


def test_append_durably_never_leaves_two_copies_of_a_line_it_could_not_cut(tmp_path: Path) -> None:
    faults = DiskFaults()
    path = tmp_path / record.EVENTS_FILE
    storage.append_durably(path, b"a\n")
    faults.fsync_fails = faults.truncate_fails = True
    with pytest.raises(OSError):
        storage.append_durably(path, b"b\n", fsync=faults.fsync, truncate=faults.truncate)
    assert path.read_bytes() == b"a\nb\n"  # left in the file, but the caller was told it is not durable
    faults.fsync_fails = False
    with pytest.raises(OSError):  # the retry: the line cannot be cut yet, so nothing is written
        storage.append_durably(path, b"b\n", fsync=faults.fsync, truncate=faults.truncate)
    assert path.read_bytes() == b"a\nb\n"
    storage.append_durably(path, b"b\n", fsync=faults.fsync)  # cut, then written again and fsynced
    assert path.read_bytes() == b"a\nb\n"
    storage.append_durably(path, b"c\n")
    assert path.read_bytes() == b"a\nb\nc\n"
    # Bytes another writer put after the unsynced line are never cut with it.
    faults.fsync_fails = True
    with pytest.raises(OSError):
        storage.append_durably(path, b"d\n", fsync=faults.fsync, truncate=faults.truncate)
    with open(path, "ab") as fh:
        fh.write(b"x\n")
    storage.append_durably(path, b"e\n")
    assert path.read_bytes() == b"a\nb\nc\nd\nx\ne\n"


@pytest.mark.parametrize(
    "events, expected",
    [
        # (time, "feed"|"check", connected_since) -> result of that call
        ([(0, "check", 0), (29, "check", 0), (30, "check", 0)], [None, None, 30]),
        ([(0, "feed", 0), (31, "check", 0), (45, "check", 0), (50, "feed", 0)], [None, 31, None, 50]),
        ([(10, "check", None), (100, "check", None)], [None, None]),  # broker away: not the BMS's fault
        ([(0, "feed", 0), (40, "check", 35), (65, "check", 35)], [None, None, 30]),  # counts from the reconnection
        ([(0, "feed", 0), (5, "feed", 0), (34, "check", 0), (35, "check", 0)], [None, None, None, 30]),
        ([(0, "check", 0), (30, "check", 0), (40, "feed", 0), (69, "check", 0), (70, "check", 0)],
         [None, 30, 40, None, 30]),  # first data ever ends the silence; the next silence alerts again
    ],
)
def test_bms_watchdog(events: list, expected: list) -> None:
    dog = banc.BmsWatchdog(30.0)
    results = []
    for at, action, connected_since in events:
        results.append(dog.feed(at) if action == "feed" else dog.check(at, connected_since))
    assert results == expected


def test_rate_limiter_and_alert_latch() -> None:
    limiter = banc.RateLimiter(per_minute=2)
    assert [limiter.allow(t)[0] for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert limiter.allow(61) == (True, 2)
    latch = banc.AlertLatch()
    assert latch.raise_("x") and not latch.raise_("x") and latch.is_raised("x")
    assert latch.clear("x") and not latch.clear("x")


@pytest.mark.parametrize(
    "exc, text",
    [(OSError(errno.ENOSPC, "x"), "disque plein"), (OSError(errno.EROFS, "x"), "disque en lecture seule"),
     (OSError(errno.EACCES, "x"), "permission refusée"), (ValueError("bad json"), "bad json")],
)
def test_describe_os_error(exc: BaseException, text: str) -> None:
    assert banc.describe_os_error(exc) == text


def test_recorder_rebuilds_a_corrupt_config(store: Store, banc_home: Path) -> None:
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", DEFAULT_SERIAL, now)
    config = store.load_or_create_config(folder, "banc1", DEFAULT_SERIAL, now)
    store.create_data_csv(folder)
    alerts: list[str] = []
    recorder = banc.Recorder(store, folder, "banc1", DEFAULT_SERIAL, 1, alerts.append)
    recorder.open(config)
    recorder.handle_bms(bms_line(0, capacity_ah=1.5, energy_wh=75.0).encode())
    (folder / "config.json").write_text("{ not json")
    recorder.handle_step(b"3")  # fails once, moves the corrupt file aside and rebuilds it
    assert recorder.flush_all()
    rebuilt = record.corrected_summary_file(folder)
    assert rebuilt is not None
    assert rebuilt["current_step"] == 3 and rebuilt["capacity_ah"] == 1.5 and rebuilt["rows_count"] == 1
    assert any(p.name.startswith("config.json.corrupt-") for p in folder.iterdir())
    assert any("config.json" in a for a in alerts)
    recorder.close()


# =========================================================================== the real process

@pytest.fixture
def esp(broker: MosquittoBroker) -> Iterator[MqttProbe]:
    """The test's ESP32: publishes like the ESP and watches command, security and banc/status."""
    probe = MqttProbe(broker, [T.command, T.security, T.banc_status]).start()
    yield probe
    probe.stop()


def config_of(folder: Path) -> dict:
    """The test folder's config.json."""
    return json.loads((folder / "config.json").read_text())


def banc_entry(home: Path, number: int = 1) -> dict:
    """One bench's entry in bancs_config.json."""
    return json.loads((home / "bancs_config.json").read_text())["bancs"][number - 1]


@pytest.mark.parametrize(
    "args, env",
    [
        ([], {}),
        (["banc1"], {}),
        (["banc1", DEFAULT_SERIAL, "extra"], {}),
        (["banc0", DEFAULT_SERIAL], {}),
        (["banc5", DEFAULT_SERIAL], {}),  # 4 benches by default
        (["bancX", DEFAULT_SERIAL], {}),
        (["../banc1", DEFAULT_SERIAL], {}),
        (["banc1", "RW-12"], {}),
        (["banc1", "RW-../../etc"], {}),
        (["banc1", "rw-TEST0001"], {}),
        (["banc1", DEFAULT_SERIAL + "\n"], {}),
        (["banc1", DEFAULT_SERIAL], {"BANC_BMS_TIMEOUT_S": "soon"}),
    ],
)
def test_invalid_arguments_exit_2_and_create_nothing(banc_home: Path, args: list, env: dict) -> None:
    result = subprocess.run(
        [sys.executable, str(BANC_SCRIPT), *args], env=project_env(banc_home, None, **env), cwd=REPO_DIR,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("banc.py: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    assert files_under(banc_home) == []


def test_full_test_1_to_5(store: Store, fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    runner = fleet.start()
    esp.wait_for(T.command, "1")
    assert store.is_banc_running("banc1")
    ri_values = [0.0121, 0.0125, 0.0119]
    messages: list[tuple[str, str]] = [(T.step, "1")]
    expected_steps: list[int] = []
    seq = 0

    def lines(count: int, step: int, **values: float | Callable[[int], float]) -> None:
        """Queue `count` BMS lines expected in `step` (values may be functions of seq)."""
        nonlocal seq
        for _ in range(count):
            extra = {k: (v(seq) if callable(v) else v) for k, v in values.items()}
            messages.append((T.bms_data, bms_line(seq, **extra)))
            expected_steps.append(step)
            seq += 1

    for value in ri_values:
        lines(20, 1)
        messages.append((T.ri_results, json.dumps({"ri_discharge": value, "ri_charge": value * 0.9, "temperature_c": 24.0})))
    messages.append((T.step, "2"))
    lines(100, 2, current_a=20.0)
    messages.append((T.step, "3"))
    lines(120, 3, current_a=-50.0, capacity_ah=lambda s: (s - 160) * 0.5, energy_wh=lambda s: (s - 160) * 26.0)
    messages.append((T.step, "4"))
    lines(40, 4, current_a=10.0, capacity_ah=59.5, energy_wh=3094.0)
    messages.append((T.step, "5"))
    esp.publish_many(messages)

    assert runner.wait_exit(20) == 0
    folder = runner.folder()
    rows = read_data_rows(folder)
    assert [int(r["seq"]) for r in rows] == list(range(320))
    assert [int(r["step"]) for r in rows] == expected_steps
    assert all(ISO_MS.match(r["timestamp"]) for r in rows)
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert rows[-1]["capacity_ah"] == "59.500"
    config = config_of(folder)
    assert config["current_step"] == 5 and config["status"] == record.TEST_FINISHED and config["end_time"]
    assert config["capacity_ah"] == 59.5 and config["capacity_wh"] == 3094.0
    assert config["ri_discharge_average"] == pytest.approx(sum(ri_values) / 3)
    assert config["ri_charge_average"] == pytest.approx(sum(ri_values) / 3 * 0.9)
    assert config["ri_discharge_count"] == 3 and config["ri_charge_count"] == 3 and config["diffusion_charge_count"] == 0
    assert config["ri_temperature_c"] == 24.0
    assert (config["rows_count"], config["rejected_count"], config["duplicate_count"], config["seq_gap_count"]) == (320, 0, 0, 0)
    assert banc_entry(banc_home) == {"name": "Banc1", "status": "available", "serial-pending": None, "current_step": None}
    assert read_rejected_rows(folder) == []
    esp.wait_for(T.banc_status, protocol.STATUS_OFFLINE)
    assert esp.texts(T.command) == ["1"]
    assert esp.texts(T.security) == []
    assert not store.is_banc_running("banc1")


def test_stop_9_then_restart_resumes_in_the_same_folder(fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    runner = fleet.start()
    esp.wait_for(T.command, "1")
    esp.publish_many([(T.step, "1")] + [(T.bms_data, bms_line(i)) for i in range(20)]
                     + [(T.step, "2")] + [(T.bms_data, bms_line(i)) for i in range(20, 40)] + [(T.step, "9")])
    assert runner.wait_exit() == 0
    folder = runner.folder()
    config = config_of(folder)
    # The stop is a journal event: config.json says the test is stopped (resumable) at phase 2.
    assert (config["current_step"], config["status"]) == (2, record.TEST_STOPPED)
    assert banc_entry(banc_home) == {"name": "Banc1", "status": "occupied", "serial-pending": DEFAULT_SERIAL,
                                     "current_step": 2}
    assert data_seqs(folder) == list(range(40))
    # While the test is stopped the bench's data is not part of it (and would be timed wrongly).
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(1000, 1005)])

    seen = len(esp.messages(T.command))
    runner = fleet.start()
    esp.wait_for(T.command, "2", since=seen)
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(40, 50)])
    wait_until(lambda: len(read_data_rows(folder)) == 50, message="rows after the restart")
    assert battery_folders(banc_home, "banc1", DEFAULT_SERIAL) == [folder]
    rows = read_data_rows(folder)
    assert [int(r["seq"]) for r in rows] == list(range(50))
    assert [r["step"] for r in rows[40:]] == ["2"] * 10
    assert (folder / "data.csv").read_text().count("timestamp,step") == 1
    esp.publish(T.step, "9")
    assert runner.wait_exit() == 0


def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(store: Store, fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    runner = fleet.start()
    esp.wait_for(T.command, "1")
    esp.publish(T.step, "1")
    folder = runner.folder()
    infos = [esp.publish(T.bms_data, bms_line(i), wait=False) for i in range(2000)]
    # Header + 200 complete rows (a size threshold assumed 80 bytes a row; some rows are shorter).
    wait_until(lambda: (folder / "data.csv").read_bytes().count(b"\n") > 200, interval_s=0.005, message="first rows")
    runner.kill()  # in the middle of the stream: some lines written, some in flight, some queued
    for info in infos:
        info.wait_for_publish(10)
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(2000, 2100)])  # while banc.py is down
    esp.wait_for(T.banc_status, protocol.STATUS_OFFLINE)  # the last will
    assert not store.is_banc_running("banc1")
    written = len(read_data_rows(folder))
    assert 200 <= written < 2000
    # A power cut can also leave a torn last row: it must be moved aside, not break the file.
    with open(folder / "data.csv", "ab") as fh:
        fh.write(b"2025-04-15T10:00:00.0")

    runner = fleet.start()
    wait_until(lambda: len(data_seqs(folder)) >= 2100, timeout_s=20, message="backlog recorded")
    time.sleep(0.3)  # nothing more may arrive: a duplicate would show up here
    assert data_seqs(folder) == list(range(2100))
    rows = read_data_rows(folder)
    assert all(None not in r and len(r) == len(record.DATA_CSV_HEADER) for r in rows)
    rejected = read_rejected_rows(folder)
    assert len(rejected) == 1 and "incomplète" in rejected[0]["reason"] and "2025-04-15T10" in rejected[0]["payload"]
    esp.publish(T.step, "9")
    assert runner.wait_exit() == 0
    assert config_of(folder)["rows_count"] == 2100


def test_broker_killed_and_restarted(fleet: BancFleet, esp: MqttProbe, broker: MosquittoBroker) -> None:
    runner = fleet.start()
    esp.publish_many([(T.step, "1")] + [(T.bms_data, bms_line(i)) for i in range(50)])
    folder = runner.folder()
    wait_until(lambda: len(read_data_rows(folder)) == 50)
    # Let the broker save banc.py's persistent session (autosave every second) before the crash.
    db = broker.workdir / "mosquitto.db"
    saved_after = time.time()
    wait_until(lambda: db.exists() and db.stat().st_mtime > saved_after, timeout_s=5, message="broker autosave")
    broker.kill()
    broker.start()
    wait_until(esp.client.is_connected, timeout_s=10, message="probe reconnected")
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(50, 100)])
    wait_until(lambda: len(read_data_rows(folder)) == 100, timeout_s=20, message="rows after the broker restart")
    assert data_seqs(folder) == list(range(100))
    assert runner.alive()
    esp.publish(T.step, "9")
    assert runner.wait_exit() == 0


HOSTILE = [
    (T.step, b""), (T.step, b"abc"), (T.step, b"0"), (T.step, b"6"), (T.step, b"10"), (T.step, b"-1"),
    (T.step, b"1.5"), (T.step, b"2,3"), (T.step, b"9" * 600), (T.step, b"\xff\xfe"),
    (T.bms_data, b""), (T.bms_data, b"garbage"), (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262"),
    # Contract v2 made an 11th field (uptime_ms) valid: 12 fields is the "one too many" case now.
    (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0,7,8"),
    # Contract v2: whitespace, signs, exponents and leading zeros are rejected, not cleaned up.
    (T.step, b" 2"), (T.step, b"2\n"), (T.step, b"+2"), (T.step, b"02"),
    (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0\n"), (T.bms_data, b"1, 52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"),
    (T.bms_data, b"1,+52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"), (T.bms_data, b"1,5.2e1,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"),
    (T.bms_data, b"01,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"), (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0,-7"),
    (T.bms_data, b"1,nan,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"), (T.bms_data, b"1,inf,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"),
    (T.bms_data, b"1,520.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"), (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3300,3262,0"),
    (T.bms_data, b"-1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"), (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,2"),
    (T.bms_data, b"1,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0\n2,52.0,-1.0,50.0,25.0,0.0,0.0,3250,3262,0"),
    (T.bms_data, b'1,2,3,"\n,=cmd|x'), (T.bms_data, "1,52,0,é".encode()), (T.bms_data, b"\x00" * 100),
    (T.ri_results, b"{"), (T.ri_results, b"[]"), (T.ri_results, b'"x"'), (T.ri_results, b"null"), (T.ri_results, b"{}"),
    (T.ri_results, b'{"ri_discharge": "a"}'), (T.ri_results, b'{"ri_discharge": NaN}'),
    (T.ri_results, b'{"ri_discharge": -1}'), (T.ri_results, b'{"ri_charge": 1e400}'), (T.ri_results, b'{"foo\\n": 1}'),
    (T.ri_results, b'{"ri_charge": true}'), (T.ri_results, b'{"ri_charge": 0.01, "temperature_c": 900}'),
]
# Larger than the 4 KiB every project client announces as its MQTT v5 maximum packet size.
OVERSIZED = [(T.bms_data, b"1," * 100_000), (T.ri_results, b'{"a": "' + b"x" * 300_000 + b'"}')]


def test_hostile_input_on_every_topic(fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    runner = fleet.start()
    esp.publish(T.step, "1")
    esp.publish_many(HOSTILE)
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(10)] + [(T.bms_data, bms_line(9))]  # a QoS 1 duplicate
                     + [(T.ri_results, '{"ri_charge": 0.02}'), (T.step, "2")]
                     # protocol v2 firmware: the same lines with the ESP's uptime_ms as an 11th field
                     + [(T.bms_data, bms_line(i, uptime_ms=1000 * i)) for i in range(10, 20)])
    folder = runner.folder()
    wait_until(lambda: len(read_data_rows(folder)) == 20, message="good rows after the hostile ones")
    assert runner.alive()
    assert data_seqs(folder) == list(range(20))
    # data.csv keeps its header: every row, v1 or v2 line, has exactly the header's columns
    assert all(None not in row and len(row) == len(record.DATA_CSV_HEADER) and row["balancing"] == "0"
               for row in read_data_rows(folder))
    rejected = read_rejected_rows(folder)
    delivered = HOSTILE
    assert len(rejected) == len(delivered)
    assert [r["topic"] for r in rejected] == [topic for topic, _ in delivered]
    assert all(None not in r and r["reason"] and ISO_MS.match(r["timestamp"]) for r in rejected)
    raw_lines = (folder / "rejected.csv").read_bytes().split(b"\n")
    assert len(raw_lines) == len(delivered) + 2  # header + one physical line per reject + final newline
    assert all(len(line) < 1000 for line in raw_lines)
    esp.publish(T.step, "9")
    assert runner.wait_exit() == 0
    config = config_of(folder)
    assert (config["rejected_count"], config["rows_count"], config["current_step"]) == (len(delivered), 20, 2)
    assert config["duplicate_count"] == 1
    assert config["ri_charge_count"] == 1 and config["ri_charge_average"] == 0.02


def test_oversized_messages_never_reach_banc_py(banc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocole.md §4: banc.py announces a 4 KiB maximum packet size, so even a broker without a limit never delivers it more."""
    open_broker = MosquittoBroker(tmp_path / "open-broker", max_packet_size=None).start()
    try:
        for key, value in open_broker.env().items():
            monkeypatch.setenv(key, value)
        fleet = BancFleet(banc_home, open_broker)
        with MqttProbe(open_broker, [T.command]) as esp:
            runner = fleet.start()
            esp.wait_for(T.command, "1")
            esp.publish_many(OVERSIZED + [(T.bms_data, bms_line(0))])
            folder = runner.folder()
            wait_until(lambda: data_seqs(folder) == [0], message="the good line after the oversized ones")
            assert runner.alive() and read_rejected_rows(folder) == []
            with open(f"/proc/{runner.pid}/status") as fh:
                peak_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
            assert peak_kb < 60_000
            fleet.stop_all()
    finally:
        open_broker.stop()


def test_broker_refuses_oversized_packets(broker: MosquittoBroker) -> None:
    """The test brokers, like deploy/mosquitto.conf, refuse packets over 4 KiB: nobody receives them."""
    with MqttProbe(broker, [T.bms_data]) as watcher, MqttProbe(broker) as sender:
        sender.client.publish(T.bms_data, b"0" * 5000, qos=1)
        sender.client.publish(T.bms_data, b"small", qos=1)
        time.sleep(1.0)
        assert watcher.texts(T.bms_data) == []  # the oversized packet cost the sender its connection
    assert "max_packet_size 4096" in broker.conf_path.read_text()


def test_bms_watchdog_alerts_once_per_silence_and_notes_recovery(fleet: BancFleet, esp: MqttProbe) -> None:
    fleet.start(BANC_BMS_TIMEOUT_S="1")  # the shortest timeout settings accept (1..3600 s)
    first = esp.wait_for(T.security, timeout_s=5)
    assert "Aucune donnée BMS" in first.text and len(first.text) <= protocol.MAX_SECURITY_CHARS
    time.sleep(2.5)  # more than two timeouts: still a single alert for this silence
    assert len(esp.messages(T.security)) == 1
    esp.publish(T.bms_data, bms_line(0))
    note = esp.wait_for(T.security, since=1)
    assert "rétablies" in note.text
    second = esp.wait_for(T.security, since=2, timeout_s=5)
    assert "Aucune donnée BMS" in second.text


def test_write_failure_raises_an_alert_and_data_is_written_once_space_returns(fleet: BancFleet, esp: MqttProbe) -> None:
    runner = fleet.start()
    esp.publish_many([(T.step, "1")] + [(T.bms_data, bms_line(i)) for i in range(20)])
    folder = runner.folder()
    wait_until(lambda: len(read_data_rows(folder)) == 20)
    # The file-size limit of the running process makes its next writes fail (EFBIG) after
    # a partial row, as a full disk would; raising it again is "space returns".
    size = (folder / "data.csv").stat().st_size
    soft, hard = resource.prlimit(runner.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(runner.pid, resource.RLIMIT_FSIZE, (size + 100, hard))
    try:
        esp.publish_many([(T.bms_data, bms_line(i)) for i in range(20, 60)])
        alert = esp.wait_for(T.security, timeout_s=5)
        assert "data.csv" in alert.text and "fichier trop gros" in alert.text
        time.sleep(1.2)  # at least one retry while still failing: no crash, no second alert
        assert runner.alive() and len(esp.messages(T.security)) == 1
        assert (folder / "data.csv").read_bytes().count(b"\n") - 1 < 60  # the last row may be half written
    finally:
        resource.prlimit(runner.pid, resource.RLIMIT_FSIZE, (soft, hard))
    note = esp.wait_for(T.security, since=1, timeout_s=5)
    assert "rétablie" in note.text
    assert data_seqs(folder) == list(range(60))
    assert all(None not in r for r in read_data_rows(folder))
    esp.publish(T.step, "9")
    assert runner.wait_exit() == 0


def test_sigterm_closes_cleanly_and_keeps_the_session(fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    runner = fleet.start()
    esp.publish_many([(T.step, "1"), (T.step, "2")] + [(T.bms_data, bms_line(i, capacity_ah=0.0)) for i in range(30)])
    folder = runner.folder()
    wait_until(lambda: len(read_data_rows(folder)) == 30)
    seen = len(esp.messages(T.banc_status))
    assert runner.terminate() == 0
    esp.wait_for(T.banc_status, protocol.STATUS_OFFLINE, since=seen)
    config = config_of(folder)
    assert (config["current_step"], config["status"], config["rows_count"]) == (2, record.TEST_RUNNING, 30)
    assert banc_entry(banc_home)["status"] == "occupied"
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(30, 40)])  # queued in the kept session
    seen = len(esp.messages(T.command))
    runner = fleet.start()
    esp.wait_for(T.command, "2", since=seen)
    wait_until(lambda: len(read_data_rows(folder)) == 40, message="lines sent during the restart")
    # The ESP reboots: its seq starts again at 0; recorded, counted as a restart, not as gaps.
    esp.publish_many([(T.bms_data, bms_line(i)) for i in range(5)])
    wait_until(lambda: len(read_data_rows(folder)) == 45, message="lines after the ESP reboot")
    assert data_seqs(folder) == list(range(40)) + list(range(5))
    assert runner.terminate() == 0
    config = config_of(folder)
    assert (config["rows_count"], config["seq_restart_count"], config["seq_gap_count"]) == (45, 1, 0)


def test_broker_down_at_start(fleet: BancFleet, broker: MosquittoBroker, banc_home: Path) -> None:
    broker.stop()
    runner = fleet.runner()
    runner.start(wait_online=False)
    folder = wait_until(lambda: battery_folders(banc_home, "banc1", DEFAULT_SERIAL), message="test folder")[0]
    time.sleep(0.3)  # banc.py is up, retrying the connection
    assert runner.alive()
    broker.start()
    with MqttProbe(broker, [T.banc_status, T.command]) as esp:
        esp.wait_for(T.command, "1", timeout_s=10)  # connected by itself, then announced its step
        assert esp.texts(T.banc_status) == [protocol.STATUS_ONLINE]
        esp.publish_many([(T.step, "1")] + [(T.bms_data, bms_line(i)) for i in range(10)])
        wait_until(lambda: len(read_data_rows(folder)) == 10)
        esp.publish(T.step, "9")
        assert runner.wait_exit() == 0


def test_second_instance_and_busy_bench_are_refused(fleet: BancFleet, esp: MqttProbe, banc_home: Path) -> None:
    first = fleet.start()
    for serial in (DEFAULT_SERIAL, "RW-OTHER001"):
        result = subprocess.run(
            [sys.executable, str(BANC_SCRIPT), "banc1", serial], env=project_env(banc_home, fleet.broker),
            cwd=REPO_DIR, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 3 and result.stderr.count("\n") == 1 and "déjà" in result.stderr
    assert first.alive()
    assert first.terminate() == 0  # the bench keeps RW-TEST0001's unfinished test
    other = fleet.runner("banc1", "RW-OTHER001")
    other.start(wait_online=False)
    assert other.wait_exit() == 4
    assert battery_folders(banc_home, "banc1", "RW-OTHER001") == []
    assert banc_entry(banc_home)["serial-pending"] == DEFAULT_SERIAL


def test_crash_between_step_5_and_freeing_the_bench_neither_restarts_nor_skips_48_h(store: Store, fleet: BancFleet, banc_home: Path) -> None:
    """Step 5 is one journal line: a crash before the bench is freed leaves a finished test, and a restart finishes the transition."""
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", DEFAULT_SERIAL, now)
    store.open_test_record(folder, "banc1", DEFAULT_SERIAL, now)
    store.update_config(folder, 4, now)
    store.set_banc_status("banc1", record.STATUS_OCCUPIED, DEFAULT_SERIAL, 4)
    record.append_event(folder, record.StepEvent(record.event_time(now), 5))  # ... and banc.py died here
    finished = record.corrected_summary_file(folder)
    assert finished is not None and finished["status"] == record.TEST_FINISHED
    # The kiosk would offer to resume the bench: banc.py must not start a second test of it.
    again = fleet.runner("banc1", DEFAULT_SERIAL[:3] + DEFAULT_SERIAL[3:].lower())
    again.start(wait_online=False)
    assert again.wait_exit() == banc.EXIT_TOO_EARLY
    assert battery_folders(banc_home, "banc1", DEFAULT_SERIAL) == [folder]
    assert banc_entry(banc_home) == {"name": "Banc1", "status": "available", "serial-pending": None, "current_step": None}
    assert "48 h ouvrées" in again.log_text()


@pytest.mark.parametrize(
    "step, stored, lines, expected",
    [
        (3, (None, None), [(0.0, 0.0), (0.01, 0.5)], (0.01, 0.5, False)),  # phase 3 starts from 0
        (3, (10.0, 500.0), [(10.1, 505.0), (10.2, 510.0)], (10.2, 510.0, False)),  # phase 3 counts up
        (3, (10.0, 500.0), [(0.0, 0.0), (0.01, 0.5)], (0.01, 0.5, False)),  # restarted after a re-charge: a new count
        (3, (10.0, 500.0), [(10.1, 505.0), (18.1, 905.0)], (10.0, 500.0, False)),  # one garbled line: not the capacity
        (3, (10.0, 500.0), [(10.1, 505.0), (2.1, 105.0), (10.3, 515.0)], (10.0, 500.0, False)),  # nor a dip
        (3, (10.0, 500.0), [(10.1, 505.0), (2.1, 105.0), (10.3, 515.0), (10.4, 520.0)], (10.4, 520.0, False)),
        (4, (59.5, 3094.0), [(59.5, 3094.0)], (59.5, 3094.0, False)),  # held
        (4, (59.5, 3094.0), [(0.0, 0.0)], (59.5, 3094.0, True)),  # the ESP lost its counter: keep the result
        (4, (59.5, 3094.0), [(67.5, 3494.0)], (59.5, 3094.0, False)),  # a garbled line after phase 3 moves nothing
        (4, (None, None), [(59.5, 3094.0), (59.5, 3094.0)], (59.5, 3094.0, False)),  # resumed in phase 4, nothing kept
        (5, (59.5, 3094.0), [(0.0, 0.0)], (59.5, 3094.0, False)),
        (9, (59.5, 3094.0), [(1.0, 1.0)], (59.5, 3094.0, False)),
        (1, (None, None), [(0.0, 0.0)], (0.0, 0.0, False)),
    ],
)
def test_the_capacity_counter(step: int, stored: tuple, lines: list, expected: tuple) -> None:
    counter = record.CapacityCounter(*stored)
    lost = [counter.see(step, seq, ah, wh) for seq, (ah, wh) in enumerate(lines)]
    assert (counter.ah, counter.wh, any(lost)) == expected


def test_capacity_counter_lost_in_phase_4_keeps_the_measured_capacity(fleet: BancFleet, esp: MqttProbe) -> None:
    runner = fleet.start()
    esp.wait_for(T.command, "1")
    messages: list[tuple[str, str]] = [(T.step, "3")]
    messages += [(T.bms_data, bms_line(i, current_a=-50.0, capacity_ah=i * 0.5, energy_wh=i * 26.0)) for i in range(60)]
    messages += [(T.step, "4")]
    messages += [(T.bms_data, bms_line(60 + i, current_a=10.0, capacity_ah=29.5, energy_wh=1534.0)) for i in range(5)]
    # The ESP reboots without its saved counters: it reports 0 for the rest of phase 4.
    messages += [(T.bms_data, bms_line(i, current_a=10.0, capacity_ah=0.0, energy_wh=0.0)) for i in range(20)]
    messages += [(T.step, "5")]
    esp.publish_many(messages)
    assert runner.wait_exit(20) == 0
    config = config_of(runner.folder())
    assert (config["capacity_ah"], config["capacity_wh"]) == (29.5, 1534.0)
    alerts = [text for text in esp.texts(T.security) if "Compteur de capacité" in text]
    assert len(alerts) == 1 and "29.50 Ah" in alerts[0]
    assert len(read_data_rows(runner.folder())) == 85  # the rows themselves are all recorded as sent


def open_recorder(banc_home: Path, alerts: list[str]) -> banc.Recorder:
    """A Recorder on a fresh test folder of banc1, opened as banc.py's main() does."""
    store = Store(banc_home)
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", DEFAULT_SERIAL, now)
    state, config = store.open_test_record(folder, "banc1", DEFAULT_SERIAL, now)
    store.create_data_csv(folder)
    recorder = banc.Recorder(store, folder, "banc1", DEFAULT_SERIAL, state.step, alerts.append,
                             fsync_interval_s=1.0, bms_timeout_s=30.0)
    recorder.open(config, state)
    return recorder


def test_redelivered_ri_results_and_passed_steps_are_not_recorded_twice(store: Store, banc_home: Path) -> None:
    """A crash between the journal's fsync and the acknowledgement: the DUP copies change nothing."""
    r1, r2 = b'{"ri_discharge": 0.030}', b'{"ri_discharge": 0.034}'
    recorder = open_recorder(banc_home, [])
    recorder.handle_ri(r1)
    recorder.handle_ri(r2)
    recorder.handle_step(b"3")
    recorder.handle_ri(r1, redelivered=True)  # the broker lost our acks: both come back
    recorder.handle_ri(r2, redelivered=True)
    recorder.handle_step(b"2", redelivered=True)  # a step already passed, re-sent
    assert recorder.step == 3
    recorder.close()
    # After a restart the journal itself says which results it holds.
    alerts: list[str] = []
    again = open_recorder(banc_home, alerts)
    again.handle_ri(r2, redelivered=True)
    again.handle_ri(b'{"ri_discharge": 0.032}')
    assert again.flush_all()
    config = record.corrected_summary_file(again.folder)
    assert config is not None
    assert (config["ri_discharge_count"], config["ri_discharge_average"]) == (3, pytest.approx(0.032))
    assert config["current_step"] == 3
    steps = [e.step for e in record.read_events(again.folder)[0] if isinstance(e, record.StepEvent)]
    assert steps == [3]


def test_a_folder_that_cannot_be_put_back_holds_the_acknowledgements(store: Store, banc_home: Path) -> None:
    """Deleted test folder, and its place taken (a full or broken disk): alert once, hold, retry, then restore all."""
    alerts: list[str] = []
    recorder = open_recorder(banc_home, alerts)
    for seq in range(3):
        recorder.handle_bms(bms_line(seq).encode())
    folder = recorder.folder
    shutil.rmtree(folder)
    folder.write_text("a file where the folder was")  # mkdir fails: nothing can be restored there yet
    for _ in range(3):
        recorder.check_folder()
        recorder.next_restore = 0.0  # as if a second had passed
    assert recorder.blocked and len(alerts) == 1 and "impossible à recréer" in alerts[0]
    recorder.handle_bms(bms_line(3).encode())  # still recorded, in the deleted file
    assert not list(folder.parent.glob(".*.restore"))
    folder.unlink()
    recorder.check_folder()
    assert not recorder.blocked and "sans perte" in alerts[-1]
    recorder.handle_bms(bms_line(4).encode())
    assert recorder.flush_all()
    assert data_seqs(folder) == [0, 1, 2, 3, 4]
    assert (record.corrected_summary_file(folder) or {}).get("rows_count") == 5


def test_a_torn_journal_line_never_swallows_the_next_event(store: Store, banc_home: Path) -> None:
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", DEFAULT_SERIAL, now)
    with open(folder / record.EVENTS_FILE, "ab") as fh:
        fh.write(b'{"t":"2026-12-01T10:00:00.000+01:00","event":"st')  # a power cut mid-line
    record.append_event(folder, record.StepEvent(record.event_time(now), 2))
    events, bad = record.read_events(folder)
    assert [e.kind for e in events] == ["start", "step"] and bad == 0
