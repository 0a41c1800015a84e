#!/usr/bin/env python3
"""The operator kiosk (seed §1, §2, §4, §5): one panel per bench, the scan workflow, the `end` scan.

Threads: paho's network thread only parses the topic and puts (kind, bench, payload) on a
queue; the Tk thread drains it with after(), a bounded batch per tick, keeping only the
latest BMS line per bench, and is the only thread that touches widgets. Tests are started
as `banc.py` processes in their own session, so they outlive a restart of the kiosk.

    python ui.py              # full screen (the kiosk)
    python ui.py --windowed   # in a window, for a desk
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

import customtkinter as ctk

import protocol
import utils
from scan_workflow import Action, BancInfo, Decision, PreviousTest, ScanLookups, ScanWorkflow
from ui_components import (
    BG_APP,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_FREE,
    STATUS_INTERRUPTED,
    BancPanel,
    Fonts,
    RiView,
    ScanBar,
)

log = logging.getLogger("banc.ui")

BANC_SCRIPT = utils.PROJECT_DIR / "banc.py"

DRAIN_INTERVAL_MS = 50
MAX_MESSAGES_PER_TICK = 500  # 10 000 msg/s of headroom; the rest waits for the next tick
# Measures are shown at most this often per bench (latest line wins): nobody reads 10 Hz
# numbers, and redrawing 16 panels 10 times a second would cost the Pi most of a core.
BMS_DISPLAY_INTERVAL_S = 0.25
ANIMATION_INTERVAL_MS = 125
REFRESH_INTERVAL_MS = 2000  # bancs_config.json, running banc.py, spawned children
WORKFLOW_TICK_MS = 500
WATCHDOG_INTERVAL_MS = 5000  # systemd WatchdogSec must be at least 3 times this
FOCUS_CHECK_MS = 1000
BAD_PAYLOAD_LOG_INTERVAL_S = 60.0
EARLY_EXIT_S = 30.0  # a banc.py that fails within this delay after its start is reported on screen

# Time-left estimates of the phases without a profile (phase 2 uses charge_profile.csv).
PHASE1_DURATION_S = 15 * 60  # Ri/diffusion pulses: a fixed sequence of about 15 minutes
NOMINAL_CAPACITY_AH = 100.0  # the 16S packs tested here (charge_profile.csv assumes the same)
STORAGE_SOC_PCT = 50.0  # phase 4 recharges to the storage level
MIN_CURRENT_FOR_ESTIMATE_A = 0.5  # below this the pack is at rest: no meaningful estimate

# Layout: a panel is designed for 420 x 230 px; fonts scale with the real panel size.
PANEL_DESIGN_W, PANEL_DESIGN_H = 420.0, 230.0
SCAN_BAR_DESIGN_H = 56.0
MIN_SCALE, MAX_SCALE = 0.7, 2.4


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


def font_scale(width_px: float, height_px: float, num_bancs: int) -> float:
    """Font scale so that a panel's content fits the panel at this window size."""
    cols, rows = grid_shape(num_bancs)
    # The scan bar grows with the scale too: solve h = rows * panel_h + scan_h for the scale.
    by_width = width_px / cols / PANEL_DESIGN_W
    by_height = height_px / (rows * PANEL_DESIGN_H + SCAN_BAR_DESIGN_H)
    return max(MIN_SCALE, min(MAX_SCALE, by_width, by_height))


def estimate_time_left_s(
    step: Optional[int],
    line: protocol.BmsLine,
    phase_elapsed_s: Optional[float],
    charge_duration: Callable[[float], float],
) -> Optional[float]:
    """Estimated time left of the running phase (None when it cannot be estimated)."""
    amps = abs(line.current_a)
    if step == 1:
        return None if phase_elapsed_s is None else max(0.0, PHASE1_DURATION_S - phase_elapsed_s)
    if step == 2:
        return charge_duration(line.voltage_v)
    if step == 3:
        if amps < MIN_CURRENT_FOR_ESTIMATE_A:
            return None
        if line.capacity_ah > 1.0 and line.soc_pct < 99.0:
            # What came out so far for (100 - soc) % tells what is left for the remaining soc %.
            remaining_ah = line.capacity_ah * line.soc_pct / (100.0 - line.soc_pct)
        else:
            remaining_ah = NOMINAL_CAPACITY_AH * line.soc_pct / 100.0
        return remaining_ah / amps * 3600.0
    if step == 4:
        if amps < MIN_CURRENT_FOR_ESTIMATE_A:
            return None
        full_ah = line.capacity_ah if line.capacity_ah > 1.0 else NOMINAL_CAPACITY_AH  # measured in phase 3
        remaining_ah = max(0.0, STORAGE_SOC_PCT - line.soc_pct) / 100.0 * full_ah
        return remaining_ah / amps * 3600.0
    if step == 5:
        return 0.0
    return None


def ri_view_from_config(config: dict[str, Any], correct: Callable[[float, Optional[float]], float]) -> RiView:
    """Ri and diffusion means of a test's config.json; diffusion brought to 25 °C with `correct`."""

    def number(key: str) -> Optional[float]:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            return None
        return float(value)

    temperature = config.get("ri_temperature_c")
    temperature = float(temperature) if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) else None

    def diffusion(key: str) -> Optional[float]:
        value = number(key)
        return None if value is None else correct(value, temperature)

    return RiView(
        ri_discharge=number("ri_discharge_average"),
        ri_charge=number("ri_charge_average"),
        diffusion_discharge=diffusion("diffusion_discharge_average"),
        diffusion_charge=diffusion("diffusion_charge_average"),
    )


def status_display(
    occupied: bool, serial: Optional[str], step: Optional[int], running: bool, unfinished: bool,
    last_serial: Optional[str] = None, last_step: Optional[int] = None,
) -> tuple[str, str]:
    """Header text and kind of a bench: Libre / Occupé - SERIAL - Phase X/5 / Interrompu / Terminé."""
    if occupied and serial:
        if running:
            phase = f" - Phase {step}/5" if step in protocol.PHASES else ""
            return f"Occupé - {serial}{phase}", STATUS_BUSY
        if unfinished:
            return f"Interrompu - {serial} - scannez pour reprendre", STATUS_INTERRUPTED
        return f"Terminé - {serial} - scannez reset", STATUS_DONE
    if running:
        return "Occupé (banc.py sans état)", STATUS_BUSY
    if last_serial and last_step == protocol.STEP_FINISHED:
        return f"Libre - {last_serial} terminé", STATUS_DONE
    return "Libre", STATUS_FREE


class Inbound(NamedTuple):
    """One MQTT message as the network thread hands it to the Tk thread."""

    kind: str
    banc: Optional[str]
    payload: Any
    nurse_index: Optional[int] = None


KIND_BROKER = "broker"
_COALESCED_KINDS = (protocol.KIND_BMS, protocol.KIND_NURSE)


def coalesce(batch: list[Inbound]) -> list[Inbound]:
    """Keep only the latest BMS line per bench and nurse value per nurse; the rest in order."""
    seen: set[tuple] = set()
    kept: list[Inbound] = []
    for item in reversed(batch):
        if item.kind in _COALESCED_KINDS:
            key = (item.kind, item.banc, item.nurse_index)
            if key in seen:
                continue
            seen.add(key)
        kept.append(item)
    kept.reverse()
    return kept


# =========================================================================== MQTT edge


class MqttBridge:
    """paho client in its own thread; callbacks only put Inbound items on the queue."""

    def __init__(self, num_bancs: int, sink: queue.Queue[Inbound]) -> None:
        self.num_bancs = num_bancs
        self.sink = sink
        self.connected = False
        # MQTT v5: the kiosk announces the 4 KiB maximum packet size, so it is never handed a larger message.
        self.client = protocol.make_client(f"ui_kiosk_{os.getpid()}", utils.get_settings(), v5=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho retries forever (capped backoff) until the broker answers."""
        settings = utils.get_settings()
        self.client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=15,
                                  **protocol.connect_options(persistent=False))
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
                self.connected = False
                self.sink.put(Inbound(KIND_BROKER, None, False))
                return
            protocol.subscribe_all(client, protocol.ui_subscriptions(self.num_bancs))
            self.connected = True
            log.info("connected to the broker")
            self.sink.put(Inbound(KIND_BROKER, None, True))
        except Exception:
            log.exception("on_connect")

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        try:
            self.connected = False
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)
            self.sink.put(Inbound(KIND_BROKER, None, False))
        except Exception:
            log.exception("on_disconnect")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            info = protocol.parse_topic(msg.topic)
            if info is None or info.banc_number > self.num_bancs:
                return
            self.sink.put(Inbound(info.kind, info.banc, bytes(msg.payload), info.nurse_index))
        except Exception:
            log.exception("on_message %r", getattr(msg, "topic", "?"))

    def publish_command_all(self, bancs: list[str], command: str) -> list[str]:
        """Publish a command on every bench's command topic; return the benches where it failed."""
        failed = []
        payload = protocol.encode_command(command)
        for banc in bancs:
            try:
                info = protocol.publish(self.client, protocol.topics(banc).command, payload)
                if info.rc != 0:
                    failed.append(banc)
            except Exception:
                log.exception("publish command to %s", banc)
                failed.append(banc)
        return failed


# =========================================================================== runtime state


@dataclass
class BancRuntime:
    """What the kiosk knows about one bench (Tk thread only)."""

    banc: str
    occupied: bool = False
    serial: Optional[str] = None
    file_step: Optional[int] = None  # current_step in bancs_config.json
    step: Optional[int] = None  # last step seen on MQTT (or shown from the file)
    previous_step: Optional[int] = None
    phase_started_s: Optional[float] = None  # monotonic time the UI saw the phase start
    running: bool = False
    esp_online: Optional[bool] = None
    banc_online: Optional[bool] = None
    last_bms: Optional[protocol.BmsLine] = None
    ri_loaded_for: Optional[str] = None
    unfinished_cache: dict[tuple, bool] = field(default_factory=dict)
    last_serial: Optional[str] = None
    shown_stopped: bool = False


def real_lookups() -> ScanLookups:
    """The scan workflow's lookups, backed by utils (files and processes)."""

    def banc_info(banc: str) -> BancInfo:
        entry = utils.get_banc_info(banc)
        step = entry.get("current_step")
        return BancInfo(
            occupied=entry.get("status") == utils.STATUS_OCCUPIED,
            serial_pending=entry.get("serial-pending"),
            current_step=step if isinstance(step, int) else None,
        )

    def latest(serial: str) -> Optional[PreviousTest]:
        test = utils.latest_test(serial)
        if test is None:
            return None
        step = (test.config or {}).get("current_step")
        return PreviousTest(
            banc=test.banc, finished=test.finished, last_activity=test.last_activity,
            current_step=step if isinstance(step, int) else None, first_day=test.day,
        )

    return ScanLookups(
        is_banc_running=utils.is_banc_running,
        banc_info=banc_info,
        banc_for_serial=lambda serial: utils.get_banc_for_serial(serial),
        latest_test=latest,
    )


# =========================================================================== the app


class App(ctk.CTk):
    """The kiosk window."""

    def __init__(
        self, *, windowed: bool = False, geometry: Optional[str] = None, banc_script: Path = BANC_SCRIPT,
        start_mqtt: bool = True,
    ) -> None:
        ctk.set_appearance_mode("dark")
        super().__init__(fg_color=BG_APP)
        self.settings = utils.get_settings()
        self.banc_script = Path(banc_script)
        self.bancs = utils.all_bancs()
        self.title("Bancs de test LFP")
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.runtime = {banc: BancRuntime(banc) for banc in self.bancs}
        self.nurse_soc: dict[str, list[Optional[int]]] = {b: [None] * protocol.NURSE_COUNT for b in self.bancs}
        self.children_procs: dict[str, tuple[subprocess.Popen, float]] = {}
        self.workflow = ScanWorkflow(self.settings.num_bancs, self.settings.scan_timeout_s, real_lookups())
        self._bad_payload_log: dict[tuple[str, str], tuple[float, int]] = {}
        self._stop_requested = False
        self._pending_bms: dict[str, Inbound] = {}
        self._last_bms_flush = 0.0
        self._closed = False
        self._after_ids: dict[str, str] = {}
        self._ready_sent = False
        self._pending_rescale: Optional[str] = None
        self.stats = {"messages": 0, "applied": 0, "ticks": 0}

        width, height = self._initial_size(windowed, geometry)
        self.fonts = Fonts(font_scale(width, height, len(self.bancs)))
        self._build_layout()
        if windowed:
            self.geometry(geometry or f"{width}x{height}")
        else:
            self.geometry(f"{width}x{height}+0+0")
            self.attributes("-fullscreen", True)

        self.protocol("WM_DELETE_WINDOW", self.shutdown)
        self.bind("<Configure>", self._on_root_configure, add="+")
        # A touch anywhere must not steal the scanner's keystrokes: give the focus back to the entry.
        self.bind_all("<ButtonRelease-1>", self._on_touch, add="+")

        self.scan_bar.show_message(self.workflow.prompt(), "info")
        try:
            self.refresh_bancs()
        except Exception as exc:  # an unreadable state folder must not keep the kiosk from showing
            log.exception("initial state")
            self.scan_bar.show_message(f"État des bancs illisible : {exc}", "error")
        self.scan_bar.set_broker(False)
        self.mqtt = MqttBridge(self.settings.num_bancs, self.inbox)
        if start_mqtt:
            self.mqtt.start()

        self._schedule(DRAIN_INTERVAL_MS, self.drain_queue)
        self._schedule(ANIMATION_INTERVAL_MS, self._animate)
        self._schedule(REFRESH_INTERVAL_MS, self._refresh_loop)
        self._schedule(WORKFLOW_TICK_MS, self._workflow_tick)
        self._schedule(FOCUS_CHECK_MS, self._focus_loop)
        self._schedule(50, self._first_frame)
        self.focus_entry()

    def _schedule(self, delay_ms: int, callback: Callable[[], None]) -> None:
        """after() for the periodic loops, remembered so that shutdown can cancel them."""
        if self._closed:
            return
        self._after_ids[callback.__name__] = self.after(delay_ms, callback)

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
            return 1280, 800
        return self.winfo_screenwidth(), self.winfo_screenheight()

    def _build_layout(self) -> None:
        cols, rows = grid_shape(len(self.bancs))
        self.grid_columnconfigure(tuple(range(cols)), weight=1, uniform="col")
        self.grid_rowconfigure(tuple(range(rows)), weight=1, uniform="row")
        self.panels: dict[str, BancPanel] = {}
        for i, banc in enumerate(self.bancs):
            panel = BancPanel(self, banc, self.fonts, on_title_click=self.open_graph_for_banc)
            row, col = divmod(i, cols)
            panel.grid(row=row, column=col, sticky="nsew", padx=3, pady=3)
            self.panels[banc] = panel
        self.scan_bar = ScanBar(self, self.fonts, on_scan=self.handle_prompt, on_graph=self.on_graph_button)
        self.scan_bar.grid(row=rows, column=0, columnspan=cols, sticky="ew")

    def _on_root_configure(self, event: tk.Event) -> None:
        if event.widget is not self:
            return
        if self._pending_rescale is not None:
            self.after_cancel(self._pending_rescale)
        self._pending_rescale = self.after(200, self._rescale)

    def _rescale(self) -> None:
        self._pending_rescale = None
        if self.fonts.rescale(font_scale(self.winfo_width(), self.winfo_height(), len(self.bancs))):
            for panel in self.panels.values():
                for key in ("phase_bar", "soc_gauge", "progress_bar_nurse"):
                    panel.widgets[key].redraw()

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
            utils.sd_notify("READY=1")
            log.info("kiosk ready: %d benches, broker %s:%d", len(self.bancs), self.settings.mqtt_host,
                     self.settings.mqtt_port)
        self._watchdog()

    def _watchdog(self) -> None:
        # Sent from the Tk loop on purpose: if the loop freezes, systemd restarts the kiosk.
        utils.sd_notify("WATCHDOG=1")
        self._schedule(WATCHDOG_INTERVAL_MS, self._watchdog)

    # ------------------------------------------------------------------ scans

    def handle_prompt(self, text: str) -> None:
        """One scan (text + Enter): run the workflow, then perform its decision."""
        try:
            decision = self.workflow.handle(text, utils.now_local())
            log.info("scan %r -> %s %s", text[:60], decision.action.value, decision.message)
            self.perform(decision)
        except Exception as exc:  # a scan must never take the kiosk down
            log.exception("scan %r failed", text[:60])
            self.scan_bar.show_message(f"Erreur interne : {exc}. Réessayez.", "error")
        self.focus_entry()

    def on_graph_button(self) -> None:
        """The Graphiques button: same as scanning `graph`."""
        self.perform(self.workflow.begin_graph(utils.now_local()))
        self.focus_entry()

    def perform(self, decision: Decision) -> None:
        """Side effects of a workflow decision."""
        if decision.action is Action.START:
            assert decision.banc and decision.serial
            self.start_test(decision.banc, decision.serial, decision.start_step or 1, decision.message)
        elif decision.action is Action.END:
            self.send_end()
        elif decision.action is Action.RESET:
            assert decision.banc
            self.reset_banc(decision.banc, decision.message)
        elif decision.action is Action.GRAPH:
            self.open_graph(banc=decision.banc, serial=decision.serial)
        elif decision.message:
            self.scan_bar.show_message(decision.message, decision.level.value)

    def start_test(self, banc: str, serial: str, start_step: int, message: str) -> None:
        """Seed §2 success: bancs_config occupied, panel reset, banc.py spawned in its own session."""
        try:
            utils.set_banc_status(banc, utils.STATUS_OCCUPIED, serial, start_step)
        except (OSError, ValueError) as exc:
            log.error("cannot mark %s occupied: %s", banc, exc)
            self.scan_bar.show_message(f"Impossible d'écrire bancs_config.json : {exc}", "error")
            return
        rt = self.runtime[banc]
        rt.occupied, rt.serial, rt.file_step = True, serial, start_step
        rt.step, rt.previous_step, rt.last_bms, rt.ri_loaded_for = None, None, None, None
        rt.unfinished_cache.clear()
        self.nurse_soc[banc] = [None] * protocol.NURSE_COUNT
        panel = self.panels[banc]
        panel.reset()
        panel.hide_overlay_labels()
        panel.show_step_quietly(start_step)
        rt.step, rt.phase_started_s = start_step, time.monotonic()
        rt.shown_stopped = False
        try:
            proc = self.spawn_banc(banc, serial)
        except OSError as exc:
            log.error("cannot start banc.py for %s: %s", banc, exc)
            self.scan_bar.show_message(f"Impossible de lancer banc.py : {exc}", "error")
            self.refresh_banc(banc)
            return
        self.children_procs[banc] = (proc, time.monotonic())
        rt.running = True
        self.refresh_banc(banc, running=True)
        self.scan_bar.show_message(message, "success")

    def spawn_banc(self, banc: str, serial: str) -> subprocess.Popen:
        """Start `python banc.py bancN SERIAL` (argument list, own session, output discarded: it logs itself)."""
        if not utils.is_valid_serial(serial):  # never let a bad serial reach a command line
            raise OSError(f"invalid serial {serial!r}")
        args = [sys.executable, str(self.banc_script), utils.normalize_banc(banc), serial]
        log.info("starting %s", args)
        return subprocess.Popen(
            args, cwd=str(utils.PROJECT_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            # Without systemd's NOTIFY_SOCKET: the kiosk unit accepts notifications from ui.py only.
            env=utils.child_environment(),
        )

    def send_end(self) -> None:
        """Seed §5: publish `end` on every bench's command topic."""
        if not self.mqtt.connected:
            self.scan_bar.show_message(
                "Broker déconnecté : « end » non envoyé. Réessayez quand le broker est revenu.", "error"
            )
            return
        failed = self.mqtt.publish_command_all(self.bancs, protocol.COMMAND_END)
        if failed:
            self.scan_bar.show_message(f"« end » non envoyé à : {', '.join(failed)}. Réessayez.", "error")
        else:
            log.info("end sent to %s", ", ".join(self.bancs))
            self.scan_bar.show_message(f"Fin de journée : « end » envoyé aux {len(self.bancs)} bancs.", "success")

    def reset_banc(self, banc: str, message: str) -> None:
        """Clear a bench in bancs_config.json (the workflow refused it while its banc.py runs)."""
        if utils.is_banc_running(banc):
            self.scan_bar.show_message(f"Reset refusé : un test tourne sur le banc {banc[4:]}.", "error")
            return
        try:
            utils.abandon_banc(banc, utils.now_local())
        except (OSError, ValueError) as exc:
            self.scan_bar.show_message(f"Reset impossible : {exc}", "error")
            return
        log.info("%s reset by the operator", banc)
        rt = self.runtime[banc]
        rt.occupied, rt.serial, rt.file_step, rt.step, rt.previous_step = False, None, None, None, None
        rt.last_serial, rt.shown_stopped = None, False
        self.panels[banc].reset()
        self.refresh_banc(banc)
        self.scan_bar.show_message(message, "success")

    # ------------------------------------------------------------------ charts

    def open_graph_for_banc(self, banc: str) -> None:
        """Touching a bench's title opens its charts."""
        self.open_graph(banc=banc)
        self.focus_entry()

    def resolve_test_folder(self, banc: Optional[str] = None, serial: Optional[str] = None) -> Optional[Path]:
        """The test folder of a serial (its latest test) or of a bench (its current, else its latest)."""
        if serial:
            return utils.find_battery_folder(serial)
        if banc is None:
            return None
        rt = self.runtime[banc]
        if rt.serial and utils.is_valid_serial(rt.serial):
            test = utils.latest_test(rt.serial, banc)
            if test is not None:
                return test.path
        folders = utils.list_test_folders(banc=banc)
        return folders[-1].path if folders else None

    def open_graph(self, banc: Optional[str] = None, serial: Optional[str] = None) -> None:
        """Open report.show_charts for a test, or say clearly why not."""
        target = serial or (f"banc {banc[4:]}" if banc else "?")
        folder = self.resolve_test_folder(banc, serial)
        if folder is None:
            self.scan_bar.show_message(f"Aucun test trouvé pour {target}.", "error")
            return
        try:
            report = importlib.import_module("report")
        except Exception as exc:  # report.py missing or broken: the kiosk goes on
            log.warning("report module unavailable: %s", exc)
            report = None
        show_charts = getattr(report, "show_charts", None)
        if not callable(show_charts):
            self.scan_bar.show_message("Graphiques non disponibles (module report absent).", "error")
            return
        try:
            window = show_charts(self, folder)
            if isinstance(window, tk.Misc) and window.winfo_toplevel() is not self:
                self.route_keys_to_entry(window.winfo_toplevel())
        except Exception as exc:
            log.exception("show_charts(%s)", folder)
            self.scan_bar.show_message(f"Graphiques non disponibles : {exc}", "error")
            return
        self.scan_bar.show_message(f"Graphiques de {target} ({folder.name}).", "info")

    # ------------------------------------------------------------------ bench state

    def _test_unfinished(self, rt: BancRuntime) -> bool:
        key = (rt.serial, rt.running)
        if key not in rt.unfinished_cache:
            rt.unfinished_cache.clear()
            test = utils.latest_test(rt.serial, rt.banc) if rt.serial else None
            # No folder yet (banc.py died before creating it) still means "to resume".
            rt.unfinished_cache[key] = test is None or not test.finished
        return rt.unfinished_cache[key]

    def refresh_banc(self, banc: str, entry: Optional[dict] = None, running: Optional[bool] = None) -> None:
        """Re-read one bench's state (file + process) and update its header and indicators."""
        rt = self.runtime[banc]
        if entry is None:
            entry = utils.get_banc_info(banc)
        if running is None:
            running = utils.is_banc_running(banc)
        occupied = entry.get("status") == utils.STATUS_OCCUPIED
        serial = entry.get("serial-pending") if occupied else None
        step = entry.get("current_step") if isinstance(entry.get("current_step"), int) else None
        if occupied and serial != rt.serial:
            rt.ri_loaded_for = None
        if rt.serial and not occupied:
            rt.last_serial = rt.serial
        rt.occupied, rt.serial, rt.file_step, rt.running = occupied, serial, step, running
        panel = self.panels[banc]
        if occupied and rt.step is None and step in protocol.PHASES:
            # Known only from the state file (kiosk just started): show it without an animation start.
            rt.step = step
            panel.show_step_quietly(step)
        unfinished = occupied and not running and self._test_unfinished(rt)
        if unfinished and not rt.shown_stopped and rt.step in protocol.PHASES:
            panel.stop_phase(rt.step)  # interrupted: the phase reached, no animation
            rt.previous_step, rt.shown_stopped = rt.step, True
        if running and rt.shown_stopped:
            rt.shown_stopped = False
        display_step = rt.step if rt.step in protocol.PHASES else (rt.previous_step or step)
        text, kind = status_display(occupied, serial, display_step, running, unfinished, rt.last_serial, rt.step)
        panel.set_status(text, kind)
        banc_online = rt.banc_online if rt.banc_online is not None else (running or None)
        panel.set_links(rt.esp_online, banc_online)
        if occupied and serial and rt.ri_loaded_for != serial and (display_step or 0) >= 2:
            self.update_ri_diffusion_widgets(banc)

    def refresh_bancs(self) -> None:
        """Re-read bancs_config.json and which banc.py run; reap finished children."""
        self.reap_children()
        config = utils.load_bancs_config()
        entries = {}
        for entry in config["bancs"]:
            try:
                entries[protocol.banc_id(entry["name"])] = entry
            except ValueError:
                continue
        for banc in self.bancs:
            try:
                # Our own child counts as running before it has taken its lock (Python starts slowly on a Pi).
                child = self.children_procs.get(banc)
                running = (child is not None and child[0].poll() is None) or utils.is_banc_running(banc)
                self.refresh_banc(banc, entries.get(banc, {}), running)
            except Exception:
                log.exception("refresh %s", banc)

    def _refresh_loop(self) -> None:
        try:
            self.refresh_bancs()
        except Exception:
            log.exception("refresh")
        self._schedule(REFRESH_INTERVAL_MS, self._refresh_loop)

    def reap_children(self) -> None:
        """Collect exited banc.py children (no zombies); report an early failure on screen."""
        for banc, (proc, started) in list(self.children_procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children_procs[banc]
            log.info("banc.py %s (pid %d) exited with code %d", banc, proc.pid, code)
            if code != 0 and time.monotonic() - started < EARLY_EXIT_S:
                self.scan_bar.show_message(
                    f"banc.py du banc {banc[4:]} s'est arrêté aussitôt (code {code}) : voir logs.log.", "error"
                )

    def update_ri_diffusion_widgets(self, banc: str) -> None:
        """Seed §4: read Ri/diffusion from the test's config.json (diffusion at 25 °C) into the panel."""
        rt = self.runtime[banc]
        if not rt.serial or not utils.is_valid_serial(rt.serial):
            return
        test = utils.latest_test(rt.serial, banc)
        if test is None or test.config is None:
            return
        try:
            view = ri_view_from_config(test.config, utils.correct_to_25c)
        except (utils.ConfigFileError, ValueError) as exc:
            log.error("cannot correct diffusion to 25 °C: %s", exc)
            view = ri_view_from_config(test.config, lambda value, _t: value)
        self.panels[banc].update_ri_diffusion_widgets(view)
        rt.ri_loaded_for = rt.serial

    # ------------------------------------------------------------------ MQTT -> widgets

    def drain_queue(self) -> None:
        """Tk thread: apply at most MAX_MESSAGES_PER_TICK queued messages, coalesced."""
        if self._stop_requested:
            self.shutdown()
            return
        batch: list[Inbound] = []
        try:
            while len(batch) < MAX_MESSAGES_PER_TICK:
                batch.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self.stats["messages"] += len(batch)
            self.stats["ticks"] += 1
            for item in coalesce(batch):
                if item.kind == protocol.KIND_BMS and item.banc in self.panels:
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

    def _apply_safely(self, item: Inbound) -> None:
        try:
            self.apply_message(item)
            self.stats["applied"] += 1
        except Exception:
            log.exception("message %s for %s", item.kind, item.banc)

    def _bad_payload(self, banc: str, kind: str, exc: Exception, payload: Any) -> None:
        # Rate-limited: a bench spewing garbage at 10 Hz must not flood logs.log.
        key = (banc, kind)
        now = time.monotonic()
        last, count = self._bad_payload_log.get(key, (-math.inf, 0))
        if now - last >= BAD_PAYLOAD_LOG_INTERVAL_S:
            extra = f" ({count} more since the last report)" if count else ""
            log.warning("%s %s: ignored malformed payload %r: %s%s", banc, kind, bytes(payload)[:80], exc, extra)
            self._bad_payload_log[key] = (now, 0)
        else:
            self._bad_payload_log[key] = (last, count + 1)

    def apply_message(self, item: Inbound) -> None:
        """Apply one message to the bench's state and panel (seed §4)."""
        if item.kind == KIND_BROKER:
            self.scan_bar.set_broker(bool(item.payload))
            return
        banc = item.banc
        if banc not in self.panels:
            return
        try:
            if item.kind == protocol.KIND_BMS:
                self.on_bms(banc, protocol.parse_bms_line(item.payload))
            elif item.kind == protocol.KIND_STEP:
                self.on_step(banc, protocol.parse_step(item.payload))
            elif item.kind == protocol.KIND_SECURITY:
                self.on_security(banc, protocol.parse_security(item.payload))
            elif item.kind == protocol.KIND_NURSE:
                self.on_nurse(banc, item.nurse_index or 0, protocol.parse_nurse_soc(item.payload))
            elif item.kind == protocol.KIND_ESP_STATUS:
                self.runtime[banc].esp_online = protocol.parse_status(item.payload) == protocol.STATUS_ONLINE
                self._show_links(banc)
            elif item.kind == protocol.KIND_BANC_STATUS:
                self.runtime[banc].banc_online = protocol.parse_status(item.payload) == protocol.STATUS_ONLINE
                self._show_links(banc)
            # ri/results: nothing here; read from config.json when step 2 arrives (seed §4).
        except protocol.PayloadError as exc:
            self._bad_payload(banc, item.kind, exc, item.payload)

    def _show_links(self, banc: str) -> None:
        rt = self.runtime[banc]
        banc_online = rt.banc_online if rt.banc_online is not None else (rt.running or None)
        self.panels[banc].set_links(rt.esp_online, banc_online)

    def on_step(self, banc: str, step: int) -> None:
        """bancX/step: 1..5 phase (animate, finalize, hide the alert, Ri at 2), 9 stop (seed §4)."""
        rt = self.runtime[banc]
        panel = self.panels[banc]
        if step in protocol.PHASES:
            if step != rt.step:
                rt.phase_started_s = time.monotonic()
                panel.set_step(step)  # hides the security alert, finalizes the previous phases
            rt.step, rt.shown_stopped = step, False
            if step == 2:
                self.update_ri_diffusion_widgets(banc)
        elif step == protocol.STEP_STOP:
            if rt.step in protocol.PHASES:
                rt.previous_step = rt.step
            rt.step = protocol.STEP_STOP
            panel.stop_phase(rt.previous_step)
        self.refresh_status_text(banc)

    def refresh_status_text(self, banc: str) -> None:
        """Header text from what is already known (no file access)."""
        rt = self.runtime[banc]
        display_step = rt.step if rt.step in protocol.PHASES else (rt.previous_step or rt.file_step)
        unfinished = rt.occupied and not rt.running and bool(rt.unfinished_cache.get((rt.serial, rt.running), True))
        text, kind = status_display(rt.occupied, rt.serial, display_step, rt.running, unfinished, rt.last_serial, rt.step)
        self.panels[banc].set_status(text, kind)

    def on_bms(self, banc: str, line: protocol.BmsLine) -> None:
        """bancX/bms/data: every measure of the panel (the latest line of each display interval)."""
        rt = self.runtime[banc]
        rt.last_bms = line
        elapsed = None if rt.phase_started_s is None else time.monotonic() - rt.phase_started_s
        try:
            time_left = estimate_time_left_s(rt.step, line, elapsed, utils.get_charge_duration)
        except utils.ConfigFileError as exc:
            self._bad_payload(banc, "charge_profile", exc, b"")
            time_left = None
        self.panels[banc].update_banc_data(line, time_left)

    def on_security(self, banc: str, message: str) -> None:
        """bancX/security: red alert on the panel until the next step."""
        log.warning("%s security alert: %s", banc, message)
        self.panels[banc].update_banc_security(message)

    def on_nurse(self, banc: str, index: int, soc_pct: int) -> None:
        """bancX/nJ: nurse battery J state of charge."""
        if 1 <= index <= protocol.NURSE_COUNT:
            self.nurse_soc[banc][index - 1] = soc_pct
            self.panels[banc].update_nurse(index, soc_pct)

    # ------------------------------------------------------------------ periodic

    def _animate(self) -> None:
        now = time.monotonic()
        for panel in self.panels.values():
            panel.tick_animation(now)
        self._schedule(ANIMATION_INTERVAL_MS, self._animate)

    def _workflow_tick(self) -> None:
        decision = self.workflow.tick(utils.now_local())
        if decision is not None:
            self.scan_bar.show_message(decision.message, decision.level.value)
        self._schedule(WORKFLOW_TICK_MS, self._workflow_tick)

    def request_stop(self, *_args: Any) -> None:
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
        utils.get_settings()
    except utils.SettingsError as exc:
        print(f"ui.py: configuration invalide : {exc}", file=sys.stderr)
        return 2
    utils.setup_logging("ui")
    try:
        app = App(windowed=args.windowed, geometry=args.geometry)
    except tk.TclError as exc:
        log.error("cannot open the display: %s", exc)
        return 1
    signal.signal(signal.SIGTERM, app.request_stop)
    signal.signal(signal.SIGINT, app.request_stop)
    app.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
