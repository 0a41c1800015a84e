"""scripts/demo.sh's broker: its own private Mosquitto, never the machine's 127.0.0.1:1883 unless named.

The choice is testkit/demo_broker.py (tables below); demo.sh itself is run for real in a copy
of the project whose setup.sh does nothing and without a display: it stops at "pas d'écran",
after the broker part, which is what is checked (a real private Mosquitto, started and stopped).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from banclfp.testkit import demo_broker
from banclfp.testkit.demo_broker import DemoBroker, choose_broker, ignored_settings, parse_broker, private_conf
from banclfp.testkit.support import REPO_DIR, MosquittoBroker, free_port

PRODUCTION_ENV = {  # what a shell that sourced an installed Pi's banc.env carries
    "BANC_MQTT_HOST": "127.0.0.1", "BANC_MQTT_PORT": "1883", "BANC_MQTT_USERNAME": "pi", "BANC_MQTT_PASSWORD": "secret",
}


@pytest.mark.parametrize(
    "env",
    [{}, PRODUCTION_ENV, {"BANC_MQTT_HOST": "localhost"}, {"BANC_MQTT_PORT": "1883"},
     {"BANC_MQTT_CAFILE": "/etc/banc-lfp/ca.crt", "BANC_MQTT_HOST": "pi.local"}, {"BANC_DEMO_BROKER": "  "}],
    ids=["nothing", "production settings", "host only", "port only", "TLS settings", "blank demo broker"],
)
def test_without_being_told_the_demo_never_picks_the_machine_broker(env: dict[str, str]) -> None:
    ports = iter([1883, 1883, 41234])  # even a free-port picker that offered 1883 is not taken at its word
    choice = choose_broker(env, lambda: next(ports))
    assert choice == DemoBroker(True, "127.0.0.1", 41234)


def test_a_real_free_port_is_never_1883() -> None:
    for _ in range(20):
        choice = choose_broker({})
        assert choice.private and choice.host == "127.0.0.1" and choice.port != 1883


@pytest.mark.parametrize(
    "value,cafile,expected",
    [
        ("localhost:1883", "", ("localhost", 1883)),  # named: the user asked for it
        ("127.0.0.1:1883", "", ("127.0.0.1", 1883)),
        ("pi.local", "", ("pi.local", 1883)),
        ("pi.local", "/ca.crt", ("pi.local", 8883)),
        ("pi.local:9883", "/ca.crt", ("pi.local", 9883)),
        ("[::1]:1884", "", ("::1", 1884)),
        ("[::1]", "", ("::1", 1883)),
        (" 10.0.0.5:1883 ", "", ("10.0.0.5", 1883)),
    ],
)
def test_a_named_broker_is_used(value: str, cafile: str, expected: tuple[str, int]) -> None:
    choice = choose_broker({"BANC_DEMO_BROKER": value, "BANC_MQTT_CAFILE": cafile}, lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert choice == DemoBroker(False, *expected)


@pytest.mark.parametrize("value", ["host:abc", "host:0", "host:70000", ":1883", "a b:1883", "[::1]x", "host:"])
def test_a_malformed_demo_broker_is_refused_with_the_reason(value: str) -> None:
    with pytest.raises(ValueError, match="BANC_DEMO_BROKER"):
        parse_broker(value)


def test_inherited_settings_are_named_as_ignored_only_for_the_private_broker() -> None:
    assert ignored_settings(PRODUCTION_ENV) == ["BANC_MQTT_HOST", "BANC_MQTT_PORT", "BANC_MQTT_USERNAME",
                                                "BANC_MQTT_PASSWORD"]
    assert ignored_settings(dict(PRODUCTION_ENV, BANC_DEMO_BROKER="pi.local:1883")) == []
    assert ignored_settings({}) == []


def test_private_conf_listens_on_loopback_and_persists_under_the_demo_home(tmp_path: Path) -> None:
    conf = private_conf(tmp_path, 40001).splitlines()
    assert conf[0] == "listener 40001 127.0.0.1"
    assert f"persistence_location {tmp_path / 'mosquitto'}/" in conf
    assert "max_packet_size 4096" in conf and "user root" not in conf
    assert private_conf(tmp_path, 40001, as_root=True).splitlines()[-1] == "user root"


# =========================================================================== demo.sh, run


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """The project as demo.sh sees it, with a setup.sh that installs nothing, no simulator and no kiosk."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO_DIR / "scripts" / "demo.sh", root / "scripts" / "demo.sh")
    (root / "scripts" / "setup.sh").write_text("exit 0\n")
    for name in (".venv", "testkit"):
        (root / name).symlink_to(REPO_DIR / name)
    for module in REPO_DIR.glob("*.py"):
        if module.name not in ("simulator.py", "ui.py"):
            (root / module.name).symlink_to(module)
    return root


def run_demo(root: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    base.update(BANC_HOME=str(home), DISPLAY="", **env)
    return subprocess.run(["bash", str(root / "scripts" / "demo.sh")], env=base, capture_output=True, text=True,
                          timeout=60)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_demo_sh_starts_its_own_broker_even_with_production_settings(demo_copy: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_demo(demo_copy, home, **PRODUCTION_ENV)
    assert done.returncode == 1 and "pas d'écran" in done.stderr, done.stdout + done.stderr  # past the broker part
    assert "BANC_MQTT_HOST, BANC_MQTT_PORT, BANC_MQTT_USERNAME, BANC_MQTT_PASSWORD ignoré(s)" in done.stderr
    line = next(line for line in done.stdout.splitlines() if "Mosquitto privé sur" in line)
    port = int(line.split("127.0.0.1:")[1].split()[0])
    assert port != 1883
    conf = (home / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert conf[0] == f"listener {port} 127.0.0.1"
    assert f"persistence_location {home / 'mosquitto'}/" in conf
    assert not listening(port)  # the demo stopped its broker on the way out


def test_demo_sh_uses_a_named_broker_and_starts_none(demo_copy: Path, tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "named")
    broker.start()
    try:
        home = tmp_path / "home"
        done = run_demo(demo_copy, home, BANC_DEMO_BROKER=f"127.0.0.1:{broker.port}")
        assert done.returncode == 1 and "pas d'écran" in done.stderr, done.stdout + done.stderr
        assert f"broker demandé 127.0.0.1:{broker.port} (BANC_DEMO_BROKER)" in done.stdout
        assert not (home / "mosquitto").exists() and "Mosquitto privé" not in done.stdout
        assert broker.proc is not None and broker.proc.poll() is None  # the demo leaves a broker it did not start
    finally:
        broker.stop()


def test_demo_sh_stops_when_the_named_broker_does_not_answer(demo_copy: Path, tmp_path: Path) -> None:
    port = free_port()
    done = run_demo(demo_copy, tmp_path / "home", BANC_DEMO_BROKER=f"127.0.0.1:{port}")
    assert done.returncode == 1 and f"le broker 127.0.0.1:{port} ne répond pas" in done.stderr
    assert "pas d'écran" not in done.stderr  # never falls back to another broker


def test_demo_sh_refuses_a_malformed_demo_broker(demo_copy: Path, tmp_path: Path) -> None:
    done = run_demo(demo_copy, tmp_path / "home", BANC_DEMO_BROKER="pi.local:abc")
    assert done.returncode == 2 and "BANC_DEMO_BROKER='pi.local:abc' : port invalide" in done.stderr


def test_module_usage() -> None:
    assert demo_broker.main(["what"]) == 2
