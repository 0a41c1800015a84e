"""deploy/: install.sh in a throwaway root, the locked-down broker it configures, the units.

The broker tests run the real Mosquitto with the configuration install.sh produced
(only the /etc paths are moved into the throwaway root), on free ports, with both
listeners: clear text on 127.0.0.1 (loopback) and TLS on 127.0.0.2, standing in for the
Pi's LAN address, with the certificate install.sh made for it (docs/installation.md).
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import pytest

from banclfp.infra import environment, logs
from banclfp.testkit.support import REPO_DIR, MosquittoBroker, free_port, mosquitto_binary
from banclfp.wire import protocol

DEPLOY = REPO_DIR / "deploy"
INSTALL = DEPLOY / "install.sh"
ADD_BENCH = DEPLOY / "add_bench_account.sh"
LAN_IP = "127.0.0.2"  # any 127/8 address is local on Linux: a second, "LAN" listener
PI_ACCOUNT = "pi-banc"
TIMEOUT_S = 5.0

# Debian's stock /etc/mosquitto/mosquitto.conf, plus what the seed's manual steps (or a
# hurried technician) may have left open.
DEBIAN_MAIN_CONF = """pid_file /run/mosquitto/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest file /var/log/mosquitto/mosquitto.log
include_dir /etc/mosquitto/conf.d
listener 1883
allow_anonymous true
"""
OPEN_CONF_D = "listener 1883 0.0.0.0\nallow_anonymous true\n"
RETAIN_GUARD = "usr/local/lib/banc-lfp/mosquitto-retain-guard.so"  # under the root, as install.sh writes it


def run_script(script: Path, *args: str, check: bool = True, env: Optional[dict[str, str]] = None,
               stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a deploy script with bash; fail with its output when `check` and it fails."""
    proc = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=60, env=env,
        **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script.name} {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: relative path -> (sha256, mode)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_client_id_is_account_on_lan_listeners(conf: str) -> None:
    """docs/installation.md (MQTT accounts): use_username_as_clientid on every listener but the loopback one.

    A listener option: it holds from its `listener` line to the next one (or the end).
    """
    blocks = re.split(r"^(?=listener )", conf, flags=re.M)[1:]
    assert blocks
    for block in blocks:
        address = block.split("\n", 1)[0].split()[2]
        option = re.findall(r"^use_username_as_clientid .*$", block, re.M)
        assert option == ([] if address == "127.0.0.1" else ["use_username_as_clientid true"]), block


def credentials(root: Path) -> dict[str, str]:
    """Bench account -> password, from the bench-accounts file install.sh wrote."""
    lines = (root / "etc/banc-lfp/bench-accounts.txt").read_text().splitlines()
    return dict(line.split()[:2] for line in lines if line and not line.startswith("#"))


def env_file(root: Path) -> dict[str, str]:
    """KEY=VALUE pairs of banc.env."""
    lines = (root / "etc/banc-lfp/banc.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as section -> [(key, value)], keeping repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    """The value of a key that must appear exactly once."""
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


class ArgvSampler:
    """Every distinct command line (argv joined by spaces) seen in /proc while it runs: what ps shows."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                            raw = f.read()
                    except OSError:  # the process ended meanwhile
                        continue
                    if raw:
                        self.seen.add(raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))
            # A short pause leaves the CPU to the installation: the commands that matter
            # (slowed_path) stay in ps for 0.3 s, far longer than this.
            self._stop.wait(0.01)

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slowed_path(tmp: Path, *commands: str) -> dict[str, str]:
    """An environment whose PATH runs `commands` through a shim that lingers 0.3 s with the same argv.

    A password passed to one of them would stay in ps long enough for ArgvSampler to see it.
    """
    shims = tmp / "shims"
    shims.mkdir()
    for command in commands:
        real = shutil.which(command)
        assert real, command
        shim = shims / command
        shim.write_text(f'#!/bin/sh\nsleep 0.3\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}


@dataclass
class Installed:
    root: Path
    home: Path
    port: int
    tls_port: int
    user: str
    args: tuple[str, ...]
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    after_first: dict[str, tuple[str, int]]
    argv_seen: set[str]

    @property
    def ca(self) -> Path:
        return self.root / "etc/mosquitto/banc-lfp-tls/ca.crt"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """install.sh run twice into a throwaway root that starts with an open Mosquitto setup.

    The first run is watched: every command line of the machine sampled while it runs.
    """
    base = tmp_path_factory.mktemp("deploy")
    root, home = base / "root", base / "home"
    (root / "etc/mosquitto/conf.d").mkdir(parents=True)
    (root / "etc/mosquitto/mosquitto.conf").write_text(DEBIAN_MAIN_CONF)
    (root / "etc/mosquitto/conf.d/local.conf").write_text(OPEN_CONF_D)
    port, tls_port, user = free_port(), free_port(), getpass.getuser()
    args = ("--root", str(root), "--user", user, "--project", str(REPO_DIR), "--home", str(home),
            "--bancs", "2", "--lan-ip", LAN_IP, "--port", str(port), "--tls-port", str(tls_port), "--monitor")
    with ArgvSampler() as sampler:
        first = run_script(INSTALL, *args, env=slowed_path(base, "mosquitto_passwd"))
    after_first = snapshot(root)
    second = run_script(INSTALL, *args)
    return Installed(root, home, port, tls_port, user, args, first, second, after_first, sampler.seen)


# ============================================================ install.sh


def test_install_writes_every_file_with_safe_modes(installed: Installed) -> None:
    root = installed.root
    expected = {
        "etc/mosquitto/conf.d/banc-lfp.conf": 0o644,
        "etc/mosquitto/banc-lfp.acl": 0o640,
        "etc/mosquitto/banc-lfp.passwd": 0o600,
        "etc/banc-lfp/banc.env": 0o600,
        "etc/banc-lfp/bench-accounts.txt": 0o600,
        "etc/banc-lfp/ca.key": 0o600,  # the CA's key: root only (docs/installation.md)
        "etc/banc-lfp/mosquitto_sub": 0o600,
        "etc/banc-lfp/mosquitto_pub": 0o600,
        "etc/mosquitto/banc-lfp-tls/ca.crt": 0o644,
        "etc/mosquitto/banc-lfp-tls/server.crt": 0o644,
        "etc/mosquitto/banc-lfp-tls/server.key": 0o640,
        "etc/systemd/system/banc-lfp-kiosk.service": 0o644,
        "etc/systemd/system/mosquitto.service.d/banc-lfp.conf": 0o644,
        "etc/logrotate.d/banc-lfp": 0o644,
        # --monitor: the web monitor's settings (its broker password), unit and HTTPS certificate.
        "etc/banc-lfp/monitor.env": 0o600,
        "etc/systemd/system/banc-lfp-monitor.service": 0o644,
        "etc/banc-lfp-web/monitor.crt": 0o644,
        "etc/banc-lfp-web/monitor.key": 0o640,
        "etc/systemd/journald.conf.d/banc-lfp.conf": 0o644,  # the system's journal in RAM (SD-card writes)
        RETAIN_GUARD: 0o644,  # the broker's plugin, compiled from deploy/mosquitto-retain-guard.c
    }
    for rel, mode in expected.items():
        path = root / rel
        assert path.is_file(), rel
        assert path.stat().st_mode & 0o777 == mode, rel
        if rel != RETAIN_GUARD:
            assert not re.search(r"@[A-Z_]+@", path.read_text()), f"placeholder left in {rel}"
    assert (root / str(installed.home).lstrip("/")).is_dir()  # BANC_HOME, inside the throwaway root
    assert list(root.rglob("*banc-lfp-work*")) == []  # the folders where secrets were made are gone

    env = env_file(root)
    assert env["BANC_HOME"] == str(installed.home)
    assert env["BANC_MQTT_HOST"] == "127.0.0.1"
    assert env["BANC_MQTT_PORT"] == str(installed.port)
    assert env["BANC_MQTT_USERNAME"] == PI_ACCOUNT
    assert env["BANC_NUM_BANCS"] == "2"
    assert re.fullmatch(r"[A-Za-z0-9]{20,}", env["BANC_MQTT_PASSWORD"])
    # The contract's settings parse from it exactly as the kiosk will see them.
    settings = environment.load_settings(env)
    assert (settings.mqtt_username, settings.mqtt_port, settings.num_bancs) == (PI_ACCOUNT, installed.port, 2)

    creds = credentials(root)
    assert sorted(creds) == ["banc1", "banc2"]
    assert len(set(creds.values()) | {env["BANC_MQTT_PASSWORD"]}) == 3  # all different
    accounts = [line.split(":")[0] for line in (root / "etc/mosquitto/banc-lfp.passwd").read_text().splitlines()]
    assert sorted(accounts) == ["banc1", "banc2", "moniteur", PI_ACCOUNT]  # moniteur: --monitor, read only

    conf = (root / "etc/mosquitto/conf.d/banc-lfp.conf").read_text()
    listeners = re.findall(r"^listener .*$", conf, re.M)
    assert listeners == [f"listener {installed.port} 127.0.0.1", f"listener {installed.tls_port} {LAN_IP}"]
    assert re.findall(r"^max_packet_size .*$", conf, re.M) == ["max_packet_size 4096"]  # global: every listener
    assert_client_id_is_account_on_lan_listeners(conf)
    assert re.findall(r"^plugin.*$", conf, re.M) == [f"plugin /{RETAIN_GUARD}", f"plugin_opt_pi_account {PI_ACCOUNT}"]
    rotate = (root / "etc/logrotate.d/banc-lfp").read_text()
    assert f"{installed.home}/logs.log {{" in rotate
    assert "copytruncate" not in re.sub(r"#.*", "", rotate)
    journald = re.sub(r"#.*", "", (root / "etc/systemd/journald.conf.d/banc-lfp.conf").read_text())
    assert re.findall(r"^Storage=.*$", journald, re.M) == ["Storage=volatile"]  # the card spared (issue 26)


def test_install_closes_what_was_left_open(installed: Installed) -> None:
    """A listener / allow_anonymous outside our file would reopen the broker: neutralised."""
    main = (installed.root / "etc/mosquitto/mosquitto.conf").read_text()
    active = [line for line in main.splitlines() if line and not line.startswith("#")]
    assert "allow_anonymous true" not in active and "listener 1883" not in active
    assert "include_dir /etc/mosquitto/conf.d" in active
    assert (installed.root / "etc/mosquitto/mosquitto.conf.banc-lfp.orig").read_text() == DEBIAN_MAIN_CONF
    conf_d = sorted(p.name for p in (installed.root / "etc/mosquitto/conf.d").iterdir())
    assert conf_d == ["banc-lfp.conf", "local.conf.disabled-by-banc-lfp"]


def test_install_prints_machine_actions_and_never_a_password(installed: Installed) -> None:
    out = installed.first.stdout
    for action in (
        f"[--root] non exécuté : runuser -u {installed.user} -- env HOME={Path('~' + installed.user).expanduser()} "
        f"bash {REPO_DIR}/scripts/setup.sh",
        "[--root] non exécuté : systemctl daemon-reload",
        "[--root] non exécuté : systemctl restart mosquitto.service",
        "[--root] non exécuté : systemctl enable banc-lfp-kiosk.service",
        "[--root] non exécuté : systemctl --no-block restart banc-lfp-kiosk.service",
        "raspi-config nonint do_boot_behaviour B4",
        "mosquitto_passwd -U (compte banc2, depuis un fichier temporaire) -> /etc/mosquitto/banc-lfp.passwd",
        "=== Résumé ===",
    ):
        assert action in out, action
    secrets = [env_file(installed.root)["BANC_MQTT_PASSWORD"], *credentials(installed.root).values()]
    for run in (installed.first, installed.second):
        for secret in secrets:
            assert secret not in run.stdout + run.stderr
    # The advice printed at the end reads the password from a file, never from argv.
    assert "sudo env XDG_CONFIG_HOME=/etc/banc-lfp mosquitto_sub -t 'banc1/#' -v" in out
    assert not re.search(r"mosquitto_(sub|pub).* -P ", out)


def test_no_password_in_the_process_list_during_installation(installed: Installed) -> None:
    """docs/installation.md: ps, sampled all along the first run, never shows a password."""
    secrets = [env_file(installed.root)["BANC_MQTT_PASSWORD"], *credentials(installed.root).values()]
    # The sampler did see the moments that matter: each mosquitto_passwd (lingering 0.3 s).
    hashing = [argv for argv in installed.argv_seen if "mosquitto_passwd" in argv]
    assert any(" -U " in argv for argv in hashing), sorted(installed.argv_seen)[:50]
    assert any("openssl" in argv for argv in installed.argv_seen)
    leaks = [argv for argv in installed.argv_seen if any(secret in argv for secret in secrets)]
    assert leaks == []


def test_install_is_idempotent(installed: Installed) -> None:
    """The second run changes no byte and restarts nothing."""
    assert snapshot(installed.root) == installed.after_first
    out = installed.second.stdout
    assert "créé :" not in out and "mis à jour :" not in out and "mosquitto_passwd" not in out
    assert "systemctl restart mosquitto.service" not in out
    assert "systemctl --no-block start banc-lfp-kiosk.service" in out
    # every file but the password and accounts files; 2 of them --monitor's (monitor.env, its unit), 1 the
    # journald drop-in that keeps the system's journal in RAM
    assert out.count("inchangé :") == 13
    assert "+ openssl" not in out and "autorité de certification conservée" in out
    assert "certificat du serveur conservé" in out


def test_install_keeps_the_ca_and_renews_the_server_certificate_when_due(installed: Installed, tmp_path: Path) -> None:
    """Same CA on every re-run; a new server certificate when the address changed or it expires soon."""
    tls = "etc/mosquitto/banc-lfp-tls"
    assert installed.after_first[f"{tls}/ca.crt"] == snapshot(installed.root)[f"{tls}/ca.crt"]
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    args = list(installed.args)
    args[args.index("--root") + 1] = str(root)

    def cert_text(name: str) -> str:
        return subprocess.run(["openssl", "x509", "-in", str(root / tls / name), "-noout", "-text"],
                              capture_output=True, text=True, check=True).stdout

    # The Pi moved to another address: new certificate for it, same CA, broker restarted.
    args[args.index("--lan-ip") + 1] = "127.0.0.3"
    moved = run_script(INSTALL, *args)
    assert "certificat du serveur pour 127.0.0.3 (fait pour une autre adresse" in moved.stdout
    assert "IP Address:127.0.0.3" in cert_text("server.crt")
    assert "systemctl restart mosquitto.service" in moved.stdout
    after_move = snapshot(root)
    for name in ("ca.crt", "ca.key"):
        folder = tls if name == "ca.crt" else "etc/banc-lfp"
        assert after_move[f"{folder}/{name}"] == installed.after_first[f"{folder}/{name}"], name

    # A certificate 1 day from expiry (signed by the same CA) is renewed for another 825 days.
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.3\n")
    subprocess.run(["openssl", "req", "-new", "-key", str(root / tls / "server.key"), "-subj", "/CN=127.0.0.3",
                    "-out", str(tmp_path / "csr")], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(tmp_path / "csr"), "-CA", str(root / tls / "ca.crt"),
         "-CAkey", str(root / "etc/banc-lfp/ca.key"), "-set_serial", "7", "-days", "1",
         "-extfile", str(tmp_path / "ext"), "-out", str(root / tls / "server.crt")],
        check=True, capture_output=True,
    )
    assert "IP Address:127.0.0.3" in cert_text("server.crt")
    # (The same run asks for --lan-plaintext: a clear-text LAN listener besides TLS, with a warning.)
    renewed = run_script(INSTALL, *args, "--lan-plaintext")
    assert "dans moins de 60 jours" in renewed.stdout
    end = subprocess.run(["openssl", "x509", "-in", str(root / tls / "server.crt"), "-noout", "-checkend",
                          str(800 * 86400)], capture_output=True)
    assert end.returncode == 0  # valid for more than 800 days again
    assert snapshot(root)[f"{tls}/ca.crt"] == installed.after_first[f"{tls}/ca.crt"]

    assert "--lan-plaintext" in renewed.stderr and "ATTENTION" in renewed.stderr
    conf = (root / "etc/mosquitto/conf.d/banc-lfp.conf").read_text()
    assert re.findall(r"^listener .*$", conf, re.M) == [
        f"listener {installed.port} 127.0.0.1", f"listener {installed.tls_port} 127.0.0.3",
        f"listener {installed.port} 127.0.0.3",
    ]
    assert_client_id_is_account_on_lan_listeners(conf)  # the clear-text LAN listener is an ESPs' one too


def test_dry_run_prints_everything_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_script(INSTALL, "--dry-run", "--root", str(root), "--user", "pi", "--lan-ip", "192.168.1.10")
    assert list(root.rglob("*")) == []
    for action in (
        "[dry-run] écrire /etc/banc-lfp/banc.env (mode 0600, root:root)",
        "[dry-run] écrire /etc/systemd/system/banc-lfp-kiosk.service",
        "[dry-run] mosquitto_passwd -U (compte banc4, depuis un fichier temporaire)",
        "[dry-run] openssl : autorité de certification locale (clé EC P-256 /etc/banc-lfp/ca.key 0600",
        "[dry-run] openssl : certificat du serveur pour 192.168.1.10",
        "[dry-run] systemctl enable banc-lfp-kiosk.service",
        "[dry-run] runuser -u pi -- env HOME=",
        f"[dry-run] écrire /{RETAIN_GUARD} (mode 0644, root:root)",
    ):
        assert action in proc.stdout, action


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lan-ip", "10.0.0.1"], "--user est obligatoire"),
        (["--user", "pi", "--lan-ip", "300.1.1.1"], "pas une adresse IPv4"),
        (["--user", "pi", "--lan-ip", "127.0.0.1"], "écoute locale"),
        (["--user", "pi", "--lan-ip", "0.0.0.0"], "toutes les interfaces"),
        (["--user", "pi", "--lan-ip", "::"], "toutes les interfaces"),
        (["--user", "pi", "--lan-ip", "10.0.0.1", "--tls-port", "1883"], "doivent différer"),
        (["--user", "pi", "--lan-ip", "10.0.0.1", "--tls-port", "70000"], "--tls-port invalide"),
        (["--user", "pi", "--lan-ip", "10.0.0.1", "--bancs", "0"], "--bancs"),
        (["--user", "pi", "--lan-ip", "10.0.0.1", "--project", "/tmp/a b"], "chemin absolu"),
        (["--user", "pi", "--lan-ip", "10.0.0.1", "--pi-account", "banc1"], "nom de banc"),
        (["--user", "pi", "--frobnicate"], "option inconnue"),
    ],
)
def test_install_rejects_bad_parameters(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_script(INSTALL, "--dry-run", "--root", str(tmp_path / "r"), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize("address", ["192.0.2.77", "0.0.0.0"])
def test_install_refuses_an_address_the_machine_does_not_have(tmp_path: Path, address: str) -> None:
    """Without --root (a real installation, even --dry-run) --lan-ip must be one of this machine's."""
    proc = run_script(INSTALL, "--dry-run", "--user", "pi", "--lan-ip", address, check=False)
    assert proc.returncode != 0
    assert ("pas une adresse de cette machine" if address != "0.0.0.0" else "toutes les interfaces") in proc.stderr


def test_install_apt_list_covers_setup_sh() -> None:
    """setup.sh, run afterwards as the kiosk user, must find nothing to install as root."""

    def packages(path: Path) -> set[str]:
        match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", path.read_text(), re.M)
        assert match, path
        return set(match.group(1).split())

    assert packages(REPO_DIR / "scripts/setup.sh") <= packages(INSTALL)


def test_add_bench_account(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    before = credentials(root)
    proc = run_script(ADD_BENCH, "--root", str(root), "Banc3")
    assert "[--root] non exécuté : systemctl reload mosquitto.service" in proc.stdout
    creds = credentials(root)
    assert sorted(creds) == ["banc1", "banc2", "banc3"] and creds["banc1"] == before["banc1"]
    assert creds["banc3"] not in proc.stdout
    passwd = (root / "etc/mosquitto/banc-lfp.passwd").read_text()
    assert passwd.count("banc3:") == 1 and (root / "etc/mosquitto/banc-lfp.passwd").stat().st_mode & 0o777 == 0o600

    again = run_script(ADD_BENCH, "--root", str(root), "banc3")
    assert "déjà présent, inchangé" in again.stdout and "reload" not in again.stdout
    assert credentials(root) == creds

    # A chosen password comes on stdin, never on the command line (ps shows argv).
    changed = run_script(ADD_BENCH, "--root", str(root), "--password-stdin", "banc3", stdin="Nouveau-mdp-42\n")
    assert credentials(root)["banc3"] == "Nouveau-mdp-42"
    assert "systemctl reload mosquitto.service" in changed.stdout and "Nouveau-mdp-42" not in changed.stdout
    on_argv = run_script(ADD_BENCH, "--root", str(root), "banc3", "Autre-mdp-4242", check=False)
    assert on_argv.returncode != 0 and "--password-stdin" in on_argv.stderr
    assert credentials(root)["banc3"] == "Nouveau-mdp-42"

    for bad, stdin in ((["banc0"], None), (["pi-banc"], None), (["--password-stdin", "banc4"], "court\n"),
                       (["--password-stdin", "banc4"], "")):
        proc = run_script(ADD_BENCH, "--root", str(root), *bad, check=False, stdin=stdin)
        assert proc.returncode != 0 and "ERREUR" in proc.stderr, bad


# ============================================================ the broker


class DeployedBroker(MosquittoBroker):
    """Mosquitto running the configuration install.sh wrote, moved into the throwaway root."""

    def __init__(self, installed: Installed, workdir: Path, extra_conf: str = "") -> None:
        super().__init__(workdir, installed.port)
        conf = (installed.root / "etc/mosquitto/conf.d/banc-lfp.conf").read_text()
        conf = conf.replace(" /etc/mosquitto/", f" {installed.root}/etc/mosquitto/")
        conf = conf.replace(f" /{RETAIN_GUARD}", f" {installed.root}/{RETAIN_GUARD}")
        # What Debian's main mosquitto.conf provides on the Pi; and as root, mosquitto
        # would drop to the mosquitto user, which cannot read the throwaway root.
        self.conf_text = "\n".join(
            [conf, f"persistence_location {self.workdir}/", "log_dest stderr", f"user {getpass.getuser()}", extra_conf, ""]
        )

    def write_conf(self) -> None:
        self.conf_path.write_text(self.conf_text)


class Probe:
    """A paho-mqtt 2.x client that records its CONNACK, its SUBACKs and what it receives.

    With `cafile`, it speaks TLS and trusts only that CA (as an ESP32 pinning it does).
    """

    def __init__(self, port: int, username: Optional[str] = None, password: Optional[str] = None,
                 host: str = "127.0.0.1", cafile: Optional[Path] = None, client_id: str = "",
                 persistent: bool = False) -> None:
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                                  client_id=client_id, clean_session=not persistent)
        if username is not None:
            self.client.username_pw_set(username, password)
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile))
        self.host, self.port = host, port
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *_args: self.disconnected.set()
        self.connack: Optional[mqtt.ReasonCode] = None
        self.connack_event = threading.Event()
        self.started = False
        self.subacks: dict[int, list] = {}
        self.suback_event = threading.Condition()
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload.decode()))

    def _on_connect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, _properties: Optional[mqtt.Properties]) -> None:
        if self.connack is None:
            self.connack = reason_code
            self.connack_event.set()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int, reason_codes: list[mqtt.ReasonCode],
                      _properties: Optional[mqtt.Properties]) -> None:
        with self.suback_event:
            self.subacks[mid] = list(reason_codes)
            self.suback_event.notify_all()

    def connect(self) -> bool:
        """Connect; True when the broker accepted the credentials."""
        self.client.connect(self.host, self.port, keepalive=30)
        # Loop by hand until the CONNACK: a background loop would sit in its reconnect
        # back-off after a refusal, and stopping it would wait for that.
        for _ in range(int(TIMEOUT_S / 0.05)):
            if self.connack_event.is_set():
                break
            self.client.loop(timeout=0.05)
        assert self.connack is not None, "no CONNACK"
        if self.connack.is_failure:
            self.client.disconnect()
            return False
        self.client.loop_start()
        self.started = True
        return True

    def refused(self) -> str:
        """Try to connect; why the connection failed ("" when the broker accepted it)."""
        try:
            if self.connect():
                self.close()
                return ""
            return f"CONNACK {self.connack}"
        except (OSError, AssertionError) as exc:  # ssl.SSLError is an OSError
            self.client.loop_stop()
            return f"{type(exc).__name__}: {exc}"

    def subscribe(self, topic: str) -> bool:
        """Subscribe with QoS 1; True when the broker granted it."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None, "SUBSCRIBE not sent"  # paho gives no mid when it could not send it
        with self.suback_event:
            assert self.suback_event.wait_for(lambda: mid in self.subacks, TIMEOUT_S), "no SUBACK"
        return not self.subacks[mid][0].is_failure

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT_S)

    def receive_until(self, topic: str) -> list[tuple[str, str]]:
        """Every message received up to and including the first one on `topic`."""
        received = []
        while True:
            item = self.messages.get(timeout=TIMEOUT_S)
            received.append(item)
            if item[0] == topic:
                return received

    def close(self) -> None:
        if self.started:
            self.started = False
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def deployed_broker(installed: Installed, tmp_path: Path) -> Iterator[DeployedBroker]:
    broker = DeployedBroker(installed, tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    """Clients to close after the test, whatever happens."""
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()


def listeners(installed: Installed) -> list[dict]:
    """Probe arguments of the two listeners: clear text on loopback, TLS (pinned CA) on the LAN."""
    return [dict(port=installed.port, host="127.0.0.1"), dict(port=installed.tls_port, host=LAN_IP, cafile=installed.ca)]


def test_broker_refuses_anonymous_and_wrong_passwords(installed: Installed, deployed_broker: DeployedBroker) -> None:
    creds = credentials(installed.root)
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    for where in listeners(installed):  # both listeners, same rules
        assert not Probe(**where).connect()
        assert not Probe(username="banc1", password="wrong-password", **where).connect()
        assert not Probe(username="banc1", password=creds["banc2"], **where).connect()
        assert not Probe(username="banc9", password=creds["banc1"], **where).connect()
        assert not Probe(username=PI_ACCOUNT, password="", **where).connect()
        for user, password in ((PI_ACCOUNT, pi_password), ("banc1", creds["banc1"])):
            probe = Probe(username=user, password=password, **where)
            assert probe.connect(), (where, user)
            probe.close()


def other_ca(tmp_path: Path) -> Path:
    """A self-signed CA that did not sign the broker's certificate (an attacker's, or another Pi's)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(tmp_path / "other.key"), "-subj", "/CN=banc-lfp CA other", "-days", "30",
         "-out", str(tmp_path / "other.crt")],
        check=True, capture_output=True,
    )
    return tmp_path / "other.crt"


def test_lan_listener_is_tls_only_with_the_pinned_ca(
    installed: Installed, deployed_broker: DeployedBroker, tmp_path: Path
) -> None:
    """docs/installation.md: on the LAN, only TLS with the CA install.sh made; the product's client gets in."""
    banc1 = credentials(installed.root)["banc1"]
    # An ESP32 account pinning the CA connects over TLS.
    assert Probe(installed.tls_port, "banc1", banc1, host=LAN_IP, cafile=installed.ca).refused() == ""
    # Clear text on the TLS port: no MQTT session (the broker waits for a TLS handshake).
    assert Probe(installed.tls_port, "banc1", banc1, host=LAN_IP).refused() != ""
    # Clear text on the usual MQTT port of the LAN address: nothing listens there.
    assert "ConnectionRefusedError" in Probe(installed.port, "banc1", banc1, host=LAN_IP).refused()
    # TLS trusting another CA: the broker's certificate is rejected, the password never sent.
    why = Probe(installed.tls_port, "banc1", banc1, host=LAN_IP, cafile=other_ca(tmp_path)).refused()
    assert "CERTIFICATE_VERIFY_FAILED" in why, why

    # The product's own client (protocol.make_client from the settings), as a simulator on a PC.
    settings = environment.load_settings({"BANC_MQTT_HOST": LAN_IP, "BANC_MQTT_CAFILE": str(installed.ca),
                                    "BANC_MQTT_USERNAME": "banc1", "BANC_MQTT_PASSWORD": banc1,
                                    "BANC_MQTT_PORT": str(installed.tls_port)})
    connacks: queue.Queue = queue.Queue()
    client = protocol.make_client("test_tls_product_client", settings)
    client.on_connect = lambda _c, _u, _f, reason_code, _p: connacks.put(reason_code)
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30)
    client.loop_start()
    try:
        assert not connacks.get(timeout=TIMEOUT_S).is_failure
        assert client._ssl  # the connection is the TLS one
    finally:
        client.disconnect()
        client.loop_stop()


def test_oversized_publish_is_refused_on_every_listener(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe]
) -> None:
    """max_packet_size 4096: the sender is disconnected and nobody receives the message."""
    creds = credentials(installed.root)
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    pi = Probe(installed.port, PI_ACCOUNT, pi_password)
    probes.append(pi)
    assert pi.connect() and pi.subscribe("#")
    banc1 = protocol.topics(1)
    senders = [Probe(installed.tls_port, "banc1", creds["banc1"], host=LAN_IP, cafile=installed.ca),
               Probe(installed.port, PI_ACCOUNT, pi_password)]
    for sender in senders:
        probes.append(sender)
        assert sender.connect()
        sender.client.publish(banc1.bms_data, "9" * 5000, qos=0)
        assert sender.disconnected.wait(TIMEOUT_S), "the broker kept a client that sent 5000 bytes"
    # The barrier: a normal message after both refusals; had either got through, it came first.
    barrier = Probe(installed.tls_port, "banc2", creds["banc2"], host=LAN_IP, cafile=installed.ca)
    probes.append(barrier)
    assert barrier.connect()
    barrier.publish(protocol.topics(2).step, "1")
    assert pi.receive_until(protocol.topics(2).step) == [(protocol.topics(2).step, "1")]


def test_simulator_on_a_pc_reaches_the_pi_over_tls(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe], tmp_path: Path
) -> None:
    """simulator.py with BANC_MQTT_CAFILE (and no port: 8883's stand-in is given) plays bench 1 over TLS."""
    pi = Probe(installed.port, PI_ACCOUNT, env_file(installed.root)["BANC_MQTT_PASSWORD"])
    probes.append(pi)
    assert pi.connect() and pi.subscribe(protocol.topics(1).esp_status)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env.update({"BANC_HOME": str(tmp_path), "BANC_MQTT_HOST": LAN_IP, "BANC_MQTT_PORT": str(installed.tls_port),
                "BANC_MQTT_CAFILE": str(installed.ca), "BANC_MQTT_USERNAME": "banc1",
                "BANC_MQTT_PASSWORD": credentials(installed.root)["banc1"]})
    sim = subprocess.Popen([sys.executable, str(REPO_DIR / "simulator.py"), "--bancs", "1"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert pi.receive_until(protocol.topics(1).esp_status)[-1] == (protocol.topics(1).esp_status,
                                                                       protocol.STATUS_ONLINE)
    finally:
        sim.terminate()
        _, err = sim.communicate(timeout=10)
    assert "refused" not in err, err


def test_pi_account_options_file_works_for_mosquitto_sub(installed: Installed, deployed_broker: DeployedBroker) -> None:
    """The advice printed by install.sh: mosquitto_sub gets host, port and account from its options file."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(installed.root / "etc/banc-lfp")}
    conf = (installed.root / "etc/banc-lfp/mosquitto_sub").read_text()
    assert f"-p {installed.port}\n" in conf
    proc = subprocess.run(["mosquitto_sub", "-t", "$SYS/broker/version", "-C", "1", "-W", "5"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("mosquitto version"), proc.stderr


def test_bench_account_is_confined_to_its_own_topics(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe]
) -> None:
    creds = credentials(installed.root)
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    banc1, banc2 = protocol.topics(1), protocol.topics(2)

    pi = Probe(installed.port, PI_ACCOUNT, pi_password)
    bench1 = Probe(installed.tls_port, "banc1", creds["banc1"], host=LAN_IP, cafile=installed.ca)
    bench2 = Probe(installed.tls_port, "banc2", creds["banc2"], host=LAN_IP, cafile=installed.ca)
    probes.extend([pi, bench1, bench2])
    assert pi.connect() and bench1.connect() and bench2.connect()
    assert pi.subscribe("#")  # the Pi's account reads everything

    # Reading: Mosquitto acknowledges any subscription, then checks the ACL on every
    # message it would deliver; what counts is what reaches bench 1 (checked below).
    for topic in (banc1.command, banc2.command, "#"):
        bench1.subscribe(topic)
    assert bench2.subscribe(banc2.command)

    # Publishing: what bench 1 sends to banc2/... is dropped by the broker. The message it
    # sends next on its own topic is the barrier: the Pi receives messages in order, so
    # had the first one been let through, it would have arrived before.
    bench1.publish(banc2.bms_data, "1,52.0,0,50,25,0,0,3250,3260,0")
    bench1.publish(banc2.step, "9")
    bench1.publish(banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0")
    assert pi.receive_until(banc1.bms_data) == [(banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0")]

    # The Pi's account publishes anywhere: bench 2 gets its command; bench 1, although
    # subscribed to banc2/command and to #, gets nothing of bench 2, only its own.
    pi.publish(banc2.command, "1")
    pi.publish(banc2.security, "alerte")
    pi.publish(banc1.command, "end")
    assert bench2.receive_until(banc2.command) == [(banc2.command, "1")]
    assert bench1.receive_until(banc1.command) == [
        (banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0"),  # its own publication, through "#"
        (banc1.command, "end"),
    ]
    assert pi.receive_until(banc1.command) == [(banc2.command, "1"), (banc2.security, "alerte"), (banc1.command, "end")]


def test_monitor_account_reads_every_bench_and_publishes_nothing(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe]
) -> None:
    """install.sh --monitor: the web monitor's account (docs/moniteur.md) can read, never write."""
    monitor_env = dict(line.split("=", 1) for line in
                       (installed.root / "etc/banc-lfp/monitor.env").read_text().splitlines() if "=" in line)
    assert monitor_env["BANC_MQTT_USERNAME"] == "moniteur" and monitor_env["BANC_WEB_HOST"] == LAN_IP
    assert Path(monitor_env["BANC_WEB_CERT"]).name == "monitor.crt"
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    banc1 = protocol.topics(1)
    pi = Probe(installed.port, PI_ACCOUNT, pi_password)
    watcher = Probe(installed.port, "moniteur", monitor_env["BANC_MQTT_PASSWORD"])
    probes.extend([pi, watcher])
    assert pi.connect() and watcher.connect()
    assert pi.subscribe("#") and watcher.subscribe("+/bms/data")
    watcher.publish(banc1.command, "1")  # dropped by the broker: the monitor cannot drive a bench
    watcher.publish(banc1.step, "9")
    pi.publish(banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0")
    assert pi.receive_until(banc1.bms_data) == [(banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0")]
    assert watcher.receive_until(banc1.bms_data) == [(banc1.bms_data, "7,52.1,0,50,25,0,0,3250,3260,0")]


# docs/protocole.md §5: the topics banc.py reads as events, which an ESP publishes without retain; and
# the others, where an ESP retains nothing either (its esp/status is the one it retains on).
EVENT_KINDS = ("step", "bms/data", "bms/replay", "ri/results", "banc/status", "security", "command", "n1")


def retained_now(installed: Installed, probes: list[Probe], *topics: str) -> list[tuple[str, str]]:
    """What a new subscriber to `topics` (the next banc.py) receives at once: their retained messages.

    The barrier: a message the Pi's account retains on banc9/banc/status, subscribed to last;
    had a topic before it held a retained message, that message would have come first.
    """
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    barrier = protocol.topics(9).banc_status
    pi, reader = Probe(installed.port, PI_ACCOUNT, pi_password), Probe(installed.port, PI_ACCOUNT, pi_password)
    probes.extend([pi, reader])
    assert pi.connect() and reader.connect()
    pi.publish(barrier, "barrier", retain=True)
    for topic in (*topics, barrier):
        assert reader.subscribe(topic)
    return reader.receive_until(barrier)[:-1]


@pytest.mark.parametrize("retain", [True, False], ids=["retained", "not-retained"])
@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_esp_account_leaves_no_retained_message_on_event_topics(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe], kind: str, retain: bool
) -> None:
    """docs/protocole.md §5: a retained publish of an ESP on an event topic is dropped (the retain guard plugin).

    The next banc.py would otherwise take a stale step, line or Ri result for a new one. The
    ESP's non-retained publishes go through, its retained esp/status too; the Pi's account
    may still retain there (maintenance clears a retained message with it).
    """
    creds = credentials(installed.root)
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    banc1 = protocol.topics(1)
    topic = f"{banc1.banc}/{kind}"
    live = Probe(installed.port, PI_ACCOUNT, pi_password)  # a banc.py already running
    esp = Probe(installed.tls_port, "banc1", creds["banc1"], host=LAN_IP, cafile=installed.ca)
    probes.extend([live, esp])
    assert live.connect() and live.subscribe(topic) and live.subscribe(banc1.esp_status)
    assert esp.connect()

    esp.publish(topic, "first", retain=retain)
    esp.publish(topic, "second")
    esp.publish(banc1.esp_status, protocol.STATUS_ONLINE, retain=True)  # its birth message
    # A refused publish is dropped whole: the running banc.py does not get it either.
    assert live.receive_until(banc1.esp_status) == [
        *([] if retain else [(topic, "first")]), (topic, "second"), (banc1.esp_status, protocol.STATUS_ONLINE)
    ]
    assert retained_now(installed, probes, topic, banc1.esp_status) == [(banc1.esp_status, protocol.STATUS_ONLINE)]

    # The check above does see a retained message on the topic: the Pi's account may leave one.
    live.publish(topic, "from the Pi", retain=True)
    assert retained_now(installed, probes, topic) == [(topic, "from the Pi")]


@pytest.mark.parametrize("kind, kept", [("esp/status", True), ("step", False)])
def test_esp_last_will_is_retained_on_esp_status_only(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe], kind: str, kept: bool
) -> None:
    """The broker checks a last will like a publish: retained on esp/status (contract), refused on step."""
    topic = f"banc1/{kind}"
    esp = Probe(installed.tls_port, "banc1", credentials(installed.root)["banc1"], host=LAN_IP, cafile=installed.ca,
                client_id="banc1")
    probes.append(esp)
    esp.client.will_set(topic, "9" if kind == "step" else protocol.STATUS_OFFLINE, qos=1, retain=True)
    assert esp.connect()
    sock = esp.client.socket()
    assert isinstance(sock, socket.socket)  # an ssl.SSLSocket
    log_start = deployed_broker.log_path.stat().st_size
    # The connection is lost without DISCONNECT (power cut, Wi-Fi gone): the broker sends the
    # will right after it logs the loss, before it reads anything else.
    esp.client.loop_stop()
    esp.started = False
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    deadline = time.monotonic() + TIMEOUT_S
    while not re.search(r"client banc1|Client banc1 (?!already)", deployed_broker.log_path.read_bytes()[log_start:].decode()):
        assert time.monotonic() < deadline, "the broker did not see the ESP's connection go"
        time.sleep(0.02)
    expected = [(topic, protocol.STATUS_OFFLINE)] if kept else []
    assert retained_now(installed, probes, topic) == expected


@pytest.mark.parametrize("holder_id", ["banc_script_banc1", "ui_kiosk", "banc2"])
def test_esp_account_cannot_take_another_clients_id_on_the_lan(
    installed: Installed, deployed_broker: DeployedBroker, probes: list[Probe], holder_id: str
) -> None:
    """docs/installation.md (MQTT accounts): on the ESPs' listener a client's id is its account name (use_username_as_clientid).

    ESP banc1 asking for the id of banc.py (persistent session), of the kiosk or of bench 2's
    ESP connects as "banc1": the holder of that id stays connected, its session intact.
    """
    creds = credentials(installed.root)
    pi_password = env_file(installed.root)["BANC_MQTT_PASSWORD"]
    if holder_id == "banc2":  # another bench's ESP, on the LAN
        holder = Probe(installed.tls_port, "banc2", creds["banc2"], host=LAN_IP, cafile=installed.ca,
                       client_id=holder_id)
        topic = protocol.topics(2).command
    else:  # banc.py or the kiosk, on the loopback listener with the Pi's account
        holder = Probe(installed.port, PI_ACCOUNT, pi_password, client_id=holder_id,
                       persistent=holder_id.startswith("banc_script_"))
        topic = protocol.topics(1).step
    pi = Probe(installed.port, PI_ACCOUNT, pi_password)
    probes.extend([holder, pi])
    assert holder.connect() and holder.subscribe(topic) and pi.connect()

    log_start = deployed_broker.log_path.stat().st_size
    intruder = Probe(installed.tls_port, "banc1", creds["banc1"], host=LAN_IP, cafile=installed.ca,
                     client_id=holder_id)
    probes.append(intruder)
    assert intruder.connect()  # accepted...

    # ...without kicking the holder off: still connected, its subscription still delivers.
    pi.publish(topic, "after")
    assert not holder.disconnected.wait(0.3), f"{holder_id} was kicked off by ESP banc1"
    assert holder.receive_until(topic) == [(topic, "after")]
    assert not holder.disconnected.is_set()
    # ...because its id is its account's name, whatever it asked for.
    log = deployed_broker.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert re.search(r"New client connected from \S+ as banc1 \(p\d, c\d, k\d+, u'banc1'\)", log), log
    assert f" as {holder_id} (" not in log and "already connected" not in log, log


def test_bridge_example_forwards_every_bench_under_the_site_prefix(
    installed: Installed, tmp_path: Path, probes: list[Probe]
) -> None:
    """deploy/bridge-central.conf.example, pointed at a local 'central' broker, works as documented."""
    central = MosquittoBroker(tmp_path / "central")
    central.start()
    bridge_lines = []
    for line in (DEPLOY / "bridge-central.conf.example").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in ("bridge_cafile", "bridge_insecure", "remote_username", "remote_password"):
            continue  # the test's central broker is plain TCP and anonymous
        if key == "address":
            line = f"address 127.0.0.1:{central.port}"
        bridge_lines.append(line)
    pi_broker = DeployedBroker(installed, tmp_path / "pi", extra_conf="\n".join(bridge_lines))
    try:
        pi_broker.start()
        watcher = Probe(central.port)
        probes.append(watcher)
        assert watcher.connect() and watcher.subscribe("site1/#")
        watcher.receive_until("site1/bridge/state")  # the bridge is up
        bench2 = Probe(installed.tls_port, "banc2", credentials(installed.root)["banc2"], host=LAN_IP,
                       cafile=installed.ca)
        probes.append(bench2)
        assert bench2.connect()
        bench2.publish(protocol.topics(2).bms_data, "3,51.9,-10,48,26,1.2,62.1,3240,3255,0")
        forwarded = "site1/" + protocol.topics(2).bms_data
        assert watcher.receive_until(forwarded)[-1] == (forwarded, "3,51.9,-10,48,26,1.2,62.1,3240,3255,0")
    finally:
        for probe in probes:  # before the brokers go, or they would wait to reconnect
            probe.close()
        pi_broker.stop()
        central.stop()


# ============================================================ systemd units


def test_kiosk_unit_keys(installed: Installed) -> None:
    unit = unit_entries(installed.root / "etc/systemd/system/banc-lfp-kiosk.service")
    service = unit["Service"]
    assert "graphical.target" in one(unit["Unit"], "After").split()
    assert one(unit["Install"], "WantedBy") == "graphical.target"
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert int(one(service, "WatchdogSec")) >= 10
    assert one(service, "Restart") == "on-failure"
    assert int(one(service, "RestartSec")) > 0
    assert one(service, "User") == installed.user
    assert one(service, "WorkingDirectory") == str(REPO_DIR)
    assert one(service, "EnvironmentFile") == "/etc/banc-lfp/banc.env"
    assert one(service, "ExecStart") == f"{REPO_DIR}/.venv/bin/python {REPO_DIR}/ui.py"
    environment = dict(v.split("=", 1) for k, v in service if k == "Environment")
    assert environment["DISPLAY"] == ":0"
    assert environment["XAUTHORITY"].endswith("/.Xauthority")
    # Stopping, restarting or watchdog-aborting the UI signals ui.py only: the banc.py
    # processes it started (same cgroup) keep running their tests.
    assert one(service, "KillMode") == "process"
    assert one(service, "OOMPolicy") == "continue"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(installed: Installed, tmp_path: Path) -> None:
    """systemd's own parser accepts every line of the kiosk unit, the monitor's and the mosquitto drop-in."""
    kiosk = installed.root / "etc/systemd/system/banc-lfp-kiosk.service"
    monitor = installed.root / "etc/systemd/system/banc-lfp-monitor.service"
    if not (REPO_DIR / ".venv/bin/python").exists():
        pytest.skip("no .venv: ExecStart would point at a missing interpreter")
    # The drop-in is verified on Debian's mosquitto.service (or a stand-in), next to it.
    mosquitto_unit = tmp_path / "mosquitto.service"
    stock = Path("/lib/systemd/system/mosquitto.service")
    mosquitto_unit.write_text(
        stock.read_text() if stock.exists()
        else f"[Unit]\nDescription=Mosquitto\n[Service]\nType=notify\nExecStart={mosquitto_binary()} -c /etc/mosquitto/mosquitto.conf\n"
    )
    (tmp_path / "mosquitto.service.d").mkdir()
    shutil.copy(installed.root / "etc/systemd/system/mosquitto.service.d/banc-lfp.conf", tmp_path / "mosquitto.service.d")
    for unit in (kiosk, monitor, mosquitto_unit):
        proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if str(unit.parent) in line]
        assert proc.returncode == 0 and complaints == [], proc.stdout + proc.stderr


def test_systemd_analyze_verify_catches_a_bad_kill_mode(installed: Installed, tmp_path: Path) -> None:
    """The check above can fail: a misspelt KillMode is reported (systemd would ignore it)."""
    if shutil.which("systemd-analyze") is None or not (REPO_DIR / ".venv/bin/python").exists():
        pytest.skip("systemd-analyze or .venv missing")
    text = (installed.root / "etc/systemd/system/banc-lfp-kiosk.service").read_text()
    broken = tmp_path / "banc-lfp-kiosk.service"
    broken.write_text(text.replace("KillMode=process", "KillMode=proces"))
    proc = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "kill mode" in (proc.stdout + proc.stderr).lower()


# ============================================================ log rotation


@pytest.mark.skipif(shutil.which("logrotate") is None and not Path("/usr/sbin/logrotate").exists(),
                    reason="logrotate not installed")
def test_logrotate_rotates_logs_while_the_handler_keeps_writing(installed: Installed, tmp_path: Path) -> None:
    """No copytruncate: utils' WatchedFileHandler reopens logs.log after logrotate moved it."""
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    installed.home.mkdir(exist_ok=True)  # install.sh created it inside the throwaway root
    log_path = installed.home / "logs.log"
    handler = logs._FlushingWatchedFileHandler(log_path, encoding="utf-8")
    logger = logging.getLogger("test_deploy.logrotate")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("before rotation")
        proc = subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(installed.root / "etc/logrotate.d/banc-lfp")],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        logger.warning("after rotation")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (installed.home / "logs.log.1").read_text() == "before rotation\n"
    assert log_path.read_text() == "after rotation\n"
    assert log_path.stat().st_mode & 0o777 == 0o644
    os.remove(installed.home / "logs.log.1")


# ============================================================ children of the kiosk unit


def test_child_environment_drops_systemd_notify_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A banc.py started by the kiosk must not inherit ui.py's notify socket (NotifyAccess=main)."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1234")
    monkeypatch.setenv("BANC_MQTT_USERNAME", PI_ACCOUNT)
    env = environment.child_environment()
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(env)
    assert env["BANC_MQTT_USERNAME"] == PI_ACCOUNT and env["PATH"] == os.environ["PATH"]
