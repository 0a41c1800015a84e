"""The kiosk's own Tk loops and the worker's notices on the real kiosk (Xvfb), without a broker.

Each kiosk here runs with start_mqtt=False: what is checked is the Tk main loop (its `after`
timers) and what the worker thread hands it, not MQTT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from banclfp.kiosk import app as ui, widgets as uic
from banclfp.kiosk.messages import Kind
from tests.test_ui_gui import kiosk_factory, pump, pump_until

pytestmark = pytest.mark.gui

# The App methods that reschedule themselves with App._schedule: one pending timer each at most.
KIOSK_LOOPS = ("drain_queue", "_animate", "_expire", "_focus_loop", "_watchdog", "_first_frame")


def pending_timers(app: ui.App) -> list[str]:
    """The Tcl command of every pending `after` timer ("<id><python name>", as tkinter registers it)."""
    return [str(app.tk.splitlist(app.tk.call("after", "info", after_id))[0])
            for after_id in app.tk.splitlist(app.tk.call("after", "info"))]


def loop_timers(app: ui.App, name: str) -> int:
    return sum(1 for script in pending_timers(app) if script.endswith(name))


@pytest.fixture
def bare_kiosk(banc_home: Path, xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ui.App]]:
    """Factory of kiosks without MQTT (optionally with a fake banc.py); their children are stopped after the test."""
    factory = kiosk_factory(xvfb_display, monkeypatch)
    make = next(factory)
    try:
        yield lambda banc_script=ui.BANC_SCRIPT: make(start_mqtt=False, banc_script=banc_script)
    finally:
        factory.close()


def test_one_timer_chain_per_loop_and_none_left_after_shutdown(bare_kiosk, monkeypatch: pytest.MonkeyPatch) -> None:
    """_animate (8/s) used to schedule _expire too: 8 more _expire chains every second, never cancelled."""
    calls = {"_expire": 0}
    real_expire = ui.App._expire

    def counted_expire(self: ui.App) -> None:
        calls["_expire"] += 1
        real_expire(self)

    counted_expire.__name__ = "_expire"  # _schedule keys its timers by name, as for the real method
    monkeypatch.setattr(ui.App, "_expire", counted_expire)
    app = bare_kiosk()
    pump(app, 2.0)
    at_2s = len(pending_timers(app))
    assert {name: loop_timers(app, name) for name in KIOSK_LOOPS if name != "_first_frame"} == {
        "drain_queue": 1, "_animate": 1, "_expire": 1, "_focus_loop": 1, "_watchdog": 1}
    calls["_expire"] = 0
    pump(app, 3.0)
    assert len(pending_timers(app)) <= at_2s, (at_2s, pending_timers(app))
    assert loop_timers(app, "_expire") == 1
    # Every EXPIRY_INTERVAL_MS (2/s): messages still fade on time, and no more often than that.
    assert 4 <= calls["_expire"] <= 7, calls
    app.shutdown()
    assert [script for script in pending_timers(app) if script.endswith(KIOSK_LOOPS)] == []


def test_a_banc_py_that_exits_at_once_leaves_its_alarm_on_screen(bare_kiosk, tmp_path: Path) -> None:
    """The "arrêté aussitôt" alarm came before the snapshot saying banc.py no longer runs: withdrawn unseen."""
    failing = tmp_path / "banc.py"
    failing.write_text("import sys, time\ntime.sleep(0.3)\nsys.exit(3)\n", encoding="utf-8")
    app = bare_kiosk(failing)
    for text in ("banc1", "RW-EXIT0001", "banc1"):
        app.handle_prompt(text)
        pump_until(app, lambda: app.pending_requests == 0, what=f"the kiosk's answer to {text!r}")
    assert "Test lancé sur le banc 1" in app.scan_bar.message_text
    panel = app.panels["banc1"]
    # Reaped by the worker's refresh (every 2 s), which also reads the bench's state again.
    pump_until(app, lambda: "banc1" not in app.supervisor.children, what="the failed banc.py reaped")
    pump_until(app, lambda: panel.widgets["status"].full_text.startswith("Interrompu - RW-EXIT0001"),
               what="the bench shown interrupted")
    pump(app, 2.0)
    assert app.scan_bar.message_text == ("Banc 1 : l'enregistrement du test s'est arrêté aussitôt après son "
                                         "lancement (banc.py, code 3) : voir logs.log.")
    assert app.scan_bar.kind is Kind.ALARM  # white on red
    assert str(app.scan_bar.message.cget("fg_color")) == uic.MESSAGE_STYLES[Kind.ALARM][1]
    app.acknowledge_message()  # an alarm stays until touched
    assert "aussitôt" not in app.scan_bar.message_text
