#!/usr/bin/env python3
"""The operator kiosk (docs/kiosque.md): one panel per bench, the scan workflow, the `end` and `stop` scans.

Threads: the Tk thread only touches widgets and never waits. paho's network thread parses
the topic and puts a typed message (queue_messages) on a queue; the kiosk's worker thread
(kiosk_worker.py) does every file read and write, lock, fsync and process check: scans
submitted to it come back on the same queue as decisions performed, with the benches'
file and process states. The Tk thread drains that queue with after(), a bounded batch
per tick, keeping only the latest BMS line per bench. Tests are started as `banc.py`
processes in their own session, so they outlive a restart of the kiosk.

    python ui.py              # full screen (the kiosk)
    python ui.py --windowed   # in a window, for a desk
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import queue
import signal
import sys
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Union, assert_never

import customtkinter as ctk

from banclfp.infra import environment, logs
from banclfp.infra.processes import BancSupervisor
from banclfp.kiosk.labels import LabelPrinter
from banclfp.kiosk.messages import Kind, MessageBoard, SecurityKind, classify_security, kind_of_level
from banclfp.kiosk.queue_messages import (
    BrokerLink,
    ChargeProfileLoaded,
    ChargeProfileUnusable,
    CoalescingQueue,
    JournalAlarm,
    KioskMessage,
    LabelOutcome,
    MqttBancStatus,
    MqttBms,
    MqttEspStatus,
    MqttMessage,
    MqttNurse,
    MqttSecurity,
    MqttStep,
    Outcome,
    ShowCharts,
    mqtt_message,
)
from banclfp.kiosk.scan_workflow import Action, ScanWorkflow, banc_label
from banclfp.kiosk.state import (  # re-exported: the kiosk's pure state, as the tests and tools know it
    MIN_CURRENT_FOR_ESTIMATE_A,
    NOMINAL_CAPACITY_AH,
    PHASE1_DURATION_S,
    STORAGE_SOC_PCT,
    BancRuntime,
    BancSnapshot,
    HistoryEntry,
    ResultView,
    RiView,
    banc_display,
    bench_time_left_s,
    estimate_time_left_s,
    link_explanation,
    merge_snapshot,
    message_facts,
    ri_view_from_config,
    status_display,
    takes_steps,
)
from banclfp.kiosk.widgets import BG_APP, BancDetail, BancPanel, Fonts, HistoryWindow, ResultCard, ScanBar, ScanEcho
from banclfp.kiosk.worker import (
    GraphButtonRequest,
    KioskWorker,
    OpenGraphRequest,
    RefreshRequest,
    ScanRequest,
    real_lookups,
)
from banclfp.presentation.formatting import format_duration
from banclfp.recording.store import Store
from banclfp.wire import protocol

__all__ = [
    "MIN_CURRENT_FOR_ESTIMATE_A", "NOMINAL_CAPACITY_AH", "PHASE1_DURATION_S", "STORAGE_SOC_PCT", "App", "BancRuntime",
    "CoalescingQueue", "MqttBridge", "RiView", "estimate_time_left_s", "font_scale", "grid_shape",
    "ri_view_from_config", "status_display",
]

log = logging.getLogger("banc.ui")

BANC_SCRIPT = environment.PROJECT_DIR / "banc.py"

DRAIN_INTERVAL_MS = 50
MAX_MESSAGES_PER_TICK = 500  # 10 000 msg/s of headroom; the rest waits for the next tick
# Measures are shown at most this often per bench (latest line wins): nobody reads 10 Hz
# numbers, and redrawing 16 panels 10 times a second would cost the Pi most of a core.
BMS_DISPLAY_INTERVAL_S = 0.25
ANIMATION_INTERVAL_MS = 125
EXPIRY_INTERVAL_MS = 500  # messages and notices fade on time
WATCHDOG_INTERVAL_MS = 5000  # systemd WatchdogSec must be at least 3 times this
FOCUS_CHECK_MS = 1000
BAD_PAYLOAD_LOG_INTERVAL_S = 60.0
EARLY_EXIT_S = 30.0  # a banc.py that fails within this delay after its start is reported on screen
WORKER_JOIN_S = 5.0  # at exit, after the window is gone: let a started test finish starting

# Layout: a panel is designed for 420 x 230 px; fonts scale with the real panel size.
PANEL_DESIGN_W, PANEL_DESIGN_H = 420.0, 230.0
SCAN_BAR_DESIGN_H = 56.0
MIN_SCALE, MAX_SCALE = 0.7, 2.4
WINDOWED_W, WINDOWED_H = 1280, 800  # --windowed without --geometry, on a screen that has room for it
SCREEN_MARGIN_W, SCREEN_MARGIN_H = 16, 64  # a window manager's frame and panel
MIN_WINDOW_W, MIN_WINDOW_H = 320, 240


# =========================================================================== pure helpers


def grid_columns(num_bancs: int) -> int:
    """Columns of the bench grid: 1 bench -> 1, up to 4 -> 2, up to 9 -> 3, beyond -> 4."""
    if num_bancs <= 1:
        return 1
    if num_bancs <= 4:
        return 2
    if num_bancs <= 9:
        return 3
    return 4


def grid_shape(num_bancs: int) -> tuple[int, int]:
    """(columns, rows) of the bench grid."""
    cols = grid_columns(num_bancs)
    return cols, max(1, math.ceil(num_bancs / cols))


def windowed_size(screen_w: int, screen_h: int) -> tuple[int, int]:
    """The size of a --windowed kiosk: 1280 x 800, or less so that it fits the screen it opens on, frame included."""
    return (max(MIN_WINDOW_W, min(WINDOWED_W, screen_w - SCREEN_MARGIN_W)),
            max(MIN_WINDOW_H, min(WINDOWED_H, screen_h - SCREEN_MARGIN_H)))


def _fitting_scale(width_px: float, height_px: float, num_bancs: int) -> float:
    cols, rows = grid_shape(num_bancs)
    # The scan bar grows with the scale too: solve h = rows * panel_h + scan_h for the scale.
    by_width = width_px / cols / PANEL_DESIGN_W
    by_height = height_px / (rows * PANEL_DESIGN_H + SCAN_BAR_DESIGN_H)
    return min(by_width, by_height)


def font_scale(width_px: float, height_px: float, num_bancs: int) -> float:
    """Font scale so that a panel's content fits the panel at this window size."""
    return max(MIN_SCALE, min(MAX_SCALE, _fitting_scale(width_px, height_px, num_bancs)))


# =========================================================================== MQTT edge


class MqttBridge:
    """paho client in its own thread; callbacks only put typed messages (queue_messages) on the queue.

    A persistent session (docs/protocole.md §5) under one fixed id, `ui_kiosk`: what is published on
    bancX/security (QoS 1) while the kiosk or the broker restarts is kept by the broker and
    delivered when the kiosk is back. A second kiosk with the same id would take the session
    (and disconnect the first): tests give each kiosk its own id.
    """

    def __init__(self, settings: environment.Settings, sink: queue.Queue[KioskMessage],
                 client_id: str = protocol.KIOSK_CLIENT_ID) -> None:
        self.settings = settings
        self.num_bancs = settings.num_bancs
        self.sink = sink
        self.client_id = client_id
        # MQTT v5: the kiosk announces the 4 KiB maximum packet size, so it is never handed a larger message.
        self.client = protocol.make_client(client_id, settings, persistent=True, v5=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho retries forever (capped backoff) until the broker answers."""
        settings = self.settings
        self.client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=15,
                                  **protocol.connect_options(persistent=True,
                                                             session_expiry_s=protocol.KIOSK_SESSION_EXPIRY_S))
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        try:
            self.client.disconnect()
            self.client.loop_stop()
        except Exception:  # shutting down: nothing useful to do with an error
            log.debug("mqtt stop", exc_info=True)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        try:
            if reason_code.is_failure:
                log.warning("broker refused the connection: %s", reason_code)
                self.sink.put(BrokerLink(False))
                return
            protocol.subscribe_all(client, protocol.ui_subscriptions(self.num_bancs))
            log.info("connected to the broker as %s (session kept: %s)", self.client_id,
                     getattr(_flags, "session_present", "?"))
            self.sink.put(BrokerLink(True))
        except Exception:
            log.exception("on_connect")

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        try:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)
            self.sink.put(BrokerLink(False))
        except Exception:
            log.exception("on_disconnect")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            info = protocol.parse_topic(msg.topic)
            if info is None or info.banc_number > self.num_bancs:
                return
            message = mqtt_message(info, bytes(msg.payload))
            if message is not None:
                self.sink.put(message)
        except Exception:
            log.exception("on_message %r", getattr(msg, "topic", "?"))

    def publish_command_all(self, bancs: list[str], command: str) -> list[str]:
        """Publish a command on every bench's command topic; return the benches where it failed."""
        return [banc for banc in bancs if not self.publish_command(banc, command)]

    def publish_command(self, banc: str, command: str) -> bool:
        """Publish a command on one bench's command topic; False when it could not be handed to the client."""
        try:
            info = protocol.publish(self.client, protocol.topics(banc).command, protocol.encode_command(command))
        except Exception:
            log.exception("publish command to %s", banc)
            return False
        return bool(info.rc == 0)


# =========================================================================== the app


class App(ctk.CTk):
    """The kiosk window (Tk thread): widgets, focus, and what the MQTT and worker threads report."""

    def __init__(
        self, settings: environment.Settings, *, windowed: bool = False, geometry: Optional[str] = None,
        banc_script: Path = BANC_SCRIPT, start_mqtt: bool = True, mqtt_client_id: str = protocol.KIOSK_CLIENT_ID,
    ) -> None:
        ctk.set_appearance_mode("dark")
        super().__init__(fg_color=BG_APP)
        self.settings = settings
        self.store = Store.from_settings(settings)
        self.bancs = self.store.all_bancs()
        self.title("Bancs de test LFP")
        self.inbox = CoalescingQueue()
        self.runtime = {banc: BancRuntime(banc, broker_up=False) for banc in self.bancs}  # not connected yet
        self.nurse_soc: dict[str, list[Optional[int]]] = {b: [None] * protocol.NURSE_COUNT for b in self.bancs}
        self.supervisor = BancSupervisor(
            self.store.home, Path(banc_script), cwd=environment.PROJECT_DIR, early_exit_s=EARLY_EXIT_S,
            # Without systemd's NOTIFY_SOCKET: the kiosk unit accepts notifications from ui.py only.
            environment=environment.child_environment,
        )
        # The workflow belongs to the worker from here on: its lookups read files and scan processes.
        workflow = ScanWorkflow(self.settings.num_bancs, self.settings.scan_timeout_s,
                                real_lookups(self.store, self.supervisor.is_running, settings))
        self.labels: Optional[LabelPrinter] = None
        if settings.label_printer is not None:
            from banclfp.verdict import label  # numpy and the certificate's QR: only for a kiosk with a label printer

            self.labels = LabelPrinter(functools.partial(
                label.print_label, self.store, queue=settings.label_printer, min_gap_s=settings.bms_timeout_s,
                size_mm=settings.label_size_mm), self.inbox.put)
        self.worker = KioskWorker(self.store, self.bancs, workflow, self.supervisor, self.inbox,
                                  bms_timeout_s=settings.bms_timeout_s, settings=settings, labels=self.labels)
        self.broker_connected = False
        self.messages = MessageBoard(workflow.prompt())
        self.pending_requests = 0  # scans (and chart requests) the worker has not answered yet
        self.charge_duration: Optional[Callable[[float], float]] = None  # loaded by the worker
        self._bad_payload_log: dict[tuple[str, str], tuple[float, int]] = {}
        self._label_failed: dict[str, bool] = {}  # serials whose label failed: its later print is said
        self._stop_requested = False
        self._pending_bms: dict[str, MqttBms] = {}
        self._last_bms_flush = 0.0
        self._closed = False
        self._after_ids: dict[str, str] = {}
        self._ready_sent = False
        self._pending_rescale: Optional[str] = None
        self.stats = {"messages": 0, "applied": 0, "ticks": 0}

        width, height = self._size = self._initial_size(windowed, geometry)
        self.fonts = Fonts(font_scale(width, height, len(self.bancs)))
        self._build_layout()
        for banc in self.bancs:
            self.render_banc(banc)  # "reading the state" until the worker's first snapshot
        if windowed:
            self.geometry(geometry or f"{width}x{height}")
        else:
            self.geometry(f"{width}x{height}+0+0")
            self.attributes("-fullscreen", True)

        self.protocol("WM_DELETE_WINDOW", self.shutdown)
        self.bind("<Configure>", self._on_root_configure, add="+")
        # A touch anywhere must not steal the scanner's keystrokes: give the focus back to the entry.
        self.bind_all("<ButtonRelease-1>", self._on_touch, add="+")

        self.refresh_message()
        self.scan_bar.set_broker(False)
        self.worker.start()  # its first job: every bench's state, shown as soon as it is read
        if self.labels is not None:
            self.labels.start()
        self.mqtt = MqttBridge(self.settings, self.inbox, mqtt_client_id)
        if start_mqtt:
            self.mqtt.start()

        self._schedule(DRAIN_INTERVAL_MS, self.drain_queue)
        self._schedule(ANIMATION_INTERVAL_MS, self._animate)
        self._schedule(EXPIRY_INTERVAL_MS, self._expire)
        self._schedule(FOCUS_CHECK_MS, self._focus_loop)
        self._schedule(50, self._first_frame)
        self.focus_entry()

    def _schedule(self, delay_ms: int, callback: Callable[[], None]) -> None:
        """after() for the periodic loops: one pending timer per loop, remembered so that shutdown can cancel it."""
        if self._closed:
            return
        name = callback.__name__
        previous = self._after_ids.get(name)
        if previous is not None:
            # A second chain of the same loop would never be cancelled (only the last id is kept):
            # replace the pending timer (a no-op when it is the one running now).
            self.after_cancel(previous)
        self._after_ids[name] = self.after(delay_ms, callback)

    # ------------------------------------------------------------------ layout

    def _initial_size(self, windowed: bool, geometry: Optional[str]) -> tuple[int, int]:
        if geometry:
            size = geometry.split("+")[0]
            try:
                w, h = (int(v) for v in size.lower().split("x"))
                return w, h
            except ValueError:
                log.warning("ignoring bad --geometry %r", geometry)
        if windowed:
            return windowed_size(self.winfo_screenwidth(), self.winfo_screenheight())
        return self.winfo_screenwidth(), self.winfo_screenheight()
    def _build_layout(self) -> None:
        cols, rows = grid_shape(len(self.bancs))
        self.grid_columnconfigure(tuple(range(cols)), weight=1, uniform="col")
        self.grid_rowconfigure(tuple(range(rows)), weight=1, uniform="row")
        self.panels: dict[str, BancPanel] = {}
        self.result_cards: dict[str, ResultCard] = {}
        self.history_window: Optional[HistoryWindow] = None
        self.detail: Optional[BancDetail] = None  # one bench's detail view, over the grid
        # Off screen: each layout is measured on it (BancPanel.layout_needs); the last bench has the widest title.
        probe = self.layout_probe = BancPanel(self, self.bancs[-1], self.fonts)
        probe.measuring_only = True
        probe.place(x=-4000, y=-4000)
        for i, banc in enumerate(self.bancs):
            panel = BancPanel(self, banc, self.fonts, on_title_click=self.open_graph_for_banc,
                              on_link_click=self.explain_link)
            panel.on_detail = self.open_detail  # a panel too small to show everything: a touch shows the rest
            panel.probe = probe
            row, col = divmod(i, cols)
            panel.grid(row=row, column=col, sticky="nsew", padx=3, pady=3)
            self.panels[banc] = panel
        self.scan_bar = ScanBar(self, self.fonts, on_scan=self.handle_prompt, on_graph=self.on_graph_button,
                                on_acknowledge=self.acknowledge_message)
        self.scan_bar.grid(row=rows, column=0, columnspan=cols, sticky="ew")

    def _on_root_configure(self, event: tk.Event) -> None:
        if event.widget is not self:
            return
        if self._pending_rescale is not None:
            self.after_cancel(self._pending_rescale)
        self._pending_rescale = self.after(200, self._rescale)

    def _rescale(self) -> None:
        self._pending_rescale = None
        # Each panel chooses its layout from its own size (BancPanel.fit_layout); new font sizes, new choices.
        if self.fonts.rescale(font_scale(self.winfo_width(), self.winfo_height(), len(self.bancs))):
            self.layout_probe.refit()  # first: the panels measure their layouts on it
            for panel in self.panels.values():
                for key in ("phase_bar", "soc_gauge", "progress_bar_nurse"):
                    panel.widgets[key].redraw()
                panel.refit()
            for card in self.result_cards.values():
                card.refit()
            self.scan_bar.fit_message()

    # ------------------------------------------------------------------ focus, systemd

    def focus_entry(self) -> None:
        """The scanner types into the entry: keep the focus there."""
        try:
            self.scan_bar.focus_entry()
        except tk.TclError:
            pass

    def _on_touch(self, event: tk.Event) -> None:
        # Only touches in the main window: refocusing from a chart window could raise the kiosk over it.
        widget = event.widget
        try:
            if isinstance(widget, tk.Misc) and widget.winfo_toplevel() is self:
                self.after_idle(self.focus_entry)
        except tk.TclError:  # the touched widget is already destroyed (a closing window)
            pass

    def _focus_loop(self) -> None:
        try:
            focused = self.focus_get()
        except (KeyError, tk.TclError):  # focus_get fails on some internal Tk popups
            focused = None
        # Another of our windows (charts) may keep the focus: its keystrokes are forwarded to the entry.
        try:
            in_other_window = focused is not None and focused.winfo_toplevel() is not self
        except tk.TclError:
            in_other_window = False
        if focused is not self.scan_bar.entry._entry and not in_other_window:
            try:
                self.scan_bar.entry._entry.focus_force()
            except tk.TclError:
                pass
        self._schedule(FOCUS_CHECK_MS, self._focus_loop)

    def route_keys_to_entry(self, window: tk.Misc) -> None:
        """A scan typed while another of our windows has the focus still reaches the workflow."""

        def forward(event: tk.Event) -> Optional[str]:
            if event.widget is self.scan_bar.entry._entry:
                return None
            if event.keysym in ("Return", "KP_Enter"):
                self.scan_bar.submit()
                return "break"
            if event.char and event.char.isprintable():
                self.scan_bar.entry.insert("end", event.char)
                return "break"
            return None

        window.bind("<Key>", forward, add="+")

    def _first_frame(self) -> None:
        self.update_idletasks()
        try:
            # Without a window manager nobody gives the new window the keyboard: take it.
            self.scan_bar.entry._entry.focus_force()
        except tk.TclError:
            pass
        if not self._ready_sent:
            self._ready_sent = True
            environment.sd_notify("READY=1", self.settings.notify_socket)
            log.info("kiosk ready: %d benches, broker %s:%d", len(self.bancs), self.settings.mqtt_host,
                     self.settings.mqtt_port)
        self._watchdog()

    def _watchdog(self) -> None:
        # Sent from the Tk loop on purpose: if the loop freezes, systemd restarts the kiosk.
        environment.sd_notify("WATCHDOG=1", self.settings.notify_socket)
        self._schedule(WATCHDOG_INTERVAL_MS, self._watchdog)

    # ------------------------------------------------------------------ scans (answered by the worker)

    def state_known(self) -> bool:
        """Every bench's files and process have been read at least once."""
        return all(rt.known for rt in self.runtime.values())

    def _submit(self, request: Union[ScanRequest, GraphButtonRequest, OpenGraphRequest]) -> None:
        self.pending_requests += 1
        self.worker.submit(request)

    def handle_prompt(self, text: str) -> None:
        """One scan (text + Enter): the worker runs the workflow; its answer comes back on the queue."""
        self._submit(ScanRequest(text))
        self.focus_entry()

    def on_graph_button(self) -> None:
        """The Graphiques button: same as scanning `graph`."""
        self._submit(GraphButtonRequest())
        self.focus_entry()

    def open_graph_for_banc(self, banc: str) -> None:
        """Touching a bench's title opens its charts."""
        self._submit(OpenGraphRequest(banc))
        self.focus_entry()

    def explain_link(self, banc: str, link: str) -> None:
        """A link pill touched: what its colour means now, in the scan bar (a touch screen has no tooltip)."""
        self.say(link_explanation(self.runtime[banc], link, self.broker_connected), Kind.INFO, banc)
        self.focus_entry()

    # ------------------------------------------------------------------ the operator message

    def say(self, text: str, kind: Kind, banc: Optional[str] = None) -> None:
        """Show an operator message; one about a bench is withdrawn when that bench's state changes."""
        facts = message_facts(self.runtime[banc]) if banc in self.runtime else None
        self.messages.show(text, kind, time.monotonic(), banc=banc if facts else None, facts=facts)
        self.refresh_message()

    def refresh_message(self) -> None:
        """The scan bar shows the board's current message (or the workflow's prompt)."""
        text, kind = self.messages.current()
        self.scan_bar.show_message(text, kind)

    def acknowledge_message(self) -> None:
        """The operator touched the message: an alarm is acknowledged."""
        if self.messages.acknowledge():
            self.refresh_message()

    def apply_outcome(self, outcome: Outcome) -> None:
        """Show a decision the worker performed: panel changes, charts, `end`, the operator's message."""
        if outcome.answers_scan:
            self.pending_requests = max(0, self.pending_requests - 1)
            self.messages.scanned()
        if outcome.prompt:
            self.messages.prompt = outcome.prompt
        kind = kind_of_level(outcome.level)
        if outcome.action is Action.START and outcome.done:
            assert outcome.banc and outcome.serial
            self.start_test(outcome.banc, outcome.serial, outcome.start_step or 1, outcome.message)
        elif outcome.action is Action.END:
            self.send_end()
        elif outcome.action is Action.STOP:
            assert outcome.banc
            self.send_stop(outcome.banc, outcome.serial)
        elif outcome.action is Action.RESET and outcome.done:
            assert outcome.banc
            self.reset_banc(outcome.banc, outcome.message)
        elif outcome.action is Action.GRAPH and outcome.done and outcome.history:
            assert outcome.show_charts is not None
            self.open_history(outcome.serial or "?", outcome.history, outcome.show_charts, outcome.message, kind)
        elif outcome.action is Action.GRAPH and outcome.done:
            assert outcome.folder is not None and outcome.show_charts is not None
            self.open_graph(outcome.folder, outcome.show_charts, outcome.message)
        else:
            self.say(outcome.message, kind, outcome.banc)
        self.focus_entry()

    def start_test(self, banc: str, serial: str, start_step: int, message: str) -> None:
        """Seed §2 success, once the worker has marked the bench occupied and started banc.py: reset the panel."""
        rt = self.runtime[banc]
        if rt.serial != serial:  # another battery: the last line's values were not its own
            rt.line, rt.line_received_s = None, None
        rt.occupied, rt.serial, rt.file_step, rt.running, rt.unfinished = True, serial, start_step, True, False
        rt.known, rt.seen_running = True, True
        rt.step, rt.previous_step = None, None
        self.nurse_soc[banc] = [None] * protocol.NURSE_COUNT
        panel = self.panels[banc]
        panel.reset()
        panel.hide_overlay_labels()
        self.show_result(banc, None)  # the next test: the last one's card goes
        panel.show_step_quietly(start_step)
        rt.step, rt.phase_started_s = start_step, time.monotonic()
        rt.shown_stopped = False
        self.say(message, Kind.SUCCESS, banc)  # "phase 1/5": withdrawn once the bench is in another phase
        self.render_banc(banc)

    def send_end(self) -> None:
        """Seed §5: publish `end` on every bench's command topic."""
        if not self.broker_connected:
            self.say("Broker déconnecté : « end » non envoyé. Réessayez quand le broker est revenu.", Kind.ALARM)
            return
        failed = self.mqtt.publish_command_all(self.bancs, protocol.COMMAND_END)
        now = time.monotonic()
        for banc in self.bancs:
            if banc not in failed:  # `end` stops the ESP: the current of the lines received so far no longer flows
                self.runtime[banc].current_cut_s = now
                self.render_banc(banc)
        if failed:
            self.say(f"« end » non envoyé à : {', '.join(failed)}. Réessayez.", Kind.ALARM)
        else:
            log.info("end sent to %s", ", ".join(self.bancs))
            self.say(f"Fin de journée : « end » envoyé aux {len(self.bancs)} bancs.", Kind.SUCCESS)

    def send_stop(self, banc: str, serial: Optional[str]) -> None:
        """`stop` + bench + bench: publish `end` on that bench's command topic only; the others go on."""
        label = f"banc {protocol.banc_number(banc)}"
        if not self.broker_connected:
            self.say(f"Broker déconnecté : arrêt du {label} NON envoyé, le test continue. Réessayez quand le "
                     "broker est revenu.", Kind.ALARM)
            return
        if not self.mqtt.publish_command(banc, protocol.COMMAND_END):
            self.say(f"Arrêt du {label} NON envoyé (erreur MQTT, voir logs.log), le test continue. Réessayez.",
                     Kind.ALARM)
            return
        log.info("end sent to %s (stop scanned)", banc)
        resume = f" Reprise plus tard : {banc}, {serial}, {banc}." if serial else ""
        # Not tied to the bench: the step 9 that follows must not withdraw the answer before it is read.
        self.say(f"Arrêt envoyé au {label} : {serial or 'son test'} s'arrête (courant coupé).{resume}", Kind.SUCCESS)

    def reset_banc(self, banc: str, message: str) -> None:
        """A bench the worker has cleared in bancs_config.json: an empty panel."""
        rt = self.runtime[banc]
        rt.occupied, rt.serial, rt.file_step, rt.step, rt.previous_step = False, None, None, None, None
        rt.last_serial, rt.shown_stopped, rt.unfinished, rt.seen_running = None, False, False, False
        rt.line, rt.line_received_s = None, None  # the battery goes: its measures with it
        self.panels[banc].reset()
        self.say(message, Kind.SUCCESS, banc)
        self.render_banc(banc)

    def open_graph(self, folder: Path, show_charts: ShowCharts, message: str) -> None:
        """Open the report's charts of a test the worker found, or say clearly why not."""
        try:
            window = show_charts(self, folder)
            if isinstance(window, tk.Misc) and window.winfo_toplevel() is not self:
                toplevel = window.winfo_toplevel()
                self.route_keys_to_entry(toplevel)
                self._add_scan_echo(toplevel)
        except Exception as exc:
            log.exception("show_charts(%s)", folder)
            self.say(f"Graphiques non disponibles : {exc}", Kind.ALARM)
            return
        self.say(message, Kind.INFO)

    def _add_scan_echo(self, window: tk.Misc) -> None:
        # The charts cover the scan bar: a scan typed meanwhile is answered at the bottom of the charts too.
        echo = ScanEcho(window, self.fonts["message"])
        slaves = window.pack_slaves()
        if slaves:
            echo.pack(side="bottom", fill="x", before=slaves[0])
        else:
            echo.pack(side="bottom", fill="x")
        self.scan_bar.add_echo(echo)

    # ------------------------------------------------------------------ bench state

    def show_result(self, banc: str, result: Optional[ResultView]) -> None:
        """A finished bench's result card over its whole panel, until its next test starts (None hides it)."""
        card = self.result_cards.get(banc)
        panel = self.panels[banc]
        if result is None:
            if card is not None:
                card.place_forget()
            panel.set_card(None)
            return
        if card is None:
            card = ResultCard(panel, self.fonts, on_touch=lambda: self.open_graph_for_banc(banc),
                              title=f"Banc {protocol.banc_number(banc)}", on_detail=lambda: self.open_detail(banc))
            self.result_cards[banc] = card
        card.set_result(result)
        panel.set_card(card)  # over everything but the alarm's row: an alert (e.g. "terminé SANS classement") stays
        if panel.security_visible:
            panel.widgets["security"].lift()

    def open_detail(self, banc: str) -> None:
        """Everything about one bench, over the grid (a panel or card too small to show it all was touched)."""
        self.close_detail()
        detail = BancDetail(self, self.panels[banc], on_close=self._detail_closed,
                            on_graph=lambda: self._graph_from_detail(banc))
        # tk's own place: customtkinter's refuses a height, here an offset (the scan bar stays visible)
        tk.Place.place_configure(detail, in_=self, x=0, y=0, relwidth=1, relheight=1,
                                 height=-self.scan_bar.winfo_height())
        detail.lift()
        self.detail = detail
        self.focus_entry()

    def close_detail(self) -> None:
        """Take the detail view away, if one is open."""
        if self.detail is not None:
            self.detail.close()

    def _detail_closed(self) -> None:
        self.detail = None
        self.focus_entry()

    def _graph_from_detail(self, banc: str) -> None:
        self.close_detail()
        self.open_graph_for_banc(banc)

    def open_history(self, serial: str, entries: tuple[HistoryEntry, ...], show_charts: ShowCharts,
                     message: str = "", kind: Kind = Kind.INFO) -> None:
        """`graph` + a serial: every test of that battery; touching one opens its charts.

        `message` ("… Touchez un test …") is shown while the window is open and withdrawn when it closes:
        once the list is gone there is nothing left to touch.
        """
        window = HistoryWindow(self, serial, entries,
                               lambda entry: self.open_graph(entry.folder, show_charts, f"Graphiques de {entry.folder.name}."))
        self.route_keys_to_entry(window)
        self._add_scan_echo(window)
        self.history_window = window
        window.bind("<Destroy>", lambda event: self.history_closed(window, message) if event.widget is window else None,
                    add="+")
        if message:
            self.say(message, kind)

    def history_closed(self, window: tk.Misc, message: str) -> None:
        """The history window closed (Fermer, Escape, the window manager): its prompt goes with it."""
        if self.history_window is not window:
            return  # an older window: the newer one's message stays
        self.history_window = None
        if self._closed:
            return
        if message and self.messages.withdraw(message):
            self.refresh_message()

    def render_banc(self, banc: str) -> None:
        """Header, link pills and measures of a bench, from banc_display (the one derivation), at the kiosk's time."""
        rt = self.runtime[banc]
        display = banc_display(rt, time.monotonic())
        panel = self.panels[banc]
        panel.set_status(display.status_text, display.status_kind, rt.serial or rt.last_serial)
        panel.set_links(display.esp_link, display.esp_online, display.banc_link, display.banc_online)
        panel.show_measures(display.measures)
        panel.show_unrecorded_phase(display.unrecorded_phase)
        if self.messages.bench_changed(banc, message_facts(rt)):
            self.refresh_message()

    def set_broker_link(self, connected: bool) -> None:
        """The kiosk's own link to the broker: while it is down every link pill is unknown (grey), never green or
        red, and the measures age; once it is back, a message saying it was down goes."""
        self.broker_connected = connected
        self.scan_bar.set_broker(connected)
        for banc, rt in self.runtime.items():
            rt.broker_up = connected
            if not connected:  # what they said may have changed meanwhile: the retained ones come back with the link
                rt.esp_online = rt.banc_online = None
            self.render_banc(banc)
        if connected and self.messages.broker_back():
            self.refresh_message()

    def apply_snapshot(self, snapshot: BancSnapshot) -> None:
        """The worker's view of a bench's files and banc.py, merged with what MQTT said."""
        banc = snapshot.banc
        rt = self.runtime[banc]
        merge_snapshot(rt, snapshot)
        panel = self.panels[banc]
        panel.set_limits(snapshot.limits)  # the battery's grading model: its spread and temperature colours
        if rt.occupied and rt.step is None and rt.file_step in protocol.PHASES:
            # Known only from the state file (kiosk just started): show it without an animation start.
            rt.step = rt.file_step
            panel.show_step_quietly(rt.file_step)
        if banc_display(rt).interrupted and not rt.shown_stopped and rt.step in protocol.PHASES:
            panel.stop_phase(rt.step)  # interrupted: the phase reached, no animation
            rt.previous_step, rt.shown_stopped = rt.step, True
        if rt.running and rt.shown_stopped:
            rt.shown_stopped = False
        if not takes_steps(rt) and rt.step in protocol.PHASES and rt.step != protocol.STEP_FINISHED:
            # A phase animated before the state was read, on a bench with no test: nothing runs there.
            rt.step = None
            panel.clear_phase()
        self.render_banc(banc)
        if snapshot.ri_view is not None:
            panel.update_ri_diffusion_widgets(snapshot.ri_view)
        self.show_result(banc, None if rt.occupied else snapshot.result)

    def update_ri_diffusion_widgets(self, banc: str) -> None:
        """Seed §4: Ri/diffusion (diffusion at 25 °C) read again from the test's config.json, by the worker."""
        self.worker.submit(RefreshRequest(banc, reload_ri=True))

    # ------------------------------------------------------------------ queue -> widgets

    def drain_queue(self) -> None:
        """Tk thread: apply at most MAX_MESSAGES_PER_TICK queued items (the queue keeps one BMS line per bench)."""
        if self._stop_requested:
            self.shutdown()
            return
        batch: list[KioskMessage] = []
        try:
            while len(batch) < MAX_MESSAGES_PER_TICK:
                batch.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self.stats["messages"] += len(batch)
            self.stats["ticks"] += 1
            for item in batch:
                if isinstance(item, MqttBms) and item.banc in self.panels:
                    self._pending_bms[item.banc] = item  # shown below, latest line wins
                    continue
                self._apply_safely(item)
        now = time.monotonic()
        if self._pending_bms and now - self._last_bms_flush >= BMS_DISPLAY_INTERVAL_S:
            self._last_bms_flush = now
            pending, self._pending_bms = self._pending_bms, {}
            for item in pending.values():
                self._apply_safely(item)
        self._schedule(DRAIN_INTERVAL_MS if self.inbox.empty() else 1, self.drain_queue)

    def _apply_safely(self, item: KioskMessage) -> None:
        # A callback of the Tk loop never raises: one bad message (or an object that is none) is logged and dropped.
        try:
            self.apply_message(item)
            self.stats["applied"] += 1
        except Exception:
            log.exception("queued message %.200r", item)

    def _bad_payload(self, banc: str, kind: str, exc: Exception, payload: bytes) -> None:
        # Rate-limited: a bench spewing garbage at 10 Hz must not flood logs.log.
        key = (banc, kind)
        now = time.monotonic()
        last, count = self._bad_payload_log.get(key, (-math.inf, 0))
        if now - last >= BAD_PAYLOAD_LOG_INTERVAL_S:
            extra = f" ({count} more since the last report)" if count else ""
            log.warning("%s %s: ignored malformed payload %r: %s%s", banc, kind, payload[:80], exc, extra)
            self._bad_payload_log[key] = (now, 0)
        else:
            self._bad_payload_log[key] = (last, count + 1)

    def apply_message(self, item: KioskMessage) -> None:
        """Apply one queued message: a worker result, or an MQTT message to the bench's state and panel (docs/kiosque.md, « Un panneau par banc »)."""
        match item:
            case Outcome():
                self.apply_outcome(item)
            case BrokerLink():
                self.set_broker_link(item.up)
            case ChargeProfileLoaded():
                self.charge_duration = item.charge_duration
            case ChargeProfileUnusable():
                self.say(f"Profil de charge inutilisable : {item.reason}", Kind.ALARM)
            case BancSnapshot():
                if item.banc in self.panels:
                    self.apply_snapshot(item)
            case LabelOutcome():
                self.apply_label(item)
            case JournalAlarm():  # the kiosk starts: an alarm of a test under way, from its journal
                if item.banc in self.panels:
                    self.panels[item.banc].restore_alarm(item.alarm)
            case MqttBms() | MqttStep() | MqttSecurity() | MqttNurse() | MqttEspStatus() | MqttBancStatus():
                if item.banc in self.panels:
                    self.apply_mqtt(item)
            case _:
                assert_never(item)  # mypy: every kind of KioskMessage is handled above

    def apply_label(self, item: LabelOutcome) -> None:
        """Say what became of a grade label: always when it failed, when asked for by hand when it printed."""
        where = f"{item.serial}, {banc_label(item.banc)}" if item.banc in self.runtime else item.serial
        if item.printed:
            if item.by_hand or self._label_failed.pop(item.serial, False):
                self.say(f"Étiquette imprimée ({where}).", Kind.SUCCESS)
            return
        self._label_failed[item.serial] = True
        again = (f"nouvel essai dans {format_duration(item.retry_in_s)}" if item.retry_in_s is not None
                 else "plus d'essai automatique")
        target = item.banc if item.banc in self.runtime else item.serial
        self.say(f"Étiquette non imprimée ({where}) : {item.reason} ; {again}. "
                 f"Pour l'imprimer : label, {target}.", Kind.ALARM)

    def apply_mqtt(self, item: MqttMessage) -> None:
        """Parse a bench topic's payload and apply it; a malformed one is logged (rate-limited) and ignored."""
        banc = item.banc
        try:
            match item:
                case MqttBms():
                    self.on_bms(banc, protocol.parse_bms_line(item.payload))
                case MqttStep():
                    self.on_step(banc, protocol.parse_step(item.payload))
                case MqttSecurity():
                    self.on_security(banc, protocol.parse_security(item.payload))
                case MqttNurse():
                    self.on_nurse(banc, item.index, protocol.parse_nurse_soc(item.payload))
                case MqttEspStatus():
                    online = protocol.parse_status(item.payload) == protocol.STATUS_ONLINE
                    self.runtime[banc].esp_online = online
                    if not online:  # an ESP off the broker cuts its current (its firmware's rule)
                        self.runtime[banc].current_cut_s = time.monotonic()
                    self.render_banc(banc)
                case MqttBancStatus():
                    self.runtime[banc].banc_online = protocol.parse_status(item.payload) == protocol.STATUS_ONLINE
                    self.render_banc(banc)
                case _:
                    assert_never(item)
        except protocol.PayloadError as exc:
            self._bad_payload(banc, item.kind, exc, item.payload)

    def on_step(self, banc: str, step: int) -> None:
        """bancX/step: 1..5 phase (animate, finalize, hide the alert, Ri at 2), 9 stop (docs/kiosque.md, « Un panneau par banc »)."""
        rt = self.runtime[banc]
        panel = self.panels[banc]
        if step in (protocol.STEP_FINISHED, protocol.STEP_STOP):
            rt.current_cut_s = time.monotonic()  # finished or stopped: whatever the last line said, no current flows
        if not takes_steps(rt):
            # No test on this bench (its ESP may be on the bench's own controls): no phase, no time left.
            log.debug("%s: step %s ignored, the bench is free", banc, step)
            return
        if step in protocol.PHASES:
            if step != rt.step:
                # Seen to start, unless this is the kiosk's first word of the bench (a retained step): the
                # phase began before; the worker reads when from the test's journal (kiosk_state.phase_elapsed_s).
                rt.phase_started_s = time.monotonic() if rt.step is not None else None
                panel.set_step(step)  # hides the security alert, finalizes the previous phases
            rt.step, rt.shown_stopped = step, False
            if step == 2:
                self.update_ri_diffusion_widgets(banc)
        elif step == protocol.STEP_STOP:
            if rt.step in protocol.PHASES:
                rt.previous_step = rt.step
            rt.step = protocol.STEP_STOP
            panel.stop_phase(rt.previous_step)
        self.render_banc(banc)

    def on_bms(self, banc: str, line: protocol.BmsLine) -> None:
        """bancX/bms/data: every measure of the panel (the latest line of each display interval)."""
        rt = self.runtime[banc]
        rt.line, rt.line_received_s = line, time.monotonic()  # how it shows from now on: kiosk_state's rule
        # No phase-2 estimate while the charge profile is not loaded (yet, or it is unusable: said on screen).
        time_left = bench_time_left_s(rt, line, self.charge_duration, time.monotonic(), time.time())
        self.panels[banc].update_banc_data(line, time_left)
        self.render_banc(banc)

    def on_security(self, banc: str, message: str) -> None:
        """bancX/security: a red alarm (until touched or the next step), or a recovery notice (fades)."""
        security = classify_security(message)
        if security.cuts_current:  # "… courant coupé": the banner and the current never say two things
            self.runtime[banc].current_cut_s = time.monotonic()
        if security.kind is SecurityKind.ALARM:
            log.warning("%s security alert: %s", banc, message)
        else:
            log.info("%s notice: %s", banc, message)
        self.panels[banc].show_security(security, time.monotonic())
        self.render_banc(banc)

    def on_nurse(self, banc: str, index: int, soc_pct: int) -> None:
        """bancX/nJ: nurse battery J state of charge."""
        if 1 <= index <= protocol.NURSE_COUNT:
            self.nurse_soc[banc][index - 1] = soc_pct
            self.panels[banc].update_nurse(index, soc_pct)

    # ------------------------------------------------------------------ periodic

    def _expire(self) -> None:
        now = time.monotonic()
        if self.messages.expire(now):
            self.refresh_message()
        for panel in self.panels.values():
            panel.expire(now)
        for banc in self.bancs:  # measures age on the clock: greyed, their age said, without a message
            self.render_banc(banc)
        self._schedule(EXPIRY_INTERVAL_MS, self._expire)

    def _animate(self) -> None:
        now = time.monotonic()
        for panel in self.panels.values():
            panel.tick_animation(now)
        self._schedule(ANIMATION_INTERVAL_MS, self._animate)

    def request_stop(self, _signum: int, _frame: Optional[FrameType]) -> None:
        """Signal handler: stop at the next drain tick (never touch Tk from a handler)."""
        self._stop_requested = True

    def shutdown(self) -> None:
        """Close the kiosk; running banc.py processes are left alone (their own session)."""
        if self._closed:
            return
        log.info("kiosk closing")
        self._closed = True
        for after_id in self._after_ids.values():
            try:
                self.after_cancel(after_id)
            except tk.TclError:
                pass
        if self._pending_rescale is not None:
            self.after_cancel(self._pending_rescale)
        self.worker.stop(timeout_s=0)  # joined by main() once the window is gone
        if self.labels is not None:
            self.labels.stop(timeout_s=0)  # a print under way is CUPS's: never waited for
        self.mqtt.stop()
        try:
            self.destroy()
        except tk.TclError:
            pass


def main(argv: Optional[list[str]] = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Kiosque opérateur des bancs de test LFP")
    parser.add_argument("--windowed", action="store_true", help="dans une fenêtre (sinon plein écran)")
    parser.add_argument("--geometry", help="taille de la fenêtre, ex. 800x480 (avec --windowed)")
    args = parser.parse_args(argv)
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        print(f"ui.py: configuration invalide : {exc}", file=sys.stderr)
        return 2
    # The log file is written by a background thread: a slow disk must not stall the Tk loop.
    logs.setup_logging("ui", settings.home, background=True)
    try:
        app = App(settings, windowed=args.windowed, geometry=args.geometry)
    except tk.TclError as exc:
        log.error("cannot open the display: %s", exc)
        return 1
    signal.signal(signal.SIGTERM, app.request_stop)
    signal.signal(signal.SIGINT, app.request_stop)
    app.mainloop()
    app.worker.stop(timeout_s=WORKER_JOIN_S)
    logs.stop_logging()
    return 0

