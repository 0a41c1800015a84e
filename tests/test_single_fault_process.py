"""No single fault changes a grade or rewinds a test (docs/protocole.md §5, §8): a sample with the real broker and banc.py.

The wide matrix runs on the sans-I/O core (tests/test_single_fault.py); here a few faults go
through the real processes: a private Mosquitto, the real banc.py, the test playing the ESP
(testkit.banc_helpers.PlayedEsp). The broker's own rules against ESP accounts (no retained
message on the ESP's topics, a client id bound to its account) are tested against the broker
install.sh configures, in tests/test_deploy.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from banclfp.recording import record
from banclfp.testkit.banc_helpers import (
    BancFleet,
    BancRunner,
    MqttProbe,
    PlayedEsp,
    read_data_rows,
    read_rejected_rows,
    wait_until,
)
from banclfp.testkit.support import MosquittoBroker
from banclfp.wire import protocol

SERIAL = "RW-FAULTP01"
T = protocol.topics(1)


@contextlib.contextmanager
def new_test(broker: MosquittoBroker, home: Path) -> Iterator[tuple[MqttProbe, BancFleet, BancRunner]]:
    """A new test on banc1 (the real banc.py), announced at phase 1; the test's ESP probe; all stopped after."""
    probe = MqttProbe(broker, [T.command, T.security]).start()
    fleet = BancFleet(home, broker)
    try:
        runner = fleet.start("banc1", SERIAL)
        probe.wait_for(T.command, "1")
        yield probe, fleet, runner
    finally:
        fleet.stop_all()
        probe.stop()


def test_a_retained_step_left_on_the_broker_neither_ends_nor_moves_a_new_test(
        mqtt_env: dict[str, str], broker: MosquittoBroker, banc_home: Path) -> None:
    probe = MqttProbe(broker, [T.command, T.security]).start()
    fleet = BancFleet(banc_home, broker)
    try:
        probe.publish(T.step, "5", retain=True)  # any client left these behind
        probe.publish(T.ri_results, '{"ri_discharge": 0.5}', retain=True)
        runner = fleet.start("banc1", SERIAL)
        probe.wait_for(T.command, "1")  # the new test starts at 1, not 5
        esp = PlayedEsp(probe, esp_step=1)
        esp.at_1hz(3)
        folder = runner.folder()
        wait_until(lambda: len(read_data_rows(folder)) == 3, message="3 rows")
        assert runner.alive()
        reasons = [row["reason"] for row in read_rejected_rows(folder)]
        assert sum(reason.startswith("retained") for reason in reasons) == 2
        events, _ = record.read_events(folder)
        assert not [e for e in events if isinstance(e, (record.StepEvent, record.RiEvent))]
        probe.publish(T.step, "9")
        assert runner.wait_exit(15) == 0
    finally:
        fleet.stop_all()
        probe.publish(T.step, "", retain=True)  # leave the broker clean
        probe.publish(T.ri_results, "", retain=True)
        probe.stop()


def test_one_garbled_line_and_a_flood_of_numbers_beyond_a_float_neither_stall_nor_bend_the_record(
        mqtt_env: dict[str, str], broker: MosquittoBroker, banc_home: Path) -> None:
    # 150 Ri results whose number is too large for a float (more than the Receive Maximum of
    # 100): each is rejected and acknowledged, and the lines after them are still recorded.
    with new_test(broker, banc_home) as (probe, _fleet, runner):
        esp = PlayedEsp(probe, esp_step=1)
        before = esp.at_1hz(3)
        overflow = '{"ri_discharge": 1' + "0" * 400 + "}"
        probe.publish_many([(T.ri_results, overflow)] * 150)
        seq, uptime = esp.seq, before[-1][1] + 1000
        probe.publish(T.bms_data, esp.line(seq ^ (1 << 20), uptime))  # one bit of its seq flipped
        esp.seq += 1
        esp.last_uptime_ms = uptime
        after = esp.at_1hz(2)
        ask = probe.wait_for(T.command, f"replay {seq} {seq}")
        assert ask is not None
        probe.publish(T.bms_replay, esp.line(seq, uptime))
        folder = runner.folder()
        wait_until(lambda: len(read_data_rows(folder)) == 6, message="6 rows", timeout_s=15)
        probe.publish(T.step, "9")
        assert runner.wait_exit(15) == 0
    rows = read_data_rows(folder)
    assert sorted(int(r["seq"]) for r in rows) == [k for k, _ in before] + [seq] + [k for k, _ in after]
    reasons = [row["reason"] for row in read_rejected_rows(folder)]
    assert sum("too large" in r for r in reasons) == 150 and sum("implausible" in r for r in reasons) == 1
    config = record.read_summary_file(folder)
    assert config is not None and config["seq_restart_count"] == 0 and config.get("ri_discharge_count", 0) == 0


def test_a_phase_whose_step_message_was_lost_while_banc_py_was_down_is_never_announced_backwards(
        mqtt_env: dict[str, str], broker: MosquittoBroker, banc_home: Path) -> None:
    with new_test(broker, banc_home) as (probe, fleet, runner):
        probe.publish(T.step, "2")
        esp = PlayedEsp(probe, esp_step=2)
        esp.at_1hz(3)
        folder = runner.folder()
        wait_until(lambda: len(read_data_rows(folder)) == 3, message="3 rows")
        runner.kill()
        # While banc.py is down the ESP enters phase 3; the broker loses that step message
        # (it crashed between two saves): only the lines say so.
        esp.esp_step = 3
        esp.at_1hz(3)
        commands = len(probe.messages(T.command))
        runner = fleet.start("banc1", SERIAL)
        announced = probe.wait_for(T.command, "3", since=commands)
        assert announced is not None
        sent = [m.text for m in probe.messages(T.command)[commands:]]
        assert "2" not in sent and "1" not in sent
        time.sleep(0.5)
        probe.publish(T.step, "9")
        assert runner.wait_exit(15) == 0
    events, _ = record.read_events(folder)
    recovered = [e for e in events if isinstance(e, record.StepEvent) and e.recovered]
    assert [e.step for e in recovered] == [3]
    assert {r["step"] for r in read_data_rows(folder)} == {"2", "3"}
    assert any("Phase 3" in text for text in probe.texts(T.security))
