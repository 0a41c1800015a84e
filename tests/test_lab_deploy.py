"""install.sh --lab-db URI in a throwaway root: the lab_sync unit, banc.env's lines, the password file (docs/labo-serveur.md)."""

from __future__ import annotations

import getpass
import re
import stat
import subprocess
from pathlib import Path

import pytest

from banclfp.testkit.support import REPO_DIR, free_port
from tests.test_deploy import DEBIAN_MAIN_CONF, INSTALL, LAN_IP, run_script

URI = "postgresql://banc_pi1@labo.local/banc_lab?sslmode=verify-full&sslrootcert=/etc/banc-lfp-lab/lab-ca.crt"


def _install(tmp_path: Path, *extra: str, stdin: str = "", check: bool = True) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root, home = tmp_path / "root", tmp_path / "home"
    (root / "etc/mosquitto/conf.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/mosquitto/mosquitto.conf").write_text(DEBIAN_MAIN_CONF)
    args = ("--root", str(root), "--user", getpass.getuser(), "--project", str(REPO_DIR), "--home", str(home),
            "--bancs", "2", "--lan-ip", LAN_IP, "--port", str(free_port()), "--tls-port", str(free_port()), *extra)
    return root, run_script(INSTALL, *args, stdin=stdin, check=check)


def test_lab_db_installs_the_unit_the_settings_and_the_password_file(tmp_path: Path) -> None:
    root, done = _install(tmp_path, "--lab-db", URI, "--site", "pi-1", stdin="s3cret:with\\colon\n")
    assert "s3cret" not in done.stdout + done.stderr
    env = (root / "etc/banc-lfp/banc.env").read_text()
    assert f"BANC_LAB_DB={URI}\n" in env and "BANC_SITE=pi-1\n" in env
    assert "PGPASSFILE=/etc/banc-lfp-lab/lab.pgpass\n" in env
    pgpass = root / "etc/banc-lfp-lab/lab.pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    assert pgpass.read_text() == "*:*:*:banc_pi1:s3cret\\:with\\\\colon\n"  # libpq's escapes
    unit = (root / "etc/systemd/system/banc-lfp-lab-sync.service").read_text()
    assert f"ExecStart={REPO_DIR}/.venv/bin/python {REPO_DIR}/lab_sync.py" in unit
    assert "EnvironmentFile=/etc/banc-lfp/banc.env" in unit and not re.search(r"@[A-Z_]+@", unit)
    # Again: the password file is kept, nothing is asked.
    _install(tmp_path, "--lab-db", URI, "--site", "pi-1")
    assert pgpass.read_text().startswith("*:*:*:banc_pi1:s3cret")


@pytest.mark.parametrize("uri,message", [
    ("postgresql://banc_pi1:secret@labo/banc_lab", "mot de passe"),
    ("postgresql://banc_pi1@labo/banc_lab?password=secret", "mot de passe"),
    ("mysql://banc_pi1@labo/banc_lab", "postgresql://"),
])
def test_lab_db_with_a_password_or_another_engine_is_refused(tmp_path: Path, uri: str, message: str) -> None:
    _, done = _install(tmp_path, "--lab-db", uri, check=False)
    assert done.returncode != 0 and message in done.stderr and "secret" not in done.stdout


def test_without_lab_db_nothing_of_the_lab_is_installed(tmp_path: Path) -> None:
    root, _ = _install(tmp_path)
    assert not (root / "etc/systemd/system/banc-lfp-lab-sync.service").exists()
    assert "BANC_LAB_DB" not in (root / "etc/banc-lfp/banc.env").read_text()
