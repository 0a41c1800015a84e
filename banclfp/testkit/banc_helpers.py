"""Run banc.py as a real process against a real broker, and talk MQTT to it like an ESP32.

Reusable by any test or bench script:

    probe = MqttProbe(broker, [protocol.topics(1).command]).start()
    fleet = BancFleet(home, broker)
    runner = fleet.start("banc1", "RW-TEST0001")      # returns once banc1/banc/status says online
    probe.publish_many([(t.step, "1"), (t.bms_data, bms_line(0))])
    wait_until(lambda: len(read_data_rows(runner.folder())) == 1)
    fleet.stop_all()                                   # in a finally / fixture teardown
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt

from banclfp.recording import record
from banclfp.testkit.support import REPO_DIR, MosquittoBroker, project_env
from banclfp.wire import protocol

BANC_SCRIPT = REPO_DIR / "banc.py"
DEFAULT_SERIAL = "RW-TEST0001"


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02, message: str = "") -> Any:
    """Poll `predicate` until it returns a truthy value (returned); AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {message or predicate}")
        time.sleep(interval_s)


def bms_line(seq: int, **values: float) -> str:
    """A valid BMS payload (docs/protocole.md §2) with plausible defaults; override any field by name."""
    fields: dict[str, Any] = dict(  # int and float fields, checked by BmsLine
        seq=seq, voltage_v=52.0, current_a=-10.0, soc_pct=50.0, temperature_c=25.0, capacity_ah=0.0,
        energy_wh=0.0, cell_min_mv=3250, cell_max_mv=3262, balancing=0,
    )
    fields.update(values)
    return protocol.encode_bms_line(protocol.BmsLine(**fields))


# =========================================================================== MQTT probe


@dataclass(frozen=True)
class Received:
    """A message seen by a probe; `retained` is True for a stored (not live) retained message."""

    topic: str
    payload: bytes
    retained: bool
    at: float

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8", errors="replace")


class MqttProbe:
    """A test client: records what arrives on some topics and publishes as an ESP32 would (QoS per contract).

    Clean session, auto-reconnect (subscriptions renewed on every connection).
    """

    def __init__(self, broker: MosquittoBroker, subscriptions: Iterable[str] = (), client_id: Optional[str] = None) -> None:
        self.broker = broker
        self.subscriptions = list(subscriptions)
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:10]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._subscribed = threading.Event()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        else:
            self._subscribed.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self._received.append(Received(message.topic, bytes(message.payload), bool(message.retain), time.monotonic()))

    def start(self, timeout_s: float = 10.0) -> MqttProbe:
        """Connect and wait until the subscriptions are acknowledged."""
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise AssertionError("probe: no SUBACK from the broker")
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self, topic: Optional[str] = None, live_only: bool = False) -> list[Received]:
        """Messages received so far (on `topic`), oldest first."""
        with self._lock:
            return [m for m in self._received if (topic is None or m.topic == topic) and not (live_only and m.retained)]

    def texts(self, topic: str, live_only: bool = False) -> list[str]:
        """Payloads (text) received on `topic`, oldest first."""
        return [m.text for m in self.messages(topic, live_only)]

    def wait_for(self, topic: str, payload: Optional[str] = None, live_only: bool = True, timeout_s: float = 10.0,
                 since: int = 0, alive: Optional[Callable[[], bool]] = None) -> Received:
        """Wait for a message on `topic` (with `payload` if given) among messages number `since` onwards."""

        def found() -> Optional[Received]:
            if alive is not None and not alive():
                raise AssertionError(f"process died while waiting for {topic} {payload!r}")
            for message in self.messages(topic, live_only)[since:]:
                if payload is None or message.text == payload:
                    return message
            return None

        return wait_until(found, timeout_s, message=f"{topic} {payload!r}")

    def publish(self, topic: str, payload: str | bytes, qos: Optional[int] = None, retain: bool = False,
                wait: bool = True) -> mqtt.MQTTMessageInfo:
        """Publish (QoS from the contract unless given); wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=protocol.qos_for(topic) if qos is None else qos, retain=retain)
        if wait:
            info.wait_for_publish(10)
        return info

    def publish_many(self, items: Iterable[tuple[str, str | bytes]], timeout_s: float = 30.0) -> None:
        """Publish (topic, payload) pairs in order, then wait until the broker acknowledged them all."""
        infos = [self.client.publish(t, p, qos=protocol.qos_for(t)) for t, p in items]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError("broker did not acknowledge a publication")


# =========================================================================== banc.py process


class PlayedEsp:
    """The bench's ESP as the test plays it: one boot's clock (uptime_ms from the real monotonic clock) and seq."""

    def __init__(self, probe: MqttProbe, uptime_at_boot_s: float = 100.0, esp_step: Optional[int] = None,
                 banc: str = "banc1") -> None:
        self.probe = probe
        self.topics = protocol.topics(banc)
        self.esp_step = esp_step  # field 12 (the phase it runs), or None for an 11-field firmware
        self.booted_at = time.monotonic() - uptime_at_boot_s
        self.seq = 0
        self.last_uptime_ms: int | None = None

    def reboot(self, uptime_s: float) -> None:
        """The ESP restarts: seq from 0, uptime from `uptime_s` (its boot time)."""
        self.booted_at, self.seq = time.monotonic() - uptime_s, 0

    def line(self, seq: int, uptime_ms: int) -> str:
        """The line it measured: 11 fields, 12 with its phase."""
        text = f"{bms_line(seq)},{uptime_ms}"
        return text if self.esp_step is None else f"{text},{self.esp_step}"

    def measure(self, send: bool = True) -> tuple[int, int]:
        """One line now, or one period after the previous one, as the 1 Hz firmware (sent on bms/data unless lost on the way); its (seq, uptime_ms).

        A line never comes sooner than a period after the previous one: banc.py rejects as
        implausible lines that skip seqs faster than the ESP's period allows (docs/protocole.md §8).
        """
        if self.seq and self.last_uptime_ms is not None:
            time.sleep(max(0.0, self.booted_at + (self.last_uptime_ms + 1000) / 1000 - time.monotonic()))
        uptime_ms = round((time.monotonic() - self.booted_at) * 1000)
        self.last_uptime_ms = uptime_ms
        seq, self.seq = self.seq, self.seq + 1
        if send:
            self.probe.publish(self.topics.bms_data, self.line(seq, uptime_ms))
        return seq, uptime_ms

    def at_1hz(self, count: int, send: bool = True) -> list[tuple[int, int]]:
        """`count` lines one second apart on the ESP's clock (the first one now, or a period after the previous line)."""
        out: list[tuple[int, int]] = []
        if self.seq and self.last_uptime_ms is not None:
            time.sleep(max(0.0, self.booted_at + (self.last_uptime_ms + 1000) / 1000 - time.monotonic()))
        for k in range(count):
            if k:
                time.sleep(max(0.0, self.booted_at + (out[0][1] + 1000 * k) / 1000 - time.monotonic()))
            seq = self.seq
            self.seq += 1
            uptime_ms = out[0][1] + 1000 * k if out else round((time.monotonic() - self.booted_at) * 1000)
            if send:
                self.probe.publish(self.topics.bms_data, self.line(seq, uptime_ms))
            out.append((seq, uptime_ms))
            self.last_uptime_ms = uptime_ms
        return out


class BancRunner:
    """One `python banc.py bancN SERIAL` process with its own log file."""

    def __init__(self, home: Path, broker: Optional[MosquittoBroker], banc: str = "banc1", serial: str = DEFAULT_SERIAL,
                 log_path: Optional[Path] = None, env: Optional[dict[str, str]] = None) -> None:
        self.home = Path(home)
        self.broker = broker
        self.banc = banc
        self.serial = serial
        self.env = dict(env or {})
        self.log_path = log_path or (self.home.parent / f"{banc}-{uuid.uuid4().hex[:6]}.log")
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_online: bool = True, timeout_s: float = 15.0) -> BancRunner:
        """Start the process; with `wait_online`, return once it announced `online` (live) on banc/status."""
        probe = None
        if wait_online:
            if self.broker is None:
                raise ValueError("wait_online needs a broker")
            probe = MqttProbe(self.broker, [protocol.topics(self.banc).banc_status]).start()
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, str(BANC_SCRIPT), self.banc, self.serial],
                    env=project_env(self.home, self.broker, **self.env),
                    cwd=REPO_DIR,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if probe is not None:
                probe.wait_for(protocol.topics(self.banc).banc_status, protocol.STATUS_ONLINE, live_only=True,
                               timeout_s=timeout_s, alive=self.alive)
        finally:
            if probe is not None:
                probe.stop()
        return self

    @property
    def pid(self) -> int:
        """Pid of the banc.py process."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        """Wait for the process to end; return its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"banc.py still running after {timeout_s} s; log:\n{self.log_text()[-3000:]}") from None

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)

    def kill(self) -> None:
        """SIGKILL (as a crash or a power cut of the process would) and reap it."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Cleanup: SIGTERM, then SIGKILL if it does not end in 10 s."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        """What the process printed (logs on stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def folder(self) -> Path:
        """The test folder of this serial on this bench (the latest one)."""
        return latest_test_folder(self.home, self.banc, self.serial)


class BancFleet:
    """Starts banc.py processes and guarantees they are all stopped (use in a fixture or try/finally)."""

    def __init__(self, home: Path, broker: Optional[MosquittoBroker], **env: str) -> None:
        self.home = Path(home)
        self.broker = broker
        self.env = env
        self.runners: list[BancRunner] = []

    def runner(self, banc: str = "banc1", serial: str = DEFAULT_SERIAL, **env: str) -> BancRunner:
        """A runner not started yet (registered for cleanup)."""
        runner = BancRunner(self.home, self.broker, banc, serial, env={**self.env, **env})
        self.runners.append(runner)
        return runner

    def start(self, banc: str = "banc1", serial: str = DEFAULT_SERIAL, wait_online: bool = True, **env: str) -> BancRunner:
        """Start `banc.py banc serial` (and wait until it is online)."""
        return self.runner(banc, serial, **env).start(wait_online=wait_online)

    def stop_all(self) -> None:
        """Stop every process started here."""
        for runner in self.runners:
            runner.stop()


# =========================================================================== files


def battery_folders(home: Path, banc: str, serial: str) -> list[Path]:
    """Test folders data/bancN/DDMMYYYY-SERIAL[-K] of a battery, oldest first (by creation order)."""
    folder = Path(home) / "data" / protocol.banc_id(banc)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and serial in p.name]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def latest_test_folder(home: Path, banc: str, serial: str) -> Path:
    """The most recent test folder of a battery (AssertionError when none)."""
    folders = battery_folders(home, banc, serial)
    if not folders:
        raise AssertionError(f"no test folder for {serial} on {banc}")
    return folders[-1]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header (empty list when the file is missing)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


def read_data_rows(folder: Path) -> list[dict[str, str]]:
    """Rows of data.csv in a test folder."""
    return read_csv(Path(folder) / record.DATA_CSV_FILE)


def read_rejected_rows(folder: Path) -> list[dict[str, str]]:
    """Rows of rejected.csv in a test folder."""
    return read_csv(Path(folder) / record.REJECTED_CSV_FILE)


def data_seqs(folder: Path) -> list[int]:
    """The seq column of data.csv, in file order."""
    return [int(row["seq"]) for row in read_data_rows(folder)]


def files_under(root: Path) -> list[Path]:
    """Every file and folder below `root` (for 'nothing created on disk' checks)."""
    return sorted(Path(root).rglob("*"))


__all__ = [
    "BANC_SCRIPT",
    "DEFAULT_SERIAL",
    "BancFleet",
    "BancRunner",
    "MqttProbe",
    "Received",
    "battery_folders",
    "bms_line",
    "data_seqs",
    "files_under",
    "latest_test_folder",
    "read_csv",
    "read_data_rows",
    "read_rejected_rows",
    "wait_until",
]
