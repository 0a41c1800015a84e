"""The verdict on the kiosk (Xvfb): a finished bench's result card, the chart window's verdict, a battery's history."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from banclfp.kiosk import app as ui, chart_window, widgets as uic
from banclfp.presentation import formatting
from banclfp.recording import record
from banclfp.testkit.support import REPO_DIR
from banclfp.testkit.synthetic import write_synthetic_test
from banclfp.verdict import conclude as verdict
from tests.test_ui_gui import pump_until, screenshot, type_scan

pytestmark = pytest.mark.gui


@pytest.fixture
def app(mqtt_env: dict[str, str], xvfb_display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ui.App]:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    kiosk = ui.App(windowed=True, geometry="1280x800+0+0")
    try:
        pump_until(kiosk, kiosk.winfo_ismapped, what="window mapped")
        pump_until(kiosk, lambda: kiosk.focus_get() is kiosk.scan_bar.entry._entry, what="entry focused")
        yield kiosk
    finally:
        for proc, _started in kiosk.supervisor.children.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        kiosk.shutdown()


@pytest.fixture
def finished_tests(banc_home: Path) -> tuple[Path, Path]:
    """Two finished, graded tests of RW-CARD0001: on banc2 in March, on banc1 in April (the latest)."""
    older = write_synthetic_test(banc_home, rows=600, banc="banc2", serial="RW-CARD0001",
                                 start=datetime(2024, 3, 4, 8, 0, tzinfo=record.LOCAL_TZ))
    newer = write_synthetic_test(banc_home, rows=600, banc="banc1", serial="RW-CARD0001",
                                 start=datetime(2024, 4, 8, 8, 0, tzinfo=record.LOCAL_TZ))
    # The lab's model for this pack: its measured capacity is 95 % of nominal (grade A).
    nominal = newer.expected_discharge_ah / 0.95
    rules = json.loads((REPO_DIR / "grading.json").read_text(encoding="utf-8"))
    rules["models"][0]["nominal_capacity_ah"] = round(nominal, 4)
    (banc_home / "grading.json").write_text(json.dumps(rules), encoding="utf-8")
    for synthetic in (older, newer):
        verdict.conclude(synthetic.folder)
    (newer.folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4\n")  # what the card checks: the file is there
    return older.folder, newer.folder


def test_result_card_history_and_chart_verdict(app: ui.App, finished_tests: tuple[Path, Path], xvfb_display: str) -> None:
    older, newer = finished_tests
    summary = record.load_summary(newer)
    assert summary is not None and summary.verdict is not None and summary.verdict.grade == "A"

    pump_until(app, lambda: "banc1" in app.result_cards and app.result_cards["banc1"].winfo_ismapped(),
               what="banc1's result card")
    card = app.result_cards["banc1"]
    assert card.grade_text == "A" and card.grade.cget("fg_color") == formatting.grade_color("A")
    figures = [str(label.cget("text")) for label in card.figures]
    assert figures[0] == f"SOH {formatting.format_number(summary.verdict.soh_pct, 1, '%')}"
    assert figures[1] == f"Capacité {formatting.format_number(summary.capacity_ah, 2, 'Ah')}"
    assert figures[2].startswith("Ri 25 °C ") and figures[2].endswith("mΩ") and "—" not in figures[2]
    assert "certificat prêt" in str(card.caption.cget("text"))
    # banc2's last test is the older one, graded too; its certificate is not there yet.
    pump_until(app, lambda: "banc2" in app.result_cards, what="banc2's result card")
    assert "certificat en cours" in str(app.result_cards["banc2"].caption.cget("text"))
    shot = screenshot(xvfb_display, app, "kiosk_result_card.png")
    assert shot.stat().st_size > 10_000

    # graph + serial: that battery's history, newest first; a touch opens that test's charts with its verdict.
    type_scan("graph", app)
    type_scan("RW-card0001", app)  # any letter case after the prefix
    pump_until(app, lambda: app.history_window is not None and app.history_window.winfo_ismapped(),
               what=f"history window ({app.scan_bar.message_text})")
    window = app.history_window
    assert window is not None
    rows = [str(button.cget("text")) for button in window.rows]
    assert len(rows) == 2 and rows[0].startswith("08/04/2024") and rows[1].startswith("04/03/2024")
    screenshot(xvfb_display, window, "kiosk_history.png")
    before = {str(w) for w in app.winfo_children()}
    window.rows[1].invoke()
    pump_until(app, lambda: any(isinstance(w, chart_window.ChartWindow) and str(w) not in before
                                for w in app.winfo_children()), what="chart window")
    charts = next(w for w in app.winfo_children() if isinstance(w, chart_window.ChartWindow) and str(w) not in before)
    assert charts.folder == older
    pump_until(app, lambda: "Verdict" in str(charts.title_label.cget("text")), timeout_s=20, what="verdict in the title")
    assert "Verdict A, SOH" in str(charts.title_label.cget("text"))
    charts.close()
    window.destroy()

    # The next test on banc1 takes the card away.
    for text in ("banc1", "RW-NEXT0001", "banc1"):
        type_scan(text, app)
    pump_until(app, lambda: not card.winfo_ismapped(), what="card hidden once the next test starts")
    assert isinstance(card, uic.ResultCard)


def test_result_card_to_check(app: ui.App, banc_home: Path, xvfb_display: str) -> None:
    """A verdict À VÉRIFIER: no grade on the card, its own colour, the reason beneath."""
    from tests.test_verdict import RULES, to_check_folder

    (banc_home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = to_check_folder(banc_home, serial="RW-CARD0002")
    given = verdict.conclude(folder)
    assert given.grade == "À VÉRIFIER"
    (folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4\n")
    pump_until(app, lambda: "banc1" in app.result_cards and app.result_cards["banc1"].winfo_ismapped(),
               what="banc1's result card")
    card = app.result_cards["banc1"]
    pump_until(app, lambda: card.grade_text == "À\nVÉRIFIER", what="the card's verdict")
    assert card.grade.cget("fg_color") == formatting.grade_color("À VÉRIFIER") == formatting.GRADE_COLORS["À VÉRIFIER"]
    assert "sans classe" in str(card.caption.cget("text"))
    assert str(card.reason.cget("text")) == given.reason
    shot = screenshot(xvfb_display, app, "kiosk_result_card_to_check.png")
    assert shot.stat().st_size > 10_000
