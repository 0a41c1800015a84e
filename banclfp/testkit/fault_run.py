"""A whole test played through banc.py's recorder without a broker, clean or with one fault (docs/protocole.md §8).

`play_clean_test` runs battery_model.BenchFirmware (the ESP's logic, the simulator's core)
through a complete test, second by second, and keeps what it publishes, in order, with the
second it was sent. `run_test` feeds those messages, changed by at most one fault, to the
product's own banc.Recorder (the sans-I/O RecorderCore and its file executor) with injected
clocks, answers its replay requests from the ESP's ring as the firmware would, and concludes
the test with the product's verdict. Nothing here decides anything the product decides: the
faults only change what arrives, and when.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from banclfp.recording import bench_process as banc, record, store
from banclfp.recording.recorder import REPLAY_GIVE_UP_S
from banclfp.simulation import battery_model
from banclfp.verdict import conclude as verdict_module
from banclfp.wire import protocol

BANC = "banc1"
SERIAL = "RW-FAULT0001"
T0 = datetime(2026, 12, 1, 8, 0, 0).astimezone()  # the test's first second, on the Pi's wall clock
MONO0_S = 10_000.0  # the Pi's monotonic clock at T0
TICK_S = 5.0  # as often as the recorder needs (its timers count 30 s and more); banc.py ticks every 0.5 s


@dataclass(frozen=True)
class Message:
    """One message as it reaches banc.py: topic kind (protocol.KIND_*), payload, second of arrival, flags."""

    kind: str
    payload: bytes
    at_s: float
    redelivered: bool = False
    retained: bool = False


@dataclass
class CleanTest:
    """What the ESP published during a clean test, and what it could re-send."""

    messages: list[Message]
    ring: dict[int, bytes]  # seq -> the line as measured (the firmware's replay ring)
    phase_start_s: dict[int, float]  # phase -> the second its step message went out
    end_s: float

    def lines(self) -> list[Message]:
        """The BMS lines of the test (before its step 5), in order."""
        end = next(i for i, m in enumerate(self.messages) if m.kind == protocol.KIND_STEP
                   and m.payload == protocol.encode_step(protocol.STEP_FINISHED).encode())
        return [m for m in self.messages[:end] if m.kind == protocol.KIND_BMS]

    def phase_of(self, at_s: float) -> int:
        """The phase running at second `at_s`."""
        current = 1
        for phase, start in sorted(self.phase_start_s.items(), key=lambda item: item[1]):
            if start <= at_s:
                current = phase
        return current


def play_clean_test(pack: battery_model.PackParams, sequence: battery_model.SequenceParams,
                    contract: int = battery_model.CONTRACT_LATEST, limit_s: float = 200_000.0,
                    after_end_s: float = 60.0) -> CleanTest:
    """Run the firmware through phases 1 to 5, one second at a time, and `after_end_s` more; what it publishes, with when."""
    firmware = battery_model.BenchFirmware(pack, sequence, contract=contract)
    messages: list[Message] = []
    starts: dict[int, float] = {}

    def publish(events: Sequence[battery_model.Event], at_s: float) -> None:
        for event in events:
            if isinstance(event, battery_model.StepChanged):
                messages.append(Message(protocol.KIND_STEP, protocol.encode_step(event.step).encode(), at_s))
                starts.setdefault(event.step, at_s)
            elif isinstance(event, battery_model.RiMeasured):
                messages.append(Message(protocol.KIND_RI, event.payload().encode(), at_s))

    publish(firmware.handle_command(1), 0.0)
    ring: dict[int, bytes] = {}
    t_s = 0.0
    end_s: Optional[float] = None
    while end_s is None or t_s < end_s + after_end_s:
        if t_s > limit_s:
            raise RuntimeError("the simulated test did not finish")
        t_s += 1.0
        publish(firmware.advance(1.0), t_s)
        if end_s is None and firmware.state == battery_model.FINISHED:
            end_s = t_s
        if firmware.line_due():
            line = firmware.measure()
            text = protocol.encode_bms_line(line).encode()
            ring[line.seq] = text
            messages.append(Message(protocol.KIND_BMS, text, t_s))
    assert end_s is not None
    return CleanTest(messages, ring, starts, end_s)


# The test the single-fault matrix and its benchmark play: a 20 Ah pack at 2 C (three times the
# default thermal mass, so that it stays below its 55 °C trip), one pulse pair: 4,473 lines,
# 1 h 15 min of ESP time, phase 2 twice as long as the full-charge window.
PACK = battery_model.PackParams(capacity_ah=20.0, seed=3, heat_capacity_j_per_k=3 * 21.0 * 20.0 * 16)
SEQUENCE: dict[str, Any] = dict(charge_current_a=40.0, discharge_current_a=40.0, rest_s=120.0, pulse_pairs=1,
                                pulse_rest_s=60.0)


def play_reference_test() -> CleanTest:
    """The clean reference test (PACK, SEQUENCE)."""
    return play_clean_test(PACK, battery_model.SequenceParams(**SEQUENCE))


def rules_for(clean: CleanTest) -> dict[str, dict]:
    """Three grading.json contents: the clean test gets A, REJET by cell spread, REJET by temperature."""
    lines = [protocol.parse_bms_line(m.payload) for m in clean.lines()]
    charge = [line for line in lines if line.esp_step == 2]
    spread = max(line.cell_spread_mv for line in charge[-600:])
    hottest = max(line.temperature_c for line in lines)

    def model(spread_max: float, temperature_max: float) -> dict:
        return {"version": "fault-matrix", "models": [{
            "name": "LFP 16S 20 Ah", "serial_pattern": "^RW-", "nominal_capacity_ah": 20.0,
            "grades": [{"grade": "A", "min_soh_pct": 90}, {"grade": "B", "min_soh_pct": 80},
                       {"grade": "C", "min_soh_pct": 70}],
            "ri_discharge_max_ohm": 0.2, "cell_spread_max_mv": spread_max, "temperature_max_c": temperature_max}]}

    return {"A": model(spread + 40, hottest + 3), "spread": model(spread - 25, hottest + 3),
            "temperature": model(spread + 40, round(hottest - 0.8, 1))}


def positions(clean: CleanTest) -> dict[str, float]:
    """Seconds into the test where a fault goes: each phase, inside and just outside phase 2's full-charge window."""
    start = clean.phase_start_s
    return {
        "phase 1": (start[1] + start[2]) / 2,
        "phase 2": (start[2] + start[3]) / 2,
        "phase 2, full-charge window": start[3] - 200,
        "phase 2, before the window": start[3] - 900,
        "phase 3": (start[3] + start[4]) / 2,
        "phase 4": (start[4] + start[5]) / 2,
    }


def index_at(messages: Sequence[Message], at_s: float, kind: str = protocol.KIND_BMS) -> int:
    """Index of the first message of `kind` at or after second `at_s`."""
    return next(i for i, m in enumerate(messages) if m.kind == kind and m.at_s >= at_s)


@dataclass
class Run:
    """What one played test left: its folder, verdict, alerts, commands to the ESP and the Pi's clock shift."""

    folder: Path
    verdict: Optional[record.Verdict]  # None: the test did not finish
    alerts: list[str]
    commands: list[str]
    step_reached: int
    rows: list[dict[str, str]] = field(default_factory=list)

    def row_keys(self) -> list[tuple[int, int]]:
        """(seq, uptime_ms) of every data.csv row."""
        return [(int(r["seq"]), int(r["uptime_ms"])) for r in self.rows]


@dataclass(frozen=True)
class Conditions:
    """What a fault changes besides the messages: the Pi's wall clock and what the ESP can still re-send."""

    wall_shift_s: Callable[[float], float] = lambda at_s: 0.0
    replayable: Callable[[int], bool] = lambda seq: True


def run_test(home: Path, clean: CleanTest, messages: Optional[Sequence[Message]] = None,
             conditions: Conditions = Conditions()) -> Run:
    """Feed `messages` (default: the clean ones) to banc.py's recorder on a fresh folder under `home`; conclude it."""
    if messages is None:
        messages = clean.messages
    folder, _ = store.find_or_create_test_folder(BANC, SERIAL, T0)
    state, config = store.open_test_record(folder, BANC, SERIAL, T0)
    store.create_data_csv(folder)
    alerts: list[str] = []
    commands: list[str] = []
    clock_s = [0.0]
    recorder = banc.Recorder(
        folder, BANC, SERIAL, state.step, alerts.append,
        clock=lambda: T0 + timedelta(seconds=clock_s[0] + conditions.wall_shift_s(clock_s[0])),
        mono=lambda: MONO0_S + clock_s[0], fsync_interval_s=3600.0, bms_timeout_s=30.0,
        command=commands.append, ri_plausible_ohm=banc.ri_plausible_range(SERIAL))
    recorder.open(config, state)
    recorder.backlog_received()
    topics = protocol.topics(BANC)
    topic_of = {protocol.KIND_BMS: topics.bms_data, protocol.KIND_STEP: topics.step,
                protocol.KIND_RI: topics.ri_results, protocol.KIND_REPLAY: topics.bms_replay}
    answered = 0
    next_tick_s = 0.0
    for message in messages:
        clock_s[0] = max(clock_s[0], message.at_s)
        while next_tick_s <= clock_s[0]:
            recorder.tick(connected_since=MONO0_S)
            next_tick_s += TICK_S
        recorder.handle_message(topic_of[message.kind], message.payload, message.redelivered, message.retained)
        while answered < len(commands):  # the ESP answers a replay from its ring at once
            command = protocol.parse_command(commands[answered].encode())
            answered += 1
            if isinstance(command, protocol.ReplayCommand):
                for seq in range(command.first, min(command.last, command.first + 3600) + 1):
                    if seq in clean.ring and conditions.replayable(seq):
                        recorder.handle_message(topics.bms_replay, clean.ring[seq])
        if recorder.ended is not None:
            break
    for _ in range(int(REPLAY_GIVE_UP_S) + 2):  # let open gaps be asked again, then given up
        if recorder.ended is not None:
            break
        clock_s[0] += 1.0
        recorder.tick(connected_since=MONO0_S)
    assert recorder.flush_all(), "the recorder could not write everything"
    step_reached = recorder.step
    recorder.close()
    result = verdict_module.conclude(folder) if record.fold_events(record.read_events(folder)[0]).finished else None
    alert = verdict_module.alert_text(result)
    if alert is not None:  # what banc.py publishes when it concludes the test
        alerts.append(alert)
    from banclfp.testkit.banc_helpers import read_data_rows  # local: banc_helpers pulls in paho

    return Run(folder, result, alerts, commands, step_reached, read_data_rows(folder))


def replace_payload(message: Message, payload: bytes) -> Message:
    """The same message with another payload."""
    return dataclasses.replace(message, payload=payload)


def garble_line(message: Message, **fields: Any) -> Message:
    """A BMS line with some of its fields changed (seq, uptime_ms, esp_step...), re-encoded as the ESP would."""
    line = protocol.parse_bms_line(message.payload)
    return replace_payload(message, protocol.encode_bms_line(dataclasses.replace(line, **fields)).encode())
