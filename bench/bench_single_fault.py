"""One fault at a time through a checkout's real banc.py, measured from outside: the before → after table.

For a checkout (`--repo DIR`, default this project) each fault runs one complete test: a
private Mosquitto (testkit.support.MosquittoBroker), that checkout's own `banc.py banc1
SERIAL` started as the kiosk starts it (bench.common.start_banc), and this process playing
the ESP from the CURRENT project's firmware model: testkit.fault_run.play_clean_test gives
every message of a clean test with its second, and the ESP answers `replay FIRST LAST` from
the lines it has measured (its last battery_model.HISTORY_LINES). Each fault changes that
stream once (or the Pi's wall clock, or banc.py's life) and one table row says what came of
it, read only from outside: the grade in the test folder's config.json, the (seq, uptime_ms)
rows of data.csv against the ESP's lines, the phases banc.py announced on bancX/command, the
step config.json reached, the alerts on bancX/security.

Time: the ESP's clock (uptime_ms) runs at its own pace; the messages go out QoS 1 as fast as
the broker takes them, and banc.py reads them as fast as it can (its Receive Maximum holds
the rest in the broker). A test of 2 h 20 min of ESP time takes a few seconds.

    .venv/bin/python bench/bench_single_fault.py                                  # this checkout, contract 3
    .venv/bin/python bench/bench_single_fault.py --repo /tmp/before-wt --contract 2   # an older checkout
    .venv/bin/python bench/bench_single_fault.py --faults clean,seq_bitflip       # some rows only

--contract 2 plays an 11-field firmware (no field 12): a checkout older than protocol v3
rejects 12-field lines. The Pi clock fault needs libfaketime (apt-get install libfaketime):
banc.py runs under LD_PRELOAD with FAKETIME_DONT_FAKE_MONOTONIC=1, its wall clock read from
a file this script rewrites (FAKETIME_NO_CACHE: the step takes effect at once); without the
library that row says "not measurable from outside". (libfaketime 0.9.10 makes time.sleep
fail with EINVAL in that mode; banc.py sleeps only while the broker is unreachable, which it
never is here, and the row says so if banc.py's log shows it.) A control row runs the clean
test under the same preload at +0 s.

The ESP follows its script: it does not obey the phase banc.py announces. A phase announced
wrongly (a retained 3, an older phase after a restart) is shown in its column; a real ESP
would run that phase, which the other columns of that row do not show.

The pack, the sequence and the grading.json rule sets are those of tests/test_single_fault.py
(PACK, SEQUENCE, rules_for and the positions come from testkit/fault_run, as for tests/test_single_fault.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt

from banclfp.simulation import battery_model
from banclfp.testkit import fault_run
from banclfp.testkit.banc_helpers import MqttProbe, battery_folders, read_csv, read_data_rows
from banclfp.testkit.support import MosquittoBroker
from banclfp.wire import protocol
from bench import common
from bench.common import REPO_DIR, ProcessGroup, count_rows_fast

BANC = "banc1"
T = protocol.topics(BANC)
SERIAL = fault_run.SERIAL
PACK, SEQUENCE = fault_run.PACK, fault_run.SEQUENCE
LIBFAKETIME_PATHS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                     "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                     "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1")
CHUNK = 500  # messages published, then waited for (the broker's acknowledgements), at a time
ANNOUNCE_WAIT_S = 8.0  # banc.py's first announcement (a resumed test waits up to 3 s for the ESP's phase)
ROWS_WAIT_S = 30.0  # rows published before a pause (a kill, a clock step) reaching data.csv
FLOOD_LINES = 10  # lines published after the flood of numbers beyond a float, timed to data.csv
FLOOD_WAIT_S = 15.0
STALL_S = 12.0  # banc.py alive, nothing new on disk nor on the broker for this long: it is stuck
EXIT_WAIT_S = 120.0


# =========================================================================== the clean test and its rules


def rules_for(clean: fault_run.CleanTest) -> dict[str, dict]:
    """grading.json contents: "A" grades the clean test A, "spread" REJET on the cell spread (fault_run's)."""
    rules = fault_run.rules_for(clean)
    return {"A": rules["A"], "spread": rules["spread"]}


positions = fault_run.positions
index_at = fault_run.index_at


def line_key(payload: bytes) -> tuple[int, int]:
    """(seq, uptime_ms) of a BMS line."""
    line = protocol.parse_bms_line(payload)
    return line.seq, line.uptime_ms if line.uptime_ms is not None else -1


# =========================================================================== the ESP


@dataclass(frozen=True)
class Sent:
    """One message the ESP sends; `seq` is the true seq of a line it measured (None: not a line of the test's boot)."""

    message: fault_run.Message
    seq: Optional[int] = None


def stream_of(clean: fault_run.CleanTest) -> list[Sent]:
    """The clean test as the ESP sends it."""
    return [Sent(m, protocol.parse_bms_line(m.payload).seq if m.kind == protocol.KIND_BMS else None)
            for m in clean.messages]


class StreamedEsp(MqttProbe):
    """The ESP sending a played test as fast as the broker takes it (testkit's PlayedEsp keeps a real 1 s period).

    It answers `replay FIRST LAST` at once from the lines it has measured (its last
    battery_model.HISTORY_LINES), and records what banc.py publishes on command, security, status.
    """

    def __init__(self, broker: MosquittoBroker, ring: dict[int, bytes]) -> None:
        super().__init__(broker, [T.command, T.security, T.banc_status], client_id="bench-single-fault-esp")
        self.ring = ring
        self.measured = -1  # the highest seq measured so far (lines of the test's boot)
        self.replayed = 0

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        super()._on_message(client, userdata, message)
        if message.topic != T.command or message.retain:
            return
        try:
            command = protocol.parse_command(bytes(message.payload))
        except (protocol.PayloadError, ValueError):
            return
        if isinstance(command, protocol.ReplayCommand):  # the firmware answers from its RAM ring, at once
            low = self.measured - battery_model.HISTORY_LINES
            for seq in range(command.first, min(command.last, command.first + battery_model.HISTORY_LINES) + 1):
                if low < seq <= self.measured and seq in self.ring:
                    self.client.publish(T.bms_replay, self.ring[seq], qos=protocol.qos_for(T.bms_replay))
                    self.replayed += 1

    def send(self, items: Sequence[Sent]) -> None:
        """Publish in order, CHUNK at a time, each chunk acknowledged by the broker before the next."""
        topic_of = {protocol.KIND_BMS: T.bms_data, protocol.KIND_STEP: T.step, protocol.KIND_RI: T.ri_results}
        for k in range(0, len(items), CHUNK):
            chunk = items[k:k + CHUNK]
            self.measured = max([self.measured, *(s.seq for s in chunk if s.seq is not None)])
            self.publish_many([(topic_of[s.message.kind], s.message.payload) for s in chunk], timeout_s=120.0)

    def announced(self) -> list[str]:
        """The phases banc.py announced on bancX/command (replay requests left out), oldest first."""
        return [t for t in self.texts(T.command, live_only=True) if not t.startswith("replay")]

    def replay_requests(self) -> list[str]:
        return [t for t in self.texts(T.command, live_only=True) if t.startswith("replay")]


# =========================================================================== one run


@dataclass
class Outcome:
    """What one fault left, as seen from outside."""

    key: str
    label: str
    rules: str
    grade: Optional[str] = None
    reason: str = ""
    rows: int = 0
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    announced: list[str] = field(default_factory=list)
    step: Optional[int] = None
    alerts: list[str] = field(default_factory=list)
    exit_code: Optional[int] = None
    still_running: bool = False
    wall_s: float = 0.0
    measure: str = ""
    replay_requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    lost_keys: list[tuple[int, int]] = field(default_factory=list)  # the first (seq, uptime_ms) missing
    log_errors: int = 0  # ERROR lines in banc.py's log
    folder: str = ""
    log: str = ""
    config: dict[str, Any] = field(default_factory=dict)


class Run:
    """One test through the checkout's banc.py, its broker, its ESP; the fault's play drives it."""

    def __init__(self, ctx: Context, key: str, rules: str) -> None:
        self.ctx = ctx
        self.home = ctx.out / key
        self.home.mkdir(parents=True)
        (self.home / "grading.json").write_text(json.dumps(ctx.rules[rules]))
        self.broker = MosquittoBroker(self.home / "broker")
        self.group = ProcessGroup()
        self.esp: Optional[StreamedEsp] = None
        self.proc: Optional[subprocess.Popen] = None
        self.extra_env: dict[str, str] = {}
        self.clock_file: Optional[Path] = None
        self.started_t = 0.0
        self.notes: list[str] = []

    # ------------------------------------------------------------------ processes

    def __enter__(self) -> Run:
        self.broker.start()
        esp = StreamedEsp(self.broker, self.ctx.clean.ring)
        esp.start()
        self.esp = esp
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.stop_all()
        if self.esp is not None:
            self.esp.stop()
        self.broker.stop()

    def fake_clock(self, library: str) -> None:
        """banc.py's wall clock from a file (offset in seconds), its monotonic clock the machine's."""
        self.clock_file = self.home / "faketime.rc"
        self.clock_file.write_text("+0\n")
        self.extra_env = {"LD_PRELOAD": library, "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                          "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}

    def step_clock(self, offset_s: float) -> None:
        assert self.clock_file is not None
        self.clock_file.write_text(f"{offset_s:+.0f}\n")

    def start_banc(self) -> None:
        """`banc.py banc1 SERIAL` of the checkout, as the kiosk starts it; returns once it is online."""
        assert self.esp is not None
        seen = len(self.esp.messages(T.banc_status, live_only=True))
        if not self.started_t:
            self.started_t = time.monotonic()
        self.proc = common.start_banc(self.group, self.home, self.broker, 1, 1, SERIAL, log_dir=self.home,
                                      script=self.ctx.repo / "banc.py", extra_env=self.extra_env)
        proc = self.proc
        try:
            self.esp.wait_for(T.banc_status, protocol.STATUS_ONLINE, since=seen, timeout_s=20.0,
                              alive=lambda: proc.poll() is None)
        except AssertionError as exc:
            self.notes.append(f"banc.py not online: {exc}")

    def kill_banc(self) -> None:
        assert self.proc is not None
        self.group.kill(self.proc)

    def wait_announcement(self, since: int = 0) -> None:
        """Until banc.py has announced a phase (after the `since` first ones), or exited, or ANNOUNCE_WAIT_S."""
        assert self.esp is not None and self.proc is not None
        deadline = time.monotonic() + ANNOUNCE_WAIT_S
        while len(self.esp.announced()) <= since and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    # ------------------------------------------------------------------ files

    def folder(self) -> Optional[Path]:
        found = battery_folders(self.home, BANC, SERIAL)
        return found[-1] if found else None

    def rows(self) -> int:
        folder = self.folder()
        return count_rows_fast(folder / "data.csv") if folder is not None else 0

    def wait_rows(self, wanted: int, timeout_s: float = ROWS_WAIT_S) -> bool:
        """Until data.csv holds `wanted` rows (False after `timeout_s`, or when banc.py is gone)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.rows() >= wanted:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def _footprint(self) -> tuple[int, ...]:
        folder = self.folder()
        sizes: list[int] = []
        for name in ("data.csv", "events.jsonl", "rejected.csv", "config.json"):
            try:
                sizes.append((folder / name).stat().st_size if folder else 0)
            except OSError:
                sizes.append(0)
        assert self.esp is not None
        return (*sizes, len(self.esp.messages()))

    def wait_exit(self) -> None:
        """Until banc.py exits (the test finished) or stays stuck STALL_S with nothing new; then SIGTERM."""
        assert self.proc is not None
        deadline = time.monotonic() + EXIT_WAIT_S
        last, since = self._footprint(), time.monotonic()
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self._footprint()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                break


@dataclass
class Context:
    """What every run of one checkout shares."""

    repo: Path
    contract: int
    out: Path
    clean: fault_run.CleanTest
    rules: dict[str, dict]
    at: dict[str, float]
    faketime: Optional[str]


# =========================================================================== the faults


@dataclass(frozen=True)
class Fault:
    key: str
    label: str  # French: the table goes into bench/RESULTS.md
    rules: str  # "A" or "spread"
    play: Callable[[Run], tuple[list[tuple[int, int]], str]]  # drives the run; (expected rows, fault's own measure)


def expected_clean(ctx: Context) -> list[tuple[int, int]]:
    return [line_key(m.payload) for m in ctx.clean.lines()]


def begin(run: Run, retained: Sequence[tuple[str, str]] = ()) -> StreamedEsp:
    """Retained messages left on the broker first (if any), then banc.py, and its first announcement."""
    assert run.esp is not None
    for topic, payload in retained:
        run.esp.publish(topic, payload, retain=True)
    run.start_banc()
    run.wait_announcement()
    return run.esp


def play_clean(run: Run) -> tuple[list[tuple[int, int]], str]:
    begin(run).send(stream_of(run.ctx.clean))
    return expected_clean(run.ctx), ""


def garbled(where: str, change: Callable[[protocol.BmsLine], dict]) -> Callable[[Run], tuple[list, str]]:
    """One line at `where` leaves the ESP with fields changed (its ring keeps the true one)."""
    def play(run: Run) -> tuple[list[tuple[int, int]], str]:
        stream = stream_of(run.ctx.clean)
        i = index_at([s.message for s in stream], run.ctx.at[where])
        line = protocol.parse_bms_line(stream[i].message.payload)
        stream[i] = Sent(fault_run.garble_line(stream[i].message, **change(line)), stream[i].seq)
        begin(run).send(stream)
        return expected_clean(run.ctx), f"ligne seq {line.seq} altérée, à {stream[i].message.at_s:.0f} s du temps de l'ESP"
    return play


def play_clock_back(run: Run) -> tuple[list[tuple[int, int]], str]:
    """The Pi's wall clock stepped back 1 h at `phase 2, full-charge window` (not its monotonic clock)."""
    if run.ctx.faketime is None:
        raise NotMeasurable("libfaketime absent : l'horloge de banc.py ne peut pas être décalée de l'extérieur")
    run.fake_clock(run.ctx.faketime)
    stream = stream_of(run.ctx.clean)
    i = index_at([s.message for s in stream], run.ctx.at["phase 2, full-charge window"])
    esp = begin(run)
    esp.send(stream[:i])
    lines_before = sum(1 for s in stream[:i] if s.message.kind == protocol.KIND_BMS)
    caught_up = run.wait_rows(lines_before)
    run.step_clock(-3600)
    esp.send(stream[i:])
    return expected_clean(run.ctx), (f"−3600 s à {stream[i].message.at_s:.0f} s du temps de l'ESP"
                                     + ("" if caught_up else " (lignes d'avant pas toutes écrites)"))


def play_clock_control(run: Run) -> tuple[list[tuple[int, int]], str]:
    """The same, the clock file left at +0: libfaketime alone changes nothing."""
    if run.ctx.faketime is None:
        raise NotMeasurable("libfaketime absent")
    run.fake_clock(run.ctx.faketime)
    begin(run).send(stream_of(run.ctx.clean))
    return expected_clean(run.ctx), "LD_PRELOAD libfaketime, décalage +0 s"


def retained_step(step: int) -> Callable[[Run], tuple[list, str]]:
    def play(run: Run) -> tuple[list[tuple[int, int]], str]:
        begin(run, [(T.step, str(step))]).send(stream_of(run.ctx.clean))
        return expected_clean(run.ctx), ""
    return play


def play_step_lost_restart(run: Run) -> tuple[list[tuple[int, int]], str]:
    """banc.py killed (-9) in phase 2; the ESP enters phase 3, whose step message the broker loses; banc.py restarted."""
    ctx = run.ctx
    stream = stream_of(ctx.clean)
    messages = [s.message for s in stream]
    start3 = ctx.clean.phase_start_s[3]
    kill_at = index_at(messages, start3 - 30)
    resume_at = index_at(messages, start3 + 30)
    esp = begin(run)
    esp.send(stream[:kill_at])
    caught_up = run.wait_rows(sum(1 for m in messages[:kill_at] if m.kind == protocol.KIND_BMS))
    run.kill_banc()
    down = [s for s in stream[kill_at:resume_at]
            if not (s.message.kind == protocol.KIND_STEP and s.message.payload == b"3")]
    assert len(down) == resume_at - kill_at - 1, "the step 3 message is where expected"
    esp.send(down)
    before = len(esp.announced())
    run.start_banc()
    online = time.monotonic()
    esp.send(stream[resume_at:])  # the ESP goes on measuring: it does not wait for banc.py
    run.wait_announcement(since=before)
    lines_down = sum(1 for s in down if s.message.kind == protocol.KIND_BMS)
    announced = [m for m in esp.messages(T.command, live_only=True) if not m.text.startswith("replay")][before:]
    when = f", « {announced[0].text} » annoncé {announced[0].at - online:.1f} s après sa relance" if announced else \
        ", rien annoncé après sa relance"
    return expected_clean(ctx), (f"tué à {messages[kill_at].at_s:.0f} s du temps de l'ESP, {lines_down} lignes publiées "
                                 "pendant l'arrêt" + when + ("" if caught_up else " (lignes d'avant pas toutes écrites)"))


def play_ri_overflow(run: Run) -> tuple[list[tuple[int, int]], str]:
    """150 Ri results whose number is too large for a float (beyond the Receive Maximum of 100), then lines."""
    ctx = run.ctx
    stream = stream_of(ctx.clean)
    messages = [s.message for s in stream]
    i = index_at(messages, ctx.at["phase 1"])
    j = i + next(k for k, m in enumerate(messages[i:]) if sum(1 for x in messages[i:i + k] if x.kind == protocol.KIND_BMS)
                 == FLOOD_LINES)
    esp = begin(run)
    esp.send(stream[:i])
    rows_before = sum(1 for m in messages[:i] if m.kind == protocol.KIND_BMS)
    run.wait_rows(rows_before)
    overflow = fault_run.Message(protocol.KIND_RI, battery_model.OVERFLOW_RI_TEXT.encode(), messages[i].at_s)
    t0 = time.monotonic()
    esp.send([Sent(overflow)] * 150)
    esp.send(stream[i:j])
    recorded = run.wait_rows(rows_before + FLOOD_LINES, FLOOD_WAIT_S)
    delay = time.monotonic() - t0
    esp.send(stream[j:])
    if recorded:
        return expected_clean(ctx), (f"les {FLOOD_LINES} lignes suivantes dans data.csv {delay:.2f} s après l'envoi "
                                     "du 1er des 150")
    return expected_clean(ctx), f"les {FLOOD_LINES} lignes suivantes PAS dans data.csv après {delay:.0f} s"


def play_reboot_loop(run: Run) -> tuple[list[tuple[int, int]], str]:
    """The ESP reboots 3 times, each boot sending one line (seq 0), just before the test's first line (a 4th boot)."""
    ctx = run.ctx
    firmware = battery_model.BenchFirmware(PACK, battery_model.SequenceParams(**SEQUENCE), contract=ctx.contract)
    boots: list[Sent] = []
    for k, uptime_s in enumerate((1.30, 1.25, 1.40)):
        if k:
            firmware.reboot()
        firmware.advance(uptime_s)
        payload = protocol.encode_bms_line(firmware.measure()).encode()
        boots.append(Sent(fault_run.Message(protocol.KIND_BMS, payload, 0.0)))
    stream = stream_of(ctx.clean)
    first_line = index_at([s.message for s in stream], 0.0)
    begin(run).send(stream[:first_line] + boots + stream[first_line:])
    expected = [line_key(b.message.payload) for b in boots] + expected_clean(ctx)
    return expected, "démarrages : seq 0 à uptime " + ", ".join(f"{k[1]}" for k in expected[:3]) + " ms"


def play_ri_absurd(run: Run) -> tuple[list[tuple[int, int]], str]:
    """Two pulse results no pack gives (discharge 1e-9 ohm, charge 10 ohm: battery_model.absurd_ri_results) in phase 1."""
    ctx = run.ctx
    firmware = battery_model.BenchFirmware(PACK, battery_model.SequenceParams(**SEQUENCE), contract=ctx.contract)
    absurd = [Sent(fault_run.Message(protocol.KIND_RI, r.payload().encode(), 0.0))
              for r in firmware.absurd_ri_results()[:2]]
    stream = stream_of(ctx.clean)
    i = index_at([s.message for s in stream], ctx.at["phase 1"])
    begin(run).send(stream[:i] + absurd + stream[i:])
    return expected_clean(ctx), ""


class NotMeasurable(Exception):
    """The fault cannot be made from outside this checkout's banc.py."""


FAULTS: tuple[Fault, ...] = (
    Fault("clean", "aucune (référence, règles A)", "A", play_clean),
    Fault("clean_spread", "aucune (référence, règles « écart »)", "spread", play_clean),
    Fault("seq_bitflip", "seq bit 20 inversé, une ligne de phase 2", "A",
          garbled("phase 2", lambda line: {"seq": line.seq ^ (1 << battery_model.SEQ_BITFLIP_BIT)})),
    Fault("uptime_ahead", "uptime_ms bit 40 inversé (≈ 35 ans d'avance), une ligne de la fenêtre de pleine charge",
          "spread", garbled("phase 2, full-charge window",
                            lambda line: {"uptime_ms": (line.uptime_ms or 0) ^ (1 << battery_model.UPTIME_GARBLED_BIT)})),
    Fault("clock_control", "aucune, banc.py sous libfaketime à +0 s (contrôle)", "spread", play_clock_control),
    Fault("clock_back", "horloge murale du Pi reculée d'1 h, 200 s avant la fin de la phase 2", "spread",
          play_clock_back),
    Fault("retained_5", "« 5 » retenu sur bancX/step avant le démarrage de banc.py", "A", retained_step(5)),
    Fault("retained_3", "« 3 » retenu sur bancX/step avant le démarrage de banc.py", "A", retained_step(3)),
    Fault("step_lost", "banc.py tué en phase 2, message « 3 » perdu pendant l'arrêt, banc.py relancé", "A",
          play_step_lost_restart),
    Fault("ri_overflow", "150 résultats Ri au nombre trop grand pour un float (phase 1), puis des lignes", "A",
          play_ri_overflow),
    Fault("reboot_loop", "ESP redémarré 3 fois, une ligne (seq 0) par démarrage, avant la 1re ligne du test", "A",
          play_reboot_loop),
    Fault("ri_absurd", "Ri 1e-9 Ω (décharge) et 10 Ω (charge) en phase 1", "A", play_ri_absurd),
)


REFERENCES = ("clean", "clean_spread", "clock_control")  # rows without a fault: their grade is the reference


# =========================================================================== reading the outcome


def collect(run: Run, fault: Fault, expected: list[tuple[int, int]], measure: str) -> Outcome:
    out = Outcome(fault.key, fault.label, fault.rules, measure=measure)
    assert run.esp is not None
    out.announced = run.esp.announced()
    out.replay_requests = len(run.esp.replay_requests())
    out.alerts = [protocol.parse_security(m.payload) for m in run.esp.messages(T.security, live_only=True)]
    if run.proc is not None:
        out.exit_code = run.proc.poll()
        out.still_running = out.exit_code is None
    out.wall_s = time.monotonic() - run.started_t if run.started_t else 0.0
    out.log = str(run.home / "banc1.log")
    folder = run.folder()
    out.expected = len(expected)
    if folder is None:
        out.lost = len(expected)
        return out
    out.folder = str(folder)
    rows = read_data_rows(folder)
    written = Counter((int(r["seq"]), int(r.get("uptime_ms") or -1)) for r in rows)
    wanted = Counter(expected)
    out.rows = len(rows)
    missing = wanted - written
    out.lost = sum(missing.values())
    out.lost_keys = sorted(missing)[:5]
    out.duplicated = sum(c - 1 for k, c in written.items() if c > 1 and k in wanted)
    out.extra = sum(c for k, c in written.items() if k not in wanted)
    out.rejected = dict(Counter(r.get("reason", "")[:40] for r in read_csv(folder / "rejected.csv")))
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    out.config = config
    verdict_ = config.get("verdict") if isinstance(config.get("verdict"), dict) else None
    if verdict_:
        out.grade, out.reason = verdict_.get("grade"), str(verdict_.get("reason", ""))
    step = config.get("current_step", config.get("step"))
    out.step = step if isinstance(step, int) else None
    return out


def ri_means(config: dict[str, Any]) -> str:
    """The Ri figures config.json shows (whatever their keys in this checkout)."""
    shown = [f"{name} {config[k]:.4g} Ω ({config.get(k.replace('_average', '_count'), '?')} imp.)"
             for k, name in (("ri_discharge_average", "Ri décharge"), ("ri_charge_average", "Ri charge"))
             if isinstance(config.get(k), (int, float))]
    return "config.json : " + (", ".join(shown) or "aucune moyenne de Ri")


def cut(text: str, n: int = 70) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def table(outcomes: Sequence[Outcome], reference: dict[str, Optional[str]]) -> str:
    header = ("faute", "classement (sans faute → avec)", "lignes data.csv / attendues", "phases annoncées",
              "étape", "alertes bancX/security", "durée", "mesure propre à la faute")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for o in outcomes:
        if o.measure.startswith("n/a"):
            lines.append(f"| {o.label} | non mesurable de l'extérieur | | | | | | {cut(o.measure, 200)} |")
            continue
        if o.key in REFERENCES:
            grade = o.grade or "aucun"
        else:
            grade = f"{reference.get(o.rules) or '?'} → **{o.grade or 'aucun'}**"
        rows = f"{o.rows} / {o.expected}"
        details = [f"{n} {w}" for n, w in ((o.lost, "perdue(s)"), (o.duplicated, "en double"), (o.extra, "en trop")) if n]
        if details:
            rows += " (" + ", ".join(details) + ")"
        alerts = "0" if not o.alerts else f"{len(o.alerts)} : « {cut(o.alerts[0])} »"
        end = "" if o.exit_code is not None else " (banc.py bloqué, arrêté)"
        lines.append(f"| {o.label} | {grade} | {rows} | {' → '.join(o.announced) or '—'} | "
                     f"{o.step if o.step is not None else '—'}{end} | {alerts} | {o.wall_s:.1f} s | {cut(o.measure, 240)} |")
    return "\n".join(lines)


# =========================================================================== main


def run_fault(ctx: Context, fault: Fault) -> Outcome:
    with Run(ctx, fault.key, fault.rules) as run:
        try:
            expected, measure = fault.play(run)
        except NotMeasurable as exc:
            return Outcome(fault.key, fault.label, fault.rules, measure=f"n/a: {exc}")
        if run.proc is not None:
            run.wait_exit()
        outcome = collect(run, fault, expected, measure)
        log = Path(outcome.log).read_text(errors="replace") if Path(outcome.log).exists() else ""
        outcome.log_errors = sum(" ERROR " in line for line in log.splitlines())
        parts = [outcome.measure]
        if fault.key in ("ri_absurd", "clean"):
            parts.append(ri_means(outcome.config))
        if 0 < outcome.lost <= len(outcome.lost_keys):
            parts.append("perdue(s) : " + ", ".join(f"seq {s} à {u} ms" for s, u in outcome.lost_keys))
        rejected = sum(outcome.rejected.values())
        if rejected:
            parts.append(f"rejected.csv : {rejected}")
        if outcome.replay_requests:
            parts.append(f"renvois demandés : {outcome.replay_requests}")
        if outcome.log_errors:
            parts.append(f"log de banc.py : {outcome.log_errors} lignes ERROR")
        if "Errno 22" in log and fault.key.startswith("clock"):
            parts.append("libfaketime : un sleep a échoué dans banc.py (EINVAL), voir son log")
        outcome.measure = " ; ".join(p for p in [*parts, *run.notes] if p)
        return outcome


def commit_of(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO_DIR, help="checkout whose banc.py runs (default: this one)")
    parser.add_argument("--contract", type=int, choices=(2, 3), default=3,
                        help="the firmware's contract: 2 = 11-field lines (checkouts before protocol v3), 3 = 12 fields")
    parser.add_argument("--faults", default=",".join(f.key for f in FAULTS),
                        help="comma-separated keys: " + ",".join(f.key for f in FAULTS))
    parser.add_argument("--name", default="", help="output folder bench/out/<name> (default single-fault-<commit>)")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    if not (repo / "banc.py").exists():
        parser.error(f"no banc.py in {repo}")
    chosen = [f for f in FAULTS if f.key in args.faults.split(",")]
    unknown = set(args.faults.split(",")) - {f.key for f in FAULTS}
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    commit = commit_of(repo)
    name = args.name or f"single-fault-{commit}-c{args.contract}"
    t_start = time.monotonic()
    sequence = battery_model.SequenceParams(**SEQUENCE)
    latest = fault_run.play_clean_test(PACK, sequence)  # field 12 tells the phases the rules are computed on
    clean = latest if args.contract == battery_model.CONTRACT_LATEST else \
        fault_run.play_clean_test(PACK, battery_model.SequenceParams(**SEQUENCE), contract=args.contract)
    ctx = Context(repo, args.contract, common.fresh_dir(name), clean, rules_for(latest), positions(clean),
                  next((p for p in LIBFAKETIME_PATHS if os.path.exists(p)), None))
    print(f"checkout {repo} at {commit}, contract {args.contract}: {len(clean.lines())} lines, "
          f"phases start at {ctx.clean.phase_start_s} s of ESP time; output in {ctx.out}", flush=True)
    outcomes: list[Outcome] = []
    for fault in chosen:
        t0 = time.monotonic()
        outcome = run_fault(ctx, fault)
        outcomes.append(outcome)
        print(f"  {fault.key:14s} {time.monotonic() - t0:5.1f} s  grade {outcome.grade!s:12s} rows "
              f"{outcome.rows}/{outcome.expected} lost {outcome.lost} dup {outcome.duplicated} extra {outcome.extra} "
              f"announced {outcome.announced} step {outcome.step} alerts {len(outcome.alerts)} "
              f"exit {outcome.exit_code} {outcome.measure}", flush=True)
    reference = {o.rules: o.grade for o in outcomes if o.key in ("clean", "clean_spread")}
    text = table(outcomes, reference)
    total = time.monotonic() - t_start
    print(f"\n### {repo.name} at {commit}, contract {args.contract} ({total:.0f} s)\n\n{text}", flush=True)
    common.save_json(name, {"repo": str(repo), "commit": commit, "contract": args.contract, "total_s": total,
                            "machine": common.machine_info(), "outcomes": [dataclasses.asdict(o) for o in outcomes],
                            "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
