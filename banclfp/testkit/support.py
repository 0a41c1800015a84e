"""Real parts for tests and benchmarks: a private Mosquitto broker and an Xvfb display.

Used by tests/conftest.py and by the scripts in bench/. Nothing here is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO_DIR = Path(__file__).resolve().parent.parent.parent


def terminate(proc: Optional[subprocess.Popen], timeout_s: float = 5.0) -> None:
    """SIGTERM a child and reap it; SIGKILL if it has not gone after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    """Path of the mosquitto broker (often in /usr/sbin, outside a user's PATH)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    return found


class MosquittoBroker:
    """A private Mosquitto on 127.0.0.1:<free port>, with persistence, that can be killed and restarted."""

    def __init__(self, workdir: Optional[Path] = None, port: Optional[int] = None, extra_conf: str = "",
                 max_packet_size: Optional[int] = 4096) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mosq-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.extra_conf = extra_conf
        # As deploy/mosquitto.conf; None gives a broker without the limit (to show that the
        # clients' own announced maximum protects them).
        self.max_packet_size = max_packet_size
        self.proc: Optional[subprocess.Popen] = None

    def write_conf(self) -> None:
        self.conf_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "autosave_interval 1",
                    # A bench process that is down for hours must find its backlog intact.
                    "max_queued_messages 1000000",
                    "max_inflight_messages 100",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    # Started as root, mosquitto drops to the "mosquitto" user and can then no
                    # longer write its persistence file in our private folder: stay root.
                    "user root" if os.geteuid() == 0 else "",
                    f"max_packet_size {self.max_packet_size}" if self.max_packet_size else "",
                    self.extra_conf,
                    "",
                ]
            )
        )

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start (or restart) the broker on the same port and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.write_conf()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                wait_for_port(self.host, self.port, 0.2)
                return self
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise

    def wait_for_save(self, timeout_s: float = 5.0) -> bool:
        """Wait until the broker next rewrites its persistence file (every autosave_interval); False on timeout."""
        db = self.workdir / "mosquitto.db"

        def mtime_ns() -> int:
            try:
                return db.stat().st_mtime_ns
            except FileNotFoundError:
                return 0

        before = mtime_ns()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if mtime_ns() != before:
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        """Stop cleanly (SIGTERM: the broker saves its persistence file)."""
        terminate(self.proc)

    def kill(self) -> None:
        """Kill -9, as a power cut or a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def env(self) -> dict[str, str]:
        """Environment variables pointing a process at this broker."""
        return {"BANC_MQTT_HOST": self.host, "BANC_MQTT_PORT": str(self.port)}

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Xvfb:
    """A private X server (Xvfb) on a free display number."""

    def __init__(self, width: int = 1280, height: int = 800) -> None:
        self.width, self.height = width, height
        self.proc: Optional[subprocess.Popen] = None
        self.display: Optional[str] = None

    def start(self) -> Xvfb:
        binary = shutil.which("Xvfb")
        if not binary:
            raise RuntimeError("Xvfb is not installed (apt-get install xvfb)")
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [binary, "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not report a display")
        self.display = f":{number}"
        return self

    def stop(self) -> None:
        """Stop the X server."""
        terminate(self.proc)

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def project_env(home: Path, broker: Optional[MosquittoBroker] = None, **extra: str) -> dict[str, str]:
    """Environment for a child process of the project (banc.py, ui.py, simulator.py)."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("BANC_"):
            del env[key]
    env["BANC_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    if broker is not None:
        env.update(broker.env())
    env.update(extra)
    return env
