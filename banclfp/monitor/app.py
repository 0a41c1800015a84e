"""The web monitor's application (Starlette on uvicorn): login, pages, the live feed as server-sent events.

Read only by construction: the only MQTT client is a subscriber that never publishes, the routes
are GET (login and logout aside, which touch the session only), and the folders are read with
the report's loaders. No route but the login page answers without a session (`SessionGate`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from banclfp.analysis.measures import Summary
from banclfp.infra.settings import Settings
from banclfp.monitor import auth, pages, sources
from banclfp.monitor.live import SUBSCRIPTIONS, BenchKey, Board
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.wire import protocol

logger = logging.getLogger("banc.monitor")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MONITOR_DIR = "monitor"  # BANC_HOME/monitor/: the monitor's own files (accounts); never data/
COOKIE = "banc_moniteur"
LOGIN_PATHS = frozenset({"/login"})
MAX_FORM_BYTES = 4096
REFRESH_S = 5.0  # every open page gets every bench again this often: measures age without a message
FILES_POLL_S = 2.0  # how often this Pi's bancs_config.json is read again (serials and phases on disk)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def monitor_folder(settings: Settings) -> Path:
    """The monitor's own folder: BANC_HOME/monitor (accounts), apart from the test folders."""
    return settings.home / MONITOR_DIR


# =========================================================================== live hub


@dataclass(eq=False)  # each page is itself: kept in a set by identity
class Listener:
    """One open page's pending bench views (the latest per bench: a slow browser never piles up lines)."""

    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """The board and the open pages, on the event loop; MQTT messages arrive through `deliver` (thread-safe)."""

    def __init__(self, board: Board, mono: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.board, self.mono, self.wall = board, mono, wall
        self.listeners: set[Listener] = set()
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def deliver(self, topic: str, payload: bytes, retained: bool) -> None:
        """From the MQTT thread: hand the message to the loop (stamped now, as it arrived)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.on_message, topic, payload, retained, self.mono(), self.wall())

    def on_message(self, topic: str, payload: bytes, retained: bool, now_mono_s: float, now_unix_s: float) -> None:
        """Take a message into the board and send the bench's new view to every open page."""
        key = self.board.apply(topic, payload, retained, now_mono_s, now_unix_s)
        if key is not None:
            self.publish(key)

    def publish(self, key: BenchKey) -> None:
        """Queue a bench's view (computed once) for every open page."""
        if not self.listeners:
            return
        view = self.board.view(key, self.mono(), self.wall())
        for listener in self.listeners:
            listener.pending[view["key"]] = view
            listener.wake.set()

    def all_views(self) -> list[dict[str, Any]]:
        """Every bench's view now."""
        return self.board.views(self.mono(), self.wall())

    async def stream(self, is_disconnected: Callable[[], Awaitable[bool]]) -> AsyncGenerator[str, None]:
        """A page's server-sent events: every bench at once, then each change, and everything every REFRESH_S."""
        listener = Listener()
        self.listeners.add(listener)
        try:
            yield "retry: 2000\n\n"
            for view in self.all_views():
                yield _event(view)
            while True:
                try:
                    await asyncio.wait_for(listener.wake.wait(), REFRESH_S)
                except TimeoutError:
                    if await is_disconnected():
                        return
                    for view in self.all_views():
                        listener.pending.setdefault(view["key"], view)
                listener.wake.clear()
                pending, listener.pending = listener.pending, {}
                for view in pending.values():
                    yield _event(view)
        finally:
            self.listeners.discard(listener)


def _event(view: dict[str, Any]) -> str:
    return f"event: bench\ndata: {json.dumps(view, ensure_ascii=False, separators=(',', ':'))}\n\n"


# =========================================================================== the MQTT subscriber


class Feed:
    """The monitor's one MQTT client: subscribes to every bench's display topics and never publishes."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings, self.hub = settings, hub
        self.client: Any = None

    def start(self) -> None:
        """Connect in the background (paho's thread; reconnects by itself)."""
        import secrets

        client = protocol.make_client(f"banc_moniteur_{secrets.token_hex(4)}", self.settings, v5=True)

        def on_connect(client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
            if reason_code.is_failure:
                logger.warning("monitor: broker refused the connection: %s", reason_code)
                return
            # QoS 0: what is only shown is never queued for the monitor (a line an hour old is not live).
            client.subscribe([(topic, 0) for topic in SUBSCRIPTIONS])
            logger.info("monitor: connected to %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            try:
                self.hub.deliver(message.topic, bytes(message.payload), bool(message.retain))
            except Exception:  # a callback never raises (docs/protocole.md): the message is skipped
                logger.exception("monitor: message on %r skipped", getattr(message, "topic", "?"))

        client.on_connect, client.on_message = on_connect, on_message
        client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30,
                             **protocol.connect_options(persistent=False))
        client.loop_start()
        self.client = client

    def stop(self) -> None:
        """Disconnect and stop paho's thread."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


def read_bench_entries(store: Store) -> dict[str, record.BenchEntry]:
    """This Pi's bancs_config.json, read only ({} when missing or damaged: the kiosk repairs it, never the monitor)."""
    try:
        state = record.BenchesState.from_json(json.loads(store.bancs_config_path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}
    return {entry.banc: entry for entry in state.bancs}


# =========================================================================== the session gate


class SessionGate:
    """ASGI middleware: without a live session only the login page answers (a page redirects to it, anything else 401)."""

    def __init__(self, app: ASGIApp, monitor: Monitor) -> None:
        self.app, self.monitor = app, monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        user = self.monitor.sessions.user(request.cookies.get(COOKIE), self.monitor.mono())
        scope.setdefault("state", {})["user"] = user
        if user is None and scope["path"] not in LOGIN_PATHS:
            if scope["method"] == "GET" and scope["path"] in ("/", "/historique"):
                response: Response = RedirectResponse("/login", status_code=303)
            else:
                response = PlainTextResponse("Connexion requise.", status_code=401)
            _secure(response)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = list(message.get("headers", [])) + headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


# =========================================================================== the application


class Monitor:
    """The monitor's state: settings, store, accounts, sessions, wrong-password limit, the live hub."""

    def __init__(self, settings: Settings, mono: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, slow_down_s: float = auth.SLOW_DOWN_S) -> None:
        self.settings, self.mono, self.slow_down_s = settings, mono, slow_down_s
        self.store = Store.from_settings(settings)
        self.accounts = auth.Accounts(monitor_folder(settings))
        self.sessions = auth.Sessions()
        self.limiter = auth.LoginLimiter()
        charge_duration: Optional[Callable[[float], float]]
        try:
            self.store.static.charge_profile()
            charge_duration = self.store.static.get_charge_duration
        except Exception:  # no phase-2 estimate without the profile, as on the kiosk
            charge_duration = None
        self.hub = Hub(Board(charge_duration), mono, wall)
        for number in range(1, settings.num_bancs + 1):  # this Pi's benches are shown before they speak
            self.hub.board.bench(BenchKey("", protocol.banc_id(number)))

    @property
    def https(self) -> bool:
        """Whether the monitor is served over HTTPS (its cookie is then Secure)."""
        return self.settings.web_cert is not None

    def source_text(self) -> str:
        """Where the page's data come from, in a few words."""
        if self.settings.lab_db:
            return "Source : base du labo (historique, résultats) et broker en lecture seule."
        return "Source : dossiers de ce Pi et broker en lecture seule."

    def refresh_files(self) -> None:
        """This Pi's bancs_config.json into the board (serials, phases on disk)."""
        entries = read_bench_entries(self.store)
        for number in range(1, self.settings.num_bancs + 1):
            key = BenchKey("", protocol.banc_id(number))
            if self.hub.board.take_files(key, entries.get(key.banc)):
                self.hub.publish(key)

    # ------------------------------------------------------------------ routes

    async def login_form(self, request: Request) -> Response:
        """GET /login."""
        if request.scope["state"].get("user"):
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(pages.login_page())

    async def login(self, request: Request) -> Response:
        """POST /login: a right password opens a session; the 6th wrong one in a minute is slowed and refused."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("Formulaire trop long.", status_code=413)
        form = parse_qs(body.decode("utf-8", errors="replace"))
        user = (form.get("user") or [""])[0].strip()[:64]
        password = (form.get("password") or [""])[0]
        client = request.client.host if request.client else "?"
        keys = auth.limiter_keys(user, client)
        now = self.mono()
        if self.limiter.blocked(keys, now):
            self.limiter.failed(keys, now)
            logger.warning("monitor: login of %r from %s slowed (too many wrong passwords)", user, client)
            await asyncio.sleep(self.slow_down_s)
            return HTMLResponse(pages.login_page("Trop d’essais : réessayez dans une minute.", user),
                                status_code=429, headers={"Retry-After": str(int(auth.FAILURE_WINDOW_S))})
        ok = await run_in_threadpool(self.accounts.check, user, password)  # argon2 takes the CPU: not on the loop
        if not ok:
            self.limiter.failed(keys, self.mono())
            logger.info("monitor: wrong password for %r from %s", user, client)
            return HTMLResponse(pages.login_page("Compte ou mot de passe incorrect.", user), status_code=401)
        self.limiter.succeeded(keys)
        token = self.sessions.open(user, self.mono())
        logger.info("monitor: %s logged in from %s", user, client)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, secure=self.https, samesite="strict", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        """POST /logout."""
        self.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def board(self, request: Request) -> Response:
        """GET /: every bench, live."""
        return HTMLResponse(pages.board_page(request.scope["state"]["user"], self.hub.all_views(), self.source_text()))

    async def benches_json(self, _request: Request) -> Response:
        """GET /api/bancs: every bench's view (JSON)."""
        return JSONResponse(self.hub.all_views())

    async def events(self, request: Request) -> Response:
        """GET /evenements: the live feed (server-sent events)."""
        return StreamingResponse(self.hub.stream(request.is_disconnected), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def history(self, request: Request) -> Response:
        """GET /historique?serie=RW-...: a battery's tests, newest first."""
        user = request.scope["state"]["user"]
        serial = request.query_params.get("serie", "").strip()
        if not serial:
            return HTMLResponse(pages.history_page(user, "", [], None))
        if not Store.is_valid_serial(serial):
            return HTMLResponse(pages.history_page(user, serial, [], None, "Numéro de série invalide."), status_code=400)
        rows, note = await run_in_threadpool(sources.battery_history, serial, self.settings)
        return HTMLResponse(pages.history_page(user, serial, rows, note, own_site=self.settings.lab_site))

    async def results(self, _request: Request) -> Response:
        """GET /resultats.csv: every test of the lab (report.py --results)."""
        text, note = await run_in_threadpool(sources.results_csv, self.settings)
        headers = {"Content-Disposition": 'attachment; filename="resultats.csv"'}
        if note:
            headers["X-Banc-Note"] = "lab-db-unreachable"
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)

    def _folder(self, request: Request) -> Optional[Path]:
        return sources.test_folder(self.store, request.path_params["banc"], request.path_params["name"])

    def _lab_id(self, request: Request) -> Optional[str]:
        params = request.path_params
        return sources.lab_test_id(params["site"], params["banc"], params["name"])

    def _test_html(self, request: Request, base: str, where: str, summary: Summary, certificate: bool,
                   note: str = "") -> str:
        verdict = summary.verdict
        checks = [(check.text, check.ok) for check in sources.verdict_checks(summary)]
        return pages.test_page(request.scope["state"]["user"], base, where, summary.serial,
                               verdict.grade if verdict else None, verdict.soh_pct if verdict else None,
                               sources.summary_lines(summary), checks, verdict.reason if verdict else "",
                               certificate, note)

    async def test(self, request: Request) -> Response:
        """GET /test/BANC/NAME: a test's verdict, results panel and charts."""
        folder = self._folder(request)
        if folder is None:
            return PlainTextResponse("Test introuvable.", status_code=404)
        try:
            report = await run_in_threadpool(sources.load, self.store, folder, self.settings)
        except sources.ReportError as exc:
            return PlainTextResponse(f"Test illisible : {exc}", status_code=404)
        base = pages.test_base(folder.parent.name, folder.name)
        html = self._test_html(request, base, f"{folder.parent.name} · {folder.name}", report.summary,
                               sources.certificate_path(folder) is not None)
        return HTMLResponse(html)

    async def charts(self, request: Request) -> Response:
        """GET /test/BANC/NAME/graphiques.json: the charts' decimated series."""
        folder = self._folder(request)
        if folder is None:
            return PlainTextResponse("Test introuvable.", status_code=404)

        def build() -> dict[str, Any]:
            report = sources.load(self.store, folder, self.settings)
            return sources.chart_json(report.data, report.summary)

        try:
            return JSONResponse(await run_in_threadpool(build))
        except sources.ReportError as exc:
            return PlainTextResponse(f"Test illisible : {exc}", status_code=404)

    async def certificate(self, request: Request) -> Response:
        """GET /test/BANC/NAME/certificat.pdf: the certificate as banc.py wrote it."""
        folder = self._folder(request)
        path = sources.certificate_path(folder) if folder is not None else None
        if folder is None or path is None:
            return PlainTextResponse("Pas de certificat.", status_code=404)
        return FileResponse(path, media_type="application/pdf", filename=f"certificat-{folder.name}.pdf")

    async def _lab_test(self, request: Request) -> tuple[Optional[sources.LabTest], Optional[Response]]:
        """Another Pi's test from the lab database, or the response that says why not (404, 503)."""
        test_id = self._lab_id(request)
        if test_id is None:
            return None, PlainTextResponse("Test introuvable.", status_code=404)
        try:
            test = await run_in_threadpool(sources.load_lab_test, self.settings, test_id)
        except sources.LabUnreachable as exc:
            return None, PlainTextResponse(str(exc), status_code=503, headers={"Retry-After": "5"})
        if test is None:
            return None, PlainTextResponse("Test introuvable dans la base du labo.", status_code=404)
        return test, None

    async def lab_test(self, request: Request) -> Response:
        """GET /labo/SITE/BANC/NAME: another Pi's test from the lab database, as a folder's page."""
        test, refusal = await self._lab_test(request)
        if test is None:
            return refusal or PlainTextResponse("Test introuvable.", status_code=404)
        params = request.path_params
        base = pages.test_base(params["banc"], params["name"], params["site"])
        where = f"{params['site']} · {params['banc']} · {params['name']}"
        return HTMLResponse(self._test_html(request, base, where, test.summary, test.has_certificate,
                                            sources.LAB_ROWS_NOTE))

    async def lab_charts(self, request: Request) -> Response:
        """GET /labo/SITE/BANC/NAME/graphiques.json: its charts from the lab's rows."""
        test, refusal = await self._lab_test(request)
        if test is None:
            return refusal or PlainTextResponse("Test introuvable.", status_code=404)
        return JSONResponse(await run_in_threadpool(sources.chart_json, test.data, test.summary))

    async def lab_certificate(self, request: Request) -> Response:
        """GET /labo/SITE/BANC/NAME/certificat.pdf: the certificate its Pi sent to the lab."""
        test_id = self._lab_id(request)
        if test_id is None:
            return PlainTextResponse("Pas de certificat.", status_code=404)
        try:
            data = await run_in_threadpool(sources.lab_certificate, self.settings, test_id)
        except sources.LabUnreachable as exc:
            return PlainTextResponse(str(exc), status_code=503, headers={"Retry-After": "5"})
        if data is None:
            return PlainTextResponse("Pas de certificat.", status_code=404)
        filename = f"certificat-{request.path_params['site']}-{request.path_params['name']}.pdf"
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    # ------------------------------------------------------------------ assembly

    def asgi(self, feed: bool = True) -> ASGIApp:
        """The Starlette application behind the session gate; with `feed`, the MQTT subscriber runs with it."""
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.board, methods=["GET"]),
            Route("/api/bancs", self.benches_json, methods=["GET"]),
            Route("/evenements", self.events, methods=["GET"]),
            Route("/historique", self.history, methods=["GET"]),
            Route("/resultats.csv", self.results, methods=["GET"]),
            Route("/test/{banc}/{name}", self.test, methods=["GET"]),
            Route("/test/{banc}/{name}/graphiques.json", self.charts, methods=["GET"]),
            Route("/test/{banc}/{name}/certificat.pdf", self.certificate, methods=["GET"]),
            Route("/labo/{site}/{banc}/{name}", self.lab_test, methods=["GET"]),
            Route("/labo/{site}/{banc}/{name}/graphiques.json", self.lab_charts, methods=["GET"]),
            Route("/labo/{site}/{banc}/{name}/certificat.pdf", self.lab_certificate, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        monitor = self

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            monitor.hub.loop = asyncio.get_running_loop()
            feeder = Feed(monitor.settings, monitor.hub) if feed else None
            if feeder is not None:
                feeder.start()
            poller = asyncio.create_task(monitor._poll_files())
            try:
                yield
            finally:
                poller.cancel()
                if feeder is not None:
                    await run_in_threadpool(feeder.stop)

        app = Starlette(routes=routes, lifespan=lifespan)
        return SessionGate(app, self)

    async def _poll_files(self) -> None:
        while True:
            try:
                await run_in_threadpool(self.refresh_files)
            except Exception:  # a file being replaced is read again next time
                logger.exception("monitor: bancs_config.json not read")
            await asyncio.sleep(FILES_POLL_S)

