"""The web monitor with a lab database (docs/moniteur.md): another Pi's test gets its page from the lab's rows.

A real PostgreSQL (tests/conftest.py's `lab` and `two_pis`: pi-a is this monitor's Pi, pi-b another
one, both synced by lab_sync's runner); the monitor reads it as the read-only role. pi-b's test has
its summary, verdict, checks, charts (lab.test_rows, one per 5 s) and certificate (lab.tests.certificate)
on the page, without a byte of pi-b's folder being readable here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from banclfp.infra import environment, storage
from banclfp.lab import runner
from banclfp.monitor import auth, sources
from banclfp.monitor.app import Monitor, monitor_folder
from banclfp.recording import record
from banclfp.testkit.synthetic import write_synthetic_test
from tests.conftest import DB, READER, Lab, pi_settings

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
SERIAL = "RW-SHARED01"  # two_pis' battery, tested on both Pis
CERTIFICATE = b"%PDF-1.4 certificat de pi-b\n%%EOF\n"


@pytest.fixture
def other_pis_test(lab: Lab, two_pis: dict[str, Path]) -> Path:
    """A finished, graded test of SERIAL on pi-b with its data.csv and certificate, synced to the lab."""
    home = two_pis["pi-b"]
    folder = write_synthetic_test(home, rows=3000, banc="banc3", serial=SERIAL).folder
    config = record.TestSummary.from_json(storage.read_json(folder / record.TEST_CONFIG_FILE))
    verdict = record.Verdict("B", 84.5, "LFP 16S 100 Ah", "2026-12-01",
                             (record.Check("soh", 84.5, 70.0, True), record.Check("temperature_max", 61.0, 55.0, False)),
                             "température trop haute")
    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, replace(config, verdict=verdict).to_json())
    (folder / record.CERTIFICATE_FILE).write_bytes(CERTIFICATE)
    assert runner.sync_once(pi_settings(home, lab, "pi-b")).exit_code == 0
    return folder


@pytest.fixture
def client(lab: Lab, two_pis: dict[str, Path]) -> Iterator[TestClient]:
    """pi-a's monitor (the reader's role on the lab database), logged in."""
    settings = environment.load_settings({"BANC_HOME": str(two_pis["pi-a"]), "BANC_SITE": "pi-a",
                                          "BANC_LAB_DB": lab.uri(READER)})
    auth.Accounts(monitor_folder(settings)).add("auditeur", PASSWORD)
    with TestClient(Monitor(settings).asgi(feed=False), follow_redirects=False) as test_client:
        assert test_client.post("/login", data={"user": "auditeur", "password": PASSWORD}).status_code == 303
        yield test_client


def test_another_pis_test_has_its_page_from_the_lab(client: TestClient, lab: Lab, two_pis: dict[str, Path],
                                                   other_pis_test: Path) -> None:
    name = other_pis_test.name
    base = f"/labo/pi-b/banc3/{name}"
    history = client.get(f"/historique?serie={SERIAL}").text
    assert f'href="{base}"' in history  # another Pi's test: its lab page
    own = next((two_pis["pi-a"] / "data" / "banc1").iterdir()).name
    assert f'href="/test/banc1/{own}"' in history  # this Pi's own test: its folder's page

    shutil.rmtree(two_pis["pi-b"])  # pi-b's folders are not here: everything below comes from the lab
    page = client.get(base)
    assert page.status_code == 200, page.text
    html = page.text
    assert SERIAL in html and "pi-b · banc3" in html and ">B<" in html and "SOH 84,5" in html.replace(".", ",")
    assert "✔" in html and "✘" in html and "température trop haute" in html
    assert "Résultats" in html and "Mesures : " in html and sources.LAB_ROWS_NOTE in html
    assert f'href="{base}/certificat.pdf"' in html and f'data-src="{base}/graphiques.json"' in html

    rows = int(lab.server.sql("SELECT count(*) FROM lab.test_rows WHERE test_id = %s", DB,
                              (f"pi-b:banc3/{name}",))[0][0])
    assert 100 < rows < 3000 and f"Mesures : {rows}" in html  # one row per 5 s bucket, not data.csv's 3000
    charts = client.get(f"{base}/graphiques.json").json()
    assert [s["name"] for s in charts["series"]] == ["voltage_v", "current_a", "soc_pct", "temperature_c",
                                                     "cell_spread_mv"]
    assert all(len(s["x"]) == len(s["y"]) > 10 for s in charts["series"]) and charts["ticks"]
    assert None in charts["series"][0]["x"]  # the 14 h stop inside phase 3 cuts the line, as on a folder's chart

    pdf = client.get(f"{base}/certificat.pdf")
    assert pdf.status_code == 200 and pdf.content == CERTIFICATE
    assert pdf.headers["content-type"] == "application/pdf" and "attachment" in pdf.headers["content-disposition"]


def test_a_lab_page_refuses_what_is_not_a_test_of_the_lab(client: TestClient, other_pis_test: Path) -> None:
    name = other_pis_test.name
    for route in (f"/labo/pi-b/banc3/{name.replace('SHARED', 'NOPE')}", f"/labo/pi-c/banc3/{name}",
                  f"/labo/pi%20b/banc3/{name}", f"/labo/pi-b/Banc3/{name}", f"/labo/pi-b/banc3/..%2F{name}",
                  f"/labo/pi-b/banc3/{name}/graphiques.json".replace("pi-b", "x'--"),
                  f"/labo/pi-a/banc1/{name}/certificat.pdf"):
        assert client.get(route).status_code == 404, route
    client.post("/logout")
    for route in (f"/labo/pi-b/banc3/{name}", f"/labo/pi-b/banc3/{name}/graphiques.json",
                  f"/labo/pi-b/banc3/{name}/certificat.pdf"):
        response = client.get(route)
        assert response.status_code == 401 and b"%PDF" not in response.content, route


def test_an_unreachable_lab_says_so_in_2_s(lab: Lab, two_pis: dict[str, Path], other_pis_test: Path) -> None:
    from banclfp.testkit.support import free_port

    settings = environment.load_settings({"BANC_HOME": str(two_pis["pi-a"]), "BANC_SITE": "pi-a",
                                          "BANC_LAB_DB": f"postgresql://{READER}@127.0.0.1:{free_port()}/{DB}"})
    auth.Accounts(monitor_folder(settings)).add("auditeur", PASSWORD)
    with TestClient(Monitor(settings).asgi(feed=False), follow_redirects=False) as client:
        client.post("/login", data={"user": "auditeur", "password": PASSWORD})
        for route in ("", "/graphiques.json", "/certificat.pdf"):
            response = client.get(f"/labo/pi-b/banc3/{other_pis_test.name}{route}")
            assert response.status_code == 503 and "injoignable" in response.text, route
