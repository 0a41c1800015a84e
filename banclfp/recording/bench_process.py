#!/usr/bin/env python3
"""banc.py — one process per running test: records one bench's data and results (docs/enregistrement.md).

Usage: python banc.py bancN SERIAL

Exit codes:
  0  the test reached step 5 (finished), step 9 (stopped for the day), or SIGTERM/SIGINT
     (the test stays unfinished and is resumed by the next start)
  1  unexpected failure at start (test folder or files cannot be created)
  2  invalid bench, serial or setting (one line on stderr, nothing created on disk)
  3  another banc.py already runs for this bench (nothing written)
  4  the bench holds another battery's unfinished test, or this battery is under test on another bench
  5  this battery finished a test less than 48 business hours ago (nothing created)

What a message or the clock means for the test (rows, steps, counters, alerts, timers) is
decided in recorder.py (RecorderCore, no I/O); this file carries it out: the files
(storage.AppendFile, config.json), MQTT and the process's life.

One thread: paho's read loop runs the message callbacks (every row is written and handed to
the OS there, before paho acknowledges the QoS 1 message); between reads a 0.2 s
tick runs the watchdog, fsync, config.json saves, write retries and shutdown.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from paho.mqtt.client import MQTT_ERR_SUCCESS, Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from banclfp.history import business_hours
from banclfp.infra import environment, logs, settings as settings_module

# The files' mechanism and their reading back; the names marked "as" stay importable from banc (tests, bench).
from banclfp.infra.storage import MAX_PENDING_BYTES as MAX_PENDING_BYTES, AppendFile as AppendFile
from banclfp.recording import datafile, record, recorder
from banclfp.recording.datafile import (
    CsvScan as CsvScan,
    LastRow as LastRow,
    last_data_row as last_data_row,
    scan_csv as scan_csv,
)

# The core and its effects; the names marked "as" stay importable from banc (tests, bench).
from banclfp.recording.recorder import (
    REJECT_PAYLOAD_MAX_CHARS as REJECT_PAYLOAD_MAX_CHARS,
    SEQ_DUPLICATE as SEQ_DUPLICATE,
    SEQ_FIRST as SEQ_FIRST,
    SEQ_GAP as SEQ_GAP,
    SEQ_NEXT as SEQ_NEXT,
    SEQ_RESTART as SEQ_RESTART,
    WRITE_RETRY_INTERVAL_S,
    Alert,
    AlertLatch as AlertLatch,
    Append,
    BmsWatchdog as BmsWatchdog,
    CaughtUp,
    Command,
    Effect,
    FilesRestored,
    Instant,
    Log,
    Outcome,
    RateLimiter as RateLimiter,
    RecorderCore,
    Refused,
    RestoreFailed,
    Retry,
    SaveSummary,
    SeqTracker as SeqTracker,
    SummaryRefused,
    SummarySaved,
    Sync,
    bms_fields as bms_fields,
    format_rejected_row as format_rejected_row,
    safe_text,
)
from banclfp.recording.store import SERIAL_PATTERN, Store, is_valid_serial
from banclfp.wire import protocol

logger = logging.getLogger("banc")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_BENCH_BUSY = 4
EXIT_TOO_EARLY = 5

TICK_S = 0.2
# A row reaches the OS (page cache) before its message is acknowledged, so killing the
# process loses nothing. Only a power cut can lose what the kernel has not written yet:
# data.csv is fsynced every BANC_FSYNC_INTERVAL_S (environment.Settings.fsync_interval_s, default
# 1 s), which bounds that to about one second of data without a per-row fsync that would
# cap the ingest rate. The price on an SD card (bench/RESULTS.md): each fsync rewrites the
# partly filled last page, ~4 KiB per bench per second. A cut of the Pi alone costs nothing
# whatever the interval (the restarted banc.py asks the ESPs to replay the gap, docs/protocole.md §6);
# a site whose benches stay powered when the Pi goes down may raise it (docs/configuration.md).
# When config.json is saved is the core's decision (recorder.SUMMARY_SAVE_INTERVAL_S). The
# fsyncs of all the benches fall on one grid of the monotonic clock (recorder.sync_due), so
# the file system batches them into one journal commit.
KEEPALIVE_S = 20
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
READ_BURST = 64  # packets read back to back (a few ms) before the periodic work gets a turn
SHUTDOWN_MQTT_TIMEOUT_S = 3.0

_ERRNO_FR = {
    errno.ENOSPC: "disque plein",
    errno.EDQUOT: "quota disque dépassé",
    errno.EROFS: "disque en lecture seule",
    errno.EACCES: "permission refusée",
    errno.EPERM: "opération non permise",
    errno.EFBIG: "fichier trop gros",
    errno.EIO: "erreur d'entrée/sortie",
    errno.ENOENT: "fichier disparu",
}


def describe_os_error(exc: BaseException) -> str:
    """Short French description of a file error for an operator alert."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FR:
        return _ERRNO_FR[exc.errno]
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:60]


# =========================================================================== recorder (the executor)


class Recorder:
    """One test's records: carries out what the RecorderCore decides, on the test folder's files.

    Fed by the MQTT callbacks: each handler asks the core (recorder.RecorderCore, no I/O)
    what the message means and applies the effects — rows and journal lines through
    AppendFile (journal lines fsynced), config.json through utils (atomic, locked), alerts
    through `alert` (a French text for bancN/security), logs. A write refused by the OS,
    a refused summary and the watch over deleted files are reported back to the core, which
    answers with the effects that follow. `blocked` (the core's) is True while something
    waits in memory: the process then holds the acknowledgements, so the broker keeps those
    messages. `clock` gives the wall time of receipt and `mono` the monotonic time.
    """

    def __init__(
        self,
        store: Store,
        folder: Path,
        banc: str,
        serial: str,
        step: int,
        alert: Callable[[str], None],
        clock: Callable[[], datetime] = record.now_local,
        mono: Callable[[], float] = time.monotonic,
        writer: Callable[[int, bytes], int] = os.write,
        fsync_interval_s: float = settings_module.FSYNC_INTERVAL_S,
        bms_timeout_s: float = settings_module.BMS_TIMEOUT_S,
        command: Callable[[str], None] = lambda text: None,
        ri_plausible_ohm: tuple[float, float] = record.RI_PLAUSIBLE_OHM_DEFAULT,
    ) -> None:
        self.store = store
        self.folder = Path(folder)
        self.banc = banc
        self.serial = serial
        self.alert = alert
        self.command = command
        self.clock = clock
        self.mono = mono
        self.core = RecorderCore(banc, step, fsync_interval_s=fsync_interval_s, bms_timeout_s=bms_timeout_s,
                                 start_s=mono(), ri_plausible_ohm=ri_plausible_ohm)
        self.data = AppendFile(self.folder / record.DATA_CSV_FILE, record.DATA_CSV_HEADER, writer)
        self.rejected = AppendFile(self.folder / record.REJECTED_CSV_FILE, record.REJECTED_CSV_HEADER, writer)
        self.journal = AppendFile(self.folder / record.EVENTS_FILE, (), writer, durable=True)
        self.files = {recorder.JOURNAL: self.journal, recorder.DATA: self.data, recorder.REJECTED: self.rejected}
        self.next_restore = 0.0  # monotonic time of the next attempt to put deleted files back

    # ------------------------------------------------------------------ the core's state

    @property
    def step(self) -> int:
        """The phase the test has reached."""
        return self.core.step

    @property
    def ended(self) -> Optional[int]:
        """5 or 9 once recorded (nothing more is recorded), else None."""
        return self.core.ended

    @property
    def blocked(self) -> bool:
        """True while a record waits in memory (the disk refused it): acknowledgements must wait."""
        return self.core.blocked

    @property
    def ignored_after_end(self) -> int:
        """Messages that arrived after the end of the test."""
        return self.core.ignored_after_end

    def _now(self) -> Instant:
        return Instant(self.clock(), self.mono())

    # ------------------------------------------------------------------ start

    def open(self, config: dict[str, Any], state: Optional[record.RecordState] = None,
             snapshot: Optional[datafile.FolderSnapshot] = None) -> None:
        """Open the files (torn tails cut) and restore seq and counters from the rebuilt summary (raises OSError).

        `snapshot` is the folder as banc.py's start read it (read here when not given): data.csv
        is not read again, only the end of each file is looked at when it is opened.
        """
        if snapshot is None:
            snapshot = datafile.read_folder(self.folder)
        for target in self.files.values():
            target.open()
        # The whole file, read once: the last seq and uptime of the newest line (a replayed line may
        # be last in the file) and the seqs the current ESP boot still misses.
        counts = snapshot.counts
        width = snapshot.data.width or len(record.DATA_CSV_HEADER)
        boots = state.esp_boots if state is not None else []
        boot = len(boots) - 1 if boots else None
        lost = [(first, last) for lost_boot, first, last in (state.seq_lost_spans if state is not None else ())
                if lost_boot == boot]
        # Each with the phase it was measured in: a line replayed after a restart goes back to its own phase.
        holes = [(a, b, counts.hole_steps.get(a)) for a, b in counts.holes.holes
                 if not any(first <= a and b <= last for first, last in lost)]
        self.core.resume(config, state.recent_ri if state is not None else (), rows=max(0, snapshot.data.lines - 1),
                         rejected_rows=snapshot.rejected_rows, last_seq=counts.last_seq,
                         now=self._now(), boots=boots, last_uptime_ms=counts.last_uptime_ms, holes=holes,
                         recent=counts.recent_lines(), last_row_step=counts.last_step,
                         data_width=width)
        if width != len(record.DATA_CSV_HEADER):
            logger.info("data.csv of the earlier version (%d columns): its header is kept", width)
        if holes:
            logger.info("data.csv misses %d seqs of the current ESP boot: asked for again",
                        sum(b - a + 1 for a, b, _step in holes))
        if self.data.torn:
            now = self._now()
            self._apply(self.core.reject(now, self.core.topics.bms_data,
                                         "ligne incomplète en fin de data.csv (arrêt brutal)", self.data.torn), now)
        if self.rejected.torn:
            logger.warning("torn line removed from rejected.csv: %s", safe_text(self.rejected.torn))
        if self.journal.torn:
            logger.warning("torn line removed from %s: %s", record.EVENTS_FILE, safe_text(self.journal.torn))
        logger.info("data.csv: %d rows, last seq %s; rejected.csv: %d rows", self.core.counters["rows_count"],
                    self.core.seq.last, self.core.counters["rejected_count"])

    # ------------------------------------------------------------------ messages and time

    def handle_bms(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/bms/data message: its row is handed to the OS before this returns."""
        now = self._now()
        self._apply(self.core.on_bms(payload, redelivered, now), now)

    def handle_replay(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/bms/replay message: a line the ESP re-sent, written (once) before this returns."""
        now = self._now()
        self._apply(self.core.on_replay(payload, redelivered, now), now)

    def backlog_received(self) -> None:
        """The marker came back: lines from now on are live (samples of the ESP's clock)."""
        self.core.backlog_received(self._now())

    def step_to_announce(self) -> Optional[int]:
        """The step to announce to the ESP now, or None to wait (the core decides)."""
        return self.core.announce_step(self._now())

    def handle_message(self, topic: str, payload: bytes, redelivered: bool = False, retained: bool = False) -> bool:
        """One message on one of the ESP's topics, handled whatever happens (then it can be acknowledged).

        A retained copy on a news topic is rejected, never acted on; a message whose handling
        raised is rejected as bad input. False when the topic is not one the recorder takes.
        """
        handler = {self.core.topics.bms_data: self.handle_bms, self.core.topics.bms_replay: self.handle_replay,
                   self.core.topics.step: self.handle_step, self.core.topics.ri_results: self.handle_ri,
                   self.core.topics.security: self.handle_security}.get(topic)
        if handler is None:
            return False
        try:
            if protocol.is_stale_retained(topic, retained):
                self.handle_retained(topic, payload)
            else:
                handler(payload, redelivered)
        except Exception as exc:
            # One message the handler cannot take must never be redelivered for ever and stall the flow.
            try:
                self.handle_failure(topic, payload, exc)
            except Exception:
                logger.exception("message on %s not handled, and not recorded as rejected", safe_text(topic, 100))
        return True

    def handle_retained(self, topic: str, payload: bytes) -> None:
        """A retained copy on a news topic: rejected, never acted on."""
        now = self._now()
        self._apply(self.core.on_retained(topic, payload, now), now)

    def handle_failure(self, topic: str, payload: bytes, error: BaseException) -> None:
        """A message whose handling raised: rejected as bad input."""
        now = self._now()
        self._apply(self.core.on_failure(topic, payload, error, now), now)

    def handle_step(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/step message: a new step is in the journal, fsynced, before this returns."""
        now = self._now()
        self._apply(self.core.on_step(payload, redelivered, now), now)

    def handle_ri(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/ri/results message: its journal line is fsynced before this returns."""
        now = self._now()
        self._apply(self.core.on_ri(payload, redelivered, now), now)

    def handle_security(self, payload: bytes, redelivered: bool = False) -> None:
        """A bancN/security message (ours or the ESP's): its journal line is fsynced before this returns."""
        now = self._now()
        self._apply(self.core.on_security(payload, now), now)

    def tick(self, connected_since: Optional[float]) -> None:
        """Periodic work (main thread): folder watch, then what the core's clock asks for."""
        self.check_folder()
        now = self._now()
        self._apply(self.core.tick(now, connected_since), now)

    def flush_all(self) -> bool:
        """One attempt to write everything that waits; True when all is on disk (fsynced)."""
        now = self._now()
        self._apply(self.core.flush(now), now)
        return self.core.all_written()

    def close(self) -> int:
        """Close the files; return the bytes that could not be written."""
        self.core.close()
        return sum(target.close() for target in self.files.values())

    # ------------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect], now: Instant) -> None:
        """Carry the effects out in order; what the core answers to an outcome comes right after its effect."""
        queue = collections.deque(effects)
        while queue:
            outcome = self._carry_out(queue.popleft())
            if outcome is not None:
                queue.extendleft(reversed(self.core.report(outcome, now)))

    def _carry_out(self, effect: Effect) -> Optional[Outcome]:
        if isinstance(effect, Append):
            target = self.files[effect.file]
            dropped_before = target.dropped_rows
            if target.append(effect.data):
                return None
            return self._refused(effect.file, dropped=target.dropped_rows > dropped_before)
        if isinstance(effect, Log):
            logger.log(effect.level, effect.message)
        elif isinstance(effect, Alert):
            self.alert(effect.text)
        elif isinstance(effect, Command):
            self.command(effect.text)
        elif isinstance(effect, Sync):
            self.data.sync()
            self.rejected.sync()
        elif isinstance(effect, Retry):
            target = self.files[effect.file]
            rows = target.pending_rows
            if not target.flush_pending():
                return self._refused(effect.file)
            return CaughtUp(effect.file, rows, target.dropped_rows)
        else:
            return self._save_summary(effect)
        return None

    def _refused(self, name: str, dropped: bool = False) -> Refused:
        exc = self.files[name].error
        return Refused(name, describe_os_error(exc) if exc else "écriture partielle", str(exc or ""), dropped)

    def _save_summary(self, effect: SaveSummary) -> Outcome:
        """config.json (and the bench's step in bancs_config.json), each written atomically under its lock."""
        try:
            was_missing = record.read_summary_file(self.folder) is None
            if effect.capacity_ah is not None and effect.energy_wh is not None and effect.last_row_at is not None:
                self.store.update_config_bms(self.folder, effect.capacity_ah, effect.energy_wh, effect.last_row_at,
                                        effect.counters)
            else:
                self.store.update_config_counters(self.folder, effect.counters)
            if effect.bench_step is not None:
                self.store.update_bancs_config_current_step(self.banc, effect.bench_step)
        except (OSError, ValueError) as exc:
            return SummaryRefused(describe_os_error(exc), str(exc))
        return SummarySaved(was_missing)

    # ------------------------------------------------------------------ files deleted under us

    def check_folder(self) -> None:
        """A test folder or file deleted under us: put it back from our open descriptors and tell the core.

        The core alerts and holds the acknowledgements until the files are back: rows
        written meanwhile live only in the deleted file, which a kill would lose.
        """
        now = self._now()
        if self.core.restore_pending and now.mono_s < self.next_restore:
            return
        removed = [target for target in self.files.values() if target.removed()]
        if not removed:
            if self.core.restore_pending:
                self._apply(self.core.report(FilesRestored(()), now), now)
            return
        folder_gone = not self.folder.is_dir()
        try:
            restored = tuple((target.path.name, target.restore()) for target in removed)
        except OSError as exc:
            self.next_restore = now.mono_s + WRITE_RETRY_INTERVAL_S
            names = tuple(target.path.name for target in removed)
            self._apply(self.core.report(RestoreFailed(names, describe_os_error(exc), str(exc)), now), now)
            return
        self._apply(self.core.report(FilesRestored(restored, folder_gone), now), now)


# =========================================================================== process


def discard_stale_session(settings: environment.Settings, client_id: str, timeout_s: float = 3.0) -> bool:
    """Connect once with a clean session under `client_id`, dropping what the broker queued for it.

    Used before a NEW test: a bench's session may still hold messages of an older test
    whose banc.py died; they must not land in the new test's data.csv. (A separate clean
    connection rather than clean_start on the first persistent one: Mosquitto 2.0 does not
    save a session that began with clean_start in its persistence file, so a broker crash
    would then lose the test's queued messages.)
    """
    client = protocol.make_client(client_id, settings, v5=True)
    done = {"ok": False}
    client.on_connect = lambda *args: done.update(ok=True)
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=KEEPALIVE_S,
                       **protocol.connect_options(persistent=False))
    except OSError as exc:
        logger.warning("broker unreachable, stale session not checked: %s", exc)
        return False
    deadline = time.monotonic() + timeout_s
    while not done["ok"] and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    return done["ok"]


class BancProcess:
    """The running banc.py: MQTT client, callbacks, network loop with periodic work, shutdown.

    Everything runs in the main thread: the network is served with a short select() timeout
    and the periodic work runs between calls. The client speaks MQTT v5 with manual
    acknowledgements: each QoS 1 message is acknowledged after its callback once its record
    is written (rows in the page cache, journal events fsynced) — the PUBACK leaves with the
    next write, at the latest after a read burst of READ_BURST packets — or later, in order,
    when the disk accepts what it refused; meanwhile the broker stops sending after
    RECEIVE_MAXIMUM unacknowledged messages and keeps the rest. What a crash leaves written
    but unacknowledged comes back with the DUP flag and is recognised (seq, step already
    passed, Ri result already in the journal). A signal handler only sets a flag that the
    loop reads within TICK_S.
    """

    def __init__(self, store: Store, banc: str, serial: str, folder: Path, step: int, resumed: bool,
                 settings: environment.Settings) -> None:
        self.store = store
        self.settings = settings
        self.banc = banc
        self.serial = serial
        self.folder = folder
        self.resumed = resumed
        self.topics = protocol.topics(banc)
        self.client_id = f"banc_script_{banc}"
        self.recorder = Recorder(store, folder, banc, serial, step, self.send_alert,
                                 fsync_interval_s=self.settings.fsync_interval_s,
                                 bms_timeout_s=self.settings.bms_timeout_s, command=self.send_command,
                                 ri_plausible_ohm=ri_plausible_range(store, serial))
        self.client = protocol.make_client(self.client_id, self.settings, persistent=True, v5=True,
                                           will=(self.topics.banc_status, protocol.STATUS_OFFLINE))
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_unsubscribe = self._on_unsubscribe
        self.held_acks: list[tuple[int, int]] = []  # (mid, qos) of messages whose record waits in memory
        self.connected_since: Optional[float] = None
        self.sync_token: Optional[str] = None
        self.announced = False
        self.backlog_in = False  # our marker came back: the step is announced once the core says which
        self.unsubscribed = False
        self.stop_signal: Optional[int] = None
        self.next_connect_at = 0.0
        self.reconnect_delay_s = RECONNECT_MIN_S
        self.connect_failures = 0
        self.messages_in = 0

    # ------------------------------------------------------------------ MQTT callbacks (never raise)

    def send_alert(self, text: str) -> None:
        """Publish a security alert (kept by paho and sent once the broker is back)."""
        try:
            protocol.publish(self.client, self.topics.security, protocol.encode_security(text))
        except Exception:  # an alert must never take the process down
            logger.exception("security alert not published: %s", text)

    def send_command(self, text: str) -> None:
        """Publish a command to the ESP (a replay request), kept by paho until the broker is back."""
        try:
            protocol.publish(self.client, self.topics.command, text)
            logger.info("asked the ESP: %s", text)
        except Exception:
            logger.exception("command not published: %s", text)

    def _on_connect(self, client: Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Optional[Properties]) -> None:
        try:
            if reason_code.is_failure:
                logger.error("broker refused the connection: %s", reason_code)
                return
            # Re-subscribe on every connection: a broker that lost its state forgets them.
            protocol.subscribe_all(client, protocol.banc_process_subscriptions(self.banc))
            protocol.publish(client, self.topics.banc_status, protocol.STATUS_ONLINE)
            if not self.backlog_in:
                # Comes back after everything the broker queued for us before it: the backlog.
                self.sync_token = f"{os.getpid()}-{time.monotonic_ns()}"
                protocol.publish(client, self.topics.sync, self.sync_token)
            self.connected_since = time.monotonic()
            self.reconnect_delay_s = RECONNECT_MIN_S
            self.connect_failures = 0
            logger.info("connected to the broker (session present: %s)", flags.session_present)
        except Exception:
            logger.exception("on_connect failed")

    def _on_disconnect(self, client: Client, userdata: object, flags: DisconnectFlags, reason_code: ReasonCode,
                       properties: Optional[Properties]) -> None:
        try:
            self.connected_since = None
            # Their ids mean nothing on the next connection: the broker re-sends those messages.
            self.held_acks.clear()
            if reason_code.is_failure:
                logger.warning("broker connection lost (%s); reconnecting", reason_code)
        except Exception:
            logger.exception("on_disconnect failed")

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        self.messages_in += 1
        try:
            if message.topic == self.topics.sync:
                self._handle_sync(bytes(message.payload))
            elif not self.recorder.handle_message(message.topic, bytes(message.payload), bool(message.dup),
                                                  bool(message.retain)):
                logger.warning("message on unexpected topic %s ignored", safe_text(message.topic, 100))
            self._announce()
        except Exception:
            # Never raise in a callback; the message is acknowledged all the same (handle_message
            # already recorded any failure of the recorder's own).
            logger.exception("message on %s: after-work failed", safe_text(message.topic, 100))
        try:
            self._acknowledge(message.mid, message.qos)
        except Exception:
            logger.exception("acknowledgement failed")

    def _acknowledge(self, mid: int, qos: int) -> None:
        """Acknowledge now when every record is written, else once they are (in order)."""
        if qos == 0:
            return
        if self.held_acks or self.recorder.blocked:
            self.held_acks.append((mid, qos))
            self.release_acks()
            return
        self.client.ack(mid, qos)

    def release_acks(self) -> None:
        """Acknowledge the held messages once the disk has taken what they carried."""
        if self.recorder.blocked or not self.held_acks:
            return
        held, self.held_acks = self.held_acks, []
        for mid, qos in held:
            self.client.ack(mid, qos)
        logger.info("%d held messages acknowledged", len(held))

    def _handle_sync(self, payload: bytes, redelivered: bool = False) -> None:
        """Our marker came back: the backlog is in; announce the step the test has really reached."""
        if self.backlog_in or payload.decode("ascii", "replace") != self.sync_token:
            return  # an older process's marker, or a second copy
        self.backlog_in = True
        self.recorder.backlog_received()
        logger.info("backlog received at step %d", self.recorder.step)

    def _announce(self) -> None:
        """Once the backlog is in and the core knows the ESP's phase (or waited for it): announce the step, once."""
        if self.announced or not self.backlog_in:
            return
        if self.recorder.ended is not None:
            self.announced = True
            return
        step = self.recorder.step_to_announce()
        if step is None:
            return
        self.announced = True
        if step in protocol.PHASES:
            protocol.publish(self.client, self.topics.command, protocol.encode_command(step))
            logger.info("announced step %d on %s", step, self.topics.command)

    def _on_unsubscribe(self, client: Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                        properties: Optional[Properties]) -> None:
        self.unsubscribed = True

    # ------------------------------------------------------------------ network

    def _network(self, timeout_s: float) -> None:
        """Let paho work for up to `timeout_s`; (re)connect with a capped backoff when there is no connection.

        paho's "external event loop" API (select + loop_read/loop_write/loop_misc) rather than
        loop(): loop() sets up a wake-up socket pair for threaded use that costs two extra
        system calls per message; single-threaded, paho writes each PUBACK directly.
        """
        sock = self.client.socket()
        if sock is not None:
            client = self.client
            try:
                # Writing is tried after every read anyway (the acknowledgements queued by the callbacks).
                readable, _, _ = select.select([sock], [sock] if client.want_write() else [], [], timeout_s)
            except (OSError, ValueError):  # socket closed under us: loop_read reports the loss
                readable = [sock]
            rc = MQTT_ERR_SUCCESS
            if readable:
                # paho reads one packet per loop_read(); while messages keep coming (a backlog
                # after a restart), read on without a select() and loop_misc() per message.
                for _ in range(READ_BURST):
                    before = self.messages_in
                    rc = client.loop_read()
                    if rc != MQTT_ERR_SUCCESS or self.messages_in == before or client.socket() is None:
                        break
            if rc == MQTT_ERR_SUCCESS and client.want_write() and client.socket() is not None:
                rc = client.loop_write()
            if rc == MQTT_ERR_SUCCESS and client.socket() is not None:
                rc = client.loop_misc()
            if rc != MQTT_ERR_SUCCESS or client.socket() is None:
                # paho closed the socket (and called on_disconnect): retry after the backoff.
                self.next_connect_at = time.monotonic() + self.reconnect_delay_s
                self.reconnect_delay_s = min(self.reconnect_delay_s * 2, RECONNECT_MAX_S)
            return
        now = time.monotonic()
        if now < self.next_connect_at:
            time.sleep(min(timeout_s, self.next_connect_at - now))
            return
        try:
            self.client.reconnect()  # TCP + CONNECT; the CONNACK arrives in loop_read()
        except Exception as exc:  # refused, unreachable, DNS...: never fatal
            self.connect_failures += 1
            if self.connect_failures == 1 or self.reconnect_delay_s >= RECONNECT_MAX_S:
                logger.warning("broker %s unreachable: %s (retry in %.0f s)",
                               self.settings.mqtt_host, exc, self.reconnect_delay_s)
            self.next_connect_at = now + self.reconnect_delay_s
            self.reconnect_delay_s = min(self.reconnect_delay_s * 2, RECONNECT_MAX_S)

    def _pump(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Run the network until `done()` or `timeout_s`; return done()."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            if self.client.socket() is None:
                return done()
            self._network(0.05)
        return done()

    # ------------------------------------------------------------------ main loop

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the handler may interrupt the main thread anywhere.
        self.stop_signal = signum

    def run(self) -> int:
        """Connect, serve until step 5/9 or a signal, shut down; return the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if not self.resumed:
            discard_stale_session(self.settings, self.client_id)
        options = protocol.connect_options(persistent=True)
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=KEEPALIVE_S, **options)
        # No sd_notify here: banc.py is the kiosk's child and inherits its NOTIFY_SOCKET;
        # notifying would feed the kiosk's systemd watchdog on its behalf.
        next_tick = 0.0
        while True:
            self._network(min(TICK_S, max(0.0, next_tick - time.monotonic())) if next_tick else TICK_S)
            if self.stop_signal is not None:
                return self._shutdown_on_signal()
            if self.recorder.ended is not None and not self.recorder.blocked:
                return self._finish(self.recorder.ended)
            now = time.monotonic()
            if now >= next_tick:
                # Ticks on the grid of the monotonic clock, the same in every banc.py of the Pi:
                # their periodic fsyncs (recorder.sync_due) land in the same instant, one
                # journal commit of the file system for all the benches.
                next_tick = (math.floor(now / TICK_S) + 1) * TICK_S
                try:
                    self.recorder.tick(self.connected_since)
                    self.release_acks()
                    self._announce()
                except Exception:
                    logger.exception("periodic work failed")

    def _publish_offline(self) -> None:
        if self.connected_since is None:
            return
        try:
            info = protocol.publish(self.client, self.topics.banc_status, protocol.STATUS_OFFLINE)
            self._pump(info.is_published, SHUTDOWN_MQTT_TIMEOUT_S)
        except Exception:
            logger.exception("offline status not published")

    def _finish(self, step: int) -> int:
        """Step 5 or 9 is in the journal: write the views, close the files, leave the broker; exit code 0."""
        logger.info("test %s at step %d", "finished" if step == protocol.STEP_FINISHED else "stopped", self.recorder.step)
        while not self._close_views(step):
            # The disk refuses the summary: keep trying (the alerts are out); the network keeps
            # running so they reach the kiosk. The test is already finished in the journal.
            if self.stop_signal is not None:
                break
            deadline = time.monotonic() + WRITE_RETRY_INTERVAL_S
            while time.monotonic() < deadline:
                self._network(TICK_S)
        if step == protocol.STEP_FINISHED and self.stop_signal is None:
            self._conclude()
        self.release_acks()
        lost = self.recorder.close()
        if self.recorder.ignored_after_end:
            logger.info("%d messages after the end ignored", self.recorder.ignored_after_end)
        self._publish_offline()
        # The test is over: stop the broker queueing this bench's messages for a session
        # nobody will read (after 9 they would land in the next day's rows, timed wrongly).
        if self.connected_since is not None:
            self.unsubscribed = False
            self.client.unsubscribe([topic for topic, _ in protocol.banc_process_subscriptions(self.banc)])
            self._pump(lambda: self.unsubscribed, SHUTDOWN_MQTT_TIMEOUT_S)
        self.client.disconnect()
        if lost:
            logger.error("%d bytes of data could not be written", lost)
            return EXIT_ERROR
        return EXIT_OK

    def _conclude(self) -> None:
        """The test is finished and the bench free: record the verdict, then start the certificate's process.

        Neither can undo the finish: a failure is logged and told to the kiosk, and whoever
        next meets the finished test without a verdict or certificate concludes it.
        """
        from banclfp.verdict import (
            conclude as verdict,  # numpy and the report's modules: only a test that finishes pays for them
            grading,
        )

        try:
            result = verdict.conclude(self.store, self.folder)
        except grading.GradingError as exc:
            logger.error("test finished without a verdict: %s", exc)
            self.send_alert(f"Test terminé SANS classement : {exc}")
            return
        except Exception as exc:  # the finish stands; the kiosk retries the conclusion
            logger.exception("verdict not recorded")
            self.send_alert(f"Test terminé, verdict non enregistré ({describe_os_error(exc)}) : nouvel essai automatique")
            return
        logger.info("verdict %s: %s", result.grade, result.reason)
        alert = verdict.alert_text(result)
        if alert is not None:
            # A final verdict (the kiosk retries nothing), but no grade: a person must look at the data.
            logger.warning("the data of this test cannot support a grade: %s", result.reason)
            self.send_alert(alert)
        try:
            child = verdict.start_certificate(self.folder)
        except OSError as exc:
            logger.error("certificate process not started: %s", exc)
            return
        logger.info("certificate being written by report.py (pid %d)", child.pid)

    def _close_views(self, step: int) -> bool:
        """Everything written, config.json shows the end and (after 5) the bench is free again."""
        if not self.recorder.flush_all():
            return False
        if step == protocol.STEP_FINISHED:
            try:
                self.store.reset_banc_config(self.banc)
            except (OSError, ValueError) as exc:
                logger.error("bench not freed in bancs_config.json: %s (retrying)", exc)
                return False
        return True

    def _shutdown_on_signal(self) -> int:
        """SIGTERM/SIGINT: not a test end; close cleanly, keep the session for the restart."""
        logger.info("signal %d: closing (the test stays resumable at step %d)", self.stop_signal, self.recorder.step)
        self._publish_offline()
        # From here no message is processed, so none is acknowledged: what the broker still
        # holds (and every held message) is delivered to the next banc.py through the session.
        self.client.disconnect()
        for _ in range(3):
            if self.recorder.flush_all():
                break
            time.sleep(0.5)
        lost = self.recorder.close()
        if lost:
            logger.warning("%d bytes not written before exit: never acknowledged, the broker re-sends them", lost)
        return EXIT_OK


# =========================================================================== entry point


def ri_plausible_range(store: Store, serial: str) -> tuple[float, float]:
    """The Ri values a battery of this serial can give (grading.json's model); the default when the file is unusable."""
    from banclfp.verdict import grading

    try:
        return grading.ri_plausible_range(store.static.load_grading_rules(), serial)
    except grading.GradingError as exc:
        logger.error("%s: Ri plausibility from the default range", exc)
        return record.RI_PLAUSIBLE_OHM_DEFAULT


def _fail(message: str, code: int) -> int:
    print(f"banc.py: {message}", file=sys.stderr)
    return code


def validate_args(store: Store, argv: Sequence[str]) -> tuple[Optional[tuple[str, str]], str]:
    """((banc, serial), "") for valid arguments, else (None, one-line reason)."""
    if len(argv) != 2:
        return None, "usage: banc.py bancN SERIAL"
    banc_arg, serial = argv
    if not store.is_valid_banc(banc_arg):
        return None, f"banc invalide: {safe_text(banc_arg, 40)} (attendu banc1..banc{store.num_bancs})"
    if not is_valid_serial(serial):
        return None, f"numéro de série invalide: {safe_text(serial, 40)} (motif {SERIAL_PATTERN})"
    return (store.normalize_banc(banc_arg), serial), ""


def check_bench(store: Store, banc: str, serial: str, now: datetime,
                settings: Optional[environment.Settings] = None) -> Optional[tuple[str, int]]:
    """Why this test must not run here ((message, exit code)), or None (reads bancs_config.json and the folders)."""
    state = store.load_bancs_config()
    for entry in state.bancs:
        if not entry.occupied:
            continue
        pending = entry.serial_pending
        name = entry.banc
        if name == banc and pending is not None and not record.same_serial(pending, serial):
            return f"{banc} est occupé par {safe_text(pending, 40)}", EXIT_BENCH_BUSY
        if name != banc and record.same_serial(pending, serial):
            return f"{safe_text(serial, 40)} est déjà en test sur {name}", EXIT_BENCH_BUSY
    latest = store.latest_test(serial)
    if (latest is not None and latest.finished and latest.last_activity is not None
            and not business_hours.is_past_business_hours(latest.last_activity, now)):
        if store.get_banc_for_serial(serial, state) == banc:
            # Step 5 was recorded but the bench was not freed before a crash: finish the transition.
            store.reset_banc_config(banc)
        return (f"{safe_text(serial, 40)} a terminé un test le {latest.last_activity:%d/%m/%Y %H:%M} : "
                    f"nouveau test après {business_hours.BUSINESS_HOURS_BEFORE_RETEST:g} h ouvrées", EXIT_TOO_EARLY)
    if settings is not None and settings.lab_db is not None:
        return _check_lab(settings, serial, now, latest.last_activity if latest is not None else None)
    return None


def _check_lab(settings: environment.Settings, serial: str, now: datetime, local_s: Optional[datetime]) -> Optional[tuple[str, int]]:
    """The 48 business hours across the lab: a test finished on another Pi refuses this one (2 s at most)."""
    from banclfp.lab import history as lab_history  # psycopg only for a Pi of a lab

    found, note = lab_history.latest_finished(serial, settings)
    if note:
        logger.warning("48 h rule: %s", note)
        print(f"banc.py : {note}", file=sys.stderr)
    site, _, where = found.where.rpartition(":") if found is not None else ("", "", "")
    if found is None or not site or site == settings.lab_site:
        return None  # this Pi's own tests were checked above
    if local_s is not None and local_s >= found.ended:
        return None
    if business_hours.is_past_business_hours(found.ended, now):
        return None
    return (f"{safe_text(serial, 40)} a terminé un test le {found.ended.astimezone(record.LOCAL_TZ):%d/%m/%Y %H:%M} "
            f"sur {site} ({where}) : nouveau test après {business_hours.BUSINESS_HOURS_BEFORE_RETEST:g} h ouvrées",
            EXIT_TOO_EARLY)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one test: `banc.py bancN SERIAL`; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        return _fail(f"réglage invalide: {exc}", EXIT_USAGE)
    store = Store.from_settings(settings)
    valid, reason = validate_args(store, args)
    if valid is None:
        return _fail(reason, EXIT_USAGE)
    banc, serial = valid
    try:
        lock_fd = store.acquire_banc_lock(banc)
    except OSError as exc:
        return _fail(f"verrou {store.banc_lock_path(banc)} impossible: {exc}", EXIT_ERROR)
    if lock_fd is None:
        return _fail(f"un banc.py tourne déjà pour {banc}", EXIT_ALREADY_RUNNING)

    logs.setup_logging("banc.py", store.home)
    try:
        now = record.now_local()
        refusal = check_bench(store, banc, serial, now, settings)
        if refusal is not None:
            logger.error("refused: %s", refusal[0])
            return _fail(refusal[0], refusal[1])
        folder, resumed = store.find_or_create_test_folder(banc, serial, now)
        snapshot = datafile.read_folder(folder)  # the folder read once: everything at start-up uses it
        state, config = store.open_test_record(folder, banc, serial, now, snapshot)
        if state.serial:
            serial = state.serial  # the battery's serial as first scanned: one spelling in every file
        step = state.step if state.step in protocol.PHASES and not state.finished else 1
        if resumed:
            record.append_event(folder, record.ResumeEvent(record.event_time(now)))
        store.create_data_csv(folder)
        process = BancProcess(store, banc, serial, folder, step, resumed, settings)
        process.recorder.open(config, state, snapshot)
        store.set_banc_status(banc, record.STATUS_OCCUPIED, serial, step)
    except (OSError, ValueError) as exc:
        logger.exception("cannot start the test of %s on %s", serial, banc)
        return _fail(f"démarrage impossible: {exc}", EXIT_ERROR)
    logger.info("%s %s on %s, folder %s, step %d", "resuming" if resumed else "starting", serial, banc, folder, step)
    code = process.run()
    logger.info("exit %d", code)
    os.close(lock_fd)
    return code

