"""Shared fixtures: an isolated BANC_HOME, a real Mosquitto broker, an Xvfb display, the lab database; the `pure` tests of --fast."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from banclfp.infra import environment, settings as settings_module
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import BancFleet
from banclfp.testkit.support import MosquittoBroker, Xvfb, project_env
from banclfp.testkit.synthetic import write_finished_record

if TYPE_CHECKING:  # the lab's helpers import psycopg only when a test uses them
    import psycopg

    from banclfp.testkit.postgres import PostgresServer

# The fixtures that start a real part. A test that uses none of them and is not marked gui or slow is
# marked `pure`: `pytest --fast` (`scripts/test.sh --fast`) runs only those, for the inner loop.
REAL_PART_FIXTURES = frozenset({"broker", "mqtt_env", "fleet", "xvfb_display", "lab_server", "lab", "two_pis", "cups"})
# Pure but wide: the single-fault matrix (24 faults x 6 positions x 3 rule sets) alone takes 80 s of CPU,
# more than the rest of the pure tests together; the full suite runs it.
WIDE_MATRIX_FILES = frozenset({"test_single_fault.py"})


def pytest_addoption(parser: pytest.Parser) -> None:
    """--fast: only the pure tests (no broker, no Xvfb, no process started)."""
    parser.addoption("--fast", action="store_true",
                     help="only the pure tests: no broker, no Xvfb, no process started (scripts/test.sh --fast)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the pure tests; with --fast, deselect the others."""
    deselected = []
    for item in items:
        uses_real_part = not REAL_PART_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        wide = item.path.name in WIDE_MATRIX_FILES
        if uses_real_part or wide or item.get_closest_marker("gui") or item.get_closest_marker("slow"):
            deselected.append(item)
        else:
            item.add_marker(pytest.mark.pure)
    if config.getoption("fast") and deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("pure")]


@pytest.fixture(scope="session", autouse=True)
def _fast_runs_start_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """With --fast, a test that starts a process (banc.py, a script, a tool) is skipped: the full suite runs it.

    Its fixtures cannot say it (a helper starts the process), so the first start says it, before any wait.
    Session-wide, so that a module's fixture starting a process (install.sh) is refused too.
    """
    if not request.config.getoption("fast"):
        yield
        return

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        pytest.skip("starts a process: run by the full suite, not by --fast")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", refuse)
        patch.setattr(os, "fork", refuse)
        patch.setattr(os, "posix_spawn", refuse)
        yield


@pytest.fixture
def banc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh BANC_HOME for this test (also in this process's environment, for entry points run in-process)."""
    home = tmp_path / "home"
    home.mkdir()
    for key in [k for k in __import__("os").environ if k.startswith("BANC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BANC_HOME", str(home))
    return home


@pytest.fixture
def store(banc_home: Path) -> Store:
    """The store of this test's BANC_HOME (the default 4 benches)."""
    return Store(banc_home)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto on a free loopback port, stopped after the test."""
    instance = MosquittoBroker(tmp_path / "broker")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def mqtt_env(banc_home: Path, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """BANC_HOME + broker settings in this process, and the environment for child processes."""
    for key, value in broker.env().items():
        monkeypatch.setenv(key, value)
    return project_env(banc_home, broker)


@pytest.fixture
def settings(mqtt_env: dict[str, str]) -> environment.Settings:
    """The settings of this test's BANC_HOME and broker, as an entry point reads them."""
    return environment.load_settings(mqtt_env)


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A private Xvfb display for GUI tests (":N")."""
    server = Xvfb(1920, 1080).start()
    yield server.display or ""
    server.stop()


@pytest.fixture
def fleet(mqtt_env: dict, banc_home: Path, broker: MosquittoBroker) -> Iterator[BancFleet]:
    """banc.py processes of this test, all stopped at teardown."""
    instance = BancFleet(banc_home, broker)
    yield instance
    instance.stop_all()



# =========================================================================== the lab database
# The lab server of the lab's tests (test_lab_db.py) and the monitor's (test_monitor_lab.py), which
# import its names from here: a private PostgreSQL (testkit.postgres) with TLS, migrated, two Pis'
# roles and a reader. Every Pi is a BANC_HOME of its own and a login role of its own, as on a real lab.

DB = "banc_lab"
OWNER, OWNER_PW = "banc_owner", "owner-secret"
READER, READER_PW = "monitor", "reader-secret"
SITES = {"pi-a": ("banc_pi_a", "a-secret"), "pi-b": ("banc_pi_b", "b-secret")}
START = datetime(2026, 3, 2, 8, 0, tzinfo=record.LOCAL_TZ)


class Lab:
    """The lab server of these tests: the cluster, its password file and each role's URI."""

    def __init__(self, server: PostgresServer, passfile: Path) -> None:
        self.server = server
        self.passfile = passfile

    def uri(self, user: str) -> str:
        """`user`'s BANC_LAB_DB (host name 'localhost': verify-full checks it against the certificate)."""
        return self.server.uri(user, DB, host="localhost")

    def owner(self) -> psycopg.Connection:
        """A connection as the database's owner."""
        from banclfp.lab import db

        return db.connect(self.uri(OWNER))

    def count(self, table: str) -> int:
        """Rows of lab.`table` (superuser: RLS does not apply)."""
        return int(self.server.sql(f"SELECT count(*) FROM lab.{table}", DB)[0][0])

    def empty(self) -> Lab:
        """Remove every test (and its rows and revisions); the roles and sites stay."""
        self.server.sql("TRUNCATE lab.tests, lab.test_rows, lab.test_revisions", DB)
        return self


def start_lab(passfile: Path) -> Lab:
    """Start the server, migrate the lab database as its owner, add both Pis' roles and the reader.

    Sets PGPASSFILE in this process (libpq reads it, as on a Pi: the unit's Environment=);
    `stop_lab` removes it and the server.
    """
    from banclfp.lab import db
    from banclfp.testkit.postgres import PostgresServer

    server = PostgresServer(tls=True, cert_hosts=("localhost",)).start()
    try:
        server.create_login(OWNER, OWNER_PW)
        server.sql(f'ALTER ROLE "{OWNER}" CREATEROLE')
        server.create_database(DB, OWNER)
        lines = [(OWNER, OWNER_PW), (READER, READER_PW), *SITES.values()]
        passfile.write_text("".join(f"{host}:{server.port}:{DB}:{u}:{p}\n" for u, p in lines
                                    for host in ("localhost", "127.0.0.1")))
        passfile.chmod(0o600)
        os.environ["PGPASSFILE"] = str(passfile)
        lab = Lab(server, passfile)
        applied = db.migrate(lab.uri(OWNER))
        if applied != ["0001_lab_schema.sql"]:
            raise RuntimeError(f"unexpected migrations on a fresh database: {applied}")
        for site, (role, password) in SITES.items():
            server.create_login(role, password, "banc_pi")
            server.sql("INSERT INTO lab.sites (site, db_role) VALUES (%s, %s)", DB, (site, role))
        server.create_login(READER, READER_PW, "banc_reader")
        return lab
    except BaseException:
        stop_lab(server)
        raise


def stop_lab(server: PostgresServer) -> None:
    """Forget PGPASSFILE and remove the server."""
    os.environ.pop("PGPASSFILE", None)
    server.close()


def pi_settings(home: Path, lab: Lab, site: str, role: str = "") -> settings_module.Settings:
    """A Pi's settings: its BANC_HOME, its site, its role's URI."""
    env = {"BANC_HOME": str(home), "BANC_SITE": site, "BANC_LAB_DB": lab.uri(role or SITES[site][0])}
    return settings_module.parse_settings(env, home, "ignored")


def graded_tests(home: Path, count: int, serial_base: str = "RW-LAB", days_apart: int = 3) -> list[Path]:
    """`count` finished, graded test folders (journal + config.json) on banc1..banc4."""
    return [write_finished_record(home, f"banc{1 + i % 4}", f"{serial_base}{i:04d}", START + timedelta(days=days_apart * i),
                                  6 * 3600.0, 95.0 - i % 20, "A", 95.0 - i % 20) for i in range(count)]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A private PostgreSQL with TLS, the lab database migrated by its owner, two Pis' roles and a reader (testkit.lab)."""
    lab = start_lab(tmp_path_factory.mktemp("pgpass") / "lab.pgpass")
    try:
        yield lab
    finally:
        stop_lab(lab.server)


@pytest.fixture
def lab(lab_server: Lab) -> Lab:
    """The lab server with no test in it."""
    return lab_server.empty()


@pytest.fixture
def two_pis(lab: Lab, tmp_path: Path, banc_home: Path) -> dict[str, Path]:
    """pi-a (this process's BANC_HOME) and pi-b, both with a test of RW-SHARED01, synced."""
    from banclfp.lab import runner

    homes = {"pi-a": banc_home, "pi-b": tmp_path / "pi-b"}
    write_finished_record(homes["pi-a"], "banc1", "RW-SHARED01", START, 3600.0, 96.0, "A", 96.0)
    write_finished_record(homes["pi-b"], "banc2", "RW-shared01", START + timedelta(days=10), 3600.0, 91.0, "A", 91.0)
    graded_tests(homes["pi-b"], 3, serial_base="RW-OTHER")
    for site, home in homes.items():
        assert runner.sync_once(pi_settings(home, lab, site)).exit_code == 0
    return homes
