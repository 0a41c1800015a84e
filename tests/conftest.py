"""Shared fixtures: an isolated BANC_HOME, a real Mosquitto broker, an Xvfb display; the `pure` tests of --fast."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from banclfp.infra import environment
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import BancFleet
from banclfp.testkit.support import MosquittoBroker, Xvfb, project_env

# The fixtures that start a real part. A test that uses none of them and is not marked gui or slow is
# marked `pure`: `pytest --fast` (`scripts/test.sh --fast`) runs only those, for the inner loop.
REAL_PART_FIXTURES = frozenset({"broker", "mqtt_env", "fleet", "xvfb_display"})
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
