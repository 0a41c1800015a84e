"""No alarm is lost, nothing stale looks live: the real kiosk (Xvfb), a real Mosquitto, the real banc.py.

- The broker restarts while three ESPs publish their "connexion MQTT perdue… courant coupé":
  every bench shows its alarm after (the kiosk's persistent session). During the outage every
  pill is "inconnu" (grey) and the measures are greyed with their age; the "Broker déconnecté"
  message goes when the link is back. A stop's alarm takes its own row: Temp. and SOC stay
  readable, the current reads "coupé".
- The kiosk restarts while tests run: every running test's alarm shows again, from the kiosk's
  session or from the test's journal (banc.py writes every bancX/security text there); an ESP
  that charges on after its banc.py was killed is said, without "(arrêt) 00:00:00".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

import pytest

from banclfp.infra import environment
from banclfp.kiosk import app as ui, widgets as uic
from banclfp.kiosk.state import LINK_ONLINE, LINK_UNKNOWN, UNRECORDED_TEXT
from banclfp.presentation.formatting import keep_units_together
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, wait_until
from banclfp.testkit.support import MosquittoBroker
from banclfp.wire import protocol
from tests.test_ui_gui import (  # noqa: F401 - kiosk and esp are fixtures
    NB,
    Esp,
    esp,
    kiosk,
    overlaps_vertically,
    pump,
    pump_until,
    screenshot,
    text_of,
)

pytestmark = pytest.mark.gui

MQTT_LOST = "Connexion MQTT perdue depuis {n} s : courant coupé par sécurité, en attente d'une commande"
OVERHEAT = "Surchauffe batterie : 56.2 °C >= 55 °C, courant coupé"


def bms(seq: int, esp_step: int, current_a: float = 49.9, temperature_c: float = 41.5) -> str:
    """A protocol v3 line (12 fields: the ESP's clock and phase)."""
    return protocol.encode_bms_line(protocol.BmsLine(seq, 57.9, current_a, 96.0, temperature_c, 0.0, 0.0, 3600, 3630,
                                                     1, 60_000 + seq * 1000, esp_step))


def pills(app: ui.App, banc: str) -> tuple[str, str]:
    panel = app.panels[banc]
    return panel.widgets["esp"].state, panel.widgets["banc_process"].state


def shown(text: str) -> str:
    """An alarm's text as its banner shows it."""
    return f"⚠ {keep_units_together(text)}"


def alarm_text(app: ui.App, banc: str) -> Optional[str]:
    panel = app.panels[banc]
    return panel.alarm_text if panel.security_visible else None


def test_a_broker_restart_loses_no_alarm_and_the_outage_asserts_nothing(store: Store,
    kiosk: Callable[..., ui.App], esp: Esp, broker: MosquittoBroker, xvfb_display: str  # noqa: F811 - fixtures
) -> None:
    for n in (1, 2, 3):
        store.set_banc_status(f"banc{n}", record.STATUS_OCCUPIED, f"RW-BRKR000{n}", 2)
    app = kiosk("1280x800+0+0")
    pump_until(app, lambda: app.scan_bar.broker_connected, what="broker connected")
    for n in (1, 2, 3):
        t = protocol.topics(n)
        esp.send(t.esp_status, "online")
        esp.send(t.banc_status, "online")
    pump_until(app, lambda: all(pills(app, f"banc{n}") == (LINK_ONLINE, LINK_ONLINE) for n in (1, 2, 3)),
               what="green pills")

    # --- A safety stop: the alarm in its own row, Temp./SOC readable, the current no longer "49,9 A".
    t1 = protocol.topics("banc1")
    esp.send(t1.bms_data, bms(1, 2, temperature_c=56.2))
    p1 = app.panels["banc1"]
    pump_until(app, lambda: text_of(p1, "current") == f"49,9{NB}A", what="the charging line")
    esp.send(t1.security, OVERHEAT)
    esp.send(t1.step, "9")
    pump_until(app, lambda: p1.security_visible and text_of(p1, "current") == uic.CURRENT_CUT_TEXT,
               what="alarm shown, current cut")
    banner = p1.widgets["security"]
    for key in ("voltage", "current", "soc", "temperature"):
        assert p1.widgets[key].winfo_ismapped() and not overlaps_vertically(banner, p1.widgets[key]), key
    assert text_of(p1, "temperature") == f"56,2{NB}°C"
    screenshot(xvfb_display, app, "kiosk_stop_alarm_in_its_own_row.png")

    # --- The broker goes: the kiosk knows nothing, so no pill is green or red; `end` is refused clearly.
    broker.stop()
    pump_until(app, lambda: app.scan_bar.broker_connected is False, what="broker lost")
    assert all(pills(app, banc) == (LINK_UNKNOWN, LINK_UNKNOWN) for banc in app.bancs)
    app.send_end()
    assert app.scan_bar.message_text.startswith("Broker déconnecté")
    pump_until(app, lambda: p1.widgets["age"].full_text.startswith("Mesures il y a"), what="measures aged")
    assert str(p1.widgets["temperature"].cget("text_color")) == uic.STALE_COLOR
    screenshot(xvfb_display, app, "kiosk_broker_down_pills_unknown.png")

    # --- The broker is back before the kiosk: three ESPs publish their safety alarm on reconnecting.
    app.mqtt.client.loop_stop()  # the kiosk reconnects after the ESPs (paho's backoff, made certain here)
    broker.start()
    with MqttProbe(broker, client_id="esp_reconnected") as esps:
        esps.publish_many([(protocol.topics(n).security, MQTT_LOST.format(n=40 + n)) for n in (1, 2, 3)])
    assert not app.mqtt.client.is_connected()
    app.mqtt.client.reconnect()  # now rather than after paho's grown backoff (seconds of a test for nothing)
    app.mqtt.client.loop_start()
    pump_until(app, lambda: all(alarm_text(app, f"banc{n}") == shown(MQTT_LOST.format(n=40 + n))
                                for n in (1, 2, 3)), timeout_s=15, what="every bench's alarm after the restart")
    pump_until(app, lambda: all(pills(app, f"banc{n}") == (LINK_ONLINE, LINK_ONLINE) for n in (1, 2, 3)),
               what="pills from the retained statuses")
    assert not app.scan_bar.message_text.startswith("Broker déconnecté")  # withdrawn: it is no longer true
    screenshot(xvfb_display, app, "kiosk_broker_restart_alarms.png")


def start_tests(fleet: BancFleet, broker: MosquittoBroker, benches: dict[str, str]) -> None:
    """banc.py for each bench (occupied in bancs_config.json, as the kiosk does), started together, subscribed."""
    store = Store.from_settings(environment.load_settings())
    with MqttProbe(broker, [protocol.topics(banc).banc_status for banc in benches]) as probe:
        for banc, serial in benches.items():
            store.set_banc_status(banc, record.STATUS_OCCUPIED, serial, 1)
            fleet.runner(banc, serial).start(wait_online=False)
        for banc in benches:  # online is published after its SUBSCRIBE: from here on it journals bancX/security
            probe.wait_for(protocol.topics(banc).banc_status, protocol.STATUS_ONLINE, timeout_s=15)


def journaled(banc: str, serial: str, text: str) -> bool:
    test = Store.from_settings(environment.load_settings()).latest_test(serial, banc)
    return test is not None and any(isinstance(e, record.AlertEvent) and e.text == text
                                    for e in record.read_events(test.path)[0])


def test_a_restarted_kiosk_shows_every_running_tests_alarm_again(
    kiosk: Callable[..., ui.App], esp: Esp, broker: MosquittoBroker, fleet: BancFleet, xvfb_display: str  # noqa: F811 - fixtures
) -> None:
    serials = {"banc1": "RW-KRST0001", "banc2": "RW-KRST0002", "banc3": "RW-KRST0003"}
    start_tests(fleet, broker, serials)
    alarms = {banc: MQTT_LOST.format(n=30 + n) for n, banc in enumerate(("banc1", "banc2", "banc3", "banc4"), 1)}

    # Before any kiosk: only banc3's journal will tell it.
    esp.send(protocol.topics("banc3").security, alarms["banc3"])
    wait_until(lambda: journaled("banc3", serials["banc3"], alarms["banc3"]), message="banc3's alarm journaled")
    first = kiosk("1280x800+0+0", mqtt_client_id="ui_kiosk_restarted")
    pump_until(first, lambda: first.panels["banc3"].security_visible, what="banc3's alarm from its journal")
    pump_until(first, lambda: first.scan_bar.broker_connected, what="broker connected")
    esp.send(protocol.topics("banc1").security, alarms["banc1"])  # seen live, then the kiosk goes
    pump_until(first, lambda: first.panels["banc1"].security_visible, what="banc1's alarm live")
    wait_until(lambda: journaled("banc1", serials["banc1"], alarms["banc1"]), message="banc1's alarm journaled")
    first.shutdown()

    # While no kiosk runs: banc2 (a test: session and journal), banc4 (no test: the session alone).
    esp.send(protocol.topics("banc2").security, alarms["banc2"])
    esp.send(protocol.topics("banc4").security, alarms["banc4"])
    wait_until(lambda: journaled("banc2", serials["banc2"], alarms["banc2"]), message="banc2's alarm journaled")
    second = kiosk("1280x800+0+0", mqtt_client_id="ui_kiosk_restarted")
    pump_until(second, lambda: all(alarm_text(second, banc) == shown(text)
                                   for banc, text in alarms.items()), what="every alarm again after the restart")

    # banc.py killed while its ESP charges on: said, and the phase is not shown stopped at 00:00:00.
    p1 = second.panels["banc1"]
    pump_until(second, lambda: p1.widgets["banc_process"].state == LINK_ONLINE, what="banc1 recording")
    fleet.runners[0].kill()
    t1 = protocol.topics("banc1")
    deadline, seq = time.monotonic() + 10, 0
    while not p1.widgets["status"].full_text.startswith(UNRECORDED_TEXT):
        assert time.monotonic() < deadline, p1.widgets["status"].full_text
        seq += 1
        esp.send(t1.bms_data, bms(seq, 2, current_a=50.0))
        pump(second, 0.4)
    assert p1.widgets["banc_process"].color == uic.ALERT_BG  # the red pill, and the status says why
    assert p1.widgets["phase"].full_text == "Phase 2/5 : Charge — non enregistrée"
    assert text_of(p1, "time_left") == "--:--:--" and text_of(p1, "current") == f"50,0{NB}A"
    screenshot(xvfb_display, second, "kiosk_restart_alarms_and_unrecorded_esp.png")
