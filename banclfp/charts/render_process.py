"""The kiosk's charts, loaded and drawn in a child process: the Tk thread only shows the finished picture.

Why a process and not a thread: the loader and matplotlib are Python holding the GIL. In a
thread they take it from the Tk thread at every switch interval (5 ms), and each Tk call,
which releases the GIL, then waits for it again: measured 65 ms p99 / 113 ms max lateness of
a 10 ms tick while a thread loaded and drew a 1,000,000-row test. A child process runs on
another core and shares nothing; it answers with a raw picture (figure.render_image) that
Tk turns into a PhotoImage in about 5 ms at 1920x1080.

The two ends speak length-prefixed pickles over the child's stdin and stdout (same code on
both sides: `python -m banclfp.charts.render_process`, started by ChartRenderer):
a RenderRequest in, a RenderReply out, one at a time.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Optional

from banclfp.analysis.measures import ReportError, Summary
from banclfp.charts.chart_data import PlotData
from banclfp.charts.figure import RenderedChart, render_image
from banclfp.infra import environment

logger = logging.getLogger("banc.chart_render")

RENDER_NICE = 10
"""The child's niceness: the recorders (banc.py) and the kiosk come first, a chart may take a little longer."""
_LENGTH = struct.Struct(">Q")


@dataclass(frozen=True)
class RenderRequest:
    """Draw `folder`'s charts at width_px x height_px; `reload`: read the data again (else the last load is reused)."""

    folder: Path
    buckets: int
    width_px: int
    height_px: int
    reload: bool
    load_plot: Callable[[Path, int], PlotData]  # pickled: a module-level function or a partial of one
    number: int = 0  # the sender's count: requests merged into a later one are answered by its reply


@dataclass(frozen=True)
class RenderReply:
    """The picture and the test's summary, or the message to show instead (error)."""

    request: RenderRequest
    chart: Optional[RenderedChart] = None
    summary: Optional[Summary] = None
    error: Optional[str] = None


def write_message(stream: IO[bytes], message: Any) -> None:
    """Send one object: its pickle's length, then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """Receive one object; None at the end of the stream (the other end is gone)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


class Renderer:
    """The child's work: load (or reuse) the test's data, draw the figure, answer with the picture."""

    def __init__(self) -> None:
        """No data loaded yet."""
        self._loaded: Optional[tuple[tuple[Any, ...], PlotData]] = None

    def serve(self, request: RenderRequest) -> RenderReply:
        """One request's reply; errors become the message the window shows."""
        key = (request.folder, request.buckets)  # the loader is the window's own: it never changes
        try:
            if request.reload or self._loaded is None or self._loaded[0] != key:
                # A resize redraws the data already in memory: only Actualiser reads the files again.
                self._loaded = (key, request.load_plot(request.folder, request.buckets))
            plot = self._loaded[1]
            chart = render_image(plot, request.width_px, request.height_px)
            return RenderReply(request, chart=chart, summary=plot.summary)
        except ReportError as exc:
            return RenderReply(request, error=str(exc))
        except Exception as exc:  # shown to the operator; the traceback goes to the kiosk's log
            logger.exception("chart rendering failed for %s", request.folder)
            return RenderReply(request, error=f"erreur inattendue : {exc}")


def main() -> int:
    """The child process: serve requests from stdin until the kiosk closes it."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s chart-render %(message)s")
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Anything printed by a library goes to stderr, never into the replies.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    try:
        os.nice(RENDER_NICE)
    except OSError:
        pass  # not allowed here: same priority as the kiosk, still off its Tk thread
    renderer = Renderer()
    while True:
        request = read_message(requests)
        if request is None:
            return 0
        try:
            write_message(replies, renderer.serve(request))
        except BrokenPipeError:
            return 0  # the window closed meanwhile


def child_env() -> dict[str, str]:
    """The kiosk's environment, with this checkout first on the path: the child runs the same code as its parent."""
    env = environment.child_environment()
    path = os.pathsep.join(p for p in (str(environment.PROJECT_DIR), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


class ChartRenderer:
    """The kiosk's end: a thread that starts the child, sends it requests and collects its replies.

    The Tk thread only calls request(), poll() and close(), none of which waits: process
    start, pipe writes and reads are all done by the thread. Requests sent while one is
    being served are merged, so a burst of resizes costs one more drawing, not one each.
    """

    def __init__(self) -> None:
        """Start the thread (which starts the child)."""
        self._requests: queue.Queue[Optional[RenderRequest]] = queue.Queue()
        self._replies: queue.Queue[RenderReply] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._proc: Optional[subprocess.Popen[bytes]] = None
        threading.Thread(target=self._run, name="chart-render", daemon=True).start()

    def request(self, request: RenderRequest) -> None:
        """Ask for a picture (answered later through poll())."""
        self._requests.put(request)

    def poll(self) -> Optional[RenderReply]:
        """The next reply, or None if none has arrived."""
        try:
            return self._replies.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop the child without waiting for it; a reply still on its way is dropped."""
        with self._lock:
            self._closed = True
            proc = self._proc
        self._requests.put(None)
        if proc is not None:
            _stop(proc)

    def _run(self) -> None:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "banclfp.charts.render_process"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=child_env())
        except OSError as exc:
            logger.error("chart render process not started: %s", exc)
            self._answer_all(f"processus de dessin impossible à lancer : {exc}")
            return
        with self._lock:
            self._proc = proc
            closed = self._closed
        if closed:
            _stop(proc)
            return
        assert proc.stdin is not None and proc.stdout is not None
        with proc.stdin, proc.stdout:
            while True:
                request = self._next_request()
                if request is None:
                    return
                try:
                    write_message(proc.stdin, request)
                    reply = read_message(proc.stdout)
                except (OSError, ValueError):  # the pipe closed under us: closing, or the child died
                    reply = None
                except Exception:  # a reply that does not unpickle: this thread must still answer
                    logger.exception("chart render reply unreadable")
                    reply = None
                if self._closed:
                    return
                if reply is None:
                    logger.error("chart render process ended (exit %s)", proc.poll())
                    self._replies.put(RenderReply(request, error="le processus de dessin s'est arrêté"))
                    break
                self._replies.put(reply)
        self._answer_all("le processus de dessin s'est arrêté")

    def _next_request(self) -> Optional[RenderRequest]:
        """The next request, merged with those queued behind it (the latest size; reload if any asked for it)."""
        request = self._requests.get()
        while request is not None:
            try:
                newer = self._requests.get_nowait()
            except queue.Empty:
                break
            if newer is None:
                return None
            request = replace(newer, reload=newer.reload or request.reload)
        return request

    def _answer_all(self, message: str) -> None:
        """No child to answer: every request from now on gets `message` (the window shows it), until close()."""
        while True:
            request = self._next_request()
            if request is None:
                return
            self._replies.put(RenderReply(request, error=message))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and reap it in a thread (a zombie otherwise; waiting here could block the Tk thread)."""
    try:
        proc.kill()
    except OSError:
        pass  # already gone
    threading.Thread(target=proc.wait, name="chart-render-reap", daemon=True).start()


if __name__ == "__main__":
    # Run as the module's own name, not __main__: the replies must pickle as
    # banclfp.charts.render_process.RenderReply, the class the kiosk unpickles them to.
    from banclfp.charts import render_process

    sys.exit(render_process.main())
