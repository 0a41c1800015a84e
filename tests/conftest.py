"""Shared fixtures: an isolated BANC_HOME, a real Mosquitto broker, an Xvfb display."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from banclfp.infra import environment
from banclfp.testkit.banc_helpers import BancFleet
from banclfp.testkit.support import MosquittoBroker, Xvfb, project_env


@pytest.fixture
def banc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BANC_HOME for this test, with the settings cache reloaded."""
    home = tmp_path / "home"
    home.mkdir()
    for key in [k for k in __import__("os").environ if k.startswith("BANC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("BANC_HOME", str(home))
    environment.reload_settings()
    yield home
    monkeypatch.undo()
    environment.reload_settings()


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
    environment.reload_settings()
    return project_env(banc_home, broker)


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
