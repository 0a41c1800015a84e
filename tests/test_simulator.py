"""simulator.py as a process against a real Mosquitto: the ESP32 side of the protocol and fault injection."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import pytest

from banclfp.infra import environment
from banclfp.simulation import battery_model, simulator
from banclfp.testkit.support import REPO_DIR, MosquittoBroker
from banclfp.wire import protocol

T = protocol.topics(1)


class Observer:
    """A real MQTT client recording everything on banc1/# (what ui.py would see)."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "test_observer", persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.retained: list[tuple[str, bytes]] = []  # the ones the broker delivered with the retain flag
        self.lock = threading.Lock()
        self.client = protocol.make_client(client_id, environment.load_settings(broker.env()), persistent=persistent)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=0.5)
        self.connected = threading.Event()

        def on_connect(client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason_code: mqtt.ReasonCode,
                       properties: Optional[mqtt.Properties]) -> None:
            client.subscribe("banc1/#", qos=1)
            self.connected.set()

        def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((message.topic, bytes(message.payload)))
                if message.retain:
                    self.retained.append((message.topic, bytes(message.payload)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(5)

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def on(self, topic: str, since: int = 0) -> list[bytes]:
        """Payloads received on `topic` from message index `since`."""
        return [p for t, p in self.snapshot()[since:] if t == topic]

    def wait_for(self, predicate: Callable[[list[tuple[str, bytes]]], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return
            time.sleep(0.02)
        tail = [(t, p[:60]) for t, p in self.snapshot()[-15:] if t != T.bms_data]
        raise AssertionError(f"timed out; last non-BMS messages: {tail}")

    def wait_payload(self, topic: str, payload: bytes, since: int = 0, timeout_s: float = 10.0) -> int:
        """Wait for `payload` on `topic`; return the index of that message."""
        found: list[int] = []

        def check(messages: list[tuple[str, bytes]]) -> bool:
            for i in range(since, len(messages)):
                if messages[i] == (topic, payload):
                    found.append(i)
                    return True
            return False

        self.wait_for(check, timeout_s)
        return found[0]

    def bms_lines(self, since: int = 0) -> list[protocol.BmsLine]:
        lines = []
        for payload in self.on(T.bms_data, since):
            with contextlib.suppress(protocol.PayloadError):
                lines.append(protocol.parse_bms_line(payload))
        return lines

    def on_lines_before(self, index: int) -> list[protocol.BmsLine]:
        """The BMS lines received before the message number `index` (a snapshot position)."""
        lines = []
        for topic, payload in self.snapshot()[:index]:
            if topic == T.bms_data:
                with contextlib.suppress(protocol.PayloadError):
                    lines.append(protocol.parse_bms_line(payload))
        return lines

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def run_simulator(env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[subprocess.Popen]:
    """simulator.py as a child process, always stopped at the end."""
    log = open(tmp_path / f"simulator-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(REPO_DIR / "simulator.py"), "--bancs", "1", *args],
        cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


@pytest.fixture
def observer(mqtt_env: dict[str, str], broker: MosquittoBroker) -> Iterator[Observer]:
    obs = Observer(broker)
    yield obs
    obs.close()


def seqs(lines: list[protocol.BmsLine]) -> list[int]:
    return [line.seq for line in lines]


def consecutive(values: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(values, values[1:]))


def rest_lines_only(payloads: list[bytes]) -> bool:
    """Lines of a stopped ESP (protocol v3): field 12 is 9, no current, at most one per REST_LINE_PERIOD_S of its clock."""
    lines = [protocol.parse_bms_line(p) for p in payloads]
    uptimes = [line.uptime_ms or 0 for line in lines]
    return all(line.esp_step == protocol.STEP_STOP and line.current_a == 0 for line in lines) and all(
        b - a >= battery_model.REST_LINE_PERIOD_S * 1000 - 1 for a, b in zip(uptimes, uptimes[1:]))


def start_test(obs: Observer, command: str = "1", since: int = 0) -> int:
    """Wait until the ESP is online, send a command, wait for its step; return the step's message index."""
    obs.wait_payload(T.esp_status, b"online")
    since = len(obs.snapshot())
    obs.publish(T.command, command)
    return obs.wait_payload(T.step, command.encode(), since)


# --------------------------------------------------------------------------- protocol


def test_esp_side_of_the_protocol(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--capacity-ah", "20", "--seed", "3") as proc:
        observer.wait_payload(T.esp_status, b"online")
        # Nurse SOCs are published at connection, QoS 0 integers.
        observer.wait_for(lambda m: all(observer.on(t) for t in T.nurses))
        assert all(0 <= protocol.parse_nurse_soc(observer.on(t)[0]) <= 100 for t in T.nurses)
        # Idle until a command: no BMS line, no step.
        time.sleep(0.3)
        assert observer.on(T.bms_data) == [] and observer.on(T.step) == []

        step1 = start_test(observer, "1")
        observer.wait_for(lambda m: len(observer.on(T.ri_results, step1)) >= 2)  # pulses at 120 s and 270 s
        # One snapshot, parsed strictly: two snapshots (lines, then raw) raced with the lines still arriving.
        raw = observer.on(T.bms_data, step1)
        lines = [protocol.parse_bms_line(payload) for payload in raw]  # every line parses (PayloadError otherwise)
        assert len(lines) == len(raw) > 100
        assert seqs(lines)[0] == 0 and consecutive(seqs(lines))
        assert any(line.current_a < -5 for line in lines) and any(line.current_a > 5 for line in lines)
        assert all(40.0 <= line.voltage_v <= 58.4 and line.capacity_ah == 0 for line in lines)
        results = [protocol.parse_ri_results(p) for p in observer.on(T.ri_results, step1)]
        assert "ri_discharge" in results[0] and "ri_charge" in results[1]
        assert results[0]["ri_discharge"] == pytest.approx(2.0 / 20, rel=0.05)  # default Ri = 2.0 ohm.Ah / capacity
        assert "temperature_c" in results[0]

        # end: current off, 9 on step, then only a line every 10 s that says "stopped" (field 12 = 9).
        since = len(observer.snapshot())
        observer.publish(T.command, "end")
        stop = observer.wait_payload(T.step, b"9", since)
        time.sleep(0.5)
        assert rest_lines_only(observer.on(T.bms_data, stop + 1))

        # A new command resumes: seq goes on (no reboot), the phase restarts. The last line before it
        # is read once the command is sent: a rest line may still come (every 10 s, 0.1 s at --speed 100).
        again = start_test(observer, "2")
        observer.wait_for(lambda m: len(observer.bms_lines(again)) >= 5)
        last_seq = observer.on_lines_before(again)[-1].seq
        resumed = observer.bms_lines(again)
        assert resumed[0].seq == last_seq + 1 and consecutive(seqs(resumed))
        assert resumed[-1].current_a > 5  # charging

        # A clean stop says offline.
        since = len(observer.snapshot())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        observer.wait_payload(T.esp_status, b"offline", since)


def test_last_will_when_killed(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "10") as proc:
        observer.wait_payload(T.esp_status, b"online")
        since = len(observer.snapshot())
        proc.kill()
        proc.wait(5)
        observer.wait_payload(T.esp_status, b"offline", since)  # the broker sends the last will


def test_broker_loss_leads_to_safe_state_and_resume_on_command(
    mqtt_env: dict[str, str], broker: MosquittoBroker, tmp_path: Path
) -> None:
    # A persistent observer: what the ESP publishes right after the broker restarts is kept for it.
    obs = Observer(broker, "test_observer_persistent", persistent=True)
    try:
        with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--capacity-ah", "20"):
            step = start_test(obs, "2")
            obs.wait_for(lambda m: len(obs.bms_lines(step)) >= 20)
            broker.stop()  # the broker goes away for > 30 simulated seconds
            time.sleep(1.0)
            broker.start()
            obs.wait_for(lambda m: any(p == b"9" for p in obs.on(T.step, step + 1)), timeout_s=15)
            alerts = [protocol.parse_security(p) for p in obs.on(T.security, step)]
            assert any("MQTT" in a and "courant coupé" in a for a in alerts)
            stop = obs.wait_payload(T.step, b"9", step + 1)
            time.sleep(0.5)
            assert rest_lines_only(obs.on(T.bms_data, stop + 1))  # safe state: nothing runs until a command
            again = start_test(obs, "2")
            obs.wait_for(lambda m: len(obs.bms_lines(again)) >= 3)
            assert obs.bms_lines(again)[-1].current_a > 5
    finally:
        obs.close()


# --------------------------------------------------------------------------- fault injection


def test_fault_garbage(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    args = ("--speed", "100", "--fault", "garbage", "--fault-at", "10", "--fault-duration", "100")
    with run_simulator(mqtt_env, tmp_path, *args):
        step = start_test(observer, "1")
        observer.wait_for(lambda m: len(observer.bms_lines(step)) >= 150)
    raw = observer.on(T.bms_data, step)
    bad = []
    for payload in raw:
        with contextlib.suppress(protocol.PayloadError):
            protocol.parse_bms_line(payload)
            continue
        bad.append(payload)
    assert len(bad) >= 20
    assert set(bad) <= set(simulator.GARBAGE_BMS_PAYLOADS)
    assert consecutive(seqs(observer.bms_lines(step)))  # valid lines are untouched
    bad_ri = [p for p in observer.on(T.ri_results, step) if p in simulator.GARBAGE_RI_PAYLOADS]
    assert bad_ri
    for payload in bad_ri:
        with pytest.raises(protocol.PayloadError):
            protocol.parse_ri_results(payload)


def test_every_garbage_payload_is_rejected_by_the_contract() -> None:
    for payload in simulator.GARBAGE_BMS_PAYLOADS:
        with pytest.raises(protocol.PayloadError):
            protocol.parse_bms_line(payload)
    for payload in simulator.GARBAGE_RI_PAYLOADS:
        with pytest.raises(protocol.PayloadError):
            protocol.parse_ri_results(payload)


def test_fault_reboot_restarts_seq(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--fault", "reboot", "--fault-at", "50"):
        step = start_test(observer, "2")
        offline = observer.wait_payload(T.esp_status, b"offline", step)  # the last will: no clean disconnect
        before = observer.bms_lines(step)
        assert seqs(before)[0] == 0 and seqs(before)[-1] >= 40
        observer.wait_payload(T.esp_status, b"online", offline)
        observer.wait_payload(T.step, b"9", offline)
        alerts = [protocol.parse_security(p) for p in observer.on(T.security, offline)]
        assert any("redémarré" in a for a in alerts)
        observer.wait_for(lambda m: len(observer.bms_lines(offline)) >= 1)
        assert observer.bms_lines(offline)[0].seq == 0  # the new boot's first line (a stopped one, every 10 s)
        again = start_test(observer, "2")
        observer.wait_for(lambda m: len(observer.bms_lines(again)) >= 3)
        assert consecutive(seqs(observer.bms_lines(offline)))


def test_fault_disconnect_then_safe_state(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    args = ("--speed", "100", "--fault", "disconnect", "--fault-at", "20", "--fault-duration", "100")
    with run_simulator(mqtt_env, tmp_path, *args):
        step = start_test(observer, "2")
        offline = observer.wait_payload(T.esp_status, b"offline", step)
        observer.wait_payload(T.esp_status, b"online", offline)
        observer.wait_payload(T.step, b"9", offline)
        alerts = [protocol.parse_security(p) for p in observer.on(T.security, offline)]
        assert any("MQTT" in a for a in alerts)
        lines = [line for line in observer.bms_lines(step) if line.esp_step != protocol.STEP_STOP]  # not the rest lines
        assert 15 <= len(lines) <= 25 and consecutive(seqs(lines))


def test_fault_bms_silence(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    args = ("--speed", "100", "--fault", "bms-silence", "--fault-at", "20", "--fault-duration", "60")
    with run_simulator(mqtt_env, tmp_path, *args):
        step = start_test(observer, "2")
        observer.wait_for(lambda m: len(observer.bms_lines(step)) >= 60)
        lines = observer.bms_lines(step)
        assert observer.on(T.esp_status, step) == []  # the ESP stayed connected
        assert observer.on(T.step, step + 1) == []  # and the test went on
    numbers = seqs(lines)
    gaps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]
    assert len(gaps) == 1 and 55 <= gaps[0][1] - gaps[0][0] <= 65  # ~60 s silent, the seq shows it


def test_fault_over_temperature(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "200", "--fault", "over-temperature", "--fault-at", "10"):
        step = start_test(observer, "2")
        stop = observer.wait_payload(T.step, b"9", step, timeout_s=15)
        alerts = [protocol.parse_security(p) for p in observer.on(T.security, step)]
        assert any("Surchauffe" in a for a in alerts)
        lines = observer.bms_lines(step)
        assert lines[-1].temperature_c >= 54.5 and lines[0].temperature_c < 30
        time.sleep(0.3)
        assert rest_lines_only(observer.on(T.bms_data, stop + 1))


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args",
    [["--bancs", "9"], ["--bancs", "x"], ["--dt", "0.3"], ["--speed", "0"], ["--fault", "meteor"],
     ["--storage-soc-pct", "120"], ["--firmware", "v4"], ["--fault-count", "0"],
     ["--fault", "uptime-garbled", "--firmware", "v1"]],
)
def test_bad_options_exit_2(banc_home: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        simulator.main(args)
    assert exc.value.code == 2
    assert "simulator.py" in capsys.readouterr().err


def test_options_build_the_configured_benches(banc_home: Path) -> None:
    parser = simulator.build_parser(environment.load_settings())
    args = parser.parse_args(["--capacity-ah", "50", "--ri-ohm", "0.03", "--ambient-c", "18", "--weak-cell", "2"])
    assert args.weak_cell == "2"
    fw = simulator.make_firmware(2, args, weak=True)
    assert fw.pack.params.capacity_ah == 50 and fw.pack.ohmic_resistance_ohm > 0.03  # weak cell adds resistance
    assert fw.pack.temperature_c == 18
    healthy = simulator.make_firmware(1, args, weak=False)
    assert healthy.pack.params.ri_ohm == 0.03 and healthy.pack.params.seed != fw.pack.params.seed
    assert fw.contract == 3  # the latest contract unless told
    older = parser.parse_args(["--firmware", "v2"])
    assert simulator.make_firmware(1, older, weak=False).contract == 2


def test_help_describes_every_fault(banc_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        simulator.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for fault in simulator.FAULTS:
        assert f"\n  {fault} " in text
    assert "--firmware" in text and "--fault-count" in text


# --------------------------------------------------------------------------- field 12, older firmware


@pytest.mark.parametrize(("firmware", "fields"), [("v3", 12), ("v2", 11), ("v1", 10)])
def test_lines_on_the_wire_follow_the_emulated_firmware(
    mqtt_env: dict[str, str], observer: Observer, tmp_path: Path, firmware: str, fields: int
) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--capacity-ah", "20", "--firmware", firmware):
        observer.wait_payload(T.esp_status, b"online")
        observer.publish(T.command, "3")
        step = observer.wait_payload(T.step, b"2")  # no capacity run yet: the ESP charges first and says 2
        observer.wait_for(lambda m: len(observer.on(T.bms_data, step)) >= 5)
        raw = observer.on(T.bms_data, step)
        assert {len(payload.split(b",")) for payload in raw} == {fields}
        lines = [protocol.parse_bms_line(payload) for payload in raw]
        if fields == 12:
            assert {line.esp_step for line in lines} == {2}  # the phase it runs, not the command
        # A replay sends the lines unchanged (field 12 included); a v1 firmware has none to send.
        since = len(observer.snapshot())
        observer.publish(T.command, "replay 0 2")
        if firmware == "v1":
            time.sleep(0.3)
            assert observer.on(T.bms_replay, since) == []
        else:
            observer.wait_for(lambda m: len(observer.on(T.bms_replay, since)) == 3)
            assert observer.on(T.bms_replay, since) == raw[:3]


# --------------------------------------------------------------------------- single faults


@pytest.mark.parametrize("fault", ["seq-bitflip", "uptime-garbled"])
def test_fault_one_garbled_line_then_normal_ones(
    mqtt_env: dict[str, str], observer: Observer, tmp_path: Path, fault: str
) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--fault", fault, "--fault-at", "5"):
        step = start_test(observer, "2")
        observer.wait_for(lambda m: len(observer.bms_lines(step)) >= 15)
        lines = observer.bms_lines(step)
        clocks = [line.uptime_ms or 0 for line in lines]
        assert all(clocks)  # every line has its clock (12 fields)
        if fault == "seq-bitflip":
            odd = [line for line in lines if line.seq >= 2**20]
            assert len(odd) == 1
            real = odd[0].seq ^ 2**20
            assert seqs([line for line in lines if line.seq < 2**20]) == [n for n in range(len(lines)) if n != real]
            assert clocks == sorted(clocks)
        else:
            odd = [line for line in lines if (line.uptime_ms or 0) >= 2**40]
            assert len(odd) == 1
            real = odd[0].seq
            assert consecutive(seqs(lines))
            normal = [clock for clock in clocks if clock < 2**40]
            assert len(normal) == len(lines) - 1 and normal == sorted(normal)
        # The ring kept the line as measured: a replay of its seq gives it right.
        since = len(observer.snapshot())
        observer.publish(T.command, f"replay {real} {real}")
        observer.wait_for(lambda m: len(observer.on(T.bms_replay, since)) == 1)
        held = protocol.parse_bms_line(observer.on(T.bms_replay, since)[0])
        assert (held.seq, held.uptime_ms, held.esp_step) == (real, (odd[0].uptime_ms or 0) % 2**40, 2)


def test_fault_ri_absurd(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--fault", "ri-absurd", "--fault-at", "5"):
        step = start_test(observer, "2")  # phase 2: no pulse, only the fault's results
        observer.wait_for(lambda m: len(observer.on(T.ri_results, step)) >= 3)
        observer.wait_for(lambda m: len(observer.bms_lines(step)) >= 20)
        results = observer.on(T.ri_results, step)
    assert len(results) == 3
    assert protocol.parse_ri_results(results[0])["ri_discharge"] == 1e-9
    assert protocol.parse_ri_results(results[1])["ri_charge"] == 10.0
    assert results[2] == b'{"ri_discharge": 1' + b"0" * 400 + b"}"


def test_fault_reboot_loop(mqtt_env: dict[str, str], observer: Observer, tmp_path: Path) -> None:
    args = ("--speed", "100", "--fault", "reboot-loop", "--fault-at", "10", "--fault-count", "3")
    with run_simulator(mqtt_env, tmp_path, *args):
        step = start_test(observer, "2")
        first_down = observer.wait_payload(T.esp_status, b"offline", step)
        observer.wait_for(lambda m: len(observer.bms_lines(first_down)) >= 3, timeout_s=20)
        time.sleep(0.5)  # the last boot stays up and quiet
        boots = observer.bms_lines(first_down)
        statuses = observer.on(T.esp_status, step)
        stops = observer.on(T.step, first_down)
        alerts = [protocol.parse_security(p) for p in observer.on(T.security, first_down)]
    boots = [line for line in boots if line.seq == 0]  # each boot's first line (a stopped ESP then sends one every 10 s)
    before = [line for line in observer.bms_lines(step)[:-3] if line.esp_step != protocol.STEP_STOP]
    assert consecutive(seqs(before)) and len(before) >= 8
    # Three reboots in a row, each boot back online with its alert and 9, then exactly one line.
    assert statuses == [b"offline", b"online"] * 3
    assert stops == [b"9"] * 3 and sum("redémarré" in a for a in alerts) == 3
    assert len(boots) == 3
    assert all(line.seq == 0 and line.esp_step == 9 and line.current_a == 0 for line in boots)
    assert all(line.uptime_ms is not None and line.uptime_ms < 600_000 for line in boots)


def test_fault_retained_step(mqtt_env: dict[str, str], broker: MosquittoBroker, observer: Observer, tmp_path: Path) -> None:
    with run_simulator(mqtt_env, tmp_path, "--speed", "100", "--fault", "retained-step"):
        observer.wait_payload(T.esp_status, b"online")
        observer.wait_payload(T.step, b"5")  # published once, before any test
        late = Observer(broker, "test_observer_late")  # a banc.py starting now gets it, flagged retained
        try:
            late.wait_payload(T.step, b"5")
            assert (T.step, b"5") in late.retained
        finally:
            late.close()
        step = start_test(observer, "2")  # the test itself is untouched
        observer.wait_for(lambda m: len(observer.bms_lines(step)) >= 3)
    assert observer.on(T.step) == [b"5", b"2"]
