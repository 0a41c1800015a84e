"""The web monitor run as in real life (`python monitor.py`) and Debian's chromium for Playwright (tests and benchmarks)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from banclfp.testkit.support import MosquittoBroker, free_port, project_env, terminate, wait_for_port

REPO_DIR = Path(__file__).resolve().parent.parent.parent
MONITOR_SCRIPT = REPO_DIR / "monitor.py"
CHROMIUM = "/usr/bin/chromium"  # Debian's package: Playwright cannot download its own browsers here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
USER, PASSWORD = "auditeur", "mot de passe du labo"


def lan_address() -> Optional[str]:
    """This machine's first IPv4 address on a network (not the loopback), None when it has none."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


def connect_address(host: str) -> str:
    """Where a client reaches a server listening on `host` (every address: through the loopback)."""
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return host
    return "127.0.0.1" if unspecified else host


class MonitorProcess:
    """One `python monitor.py` on a free port of `host`, with one account, its output in a log file.

    Extra settings go in `env` (BANC_WEB_CERT and BANC_WEB_KEY serve it over HTTPS).
    """

    def __init__(self, home: Path, broker: Optional[MosquittoBroker], host: str = "127.0.0.1", **env: str) -> None:
        self.home, self.broker = Path(home), broker
        self.address = connect_address(host)
        self.port = free_port()
        self.env = project_env(self.home, broker, BANC_WEB_HOST=host, BANC_WEB_PORT=str(self.port), **env)
        self.log_path = self.home.parent / f"monitor-{self.port}.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """The monitor's base address (https:// when it has a certificate)."""
        scheme = "https" if self.env.get("BANC_WEB_CERT") else "http"
        return f"{scheme}://{self.address}:{self.port}"

    def add_user(self, user: str = USER, password: str = PASSWORD) -> None:
        """`monitor.py --add-user USER`, the password on standard input."""
        subprocess.run([sys.executable, str(MONITOR_SCRIPT), "--add-user", user], input=password.encode() + b"\n",
                       env=self.env, cwd=REPO_DIR, check=True, capture_output=True, timeout=60)

    def start(self, timeout_s: float = 20.0) -> MonitorProcess:
        """Start it and wait until it accepts connections."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(MONITOR_SCRIPT)], env=self.env, cwd=REPO_DIR,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.address, self.port, timeout_s)
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        terminate(self.proc)
        self.proc = None

    def log_text(self) -> str:
        """What it printed."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MonitorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through Playwright (executable_path: no browser download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
