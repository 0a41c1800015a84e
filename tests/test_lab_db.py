"""The lab database (docs/labo-serveur.md) against a real PostgreSQL that the tests start: schema, sync, RLS, readers.

One private cluster per module (initdb in a temp folder, its own port, TLS with a CA made by
openssl, clients in sslmode=verify-full), emptied between tests. Every Pi here is a BANC_HOME
of its own and a login role of its own, as on a real lab.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from banclfp.history import index
from banclfp.infra import settings as settings_module, storage
from banclfp.lab import db, history as lab_history, payload, runner, schema, sync
from banclfp.lab.outbox import OUTBOX_FILE
from banclfp.recording import record
from banclfp.testkit.support import REPO_DIR, project_env
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test
from tests.conftest import (  # the lab server, whose fixtures lab_server, lab and two_pis are there too
    DB,
    OWNER,
    OWNER_PW,
    READER,
    SITES,
    START,
    Lab,
    graded_tests,
    pi_settings,
)

pytestmark = pytest.mark.timeout(120)

def pi_env(home: Path, lab: Lab, site: str) -> dict[str, str]:
    """A Pi's environment for lab_sync.py / report.py as children."""
    return project_env(home, BANC_SITE=site, BANC_LAB_DB=lab.uri(SITES[site][0]), PGPASSFILE=str(lab.passfile))


def run(script: str, *args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """One of the project's command lines, from the checkout."""
    return subprocess.run([sys.executable, str(REPO_DIR / script), *args], env=env, cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=timeout_s)


def snapshot(lab: Lab) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Everything the lab holds of its tests, but the time each was synced."""
    tests = lab.server.sql("SELECT to_jsonb(t) - 'synced_at' FROM lab.tests t ORDER BY test_id", DB)
    rows = lab.server.sql("SELECT * FROM lab.test_rows ORDER BY test_id, bucket", DB)
    return tests, rows


# =========================================================================== schema and migrations


def test_migrate_is_versioned_and_idempotent(lab: Lab, tmp_path: Path) -> None:
    env = project_env(tmp_path, BANC_SITE="lab-admin", BANC_LAB_DB=lab.uri(OWNER), PGPASSFILE=str(lab.passfile))
    done = run("lab_sync.py", "--migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert "rien à appliquer" in done.stdout
    with lab.owner() as conn:
        assert schema.current_version(conn) == schema.LATEST_VERSION
        versions = conn.execute("SELECT version, name FROM lab.schema_migrations").fetchall()
    assert versions == [(m.version, m.name) for m in schema.migrations()]


def test_a_fresh_database_is_migrated_by_lab_sync(lab: Lab, tmp_path: Path) -> None:
    lab.server.create_database("fresh", OWNER)
    uri = lab.server.uri(OWNER, "fresh", host="localhost")
    with open(lab.passfile, "a") as fh:
        fh.write(f"localhost:{lab.server.port}:fresh:{OWNER}:{OWNER_PW}\n")
    env = project_env(tmp_path, BANC_SITE="lab-admin", BANC_LAB_DB=uri, PGPASSFILE=str(lab.passfile))
    first = run("lab_sync.py", "--migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_lab_schema.sql" in first.stdout
    with db.connect(uri) as conn:
        assert schema.current_version(conn) == schema.LATEST_VERSION


def test_migrations_are_numbered_files_of_the_package() -> None:
    found = schema.migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert all(schema.MIGRATION_RE.match(m.name) for m in found)


# =========================================================================== lab_sync --once


def test_once_sends_every_test_once_whatever_is_retried(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    graded_tests(home, 5)
    synthetic = write_synthetic_test(home, rows=3000, banc="banc2", serial="RW-ROWS0001", start=START)
    env = pi_env(home, lab, "pi-a")
    first = run("lab_sync.py", "--once", env=env)
    assert first.returncode == 0, first.stderr
    assert lab.count("tests") == 6
    rows_first = lab.count("test_rows")
    assert 0 < rows_first < synthetic.rows
    before = snapshot(lab)

    again = run("lab_sync.py", "--once", env=env)  # nothing changed: nothing sent
    assert again.returncode == 0 and "0 test(s), 0 ligne(s)" in again.stdout
    (home / OUTBOX_FILE).unlink()  # the outbox lost: everything is sent again...
    resent = run("lab_sync.py", "--once", env=env)
    assert resent.returncode == 0 and "6 test(s)" in resent.stdout
    assert snapshot(lab) == before  # ...and the lab holds each test once, the same


def test_an_empty_lab_refilled_from_the_folders_holds_the_same(lab: Lab, tmp_path: Path) -> None:
    homes = {site: tmp_path / site for site in SITES}
    for n, home in enumerate(homes.values()):
        graded_tests(home, 4, serial_base=f"RW-S{n}")
        write_synthetic_test(home, rows=2000, banc="banc3", serial=f"RW-RUN{n}", start=START, finished=False)
    for site, home in homes.items():
        assert runner.sync_once(pi_settings(home, lab, site)).exit_code == 0
    full = snapshot(lab)
    lab.server.sql("TRUNCATE lab.tests, lab.test_rows, lab.test_revisions", DB)
    for site, home in homes.items():
        (home / OUTBOX_FILE).unlink()
        assert runner.sync_once(pi_settings(home, lab, site)).exit_code == 0
    assert snapshot(lab) == full
    assert lab.count("tests") == 10


def test_what_is_sent_of_a_finished_test(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    folder = graded_tests(home, 1)[0]
    (folder / record.DATA_CSV_FILE).write_text(",".join(record.DATA_CSV_HEADER) + "\n")
    (folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4 certificate")
    assert runner.sync_once(pi_settings(home, lab, "pi-a")).exit_code == 0
    with lab.owner() as conn:
        row = conn.execute("SELECT test_id, site, banc, serial, status, phase, grade, soh_pct, verdict, "
                           "ri_discharge_25c_ohm, data_sha256, certificate, certificate_sha256, "
                           "to_json(end_at) #>> '{}' FROM lab.tests").fetchone()
    assert row is not None
    relative = f"{folder.parent.name}/{folder.name}"
    assert row[:8] == (f"pi-a:{relative}", "pi-a", "banc1", "RW-LAB0000", record.TEST_FINISHED, 5, "A", 95.0)
    assert row[8]["checks"][0]["name"] == "soh"
    assert row[9] == pytest.approx(0.021)
    assert row[10] == payload.file_sha256(folder / record.DATA_CSV_FILE)
    assert bytes(row[11]) == b"%PDF-1.4 certificate" and row[12] == payload.file_sha256(folder / record.CERTIFICATE_FILE)
    summary = record.load_summary(folder)
    assert summary is not None and row[13] == summary.end_time  # the lab's offset, as config.json says it


def test_rows_for_charts_are_at_most_10_s_apart(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    synthetic = write_synthetic_test(home, rows=4000, interval_s=1.0, stop_s=3600.0)
    assert runner.sync_once(pi_settings(home, lab, "pi-a")).exit_code == 0
    sent = [r[0] for r in lab.server.sql("SELECT extract(epoch FROM measured_at)::float8 FROM lab.test_rows "
                                         "ORDER BY measured_at", DB)]
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    recorded_gaps = sorted(b - a for a, b in zip(synthetic.unix_s, synthetic.unix_s[1:]))
    # Every gap over 10 s is one the Pi itself recorded (the stop), nowhere else.
    assert [g for g in gaps if g > 10.0] == pytest.approx([g for g in recorded_gaps if g > 10.0], abs=10.0)
    assert len(sent) >= synthetic.rows / payload.ROW_BUCKET_S - 2


def test_a_running_test_sends_its_new_rows_only(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    synthetic = write_synthetic_test(home, rows=1000, finished=False)
    settings = pi_settings(home, lab, "pi-a")
    first = runner.sync_once(settings)
    data_csv = synthetic.folder / record.DATA_CSV_FILE
    lines = data_csv.read_text().splitlines()
    last = record.parse_time(lines[-1].split(",")[-1])
    assert last is not None
    more = [",".join([record.iso(last + timedelta(seconds=s), millis=True), "3", str(10000 + s), "51.0", "-20.0",
                      "50.0", "25.0", "1.0", "51.0", "3200", "3210", "0", "1", record.iso(last + timedelta(seconds=s), millis=True)])
            for s in range(1, 61)]
    with open(data_csv, "a") as fh:
        fh.write("\n".join(more) + "\n" + "2026-03-02T09:00:00.000+01:00,3,")  # a line still being written
    second = runner.sync_once(settings)
    assert first.rows > 0 and 10 <= second.rows <= 13 and second.tests == 1
    assert runner.sync_once(settings).tests == 0  # nothing changed since: nothing sent
    # The first new row may share the last sent row's bucket: the one sent first stays.
    assert first.rows + second.rows - 1 <= lab.count("test_rows") <= first.rows + second.rows


def test_unreachable_lab_exits_3_and_sends_later(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    graded_tests(home, 2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = pi_env(home, lab, "pi-a") | {"BANC_LAB_DB": f"postgresql://banc_pi_a@127.0.0.1:{port}/{DB}?sslmode=disable"}
    started = time.monotonic()
    down = run("lab_sync.py", "--once", env=env)
    assert down.returncode == 3 and "2 test(s) en attente" in down.stderr
    assert time.monotonic() - started < 15
    assert lab.count("tests") == 0
    up = run("lab_sync.py", "--once", env=pi_env(home, lab, "pi-a"))
    assert up.returncode == 0 and lab.count("tests") == 2


def test_an_old_schema_is_refused_with_exit_1(lab: Lab, tmp_path: Path) -> None:
    lab.server.create_database("empty", OWNER)
    with open(lab.passfile, "a") as fh:
        fh.write(f"localhost:{lab.server.port}:empty:banc_pi_a:a-secret\n")
    home = tmp_path / "pi-a"
    graded_tests(home, 1)
    env = pi_env(home, lab, "pi-a") | {"BANC_LAB_DB": lab.server.uri("banc_pi_a", "empty", host="localhost")}
    done = run("lab_sync.py", "--once", env=env)
    assert done.returncode == 1 and "--migrate" in done.stderr


@pytest.mark.parametrize("uri,message", [
    ("postgresql://banc:secret@labo/banc_lab", "password"),
    ("postgresql://banc@labo/banc_lab?password=secret", "password"),
    ("mysql://banc@labo/banc_lab", "postgresql://"),
])
def test_a_uri_with_a_password_or_another_engine_is_refused(tmp_path: Path, uri: str, message: str) -> None:
    done = run("lab_sync.py", "--once", env=project_env(tmp_path, BANC_LAB_DB=uri, BANC_SITE="pi-a"))
    assert done.returncode == 2 and "BANC_LAB_DB" in done.stderr and message in done.stderr
    assert "secret" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_without_a_lab_database_lab_sync_says_so(tmp_path: Path) -> None:
    done = run("lab_sync.py", "--once", env=project_env(tmp_path))
    assert done.returncode == 2 and "BANC_LAB_DB" in done.stderr


@pytest.mark.parametrize("site", ["pi_a", "", "x" * 33, "pi a"])
def test_site_names_are_checked(site: str) -> None:
    env = {"BANC_LAB_DB": "postgresql://u@h/d", "BANC_SITE": site}
    if site == "":
        assert settings_module.parse_settings(env, Path("/tmp"), "labpi.local").lab_site == "labpi"
        with pytest.raises(settings_module.SettingsError, match="BANC_SITE"):
            settings_module.parse_settings(env, Path("/tmp"), "lab_pi")
        return
    with pytest.raises(settings_module.SettingsError, match="BANC_SITE"):
        settings_module.parse_settings(env, Path("/tmp"), "host")


def test_a_graded_test_edited_by_hand_keeps_its_previous_version(lab: Lab, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "pi-a"
    folder = graded_tests(home, 1)[0]
    settings = pi_settings(home, lab, "pi-a")
    assert runner.sync_once(settings).exit_code == 0
    summary = json.loads((folder / record.TEST_CONFIG_FILE).read_text())
    summary["capacity_ah"] = 123.0  # someone "fixes" the capacity by hand
    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, summary)
    report = runner.sync_once(settings)
    assert report.exit_code == 0 and report.edited == [payload.test_id("pi-a", f"banc1/{folder.name}")]
    assert "changed on disk" in caplog.text
    rows = lab.server.sql("SELECT capacity_ah, edited_on_disk FROM lab.tests", DB)
    assert rows == [(123.0, True)]  # the folder is the truth...
    previous = lab.server.sql("SELECT previous->>'capacity_ah' FROM lab.test_revisions", DB)
    assert [float(p[0]) for p in previous] == [95.0]  # ...and what it said before is kept


# =========================================================================== who writes what


def _a_test_of(site: str) -> tuple[object, ...]:
    test = payload.payload_from_summary(site, "banc1/02032026-RW-RLS0001", record.TestSummary.from_json(
        {"battery_serial": "RW-RLS0001", "banc": "banc1", "status": "running", "current_step": 2}), {}, None)
    return test.values()


def test_a_pi_cannot_write_another_sites_tests(lab: Lab, tmp_path: Path) -> None:
    home_b = tmp_path / "pi-b"
    graded_tests(home_b, 1, serial_base="RW-BBB")
    assert runner.sync_once(pi_settings(home_b, lab, "pi-b")).exit_code == 0
    with db.connect(lab.uri("banc_pi_a")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(db.UPSERT_TEST, _a_test_of("pi-b"))
        # An update of pi-b's test matches nothing for pi-a (RLS hides it from writes).
        changed = conn.execute("UPDATE lab.tests SET grade = 'A+' WHERE site = 'pi-b'").rowcount
        assert changed == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO lab.test_rows (test_id, site, bucket, measured_at) "
                         "SELECT test_id, site, 1, now() FROM lab.tests WHERE site = 'pi-b'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM lab.tests")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO lab.sites VALUES ('pi-c', 'banc_pi_a')")
        # It reads the whole lab (the 48 h rule needs it) and writes its own site.
        assert conn.execute("SELECT count(*) FROM lab.tests WHERE site = 'pi-b'").fetchone() == (1,)
        conn.execute(db.UPSERT_TEST, _a_test_of("pi-a"))
    assert lab.server.sql("SELECT grade FROM lab.tests WHERE site = 'pi-b'", DB) == [("A",)]


def test_a_pi_claiming_another_site_is_refused(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    graded_tests(home, 1)
    lying = pi_settings(home, lab, "pi-b", role="banc_pi_a")
    report = runner.sync_once(lying)
    assert report.exit_code == sync.EXIT_ERROR and "row-level security" in (report.refused or "")
    assert lab.count("tests") == 0


def test_the_reader_role_only_reads(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "pi-a"
    graded_tests(home, 2)
    assert runner.sync_once(pi_settings(home, lab, "pi-a")).exit_code == 0
    with db.connect(lab.uri(READER)) as conn:
        assert conn.execute("SELECT count(*) FROM lab.tests").fetchone() == (2,)
        for statement in ("UPDATE lab.tests SET grade = 'A+'", "DELETE FROM lab.test_rows",
                          "INSERT INTO lab.sites VALUES ('x', 'monitor')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_tls_is_verified_against_the_labs_ca(lab: Lab) -> None:
    with db.connect(lab.uri("banc_pi_a")) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # The certificate names localhost, not 127.0.0.1: verify-full refuses the same server by that name.
    wrong_name = lab.uri("banc_pi_a").replace("@localhost:", "@127.0.0.1:")
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        db.connect(wrong_name).close()
    clear = lab.uri("banc_pi_a").split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError):
        db.connect(clear).close()


# =========================================================================== the lab's readers


def test_history_and_results_cover_the_lab_and_name_the_site(lab: Lab, two_pis: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    env = pi_env(two_pis["pi-a"], lab, "pi-a")
    shown = run("report.py", "--history", "RW-SHARED01", env=env)
    assert shown.returncode == 0 and shown.stderr == ""
    lines = [line for line in shown.stdout.splitlines() if "RW-SHARED01" in line.upper() and ":banc" in line]
    assert [line.split()[0].split(":")[0] for line in lines] == ["pi-b", "pi-a"]  # newest first, sites named
    out = two_pis["pi-a"] / "results.csv"
    written = run("report.py", "--results", str(out), env=env)
    assert written.returncode == 0 and "(5 tests)" in written.stdout
    header, *rows = out.read_text().splitlines()
    assert header.split(",") == list(db.LAB_RESULTS_HEADER)
    assert sorted(r.split(",")[0] for r in rows) == ["pi-a", "pi-b", "pi-b", "pi-b", "pi-b"]


def test_the_48_hour_rule_sees_the_other_pis_tests(lab: Lab, two_pis: dict[str, Path]) -> None:
    settings = pi_settings(two_pis["pi-a"], lab, "pi-a")
    latest, note = lab_history.latest_finished("RW-SHARED01", settings)
    assert note is None and latest is not None and latest.where.startswith("pi-b:banc2/")
    alone = settings_module.parse_settings({"BANC_HOME": str(two_pis["pi-a"])}, two_pis["pi-a"], "x")
    local, local_note = lab_history.latest_finished("RW-SHARED01", alone)
    assert local_note is None and local is not None and local.where.startswith("banc1/")


def _silent_server() -> socket.socket:
    """A port that accepts connections and never answers: a lab server whose link hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def test_a_lab_that_does_not_answer_falls_back_within_2_s_and_says_so(lab: Lab, two_pis: dict[str, Path]) -> None:
    with _silent_server() as silent:
        port = silent.getsockname()[1]
        env = pi_env(two_pis["pi-a"], lab, "pi-a") | {
            "BANC_LAB_DB": f"postgresql://banc_pi_a@127.0.0.1:{port}/{DB}?sslmode=disable"}
        started = time.monotonic()
        shown = run("report.py", "--history", "RW-SHARED01", env=env)
        elapsed = time.monotonic() - started
        assert shown.returncode == 0, shown.stderr
        assert lab_history.FALLBACK_NOTE in shown.stderr
        assert "banc1/" in shown.stdout and "pi-b" not in shown.stdout  # this Pi's own test only
        assert elapsed < 2.0 + 3.0  # the 2 s deadline plus the interpreter's start
        settings = settings_module.parse_settings({"BANC_HOME": str(two_pis["pi-a"]), "BANC_SITE": "pi-a",
                                                   "BANC_LAB_DB": env["BANC_LAB_DB"]}, two_pis["pi-a"], "x")
        started = time.monotonic()
        latest, note = lab_history.latest_finished("RW-SHARED01", settings)
        assert time.monotonic() - started < lab_history.LAB_DEADLINE_S + 0.5
        assert note == lab_history.FALLBACK_NOTE and latest is not None and latest.where.startswith("banc1/")
        text, count, note = lab_history.results_csv(settings)
        assert note == lab_history.FALLBACK_NOTE and count == 1 and text.splitlines()[0].split(",") == list(index.RESULTS_HEADER)


# =========================================================================== the 48 h rule at the kiosk and in banc.py


def recently_tested_on_pi_b(lab: Lab, homes: dict[str, Path]) -> str:
    """RW-RECENT01 finished on pi-b's banc2 an hour ago, synced: too early for a test anywhere in the lab."""
    ended = record.now_local() - timedelta(hours=1)
    write_finished_record(homes["pi-b"], "banc2", "RW-RECENT01", ended - timedelta(hours=6), 6 * 3600.0, 95.0, "A", 95.0)
    assert runner.sync_once(pi_settings(homes["pi-b"], lab, "pi-b")).exit_code == 0
    return "RW-RECENT01"


def kiosk_scan(settings: settings_module.Settings, *scans: str) -> str:
    """The kiosk's workflow with its real lookups (this Pi's folders and the lab database): the last answer."""
    from banclfp.kiosk.scan_workflow import ScanWorkflow
    from banclfp.kiosk.worker import real_lookups
    from banclfp.recording.store import Store

    flow = ScanWorkflow(4, 30.0, real_lookups(Store.from_settings(settings), lambda banc: False, settings))
    answers = [flow.handle(scan, record.now_local(), float(i)).message for i, scan in enumerate(scans)]
    return answers[-1]


def test_a_battery_finished_on_another_pi_is_refused_at_the_kiosk_and_by_banc_py(lab: Lab, two_pis: dict[str, Path]) -> None:
    serial = recently_tested_on_pi_b(lab, two_pis)
    answer = kiosk_scan(pi_settings(two_pis["pi-a"], lab, "pi-a"), "banc1", serial)
    assert answer.startswith(f"{serial} : dernier test terminé le ") and "(pi-b : banc2/" in answer, answer
    assert "il y a moins de 48\u00a0h ouvrées" in answer
    refused = run("banc.py", "banc1", serial, env=pi_env(two_pis["pi-a"], lab, "pi-a"))
    assert refused.returncode == 5, refused.stderr  # EXIT_TOO_EARLY, nothing created
    assert "sur pi-b (banc2/" in refused.stderr
    assert not (two_pis["pi-a"] / "data" / "banc1" / record.folder_name(serial, record.now_local().date())).exists()
    # A Pi alone knows nothing of pi-b: its own rule lets the test start.
    alone = settings_module.parse_settings({"BANC_HOME": str(two_pis["pi-a"])}, two_pis["pi-a"], "x")
    assert kiosk_scan(alone, "banc1", serial) == f"{serial} : nouveau test. Rescannez banc1 pour confirmer."


def test_an_unreachable_lab_lets_the_kiosk_decide_on_this_pi_in_2_s_and_say_so(
        lab: Lab, two_pis: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    serial = recently_tested_on_pi_b(lab, two_pis)
    with _silent_server() as silent:
        uri = f"postgresql://banc_pi_a@127.0.0.1:{silent.getsockname()[1]}/{DB}?sslmode=disable"
        settings = settings_module.parse_settings({"BANC_HOME": str(two_pis["pi-a"]), "BANC_SITE": "pi-a",
                                                   "BANC_LAB_DB": uri}, two_pis["pi-a"], "x")
        started = time.monotonic()
        answer = kiosk_scan(settings, "banc1", serial)
        assert time.monotonic() - started < lab_history.LAB_DEADLINE_S + 1.0
        assert answer == (f"{serial} : nouveau test. Rescannez banc1 pour confirmer. ({lab_history.FALLBACK_NOTE})")
        # banc.py's own check (in-process: the whole banc.py would go on to wait for its broker).
        from banclfp.recording import bench_process
        from banclfp.recording.store import Store

        assert bench_process.check_bench(Store.from_settings(settings), "banc1", serial, record.now_local(),
                                         settings) is None
        assert f"banc.py : {lab_history.FALLBACK_NOTE}" in capsys.readouterr().err
