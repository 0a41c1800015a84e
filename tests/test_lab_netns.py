"""Two Pis and a lab server on one machine (network namespaces, veth, tc): links cut and degraded.

Each Pi has its own namespace, BANC_HOME and lab_sync.py; the lab's PostgreSQL runs in the
server's namespace and each Pi reaches it over its own veth link, in TLS verify-full. A cut is
the server's end of the
veth pair set down, so the Pi's packets vanish (the cable pulled, as TCP sees it). What must hold: every test
arrives once, nothing is duplicated, the lab's history answers across Pis when the link is up
and falls back to the Pi's own tests within 2 s when it is not.

The first test works on synthetic folders and lab_sync.py --once; the second runs each Pi as it
runs in the lab: its own Mosquitto, a simulated ESP32, a real banc.py test and lab_sync.py as a
service, all in the Pi's namespace, while one link is cut and the other slowed. This kernel may
have no sch_netem: a slow link is then a token bucket (tbf), without loss.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import psycopg
import pytest

from banclfp.infra import logs, settings as settings_module
from banclfp.infra.environment import StaticFiles
from banclfp.lab import history as lab_history, payload, runner, schema
from banclfp.lab.outbox import OUTBOX_FILE, Outbox
from banclfp.recording import record
from banclfp.testkit.banc_helpers import BancRunner, MqttProbe, read_data_rows, wait_until
from banclfp.testkit.netns import LabNetwork, netns_unavailable
from banclfp.testkit.postgres import PostgresServer
from banclfp.testkit.support import REPO_DIR, MosquittoBroker, project_env, terminate
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test
from banclfp.wire import protocol
from tests.test_lab_db import kiosk_scan
from tests.test_simulator import run_simulator

pytestmark = pytest.mark.timeout(300)

WHY_NOT = netns_unavailable()
DB = "banc_lab"
START = datetime(2026, 3, 2, 8, 0, tzinfo=record.LOCAL_TZ)


class Pi:
    """One Pi of the lab: its namespace, BANC_HOME, site and environment."""

    def __init__(self, net: LabNetwork, server: PostgresServer, number: int, root: Path) -> None:
        self.net, self.number = net, number
        self.site = f"pi-{number}"
        self.role = f"banc_pi_{number}"
        self.home = root / self.site
        self.home.mkdir()
        uri = server.uri(self.role, DB, host=net.server_address(number))
        self.lab_env = {"BANC_SITE": self.site, "BANC_LAB_DB": uri, "PGPASSFILE": str(root / "lab.pgpass")}
        self.env = project_env(self.home, None, **self.lab_env)

    def run(self, script: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """A command line of the project, on this Pi (in its namespace)."""
        return subprocess.run([*self.net.exec_prefix(self.number), sys.executable, str(REPO_DIR / script), *args],
                              env=self.env, cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout_s)

    def start(self, script: str, *args: str, log: Optional[Path] = None) -> subprocess.Popen[str]:
        """A command line of the project on this Pi, in the background (its output piped, or into `log` for a service)."""
        out = open(log, "ab") if log is not None else subprocess.PIPE
        try:
            return subprocess.Popen([*self.net.exec_prefix(self.number), sys.executable, str(REPO_DIR / script), *args],
                                    env=self.env, cwd=REPO_DIR, stdout=out, stderr=out, text=True)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]

    def folders(self) -> list[Path]:
        """This Pi's test folders."""
        return runner.test_folders(self.home / "data")

    def settings(self) -> settings_module.Settings:
        """This Pi's settings, as the kiosk reads them (PGPASSFILE comes from the process's environment)."""
        env = {"BANC_HOME": str(self.home), "BANC_SITE": self.site, "BANC_LAB_DB": self.lab_env["BANC_LAB_DB"]}
        return settings_module.parse_settings(env, self.home, "ignored")


# One lab per test: the synthetic test counts every test of the lab, the running one adds its own.
@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabNetwork, PostgresServer, list[Pi]]]:
    """The lab server and two Pis, each on its own link; the schema migrated, one role per Pi."""
    if WHY_NOT:
        pytest.skip(f"network namespaces unavailable: {WHY_NOT}")
    root = tmp_path / "lab"
    root.mkdir()
    net = LabNetwork(2).start()
    server = PostgresServer(host=",".join(net.server_addresses), tls=True, cert_hosts=net.server_addresses,
                            netns=net.server_ns)
    try:
        server.start()
        server.create_database(DB)
        with psycopg.connect(server.superuser_conninfo(DB), autocommit=True) as conn:
            schema.migrate(conn)
        pis = [Pi(net, server, n, root) for n in (1, 2)]
        lines = []
        for pi in pis:
            password = f"secret-{pi.number}"
            server.create_login(pi.role, password, "banc_pi")
            server.sql("INSERT INTO lab.sites VALUES (%s, %s)", DB, (pi.site, pi.role))
            lines.append(f"{net.server_address(pi.number)}:{server.port}:{DB}:{pi.role}:{password}\n")
        (root / "lab.pgpass").write_text("".join(lines))
        (root / "lab.pgpass").chmod(0o600)
        yield net, server, pis
    finally:
        server.close()
        net.close()


def lab_tests(server: PostgresServer) -> dict[str, int]:
    """test_id -> its number of chart rows, as the lab holds them."""
    rows = server.sql("SELECT t.test_id, count(r.bucket) FROM lab.tests t LEFT JOIN lab.test_rows r USING (test_id) "
                      "GROUP BY t.test_id", DB)
    return {test_id: int(count) for test_id, count in rows}


def expected_tests(pis: list[Pi]) -> dict[str, int]:
    """test_id -> its number of distinct 5 s buckets, from every Pi's folders (the truth)."""
    expected = {}
    for pi in pis:
        for folder in pi.folders():
            rows, _ = payload.read_rows(folder / record.DATA_CSV_FILE, 0, chunk_bytes=1 << 30)
            expected[payload.test_id(pi.site, f"{folder.parent.name}/{folder.name}")] = len(rows)
    return expected


def test_partitions_lose_nothing_duplicate_nothing_and_the_history_falls_back(lab: tuple[LabNetwork, PostgresServer, list[Pi]]) -> None:
    net, server, (pi1, pi2) = lab
    # Both Pis have tests; RW-SHARED01 was tested on pi-2 last.
    for n, pi in enumerate((pi1, pi2)):
        for i in range(8):
            write_finished_record(pi.home, f"banc{1 + i % 4}", f"RW-P{n}T{i:03d}", START + timedelta(days=i),
                                  3600.0, 90.0, "A", 90.0)
    write_finished_record(pi1.home, "banc1", "RW-SHARED01", START, 3600.0, 96.0, "A", 96.0)
    write_finished_record(pi2.home, "banc2", "RW-SHARED01", START + timedelta(days=20), 3600.0, 91.0, "A", 91.0)
    for pi in (pi1, pi2):
        done = pi.run("lab_sync.py", "--once")
        assert done.returncode == 0, done.stderr

    # Link up: pi-1's history of the battery shows pi-2's test, the newest.
    shown = pi1.run("report.py", "--history", "RW-SHARED01")
    assert shown.returncode == 0 and shown.stderr == ""
    assert [line.split()[0].split(":")[0] for line in shown.stdout.splitlines() if ":banc" in line] == ["pi-2", "pi-1"]

    # pi-1 cut off: new tests wait on the Pi (exit 3), its history falls back within 2 s and says so.
    net.cut(1)
    try:
        for i in range(5):
            write_finished_record(pi1.home, "banc3", f"RW-CUT{i:03d}", START + timedelta(days=40 + i), 3600.0, 88.0, "B", 88.0)
        began = time.monotonic()
        down = pi1.run("lab_sync.py", "--once")
        assert down.returncode == 3, down.stderr
        assert time.monotonic() - began < 15
        began = time.monotonic()
        fallback = pi1.run("report.py", "--history", "RW-SHARED01")
        elapsed = time.monotonic() - began
        assert fallback.returncode == 0 and lab_history.FALLBACK_NOTE in fallback.stderr
        assert "pi-2" not in fallback.stdout and "banc1/" in fallback.stdout
        assert elapsed < lab_history.LAB_DEADLINE_S + 3.0  # the deadline plus the interpreter's start
        # pi-2's link is untouched: it goes on syncing meanwhile.
        write_finished_record(pi2.home, "banc4", "RW-DURING01", START + timedelta(days=41), 3600.0, 93.0, "A", 93.0)
        assert pi2.run("lab_sync.py", "--once").returncode == 0
    finally:
        net.restore(1)

    # A backlog cut in the middle of its sync (the link slowed so that the cut lands inside it): what
    # was committed stays, the rest comes after, nothing twice.
    big = write_synthetic_test(pi1.home, rows=120_000, interval_s=1.0, banc="banc4", serial="RW-BIG0001",
                               start=START + timedelta(days=50), finished=False)
    big_id = payload.test_id(pi1.site, f"banc4/{big.folder.name}")
    net.degrade(1, "tbf rate 1mbit burst 16kbit latency 2s")
    sending = pi1.start("lab_sync.py", "--once")
    try:
        deadline = time.monotonic() + 60
        while not server.sql("SELECT count(*) FROM lab.test_rows WHERE test_id = %s", DB, (big_id,))[0][0]:
            assert time.monotonic() < deadline and sending.poll() is None, "the backlog never started"
            time.sleep(0.1)
        net.cut(1)
        began = time.monotonic()
        _, err = sending.communicate(timeout=60)
        assert sending.returncode == 3, err  # the broken link is noticed (keepalive / TCP user timeout)...
        assert time.monotonic() - began < 20  # ...in seconds, not after TCP's 15 minutes
    finally:
        net.restore(1)
    assert 0 < lab_tests(server)[big_id] < expected_tests([pi1])[big_id]  # cut in the middle indeed
    resumed_at = Outbox(pi1.home / OUTBOX_FILE, f"{pi1.site} {pi1.env['BANC_LAB_DB']}").all()[big_id]
    assert resumed_at.signature is None and resumed_at.rows_offset > 0  # the next pass resumes there

    # A slow, lossy link: everything still arrives.
    for i in range(4):
        write_finished_record(pi2.home, "banc2", f"RW-LOSSY{i:02d}", START + timedelta(days=60 + i), 3600.0, 85.0, "B", 85.0)
    # netem when the kernel has it; else a token bucket at 256 kbit/s (a slow link, no loss).
    net.degrade(2, "netem delay 80ms loss 10%" if net.netem_available() else "tbf rate 256kbit burst 16kbit latency 2s")
    try:
        slow = pi2.run("lab_sync.py", "--once")
        assert slow.returncode in (0, 3), slow.stderr
    finally:
        net.restore(2)

    # Links up again: every test of every Pi is in the lab once, with all its rows.
    for pi in (pi1, pi2):
        done = pi.run("lab_sync.py", "--once")
        assert done.returncode == 0, done.stderr
    assert lab_tests(server) == expected_tests([pi1, pi2])
    assert len(lab_tests(server)) == 8 + 8 + 2 + 5 + 1 + 1 + 4


# A whole 5-phase test in about 35 s: x300 at 1 C (tests/test_e2e.py's pack), long enough for the cut to land inside.
SIM_ARGS = ("--speed", "300", "--capacity-ah", "50", "--ri-ohm", "0.03", "--seed", "7",
            "--charge-current-a", "50", "--discharge-current-a", "50")
CUT_S = 18.0  # longer than lab_sync.py's POLL_INTERVAL_S (15 s): at least one pass meets the cut link
SLOW_LINK = "tbf rate 512kbit burst 16kbit latency 2s"  # no netem here: slow, no loss


LabRow = tuple[Optional[str], Optional[str], int]


def lab_row(server: PostgresServer, test_id: str) -> Optional[LabRow]:
    """(content_sha256, certificate_sha256, chart rows) of a test in the lab; None when it holds none."""
    found = server.sql("SELECT t.content_sha256, t.certificate_sha256, "
                       "(SELECT count(*) FROM lab.test_rows r WHERE r.test_id = t.test_id) "
                       "FROM lab.tests t WHERE t.test_id = %s", DB, (test_id,))
    return (found[0][0], found[0][1], int(found[0][2])) if found else None


def lab_rows(server: PostgresServer, test_id: str) -> int:
    """A test's chart rows in the lab (0 when it holds none)."""
    row = lab_row(server, test_id)
    return row[2] if row is not None else 0


def disk_row(pi: Pi, folder: Path) -> LabRow:
    """What the lab must hold of a test folder: its payload's hash, its certificate's, its 5 s rows."""
    test = payload.read_test(pi.site, folder, StaticFiles(pi.home).correct_to_25c)
    assert test is not None
    rows, _ = payload.read_rows(folder / record.DATA_CSV_FILE, 0, chunk_bytes=1 << 30)
    return test.content_sha256, payload.file_sha256(folder / record.CERTIFICATE_FILE), len(rows)


def folder_id(pi: Pi, folder: Path) -> str:
    """A folder's test_id in the lab."""
    return payload.test_id(pi.site, f"{folder.parent.name}/{folder.name}")


@pytest.mark.slow
def test_running_tests_on_two_pis_reach_the_lab_once_through_a_cut_and_a_slow_link(
        lab: tuple[LabNetwork, PostgresServer, list[Pi]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, server, pis = lab
    pi1, pi2 = pis
    serials = {pi.site: f"RW-NETNS{pi.number:03d}" for pi in pis}
    monkeypatch.setenv("PGPASSFILE", pi1.lab_env["PGPASSFILE"])  # the kiosk's lookups run in this process
    with ExitStack() as stack:
        brokers, benches, services = {}, {}, {}
        for pi in pis:
            # Everything of a Pi in its namespace: its broker on its own 127.0.0.1, the ESP, banc.py, lab_sync.py.
            broker = net.call_in(pi.number, MosquittoBroker(tmp_path / f"mosq-{pi.site}").start)
            stack.callback(broker.stop)
            brokers[pi.site] = broker
            env = project_env(pi.home, broker)
            simulator = run_simulator(env, tmp_path, *SIM_ARGS)
            net.call_in(pi.number, functools.partial(stack.enter_context, simulator))
            t = protocol.topics(1)
            esp = net.call_in(pi.number, MqttProbe(broker, [t.esp_status]).start)
            esp.wait_for(t.esp_status, protocol.STATUS_ONLINE, live_only=False)
            esp.stop()
        began = time.monotonic()
        for pi in pis:
            # As the kiosk starts it: `banc.py banc1 SERIAL` with the Pi's environment (its broker, its lab).
            bench = BancRunner(pi.home, brokers[pi.site], "banc1", serials[pi.site], env=pi.lab_env)
            stack.callback(bench.stop)
            benches[pi.site] = net.call_in(pi.number, bench.start)
        for pi in pis:
            service = pi.start("lab_sync.py", log=tmp_path / f"lab_sync-{pi.site}.log")  # a service: no --once
            stack.callback(terminate, service, 15.0)
            services[pi.site] = service
        folders = {pi.site: benches[pi.site].folder() for pi in pis}
        ids = {pi.site: folder_id(pi, folders[pi.site]) for pi in pis}
        # Both running tests reach the lab while the links are up.
        wait_until(lambda: all(lab_row(server, ids[pi.site]) is not None for pi in pis), 20, 0.2, "running tests in the lab")

        # pi-1's link pulled, pi-2's slowed to 256 kbit/s, while both tests run.
        net.cut(1)
        net.degrade(2, SLOW_LINK)
        cut_at = time.monotonic()
        lab_rows_at_cut = {pi.site: lab_rows(server, ids[pi.site]) for pi in pis}
        try:
            # pi-1's kiosk decides on its own within the deadline, and says so.
            asked = time.monotonic()
            answer = net.call_in(1, lambda: kiosk_scan(pi1.settings(), "banc2", serials[pi2.site]))
            cut_decision_s = time.monotonic() - asked
            assert lab_history.FALLBACK_NOTE in answer and cut_decision_s < lab_history.LAB_DEADLINE_S + 1.0, answer
            time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))
            assert all(bench.alive() for bench in benches.values())  # the cut lands inside the tests indeed
            at_restore = {pi.site: len(read_data_rows(folders[pi.site])) for pi in pis}
            lab_rows_at_restore = {pi.site: lab_rows(server, ids[pi.site]) for pi in pis}
            rows_at_restore = {pi.site: len(payload.read_rows(folders[pi.site] / record.DATA_CSV_FILE, 0,
                                                                chunk_bytes=1 << 30)[0]) for pi in pis}
        finally:
            net.restore(1)
            net.restore(2)
        restored_at = time.monotonic()
        cut_s = restored_at - cut_at
        # Nothing of pi-1 came through the cut; pi-2 went on syncing over its slow link.
        assert lab_rows_at_restore[pi1.site] == lab_rows_at_cut[pi1.site]
        assert lab_rows_at_restore[pi2.site] > lab_rows_at_cut[pi2.site]
        # pi-1 catches up: the lab gets at least what its folder held when the link came back.
        wait_until(lambda: lab_rows(server, ids[pi1.site]) >= rows_at_restore[pi1.site],
                   45, 0.2, "pi-1's backlog after the cut")
        caught_up_s = time.monotonic() - restored_at

        for pi in pis:
            code = benches[pi.site].wait_exit(90)
            assert code == 0, benches[pi.site].log_text()[-3000:]
        tests_s = time.monotonic() - began
        ended_at = time.monotonic()

        def settled(pi: Pi) -> bool:
            folder = folders[pi.site]
            summary = record.load_summary(folder)
            graded = summary is not None and summary.verdict is not None and summary.verdict.grade is not None
            if graded and not (folder / record.CERTIFICATE_FILE).exists():
                return False  # report.py is still writing it: the lab will get it next
            return lab_row(server, ids[pi.site]) == disk_row(pi, folder)

        wait_until(lambda: all(settled(pi) for pi in pis), 45, 0.3, "the finished tests in the lab")
        synced_s = time.monotonic() - ended_at

        # With the link up, pi-2's battery, just finished, is refused on pi-1: at the kiosk and by banc.py.
        serial2 = serials[pi2.site]
        asked = time.monotonic()
        answer = net.call_in(1, lambda: kiosk_scan(pi1.settings(), "banc2", serial2))
        up_decision_s = time.monotonic() - asked
        assert answer.startswith(f"{serial2} : dernier test terminé le ") and f"({pi2.site} : banc1/" in answer, answer
        assert "il y a moins de 48\u00a0h ouvrées" in answer
        refused = pi1.run("banc.py", "banc2", serial2)
        assert refused.returncode == 5, refused.stderr  # EXIT_TOO_EARLY
        assert f"sur {pi2.site} (banc1/" in refused.stderr
        # Cut again: the same scan is decided on pi-1 alone within the deadline, and says so.
        net.cut(1)
        try:
            asked = time.monotonic()
            answer = net.call_in(1, lambda: kiosk_scan(pi1.settings(), "banc2", serial2))
            fallback_s = time.monotonic() - asked
        finally:
            net.restore(1)
        assert answer == f"{serial2} : nouveau test. Rescannez banc2 pour confirmer. ({lab_history.FALLBACK_NOTE})"
        assert fallback_s < lab_history.LAB_DEADLINE_S + 1.0

        # pi-1's service met the cut (a pass failed, nothing lost) and said so.
        unreachable = (pi1.home / logs.LOG_FILE).read_text(errors="replace").count("lab database unreachable")
        assert unreachable >= 1
    # SIGTERM: the services end cleanly.
    assert [services[pi.site].returncode for pi in pis] == [0, 0]

    # Every test once, all its rows, its verdict; nothing else in the lab, nothing twice.
    grades = {}
    for pi in pis:
        folder = folders[pi.site]
        assert lab_row(server, ids[pi.site]) == disk_row(pi, folder)
        summary = record.load_summary(folder)
        assert summary is not None and summary.status == record.TEST_FINISHED
        verdict = server.sql("SELECT grade, verdict FROM lab.tests WHERE test_id = %s", DB, (ids[pi.site],))[0]
        expected = summary.verdict
        assert verdict == ((expected.grade, expected.to_json()) if expected is not None else (None, None))
        grades[pi.site] = verdict[0]
    assert lab_tests(server) == expected_tests(pis)
    assert server.sql("SELECT serial, count(*) FROM lab.tests GROUP BY serial ORDER BY serial", DB) == \
        [(serials[pi1.site], 1), (serials[pi2.site], 1)]
    keys = server.sql("SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE contype = 'p' AND conrelid::regclass::text IN ('lab.tests', 'lab.test_rows') ORDER BY 1", DB)
    assert keys == [("lab.test_rows", "PRIMARY KEY (test_id, bucket)"), ("lab.tests", "PRIMARY KEY (test_id)")]
    print(f"netns: tests {tests_s:.1f} s ({at_restore} data rows at the restore), {pi1.site} cut {cut_s:.1f} s "
          f"and {pi2.site} at 512 kbit/s (lab rows during it {lab_rows_at_cut} -> {lab_rows_at_restore}), {pi1.site} caught up {caught_up_s:.1f} s after the restore, the lab complete "
          f"{synced_s:.1f} s after the tests' end ({lab_tests(server)} rows); 48 h: refused in {up_decision_s:.2f} s "
          f"with the link up, fallback in {cut_decision_s:.2f} / {fallback_s:.2f} s cut; "
          f"{unreachable} failed pass(es) on {pi1.site}; grades {grades}")
