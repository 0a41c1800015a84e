"""What an operator sees is never stale, alarming by mistake, or cut off (issue 14), on the real kiosk (Xvfb).

One kiosk session at 1280 x 800 with 6 benches walks through the numbered items of the issue
with the real banc.py and a real Mosquitto; the 800 x 480 and 16-bench layouts are checked in
tests/test_ui_gui.py's sessions at those sizes (and a --windowed kiosk on an 800 x 480 screen here).
Each check asserts widget state: text, colour, geometry.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

import pytest

from banclfp.analysis import measures as analysis
from banclfp.infra import environment
from banclfp.kiosk import app as ui, messages as kiosk_messages, widgets as uic
from banclfp.kiosk.chart_window import ChartWindow
from banclfp.kiosk.messages import Kind
from banclfp.kiosk.state import LINK_IDLE
from banclfp.presentation.formatting import format_milliohm
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.support import REPO_DIR, Xvfb
from banclfp.wire import protocol
from tests.test_ui_gui import (  # noqa: F401 - kiosk and esp are fixtures
    NB,
    WINDOW_TITLE,
    Esp,
    assert_canvas_texts_apart,
    assert_elided_not_cut,
    assert_gauge_text_clear_of_border,
    esp,
    kiosk,
    latest_folder,
    overlaps_vertically,
    pump,
    pump_until,
    screenshot,
    text_of,
    type_scan,
    wait_file,
    xdotool,
)

pytestmark = pytest.mark.gui

LONG_SERIAL = "RW-" + "LONGSERIAL0123456789ABCDEFGHIJKL"[:32]
PROMPT = "Scannez un banc pour lancer un test"


def message_of(app: ui.App) -> tuple[str, str]:
    return app.scan_bar.message_text, app.scan_bar.message_color


def start_by_scans(app: ui.App, banc: str, serial: str) -> None:
    for text in (banc, serial, banc):
        type_scan(text, app)
    assert f"Test lancé sur le banc {protocol.banc_number(banc)}" in app.scan_bar.message_text


def interrupted_test(banc: str, serial: str, step: int) -> Path:
    """An unfinished test on `banc` whose banc.py is not running (as after a step 9), data.csv header only."""
    store = Store.from_settings(environment.load_settings())
    now = record.now_local()
    folder, _ = store.find_or_create_test_folder(banc, serial, now)
    store.load_or_create_config(folder, banc, serial, now)
    (folder / record.DATA_CSV_FILE).write_text(",".join(record.DATA_CSV_HEADER) + "\n")
    for s in range(2, step + 1):
        store.update_config(folder, s, now)
    store.set_banc_status(banc, record.STATUS_OCCUPIED, serial, step)
    return folder


# =========================================================================== the session


def test_operator_sees_nothing_stale_alarming_by_mistake_or_cut(
    kiosk: Callable[..., ui.App], esp: Esp, monkeypatch: pytest.MonkeyPatch, xvfb_display: str  # noqa: F811 - fixtures
) -> None:
    monkeypatch.setenv("BANC_NUM_BANCS", "6")
    store = Store.from_settings(environment.load_settings())  # the kiosk's store: the 6 benches
    monkeypatch.setattr(uic, "NOTICE_LIFETIME_S", 1.0)  # 30 s in production
    monkeypatch.setitem(kiosk_messages.LIFETIMES_S, Kind.INFO, 0.4)  # 30 s in production
    interrupted_test("banc2", LONG_SERIAL, 3)
    interrupted_test("banc3", "RW-ABAN0003", 1)
    app = kiosk("1280x800+0+0")
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    p1, p2, p4, p6 = (app.panels[b] for b in ("banc1", "banc2", "banc4", "banc6"))

    # --- 6. A long serial: only the serial is shortened with "…", the instruction after it stays whole.
    status2 = p2.widgets["status"]
    assert status2.full_text == f"Interrompu - {LONG_SERIAL} - scannez pour reprendre"
    assert status2.elided
    assert_elided_not_cut(status2)
    assert p2.widgets["banc_process"].color == uic.IDLE_BG  # stopped before this kiosk: no banc.py expected

    # --- 13. A free bench whose ESP publishes steps: no phase animated, no time left.
    t6 = protocol.topics("banc6")
    esp.send(t6.step, "2")
    esp.bms("banc6", 1, voltage_v=55.0, current_a=40.0)
    pump_until(app, lambda: text_of(p6, "voltage") == f"55,00{NB}V", what="banc6 measures")
    assert p6.widgets["phase_bar"].running is None and text_of(p6, "phase") == "Phase -/5"
    assert text_of(p6, "time_left") == "--:--:--"

    # --- 1. "Test lancé … (phase 1/5)" is withdrawn once the bench is in phase 2.
    start_by_scans(app, "banc1", "RW-OPER0001")
    assert message_of(app) == ("Test lancé sur le banc 1 : RW-OPER0001 (phase 1/5).", uic.COLOR_OK)
    pump_until(app, lambda: ("banc1/command", "1") in esp.commands, what="banc.py announces step 1")
    t1 = protocol.topics("banc1")
    esp.send(t1.esp_status, "online")
    esp.send(t1.step, "1")
    # --- 10. Ri measured at 35 °C: the kiosk shows the 25 °C value, labelled so, the one the charts give.
    esp.send(t1.ri_results, protocol.encode_ri_results(
        {"ri_discharge": 0.012, "ri_charge": 0.011, "diffusion_discharge": 0.004, "diffusion_charge": 0.005,
         "temperature_c": 35.0}))
    folder1 = latest_folder("RW-OPER0001", "banc1")
    wait_file(lambda: (record.corrected_summary_file(folder1) or {}).get("ri_discharge_average") is not None,
              what="banc.py records the Ri results")
    pump(app, 0.3)
    assert app.scan_bar.message_text.startswith("Test lancé")  # phase 1 still: still true
    esp.send(t1.step, "2")
    pump_until(app, lambda: app.scan_bar.message_text == PROMPT, what="success withdrawn at phase 2")
    ri_25 = format_milliohm(store.static.correct_to_25c(0.012, 35.0))
    assert ri_25 != format_milliohm(0.012)
    pump_until(app, lambda: text_of(p1, "ri").startswith(f"Ri 25 °C d/c : {ri_25} / "), what="Ri at 25 °C")
    chart_ri = {r.key: r for r in analysis.load_report(folder1, store.static.correct_to_25c, min_gap_s=30.0).summary.resistances}  # what the charts' panel shows
    assert format_milliohm(chart_ri["ri_discharge"].at_25c_ohm) == ri_25

    # --- 4. Six nurses at 100 %: never "100100100…", every value clear of its neighbours.
    for j in range(1, 7):
        esp.send(t1.nurse(j), "100")
    esp.bms("banc1", 1, voltage_v=56.2, current_a=48.0, soc_pct=100.0, temperature_c=31.0)
    pump_until(app, lambda: p1.widgets["progress_bar_nurse"].values == [100] * 6, what="nurses at 100")
    nurses = p1.widgets["progress_bar_nurse"]
    assert nurses.value_texts in ([f"100{NB}%"], ["100"] * 6)
    assert_canvas_texts_apart(nurses.canvas, "value")
    assert_canvas_texts_apart(nurses.canvas, "caption")
    pump_until(app, lambda: p1.widgets["soc_gauge"].text == f"100{NB}%", what="SOC 100")
    assert_gauge_text_clear_of_border(p1.widgets["soc_gauge"])

    # --- 2. A recovery notice is information: blue, under the measures, never the red alarm; it fades.
    esp.send(t1.security, "Données BMS rétablies après 47 s de silence")
    pump_until(app, lambda: p1.notice_visible, what="notice shown")
    notice = p1.widgets["notice"]
    assert not p1.security_visible
    assert str(notice.cget("fg_color")) == uic.NOTICE_BG and str(notice.cget("text_color")) == uic.COLOR_INFO
    assert notice.full_text == "✓ Données BMS rétablies après 47 s de silence"
    for key in ("soc", "temperature", "voltage", "capacity"):
        assert not overlaps_vertically(notice, p1.widgets[key]), key
    # A real alarm: red, stays; the notice that its subject is back clears it.
    esp.send(t1.security, "Aucune donnée BMS valide depuis 30 s : vérifier l'ESP32, le BMS et leur liaison")
    pump_until(app, lambda: p1.security_visible, what="alarm shown")
    assert str(p1.widgets["security"].cget("fg_color")) == uic.ALERT_BG
    pump_until(app, lambda: not p1.notice_visible, timeout_s=4, what="notice faded")
    assert p1.security_visible  # the alarm outlived the notice
    esp.send(t1.security, "Données BMS rétablies après 40 s de silence")
    pump_until(app, lambda: not p1.security_visible, what="alarm cleared by the recovery")
    # Another alarm is acknowledged by a touch.
    esp.send(t1.security, "Température haute")
    pump_until(app, lambda: p1.security_visible, what="second alarm")
    alert = p1.widgets["security"]
    xdotool("mousemove", str(alert.winfo_rootx() + alert.winfo_width() // 2),
            str(alert.winfo_rooty() + alert.winfo_height() // 2), "click", "1", app=app)
    pump_until(app, lambda: not p1.security_visible, what="alarm acknowledged by a touch")
    esp.send(t1.security, "Écriture impossible dans data.csv (disque plein) : nouvel essai chaque seconde")
    pump_until(app, lambda: p1.security_visible, what="third alarm, for the screenshot")
    screenshot(xvfb_display, app, "kiosk_1280x800_6_bancs.png")

    # --- 7. The reset refusal never advises `end` (it stops every bench of the lab).
    assert app.focus_get() is app.scan_bar.entry._entry  # the touch did not leave the keyboard to the alarm
    type_scan("reset", app)
    type_scan("banc1", app)
    text, color = message_of(app)
    assert "Reset refusé" in text and color == uic.COLOR_ALARM
    assert "end" not in text.lower().replace(",", " ").replace(".", " ").split()

    # --- 1. "un test y est déjà en cours d'enregistrement" is withdrawn once step 9 has stopped that banc.py.
    type_scan("banc1", app)
    assert message_of(app) == ("Banc 1 : un test y est déjà en cours d'enregistrement. Pour l'arrêter : stop, banc1, "
                               "banc1.", uic.COLOR_ALARM)
    proc1, _ = app.supervisor.children["banc1"]
    esp.send(t1.step, "9")
    assert proc1.wait(10) == 0
    pump_until(app, lambda: app.scan_bar.message_text == PROMPT, timeout_s=6, what="refusal withdrawn")
    # --- 3. Offline after a stop is the normal course: neutral pills, not the crash red.
    esp.send(t1.esp_status, "offline")
    pump_until(app, lambda: p1.widgets["esp"].online is False, what="ESP offline")
    assert p1.widgets["esp"].state == LINK_IDLE and p1.widgets["banc_process"].state == LINK_IDLE
    assert p1.widgets["banc_process"].color == uic.IDLE_BG != uic.ALERT_BG

    # --- 3. A normal end (step 5), then a reset to "Libre": neutral pills.
    start_by_scans(app, "banc4", "RW-OPER0004")
    pump_until(app, lambda: ("banc4/command", "1") in esp.commands, what="banc4's banc.py announces step 1")
    proc4, _ = app.supervisor.children["banc4"]
    t4 = protocol.topics("banc4")
    esp.send(t4.step, "5")
    assert proc4.wait(10) == 0
    pump_until(app, lambda: p4.widgets["banc_process"].online is False, timeout_s=6, what="banc4's banc.py gone")
    assert p4.widgets["banc_process"].state == LINK_IDLE
    type_scan("reset", app)
    type_scan("banc4", app)
    pump_until(app, lambda: text_of(p4, "status") == "Libre", what="banc4 free")
    assert p4.widgets["banc_process"].state == LINK_IDLE

    # --- 8. A confirmation after the timeout: the refusal stays, and the late confirming scan repeats it.
    app.worker.workflow.timeout_s = 1.0  # 15 s in production (a float: read by the worker thread as it is)
    type_scan("banc6", app)
    type_scan("RW-OPER0006", app)
    pump_until(app, lambda: "non confirmé" in app.scan_bar.message_text, timeout_s=4, what="timeout refusal")
    pump(app, 0.6)  # longer than an information lives here: a refusal stays until the next scan
    assert "banc6 non confirmé, test non lancé" in app.scan_bar.message_text
    type_scan("banc6", app)
    text, color = message_of(app)
    assert "test de RW-OPER0006 NON lancé" in text and color == uic.COLOR_ALARM
    assert not store.is_banc_running("banc6") and text_of(p6, "status") == "Libre"

    # --- 12. A reset that times out sends the operator back to `reset`, not to the bench.
    type_scan("reset", app)
    pump_until(app, lambda: "dépassé" in app.scan_bar.message_text, timeout_s=4, what="reset timeout")
    assert app.scan_bar.message_text.endswith("Recommencez par reset.")
    app.worker.workflow.timeout_s = 15.0

    # --- 14. "48 h" is one word for the layout: a no-break space ties the number to its unit.
    type_scan("banc5", app)
    type_scan("RW-OPER0004", app)  # finished minutes ago on banc4
    text, color = message_of(app)
    assert f"moins de 48{NB}h ouvrées" in text and color == uic.COLOR_ALARM

    # --- 9. A reset (abandoned) test is charted as such, with empty charts that say why.
    type_scan("reset", app)
    type_scan("banc3", app)
    assert "Banc 3 libéré" in app.scan_bar.message_text
    before = {str(w) for w in app.winfo_children()}
    type_scan("graph", app)
    type_scan("banc3", app)  # the bench's latest test (graph + a serial lists the battery's history)
    pump_until(app, lambda: any(str(w) not in before and isinstance(w, tk.Toplevel) for w in app.winfo_children()),
               what=f"charts window ({app.scan_bar.message_text})")
    charts = next(w for w in app.winfo_children() if str(w) not in before and isinstance(w, ChartWindow))
    pump_until(app, lambda: charts.chart is not None, timeout_s=15, what="figure drawn")
    assert charts.chart is not None
    title = charts.chart.title
    assert title == "RW-ABAN0003 — banc3 — abandonné (reset) — aucune mesure", title
    assert "Test abandonné (reset) avant toute mesure" in charts.chart.axes_texts

    # --- 11. A scan typed while the charts cover the kiosk is answered on the charts too.
    charts.focus_force()
    pump_until(app, lambda: app.focus_get() is not None and app.focus_get().winfo_toplevel() is charts,
               what="charts window focused")
    type_scan("banc9", app)
    echo = next(w for w in charts.winfo_children() if isinstance(w, uic.ScanEcho))
    assert "Banc inconnu" in echo.text and echo.kind is Kind.REFUSAL
    assert str(echo.label.cget("text_color")) == uic.COLOR_ALARM
    assert echo.winfo_ismapped() and echo.winfo_height() > 20
    assert echo.winfo_rooty() + echo.winfo_height() <= charts.winfo_rooty() + charts.winfo_height()
    screenshot(xvfb_display, charts, "kiosk_charts_abandoned_with_scan_echo.png")
    charts.destroy()


def test_windowed_kiosk_fits_an_800x480_screen(mqtt_env: dict[str, str]) -> None:
    """5. `ui.py --windowed` on an 800 x 480 screen opens a window that fits it, not 1280 x 800 off-screen.

    Run as a process of its own: Tk keeps its connection to a display after the window is gone, and
    Xlib ends a process whose display server stops, so this test's private screen must not outlive it.
    """
    with Xvfb(800, 480) as small:
        env = dict(mqtt_env, DISPLAY=small.display or "")
        kiosk_proc = subprocess.Popen([sys.executable, str(REPO_DIR / "ui.py"), "--windowed"], cwd=str(REPO_DIR),
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        try:
            def run(*args: str) -> str:
                return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True,
                                      timeout=20, check=True).stdout

            window = run("search", "--sync", "--onlyvisible", "--name", WINDOW_TITLE).split()[0]
            expected = ui.windowed_size(800, 480)
            deadline = time.monotonic() + 10
            while True:
                geometry = dict(line.split("=", 1) for line in run("getwindowgeometry", "--shell", window).split())
                x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
                if (w, h) == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert (w, h) == expected
            assert x >= 0 and x + w <= 800 and y >= 0 and y + h <= 480, (x, y, w, h)
        finally:
            kiosk_proc.terminate()
            kiosk_proc.wait(10)


def test_stop_one_bench_by_scan_and_the_history_prompt_goes_with_its_window(store: Store,
    kiosk: Callable[..., ui.App], esp: Esp  # noqa: F811 - fixtures
) -> None:
    """`stop`, bench, bench publishes `end` on that bench only (issue: the kiosk shows only what is true now);
    a stop on a bench without a running test is refused; the history's "Touchez un test" leaves with its window."""
    app = kiosk("1280x800+0+0")
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    p1, p2 = app.panels["banc1"], app.panels["banc2"]
    assert text_of(p1, "banc_process") == "Enregistrement" and text_of(p1, "esp") == "ESP"

    # A lowercase prefix is the same battery (docs/fichiers.md): accepted, written with RW-.
    start_by_scans(app, "banc1", "rw-stop0001")
    assert "RW-stop0001" in app.scan_bar.message_text
    start_by_scans(app, "banc2", "RW-STOP0002")
    pump_until(app, lambda: {("banc1/command", "1"), ("banc2/command", "1")} <= set(esp.commands),
               what="both banc.py announce step 1")
    for banc in ("banc1", "banc2"):
        esp.send(protocol.topics(banc).step, "1")

    # A touched pill says what its colour means (a touch screen has no tooltip).
    xdotool("mousemove", str(p1.widgets["banc_process"].winfo_rootx() + 5),
            str(p1.widgets["banc_process"].winfo_rooty() + 5), "click", "1", app=app)
    pump_until(app, lambda: "pastille Enregistrement" in app.scan_bar.message_text, what="pill explained")
    assert app.focus_get() is app.scan_bar.entry._entry

    # stop on a free bench: refused, on screen, nothing published.
    type_scan("stop", app)
    assert "scannez le banc dont le test doit s'arrêter" in app.scan_bar.message_text
    type_scan("banc3", app)
    text, color = message_of(app)
    assert text == "Arrêt refusé : banc 3, aucun test n'y est en cours. Rien à arrêter." and color == uic.COLOR_ALARM

    # stop banc1: asked, confirmed, `end` on banc1/command only.
    type_scan("stop", app)
    type_scan("banc1", app)
    assert app.scan_bar.message_text.startswith("Rescannez banc1 pour arrêter le test de RW-stop0001 (courant coupé")
    assert not any(payload == "end" for _topic, payload in esp.commands)  # nothing before the confirmation
    type_scan("banc1", app)
    text, color = message_of(app)
    assert text == "Arrêt envoyé au banc 1 : RW-stop0001 s'arrête (courant coupé). Reprise plus tard : banc1, RW-stop0001, banc1."
    assert color == uic.COLOR_OK
    pump_until(app, lambda: ("banc1/command", "end") in esp.commands, what="end on banc1/command")
    pump(app, 0.5)
    assert [topic for topic, payload in esp.commands if payload == "end"] == ["banc1/command"]
    proc1, _ = app.supervisor.children["banc1"]
    esp.send(protocol.topics("banc1").step, "9")  # the ESP stops and says so; banc.py ends with the test resumable
    assert proc1.wait(10) == 0
    pump_until(app, lambda: text_of(p1, "status").startswith("Interrompu - RW-stop0001"), timeout_s=6,
               what="banc1 interrupted")
    assert store.is_banc_running("banc2") and text_of(p2, "status").startswith("Occupé - RW-STOP0002")

    # The history of a battery: its prompt is withdrawn when the window closes, not 30 s later.
    type_scan("graph", app)
    type_scan("RW-STOP0001", app)
    pump_until(app, lambda: app.history_window is not None and app.history_window.winfo_ismapped(),
               what=f"history window ({app.scan_bar.message_text})")
    assert app.scan_bar.message_text.startswith("Historique de RW-STOP0001 : 1 test. Touchez un test")
    window = app.history_window  # a local: narrowing app.history_window would hide the `is None` check below from mypy
    assert window is not None  # what pump_until waited for (mypy does not see through its lambda)
    window.destroy()
    pump(app, 0.2)
    assert app.history_window is None
    assert app.scan_bar.message_text == PROMPT
