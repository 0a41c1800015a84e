"""The verdict end to end: the real banc.py grades each test at step 5, writes the certificate, indexes the history."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from banclfp.analysis import measures as analysis
from banclfp.history import index as history
from banclfp.kiosk import state as kiosk_state, widgets as uic, worker as kiosk_worker
from banclfp.presentation import formatting, summary_text
from banclfp.recording import datafile, record
from banclfp.recording.store import Store
from banclfp.reporting import report
from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, bms_line, wait_until
from banclfp.testkit.support import REPO_DIR, MosquittoBroker
from banclfp.testkit.synthetic import write_synthetic_test
from banclfp.verdict import certificate, conclude as verdict
from banclfp.wire import protocol

RULES = {
    "version": "e2e-1",
    "models": [{"name": "LFP 16S 100 Ah", "serial_pattern": "^RW-", "nominal_capacity_ah": 100.0,
                "grades": [{"grade": "A", "min_soh_pct": 90}, {"grade": "B", "min_soh_pct": 80},
                           {"grade": "C", "min_soh_pct": 70}],
                "ri_discharge_max_ohm": 0.040, "cell_spread_max_mv": 300, "temperature_max_c": 50}],
}

# bench -> (serial, capacity measured in phase 3 (None: never discharged), Ri, expected grade)
CASES: dict[str, tuple[str, Any, float, str]] = {
    "banc1": ("RW-GRADEA01", 95.0, 0.020, "A"),
    "banc2": ("RW-GRADEB01", 85.0, 0.020, "B"),
    "banc3": ("RW-GRADEC01", 75.0, 0.020, "C"),
    "banc4": ("RW-REJET001", 95.0, 0.055, "REJET"),
    "banc5": ("RW-NONCLAS1", None, 0.020, "NON CLASSÉ"),
}


def play_test(probe: MqttProbe, banc: str, capacity_ah: Any, ri_ohm: float) -> None:
    """The ESP's side of a whole test, phases 1 to 5, in a few messages."""
    t = protocol.topics(banc)
    messages: list[tuple[str, str]] = [
        (t.step, "1"),
        (t.ri_results, json.dumps({"ri_discharge": ri_ohm, "ri_charge": ri_ohm * 0.9, "temperature_c": 25.0})),
        (t.step, "2"),
        (t.bms_data, bms_line(0, current_a=50.0, voltage_v=56.0, cell_min_mv=3400, cell_max_mv=3480, temperature_c=31.0)),
        (t.bms_data, bms_line(1, current_a=2.0, voltage_v=57.6, cell_min_mv=3450, cell_max_mv=3520, temperature_c=33.5)),
    ]
    if capacity_ah is not None:
        messages += [
            (t.step, "3"),
            # The last two lines of the discharge (a capacity counts once two consecutive lines agree).
            (t.bms_data, bms_line(2, current_a=-50.0, capacity_ah=capacity_ah - 0.1, energy_wh=(capacity_ah - 0.1) * 51.2)),
            (t.bms_data, bms_line(3, current_a=-50.0, capacity_ah=capacity_ah, energy_wh=capacity_ah * 51.2)),
        ]
    held = capacity_ah or 0.0  # the ESP holds its counters after phase 3
    seq = 4 if capacity_ah is not None else 2  # consecutive: no gap for banc.py to ask again
    messages += [(t.step, "4"), (t.bms_data, bms_line(seq, current_a=20.0, capacity_ah=held, energy_wh=held * 51.2)),
                 (t.step, "5")]
    probe.publish_many(messages)


def test_a_full_test_per_grade_through_the_real_banc_py(store: Store,
    banc_home: Path, broker: MosquittoBroker, mqtt_env: dict[str, str], tmp_path: Path,
) -> None:
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    fleet = BancFleet(banc_home, broker, BANC_NUM_BANCS="5")
    probe = MqttProbe(broker, [protocol.topics(b).security for b in CASES]).start()
    status = MqttProbe(broker, [protocol.topics(b).banc_status for b in CASES]).start()
    try:
        # Started together (each one's start-up is mostly imports): the suite stays short.
        runners = {banc: fleet.runner(banc, serial).start(wait_online=False)
                   for banc, (serial, _c, _r, _g) in CASES.items()}
        for banc in CASES:
            status.wait_for(protocol.topics(banc).banc_status, protocol.STATUS_ONLINE, live_only=False, timeout_s=20)
        for banc, (_serial, capacity, ri, _grade) in CASES.items():
            play_test(probe, banc, capacity, ri)
        for runner in runners.values():
            assert runner.wait_exit(30) == 0, runner.log_text()[-2000:]
        folders = {banc: runner.folder() for banc, runner in runners.items()}
        for banc, (_serial, _capacity, _ri, grade) in CASES.items():
            summary = json.loads((folders[banc] / "config.json").read_text(encoding="utf-8"))
            assert summary["status"] == "finished"
            assert summary["verdict"]["grade"] == grade, (banc, summary["verdict"])
            assert summary["verdict"]["grading_version"] == "e2e-1"
            # The verdict is in the journal, so a rebuilt config.json keeps it.
            events, _ = record.read_events(folders[banc])
            kinds = [e.kind for e in events]
            before = events[-2]
            assert kinds[-1] == "verdict" and kinds.index("verdict") > kinds.index("step")
            assert isinstance(before, record.StepEvent) and before.step == 5
        rejet = json.loads((folders["banc4"] / "config.json").read_text())["verdict"]
        assert [c["name"] for c in rejet["checks"] if not c["ok"]] == ["ri_discharge"]
        checks = {c["name"]: c["value"] for c in json.loads((folders["banc1"] / "config.json").read_text())["verdict"]["checks"]}
        # Each value as two consecutive lines hold it (protocol v3): the spreads 80 then 70 mV give 70 mV,
        # the temperatures 31 then 33.5 °C give 31 °C (33.5 °C is one line's).
        assert checks == {"soh": 95.0, "ri_discharge": 0.02, "cell_spread": 70.0, "temperature_max": 31.0}
        # The certificates are written by report.py children, after banc.py has exited.
        pdfs = [folders[banc] / verdict.CERTIFICATE_FILE for banc in CASES]
        wait_until(lambda: all(pdf.exists() for pdf in pdfs), 60, 0.1, "the certificates")
        assert not any(probe.texts(protocol.topics(b).security) for b in CASES), [probe.texts(protocol.topics(b).security) for b in CASES]
        # Every battery's history comes from the index banc.py kept.
        rows = {row.serial: row for row in store.history.all_results()}
        assert {row.grade for row in rows.values()} == {grade for *_rest, grade in CASES.values()}
    finally:
        probe.stop()
        status.stop()
        fleet.stop_all()
    pdf = folders["banc1"] / "certificate.pdf"
    shutil.copy(pdf, tmp_path / "certificate-A.pdf")
    check_certificate(pdf, "RW-GRADEA01", "A", "95,0 %", tmp_path / "a")
    check_certificate(folders["banc5"] / "certificate.pdf", "RW-NONCLAS1", "NON CLASSÉ", "—", tmp_path / "nc")


def check_certificate(pdf: Path, serial: str, grade: str, soh_text: str, out: Path) -> str:
    """pdftotext shows serial, grade, SOH and hash; the QR code on the rendered first page decodes to them."""
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    text = text.replace("\u00a0", " ")  # pdftotext gives the no-break spaces back as spaces
    digest = certificate.data_sha256(pdf.parent)
    assert serial in text and f"SOH {soh_text}" in text
    # The grade stands alone (its own box, in large type), not as a word of another line.
    assert re.search(rf"(^|\s{{2,}}){re.escape(grade)}(\s{{2,}}|$)", text, re.M), text[:600]
    flat = "".join(text.split())
    assert digest in flat, "the SHA-256 of data.csv is printed"
    out.mkdir()
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", str(pdf), str(out / "page")], check=True)
    page = next(out.glob("page*.png"))
    decoded = subprocess.run(["zbarimg", "-q", "--raw", str(page)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split("=", 1) for line in decoded.strip().splitlines())
    assert fields["serial"] == serial and fields["grade"] == grade and fields["sha256"] == digest
    assert fields["soh_pct"] == ("" if soh_text == "—" else soh_text.removesuffix(" %").replace(",", "."))
    return text


def test_an_invalid_grading_json_grades_nothing_and_says_why(store: Store,
    banc_home: Path, broker: MosquittoBroker, mqtt_env: dict[str, str], fleet: BancFleet,
) -> None:
    (banc_home / "grading.json").write_text('{"version": "x", "models": [{"name": "m"}]}', encoding="utf-8")
    t = protocol.topics(1)
    with MqttProbe(broker, [t.security]) as probe:
        runner = fleet.start("banc1", "RW-BADRULE1")
        play_test(probe, "banc1", 95.0, 0.02)
        assert runner.wait_exit(30) == 0
        alert = probe.wait_for(t.security, timeout_s=10).text
    assert "SANS classement" in alert and "grading.json" in alert and "serial_pattern" in alert
    folder = runner.folder()
    summary = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished" and summary["verdict"] is None
    assert not (folder / "certificate.pdf").exists()
    assert "test finished without a verdict" in runner.log_text() or "without a verdict" in (banc_home / "logs.log").read_text()
    # report.py says the same, and writes no certificate.
    done = subprocess.run([sys.executable, str(REPO_DIR / "report.py"), str(folder), "--certificate", str(folder / "c.pdf")],
                          capture_output=True, text=True, env=mqtt_env, cwd=REPO_DIR)
    assert done.returncode == 2 and "pas de verdict" in done.stderr and "serial_pattern" in done.stderr
    assert not (folder / "c.pdf").exists()
    # Once grading.json is repaired, the finished test is concluded (the kiosk's retry runs this).
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    assert concluded(store, folder)["grade"] == "A"
    assert record.corrected_summary_file(folder)["verdict"]["grade"] == "A"  # type: ignore[index]


def test_a_verdict_is_never_changed_once_given_and_survives_a_rebuilt_summary(store: Store, banc_home: Path) -> None:
    syn = write_synthetic_test(banc_home, rows=600)  # a folder of the earlier version: no journal
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    first = concluded(store, syn.folder)
    events, _ = record.read_events(syn.folder)
    assert [e.kind for e in events] == ["migrate", "verdict"]
    stricter = json.loads(json.dumps(RULES))
    stricter["version"] = "e2e-2"
    (banc_home / "grading.json").write_text(json.dumps(stricter), encoding="utf-8")
    assert concluded(store, syn.folder) == first  # a later edit of the rules never re-grades a test
    (syn.folder / "config.json").unlink()
    summary = record.load_summary(syn.folder)
    assert summary is not None and summary.verdict == record.Verdict.from_json(first)
    assert summary.status == "finished"


def test_history_and_results_follow_the_folders(store: Store, banc_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    from datetime import datetime

    old = write_synthetic_test(banc_home, rows=300, start=datetime(2024, 3, 4, 8, 0, tzinfo=record.LOCAL_TZ))
    new = write_synthetic_test(banc_home, rows=300, banc="banc2", start=datetime(2024, 4, 8, 8, 0, tzinfo=record.LOCAL_TZ))
    write_synthetic_test(banc_home, rows=300, serial="RW-OTHER001")
    concluded(store, new.folder)
    assert report.main(["--history", "rw-test0001"]) == 0  # any letter case
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("banc")]
    assert [line.split()[0] for line in lines] == ["banc2/08042024-RW-TEST0001", "banc1/04032024-RW-TEST0001"]
    assert lines[0].split()[6] == "REJET" and lines[1].split()[6] == "—"  # graded / not graded yet
    # The folders are the truth: a test concluded since is read again (its journal changed),
    # a removed folder leaves the history, a damaged index is rebuilt.
    concluded(store, old.folder)
    assert [row.grade for row in store.history.battery_history("RW-TEST0001")] == ["REJET", "REJET"]
    shutil.rmtree(old.folder)
    (banc_home / history.INDEX_FILE).write_bytes(b"not a database" * 100)
    rows = store.history.battery_history("RW-TEST0001")
    assert [row.folder for row in rows] == ["banc2/08042024-RW-TEST0001"]
    assert list(banc_home.glob(f"{history.INDEX_FILE}.corrupt-*"))
    results = tmp_path / "results.csv"
    assert report.main(["--results", str(results)]) == 0
    lines = results.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == list(history.RESULTS_HEADER) and len(lines) == 3


# =========================================================================== the kiosk's side (pure, and the worker's retry)


def half(ohm: float, temperature_c: Any) -> float:
    return ohm / 2


@pytest.mark.parametrize(
    "summary, expected",
    [
        ({"status": "running", "current_step": 3}, None),
        ({"status": "finished", "battery_serial": "RW-X0001", "capacity_ah": 93.5, "ri_discharge_average": 0.03,
          "verdict": {"grade": "A", "soh_pct": 93.5, "reason": "ok",
                      "checks": [{"name": "ri_discharge", "value": 0.0213, "limit": 0.04, "ok": True}]}},
         kiosk_state.ResultView("RW-X0001", "A", 93.5, 93.5, 0.0213, "ok", True)),
        # Finished, no verdict yet: the figures the summary has, Ri brought to 25 °C by the curve.
        ({"status": "finished", "battery_serial": "RW-X0001", "capacity_ah": 93.5, "ri_discharge_average": 0.03,
          "ri_temperature_c": 20.0, "verdict": None},
         kiosk_state.ResultView("RW-X0001", None, None, 93.5, 0.015, "", True)),
    ],
)
def test_result_view_of_a_summary(summary: dict[str, Any], expected: Any) -> None:
    assert kiosk_state.result_view_from_summary(record.TestSummary.from_json(summary), True, half) == expected


def test_result_card_text() -> None:
    graded = kiosk_state.ResultView("RW-X0001", "B", 85.04, 85.04, 0.02134, "r", False)
    assert uic.result_lines(graded) == (
        "B", "Terminé — RW-X0001 — certificat en cours",
        ["SOH 85,0\u00a0%", "Capacité 85,04\u00a0Ah", "Ri 25 °C 21,34\u00a0mΩ"])
    pending = kiosk_state.ResultView("RW-X0001", None, None, 85.04, None, "", False)
    assert uic.result_lines(pending)[:2] == ("…", "Verdict en attente")
    assert uic.result_lines(pending)[2][2] == "Ri 25 °C —"


class _Finished:
    """A certificate process that has already exited well."""

    def poll(self) -> int:
        return 0


def certificates_started(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """verdict.start_certificate replaced by a process that ends at once; the folders it was started for."""
    started: list[Path] = []

    def start(folder: Path) -> _Finished:
        started.append(folder)
        return _Finished()

    monkeypatch.setattr(verdict, "start_certificate", start)
    return started


def test_the_worker_retries_a_missing_certificate_after_banc_py_had_its_chance(store: Store,
    banc_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    syn = write_synthetic_test(banc_home, rows=300)
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    concluded(store, syn.folder)
    started = certificates_started(monkeypatch)
    now = [1000.0]
    worker = kiosk_worker.KioskWorker(store, ["banc1"], None, None, queue.Queue(), clock=lambda: now[0])  # type: ignore[arg-type]
    journal = syn.folder / record.EVENTS_FILE
    assert worker._result("banc1") is not None and started == []  # just finished: banc.py's child is on it
    old = time.time() - kiosk_worker.CERTIFICATE_GRACE_S - 1
    os.utime(journal, (old, old))
    attempts = []
    retry_s, slow_s = kiosk_worker.CERTIFICATE_RETRY_S, kiosk_worker.CERTIFICATE_SLOW_RETRY_S
    for step_s in (0, 10, retry_s, retry_s, retry_s, slow_s - retry_s - 1, 1):
        now[0] += step_s
        view = worker._result("banc1")
        assert view is not None and view.grade == "REJET" and not view.certificate
        attempts.append(len(started))
    # Once, then every 10 minutes three times, then hourly: never given up while the kiosk runs.
    assert attempts == [1, 1, 2, 3, 3, 3, 4]
    (syn.folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4\n")
    view = worker._result("banc1")
    assert view is not None and view.certificate


def concluded(store: Store, folder: Path) -> dict[str, Any]:
    """verdict.conclude, its verdict as the journal writes it."""
    return verdict.conclude(store, folder).to_json()


def _finished_with_journal(banc_home: Path) -> Path:
    """A finished synthetic test whose journal reached step 5, not graded yet (banc.py died before the verdict)."""
    folder = write_synthetic_test(banc_home, rows=600).folder
    start = record.parse_time(json.loads((folder / "config.json").read_text(encoding="utf-8"))["first_handle"])
    assert start is not None
    at = record.event_time(start)
    record.append_event(folder, record.StartEvent(at, "RW-TEST0001", "banc1", record.iso(start),
                                                  software_version=record.SOFTWARE_VERSION))
    for step in (1, 2, 3, 4, 5):
        record.append_event(folder, record.StepEvent(at, step))
    return folder


def _journal_verdict(folder: Path) -> Any:
    given = record.fold_events(record.read_events(folder)[0]).verdict
    return None if given is None else given.to_json()


def test_a_passing_read_error_never_becomes_a_final_grade(store: Store, banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verdict is final once recorded: an unreadable data.csv records nothing, and the retry grades."""
    folder = _finished_with_journal(banc_home)
    config, data = folder / "config.json", folder / "data.csv"
    good_data = data.read_bytes()
    # data.csv unreadable (its header damaged): not a REJET for good, config.json damaged or not.
    data.write_bytes(b"\xff\xfe garbage\n" + good_data.split(b"\n", 1)[1])
    with pytest.raises(verdict.InputUnreadable):
        concluded(store, folder)
    good_config = config.read_bytes()
    config.write_bytes(b"\x00\x01 not json")
    with pytest.raises(verdict.InputUnreadable):
        concluded(store, folder)
    assert _journal_verdict(folder) is None
    data.write_bytes(good_data)
    # data.csv readable but its recount (for the capacity config.json lost) hits a read error: not a NON CLASSÉ.
    def eio(path: Path, chunk_bytes: int = 0) -> Any:
        raise OSError(5, "Input/output error", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(datafile, "scan_data_csv", eio)
        with pytest.raises(verdict.InputUnreadable):
            concluded(store, folder)
    assert _journal_verdict(folder) is None
    config.write_bytes(good_config)
    # Readable again: the retry grades, once.
    given = concluded(store, folder)
    assert given["grade"] not in ("NON CLASSÉ",) and _journal_verdict(folder) == given
    checks = {check["name"]: check for check in given["checks"]}
    assert checks["cell_spread"]["value"] is not None and checks["temperature_max"]["value"] is not None


@pytest.mark.parametrize("damage", ["unreadable", "without capacity_ah"])
def test_a_config_json_lost_after_step_5_is_graded_with_the_capacity_of_data_csv(store: Store, banc_home: Path, damage: str) -> None:
    """Nothing rebuilds config.json of a finished test: waiting for its capacity would never grade it."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = _finished_with_journal(banc_home)
    config = folder / "config.json"
    if damage == "unreadable":
        config.write_bytes(b"\x00garbage")
    else:
        summary = json.loads(config.read_text(encoding="utf-8"))
        del summary["capacity_ah"]
        config.write_text(json.dumps(summary), encoding="utf-8")
    capacity_ah, _ = datafile.scan_data_csv(folder / "data.csv").measured_capacity(5)
    assert capacity_ah is not None
    given = concluded(store, folder)  # banc.py's conclusion: no InputUnreadable, no retry forever
    assert given["grade"] != "NON CLASSÉ" and _journal_verdict(folder) == given
    soh_check = next(check for check in given["checks"] if check["name"] == "soh")
    assert given["soh_pct"] == soh_check["value"] == pytest.approx(capacity_ah, abs=0.1)  # nominal 100 Ah
    rebuilt = json.loads(config.read_text(encoding="utf-8"))
    assert rebuilt["verdict"] == given
    if damage == "unreadable":  # rebuilt from the same recount
        assert rebuilt["capacity_ah"] == round(capacity_ah, 4)


def test_the_history_index_survives_a_busy_writer_and_rebuilds_real_damage(store: Store,
    banc_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A locked index is not 'damaged' (nothing thrown away); a corrupt table page is found and rebuilt."""
    import sqlite3
    from datetime import datetime, timedelta

    from banclfp.testkit.synthetic import write_finished_record

    start = datetime(2026, 3, 2, 8, 0, tzinfo=record.LOCAL_TZ)
    for i in range(300):
        write_finished_record(banc_home, f"banc{1 + i % 4}", f"RW-HIST{i:04d}", start + timedelta(days=i % 50),
                              3600.0, 95.0, "A", 95.0)
    assert len(store.history.battery_history("RW-HIST0007")) == 1
    path = store.home / history.INDEX_FILE

    monkeypatch.setattr(history, "BUSY_TIMEOUT_S", 0.2)
    writer = sqlite3.connect(str(path))
    writer.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        with pytest.raises(sqlite3.OperationalError):
            store.history.battery_history("RW-HIST0007")
    finally:
        writer.rollback()
        writer.close()
    assert not list(path.parent.glob(path.name + ".corrupt*"))  # kept, not set aside
    assert len(store.history.battery_history("RW-HIST0007")) == 1

    # Garbage over the table's pages, the header left intact: the file still opens.
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(min(8192, size // 3)))
    assert [row.serial for row in store.history.battery_history("RW-HIST0007")] == ["RW-HIST0007"]
    assert list(path.parent.glob(path.name + ".corrupt*"))  # the damaged one kept aside


def test_a_verdict_journaled_then_a_full_disk_is_still_the_verdict(store: Store, banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.json refused after the verdict is journaled: conclude returns it (no false 'not recorded'); it catches up."""
    syn = write_synthetic_test(banc_home, rows=300)
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    real = store.refresh_test_config

    def full(_folder: Path) -> dict[str, Any]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "refresh_test_config", full)
    given = concluded(store, syn.folder)
    assert _journal_verdict(syn.folder) == given
    monkeypatch.setattr(store, "refresh_test_config", real)
    assert concluded(store, syn.folder) == given
    assert json.loads((syn.folder / "config.json").read_text(encoding="utf-8"))["verdict"] == given


def test_a_verdict_whose_journal_line_is_damaged_is_kept_from_config_json(store: Store, banc_home: Path) -> None:
    """The verdict line of events.jsonl damaged (bad sector), config.json intact: the verdict given stays, re-journaled."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = write_synthetic_test(banc_home, rows=600).folder
    first = concluded(store, folder)
    assert first["grade"] == "REJET"
    journal = folder / record.EVENTS_FILE
    lines = journal.read_bytes().split(b"\n")
    assert b'"verdict"' in lines[-2]
    lines[-2] = lines[-2][:40] + b"\x00" + lines[-2][41:]
    journal.write_bytes(b"\n".join(lines))
    assert _journal_verdict(folder) is None
    lax = json.loads(json.dumps(RULES))  # rules under which the same test would now be an A
    lax["version"] = "e2e-2"
    lax["models"][0].update(ri_discharge_max_ohm=1.0, cell_spread_max_mv=10000, temperature_max_c=150,
                            grades=[{"grade": "A", "min_soh_pct": 1}])
    (banc_home / "grading.json").write_text(json.dumps(lax), encoding="utf-8")
    assert concluded(store, folder) == first  # e.g. the certificate printed again
    assert _journal_verdict(folder) == first  # written again: the journal holds it anew
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["verdict"] == first


def test_a_broken_temperature_coefficients_file_grades_nothing_and_says_why(
    banc_home: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    """Like an invalid grading.json: report.py --certificate exits 2 with the file named, records nothing (no traceback)."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    (banc_home / "temperature_coefficients.json").write_text("{ damaged", encoding="utf-8")
    folder = write_synthetic_test(banc_home, rows=600).folder
    summary = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    summary["ri_temperature_c"] = 30.0  # Ri measured away from 25 °C: the correction is needed
    (folder / "config.json").write_text(json.dumps(summary), encoding="utf-8")
    pdf = banc_home / "c.pdf"
    assert report.main([str(folder), "--certificate", str(pdf)]) == 2
    err = capsys.readouterr().err
    assert "pas de verdict" in err and "temperature_coefficients.json" in err
    assert any(r.levelname == "ERROR" and "temperature_coefficients.json" in r.getMessage() for r in caplog.records)
    assert not pdf.exists() and _journal_verdict(folder) is None
    assert record.read_events(folder)[0] == []  # nothing recorded, not even the migration


def test_a_journaled_verdict_is_returned_when_config_json_cannot_catch_up(store: Store,
    banc_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The verdict already journaled, config.json behind it and refused (full disk): still the verdict, not 'not recorded'."""
    syn = write_synthetic_test(banc_home, rows=300)
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    given = concluded(store, syn.folder)
    summary = json.loads((syn.folder / "config.json").read_text(encoding="utf-8"))
    summary["verdict"] = None  # a crash came between the journal and config.json
    (syn.folder / "config.json").write_text(json.dumps(summary), encoding="utf-8")

    def full(_folder: Path) -> dict[str, Any]:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(store, "refresh_test_config", full)
        assert concluded(store, syn.folder) == given
    assert concluded(store, syn.folder) == given  # the disk back: config.json catches up
    assert json.loads((syn.folder / "config.json").read_text(encoding="utf-8"))["verdict"] == given


def test_the_certificate_shows_one_ri_at_25c_the_verdict_s(store: Store, banc_home: Path) -> None:
    """'Mesures' and 'Contrôles' show the same Ri at 25 °C: the graded one, even after the coefficients change."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = write_synthetic_test(banc_home, rows=600).folder
    summary = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    summary.update(ri_discharge_average=0.040004, ri_temperature_c=25.0)  # just above the 40 mΩ limit
    (folder / "config.json").write_text(json.dumps(summary), encoding="utf-8")
    given = concluded(store, folder)
    ri_check = next(check for check in given["checks"] if check["name"] == "ri_discharge")
    assert not ri_check["ok"]
    # The lab edits the coefficients afterwards: the certificate printed again keeps the graded value.
    (banc_home / "temperature_coefficients.json").write_text(json.dumps(
        {"coefficients": [{"temperature_c": 0, "multiplier": 0.9}, {"temperature_c": 50, "multiplier": 0.9}]}),
        encoding="utf-8")
    pdf = banc_home / "c.pdf"
    assert report.main([str(folder), "--certificate", str(pdf)]) == 0
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    shown = re.findall(r"Ri décharge à 25 °C\s+([\d,]+)\s*mΩ", text.replace("\u00a0", " "))
    assert len(shown) == 2 and set(shown) == {"40,01"}, shown


# --------------------------------------------------------------------------- À VÉRIFIER (protocol v3)

ARTIFACTS = REPO_DIR / "tests" / "artifacts"


def to_check_folder(banc_home: Path, serial: str = "RW-CHECK001", banc: str = "banc1",
                     lose_lines: bool = False) -> Path:
    """A finished test of an A battery whose ESP rebooted two minutes before the end of phase 2.

    Its full-charge window holds 120 lines where 601 are expected. `lose_lines`: also the cells
    350 mV apart and 5 lines lost in that window, and its phase 3 recovered from the lines.
    """
    folder = write_synthetic_test(banc_home, rows=3000, serial=serial, banc=banc).folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(capacity_ah=95.0, ri_temperature_c=25.0)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    header, *body = (folder / "data.csv").read_text(encoding="ascii").splitlines()
    rows = [line.split(",") for line in body]
    column = record.DATA_COLUMN
    charge = [i for i, row in enumerate(rows) if row[column["step"]] == "2"]
    for k, row in enumerate(rows[charge[-120]:]):
        row[column["seq"]], row[column["uptime_ms"]] = str(k), str(1000 * k + 500)
        if lose_lines and row[column["step"]] == "2":
            row[column["cell_max_mv"]] = str(int(row[column["cell_min_mv"]]) + 350)
    if lose_lines:
        del rows[charge[-60]:charge[-55]]
        start = record.parse_time(config["first_handle"])
        assert start is not None
        at = record.event_time(start)
        record.append_event(folder, record.StartEvent(at, serial, banc, record.iso(start),
                                                      software_version=record.SOFTWARE_VERSION))
        record.append_event(folder, record.RiEvent(at, {"ri_discharge": 0.012, "temperature_c": 25.0}))
        seq = int(rows[charge[-1] - 4][column["seq"]])
        for step in (1, 2, 3, 4, 5):
            record.append_event(folder, record.StepEvent(at, step, recovered=record.STEP_RECOVERED_FROM_LINES, seq=seq)
                                if step == 3 else record.StepEvent(at, step))
    (folder / "data.csv").write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n", encoding="ascii")
    return folder


def test_a_test_whose_data_cannot_support_a_grade_is_to_check_everywhere(store: Store,
    banc_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The verdict, config.json, the history, --results, the printout and the certificate all say À VÉRIFIER, and why."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = to_check_folder(banc_home)
    given = concluded(store, folder)
    reason = "données insuffisantes pour classer : fenêtre de pleine charge : 120 lignes sur 601 attendues"
    assert (given["grade"], given["reason"]) == ("À VÉRIFIER", reason)
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["verdict"] == given
    assert concluded(store, folder) == given  # final, like any verdict

    assert [(row.grade, row.reason) for row in store.history.battery_history("RW-CHECK001")] == [("À VÉRIFIER", reason)]
    assert report.main(["--history", "RW-CHECK001"]) == 0
    assert " À VÉRIFIER " in capsys.readouterr().out
    results = tmp_path / "results.csv"
    assert report.main(["--results", str(results)]) == 0
    line = results.read_text(encoding="utf-8").splitlines()[1]
    assert ",À VÉRIFIER," in line and reason in line

    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    printout = summary_text.format_summary(loaded.summary)
    assert f"Verdict             : À VÉRIFIER — {reason}" in printout and summary_text.TO_CHECK_TEXT in printout
    orange = formatting.grade_color("À VÉRIFIER")
    assert orange not in {formatting.grade_color(g) for g in ("A", "B", "C", "REJET", "NON CLASSÉ", "X")}
    assert ("Verdict : À VÉRIFIER", orange) in summary_text.panel_lines(loaded.summary)

    pdf = folder / verdict.CERTIFICATE_FILE
    assert report.main([str(folder), "--certificate", str(pdf)]) == 0
    text = check_certificate(pdf, "RW-CHECK001", "À VÉRIFIER", "95,0 %", tmp_path / "page")
    flat = " ".join(text.split())
    assert "aucune classe avant vérification" in flat
    assert certificate.TO_CHECK_NOTICE in flat and reason in flat
    assert re.search(r"Écart entre cellules à pleine charge\s+\S+ mV\s+max 300 mV\s+à vérifier", flat), flat
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((tmp_path / "page").glob("page*.png")), ARTIFACTS / "certificate_to_check.png")


def test_a_long_to_check_reason_fits_the_certificate(store: Store, banc_home: Path, tmp_path: Path) -> None:
    """Several causes at once (few rows, lines lost, a phase recovered, a spread that fails on them): all said."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = to_check_folder(banc_home, serial="RW-CHECK002", lose_lines=True)
    given = concluded(store, folder)
    assert given["grade"] == "À VÉRIFIER", given
    for part in ("lignes sur 601 attendues", "5 lignes perdues (seq ", "phase 3 reconstituée à partir des lignes BMS",
                 "non conforme sur ces données : Écart entre cellules à pleine charge : 350"):
        assert part in given["reason"], (part, given["reason"])
    assert {c["name"] for c in given["checks"] if c.get("uncertain")} == {"soh", "cell_spread"}
    pdf = folder / verdict.CERTIFICATE_FILE
    assert report.main([str(folder), "--certificate", str(pdf)]) == 0
    text = " ".join(check_certificate(pdf, "RW-CHECK002", "À VÉRIFIER", "95,0 %", tmp_path / "page").split())
    assert certificate.TO_CHECK_NOTICE in text and "5 lignes perdues" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((tmp_path / "page").glob("page*.png")), ARTIFACTS / "certificate_to_check_long.png")


def test_a_verdict_to_check_is_final_for_the_kiosk_worker(store: Store, banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded once, its certificate retried like any other's: the worker never concludes it again in a loop."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = to_check_folder(banc_home)
    given = concluded(store, folder)
    started = certificates_started(monkeypatch)
    monkeypatch.setattr(verdict, "conclude", lambda f, now=None: pytest.fail("concluded again"))
    now = [1000.0]
    worker = kiosk_worker.KioskWorker(store, ["banc1"], None, None, queue.Queue(), clock=lambda: now[0])  # type: ignore[arg-type]
    old = time.time() - kiosk_worker.CERTIFICATE_GRACE_S - 1
    os.utime(folder / record.EVENTS_FILE, (old, old))
    view = worker._result("banc1")
    assert view is not None and view.grade == "À VÉRIFIER" and view.reason == given["reason"] and started == [folder]
    (folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4\n")
    for _ in range(3):
        now[0] += kiosk_worker.CERTIFICATE_SLOW_RETRY_S
        view = worker._result("banc1")
        assert view is not None and view.grade == "À VÉRIFIER" and view.certificate
    assert started == [folder]  # concluded for good: nothing more is started


def test_result_card_text_to_check() -> None:
    view = kiosk_state.ResultView("RW-X0001", "À VÉRIFIER", 95.0, 95.0, 0.02, "données insuffisantes…", True)
    grade, caption, figures = uic.result_lines(view)
    assert grade == "À\nVÉRIFIER"
    assert caption == "Terminé — RW-X0001 — sans classe — certificat prêt"
    assert figures[0] == "SOH 95,0\u00a0%"


def test_banc_py_alerts_once_when_the_data_cannot_support_a_grade(
    banc_home: Path, broker: MosquittoBroker, mqtt_env: dict[str, str], fleet: BancFleet,
) -> None:
    """Lines lost at full charge, never re-sent: the verdict is À VÉRIFIER and banc.py says so on bancN/security."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    t = protocol.topics(1)
    with MqttProbe(broker, [t.security]) as probe:
        runner = fleet.start("banc1", "RW-LOST0001")
        full = dict(current_a=2.0, voltage_v=57.6, cell_min_mv=3450, cell_max_mv=3480, temperature_c=31.0)
        probe.publish_many([
            (t.step, "1"),
            (t.ri_results, json.dumps({"ri_discharge": 0.02, "ri_charge": 0.018, "temperature_c": 25.0})),
            (t.step, "2"),
            (t.bms_data, bms_line(0, **full)), (t.bms_data, bms_line(1, **full)),
            (t.bms_data, bms_line(5, **full)),  # 2..4 lost in the full-charge window: asked for, never re-sent
            (t.step, "3"),
            (t.bms_data, bms_line(6, current_a=-50.0, capacity_ah=94.9, energy_wh=4859.0)),  # two agreeing lines
            (t.bms_data, bms_line(7, current_a=-50.0, capacity_ah=95.0, energy_wh=4864.0)),
            (t.step, "4"),
            (t.bms_data, bms_line(8, current_a=20.0, capacity_ah=95.0, energy_wh=4864.0)),
            (t.step, "5"),
        ])
        assert runner.wait_exit(30) == 0, runner.log_text()[-2000:]
        wait_until(lambda: any("À VÉRIFIER" in text for text in probe.texts(t.security)), 10, 0.1, "the alert")
        time.sleep(0.5)  # a second one would be there by now
        texts = probe.texts(t.security)
    to_check = [text for text in texts if "À VÉRIFIER" in text]
    assert to_check == ["Test terminé À VÉRIFIER, aucune classe attribuée : "
                        "fenêtre de pleine charge : 3 lignes perdues (seq 2..4)"], texts
    given = json.loads((runner.folder() / "config.json").read_text(encoding="utf-8"))["verdict"]
    assert given["grade"] == "À VÉRIFIER" and given["reason"].endswith("3 lignes perdues (seq 2..4)")


# --------------------------------------------------------------------------- Ri at 25 °C pulse by pulse


def ri_check_of(given: dict[str, Any]) -> dict[str, Any]:
    return next(check for check in given["checks"] if check["name"] == "ri_discharge")


def test_an_older_folder_without_the_pulses_is_still_graded_and_reported(store: Store, banc_home: Path) -> None:
    """config.json of the earlier version (one mean, one temperature, no journal): graded, reported, as before."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = write_synthetic_test(banc_home, rows=600).folder
    on_disk = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert "ri_pulses" not in on_disk and (on_disk["ri_discharge_average"], on_disk["ri_temperature_c"]) == (0.012, 15.0)
    expected = store.static.correct_to_25c(0.012, 15.0)
    given = concluded(store, folder)
    assert given["grade"] == "REJET" and given["soh_pct"] == 1.8  # graded (600 rows discharge little)
    assert ri_check_of(given)["value"] == pytest.approx(expected, abs=1e-5) and ri_check_of(given)["ok"]
    # Migrated into the journal: the mean is one block of its 3 values at its one temperature.
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["ri_pulses"]["ri_discharge"] == [[0.012, 15.0, 3]]
    assert record.ri_at_25c(record.TestSummary.from_json(config), "ri_discharge",
                            store.static.correct_to_25c) == pytest.approx(expected)
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    at_25c = {r.key: r.at_25c_ohm for r in loaded.summary.resistances}
    assert at_25c["ri_discharge"] == pytest.approx(expected) and at_25c["ri_charge"] == pytest.approx(
        store.static.correct_to_25c(0.011, 15.0))
    assert loaded.summary.ri_temperature_range_c == (15.0, 15.0)
    assert "[température des mesures : 15,0 °C," in summary_text.format_summary(loaded.summary)


def test_pulses_at_different_temperatures_are_graded_each_at_its_own(store: Store, banc_home: Path) -> None:
    """The verdict, the report, the kiosk and the history read the same Ri at 25 °C: the mean of the pulses corrected."""
    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = write_synthetic_test(banc_home, rows=600).folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    pulses = [({"ri_discharge": 0.030, "temperature_c": 10.0}, 10.0), ({"ri_discharge": 0.016, "temperature_c": 35.0}, 35.0),
              ({"ri_discharge": 0.017}, 35.0)]  # without its temperature: measured at the previous pulse's
    start = record.parse_time(config["first_handle"])
    assert start is not None
    at = record.event_time(start)
    record.append_event(folder, record.StartEvent(at, config["battery_serial"], config["banc"], config["first_handle"]))
    for values, _ in pulses:
        record.append_event(folder, record.RiEvent(at, values))
    record.append_event(folder, record.StepEvent(at, 5))
    per_pulse = sum(store.static.correct_to_25c(values["ri_discharge"], t) for values, t in pulses) / 3
    last_temperature = store.static.correct_to_25c(0.021, 35.0)  # the mean at the last pulse's temperature, as before
    assert abs(per_pulse - last_temperature) > 0.004

    given = concluded(store, folder)
    assert ri_check_of(given)["value"] == pytest.approx(per_pulse, abs=1e-5)
    summary = record.load_summary(folder)
    assert summary is not None and summary.ri_averages["ri_discharge"] == pytest.approx(0.021)
    assert kiosk_state.ri_view_from_config(summary, store.static.correct_to_25c).ri_discharge == pytest.approx(per_pulse)
    no_verdict = dataclasses.replace(summary, verdict=None)
    card = kiosk_state.result_view_from_summary(no_verdict, False, store.static.correct_to_25c)
    assert card is not None and card.ri_25c_ohm == pytest.approx(per_pulse)
    row = history.row_from_summary("banc1/x", no_verdict, "sig", store.static.correct_to_25c)
    assert per_pulse in [pytest.approx(value) for value in row if isinstance(value, float)]
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    ri = next(r for r in loaded.summary.resistances if r.key == "ri_discharge")
    assert ri.raw_ohm == pytest.approx(0.021) and ri.count == 3 and ri.at_25c_ohm == pytest.approx(per_pulse)
    assert loaded.summary.ri_temperature_range_c == (10.0, 35.0)
    assert "[température des mesures : 10,0 à 35,0 °C," in summary_text.format_summary(loaded.summary)
    assert ("T mesure Ri    10,0-35,0 °C", summary_text.PANEL_GREY) in summary_text.panel_lines(loaded.summary)
