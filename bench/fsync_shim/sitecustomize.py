"""fsync shim of bench/bench_ui_slowdisk.py: every os.fsync/os.fdatasync of this process is logged, and made slow.

Python imports `sitecustomize` at start-up from the first folder of sys.path that has one;
bench_ui_slowdisk.py puts this folder first on PYTHONPATH of the kiosk and of every banc.py
(the kiosk's children inherit its environment), so the project's own code runs unchanged:
  - BENCH_FSYNC_DELAY_MS: sleep that long before each real fsync (an SD card under write
    load answers an fsync in hundreds of ms; the sleep releases the GIL as a real fsync does).
    A process holding a lock while it fsyncs holds it that much longer, so the others' flock
    waits grow naturally: flock itself is not touched;
  - BENCH_FSYNC_LOG_DIR: one line per call, "role start_epoch duration_ms", appended to
    fsync-<pid>.log there (not fsynced, on the bench's own disk), which proves the shim is
    active in each process and gives the count and the latency of the fsyncs.
Then Debian's own sitecustomize (the apport hook), shadowed by this one, is run as usual.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

_HERE = os.path.dirname(os.path.abspath(__file__))


def _role() -> str:
    """ui or banc (from our command line: sys.argv is not set yet when sitecustomize runs)."""
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            args = fh.read().split(b"\0")
    except OSError:
        return "other"
    names = [os.path.basename(a.decode(errors="replace")) for a in args[1:3]]
    if "ui_probe.py" in names or "ui.py" in names:
        return "ui"
    if "banc.py" in names:
        return "banc"
    return "other"


def _install() -> None:
    delay_s = float(os.environ.get("BENCH_FSYNC_DELAY_MS", "0") or 0) / 1000.0
    log_dir = os.environ.get("BENCH_FSYNC_LOG_DIR")
    role = _role()
    state: dict[str, Any] = {"log": None}

    def record(start: float, seconds: float) -> None:
        if not log_dir:
            return
        try:
            if state["log"] is None:
                state["log"] = open(os.path.join(log_dir, f"fsync-{os.getpid()}.log"), "a", buffering=1)
            state["log"].write(f"{role} {start:.4f} {seconds * 1000:.2f}\n")
        except OSError:
            pass  # the measurement must never break the process measured

    def wrap(real: Callable[[FileDescriptorLike], None]) -> Callable[[FileDescriptorLike], None]:
        def slow(fd: FileDescriptorLike) -> None:
            start, t0 = time.time(), time.perf_counter()
            try:
                if delay_s > 0:
                    time.sleep(delay_s)
                real(fd)
            finally:
                record(start, time.perf_counter() - t0)

        slow.__name__ = real.__name__
        slow.__doc__ = real.__doc__
        return slow

    for name in ("fsync", "fdatasync"):
        if hasattr(os, name):
            setattr(os, name, wrap(getattr(os, name)))


def _chain() -> None:
    """Run the sitecustomize this one shadows (the next one on sys.path), as Python would have."""
    path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    spec: Optional[importlib.machinery.ModuleSpec] = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # as site.py does: a broken sitecustomize never stops the interpreter
        pass


_install()
_chain()
