"""Real parts for tests and benchmarks: a private Mosquitto broker, an Xvfb display and a private CUPS.

Used by tests/conftest.py and by the scripts in bench/. Nothing here is mocked.
"""

from __future__ import annotations

import glob
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


CUPS_PDF_PPD_GLOB = "/usr/share/ppd/cups-pdf/CUPS-PDF_*.ppd"
CUPS_PDF_CONF_DIR = Path("/etc/cups")  # cups-pdf reads cups-pdf-NAME.conf from here only (compiled in)


def cupsd_binary() -> str:
    """Path of the CUPS scheduler (in /usr/sbin, outside a user's PATH)."""
    found = shutil.which("cupsd") or next((p for p in ("/usr/sbin/cupsd",) if os.path.exists(p)), None)
    if not found:
        raise RuntimeError("cupsd is not installed (apt-get install cups printer-driver-cups-pdf)")
    return found


class CupsServer:
    """A private cupsd on its own socket, with its own config, spool, state and logs, and cups-pdf queues.

    Never the machine's CUPS: `server` (a socket path) goes to every CUPS tool with `-h` or as
    CUPS_SERVER. A cups-pdf queue NAME writes its PDFs where /etc/cups/cups-pdf-NAME.conf says
    (cups-pdf reads that folder only): each queue gets a unique name and its file is removed by close().
    """

    _count = 0

    def __init__(self) -> None:
        # Short: a Unix socket path holds at most 107 bytes, and pytest's tmp_path can be longer.
        self.workdir = Path(tempfile.mkdtemp(prefix="cups-"))
        self.workdir.chmod(0o755)  # the filters run as user lp and read the spool under it
        self.server = str(self.workdir / "cups.sock")
        self.log_dir = self.workdir / "log"
        self.proc: Optional[subprocess.Popen] = None
        self.queue_confs: list[Path] = []

    def write_conf(self) -> None:
        for sub in ("spool/tmp", "cache", "state", "log", "ppd"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        root = self.workdir
        (root / "cups-files.conf").write_text("\n".join([
            f"ServerRoot {root}", f"RequestRoot {root}/spool", f"TempDir {root}/spool/tmp", f"CacheDir {root}/cache",
            f"StateDir {root}/state", f"AccessLog {root}/log/access_log", f"ErrorLog {root}/log/error_log",
            f"PageLog {root}/log/page_log", f"Printcap {root}/printcap", "FileDevice No", ""]))
        (root / "cupsd.conf").write_text("\n".join([
            f"Listen {self.server}", "LogLevel info", "Browsing Off", "WebInterface No", "DefaultAuthType None",
            "<Location />", "  Order allow,deny", "  Allow all", "</Location>",
            "<Location /admin>", "  Order allow,deny", "  Allow all", "</Location>",
            "<Policy default>", "  <Limit All>", "    Order deny,allow", "  </Limit>", "</Policy>", ""]))

    def start(self, timeout_s: float = 15.0) -> CupsServer:
        """Start (or restart, with the same queues) the scheduler and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.write_conf()
        with open(self.log_dir / "stderr", "ab") as log:
            self.proc = subprocess.Popen(
                [cupsd_binary(), "-f", "-c", str(self.workdir / "cupsd.conf"), "-s", str(self.workdir / "cups-files.conf")],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            said = subprocess.run(["lpstat", "-h", self.server, "-r"], capture_output=True, text=True,
                                  env=dict(os.environ, LC_ALL="C")).stdout
            if "scheduler is running" in said:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"cupsd exited: {self.error_log()}")
            time.sleep(0.05)
        raise TimeoutError(f"cupsd did not answer on {self.server} after {timeout_s} s")

    def error_log(self) -> str:
        """The end of the scheduler's error log (for a failing test's message)."""
        try:
            return (self.log_dir / "error_log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a CUPS tool (lpadmin, cupsreject, cupsdisable...) on this server; raises when it fails."""
        tool, *rest = args
        return subprocess.run([tool, "-h", self.server, *rest], capture_output=True, text=True, check=True,
                              env=dict(os.environ, LC_ALL="C"), timeout=30)

    def add_pdf_queue(self, out_dir: Path) -> str:
        """A new cups-pdf queue writing its PDFs into `out_dir`; its unique name."""
        CupsServer._count += 1
        name = f"banctest{os.getpid()}x{CupsServer._count}x{self.workdir.name[5:]}".replace("_", "")
        out_dir.mkdir(parents=True, exist_ok=True)
        conf = CUPS_PDF_CONF_DIR / f"cups-pdf-{name}.conf"
        conf.write_text("\n".join([f"Out {out_dir}", f"AnonDirName {out_dir}", f"Spool {self.workdir}/cups-pdf-spool",
                                   f"Log {self.log_dir}", "Grp lp", "Label 0", "LogType 3", ""]))
        self.queue_confs.append(conf)
        ppd = sorted(glob.glob(CUPS_PDF_PPD_GLOB))
        if not ppd:
            raise RuntimeError("cups-pdf's PPD is missing (apt-get install printer-driver-cups-pdf)")
        self.admin("lpadmin", "-p", name, "-E", "-v", f"cups-pdf:/{name}", "-P", ppd[0])
        return name

    def stop(self) -> None:
        """Stop the scheduler (its queues stay configured for a restart)."""
        terminate(self.proc)

    def close(self) -> None:
        """Stop, remove the queues' cups-pdf files from /etc/cups and the private folder."""
        self.stop()
        for conf in self.queue_confs:
            conf.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Environment variables pointing the CUPS tools at this scheduler."""
        return {"CUPS_SERVER": self.server}

    def __enter__(self) -> CupsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
