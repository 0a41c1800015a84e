"""The kiosk shows only what is true now (pure tables, no window, no broker).

- Freshness: a bench's state x the age of its latest line -> what each measure shows (text, colour)
  and the age the header gives (kiosk_state.banc_display -> ui_components.measure_cells).
- Links: with the kiosk's own broker link down every pill is unknown, whatever was heard before.
- An ESP that goes on while nobody records its test: said, and no "(arrêt) 00:00:00".
- Alarms: the rules of a panel's red alarm (kiosk_messages.BenchAlarm), run over a test's journal
  when the kiosk starts (replay_alerts); banc.py journals every bancX/security text (recorder).
"""

from __future__ import annotations

import queue
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from banclfp.kiosk import messages as kiosk_messages, widgets as uic, worker as kiosk_worker
from banclfp.kiosk.messages import BenchAlarm, Kind, MessageBoard, classify_security, replay_alerts
from banclfp.kiosk.queue_messages import JournalAlarm
from banclfp.kiosk.state import (
    FRESH_S,
    LINK_ALARM,
    LINK_ONLINE,
    LINK_UNKNOWN,
    REST_FRESH_S,
    STATUS_INTERRUPTED,
    UNRECORDED_TEXT,
    BancRuntime,
    age_text,
    banc_display,
)
from banclfp.recording import record
from banclfp.recording.recorder import JOURNAL, Append, Instant, RecorderCore
from banclfp.recording.store import Store
from banclfp.wire import protocol

NB = "\u00a0"
T0 = 1000.0  # the kiosk's monotonic clock when the line was received
# The live colours are the colour matrix's business (display_colors): freshness only passes them through or greys.
LIVE = {key: f"live-{key}" for key, _name in uic.MEASURES}
GREY = uic.STALE_COLOR


def line(esp_step: Optional[int] = None, current_a: float = 49.9, **values: Any) -> protocol.BmsLine:
    fields: dict[str, Any] = dict(seq=7, voltage_v=57.9, current_a=current_a, soc_pct=96.0, temperature_c=41.5,
                                  capacity_ah=0.0, energy_wh=0.0, cell_min_mv=3600, cell_max_mv=3630, balancing=1,
                                  uptime_ms=None if esp_step is None else 70_000, esp_step=esp_step)
    fields.update(values)
    return protocol.BmsLine(**fields)


def bench(received: Optional[protocol.BmsLine] = None, cut_at: Optional[float] = None, **fields: Any) -> BancRuntime:
    """A bench whose latest line was received at T0 (none without `received`), its current cut at `cut_at`."""
    rt = BancRuntime("banc1", known=True, occupied=True, serial="RW-FRSH0001", running=True, step=2,
                     esp_online=True, banc_online=True)
    rt.line, rt.line_received_s, rt.current_cut_s = received, None if received is None else T0, cut_at
    for name, value in fields.items():
        setattr(rt, name, value)
    return rt


def shown(rt: BancRuntime, now: float) -> dict[str, tuple[str, str]]:
    return uic.measure_cells(banc_display(rt, now).measures, LIVE)


# =========================================================================== freshness: state x age -> shown


# (id, bench, seconds since the line came, voltage, current, temperature, SOC, the header's age line)
V, T, SOC = f"57,90{NB}V", f"41,5{NB}°C", f"96{NB}%"
RUNNING_A = f"49,9{NB}A"
FRESHNESS = [
    ("no line yet", bench(), 0.0,
     ("—", uic.MUTED), ("—", uic.MUTED), ("—", uic.MUTED), ("—", uic.MUTED), ""),
    ("running, just received", bench(line(2)), 0.2,
     (V, LIVE["voltage"]), (RUNNING_A, LIVE["current"]), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("running, three periods old: still live", bench(line(2)), FRESH_S,
     (V, LIVE["voltage"]), (RUNNING_A, LIVE["current"]), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("running, silent BMS or broker: greyed with its age", bench(line(2)), FRESH_S + 0.5,
     (V, GREY), (RUNNING_A, GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 3{NB}s"),
    ("running, 2 minutes old", bench(line(2)), 125.0,
     (V, GREY), (RUNNING_A, GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 2{NB}min"),
    ("firmware v2 line (no field 12): a running line's period", bench(line(None)), FRESH_S + 1,
     (V, GREY), (RUNNING_A, GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 4{NB}s"),
    # The issue: "Courant 49,9 A" right under the banner saying the current was cut.
    ("stop (9) a second after the line: the current is cut, the rest live", bench(line(2), cut_at=T0 + 0.5), 1.0,
     (V, LIVE["voltage"]), (uic.CURRENT_CUT_TEXT, GREY), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("stopped a minute ago, no line since (v2): cut, the rest greyed and readable",
     bench(line(2), cut_at=T0 + 1, step=9), 61.0,
     (V, GREY), (uic.CURRENT_CUT_TEXT, GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 1{NB}min"),
    ("`end` sent after the line", bench(line(3), cut_at=T0 + 0.1), 0.5,
     (V, LIVE["voltage"]), (uic.CURRENT_CUT_TEXT, GREY), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("ESP offline after the line", bench(line(3), cut_at=T0 + 20, esp_online=False), 25.0,
     (V, GREY), (uic.CURRENT_CUT_TEXT, GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 25{NB}s"),
    # Contract v3: a stopped or finished ESP sends a line every 10 s: real measurements at rest.
    ("rest line (9) after the stop: measured, live for 3 rest periods",
     bench(line(9, current_a=0.0, temperature_c=52.3), cut_at=T0 - 40, step=9), REST_FRESH_S - 1,
     (V, LIVE["voltage"]), (f"0,0{NB}A", LIVE["current"]), (f"52,3{NB}°C", LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("rest line (9) no longer renewed", bench(line(9, current_a=0.0), cut_at=T0 - 40, step=9), REST_FRESH_S + 1,
     (V, GREY), (f"0,0{NB}A", GREY), (T, GREY), (SOC, GREY), f"Mesures il y a 31{NB}s"),
    ("rest line (5) of a finished test", bench(line(5, current_a=0.0), cut_at=T0 - 5, step=5), 12.0,
     (V, LIVE["voltage"]), (f"0,0{NB}A", LIVE["current"]), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
    ("a line received after the cut is measured, not cut", bench(line(1, current_a=-20.0), cut_at=T0 - 3), 1.0,
     (V, LIVE["voltage"]), (f"-20,0{NB}A", LIVE["current"]), (T, LIVE["temperature"]), (SOC, LIVE["soc"]), ""),
]


@pytest.mark.parametrize("rt,age,voltage,current,temperature,soc,age_line", [c[1:] for c in FRESHNESS],
                         ids=[c[0] for c in FRESHNESS])
def test_a_measure_is_live_only_while_recent(rt: BancRuntime, age: float, voltage: tuple, current: tuple,
                                             temperature: tuple, soc: tuple, age_line: str) -> None:
    cells = shown(rt, T0 + age)
    assert (cells["voltage"], cells["current"], cells["temperature"], cells["soc"]) == (voltage, current,
                                                                                         temperature, soc)
    assert banc_display(rt, T0 + age).measures.age_text == age_line


def test_every_measure_follows_the_same_rule() -> None:
    """Capacity, energy, spread and balancing are greyed with the others: one rule for the whole line."""
    fresh, stale = shown(bench(line(2)), T0 + 1), shown(bench(line(2)), T0 + 10)
    assert {key: color for key, (_text, color) in fresh.items()} == LIVE
    assert {color for _text, color in stale.values()} == {GREY}
    assert {key: text for key, (text, _c) in fresh.items()} == {key: text for key, (text, _c) in stale.items()}


@pytest.mark.parametrize("seconds,text", [
    (0, "il y a 0 s"), (59.9, "il y a 59 s"), (60, "il y a 1 min"), (3599, "il y a 59 min"),
    (3600, "il y a 1 h 00"), (3725, "il y a 1 h 02"), (86_399, "il y a 23 h 59"), (3 * 86_400 + 5, "il y a 3 j"),
    (-5, "il y a 0 s"),
])
def test_age_text(seconds: float, text: str) -> None:
    assert age_text(seconds) == text.replace(" ", NB).replace(f"il{NB}y{NB}a{NB}", "il y a ")


# =========================================================================== the kiosk's own broker link


LINK_STATES = [
    ("test running, both online", dict(esp_online=True, banc_online=True), (LINK_ONLINE, LINK_ONLINE)),
    ("ESP lost during a test", dict(esp_online=False), (LINK_ALARM, LINK_ONLINE)),
    ("banc.py crashed", dict(running=False, unfinished=True, seen_running=True, banc_online=False),
     (LINK_ONLINE, LINK_ALARM)),
    ("banc.py alive, its status not heard", dict(esp_online=None, banc_online=None), (LINK_UNKNOWN, LINK_ONLINE)),
]


@pytest.mark.parametrize("fields,with_broker", [c[1:] for c in LINK_STATES], ids=[c[0] for c in LINK_STATES])
def test_with_the_broker_down_every_pill_is_unknown(fields: dict[str, Any], with_broker: tuple[str, str]) -> None:
    rt = bench(line(2), **fields)
    display = banc_display(rt, T0)
    assert (display.esp_link, display.banc_link) == with_broker
    rt.broker_up = False
    display = banc_display(rt, T0)
    assert (display.esp_link, display.banc_link) == (LINK_UNKNOWN, LINK_UNKNOWN)
    assert (display.esp_online, display.banc_online) == (None, None)


def test_the_broker_down_message_goes_when_the_link_is_back() -> None:
    board = MessageBoard("Scannez un banc")
    board.show("Broker déconnecté : « end » non envoyé. Réessayez quand le broker est revenu.", Kind.ALARM, 0.0)
    assert board.broker_back() and board.current() == ("Scannez un banc", Kind.INFO)
    board.show("Banc 1 : un test est déjà en cours.", Kind.REFUSAL, 0.0)
    assert not board.broker_back() and board.current()[1] is Kind.REFUSAL


# =========================================================================== banc.py gone, the ESP goes on


# (id, bench fields, seconds since the line, the phase shown as unrecorded, whether the status says so)
KILLED = dict(running=False, unfinished=True, seen_running=True, banc_online=False, step=2)
STOPPED = dict(KILLED, step=9, previous_step=2)
UNRECORDED = [
    ("killed, the ESP charges on (field 12 = 2)", bench(line(2), **KILLED), 1.0, 2),
    ("killed, v2 lines with a current", bench(line(None, current_a=50.0), **KILLED), 1.0, 2),
    ("killed, the lines stopped", bench(line(2), **KILLED), FRESH_S + 1, None),
    ("stopped (9): rest lines are no phase", bench(line(9, current_a=0.0), **STOPPED), 5.0, None),
    ("killed, v2 lines at rest", bench(line(None, current_a=0.1), **KILLED), 1.0, None),
    ("the current was cut after the line", bench(line(2), cut_at=T0 + 0.5, **KILLED), 1.0, None),
    ("banc.py records it", bench(line(2)), 1.0, None),
]


@pytest.mark.parametrize("rt,age,phase", [c[1:] for c in UNRECORDED], ids=[c[0] for c in UNRECORDED])
def test_an_esp_that_goes_on_unrecorded_is_said(rt: BancRuntime, age: float, phase: Optional[int]) -> None:
    display = banc_display(rt, T0 + age)
    assert display.unrecorded_phase == phase
    if phase is None:
        assert not display.status_text.startswith(UNRECORDED_TEXT)
    else:
        assert display.status_text == f"{UNRECORDED_TEXT} - RW-FRSH0001 - scannez pour reprendre"
        assert display.status_kind == STATUS_INTERRUPTED
        assert display.banc_link == LINK_ALARM  # the red pill, and the status says why


# =========================================================================== alarms: the rules, live and replayed


ALARM = "Surchauffe batterie : 56.2 °C >= 55 °C, courant coupé"
BMS_SILENCE = "Aucune donnée BMS valide depuis 30 s : vérifier l'ESP32, le BMS et leur liaison"
BMS_BACK = "Données BMS rétablies après 47 s de silence"
MQTT_LOST = "Connexion MQTT perdue depuis 42 s : courant coupé par sécurité, en attente d'une commande"


def ev(kind: str, **fields: Any) -> tuple[str, Optional[str]]:
    """What replay_alerts reads of a journal line (its kind, an alert's text), the line read as the worker reads it."""
    return replayed(record.event_from_json({"t": "2025-06-12T10:00:00.000+02:00", "event": kind, **fields}))


def replayed(event: record.Event) -> tuple[str, Optional[str]]:
    return event.kind, event.text if isinstance(event, record.AlertEvent) else None


# (id, journal, the alarm a kiosk that starts shows)
JOURNALS = [
    ("nothing", [ev(record.EVENT_START)], None),
    ("an alarm", [ev(record.EVENT_START), ev(record.EVENT_ALERT, text=MQTT_LOST)], MQTT_LOST),
    ("an alarm, then the stop it caused (9 is no phase)",
     [ev(record.EVENT_START), ev(record.EVENT_ALERT, text=ALARM), ev(record.EVENT_STOP)], ALARM),
    ("an alarm, then the next phase", [ev(record.EVENT_ALERT, text=ALARM), ev(record.EVENT_STEP, step=3)], None),
    ("an alarm, then its recovery notice", [ev(record.EVENT_ALERT, text=BMS_SILENCE), ev(record.EVENT_ALERT, text=BMS_BACK)],
     None),
    ("an alarm, then another subject's notice",
     [ev(record.EVENT_ALERT, text=ALARM), ev(record.EVENT_ALERT, text=BMS_BACK)], ALARM),
    ("two alarms: the latest", [ev(record.EVENT_ALERT, text=BMS_SILENCE), ev(record.EVENT_ALERT, text=ALARM)], ALARM),
    ("an alarm before the test was resumed", [ev(record.EVENT_ALERT, text=ALARM), ev(record.EVENT_RESUME)], None),
    ("a phase, then an alarm", [ev(record.EVENT_STEP, step=2), ev(record.EVENT_ALERT, text=MQTT_LOST),
                                ev(record.EVENT_RI, values={})], MQTT_LOST),
    ("unreadable alert events are skipped", [ev(record.EVENT_ALERT, text=ALARM), ev(record.EVENT_ALERT),
                                             ev(record.EVENT_ALERT, text=3), ev(record.EVENT_ALERT, text=" ")], ALARM),
]


@pytest.mark.parametrize("events,active", [c[1:] for c in JOURNALS], ids=[c[0] for c in JOURNALS])
def test_a_starting_kiosk_shows_the_alarms_still_active_in_the_journal(events: list, active: Optional[str]) -> None:
    alarm = replay_alerts(events)
    assert (alarm.text if alarm else None) == active


def test_the_live_rules_are_the_replayed_ones() -> None:
    """One BenchAlarm: a recovery ends its own subject's alarm only; a notice alone changes nothing."""
    alarm = BenchAlarm()
    assert not alarm.security(classify_security(BMS_BACK)) and alarm.alarm is None
    assert alarm.security(classify_security(BMS_SILENCE)) and alarm.alarm is not None
    assert not alarm.security(classify_security("Écriture dans data.csv rétablie : 3 lignes écrites"))
    assert alarm.security(classify_security(BMS_BACK)) and alarm.alarm is None
    assert alarm.security(classify_security(ALARM)) and alarm.clear() and not alarm.clear()


@pytest.mark.parametrize("text,cuts", [
    (ALARM, True), (MQTT_LOST, True), ("ESP redémarré pendant la phase 3 : courant coupé, en attente d'une commande", True),
    ("Tension cellule hors limites (1980-3650 mV), courant 0", True), (BMS_SILENCE, False), (BMS_BACK, False),
    ("Courant 120 A au-dessus de la limite", False),
])
def test_an_alarm_that_says_the_current_is_cut_cuts_it_on_the_panel(text: str, cuts: bool) -> None:
    """The banner and the current never say two things: "… courant coupé" ends the current of older lines."""
    assert classify_security(text).cuts_current is cuts


def test_the_journal_events_named_by_the_replay_are_the_records() -> None:
    """kiosk_messages imports nothing of the project: the journal's names it knows are record's."""
    clears = {record.EVENT_START, record.EVENT_MIGRATE, record.EVENT_RESUME, record.EVENT_ABANDON, record.EVENT_STEP}
    assert set(kiosk_messages._JOURNAL_CLEARS) == clears
    assert kiosk_messages._JOURNAL_ALERT == record.EVENT_ALERT


# =========================================================================== banc.py journals every alert


def instant(second: int = 0) -> Instant:
    return Instant(datetime(2025, 6, 12, 10, 0, second).astimezone(), 100.0 + second)


def test_the_recorder_journals_every_security_text_and_nothing_after_the_end() -> None:
    core = RecorderCore("banc1", 2, fsync_interval_s=1.0, bms_timeout_s=30.0)
    (effect,) = core.on_security(MQTT_LOST.encode(), instant())
    assert isinstance(effect, Append) and effect.file == JOURNAL
    events, bad = record.parse_events(effect.data)
    assert bad == 0 and isinstance(events[0], record.AlertEvent) and events[0].text == MQTT_LOST
    assert replay_alerts(map(replayed, events)) is not None
    core.on_step(b"9", False, instant(1))
    assert core.on_security(ALARM.encode(), instant(2)) == []


def test_banc_py_writes_a_security_message_in_the_journal_before_it_returns(store: Store, banc_home: Path) -> None:
    from banclfp.recording import bench_process as banc

    now = record.now_local()
    folder, _ = store.find_or_create_test_folder("banc1", "RW-JRNL0001", now)
    config = store.load_or_create_config(folder, "banc1", "RW-JRNL0001", now)
    recorder = banc.Recorder(store, folder, "banc1", "RW-JRNL0001", 1, alert=lambda text: None, fsync_interval_s=1.0,
                             bms_timeout_s=30.0)
    recorder.open(config)
    try:
        assert recorder.handle_message("banc1/security", MQTT_LOST.encode())
        events, _bad = record.read_events(folder)
        assert [e.text for e in events if isinstance(e, record.AlertEvent)] == [MQTT_LOST]
    finally:
        recorder.close()


# =========================================================================== the kiosk's worker replays at start


def test_the_worker_hands_the_active_alarms_of_the_tests_under_way(store: Store, banc_home: Path) -> None:
    now = record.now_local()
    for banc, serial, texts in (("banc1", "RW-RPLY0001", [MQTT_LOST]), ("banc2", "RW-RPLY0002", [BMS_SILENCE, BMS_BACK]),
                                ("banc3", "RW-RPLY0003", [ALARM])):
        folder, _ = store.find_or_create_test_folder(banc, serial, now)
        store.load_or_create_config(folder, banc, serial, now)
        for text in texts:
            record.append_event(folder, record.AlertEvent(record.event_time(now), text))
        if banc != "banc3":  # banc3's bench was freed: its test is nobody's concern now
            store.set_banc_status(banc, record.STATUS_OCCUPIED, serial, 2)
    sink: queue.Queue = queue.Queue()
    supervisor = SimpleNamespace(is_running=lambda banc: banc == "banc1", reap=lambda: [])
    worker = kiosk_worker.KioskWorker(store, ["banc1", "banc2", "banc3"], SimpleNamespace(prompt=lambda: ""),  # type: ignore[arg-type]
                                      supervisor, sink)  # type: ignore[arg-type]
    worker.refresh_all()
    worker.replay_journals()
    items = [sink.get_nowait() for _ in range(sink.qsize())]
    alarms = [(item.banc, item.alarm.text) for item in items if isinstance(item, JournalAlarm)]
    assert alarms == [("banc1", MQTT_LOST)]
