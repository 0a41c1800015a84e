"""Event-loop probe injected into the real kiosk process (ui.py run unchanged, as __main__).

    python bench/ui_probe.py [--ui PATH/ui.py] OUT.jsonl [ui.py arguments...]

(--ui: the kiosk of another checkout, e.g. a baseline revision; default the project's ui.py.)

Before running ui.py, this wraps tkinter.Tk.__init__ (CustomTkinter's CTk is a Tk) so that,
as soon as the application's root window exists, a probe of ours joins its event loop:
  - lag: an after(TICK_MS) callback re-arms itself and measures how late it fires against
    its schedule; the lags are appended to OUT.jsonl every second (the process may be killed);
  - first frame: the first time the root window is mapped, an after_idle callback runs once
    Tk has processed the drawing queued so far; its time, against the process start time
    (/proc, via psutil), is written as {"first_frame_s": ...}.
  - stalls (only when BENCH_PROBE_STALL_MS is set): a thread of ours looks every 20 ms at
    when the timer last fired; once the Tk thread is that many ms overdue it records where
    that thread is (its Python stack, via sys._current_frames), once per stall, as
    {"event": "stall", "stack": [...]}: what the kiosk was waiting on while frozen.
Nothing in ui.py is changed or replaced: the probe only adds one timer (and that thread) to the real app.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import time
import tkinter
import traceback
from pathlib import Path
from typing import Any

TICK_MS = 10
FLUSH_S = 1.0
STALL_POLL_S = 0.02
STACK_FRAMES = 12  # innermost frames kept per stall: enough to see which file call blocks
REPO_DIR = Path(__file__).resolve().parent.parent


def process_start_epoch() -> float:
    """When this process was created (epoch seconds), from /proc/self/stat."""
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:  # psutil missing: fall back to the probe's own start
        return time.time()


class Probe:
    """The lag timer and first-frame detector attached to one Tk root."""

    def __init__(self, root: tkinter.Tk, out_path: Path) -> None:
        self.root = root
        self.out = open(out_path, "a", buffering=1)
        self.out_lock = threading.Lock()  # the Tk thread and the stall thread both write
        self.start_epoch = process_start_epoch()
        self.lags_ms: list[float] = []
        self.first_frame_done = False
        self.last_flush = time.perf_counter()
        self.expected = time.perf_counter() + TICK_MS / 1000.0
        self.write({"event": "root_created", "t": time.time(), "since_start_s": time.time() - self.start_epoch,
                    "pid": os.getpid()})
        root.after(TICK_MS, self.tick)
        stall_ms = float(os.environ.get("BENCH_PROBE_STALL_MS", "0") or 0)
        if stall_ms > 0:
            self.tk_thread = threading.get_ident()
            threading.Thread(target=self.watch_stalls, args=(stall_ms / 1000.0,), daemon=True,
                             name="probe-stalls").start()

    def watch_stalls(self, stall_s: float) -> None:
        """Record the Tk thread's stack once per stall longer than stall_s (runs in its own thread)."""
        reported_for = 0.0
        while True:
            time.sleep(STALL_POLL_S)
            due = self.expected
            if due == reported_for or time.perf_counter() - due < stall_s:
                continue
            frame = sys._current_frames().get(self.tk_thread)
            if frame is None:
                return
            reported_for = due
            stack = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-STACK_FRAMES:]]
            self.write({"event": "stall", "t": time.time(), "overdue_ms": round((time.perf_counter() - due) * 1000),
                        "stack": stack})

    def write(self, record: dict[str, Any]) -> None:
        try:
            with self.out_lock:
                self.out.write(json.dumps(record) + "\n")
        except (OSError, ValueError):
            pass

    def tick(self) -> None:
        now = time.perf_counter()
        self.lags_ms.append(max(0.0, (now - self.expected) * 1000.0))
        if not self.first_frame_done:
            try:
                mapped = bool(self.root.winfo_ismapped())
            except tkinter.TclError:
                mapped = False
            if mapped:
                self.first_frame_done = True
                self.root.after_idle(self.first_frame)
        if now - self.last_flush >= FLUSH_S:
            self.write({"event": "lags", "t": time.time(), "lags_ms": [round(v, 2) for v in self.lags_ms]})
            self.lags_ms = []
            self.last_flush = now
        # Re-arm relative to now: each sample is the lateness of one after(TICK_MS).
        self.expected = time.perf_counter() + TICK_MS / 1000.0
        self.root.after(TICK_MS, self.tick)

    def first_frame(self) -> None:
        now = time.time()
        self.write({"event": "first_frame", "t": now, "first_frame_s": now - self.start_epoch,
                    "width": self.root.winfo_width(), "height": self.root.winfo_height()})


def install(out_path: Path) -> None:
    """Wrap tkinter.Tk.__init__ so the first root window gets a Probe."""
    original_init = tkinter.Tk.__init__
    state = {"installed": False}

    def patched_init(self: tkinter.Tk, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if not state["installed"]:
            state["installed"] = True
            self._bench_probe = Probe(self, out_path)  # type: ignore[attr-defined]

    tkinter.Tk.__init__ = patched_init  # type: ignore[method-assign]


def main() -> None:
    """Install the probe, then run ui.py as the kiosk would be run."""
    args = sys.argv[1:]
    ui_script = REPO_DIR / "ui.py"
    if args[:1] == ["--ui"]:
        ui_script, args = Path(args[1]).resolve(), args[2:]
    out_path = Path(args[0])
    ui_args = args[1:]
    install(out_path)
    # As `python ui.py` would see it: the kiosk's folder first, not bench/.
    sys.path[0] = str(ui_script.parent)
    sys.argv = [str(ui_script), *ui_args]
    runpy.run_path(str(ui_script), run_name="__main__")


if __name__ == "__main__":
    main()
