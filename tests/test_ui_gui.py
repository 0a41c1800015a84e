"""The real kiosk in a real window (Xvfb) with a real Mosquitto and the real banc.py.

Scans are typed like the barcode scanner does: keystrokes + Return sent to the X server
with xdotool. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tkinter as tk
import types
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Optional

import psutil
import pytest

from banclfp.infra import environment
from banclfp.kiosk import app as ui, widgets as uic
from banclfp.presentation.formatting import ELLIPSIS, wrap_lines
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.support import REPO_DIR, MosquittoBroker
from banclfp.wire import protocol

pytestmark = pytest.mark.gui

ARTIFACTS = REPO_DIR / "tests" / "artifacts"
NB = "\u00a0"  # the no-break space French numbers put between a number and its unit (formatting.format_number)
WINDOW_TITLE = "Bancs de test LFP"


# =========================================================================== helpers


def pump_until(app: ui.App, condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Run the Tk loop until `condition()` is true."""
    deadline = time.monotonic() + timeout_s
    while True:
        app.update()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout ({timeout_s} s) waiting for {what or condition}")
        time.sleep(0.01)


def pump(app: ui.App, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.update()
        time.sleep(0.01)


def xdotool(*args: str, app: Optional[ui.App] = None, timeout_s: float = 15.0) -> str:
    """Run xdotool on the test display (pumping the in-process app meanwhile)."""
    proc = subprocess.Popen(["xdotool", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"xdotool {args} timed out")
        if app is not None:
            app.update()
        time.sleep(0.01)
    out, err = proc.communicate()
    assert proc.returncode == 0, f"xdotool {args}: {err}"
    return out


def type_scan(text: str, app: Optional[ui.App] = None) -> None:
    """What the barcode scanner does: type the code, then Return; then wait for the kiosk's answer."""
    xdotool("type", "--delay", "3", text, app=app)
    xdotool("key", "Return", app=app)
    if app is not None:
        pump(app, 0.05)
        # The worker thread answers the scan (it reads the files): its answer comes back through the queue.
        pump_until(app, lambda: app.pending_requests == 0, what=f"the kiosk's answer to {text!r}")


def screenshot(display: str, window: tk.Misc, name: str) -> Path:
    """Save a window as tests/artifacts/<name>."""
    from PIL import ImageGrab

    window.update()
    x, y, w, h = window.winfo_rootx(), window.winfo_rooty(), window.winfo_width(), window.winfo_height()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display).save(path)
    return path


def text_of(panel: uic.BancPanel, key: str) -> str:
    return str(panel.widgets[key].cget("text"))


def time_left_near(panel: uic.BancPanel, expected_s: float, within_s: float = 5.0) -> bool:
    """The panel's time left ("HH:MM:SS") is `expected_s` give or take `within_s` (it counts down between lines)."""
    text = text_of(panel, "time_left")
    if text.count(":") != 2 or not text.replace(":", "").isdigit():
        return False
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return abs(hours * 3600 + minutes * 60 + seconds - expected_s) <= within_s


def phase2_left_s(soc_pct: float, current_a: float) -> float:
    """Time left of the lab's phase 2 for a 100 Ah pack with no rest read before its charge (time_left): the CC
    up to 100 % (charge_profile.csv: its whole charge less its CV is 0.5 C to 100 %) at this current, then its CV."""
    return (100.0 - soc_pct) / 100 * 100 / current_a * 3600 + home_store().static.get_charge_duration(58.4)


def color_of(panel: uic.BancPanel, key: str) -> str:
    return str(panel.widgets[key].cget("text_color"))


# =========================================================================== layout checks


def assert_elided_not_cut(label: uic.ElidedLabel) -> None:
    """The label shows its whole text, or the same with only its serial shortened ("RW-LONGSE…", the words around
    it whole), and what it shows fits its width."""
    shown = str(label.cget("text"))
    whole = label.alias(label.full_text) if label.alias is not None else label.full_text
    part = label.part or ""
    assert shown == whole or (part and any(whole.replace(part, part[:n] + ELLIPSIS) == shown for n in range(len(part))))
    lines = wrap_lines(shown, int(label.cget("wraplength")), label._measure_font.measure) if label.lines > 1 else [shown]
    assert len(lines) <= label.lines, (shown, label.lines)
    assert max(label._measure_font.measure(line) for line in lines) <= label.winfo_width(), (shown, label.winfo_width())


def assert_canvas_texts_apart(canvas: tk.Canvas, tag: str) -> None:
    """Every text item with `tag` lies inside the canvas and no two of them overlap."""
    boxes = [canvas.bbox(item) for item in canvas.find_withtag(tag)]
    assert boxes, tag
    width = canvas.winfo_width()
    for x0, _y0, x1, _y1 in boxes:
        assert x0 >= 0 and x1 <= width, (boxes, width)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def assert_gauge_text_clear_of_border(gauge: uic.SocGauge) -> None:
    """The SOC value stays at least 2 px inside the gauge's 2 px border."""
    c = gauge.canvas
    (item,) = c.find_withtag("value")
    x0, _y0, x1, _y1 = c.bbox(item)
    body_x0, body_x1 = 3, c.winfo_width() - 3
    assert x0 >= body_x0 + 2 + 2 and x1 <= body_x1 - 2 - 2, (x0, x1, c.winfo_width())


def overlaps_vertically(a: tk.Misc, b: tk.Misc) -> bool:
    top_a, top_b = a.winfo_rooty(), b.winfo_rooty()
    return top_a < top_b + b.winfo_height() and top_b < top_a + a.winfo_height()


def assert_panel_holds(panel: uic.BancPanel) -> None:
    """Nothing on the panel is cut: one-line texts whole or elided, gauge and nurse texts clear, captions legible."""
    bottom = panel.winfo_rooty() + panel.winfo_height()
    for key, widget in panel.widgets.items():
        if isinstance(widget, uic.ElidedLabel) and widget.winfo_ismapped():
            assert_elided_not_cut(widget)
            # Not squeezed: a whole line of its font, inside the panel.
            assert widget.winfo_height() >= widget._measure_font.metrics("linespace"), (key, widget.winfo_height())
            assert widget.winfo_rooty() + widget.winfo_height() <= bottom, key
    gauge = panel.widgets["soc_gauge"]
    if gauge.winfo_ismapped():
        assert_gauge_text_clear_of_border(gauge)
    nurses = panel.widgets["progress_bar_nurse"]
    if nurses.winfo_ismapped():
        assert_canvas_texts_apart(nurses.canvas, "value")
        for item in nurses.canvas.find_withtag("caption") + nurses.canvas.find_withtag("value"):
            size_px = -int(str(nurses.canvas.itemcget(item, "font")).split()[1])
            assert size_px >= uic.MIN_LEGIBLE_PX, size_px


class Esp:
    """The test plays the ESP32s: a paho client publishing with the contract's QoS, recording commands."""

    def __init__(self, client_id: str = "test_esp") -> None:
        self.commands: list[tuple[str, str]] = []
        settings = environment.load_settings()  # the test's broker and bench count, as a process of the lab reads them
        self.client = protocol.make_client(client_id, settings)
        self.client.on_message = lambda _c, _u, msg: self.commands.append((msg.topic, msg.payload.decode()))
        self.client.on_connect = lambda c, *_a: protocol.subscribe_all(
            c, [(protocol.topics(n).command, 1) for n in range(1, settings.num_bancs + 1)]
        )
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()

    def send(self, topic: str, payload: str) -> None:
        protocol.publish(self.client, topic, payload).wait_for_publish(5)

    def bms(self, banc: str, seq: int, voltage_v: float = 52.31, current_a: float = -12.4, soc_pct: float = 67.5,
            temperature_c: float = 24.8, capacity_ah: float = 45.123, energy_wh: float = 2301.5,
            cell_min_mv: int = 3265, cell_max_mv: int = 3281, balancing: int = 0) -> None:
        line = protocol.BmsLine(seq, voltage_v, current_a, soc_pct, temperature_c, capacity_ah, energy_wh,
                                cell_min_mv, cell_max_mv, balancing)
        self.send(protocol.topics(banc).bms_data, protocol.encode_bms_line(line))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stop_pid(pid: int, timeout_s: float = 5.0) -> None:
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


def home_store() -> Store:
    """The store of the test's BANC_HOME and bench count (this process's environment, as the kiosk reads it)."""
    return Store.from_settings(environment.load_settings())


def stop_bancs() -> None:
    """Stop every banc.py of this BANC_HOME (they run in their own session, so nobody else will)."""
    store = home_store()
    for banc in store.all_bancs():
        pid = store.banc_process_pid(banc)
        if pid is not None:
            stop_pid(pid)


def kiosk_factory(xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> Generator[Callable[..., ui.App], None, None]:
    """Factory of in-process kiosks on the Xvfb display (options go to ui.App); everything they started is stopped."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    apps: list[ui.App] = []

    def make(geometry: str = "1280x800+0+0", **options: Any) -> ui.App:
        # Each kiosk its own MQTT session: the product's fixed id (ui_kiosk) would make a second kiosk of the
        # test take the first one's session. A test that restarts "the same" kiosk passes the same id.
        options.setdefault("mqtt_client_id", f"ui_kiosk_test_{os.getpid()}_{len(apps)}")
        app = ui.App(environment.load_settings(), windowed=True, geometry=geometry, **options)
        apps.append(app)
        pump_until(app, lambda: app.winfo_ismapped(), what="window mapped")
        # The scanner types into whatever has the keyboard focus: wait until the kiosk took it.
        pump_until(app, lambda: app.focus_get() is app.scan_bar.entry._entry, what="entry focused")
        pump_until(app, app.state_known, what="every bench's state read by the worker")
        return app

    try:
        yield make
    finally:
        for app in apps:
            for proc, _started in app.supervisor.children.values():
                if proc.poll() is None:
                    stop_pid(proc.pid)
                proc.wait(5)
            try:
                app.shutdown()
            except Exception:
                pass
        stop_bancs()


@pytest.fixture
def kiosk(mqtt_env: dict[str, str], xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ui.App]]:
    """Factory of in-process kiosks on the Xvfb display, with the test's broker."""
    yield from kiosk_factory(xvfb_display, monkeypatch)


@pytest.fixture
def esp(mqtt_env: dict[str, str]) -> Iterator[Esp]:
    client = Esp()
    yield client
    client.close()


def wait_file(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout waiting for {what}")
        time.sleep(0.02)


def latest_folder(serial: str, banc: str) -> Path:
    """The folder of the battery's latest test on this bench (the test must exist)."""
    latest = home_store().latest_test(serial, banc)
    assert latest is not None, f"no test of {serial} on {banc}"
    return latest.path


def phase_1_with_ri_then_step_2(esp: Esp, banc: str, serial: str) -> Path:
    """The ESP's phase 1 (step 1, Ri results, recorded by banc.py) then step 2; the test folder."""
    t = protocol.topics(banc)
    esp.send(t.step, "1")
    esp.send(t.ri_results, protocol.encode_ri_results(
        {"ri_discharge": 0.012, "ri_charge": 0.011, "diffusion_discharge": 0.004, "diffusion_charge": 0.005,
         "temperature_c": 25.0}))
    folder = latest_folder(serial, banc)
    wait_file(lambda: (record.corrected_summary_file(folder) or {}).get("ri_discharge_average") is not None,
              what="banc.py records the Ri results")
    esp.send(t.step, "2")
    return folder


# =========================================================================== tests


def test_scan_starts_banc_py_and_panel_follows_the_bench(store: Store, kiosk: Callable[..., ui.App], esp: Esp,
                                                         xvfb_display: str) -> None:
    app = kiosk("1280x800+0+0")
    panel = app.panels["banc1"]
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    assert text_of(panel, "status") == "Libre"

    # --- banc1, serial, banc1 typed like the scanner: banc.py starts in its own session.
    type_scan("banc1", app)
    assert "Banc 1 libre" in app.scan_bar.message_text
    type_scan("RW-GUI00001", app)
    assert "Rescannez banc1" in app.scan_bar.message_text
    type_scan("banc1", app)
    assert "Test lancé sur le banc 1" in app.scan_bar.message_text
    pump_until(app, lambda: store.is_banc_running("banc1"), what="banc.py running")
    proc, _ = app.supervisor.children["banc1"]
    assert proc.args == [sys.executable, str(ui.BANC_SCRIPT), "banc1", "RW-GUI00001"]
    assert os.getsid(proc.pid) == proc.pid  # own session: survives a restart of the kiosk
    info = store.get_banc_info("banc1")
    assert (info.status, info.serial_pending) == (record.STATUS_OCCUPIED, "RW-GUI00001")
    pump_until(app, lambda: text_of(panel, "status") == "Occupé - RW-GUI00001 - Phase 1/5", what="occupied")
    pump_until(app, lambda: ("banc1/command", "1") in esp.commands, what="banc.py announces step 1")

    # --- refusals while it runs.
    type_scan("banc1", app)
    assert "déjà en cours" in app.scan_bar.message_text
    assert color_of_message(app) == uic.COLOR_ALARM
    type_scan("reset", app)
    type_scan("banc1", app)
    assert "Reset refusé" in app.scan_bar.message_text
    assert store.get_banc_info("banc1").status == record.STATUS_OCCUPIED

    # --- phase 1: Ri results go to banc.py; the panel reads them from config.json at step 2.
    t = protocol.topics("banc1")
    esp.send(t.esp_status, "online")
    folder = phase_1_with_ri_then_step_2(esp, "banc1", "RW-GUI00001")
    for seq in range(1, 4):
        esp.bms("banc1", seq, voltage_v=53.1, current_a=48.0, soc_pct=67.5, temperature_c=24.8,
                capacity_ah=0.0, energy_wh=0.0, balancing=1)
    pump_until(app, lambda: text_of(panel, "voltage") == f"53,10{NB}V", what="BMS line shown")
    assert text_of(panel, "current") == f"48,0{NB}A"
    assert text_of(panel, "soc") == f"68{NB}%"
    assert text_of(panel, "temperature") == f"24,8{NB}°C"
    assert text_of(panel, "capacity") == f"0,00{NB}Ah"
    assert text_of(panel, "balance") == f"16{NB}mV"
    assert text_of(panel, "balancing") == "actif"
    assert panel.widgets["soc_gauge"].text == f"68{NB}%"
    assert color_of(panel, "voltage") == uic.COLOR_OK
    assert text_of(panel, "phase") == "Phase 2/5 : Charge"
    assert time_left_near(panel, phase2_left_s(67.5, 48.0)), text_of(panel, "time_left")
    # Read from config.json by the worker when step 2 arrives: it may land after the BMS line.
    pump_until(app, lambda: text_of(panel, "ri") == f"Ri 25 °C d/c : 12,00 / 11,00{NB}mΩ", what="Ri read at step 2")
    assert text_of(panel, "diffusion") == f"Diff. 25 °C d/c : 4,00 / 5,00{NB}mΩ"
    assert panel.widgets["esp"].online is True and panel.widgets["banc_process"].online is True
    assert panel.widgets["phase_bar"].states == ["done", "running", "pending", "pending", "pending"]

    # --- colours, nurses, security alert hidden by the next step.
    # 310 mV: beyond the 300 mV grading.json's model accepts for RW- serials (130 mV was red before the model counted)
    esp.bms("banc1", 4, temperature_c=58.0, cell_min_mv=3200, cell_max_mv=3510, current_a=-49.0)
    for j in range(1, 7):
        esp.send(t.nurse(j), str(10 * j))
    esp.send(t.security, "Timeout BMS : aucune donnée depuis 30 s")
    pump_until(app, lambda: panel.security_visible, what="security alert")
    pump_until(app, lambda: text_of(panel, "temperature") == f"58,0{NB}°C", what="hot line shown")
    assert "Timeout BMS" in text_of(panel, "security")
    assert color_of(panel, "temperature") == uic.COLOR_ALARM
    assert color_of(panel, "balance") == uic.COLOR_ALARM
    assert panel.widgets["progress_bar_nurse"].values == [10, 20, 30, 40, 50, 60]
    assert app.nurse_soc["banc1"] == [10, 20, 30, 40, 50, 60]
    assert_canvas_texts_apart(panel.widgets["progress_bar_nurse"].canvas, "value")
    for j in range(1, 7):  # issue 14, item 4: six nurses at 100 % once read "100100100100100100" here
        esp.send(t.nurse(j), "100")
    pump_until(app, lambda: panel.widgets["progress_bar_nurse"].values == [100] * 6, what="nurses at 100 %")
    assert_canvas_texts_apart(panel.widgets["progress_bar_nurse"].canvas, "value")
    esp.send(t.step, "3")
    pump_until(app, lambda: not panel.security_visible, what="alert hidden by the next step")
    esp.bms("banc1", 5, voltage_v=51.9, current_a=-50.0, soc_pct=60.0, capacity_ah=40.0, energy_wh=2050.0)
    pump_until(app, lambda: text_of(panel, "capacity") == f"40,00{NB}Ah", what="phase 3 line")
    assert text_of(panel, "energy") == f"2{NB}050{NB}Wh"
    assert text_of(panel, "time_left") == "01:12:00"  # 60 Ah left at 50 A
    assert panel.widgets["phase_bar"].states == ["done", "done", "running", "pending", "pending"]
    assert text_of(panel, "status") == "Occupé - RW-GUI00001 - Phase 3/5"
    esp.send(t.security, "Température haute")
    pump_until(app, lambda: panel.security_visible, what="second alert")
    screenshot(xvfb_display, app, "kiosk_1280x800_running.png")

    # --- graph then the bench: the report's charts, or a clear message.
    type_scan("graph", app)
    assert "Graphiques" in app.scan_bar.message_text
    before = {str(w) for w in app.winfo_children()}
    type_scan("banc1", app)
    report = _report_module()
    if report is not None and callable(getattr(report, "show_charts", None)):
        pump_until(app, lambda: any(str(w) not in before and isinstance(w, tk.Toplevel)
                                    for w in app.winfo_children()), what=f"charts window ({app.scan_bar.message_text})")
        pump(app, 1.5)  # the report draws its charts after opening the window
        charts = next(w for w in app.winfo_children() if str(w) not in before and isinstance(w, tk.Toplevel))
        screenshot(xvfb_display, charts, "kiosk_charts_banc1.png")
        # The charts window has the keyboard: a scan still reaches the workflow.
        charts.focus_force()
        pump_until(app, lambda: app.focus_get() is not None and app.focus_get().winfo_toplevel() is charts,
                   what="charts window focused")
        type_scan("banc9", app)
        assert "Banc inconnu" in app.scan_bar.message_text
        charts.destroy()
    else:
        assert "Graphiques non disponibles" in app.scan_bar.message_text
    pump(app, 1.1)
    assert app.focus_get() is app.scan_bar.entry._entry  # the scanner's keystrokes still land in the entry

    # --- end reaches every bench's command topic.
    type_scan("end", app)
    assert "« end » envoyé aux 4 bancs" in app.scan_bar.message_text
    wanted = {(protocol.topics(n).command, "end") for n in range(1, 5)}
    pump_until(app, lambda: wanted <= set(esp.commands), what="end on every command topic")

    # --- the ESP answers 9: phase bar stopped, time left 00:00:00, label keeps phase 3; banc.py exits.
    esp.send(t.step, "9")
    pump_until(app, lambda: text_of(panel, "time_left") == "00:00:00", what="step 9")
    assert text_of(panel, "phase") == "Phase 3/5 : Décharge (arrêt)"
    assert panel.widgets["phase_bar"].states == ["done", "done", "stopped", "pending", "pending"]
    assert proc.wait(10) == 0
    pump_until(app, lambda: text_of(panel, "status") == "Interrompu - RW-GUI00001 - scannez pour reprendre",
               timeout_s=5, what="interrupted state")
    assert "banc1" not in app.supervisor.children  # reaped: no zombie

    # --- resume by scanning: the same folder, the phase reached.
    type_scan("banc1", app)
    assert "occupé par RW-GUI00001" in app.scan_bar.message_text
    type_scan("RW-GUI00001", app)
    type_scan("banc1", app)
    assert "Test repris sur le banc 1 : RW-GUI00001 (phase 3/5)" in app.scan_bar.message_text
    pump_until(app, lambda: ("banc1/command", "3") in esp.commands, what="resumed at step 3")
    assert latest_folder("RW-GUI00001", "banc1") == folder


def color_of_message(app: ui.App) -> str:
    return str(app.scan_bar.message.cget("text_color"))


def _report_module() -> Optional[types.ModuleType]:
    try:
        from banclfp.reporting import report
    except Exception:
        return None
    return report


def test_refusals_bad_payloads_broker_loss_and_800x480(store: Store, kiosk: Callable[..., ui.App], esp: Esp,
                                                      broker: MosquittoBroker,
                                                      xvfb_display: str) -> None:
    # banc2 holds an interrupted test (banc.py not running, test unfinished).
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc2", "RW-STOP0002", now)
    store.load_or_create_config(folder, "banc2", "RW-STOP0002", now)
    store.update_config(folder, 4, now)
    store.set_banc_status("banc2", record.STATUS_OCCUPIED, "RW-STOP0002", 4)

    app = kiosk("800x480+0+0")
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    p1, p2, p3, p4 = (app.panels[f"banc{n}"] for n in range(1, 5))
    assert text_of(p2, "status") == "Interrompu - RW-STOP0002 - scannez pour reprendre"
    assert p2.widgets["phase_bar"].states == ["done", "done", "done", "stopped", "pending"]

    # --- every refusal is a red French message; nothing is written.
    for scans, fragment in [
        (["banc9"], "Banc inconnu"),
        (["hello"], "Code non reconnu"),
        (["RW-ABCD1234"], "Scannez d'abord le banc"),
        (["banc3", "RW-12"], "Numéro de série invalide"),
        (["banc3", "RW-STOP0002"], "RW-STOP0002 est déjà sur le banc 2"),
        (["banc2", "RW-OTHER0003"], "Le banc 2 attend RW-STOP0002"),
        (["banc3", "RW-ABCD1234", "banc4"], "Confirmation attendue : banc3, reçu banc4"),
    ]:
        for text in scans:
            type_scan(text, app)
        assert fragment in app.scan_bar.message_text, (scans, app.scan_bar.message_text)
        assert color_of_message(app) == uic.COLOR_ALARM
    assert store.get_banc_info("banc3").status == record.STATUS_AVAILABLE
    assert not any(store.is_banc_running(b) for b in store.all_bancs())

    # --- malformed payloads are ignored, the kiosk goes on.
    t1 = protocol.topics("banc1")
    for topic, payload in [(t1.bms_data, "1,2,3"), (t1.bms_data, "x" * 600), (t1.step, "7"), (t1.nurse(1), "150"),
                           (t1.esp_status, "maybe"), (t1.bms_data, "1,nan,1,1,1,1,1,1,1,0")]:
        esp.send(topic, payload)
    esp.send(t1.esp_status, "online")
    pump_until(app, lambda: p1.widgets["esp"].online is True, what="good status after bad payloads")
    pump(app, 2 * ui.BMS_DISPLAY_INTERVAL_S)  # the bad BMS lines have been through the display flush
    assert text_of(p1, "voltage") == "—" and p1.widgets["progress_bar_nurse"].values[0] is None
    # banc1 is free: a step its ESP publishes is no test's phase (issue 14, item 13: it used to animate one).
    esp.send(t1.step, "3")
    pump(app, 0.3)
    assert text_of(p1, "phase") == "Phase -/5" and p1.widgets["phase_bar"].running is None
    assert text_of(p1, "time_left") == "--:--:--"

    # --- a realistic screen at 800x480, then look at it.
    esp.send(t1.esp_status, "online")
    esp.bms("banc1", 1, voltage_v=51.2, current_a=-50.0, soc_pct=55.0, temperature_c=27.3, capacity_ah=44.6,
            energy_wh=2290.0)
    for j, soc in enumerate((35, 36, 34, 37, 33, 35), start=1):
        esp.send(t1.nurse(j), str(soc))
    t3 = protocol.topics("banc3")
    esp.send(t3.esp_status, "online")
    esp.send(t3.step, "1")
    esp.send(t3.step, "2")
    esp.bms("banc3", 7, voltage_v=57.9, current_a=49.8, soc_pct=100.0, temperature_c=46.2, capacity_ah=0.0,
            energy_wh=0.0, cell_min_mv=3600, cell_max_mv=3668, balancing=1)
    for j in range(1, 7):
        esp.send(t3.nurse(j), "100")
    t4 = protocol.topics("banc4")
    esp.send(t4.esp_status, "offline")
    esp.send(t4.security, "Timeout BMS : aucune donnée du banc 4 depuis 30 s")
    pump_until(app, lambda: p4.security_visible and text_of(p3, "voltage") == f"57,90{NB}V"
               and text_of(p1, "voltage") == f"51,20{NB}V", what="800x480 data")
    assert color_of(p3, "temperature") == uic.COLOR_WARN and color_of(p3, "balance") == uic.COLOR_WARN
    assert p4.widgets["esp"].online is False
    pump_until(app, lambda: p3.widgets["progress_bar_nurse"].values == [100] * 6, what="banc3's nurses")
    pump(app, 0.3)
    # Issue 14: "100 %" clear of the gauge's border, nurse values and caption legible and apart, nothing cut.
    for panel in (p1, p2, p3, p4):
        assert_panel_holds(panel)
    assert app.fonts["message"].cget("size") >= 16
    screenshot(xvfb_display, app, "kiosk_800x480.png")

    # --- broker lost: visible state, `end` refused clearly; back when the broker returns.
    broker.kill()
    pump_until(app, lambda: app.scan_bar.broker_connected is False, what="broker disconnected")
    assert str(app.scan_bar.broker.cget("text")) == "Broker déconnecté"
    type_scan("end", app)
    assert "Broker déconnecté : « end » non envoyé" in app.scan_bar.message_text
    broker.start()
    pump_until(app, lambda: app.scan_bar.broker_connected, timeout_s=20, what="broker reconnected")

    # --- reset frees the interrupted bench.
    type_scan("reset", app)
    type_scan("banc2", app)
    assert "Banc 2 libéré" in app.scan_bar.message_text
    assert store.get_banc_info("banc2").status == record.STATUS_AVAILABLE
    assert text_of(p2, "status") == "Libre"
    assert p2.widgets["phase_bar"].states == ["pending"] * 5


def test_graph_without_report_says_so_and_systemd_notified(store: Store, kiosk: Callable[..., ui.App],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """A report module without show_charts: a clear message. READY=1 then WATCHDOG=1 reach systemd's socket."""
    import socket
    import types

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))

    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", "RW-GRAPH001", now)
    store.load_or_create_config(folder, "banc1", "RW-GRAPH001", now)
    monkeypatch.setitem(sys.modules, "banclfp.reporting.report", types.ModuleType("banclfp.reporting.report"))
    app = kiosk("1280x800+0+0")
    received: list[bytes] = []

    def notified() -> bool:
        try:
            received.append(notify.recv(64))
        except BlockingIOError:
            pass
        return b"WATCHDOG=1" in received

    pump_until(app, notified, what="systemd notifications")
    notify.close()
    assert received[0] == b"READY=1"
    type_scan("graph", app)
    type_scan("RW-GRAPH001", app)
    assert "Graphiques non disponibles" in app.scan_bar.message_text
    type_scan("graph", app)
    type_scan("RW-NONE0001", app)
    assert "Aucun test trouvé pour RW-NONE0001" in app.scan_bar.message_text


def test_sixteen_benches_grid_and_flood(kiosk: Callable[..., ui.App], esp: Esp, monkeypatch: pytest.MonkeyPatch,
                                        xvfb_display: str) -> None:
    monkeypatch.setenv("BANC_NUM_BANCS", "16")
    app = kiosk("1920x1080+0+0")
    assert len(app.panels) == 16
    assert app.panels["banc16"].grid_info()["row"] == 3 and app.panels["banc16"].grid_info()["column"] == 3
    assert app.scan_bar.grid_info()["columnspan"] == 4
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    # 16 benches x 20 lines as fast as the broker takes them: every panel ends on its last line.
    for seq in range(20):
        for n in range(1, 17):
            line = protocol.BmsLine(seq, 50.0 + n / 10, -10.0, 100.0, 25.0, 1.0, 50.0, 3300, 3310, 0)
            esp.client.publish(protocol.topics(n).bms_data, protocol.encode_bms_line(line), qos=1)
    pump_until(app, lambda: all(text_of(app.panels[f"banc{n}"], "voltage") == f"{50.0 + n / 10:.2f}{NB}V".replace(".", ",")
                                for n in range(1, 17)), timeout_s=15, what="16 panels updated")
    pump_until(app, lambda: app.inbox.empty(), what="queue drained")
    # All 320 lines reached the queue (a line replaced while it waited is not taken out).
    assert app.inbox.received >= 320 and app.stats["messages"] <= app.inbox.received
    for n in range(1, 5):  # a row of benches with six nurses at 100 %: their values must not run together
        for j in range(1, 7):
            esp.client.publish(protocol.topics(n).nurse(j), "100", qos=1)
    pump_until(app, lambda: all(app.panels[f"banc{n}"].widgets["progress_bar_nurse"].values == [100] * 6
                                for n in range(1, 5)), what="nurses at 100 %")
    # Issue 14: at 16 benches the operator message stays legible, and no panel cuts a text.
    assert app.fonts["message"].cget("size") >= 16
    for panel in app.panels.values():
        assert_panel_holds(panel)
    screenshot(xvfb_display, app, "kiosk_1920x1080_16_bancs.png")
    # The same 16 benches on the Pi's 800 x 480 screen.
    app.geometry("800x480+0+0")
    pump_until(app, lambda: app.winfo_width() == 800 and app.fonts.scale == ui.MIN_SCALE, what="rescaled")
    pump(app, 0.5)
    for panel in app.panels.values():
        assert_panel_holds(panel)
    assert app.fonts["message"].cget("size") >= 16
    # The compact layout has no Ri line: a recovery notice goes over the status line, never over the measures.
    esp.send(protocol.topics("banc6").security, "Données BMS rétablies après 31 s de silence")
    p6 = app.panels["banc6"]
    pump_until(app, lambda: p6.notice_visible, what="notice in the compact layout")
    pump(app, 0.1)
    for key in ("voltage", "current", "soc", "temperature"):
        assert not overlaps_vertically(p6.widgets["notice"], p6.widgets[key]), key
    screenshot(xvfb_display, app, "kiosk_800x480_16_bancs.png")


def test_kiosk_killed_and_restarted_banc_py_keeps_going(store: Store, kiosk: Callable[..., ui.App], esp: Esp,
                                                        mqtt_env: dict[str, str],
                                                        xvfb_display: str, tmp_path: Path) -> None:
    import socket

    # The first kiosk runs as systemd would run it (NOTIFY_SOCKET set); its banc.py must not inherit it.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    env = dict(mqtt_env, DISPLAY=xvfb_display, NOTIFY_SOCKET=str(tmp_path / "notify"))
    first = subprocess.Popen(
        [sys.executable, str(REPO_DIR / "ui.py"), "--windowed", "--geometry", "1280x800+0+0"],
        cwd=str(REPO_DIR), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        window = xdotool("search", "--sync", "--onlyvisible", "--name", WINDOW_TITLE).split()[0]
        xdotool("windowfocus", "--sync", window)
        time.sleep(0.3)
        for text in ("banc1", "RW-KILL0001", "banc1"):
            type_scan(text)
        wait_file(lambda: store.is_banc_running("banc1"), what="banc.py started by the first kiosk")
        # Subscribed once it announces its start step (before that, what the ESP sends is not queued for it).
        wait_file(lambda: ("banc1/command", "1") in esp.commands, what="banc.py announces step 1")
        banc_pid = store.banc_process_pid("banc1")
        assert banc_pid is not None
        child_env = Path(f"/proc/{banc_pid}/environ").read_bytes().split(b"\0")
        assert any(item.startswith(b"BANC_HOME=") for item in child_env)
        assert not any(item.startswith(b"NOTIFY_SOCKET=") for item in child_env)
        notify.close()
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(5)

    # The kiosk is gone; the bench goes on and banc.py records it.
    t = protocol.topics("banc1")
    folder = latest_folder("RW-KILL0001", "banc1")
    esp.send(t.step, "1")
    esp.send(t.step, "2")
    esp.send(t.step, "3")
    for seq in range(1, 4):
        esp.bms("banc1", seq, voltage_v=52.0, current_a=-50.0, soc_pct=70.0, capacity_ah=30.0, energy_wh=1560.0)
    wait_file(lambda: len((folder / record.DATA_CSV_FILE).read_text().splitlines()) >= 4, what="rows in data.csv")
    assert store.banc_process_pid("banc1") == banc_pid
    wait_file(lambda: store.get_banc_info("banc1").current_step == 3, what="step 3 in bancs_config.json")

    # A new kiosk: the bench occupied, phase 3, and live data.
    app = kiosk("1280x800+0+0")
    panel = app.panels["banc1"]
    assert text_of(panel, "status") == "Occupé - RW-KILL0001 - Phase 3/5"
    assert panel.widgets["phase_bar"].states == ["done", "done", "running", "pending", "pending"]
    pump_until(app, lambda: panel.widgets["banc_process"].online is True, what="banc.py online (retained)")
    esp.bms("banc1", 4, voltage_v=51.7, current_a=-50.0, soc_pct=65.0, capacity_ah=35.0, energy_wh=1800.0)
    pump_until(app, lambda: text_of(panel, "voltage") == f"51,70{NB}V", what="live data after the restart")
    assert text_of(panel, "capacity") == f"35,00{NB}Ah"
    assert store.banc_process_pid("banc1") == banc_pid
    screenshot(xvfb_display, app, "kiosk_1280x800_after_restart.png")


class TkThreadIoGuard:
    """Records every disk wait, lock, process scan or spawn made by the Tk thread while it runs the kiosk's callbacks.

    The kiosk's callbacks run inside app.update() (the tests pump the loop with it), on the
    main thread: the guard marks that span and the patched functions note who calls them.
    Calls made by the test itself between two updates, or by other threads, are not counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
        import builtins
        import fcntl
        import threading

        self.home = str(home)
        self.calls: list[str] = []
        self._inside = threading.local()
        self._main = threading.main_thread()
        for module, name in ((os, "fsync"), (os, "fdatasync"), (os, "replace"), (os, "rename"), (os, "open"),
                             (fcntl, "flock"), (fcntl, "lockf"), (psutil, "Process"), (psutil, "process_iter"),
                             (subprocess, "Popen")):
            monkeypatch.setattr(module, name, self._spy(f"{module.__name__}.{name}", getattr(module, name)))
        real_open = builtins.open

        def spy_open(file: object, *args: object, **kwargs: object) -> object:
            if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(self.home):
                self._note(f"open({os.fspath(file)})")
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(builtins, "open", spy_open)

    def _note(self, what: str) -> None:
        if getattr(self._inside, "tk", False) and threading_current() is self._main:
            import traceback

            where = "".join(traceback.format_stack(limit=6)[:-2])
            self.calls.append(f"{what}\n{where}")

    def _spy(self, what: str, real: Callable) -> Callable:
        guard = self

        if isinstance(real, type):  # psutil.Process, subprocess.Popen: keep them classes (isinstance checks)
            class Spied(real):  # type: ignore[valid-type, misc]
                def __init__(self, *args: object, **kwargs: object) -> None:
                    guard._note(what)
                    super().__init__(*args, **kwargs)

            return Spied

        def spied(*args: object, **kwargs: object) -> object:
            guard._note(what)
            return real(*args, **kwargs)

        return spied

    def watch(self, app: ui.App) -> None:
        """From now on, every app.update() (where the kiosk's callbacks run) is watched."""
        real_update = app.update

        def update() -> None:
            self._inside.tk = True
            try:
                real_update()
            finally:
                self._inside.tk = False

        app.update = update


def threading_current() -> object:
    import threading

    return threading.current_thread()


def test_the_tk_thread_never_waits_on_the_disk_or_the_process_table(
    kiosk: Callable[..., ui.App], esp: Esp, monkeypatch: pytest.MonkeyPatch, xvfb_display: str, banc_home: Path
) -> None:
    """Start, run, chart, stop and reset tests from the real kiosk: the Tk thread calls no fsync, flock, os.replace,
    os.open, open() of the lab's files, psutil scan or process spawn — the worker thread does all of it."""
    guard = TkThreadIoGuard(monkeypatch, banc_home)
    app = kiosk("1280x800+0+0")
    guard.watch(app)
    panel = app.panels["banc1"]
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")

    for text in ("banc1", "RW-TKIO0001", "banc1"):
        type_scan(text, app)
    assert "Test lancé sur le banc 1" in app.scan_bar.message_text
    pump_until(app, lambda: ("banc1/command", "1") in esp.commands, what="banc.py announces step 1")
    t = protocol.topics("banc1")
    phase_1_with_ri_then_step_2(esp, "banc1", "RW-TKIO0001")
    for seq in range(1, 4):
        esp.bms("banc1", seq, voltage_v=53.1, current_a=48.0)
    pump_until(app, lambda: text_of(panel, "ri") == f"Ri 25 °C d/c : 12,00 / 11,00{NB}mΩ", what="Ri read at step 2")
    pump_until(app, lambda: time_left_near(panel, phase2_left_s(67.5, 48.0)),
               what="phase-2 time left: the CC at this current, then the charge profile's CV")
    for text in ("banc1", "reset", "banc1"):  # refusals: the bench is busy
        type_scan(text, app)
    assert "Reset refusé" in app.scan_bar.message_text
    before = {str(w) for w in app.winfo_children()}
    for text in ("graph", "banc1"):
        type_scan(text, app)
    pump_until(app, lambda: any(str(w) not in before and isinstance(w, tk.Toplevel) for w in app.winfo_children()),
               what=f"charts window ({app.scan_bar.message_text})")
    pump(app, 2.5)  # the charts load; the periodic refresh runs at least once
    for window in app.winfo_children():
        if isinstance(window, tk.Toplevel):
            window.destroy()
    esp.send(t.step, "9")
    pump_until(app, lambda: text_of(panel, "status") == "Interrompu - RW-TKIO0001 - scannez pour reprendre",
               timeout_s=8, what="interrupted state")
    for text in ("reset", "banc1"):
        type_scan(text, app)
    pump_until(app, lambda: text_of(panel, "status") == "Libre", what="bench reset")
    type_scan("end", app)
    assert "« end » envoyé" in app.scan_bar.message_text

    assert guard.calls == [], "the Tk thread waited on the disk or the process table:\n" + "\n".join(guard.calls)
