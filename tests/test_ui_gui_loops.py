"""The kiosk's own Tk loops and the worker's notices on the real kiosk (Xvfb), without a broker.

Each kiosk here runs with start_mqtt=False: what is checked is the Tk main loop (its `after`
timers) and what the worker thread hands it, not MQTT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from banclfp.kiosk import app as ui, widgets as uic
from banclfp.kiosk.messages import Kind, SecurityKind, SecurityMessage
from banclfp.kiosk.queue_messages import (
    BrokerLink,
    ChargeProfileLoaded,
    ChargeProfileUnusable,
    JournalAlarm,
    KioskMessage,
    LabelOutcome,
    MqttBancStatus,
    MqttBms,
    MqttEspStatus,
    MqttNurse,
    MqttSecurity,
    MqttStep,
    Outcome,
)
from banclfp.kiosk.scan_workflow import Action
from banclfp.kiosk.state import BancSnapshot
from banclfp.wire import protocol
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


def test_one_timer_chain_per_loop_and_none_left_after_shutdown(bare_kiosk: Callable[..., ui.App],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_banc_py_that_exits_at_once_leaves_its_alarm_on_screen(bare_kiosk: Callable[..., ui.App], tmp_path: Path) -> None:
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


LINE = protocol.BmsLine(7, 52.3, -50.0, 60.0, 25.0, 40.0, 2000.0, 3265, 3281, 0)
ALARM = SecurityMessage("Surchauffe : courant coupé", SecurityKind.ALARM, None, True)
OUTCOME = Outcome(Action.NONE, "Réponse", "info", answers_scan=False)
LABEL_FAILED = LabelOutcome("banc1", "RW-LABEL001", False, "CUPS ne répond pas", 30.0)
SNAPSHOT = BancSnapshot("banc1", occupied=False, serial=None, file_step=None, running=False, unfinished=False)


def half_rate(soc_pct: float) -> float:
    return soc_pct / 2


# Every kind of queued message, and the one handler it must reach with these arguments (the panel's for "panel.").
ROUTES: list[tuple[KioskMessage, str, tuple[object, ...]]] = [
    (OUTCOME, "apply_outcome", (OUTCOME,)),
    (BrokerLink(False), "set_broker_link", (False,)),
    (ChargeProfileUnusable("colonne manquante"), "say", ("Profil de charge inutilisable : colonne manquante",
                                                         Kind.ALARM)),
    (SNAPSHOT, "apply_snapshot", (SNAPSHOT,)),
    (JournalAlarm("banc1", ALARM), "panel.restore_alarm", (ALARM,)),
    (LABEL_FAILED, "apply_label", (LABEL_FAILED,)),
    (MqttBms("banc1", protocol.encode_bms_line(LINE).encode()), "on_bms", ("banc1", LINE)),
    (MqttStep("banc1", b"2"), "on_step", ("banc1", 2)),
    (MqttSecurity("banc1", "Surchauffe détectée".encode()), "on_security", ("banc1", "Surchauffe détectée")),
    (MqttNurse("banc1", b"55", 3), "on_nurse", ("banc1", 3, 55)),
    (MqttEspStatus("banc1", b"online"), "render_banc", ("banc1",)),
    (MqttBancStatus("banc1", b"offline"), "render_banc", ("banc1",)),
]
HANDLERS = sorted({name for _message, name, _args in ROUTES})


def test_each_queued_message_reaches_its_handler_and_an_unknown_object_is_dropped(
        bare_kiosk: Callable[..., ui.App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """App.drain_queue dispatches on the message's class: each kind to its handler, once; anything else is logged
    and dropped, and the messages after it are still applied (a Tk callback never raises)."""
    app = bare_kiosk()
    app.worker.stop(timeout_s=5)  # from here on only the test feeds the queue
    app.drain_queue()
    monkeypatch.setattr(ui, "BMS_DISPLAY_INTERVAL_S", 0.0)  # a BMS line is shown in the tick it is drained
    calls: list[tuple[str, tuple[object, ...]]] = []
    for name in HANDLERS:
        owner, attribute = (app.panels["banc1"], name.split(".")[1]) if name.startswith("panel.") else (app, name)
        monkeypatch.setattr(owner, attribute, lambda *args, _name=name: calls.append((_name, args)))
    for message, handler, args in ROUTES:
        calls.clear()
        app.inbox.put(message)
        app.drain_queue()  # called directly: no other Tk loop (_expire renders every bench) runs meanwhile
        assert calls == [(handler, args)], message
    assert app.runtime["banc1"].esp_online is True and app.runtime["banc1"].banc_online is False
    app.inbox.put(ChargeProfileLoaded(half_rate))
    app.drain_queue()
    assert app.charge_duration is half_rate

    calls.clear()
    caplog.set_level(logging.ERROR, logger="banc.ui")
    app.inbox.put(object())  # type: ignore[arg-type]  # what no thread may put: the drain must survive it
    app.inbox.put(BrokerLink(True))
    app.drain_queue()
    assert calls == [("set_broker_link", (True,))]
    dropped = [record for record in caplog.records if record.name == "banc.ui" and record.levelno == logging.ERROR]
    assert [record.getMessage().split(" at ")[0] for record in dropped] == ["queued message <object object"]
    assert dropped[0].exc_info is not None  # with its traceback, in logs.log


def test_a_label_not_printed_is_an_alarm_that_says_why_and_how_to_print_it(bare_kiosk: Callable[..., ui.App]) -> None:
    """The label of a verdict did not print: the operator reads it, its reason, the retry, and the scan that prints it."""
    app = bare_kiosk()
    app.worker.stop(timeout_s=5)
    app.apply_label(LABEL_FAILED)
    assert app.scan_bar.message_text == ("Étiquette non imprimée (RW-LABEL001, banc 1) : CUPS ne répond pas ; "
                                         "nouvel essai dans 30\u00a0s. Pour l'imprimer : label, banc1.")
    assert app.scan_bar.kind is Kind.ALARM
    app.acknowledge_message()
    app.apply_label(LabelOutcome("banc1", "RW-LABEL001", True))  # the retry printed it: said, as the failure was
    assert app.scan_bar.message_text == "Étiquette imprimée (RW-LABEL001, banc 1)."
    app.acknowledge_message()
    app.apply_label(LabelOutcome("banc2", "RW-OTHER001", True))  # printed at the first try: nothing to say
    assert "RW-OTHER001" not in app.scan_bar.message_text
