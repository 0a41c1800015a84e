"""The display matrix: at every supported screen size and bench count, in every state an operator meets, each
text of the kiosk is drawn whole inside its widget and no two widgets of a panel overlap (issue "The kiosk
shows only what is true now, whole, at every size").

One bare kiosk (tests/test_ui_gui.kiosk_factory, no broker) per (screen size, bench count), each its own test
item so that `pytest -n` runs them side by side. Its worker is stopped once the benches' state is read, and the
states are fed to it as its queue would (App.apply_message: snapshots, steps, BMS lines, alarms), or as the
scan workflow answers (App.say). In every state:

- every visible label's text, measured with the label's own font and wrapped at its wraplength as Tk wraps it
  (formatting.wrap_lines), fits the label that draws it (its widest line, its lines x the font's linespace),
  and Tk's own request for the label says the same; the label lies inside its panel (or the window);
- an ellipsis only ever shortens a serial (ElidedLabel.part), never a word that carries information;
- no two visible widgets of a panel overlap; a result card covers its whole panel but the alarm's row, and
  nothing of the panel sticks out of it;
- the SOC digits sit on their chip, over the gauge's fill and border;
- stale measures (2 min, 3 h 59, 23 h 48 old; after a stop, the current cut) are greyed and the header says how
  old, whole.

Screenshots of the worst cases (800x480 and 1280x800 with 16 benches: cards, alarms, the longest refusal, the
detail view) go to tests/artifacts/display_*.png.
"""

from __future__ import annotations

import os
import re
import time
import tkinter as tk
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

import pytest

from banclfp.kiosk import app as ui, state as kiosk_state, widgets as uic
from banclfp.kiosk.messages import Kind
from banclfp.kiosk.queue_messages import mqtt_message
from banclfp.kiosk.scan_workflow import BancInfo, PreviousTest, ScanLookups, ScanWorkflow
from banclfp.kiosk.state import BancSnapshot, ResultView, RiView
from banclfp.presentation import display_colors, formatting
from banclfp.recording import record
from banclfp.wire import protocol
from tests.test_ui_gui import kiosk_factory, screenshot

pytestmark = pytest.mark.gui

SIZES = ((800, 480), (1024, 600), (1280, 800), (1920, 1080))
COUNTS = (1, 4, 6, 16)
SCREENSHOTS = {((800, 480), 16), ((1280, 800), 16)}  # the worst cases, looked at by a person
SHOT_STATES = ("mixed", "refusal 48 h", "late confirmation", "card À VÉRIFIER and its alarm", "alarm",
               "recovery notice", "interrupted, long serial", "stale measures", "stopped, current cut, stale")

LONG_SERIAL = "RW-" + "LONGSERIAL0123456789ABCDEFGHIJKLM"[:32]  # the longest serial the scanner accepts
GRADES = ("A", "B", "C", "REJET", "NON CLASSÉ", "À VÉRIFIER")
LONG_REASON = ("données insuffisantes pour classer : fenêtre de pleine charge : 12 lignes sur 601 attendues ; "
               "phase 2 : aucune ligne dans ses 10 dernières minutes")
LONGEST_ALARM = ("Lignes BMS incohérentes avec la précédente (seq 4294967295) : les 3 suivantes (seq 4294967296 "
                 "à 4294967298) concordent, elles sont enregistrées ; vérifier l'ESP")
NOTICE = "Données BMS rétablies après 47 s de silence"  # a recovery notice (blue, fades)
LIMITS = display_colors.MeasureLimits(cell_spread_max_mv=300.0, temperature_max_c=50.0)
RI = RiView(0.01234, 0.01187, 0.00456, 0.00502)
# The widest values of each phase (two-digit currents, three-digit capacities, a spread the model accepts).
LINES = {
    1: protocol.BmsLine(10, 52.31, -12.4, 67.5, 24.8, 0.0, 0.0, 3265, 3281, 0),
    2: protocol.BmsLine(20, 58.39, 49.9, 99.0, 46.2, 0.0, 0.0, 3400, 3652, 1),
    3: protocol.BmsLine(30, 40.12, -49.9, 0.0, 38.7, 100.12, 5120.4, 2650, 2902, 0),
    4: protocol.BmsLine(40, 51.87, 49.9, 48.0, 31.5, 100.12, 5120.4, 3240, 3262, 0),
}
NURSES = (35, 36, 34, 100, 33, 35)
# The kiosk's freshness rule (kiosk_state), as it is before the run makes every measure live: the stale states'.
FRESHNESS = {"FRESH_S": kiosk_state.FRESH_S, "REST_FRESH_S": kiosk_state.REST_FRESH_S}
STALE_AGES_S = (2 * 60 + 5, 3 * 3600 + 59 * 60 + 5, 23 * 3600 + 48 * 60 + 5)  # "2 min", "3 h 59", "23 h 48"


# =========================================================================== the messages, worded by the workflow


def _workflow(previous: Optional[PreviousTest] = None) -> ScanWorkflow:
    lookups = ScanLookups(is_banc_running=lambda _banc: False, banc_info=lambda _banc: BancInfo(False),
                          banc_for_serial=lambda _serial: None, latest_test=lambda _serial: previous)
    return ScanWorkflow(16, 15.0, lookups)


def longest_refusal_48h() -> str:
    """The 48-hour refusal with the longest serial, as the workflow words it."""
    now = datetime(2026, 12, 30, 23, 58, tzinfo=record.LOCAL_TZ)
    flow = _workflow(PreviousTest("banc16", True, now - timedelta(hours=1)))
    flow.handle("banc16", now, 0.0)
    text = flow.handle(LONG_SERIAL, now, 1.0).message
    assert "48" in text and "Nouveau test possible" in text, text
    return text


def longest_late_confirm() -> str:
    """The late confirmation's refusal and instruction with the longest serial, as the workflow words it."""
    now = datetime(2026, 12, 30, 23, 58, tzinfo=record.LOCAL_TZ)
    flow = _workflow()
    flow.handle("banc16", now, 0.0)
    flow.handle(LONG_SERIAL, now, 1.0)
    assert flow.tick(60.0) is not None
    text = flow.handle("banc16", now, 61.0).message
    assert "NON lancé" in text and "Recommencez" in text, text
    return text


# =========================================================================== feeding a kiosk


@dataclass
class Feed:
    """Puts a state on every bench of a bare kiosk, as its queue would."""

    app: ui.App

    def item(self, kind: str, banc: str, payload: bytes, nurse: Optional[int] = None) -> None:
        message = mqtt_message(protocol.TopicInfo(protocol.banc_number(banc), kind, nurse), payload)
        assert message is not None, kind
        self.app.apply_message(message)

    def snapshot(self, banc: str, **fields: Any) -> None:
        values: dict[str, Any] = dict(occupied=False, serial=None, file_step=None, running=False, unfinished=False)
        values.update(fields)
        self.app.apply_message(BancSnapshot(banc=banc, **values))

    def free(self, banc: str) -> None:
        self.app.panels[banc].reset()
        self.snapshot(banc)

    def running(self, banc: str, step: int, serial: str) -> None:
        self.free(banc)
        self.snapshot(banc, occupied=True, serial=serial, file_step=step, running=True, ri_view=RI, limits=LIMITS)
        self.item(protocol.KIND_ESP_STATUS, banc, b"online")
        self.item(protocol.KIND_BANC_STATUS, banc, b"online")
        self.item(protocol.KIND_STEP, banc, protocol.encode_step(step).encode())  # the phases before it: done
        self.item(protocol.KIND_BMS, banc, protocol.encode_bms_line(LINES[min(step, 4)]).encode())
        for index, soc in enumerate(NURSES, start=1):
            self.item(protocol.KIND_NURSE, banc, str(soc).encode(), index)

    def interrupted(self, banc: str) -> None:
        self.running(banc, 3, LONG_SERIAL)
        self.snapshot(banc, occupied=True, serial=LONG_SERIAL, file_step=3, running=False, unfinished=True,
                      limits=LIMITS)

    def card(self, banc: str, grade: str) -> None:
        self.free(banc)
        reason = LONG_REASON if grade == "À VÉRIFIER" else ""
        result = ResultView(LONG_SERIAL, grade, 87.3, 100.12, 0.01234, reason, certificate=grade != "C")
        self.snapshot(banc, result=result)

    def alarm(self, banc: str, text: str = LONGEST_ALARM) -> None:
        self.item(protocol.KIND_SECURITY, banc, text.encode())

    def aged(self, banc: str, age_s: float) -> None:
        """The bench's latest line received `age_s` ago (a silent BMS or broker): greyed, its age in the header."""
        for name, value in FRESHNESS.items():  # the kiosk's own rule from here on (the stale states come last)
            setattr(kiosk_state, name, value)
        self.app.runtime[banc].line_received_s = time.monotonic() - age_s
        self.app.render_banc(banc)

    def stopped(self, banc: str, age_s: float) -> None:
        """A test stopped (9) at phase 3, its last line `age_s` old: the current reads as cut, the values greyed."""
        self.running(banc, 3, LONG_SERIAL)
        self.item(protocol.KIND_STEP, banc, protocol.encode_step(protocol.STEP_STOP).encode())
        self.aged(banc, age_s)


def _serial(index: int) -> str:
    return f"RW-MATRIX{index:04d}"


def states(feed: Feed) -> Iterator[tuple[str, Callable[[], None]]]:
    """(name, put it on the kiosk) for each state of the matrix, every bench in it."""
    bancs = feed.app.bancs
    refusal, late = longest_refusal_48h(), longest_late_confirm()
    verdict_alarm = f"Test terminé À VÉRIFIER, aucune classe attribuée : {LONG_REASON.split(' : ', 1)[1]}"

    def each(action: Callable[[int, str], None]) -> Callable[[], None]:
        def put() -> None:
            for i, banc in enumerate(bancs):
                action(i, banc)
        return put

    def card_and_alarm(_i: int, banc: str) -> None:
        feed.card(banc, "À VÉRIFIER")
        feed.alarm(banc, verdict_alarm)

    def running_with_alarm(i: int, banc: str) -> None:
        feed.running(banc, 3, _serial(i))
        feed.alarm(banc)

    def running_with_notice(i: int, banc: str) -> None:
        feed.running(banc, 3, _serial(i))
        feed.alarm(banc, NOTICE)  # a recovery notice comes on bancX/security too

    def refused() -> None:  # over the benches as the notice left them (running, its row shown)
        feed.app.say(refusal, Kind.REFUSAL)

    def late_confirmation() -> None:
        feed.app.say(late, Kind.REFUSAL)

    def stale(i: int, banc: str) -> None:
        feed.running(banc, 2 + i % 3, _serial(i))
        feed.aged(banc, STALE_AGES_S[i % len(STALE_AGES_S)])

    def mixed() -> None:
        for i, banc in enumerate(bancs):
            kind = i % 5
            if kind == 0:
                feed.running(banc, 2 + i % 3, _serial(i))
            elif kind == 1:
                running_with_alarm(i, banc)
            elif kind == 2:
                feed.card(banc, GRADES[(i // 5) % len(GRADES)])
            elif kind == 3:
                card_and_alarm(i, banc)
            else:
                feed.interrupted(banc)
        feed.app.say(refusal, Kind.REFUSAL)

    yield "idle", each(lambda _i, banc: feed.free(banc))
    for step in (1, 2, 3, 4):
        yield f"phase {step}", each(lambda i, banc, step=step: feed.running(banc, step, _serial(i)))  # type: ignore[misc]
    yield "interrupted, long serial", each(lambda _i, banc: feed.interrupted(banc))
    yield "running, long serial", each(lambda _i, banc: feed.running(banc, 2, LONG_SERIAL))
    for grade in GRADES:
        yield f"card {grade}", each(lambda _i, banc, grade=grade: feed.card(banc, grade))  # type: ignore[misc]
    yield "card À VÉRIFIER and its alarm", each(card_and_alarm)
    yield "alarm", each(running_with_alarm)
    yield "recovery notice", each(running_with_notice)
    yield "refusal 48 h", refused
    yield "late confirmation", late_confirmation
    yield "mixed", mixed
    # Last: from here on the measures age as on the kiosk (Feed.aged).
    yield "stale measures", each(stale)
    yield "stopped, current cut, stale", each(lambda i, banc: feed.stopped(banc, STALE_AGES_S[i % 2]))


def slug(name: str) -> str:
    """A state's name as a file name: "card À VÉRIFIER and its alarm" -> "card_a_verifier_and_its_alarm"."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return "_".join(word for word in re.split(r"[^a-z0-9]+", plain) if word)


def settle(app: ui.App, at_least_s: float = 0.0) -> None:
    """Let the kiosk lay itself out: geometry, layouts chosen again (their timers), redraws, until nothing is pending."""
    start = time.monotonic()
    while True:
        app.update_idletasks()
        app.update()
        pending = app._pending_rescale is not None or any(panel._fit_pending for panel in app.panels.values())
        elapsed = time.monotonic() - start
        if (not pending and elapsed >= at_least_s) or elapsed > 5.0:
            app.update()
            return
        time.sleep(0.003)


# =========================================================================== what is checked


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def of(cls, widget: tk.Misc) -> Box:
        x, y = widget.winfo_rootx(), widget.winfo_rooty()
        return cls(x, y, x + widget.winfo_width(), y + widget.winfo_height())

    def overlaps(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def inside(self, other: Box) -> bool:
        return other.x0 <= self.x0 and self.x1 <= other.x1 and other.y0 <= self.y0 and self.y1 <= other.y1


def descendants(widget: tk.Misc) -> Iterator[tk.Misc]:
    for child in widget.winfo_children():
        yield child
        yield from descendants(child)


def visible(widget: tk.Misc) -> bool:
    return bool(widget.winfo_viewable()) and widget.winfo_width() > 1


def text_labels(root: tk.Misc) -> list[tk.Label]:
    """Every visible Tk label that draws a text under `root` (customtkinter's widgets draw theirs in one)."""
    return [w for w in descendants(root) if isinstance(w, tk.Label) and str(w.cget("text")) and visible(w)]


def drawing_canvases(panel: uic.BancPanel) -> list[tk.Canvas]:
    """The canvases that draw something of their own (phase bar, gauge, nurses), visible."""
    canvases = [panel.widgets[key].canvas for key in ("phase_bar", "soc_gauge", "progress_bar_nurse")]
    return [canvas for canvas in canvases if visible(canvas)]


@dataclass(frozen=True)
class DrawnFont:
    """The font a label draws with, measured by Tk from the label's own description ("Roboto -15 bold").

    Not tkinter.font.Font(font=...): that copies the font's `actual` size, in points, which rounds to
    another pixel size than the label's.
    """

    widget: tk.Misc
    description: str

    def measure(self, text: str) -> int:
        key = (self.description, text)
        if key not in _MEASURED:
            _MEASURED[key] = int(self.widget.tk.call("font", "measure", self.description, "-displayof", self.widget,
                                                     text))
        return _MEASURED[key]

    def linespace(self) -> int:
        key = (self.description, None)
        if key not in _MEASURED:
            _MEASURED[key] = int(self.widget.tk.call("font", "metrics", self.description, "-displayof", self.widget,
                                                     "-linespace"))
        return _MEASURED[key]


_MEASURED: dict[tuple[str, Optional[str]], int] = {}  # one kiosk's fonts (a description names its size): measured once


def label_font(label: tk.Label) -> DrawnFont:
    return DrawnFont(label, str(label.cget("font")))


def check_label(label: tk.Label, where: str, within: Optional[Box]) -> list[str]:
    """What is wrong with how `label` draws its text (nothing: [])."""
    problems = []
    text = str(label.cget("text"))
    font = label_font(label)
    wrap = int(label.winfo_pixels(label.cget("wraplength")))
    lines = formatting.wrap_lines(text, wrap, font.measure)
    need_w = max(int(font.measure(line)) for line in lines)
    need_h = len(lines) * font.linespace()
    padx, pady = (int(label.winfo_pixels(label.cget(option))) for option in ("padx", "pady"))
    room_w, room_h = label.winfo_width() - 2 * padx, label.winfo_height() - 2 * pady
    if need_w > room_w or need_h > room_h:
        problems.append(f"{where}: {text!r} needs {need_w}x{need_h} px ({len(lines)} lines), has {room_w}x{room_h}")
    if label.winfo_reqwidth() > label.winfo_width() or label.winfo_reqheight() > label.winfo_height():
        problems.append(f"{where}: {text!r}: Tk asks {label.winfo_reqwidth()}x{label.winfo_reqheight()}, "
                        f"gets {label.winfo_width()}x{label.winfo_height()}")
    if within is not None and not Box.of(label).inside(within):
        problems.append(f"{where}: {text!r} at {Box.of(label)} outside {within}")
    owner = label.master
    if formatting.ELLIPSIS in text and isinstance(owner, uic.ElidedLabel):
        whole = owner.alias(owner.full_text) if owner.alias is not None else owner.full_text
        part = owner.part or ""
        shortened = part and any(whole.replace(part, part[:n] + formatting.ELLIPSIS) == text for n in range(len(part)))
        if text != whole and not shortened:
            problems.append(f"{where}: {whole!r} shown as {text!r}: cut where the words carry information")
    return problems


def check_panel(app: ui.App, banc: str) -> list[str]:
    """Texts whole and inside, widgets apart, the card over the whole panel, the SOC digits on their chip."""
    panel = app.panels[banc]
    box = Box.of(panel)
    problems: list[str] = []
    card = app.result_cards.get(banc)
    card_shown = card is not None and visible(card)
    alert = panel.widgets["security"]
    alarm_shown = visible(alert)
    card_box = Box.of(card) if card is not None and card_shown else None
    leaves: list[tuple[str, tk.Misc]] = []
    for label in text_labels(panel):
        kind = ("card" if card_box is not None and str(label).startswith(str(card))
                else "alarm" if str(label).startswith(str(alert)) else "panel")
        if kind != "panel" or card_box is None or not Box.of(label).inside(card_box):  # not hidden under the card
            problems += check_label(label, f"{banc} {kind}", box)
        leaves.append((kind, label))
    leaves += [("panel", canvas) for canvas in drawing_canvases(panel)]
    if card_box is not None:
        alarm_top = Box.of(alert).y0 if alarm_shown else box.y1
        if (card_box.x0, card_box.y0, card_box.x1) != (box.x0, box.y0, box.x1) or card_box.y1 < alarm_top - 6:
            problems.append(f"{banc}: the card {card_box} does not cover its panel {box} (alarm from {alarm_top})")
        for kind, widget in leaves:
            if kind == "panel" and not Box.of(widget).inside(card_box) and Box.of(widget).overlaps(card_box):
                problems.append(f"{banc}: {widget} sticks out of the card")
        leaves = [(kind, widget) for kind, widget in leaves if kind != "panel" or not Box.of(widget).inside(card_box)]
    for i, (_kind, a) in enumerate(leaves):
        for _other, b in leaves[i + 1:]:
            if Box.of(a).overlaps(Box.of(b)):
                problems.append(f"{banc}: {describe(a)} overlaps {describe(b)}")
    if alarm_shown and str(alert.cget("text")) != panel.alarm_text:
        problems.append(f"{banc}: the alarm {panel.alarm_text!r} shown as {alert.cget('text')!r}")
    gauge = panel.widgets["soc_gauge"]
    if visible(gauge.canvas) and not card_shown:
        problems += check_gauge(banc, gauge)
    return problems


def describe(widget: tk.Misc) -> str:
    return repr(str(widget.cget("text"))) if isinstance(widget, tk.Label) else str(widget)


def check_gauge(banc: str, gauge: uic.SocGauge) -> list[str]:
    """The SOC digits on their chip (the panel's colour), drawn over the fill; the chip inside the gauge's body."""
    canvas = gauge.canvas
    (value,) = canvas.find_withtag("value")
    (chip,) = canvas.find_withtag("chip")
    text_box, chip_box = canvas.bbox(value), canvas.bbox(chip)
    problems = []
    if not (chip_box[0] <= text_box[0] and text_box[2] <= chip_box[2] and chip_box[1] <= text_box[1]
            and text_box[3] <= chip_box[3]):
        problems.append(f"{banc}: SOC digits {text_box} off their chip {chip_box}")
    if canvas.itemcget(chip, "fill") != uic.BG_PANEL or canvas.itemcget(value, "fill") != uic.TEXT:
        problems.append(f"{banc}: SOC digits not light on the panel's colour")
    order = canvas.find_all()
    if order.index(value) < order.index(chip) or any(order.index(item) > order.index(chip)
                                                      for item in order if item not in (value, chip)):
        problems.append(f"{banc}: the SOC chip is not over the fill, or the digits not over the chip")
    return problems


def check_colors(app: ui.App, state: str) -> list[str]:
    """Colours that agree with the verdict: a spread the model accepts is no alarm (252 mV, model 300 mV: orange),
    nor an empty pack or a pack near its cut-off at the end of the discharge, nor a temperature under the model's
    maximum (46,2 °C, model 50 °C: orange)."""
    wanted = {
        "phase 2": {"balance": display_colors.COLOR_WARN, "temperature": display_colors.COLOR_WARN},
        "phase 3": {"soc": display_colors.TEXT, "voltage": display_colors.COLOR_OK, "balance": display_colors.COLOR_WARN},
    }.get(state, {})
    problems = []
    for banc, panel in app.panels.items():
        for key, color in wanted.items():
            shown = str(panel.widgets[key].cget("text_color"))
            if shown != color:
                problems.append(f"{banc}: {key} {panel.widgets[key].full_text!r} in {shown}, not {color}")
    return problems


def check_stale(app: ui.App, state: str) -> list[str]:
    """A stale state says its measures are old and how old (the age, whole), greyed; after a stop, the current cut."""
    if "stale" not in state:
        return []
    problems = []
    for banc, panel in app.panels.items():
        view = kiosk_state.banc_display(app.runtime[banc], time.monotonic()).measures
        age = panel.widgets["age"]
        age_words = kiosk_state.age_text(view.age_s or 0.0).removeprefix("il y a ")
        if view.fresh or not visible(age) or age_words not in str(age.cget("text")):
            problems.append(f"{banc}: measures {view.age_s} s old, the header says {str(age.cget('text'))!r}")
        if str(panel.widgets["voltage"].cget("text_color")) != uic.STALE_COLOR:
            problems.append(f"{banc}: a stale voltage not greyed")
        if "stopped" in state and panel.widgets["current"].full_text != uic.CURRENT_CUT_TEXT:
            problems.append(f"{banc}: after a stop the current reads {panel.widgets['current'].full_text!r}")
    return problems


def check_window(app: ui.App) -> list[str]:
    """Every panel, the scan bar (its message whole) and an open detail view."""
    problems = []
    for banc in app.bancs:
        problems += check_panel(app, banc)
    window = Box.of(app)
    scan_bar = app.scan_bar
    for label in text_labels(scan_bar):
        problems += check_label(label, "scan bar", window)
    if scan_bar.message_text != scan_bar.full_message:
        problems.append(f"scan bar: {scan_bar.full_message!r} shown as {scan_bar.message_text!r}")
    if app.detail is not None:
        for label in text_labels(app.detail):
            problems += check_label(label, "detail", Box.of(app.detail))
    return problems


# =========================================================================== the matrix


@pytest.fixture
def bare_kiosk(banc_home: Path, xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ui.App]]:
    factory = kiosk_factory(xvfb_display, monkeypatch)
    make = next(factory)
    try:
        yield make
    finally:
        factory.close()


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_text_whole_and_apart(size: tuple[int, int], count: int, bare_kiosk: Callable[..., ui.App],
                                    monkeypatch: pytest.MonkeyPatch, xvfb_display: str) -> None:
    monkeypatch.setenv("BANC_NUM_BANCS", str(count))
    # Measures stay live through the run (freshness is tests/test_kiosk_freshness.py's): each state is what it says;
    # the stale states, last, put the kiosk's own rule back (Feed.aged).
    monkeypatch.setattr(kiosk_state, "FRESH_S", 3600.0, raising=False)
    monkeypatch.setattr(kiosk_state, "REST_FRESH_S", 3600.0, raising=False)
    width, height = size
    app = bare_kiosk(geometry=f"{width}x{height}+0+0", start_mqtt=False)
    app.worker.stop(timeout_s=5)  # from here on only the test changes what the kiosk shows
    settle(app, 0.3)
    assert (app.winfo_width(), app.winfo_height()) == size
    feed = Feed(app)
    failures: dict[str, list[str]] = {}
    tag = f"{width}x{height}_{count}"
    for name, put in states(feed):
        put()
        settle(app)
        problems = check_window(app) + check_colors(app, name) + check_stale(app, name)
        if problems:
            failures[name] = problems
        if ((size, count) in SCREENSHOTS and name in SHOT_STATES) or (
                problems and os.environ.get("DISPLAY_MATRIX_SHOTS")):  # DISPLAY_MATRIX_SHOTS=1: each failing state
            screenshot(xvfb_display, app, f"display_{tag}_{slug(name)}.png")
    if (size, count) in SCREENSHOTS:
        # A panel too small to show everything: a touch on it shows the rest, readable, over the grid.
        first = app.bancs[0]
        panel = app.panels[first]
        feed.running(first, 3, LONG_SERIAL)
        settle(app)
        assert panel.layout is not None and not panel.layout.complete, panel.layout
        panel.widgets["voltage"]._label.event_generate("<ButtonRelease-1>")
        settle(app)
        assert app.detail is not None and app.detail.panel is panel
        app.detail.cells[0][1]._label.event_generate("<ButtonRelease-1>")  # a touch on it takes it away
        settle(app)
        assert app.detail is None
        feed.alarm(first)
        app.open_detail(first)
        settle(app, 0.3)
        problems = check_window(app)
        if problems:
            failures["detail view"] = problems
        screenshot(xvfb_display, app, f"display_{tag}_detail.png")
        app.close_detail()
    report = "\n".join(f"[{name}] {problem}" for name, problems in failures.items() for problem in problems[:12])
    assert not failures, f"{sum(len(p) for p in failures.values())} problems at {tag}:\n{report}"
