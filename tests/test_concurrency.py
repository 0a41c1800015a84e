"""Several processes updating bancs_config.json at once through the real utils functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from banclfp.recording.store import Store

REPO_DIR = Path(__file__).resolve().parent.parent
WRITERS = 8
UPDATES = 200

WRITER = textwrap.dedent(
    """
    import sys
    from banclfp.infra import environment
    from banclfp.recording.store import Store
    store = Store.from_settings(environment.load_settings())
    banc = sys.argv[1]
    n = int(sys.argv[2])
    for i in range(n):
        # alternate the two write paths banc.py and ui.py use
        if i % 2:
            store.update_bancs_config_current_step(banc, 1 + i % 5)
        else:
            store.set_banc_status(banc, "occupied", "RW-%sN%04d" % (banc.upper(), i), 1 + i % 5)
    store.set_banc_status(banc, "occupied", "RW-%sLAST" % banc.upper(), 4)
    """
)


@pytest.mark.slow
def test_parallel_writers_lose_nothing_and_reader_never_sees_invalid_json(banc_home: Path) -> None:
    store = Store(banc_home, WRITERS)
    store.load_bancs_config()
    path = banc_home / "bancs_config.json"

    reads = {"ok": 0, "bad": 0}
    stop = threading.Event()

    def reader() -> None:
        # An unlocked reader, as a human or a script would read the file.
        while not stop.is_set():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                assert len(data["bancs"]) == WRITERS
                reads["ok"] += 1
            except (ValueError, AssertionError, KeyError):
                reads["bad"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env.update(BANC_HOME=str(banc_home), BANC_NUM_BANCS=str(WRITERS))
    script = WRITER
    started = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"banc{n}", str(UPDATES)], env=env)
        for n in range(1, WRITERS + 1)
    ]
    try:
        codes = [proc.wait(240) for proc in procs]
    finally:
        stop.set()
        thread.join()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    elapsed = time.monotonic() - started
    assert codes == [0] * WRITERS
    assert reads["bad"] == 0, reads
    assert reads["ok"] > 10  # the reader really ran during the writes
    final = store.load_bancs_config()
    for n in range(1, WRITERS + 1):
        entry = final.bancs[n - 1].to_json()
        assert entry == {"name": f"Banc{n}", "status": "occupied", "serial-pending": f"RW-BANC{n}LAST", "current_step": 4}
    assert not list(banc_home.glob("bancs_config.json.corrupt-*"))
    assert not list(banc_home.glob(".bancs_config.json.*.tmp"))
    print(f"{WRITERS * (UPDATES + 1)} locked updates in {elapsed:.1f} s, {reads['ok']} clean reads")
