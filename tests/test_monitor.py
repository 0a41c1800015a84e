"""The web monitor without a browser (docs/moniteur.md): settings, accounts, sessions, the wrong-password limit,
every route refused without a session, the live board showing what the kiosk shows, and no byte written in data/.

The application runs in-process through Starlette's TestClient, without its MQTT subscriber: the
messages are handed to its hub as the subscriber hands them. Time is a fake clock, so sessions expire
without waiting.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client Starlette's TestClient uses (requirements-dev.txt)
import pytest
from starlette.testclient import TestClient

from banclfp.infra import environment, storage
from banclfp.infra.settings import Settings
from banclfp.kiosk.state import banc_display
from banclfp.monitor import auth, cli
from banclfp.monitor.app import COOKIE, STATIC_DIR, Monitor, monitor_folder
from banclfp.monitor.live import SUBSCRIPTIONS, BenchKey, Board, parse_lab_topic
from banclfp.presentation import display_colors, formatting
from banclfp.recording import record
from banclfp.testkit.banc_helpers import bms_line
from banclfp.testkit.postgres import make_ca_and_server_cert
from banclfp.testkit.support import MosquittoBroker
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test
from banclfp.testkit.web import PASSWORD as WEB_PASSWORD, USER as WEB_USER, MonitorProcess, connect_address, lan_address
from banclfp.wire import protocol

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
SERIAL = "RW-MON0001"
LAN_ADDRESS = lan_address()  # this machine's address on its network (the lab's LAN on a Pi)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# =========================================================================== settings


def test_web_settings_default_to_the_loopback_on_8443() -> None:
    settings = environment.load_settings({})
    assert (settings.web_host, settings.web_port, settings.web_cert, settings.web_key) == ("127.0.0.1", 8443, None, None)


def test_web_settings_are_read(tmp_path: Path) -> None:
    settings = environment.load_settings({"BANC_WEB_HOST": "192.168.1.20", "BANC_WEB_PORT": "443",
                                          "BANC_WEB_CERT": str(tmp_path / "c.pem"), "BANC_WEB_KEY": str(tmp_path / "k.pem")})
    assert (settings.web_host, settings.web_port) == ("192.168.1.20", 443)
    assert settings.web_cert == tmp_path / "c.pem" and settings.web_key == tmp_path / "k.pem"


@pytest.mark.parametrize("env, name", [
    ({"BANC_WEB_PORT": "0"}, "BANC_WEB_PORT"),
    ({"BANC_WEB_PORT": "65536"}, "BANC_WEB_PORT"),
    ({"BANC_WEB_PORT": "8443x"}, "BANC_WEB_PORT"),
    ({"BANC_WEB_HOST": "http://0.0.0.0"}, "BANC_WEB_HOST"),
    ({"BANC_WEB_CERT": "/etc/c.pem"}, "BANC_WEB_KEY"),
    ({"BANC_WEB_KEY": "/etc/k.pem"}, "BANC_WEB_CERT"),
])
def test_bad_web_settings_stop_the_program_naming_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(environment.SettingsError, match=name):
        environment.load_settings(env)


@pytest.mark.parametrize("host, served", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                          ("0.0.0.0", False), ("192.168.1.20", False)])
def test_clear_http_is_served_on_the_loopback_only(host: str, served: bool) -> None:
    problem = cli.serving_problem(environment.load_settings({"BANC_WEB_HOST": host}))
    assert (problem is None) is served
    if not served:
        assert "BANC_WEB_CERT" in (problem or "")


# =========================================================================== accounts, sessions, the limit


def test_accounts_store_argon2_hashes_only(tmp_path: Path) -> None:
    accounts = auth.Accounts(tmp_path / "monitor")
    assert accounts.add("auditeur", PASSWORD) is True
    assert accounts.add("auditeur", PASSWORD + "!") is False  # replaced
    text = accounts.path.read_text(encoding="utf-8")
    assert PASSWORD not in text and "$argon2id$" in text
    assert accounts.path.stat().st_mode & 0o777 == 0o600
    assert accounts.check("auditeur", PASSWORD + "!")
    assert not accounts.check("auditeur", PASSWORD)
    assert not accounts.check("inconnu", PASSWORD)


@pytest.mark.parametrize("name, password", [("a b", PASSWORD), ("", PASSWORD), ("x" * 65, PASSWORD), ("ok", "court")])
def test_accounts_refuse_bad_names_and_short_passwords(tmp_path: Path, name: str, password: str) -> None:
    with pytest.raises(auth.AccountError):
        auth.Accounts(tmp_path).add(name, password)
    assert not (tmp_path / auth.USERS_FILE).exists()


def test_a_damaged_users_file_lets_nobody_in(tmp_path: Path) -> None:
    (tmp_path / auth.USERS_FILE).write_text("{not json", encoding="utf-8")
    assert auth.Accounts(tmp_path).load() == {}
    assert not auth.Accounts(tmp_path).check("auditeur", PASSWORD)


def test_sessions_expire_when_idle_and_after_a_day() -> None:
    sessions = auth.Sessions(idle_s=60, max_s=300)
    token = sessions.open("auditeur", 0.0)
    assert sessions.user(token, 59.0) == "auditeur"
    assert sessions.user(token, 118.0) == "auditeur"  # each use keeps it alive
    assert sessions.user(token, 179.0) is None  # 61 s idle
    token = sessions.open("auditeur", 1000.0)
    for t in range(1050, 1300, 50):
        assert sessions.user(token, float(t)) == "auditeur"
    assert sessions.user(token, 1301.0) is None  # used all along, but older than max_s
    assert sessions.user("forged", 0.0) is None and sessions.user(None, 0.0) is None


def test_logout_ends_the_session() -> None:
    sessions = auth.Sessions()
    token = sessions.open("auditeur", 0.0)
    sessions.close(token)
    assert sessions.user(token, 1.0) is None


def test_the_sixth_wrong_password_within_a_minute_is_slowed() -> None:
    limiter = auth.LoginLimiter()
    keys = auth.limiter_keys("auditeur", "10.0.0.5")
    for i in range(auth.FAILURES_ALLOWED):
        assert not limiter.blocked(keys, float(i))
        limiter.failed(keys, float(i))
    assert limiter.blocked(keys, 10.0)
    assert limiter.blocked(auth.limiter_keys("autre", "10.0.0.5"), 10.0)  # same address, another account
    assert limiter.blocked(auth.limiter_keys("AUDITEUR", "10.0.0.9"), 10.0)  # same account, another address
    assert not limiter.blocked(keys, 4.0 + auth.FAILURE_WINDOW_S + 0.1)  # the window has passed


# =========================================================================== the application


@pytest.fixture
def settings(banc_home: Path) -> Settings:
    return environment.load_settings({"BANC_HOME": str(banc_home)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(settings: Settings, clock: Clock) -> Monitor:
    auth.Accounts(monitor_folder(settings)).add("auditeur", PASSWORD)
    return Monitor(settings, mono=clock, slow_down_s=0.3)


@pytest.fixture
def client(monitor: Monitor) -> Iterator[TestClient]:
    with TestClient(monitor.asgi(feed=False), follow_redirects=False) as test_client:
        yield test_client


def login(client: TestClient, user: str = "auditeur", password: str = PASSWORD) -> Any:
    return client.post("/login", data={"user": user, "password": password})


@pytest.fixture
def finished(banc_home: Path) -> Path:
    """A finished test with its rows, verdict and a certificate, as banc.py leaves it."""
    folder = write_synthetic_test(banc_home, rows=3000, banc="banc2", serial=SERIAL).folder
    config = record.TestSummary.from_json(storage.read_json(folder / record.TEST_CONFIG_FILE))
    verdict = record.Verdict("A", 93.2, "LFP 16S 100 Ah", "2026-12-01",
                             (record.Check("soh", 93.2, 70.0, True),), "")
    from dataclasses import replace

    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, replace(config, verdict=verdict).to_json())
    (folder / record.CERTIFICATE_FILE).write_bytes(b"%PDF-1.4 certificat de test\n%%EOF\n")
    return folder


def every_route(folder: Path) -> list[str]:
    """Every GET route of the application, with real arguments (a real test, a real static file)."""
    base = f"/test/{folder.parent.name}/{folder.name}"
    statics = [f"/static/{path.name}" for path in STATIC_DIR.iterdir()]
    return ["/", "/api/bancs", "/evenements", f"/historique?serie={SERIAL}", "/historique", "/resultats.csv",
            base, f"{base}/graphiques.json", f"{base}/certificat.pdf", *statics, "/static/", "/nothing"]


def test_no_route_answers_without_a_session(client: TestClient, finished: Path) -> None:
    for route in every_route(finished):
        response = client.get(route)
        assert response.status_code in (303, 401), route
        assert SERIAL not in response.text and b"%PDF" not in response.content, route
        if response.status_code == 303:
            assert response.headers["location"] == "/login"
    assert client.post("/logout").status_code == 401
    assert client.get("/login").status_code == 200


def test_a_forged_cookie_is_refused(client: TestClient, finished: Path) -> None:
    client.cookies.set(COOKIE, "x" * 43)
    assert client.get("/api/bancs").status_code == 401


def test_login_opens_every_route_and_logout_closes_them(client: TestClient, finished: Path) -> None:
    response = login(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    for route in every_route(finished):
        if route in ("/evenements", "/nothing", "/static/"):
            continue  # a stream never ends; the last two are 404 with a session
        assert client.get(route).status_code == 200, route
    pdf = client.get(f"/test/banc2/{finished.name}/certificat.pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert client.post("/logout").status_code == 303
    assert client.get("/api/bancs").status_code == 401


def test_an_expired_session_is_refused(client: TestClient, clock: Clock) -> None:
    login(client)
    assert client.get("/api/bancs").status_code == 200
    clock.now += auth.SESSION_IDLE_S + 1
    assert client.get("/api/bancs").status_code == 401
    assert client.get("/").headers["location"] == "/login"


def test_the_sixth_wrong_password_is_slowed_and_refused_even_when_right(client: TestClient, monitor: Monitor) -> None:
    for _ in range(auth.FAILURES_ALLOWED):
        started = time.monotonic()
        assert login(client, password="mauvais mot de passe").status_code == 401
    started = time.monotonic()
    response = login(client)  # the right password, but too late: refused until the window passes
    assert response.status_code == 429 and "Trop d’essais" in response.text
    assert time.monotonic() - started >= monitor.slow_down_s
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_unknown_account_and_wrong_password_get_the_same_answer(client: TestClient) -> None:
    a, b = login(client, "inconnu"), login(client, password="mauvais mot de passe")
    assert a.status_code == b.status_code == 401
    assert "Compte ou mot de passe incorrect" in a.text and "Compte ou mot de passe incorrect" in b.text


def test_a_path_cannot_leave_the_test_folders(client: TestClient, finished: Path, banc_home: Path) -> None:
    (banc_home / "secret.pdf").write_bytes(b"%PDF secret")
    login(client)
    for route in ("/test/banc2/..%2F..%2Fsecret.pdf/certificat.pdf", "/test/banc9/x/certificat.pdf",
                  f"/test/..%2Fbanc2/{finished.name}", "/test/banc2/not-a-test/graphiques.json"):
        response = client.get(route)
        assert response.status_code == 404, route
        assert b"secret" not in response.content


def test_the_history_and_the_test_page(client: TestClient, finished: Path, banc_home: Path) -> None:
    write_finished_record(banc_home, "banc3", SERIAL, datetime(2024, 1, 8, 8, 0, tzinfo=record.LOCAL_TZ),
                          36000, 95.0, "A", 95.0)
    login(client)
    page = client.get("/historique?serie=RW-mon0001").text  # a serial in any case is the same battery
    assert page.count("/test/banc") == 2 and finished.name in page
    assert page.index(finished.name) < page.index("banc3/")  # newest first
    test = client.get(f"/test/banc2/{finished.name}").text
    assert "certificat.pdf" in test and ">A<" in test and "Résultats" in test
    charts = client.get(f"/test/banc2/{finished.name}/graphiques.json").json()
    assert [s["name"] for s in charts["series"]] == ["voltage_v", "current_a", "soc_pct", "temperature_c",
                                                     "cell_spread_mv"]
    assert all(len(s["x"]) == len(s["y"]) > 10 for s in charts["series"]) and charts["ticks"]
    assert client.get("/historique?serie=../etc").status_code == 400
    csv_text = client.get("/resultats.csv").text
    assert csv_text.splitlines()[0].startswith("folder,serial,banc") and SERIAL in csv_text


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime (ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return out


def test_the_monitor_writes_no_byte_in_the_test_folders(client: TestClient, finished: Path, banc_home: Path,
                                                       monitor: Monitor) -> None:
    data = banc_home / "data"
    before = tree(data)
    login(client)
    for route in every_route(finished):
        if route != "/evenements":
            client.get(route)
    monitor.refresh_files()
    assert tree(data) == before


# =========================================================================== the live board


def test_topics_of_this_broker_and_of_bridged_pis() -> None:
    assert parse_lab_topic("banc3/bms/data") == (BenchKey("", "banc3"), protocol.parse_topic("banc3/bms/data"))
    assert parse_lab_topic("pi-nord/banc12/step")[0] == BenchKey("pi-nord", "banc12")  # type: ignore[index]
    assert parse_lab_topic("pi-nord/banc1/command") is not None  # parsed, then ignored by the board
    for topic in ("banc0/step", "x/y/banc1/step", "pi nord/banc1/step", "banc1/step/extra"):
        assert parse_lab_topic(topic) is None, topic
    assert all("command" not in topic for topic in SUBSCRIPTIONS)


def test_the_board_shows_what_the_kiosk_shows() -> None:
    board = Board()
    key = board.apply("pi-nord/banc2/banc/status", b"online", True, 10.0, 1e9)
    assert key == BenchKey("pi-nord", "banc2")
    board.apply("pi-nord/banc2/step", b"3", False, 10.0, 1e9)
    line = bms_line(7, voltage_v=52.41, current_a=-48.25, temperature_c=61.0)
    assert board.apply("pi-nord/banc2/bms/data", line.encode(), False, 11.0, 1e9 + 1) == key
    view = board.view(key, 11.5, 1e9 + 1.5)
    parsed = protocol.parse_bms_line(line)
    texts = formatting.measure_texts(parsed)
    colors = display_colors.measure_colors(parsed, 3, None)
    shown = {m["key"]: (m["text"], m["color"]) for m in view["measures"]}
    assert shown == {k: (texts[k], colors[k]) for k in texts}
    assert shown["temperature"][1] == display_colors.COLOR_ALARM
    assert view["phase"] == "Phase 3/5 : Décharge" and view["fresh"] and view["seq"] == 7
    assert view["status"] == banc_display(board.benches[key].rt, 11.5).status_text
    later = board.view(key, 200.0, 1e9 + 200)
    assert not later["fresh"] and later["age"].startswith("Mesures il y a")
    assert {m["color"] for m in later["measures"]} == {display_colors.STALE_COLOR}


def test_the_board_ignores_old_news_bad_payloads_and_commands() -> None:
    board = Board()
    assert board.apply("banc1/bms/data", bms_line(1).encode(), True, 1.0, 1.0) is None  # retained: not news
    assert board.apply("banc1/bms/data", b"garbage", False, 1.0, 1.0) is None
    assert board.apply("banc1/step", b"07", False, 1.0, 1.0) is None
    assert board.apply("banc1/command", b"3", False, 1.0, 1.0) is None
    key = board.apply("banc1/security", "Surchauffe : courant coupé".encode(), False, 2.0, 2.0)
    assert key is not None and board.view(key, 2.0, 2.0)["alarms"][0]["text"].startswith("Surchauffe")


def test_a_line_handed_to_the_hub_reaches_an_open_page(monitor: Monitor) -> None:
    """The SSE stream: every bench first, then a bench's new view as soon as its line arrives."""
    import asyncio

    async def scenario() -> list[str]:
        monitor.hub.loop = asyncio.get_running_loop()

        async def never() -> bool:
            return False

        stream = monitor.hub.stream(never)
        events = [await stream.__anext__() for _ in range(1 + monitor.settings.num_bancs)]
        monitor.hub.deliver("banc1/bms/data", bms_line(42).encode(), False)
        events.append(await asyncio.wait_for(stream.__anext__(), 2.0))
        await stream.aclose()
        return events

    events = asyncio.run(scenario())
    assert events[0].startswith("retry:") and all(e.startswith("event: bench\n") for e in events[1:])
    assert '"key":"banc1"' in events[-1] and '"seq":42' in events[-1]
    assert not monitor.hub.listeners  # the closed page is forgotten


# =========================================================================== the command line


def test_add_user_reads_the_password_on_stdin(banc_home: Path) -> None:
    env = {**os.environ, "BANC_HOME": str(banc_home)}
    done = subprocess.run([sys.executable, str(REPO / "monitor.py"), "--add-user", "auditeur"], input=PASSWORD + "\n",
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Compte auditeur créé" in done.stdout and PASSWORD not in done.stdout + done.stderr
    assert auth.Accounts(banc_home / "monitor").check("auditeur", PASSWORD)
    assert not (banc_home / "data").exists()
    short = subprocess.run([sys.executable, str(REPO / "monitor.py"), "--add-user", "x"], input="court\n",
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert short.returncode == 2 and "trop court" in short.stderr


LAN_HOSTS = ["0.0.0.0", *([LAN_ADDRESS] if LAN_ADDRESS else [])]


@pytest.mark.parametrize("host", LAN_HOSTS)
def test_clear_http_on_the_lan_is_refused_at_start(banc_home: Path, host: str) -> None:
    env = {**os.environ, "BANC_HOME": str(banc_home), "BANC_WEB_HOST": host}
    done = subprocess.run([sys.executable, str(REPO / "monitor.py")], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)
    assert done.returncode == 2 and "BANC_WEB_CERT" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    ca, crt, _server_key = make_ca_and_server_cert(tmp_path, ("192.0.2.10",))
    settings = environment.load_settings({"BANC_WEB_HOST": "192.0.2.10", "BANC_WEB_CERT": str(crt),
                                          "BANC_WEB_KEY": str(ca.with_suffix(".key"))})  # the CA's key
    assert "BANC_WEB_CERT/BANC_WEB_KEY illisibles" in (cli.serving_problem(settings) or "")


@pytest.mark.parametrize("host", LAN_HOSTS)
def test_on_the_lan_it_serves_https_with_the_labs_certificate_and_no_clear_http(
        banc_home: Path, broker: MosquittoBroker, tmp_path: Path, host: str) -> None:
    """The real monitor.py on an address of the network: HTTPS verified against the lab's CA, nothing in clear."""
    address = connect_address(host)
    ca, crt, key = make_ca_and_server_cert(tmp_path / "tls", (address,))
    with MonitorProcess(banc_home, broker, host=host, BANC_WEB_CERT=str(crt), BANC_WEB_KEY=str(key)) as monitor:
        monitor.add_user()
        monitor.start()
        assert monitor.url.startswith(f"https://{address}:")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
            page = client.get(monitor.url + "/", follow_redirects=True)
            assert page.status_code == 200 and page.url.path == "/login" and 'name="password"' in page.text
            logged = client.post(monitor.url + "/login", data={"user": WEB_USER, "password": WEB_PASSWORD})
            assert logged.status_code == 303 and "secure" in logged.headers["set-cookie"].lower()
            assert client.get(monitor.url + "/api/bancs").status_code == 200
        # Clear HTTP on the same address and port gets no answer: the TLS server drops it.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{address}:{monitor.port}/login", timeout=5)
        # A client that does not trust the lab's CA refuses the certificate: it is the CA's, not any one.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(monitor.url + "/login", timeout=5)
        assert monitor.proc is not None and monitor.proc.poll() is None, monitor.log_text()
