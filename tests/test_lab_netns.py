"""Two Pis and a lab server on one machine (network namespaces, veth, tc): links cut and degraded.

Each Pi has its own namespace, BANC_HOME and lab_sync.py; the lab's PostgreSQL runs in the
server's namespace and each Pi reaches it over its own veth link, in TLS verify-full. A cut is
the server's end of the
veth pair set down, so the Pi's packets vanish (the cable pulled, as TCP sees it). What must hold: every test
arrives once, nothing is duplicated, the lab's history answers across Pis when the link is up
and falls back to the Pi's own tests within 2 s when it is not.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from banclfp.lab import history as lab_history, payload, runner, schema
from banclfp.lab.outbox import OUTBOX_FILE, Outbox
from banclfp.recording import record
from banclfp.testkit.netns import LabNetwork, netns_unavailable
from banclfp.testkit.postgres import PostgresServer
from banclfp.testkit.support import REPO_DIR, project_env
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test

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
        self.env = project_env(self.home, BANC_SITE=self.site, BANC_LAB_DB=uri, PGPASSFILE=str(root / "lab.pgpass"))

    def run(self, script: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """A command line of the project, on this Pi (in its namespace)."""
        return subprocess.run([*self.net.exec_prefix(self.number), sys.executable, str(REPO_DIR / script), *args],
                              env=self.env, cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout_s)

    def start(self, script: str, *args: str) -> subprocess.Popen[str]:
        """A command line of the project on this Pi, in the background."""
        return subprocess.Popen([*self.net.exec_prefix(self.number), sys.executable, str(REPO_DIR / script), *args],
                                env=self.env, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def folders(self) -> list[Path]:
        """This Pi's test folders."""
        return runner.test_folders(self.home / "data")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabNetwork, PostgresServer, list[Pi]]]:
    """The lab server and two Pis, each on its own link; the schema migrated, one role per Pi."""
    if WHY_NOT:
        pytest.skip(f"network namespaces unavailable: {WHY_NOT}")
    root = tmp_path_factory.mktemp("lab")
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
