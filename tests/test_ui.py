"""Pure tests of the kiosk's display logic (no window): grid, scaling, estimates, colours, coalescing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pytest

from banclfp.kiosk import app as ui, widgets as uic
from banclfp.kiosk.queue_messages import BrokerLink, KioskMessage, MqttBms, MqttNurse, MqttSecurity, MqttStep
from banclfp.kiosk.state import (
    LINK_ALARM,
    LINK_ESP,
    LINK_IDLE,
    LINK_LABELS,
    LINK_ONLINE,
    LINK_RECORDING,
    LINK_UNKNOWN,
    BancRuntime,
    HistoryEntry,
    banc_display,
    link_explanation,
)
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.wire import protocol


def bms(**changes: float) -> protocol.BmsLine:
    values = dict(seq=1, voltage_v=52.3, current_a=-50.0, soc_pct=60.0, temperature_c=25.0, capacity_ah=40.0,
                  energy_wh=2000.0, cell_min_mv=3265, cell_max_mv=3281, balancing=0)
    values.update(changes)
    return protocol.BmsLine(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "num_bancs,shape",
    [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2)), (6, (3, 2)), (9, (3, 3)), (10, (4, 3)), (16, (4, 4)),
     (20, (4, 5))],
)
def test_grid_adapts_to_the_number_of_benches(num_bancs: int, shape: tuple[int, int]) -> None:
    assert ui.grid_shape(num_bancs) == shape


@pytest.mark.parametrize(
    "size,num_bancs,low,high",
    [((800, 480), 4, 0.85, 1.0), ((1280, 800), 4, 1.4, 1.8), ((1920, 1080), 4, 1.9, 2.4), ((1920, 1080), 16, 0.9, 1.2),
     ((320, 200), 16, ui.MIN_SCALE, ui.MIN_SCALE), ((8000, 8000), 1, ui.MAX_SCALE, ui.MAX_SCALE)],
)
def test_font_scale_follows_panel_size(size: tuple[int, int], num_bancs: int, low: float, high: float) -> None:
    assert low <= ui.font_scale(*size, num_bancs) <= high


def _charge_profile(voltage_v: float) -> float:
    return 1000.0 + (58.4 - voltage_v) * 100


@pytest.mark.parametrize(
    "step,line,elapsed_s,expected",
    [
        (1, bms(), 60.0, ui.PHASE1_DURATION_S - 60),  # the pulse schedule: 3 x (120 + 30 + 120 + 30) + 120 s
        (1, bms(), 10_000.0, 0.0),
        (1, bms(), None, None),
        # CC from 60 % to where the CV begins, at 50 A, then the profile's CV taper (its 1000 s at 58.4 V): that
        # taper from 50 A to 5 A puts in tau x 45 A, tau = 1000 s / ln 10, so the CC ends that much below 100 %.
        (2, bms(voltage_v=54.4, current_a=50.0), 5.0,
         (100.0 - 1000 / math.log(10) * 45 / 3600 - 60.0) / 100 * 100 * 3600 / 50 + 1000),
        # In CV (the cell at its limit), 25 A: the taper's rest, tau x ln(25 / 5).
        (2, bms(voltage_v=58.4, current_a=25.0, soc_pct=100.0, cell_max_mv=3650), 5.0, 1000 / math.log(10) * math.log(5)),
        # 40 Ah out for 40 % of SOC: 60 % left = 60 Ah at 50 A = 4320 s.
        (3, bms(current_a=-50.0, soc_pct=60.0, capacity_ah=40.0), 5.0, 4320.0),
        # Nothing measured yet: nominal 100 Ah x 90 % at 45 A = 7200 s.
        (3, bms(current_a=-45.0, soc_pct=90.0, capacity_ah=0.0), 5.0, 7200.0),
        # At rest 5 s into the phase: 595 s of the 10 min rest, then the 60 Ah at the nominal 50 A.
        (3, bms(current_a=0.1), 5.0, 595.0 + 4320.0),
        (3, bms(current_a=0.1), None, None),  # at rest, the phase's start unknown
        # Storage at 50 %: from 10 % of the BMS's scale (the rated 100 Ah, not the 98 Ah measured) at 49 A.
        (4, bms(current_a=49.0, soc_pct=10.0, capacity_ah=98.0), 5.0, 0.4 * 100 / 49 * 3600),
        (4, bms(current_a=20.0, soc_pct=55.0, capacity_ah=98.0), 5.0, 0.0),
        (4, bms(current_a=0.0, soc_pct=0.0), 5.0, 595.0 + 3600.0),  # the rest's 595 s, then 50 Ah at 50 A
        (4, bms(current_a=0.0), None, None),
        (5, bms(), 5.0, 0.0),
        (9, bms(), 5.0, None),
        (None, bms(), None, None),
    ],
)
def test_time_left_estimates(step: Optional[int], line: protocol.BmsLine, elapsed_s: Optional[float],
                             expected: Optional[float]) -> None:
    result = ui.estimate_time_left_s(step, line, elapsed_s, _charge_profile)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_ri_view_brings_ri_and_diffusion_to_25c_like_the_charts() -> None:
    config = {"ri_discharge_average": 0.012, "ri_charge_average": 0.011, "diffusion_discharge_average": 0.004,
              "diffusion_charge_average": 0.005, "ri_temperature_c": 35.0}
    seen = []

    def correct(value: float, temperature: float | None) -> float:
        seen.append(temperature)
        return value * 2

    view = ui.ri_view_from_config(record.TestSummary.from_json(config), correct)
    # The kiosk used to show Ri raw beside the charts' 25 °C value: one number for one thing now.
    assert (view.ri_discharge, view.ri_charge) == (0.024, 0.022)
    assert (view.diffusion_discharge, view.diffusion_charge) == (0.008, 0.010)
    assert seen == [35.0] * 4


@pytest.mark.parametrize("bad", [None, "0.01", float("nan"), -0.01, 0, True])
def test_ri_view_ignores_unusable_values(bad: Optional[float | str]) -> None:
    view = ui.ri_view_from_config(record.TestSummary.from_json({"ri_discharge_average": bad, "diffusion_charge_average": bad}),
                                lambda v, t: v)
    assert view.ri_discharge is None and view.diffusion_charge is None


def test_ri_view_real_correction_uses_the_coefficients_file(store: Store) -> None:

    view = ui.ri_view_from_config(record.TestSummary.from_json({"diffusion_discharge_average": 0.004, "ri_temperature_c": 25.0}),
                                store.static.correct_to_25c)
    assert view.diffusion_discharge == pytest.approx(0.004, rel=1e-3)
    cold = ui.ri_view_from_config(record.TestSummary.from_json({"diffusion_discharge_average": 0.004, "ri_temperature_c": 5.0}),
                                store.static.correct_to_25c)
    assert cold.diffusion_discharge == pytest.approx(0.004 * store.static.get_temperature_coefficient(5.0))
    assert cold.diffusion_discharge is not None and cold.diffusion_discharge < 0.004  # a cold cell reads high: brought down to its 25 °C value


@pytest.mark.parametrize(
    "args,text,kind",
    [
        ((False, None, None, False, False), "Libre", uic.STATUS_FREE),
        ((True, "RW-AB12", 3, True, False), "Occupé - RW-AB12 - Phase 3/5", uic.STATUS_BUSY),
        ((True, "RW-AB12", None, True, False), "Occupé - RW-AB12", uic.STATUS_BUSY),
        ((True, "RW-AB12", 2, False, True), "Interrompu - RW-AB12 - scannez pour reprendre", uic.STATUS_INTERRUPTED),
        ((True, "RW-AB12", 5, False, False), "Terminé - RW-AB12 - scannez reset", uic.STATUS_DONE),
        ((False, None, None, True, False), "Occupé - test en cours d'enregistrement", uic.STATUS_BUSY),
        ((False, None, None, False, False, "RW-AB12", 5), "Libre - RW-AB12 terminé", uic.STATUS_DONE),
        # After step 5 banc.py frees the bench, then concludes the verdict (seconds) before it exits.
        ((False, None, None, True, False, "RW-AB12", 5), "Libre - RW-AB12 terminé", uic.STATUS_DONE),
        ((False, None, None, True, False, "RW-AB12", 3), "Occupé - test en cours d'enregistrement", uic.STATUS_BUSY),
    ],
)
def test_status_display(
    args: tuple[bool, Optional[str], Optional[int], bool, bool]
    | tuple[bool, Optional[str], Optional[int], bool, bool, Optional[str], Optional[int]],
    text: str, kind: str,
) -> None:
    assert ui.status_display(*args) == (text, kind)


def drained(inbox: ui.CoalescingQueue) -> list[KioskMessage]:
    """Everything the queue gives, in order."""
    items = []
    while not inbox.empty():
        items.append(inbox.get_nowait())
    return items


def test_the_queue_keeps_the_latest_bms_and_nurse_value_in_the_place_of_the_first() -> None:
    inbox = ui.CoalescingQueue()
    sent: list[KioskMessage] = [
        MqttBms("banc1", b"a"),
        MqttStep("banc1", b"2"),
        MqttBms("banc2", b"x"),
        MqttBms("banc1", b"b"),
        MqttNurse("banc1", b"10", 1),
        MqttNurse("banc1", b"20", 2),
        MqttNurse("banc1", b"11", 1),
        MqttSecurity("banc1", b"!"),
        MqttBms("banc1", b"c"),
        MqttStep("banc1", b"3"),
    ]
    for item in sent:
        inbox.put(item)
    assert drained(inbox) == [
        MqttBms("banc1", b"c"),
        MqttStep("banc1", b"2"),
        MqttBms("banc2", b"x"),
        MqttNurse("banc1", b"11", 1),
        MqttNurse("banc1", b"20", 2),
        MqttSecurity("banc1", b"!"),
        MqttStep("banc1", b"3"),
    ]
    inbox.put(MqttBms("banc1", b"d"))  # taken: the next line waits again
    assert drained(inbox) == [MqttBms("banc1", b"d")]


def test_the_queue_stays_bounded_however_long_the_tk_thread_is_held() -> None:
    inbox = ui.CoalescingQueue()
    for i in range(10_000):
        for b in range(1, 17):
            inbox.put(MqttBms(f"banc{b}", str(i).encode()))
            inbox.put(MqttNurse(f"banc{b}", str(i).encode(), 1 + i % 6))
    assert inbox.qsize() == 16 * 7
    kept = drained(inbox)
    assert {item.payload for item in kept if isinstance(item, MqttBms)} == {b"9999"}
    assert len(kept) == 16 * 7


@pytest.mark.parametrize(
    "thresholds,value,level",
    [
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 39.9, uic.LEVEL_ALARM),
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 44.0, uic.LEVEL_WARN),
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 52.0, uic.LEVEL_OK),
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 58.4, uic.LEVEL_OK),  # end of charge, held in CV: normal
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 58.8, uic.LEVEL_WARN),
        (uic.PACK_VOLTAGE_THRESHOLDS_V, 59.5, uic.LEVEL_ALARM),
        (uic.CURRENT_ABS_THRESHOLDS_A, 50.0, uic.LEVEL_OK),
        (uic.CURRENT_ABS_THRESHOLDS_A, 70.0, uic.LEVEL_WARN),
        (uic.CURRENT_ABS_THRESHOLDS_A, 120.0, uic.LEVEL_ALARM),
        (uic.TEMPERATURE_THRESHOLDS_C, -1.0, uic.LEVEL_ALARM),
        (uic.TEMPERATURE_THRESHOLDS_C, 5.0, uic.LEVEL_WARN),
        (uic.TEMPERATURE_THRESHOLDS_C, 25.0, uic.LEVEL_OK),
        (uic.TEMPERATURE_THRESHOLDS_C, 50.0, uic.LEVEL_WARN),
        (uic.TEMPERATURE_THRESHOLDS_C, 60.0, uic.LEVEL_ALARM),
        (uic.CELL_SPREAD_THRESHOLDS_MV, 16.0, uic.LEVEL_OK),
        (uic.CELL_SPREAD_THRESHOLDS_MV, 60.0, uic.LEVEL_WARN),
        (uic.CELL_SPREAD_THRESHOLDS_MV, 150.0, uic.LEVEL_ALARM),
        (uic.SOC_THRESHOLDS_PCT, 10.0, uic.LEVEL_ALARM),
        (uic.SOC_THRESHOLDS_PCT, 30.0, uic.LEVEL_WARN),
        (uic.SOC_THRESHOLDS_PCT, 80.0, uic.LEVEL_OK),
    ],
)
def test_colour_thresholds(thresholds: uic.Thresholds, value: float, level: str) -> None:
    assert thresholds.level(value) == level
    assert uic.level_color(thresholds, value) == uic.LEVEL_COLORS[level]


@pytest.mark.parametrize(
    "seconds,text",
    [(None, "--:--:--"), (-1, "--:--:--"), (float("nan"), "--:--:--"), (0, "00:00:00"), (59.6, "00:01:00"),
     (3725, "01:02:05"), (1e9, "99:59:59")],
)
def test_format_duration(seconds: Optional[float], text: str) -> None:
    assert uic.format_clock(seconds) == text


@pytest.mark.parametrize(
    "step,text",
    [(1, "Phase 1/5 : Ri / diffusion"), (3, "Phase 3/5 : Décharge"), (5, "Phase 5/5 : Terminé"),
     (9, "Arrêt fin de journée"), (None, "Phase -/5")],
)
def test_get_phase_message(step: Optional[int], text: str) -> None:
    assert uic.get_phase_message(step) == text


def test_kiosk_mqtt_bridge_is_never_handed_a_message_over_4_kib(tmp_path: Path, banc_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocole.md §4: the kiosk announces a 4 KiB MQTT v5 maximum packet size; even a broker without a limit respects it."""
    import queue
    import time

    from banclfp.infra import environment
    from banclfp.testkit.banc_helpers import MqttProbe, wait_until
    from banclfp.testkit.support import MosquittoBroker

    broker = MosquittoBroker(tmp_path / "open-broker", max_packet_size=None).start()
    try:
        for key, value in broker.env().items():
            monkeypatch.setenv(key, value)
        sink: queue.Queue[KioskMessage] = queue.Queue()
        bridge = ui.MqttBridge(environment.load_settings({**broker.env(), "BANC_NUM_BANCS": "1"}), sink)
        bridge.start()
        try:
            # The bridge tells the Tk thread through the queue (its only channel) that it is connected.
            assert sink.get(timeout=10) == BrokerLink(True)
            time.sleep(0.3)  # its SUBSCRIBE is processed
            with MqttProbe(broker) as esp:
                esp.publish_many([("banc1/security", "x" * 300_000), ("banc1/security", "petite alerte")])
            wait_until(lambda: not sink.empty(), message="the small alert")
            time.sleep(0.5)
            items = []
            while not sink.empty():
                items.append(sink.get())
            security = [item.payload for item in items if isinstance(item, MqttSecurity)]
            assert security == [b"petite alerte"]
        finally:
            bridge.stop()
    finally:
        broker.stop()


# =========================================================================== link pills (kiosk_state.banc_display)


def _rt(**fields: object) -> BancRuntime:
    rt = BancRuntime("banc1", known=True)
    for name, value in fields.items():
        setattr(rt, name, value)
    return rt


# (id, runtime, ESP pill, banc pill)
LINK_CASES = [
    ("reading the state", BancRuntime("banc1"), LINK_UNKNOWN, LINK_UNKNOWN),
    ("free bench, nothing heard", _rt(), LINK_UNKNOWN, LINK_IDLE),
    ("free bench, both offline", _rt(esp_online=False, banc_online=False), LINK_IDLE, LINK_IDLE),
    ("test running, both online", _rt(occupied=True, running=True, step=3, esp_online=True, banc_online=True),
     LINK_ONLINE, LINK_ONLINE),
    ("banc.py started, its status not yet heard", _rt(occupied=True, running=True, step=1), LINK_UNKNOWN, LINK_ONLINE),
    ("ESP lost during a test", _rt(occupied=True, running=True, step=3, esp_online=False), LINK_ALARM, LINK_ONLINE),
    ("banc.py alive but off the broker", _rt(occupied=True, running=True, step=3, banc_online=False),
     LINK_UNKNOWN, LINK_ALARM),
    ("normal end: step 5, both gone", _rt(occupied=True, running=False, step=5, esp_online=False, banc_online=False),
     LINK_IDLE, LINK_IDLE),
    ("step 5 while banc.py finishes", _rt(occupied=True, running=True, step=5, esp_online=False, banc_online=False),
     LINK_IDLE, LINK_IDLE),
    ("stopped by step 9", _rt(occupied=True, running=False, unfinished=True, step=9, seen_running=True,
                              esp_online=False, banc_online=False), LINK_IDLE, LINK_IDLE),
    ("interrupted before this kiosk started", _rt(occupied=True, running=False, unfinished=True, step=3,
                                                  banc_online=False), LINK_UNKNOWN, LINK_IDLE),
    ("banc.py crashed mid-phase", _rt(occupied=True, running=False, unfinished=True, step=3, seen_running=True,
                                      banc_online=False), LINK_UNKNOWN, LINK_ALARM),
    ("bench just reset to Libre", _rt(esp_online=False, banc_online=False, seen_running=False), LINK_IDLE, LINK_IDLE),
]


@pytest.mark.parametrize("rt,esp,banc", [c[1:] for c in LINK_CASES], ids=[c[0] for c in LINK_CASES])
def test_link_pills_alarm_only_when_something_should_run(rt: BancRuntime, esp: str, banc: str) -> None:
    display = banc_display(rt)
    assert (display.esp_link, display.banc_link) == (esp, banc)


# (id, runtime, pill, what touching it says)
EXPLANATION_CASES = [
    ("ESP red during a test", _rt(occupied=True, running=True, step=3, esp_online=False), LINK_ESP,
     "Banc 1, pastille ESP rouge : l'ESP32 du banc ne répond plus pendant un test"),
    ("ESP off on a free bench", _rt(esp_online=False), LINK_ESP, "pastille ESP éteinte : l'ESP32 du banc est hors ligne ; normal"),
    ("recording", _rt(occupied=True, running=True, step=3, banc_online=True), LINK_RECORDING,
     "Banc 1, pastille Enregistrement verte : le test de ce banc est en cours d'enregistrement."),
    ("recording off the broker", _rt(occupied=True, running=True, step=3, banc_online=False), LINK_RECORDING,
     "pastille Enregistrement rouge : le test s'enregistre mais ne reçoit plus les mesures"),
    ("recording crashed", _rt(occupied=True, running=False, unfinished=True, step=3, seen_running=True, banc_online=False),
     LINK_RECORDING, "rouge : l'enregistrement s'est arrêté avant la fin du test (voir logs.log). Pour reprendre : banc1,"),
    ("stopped by step 9", _rt(occupied=True, running=False, unfinished=True, step=9, seen_running=True, banc_online=False),
     LINK_RECORDING, "éteinte : aucun enregistrement en cours ; normal sans test, après la fin ou un arrêt."),
    ("state not read yet", BancRuntime("banc1"), LINK_RECORDING, "grise : état de l'enregistrement pas encore lu."),
]


@pytest.mark.parametrize("rt,link,fragment", [c[1:] for c in EXPLANATION_CASES], ids=[c[0] for c in EXPLANATION_CASES])
def test_a_touched_pill_says_what_its_colour_means(rt: BancRuntime, link: str, fragment: str) -> None:
    text = link_explanation(rt, link)
    assert fragment in text
    assert "banc.py" not in text  # the operator's words, not the program's name


def test_a_touched_pill_without_the_broker_says_nothing_is_known() -> None:
    rt = _rt(occupied=True, running=True, step=3, esp_online=True, banc_online=True)
    text = link_explanation(rt, LINK_RECORDING, broker_connected=False)
    assert text.startswith("Banc 1, pastille Enregistrement : état inconnu, le kiosque a perdu le broker")


def test_pill_labels_name_what_they_watch() -> None:
    assert LINK_LABELS[LINK_ESP] == ("ESP", "ESP")
    assert LINK_LABELS[LINK_RECORDING] == ("Enregistrement", "Enreg.")


@pytest.mark.parametrize("screen,size", [((800, 480), (784, 416)), ((1280, 800), (1264, 736)),
                                         ((1920, 1080), (1280, 800)), ((200, 100), (ui.MIN_WINDOW_W, ui.MIN_WINDOW_H))])
def test_windowed_kiosk_fits_its_screen(screen: tuple[int, int], size: tuple[int, int]) -> None:
    assert ui.windowed_size(*screen) == size


@pytest.mark.parametrize("banc,status,expected_bench,expected_status", [
    ("banc3", "finished", "Banc 3", "terminé"),
    ("banc12", "abandoned", "Banc 12", "abandonné"),
    ("?", "weird", "Banc ?", "weird"),  # a row the kiosk cannot read is shown as it is, not dropped
])
def test_history_line(banc: str, status: str, expected_bench: str, expected_status: str) -> None:
    entry = HistoryEntry(Path("/x"), banc, "2025-06-12T08:05:00+02:00", status, "A", 96.04, 101.5)
    assert uic.history_line(entry) == (f"12/06/2025 08:05   {expected_bench}   {expected_status}   A   "
                                       f"SOH 96,0\u00a0%   101,50\u00a0Ah")
