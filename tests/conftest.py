"""Shared fixtures: an isolated BANC_HOME, a real Mosquitto broker, an Xvfb display."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banclfp.infra import environment
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import BancFleet
from banclfp.testkit.support import MosquittoBroker, Xvfb, project_env


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
