"""The web monitor in a real browser (docs/moniteur.md): Playwright driving Debian's chromium against the real
`monitor.py`, a real Mosquitto and a real `banc.py`, with the ESP played over MQTT.

Login; a BMS line on the page without reload, within 2 s; a finished test's verdict and its certificate
downloaded byte for byte; the history of a serial; 360 px wide without horizontal scroll. Each page looked
at is saved under bench/out/monitor/ (screenshots to look at, not compared).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from banclfp.infra import storage
from banclfp.presentation.formatting import format_number
from banclfp.recording import record
from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, bms_line
from banclfp.testkit.support import MosquittoBroker
from banclfp.testkit.synthetic import write_synthetic_test
from banclfp.testkit.web import PASSWORD, USER, MonitorProcess, launch_chromium
from banclfp.wire import protocol

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.gui, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                                                  reason="Debian's chromium is not installed (scripts/test.sh installs it)")]

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "bench" / "out" / "monitor"
LIVE_SERIAL, DONE_SERIAL = "RW-LIVE0001", "RW-DONE0002"


def shot(page: Any, name: str) -> None:
    """Save what the page shows (full page) for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


@pytest.fixture
def finished_test(banc_home: Path) -> Path:
    """A finished, graded test on banc2 with the certificate report.py writes."""
    folder = write_synthetic_test(banc_home, rows=4000, banc="banc2", serial=DONE_SERIAL).folder
    config = record.TestSummary.from_json(storage.read_json(folder / record.TEST_CONFIG_FILE))
    verdict = record.Verdict("B", 86.4, "LFP 16S 100 Ah", "2026-12-01",
                             (record.Check("soh", 86.4, 70.0, True), record.Check("temperature_max", 31.0, 55.0, True)),
                             "")
    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, replace(config, verdict=verdict).to_json())
    subprocess.run([sys.executable, str(REPO / "report.py"), str(folder), "--certificate",
                    str(folder / record.CERTIFICATE_FILE)], cwd=REPO, check=True, capture_output=True, timeout=120,
                   env={**__import__("os").environ, "BANC_HOME": str(banc_home), "MPLBACKEND": "Agg"})
    return folder


@pytest.fixture
def monitor(banc_home: Path, broker: MosquittoBroker, mqtt_env: dict[str, str]) -> Iterator[MonitorProcess]:
    process = MonitorProcess(banc_home, broker)
    process.add_user()
    process.start()
    yield process
    process.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = launch_chromium(playwright)
        yield instance
        instance.close()


def logged_in(browser: Any, monitor: MonitorProcess, width: int, height: int) -> Any:
    """A page of a new browser context, logged in through the form."""
    page = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True).new_page()
    page.goto(monitor.url + "/")
    assert page.url.endswith("/login")
    page.fill("#user", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(monitor.url + "/")
    return page


def no_horizontal_scroll(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


def test_login_live_line_verdict_certificate_history_on_a_desk_and_a_phone(
        browser: Any, monitor: MonitorProcess, fleet: BancFleet, broker: MosquittoBroker, finished_test: Path) -> None:
    # The login page, and a wrong password.
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(monitor.url + "/")
    page.fill("#user", USER)
    page.fill("#password", "pas le bon")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Compte ou mot de passe incorrect")
    shot(page, "01-connexion-refusee.png")

    # A real banc.py on banc1, its ESP played over MQTT: the board follows it without a reload.
    fleet.start("banc1", LIVE_SERIAL)
    desk = logged_in(browser, monitor, 1280, 900)
    desk.wait_for_selector("#live.on")
    desk.wait_for_selector("#b-banc1 .pill[data-link=recording].online")
    marker = desk.evaluate("window.__notReloaded = 1")
    assert marker == 1
    with MqttProbe(broker) as probe:
        probe.publish(protocol.topics("banc1").step, "2")
        line = bms_line(1, voltage_v=53.27, current_a=48.6, soc_pct=71.0, temperature_c=29.4)
        sent = time.monotonic()
        probe.publish(protocol.topics("banc1").bms_data, f"{line},100000,2")  # 12 fields: measured in phase 2
        voltage = format_number(53.27, 2, "V")
        desk.wait_for_function(
            "text => document.querySelector('#b-banc1 [data-m=voltage]').textContent === text", arg=voltage,
            timeout=2000)
        latency_s = time.monotonic() - sent
    assert latency_s < 2.0
    assert desk.evaluate("window.__notReloaded") == 1  # the same page: no reload
    desk.wait_for_selector(f"#b-banc1 .status:has-text('{LIVE_SERIAL}')", timeout=5000)  # bancs_config.json, read every 2 s
    card = desk.inner_text("#b-banc1")
    assert "Phase 2/5 : Charge" in card and format_number(48.6, 1, "A") in card
    assert desk.get_attribute("#b-banc1 [data-m=voltage]", "style").replace(" ", "").startswith("color:")
    shot(desk, "02-bancs-bureau.png")

    # A phone: the same board, no horizontal scroll.
    phone = logged_in(browser, monitor, 360, 780)
    phone.wait_for_selector("#b-banc1 [data-m=voltage]")
    no_horizontal_scroll(phone, 360)
    shot(phone, "03-bancs-360px.png")

    # The history of a serial, then its finished test: verdict, charts, certificate.
    phone.goto(monitor.url + "/historique")
    phone.fill("#serial", DONE_SERIAL)
    phone.click(".search button")
    phone.wait_for_selector("table.history")
    assert finished_test.name in phone.inner_text("table.history")
    no_horizontal_scroll(phone, 360)
    shot(phone, "04-historique-360px.png")
    phone.click(f"text={finished_test.parent.name}/{finished_test.name}")
    phone.wait_for_selector("#charts[data-ready='1']")
    assert phone.inner_text(".verdict .grade") == "B"
    no_horizontal_scroll(phone, 360)
    shot(phone, "05-test-360px.png")

    desk.goto(monitor.url + f"/test/banc2/{finished_test.name}")
    desk.wait_for_selector("#charts[data-ready='1']")
    assert desk.locator("#charts .chart canvas").count() == 5
    shot(desk, "06-test-bureau.png")
    with desk.expect_download() as info:
        desk.click("#certificate")
    download = info.value
    assert Path(download.path()).read_bytes() == (finished_test / record.CERTIFICATE_FILE).read_bytes()
    assert download.suggested_filename.endswith(".pdf")

    # Logged out: nothing answers any more.
    desk.click(".logout button")
    desk.wait_for_url(monitor.url + "/login")
    assert desk.request.get(monitor.url + "/api/bancs").status == 401
