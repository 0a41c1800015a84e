"""Shared harness of the bench/ scripts: processes, /proc readers, data.csv checks, statistics.

Every script starts its own Mosquitto (testkit.support.MosquittoBroker) on a free port and
its own BANC_HOME under bench/out/, measures real processes through /proc, and prints
figures as ratios against a baseline measured in the same run. Nothing here is mocked.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from banclfp.recording import datafile, record
from banclfp.testkit.support import MosquittoBroker, project_env
from banclfp.wire import protocol

REPO_DIR = Path(__file__).resolve().parent.parent

BENCH_DIR = REPO_DIR / "bench"
OUT_DIR = BENCH_DIR / "out"
VENV_PYTHON = REPO_DIR / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SERIAL_PREFIX = "RW-BENCH"
# The banc.py the scripts start; bench_scale.py --banc-script points it at a modified copy
# (to measure a proposed change without touching the project's file).
BANC_SCRIPT = REPO_DIR / "banc.py"


# =========================================================================== /proc readers


@dataclass(frozen=True)
class ProcSample:
    """What /proc says about one process at one instant."""

    pid: int
    t_s: float  # time.monotonic() of the sample
    cpu_s: float  # utime + stime
    rss_kb: int  # VmRSS
    hwm_kb: int  # VmHWM (peak RSS)
    pss_kb: int  # Pss from smaps_rollup (shared pages divided among their users)
    write_bytes: int  # bytes this process caused to be sent to the block layer (page dirtying)
    wchar: int  # bytes passed to write()-like syscalls
    syscw: int  # number of write()-like syscalls
    read_bytes: int


def read_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def read_status_kb(pid: int) -> dict[str, int]:
    """The Vm*/Rss* lines of /proc/PID/status, in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def read_io(pid: int) -> dict[str, int]:
    """/proc/PID/io as a dict (rchar, wchar, syscr, syscw, read_bytes, write_bytes, ...)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest)
    return values


def read_pss_kb(pid: int) -> int:
    """Proportional set size (kB) from /proc/PID/smaps_rollup; 0 when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(pid: int) -> ProcSample:
    """Take one ProcSample of a live process."""
    status = read_status_kb(pid)
    io = read_io(pid)
    return ProcSample(
        pid=pid,
        t_s=time.monotonic(),
        cpu_s=read_cpu_s(pid),
        rss_kb=status.get("VmRSS", 0),
        hwm_kb=status.get("VmHWM", 0),
        pss_kb=read_pss_kb(pid),
        write_bytes=io.get("write_bytes", 0),
        wchar=io.get("wchar", 0),
        syscw=io.get("syscw", 0),
        read_bytes=io.get("read_bytes", 0),
    )


def try_sample(pid: int) -> Optional[ProcSample]:
    """sample() or None when the process is gone."""
    try:
        return sample(pid)
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Delta:
    """Difference between two samples of the same process."""

    wall_s: float
    cpu_s: float
    write_bytes: int
    wchar: int
    syscw: int
    rss_kb: int  # at the end
    hwm_kb: int  # at the end
    pss_kb: int  # at the end


def delta(before: ProcSample, after: ProcSample) -> Delta:
    """What a process consumed between two samples."""
    return Delta(
        wall_s=after.t_s - before.t_s,
        cpu_s=after.cpu_s - before.cpu_s,
        write_bytes=after.write_bytes - before.write_bytes,
        wchar=after.wchar - before.wchar,
        syscw=after.syscw - before.syscw,
        rss_kb=after.rss_kb,
        hwm_kb=after.hwm_kb,
        pss_kb=after.pss_kb,
    )


def imported_modules(pid: int) -> list[str]:
    """Shared objects mapped by a process (to spot a GUI or plotting library in banc.py)."""
    found: set[str] = set()
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and (".so" in parts[5]):
                found.add(parts[5])
    except OSError:
        pass
    return sorted(found)


GUI_LIBRARY_MARKERS = ("libtk", "libtcl", "_tkinter", "matplotlib", "PIL", "libX11", "customtkinter", "numpy")


def gui_libraries(pid: int) -> list[str]:
    """Mapped shared objects that belong to GUI/plotting stacks (should be empty for banc.py)."""
    return [path for path in imported_modules(pid) if any(marker in path for marker in GUI_LIBRARY_MARKERS)]


# =========================================================================== statistics


def median(values: Iterable[Optional[float]]) -> float:
    """Median of the values that are not None (NaN for none)."""
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a list; NaN when empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, min(len(data), math.ceil(pct / 100.0 * len(data) - 1e-9)))
    return data[rank - 1]


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a results table."""
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.{digits}f}".replace(",", " ")
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    return str(value)


def verdict(ok: bool) -> str:
    """Met / missed marker for a target line."""
    return "MET" if ok else "MISSED"


# =========================================================================== machine


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, load: the context of a figure."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# =========================================================================== folders and output


def fresh_dir(name: str) -> Path:
    """An empty folder bench/out/<name> (on the real disk, so write_bytes means something)."""
    path = OUT_DIR / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def save_json(name: str, data: Any) -> Path:
    """Write bench/out/<name>.json and return its path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")


def base_parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every bench script has."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="short run (a smoke check, figures are rough)")
    return parser


# =========================================================================== processes


class ProcessGroup:
    """Child processes started by a bench script; all of them are stopped on exit, even on error."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: Sequence[str], env: Optional[dict[str, str]] = None, log_path: Optional[Path] = None,
              cwd: Optional[Path] = None) -> subprocess.Popen:
        """Start a process in its own session, output to log_path (or discarded)."""
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                list(args), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(cwd or REPO_DIR),
                start_new_session=True,
            )
        finally:
            if log_path is not None:
                out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout_s: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after timeout_s; return the exit code."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill(self, proc: subprocess.Popen) -> None:
        """kill -9, as a crash would."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.stop(proc, 3.0)
            except Exception:  # cleanup must go on whatever happens to one process
                pass
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


class Cleanup:
    """Brokers, Xvfb and process groups to stop at the end of a script (LIFO)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> Any:
        self.items.append(item)
        return item

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, *exc: object) -> None:
        for item in reversed(self.items):
            try:
                if hasattr(item, "stop_all"):
                    item.stop_all()
                else:
                    item.stop()
            except Exception:  # cleanup must go on
                pass


# Settings given to every project process of a run (e.g. BANC_FSYNC_INTERVAL_S from --fsync-interval).
EXTRA_ENV: dict[str, str] = {}


def banc_env(home: Path, broker: MosquittoBroker, num_bancs: int, **extra: str) -> dict[str, str]:
    """Environment of a project process (banc.py, ui.py) for this bench run."""
    return project_env(home, broker, BANC_NUM_BANCS=str(num_bancs), **{**EXTRA_ENV, **extra})


def serial_for(banc_number: int, run: int = 0) -> str:
    """A valid serial for bench n (store.SERIAL_PATTERN)."""
    return f"{SERIAL_PREFIX}{run:02d}B{banc_number:02d}"


def occupy_bancs(home: Path, broker: Optional[MosquittoBroker], num_bancs: int, serials: dict[int, str]) -> None:
    """Mark benches occupied with their serial in bancs_config.json, as the kiosk does before it starts banc.py."""
    from banclfp.recording import record
    from banclfp.recording.store import Store

    store = Store(home, num_bancs)
    for number, serial in serials.items():
        store.set_banc_status(number, record.STATUS_OCCUPIED, serial, 1)


def start_banc(group: ProcessGroup, home: Path, broker: MosquittoBroker, num_bancs: int, number: int,
               serial: str, log_dir: Optional[Path] = None, script: Optional[Path] = None,
               extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start `banc.py bancN SERIAL` exactly as the kiosk does (same command line, env from the contract).

    `script` defaults to BANC_SCRIPT; a banc.py in a checkout of another revision imports that
    checkout's modules (its own folder comes first on sys.path).
    """
    script = script or BANC_SCRIPT
    env = banc_env(home, broker, num_bancs, **(extra_env or {}))
    checkout = script.parent if (script.parent / "utils.py").exists() else REPO_DIR
    if checkout != script.parent:
        # A lone copy elsewhere still imports the project's utils and protocol.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO_DIR)) if p)
    log_path = (log_dir or home / "proc") / f"banc{number}.log"
    return group.start([PYTHON, str(script), f"banc{number}", serial], env=env, log_path=log_path, cwd=checkout)


# =========================================================================== MQTT watcher


class StatusWatcher:
    """A paho client in this process that follows the retained banc/status and esp/status topics."""

    def __init__(self, broker: MosquittoBroker, bancs: Iterable[int], client_id: str = "bench_watcher") -> None:
        import paho.mqtt.client as mqtt

        self.status: dict[str, str] = {}
        self.live_t: dict[tuple[str, str], float] = {}  # (topic, value) -> time of the last non-retained message
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # A persistent session: what a bench publishes while the watcher is still reconnecting
        # to a restarted broker is queued for it and arrives as a live (non-retained) message,
        # where a clean session would only see the retained copy and wait for nothing.
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        subs: list[tuple[str, int]] = []
        for n in bancs:
            t = protocol.topics(n)
            subs += [(t.banc_status, 1), (t.esp_status, 1)]
        self.subs = subs

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            client.subscribe(self.subs)

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self.changed:
                value = msg.payload.decode(errors="replace")
                self.status[msg.topic] = value
                if not msg.retain:  # published now, not replayed from the broker's retained store
                    self.live_t[(msg.topic, value)] = time.time()
                self.changed.notify_all()

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        # paho annotates the delays as int, but only adds them to time.time(): 0.2 s works.
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def wait_banc(self, number: int, value: str, timeout_s: float = 20.0) -> bool:
        """Wait until bancN/banc/status is `value`."""
        topic = protocol.topics(number).banc_status
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.status.get(topic) != value:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True

    def wait_live(self, number: int, value: str, after_t: float, timeout_s: float = 60.0) -> bool:
        """Wait until bancN/banc/status is published (not replayed as retained) with `value` after `after_t`."""
        key = (protocol.topics(number).banc_status, value)
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.live_t.get(key, 0.0) < after_t:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True

    def forget(self, number: int) -> None:
        """Forget the last status of a bench (to wait for the next 'online')."""
        with self.lock:
            self.status.pop(protocol.topics(number).banc_status, None)

    def publish(self, topic: str, payload: str) -> None:
        """Publish with the contract's QoS (e.g. a step command in a scenario)."""
        protocol.publish(self.client, topic, payload).wait_for_publish(10)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# =========================================================================== data.csv checks


def data_csv_paths(home: Path, number: int) -> list[Path]:
    """Every data.csv of bench n in a BANC_HOME (one per test folder)."""
    return sorted((home / "data" / f"banc{number}").glob("*/data.csv"))


def count_rows_fast(path: Path) -> int:
    """Data rows in a CSV (lines minus the header), without parsing; 0 when unreadable."""
    try:
        return datafile.count_csv_rows(path)
    except OSError:
        return 0


@dataclass
class CsvCheck:
    """data.csv of one bench compared with the seqs the publisher had acknowledged by the broker."""

    rows: int = 0
    expected: int = 0
    lost: int = 0  # acknowledged seqs missing from data.csv
    duplicated: int = 0  # extra rows whose seq was already recorded
    unexpected: int = 0  # rows with a seq never published (should never happen)
    lost_seqs: list[int] = field(default_factory=list)
    duplicated_seqs: list[int] = field(default_factory=list)
    row_bytes_avg: float = 0.0
    first_ts: Optional[str] = None
    last_ts: Optional[str] = None
    file_bytes: int = 0


SEQ_COLUMN = record.DATA_COLUMN["seq"]
TIME_COLUMN = record.DATA_COLUMN["timestamp"]
STEP_COLUMN = record.DATA_COLUMN["step"]


def read_csv_seqs(paths: Iterable[Path]) -> tuple[list[int], list[str], int]:
    """(seqs, timestamps, data bytes without headers) of the rows of some data.csv files, in file order."""
    seqs: list[int] = []
    stamps: list[str] = []
    data_bytes = 0
    for path in paths:
        with open(path, newline="", encoding="ascii", errors="replace") as fh:
            header = fh.readline()
            data_bytes -= len(header.encode())
            reader = csv.reader(fh)
            for row in reader:
                if len(row) <= SEQ_COLUMN:
                    continue
                try:
                    seqs.append(int(row[SEQ_COLUMN]))
                    stamps.append(row[TIME_COLUMN])
                except ValueError:
                    continue
        data_bytes += path.stat().st_size
    return seqs, stamps, data_bytes


def check_csv(paths: Iterable[Path], expected: Iterable[int]) -> CsvCheck:
    """Count lost / duplicated / unexpected rows of data.csv against the expected seqs."""
    paths = list(paths)
    seqs, stamps, data_bytes = read_csv_seqs(paths)
    expected_set = set(expected)
    seen: dict[int, int] = {}
    for seq in seqs:
        seen[seq] = seen.get(seq, 0) + 1
    lost = sorted(expected_set - set(seen))
    dup = sorted(s for s, c in seen.items() if c > 1)
    check = CsvCheck(
        rows=len(seqs),
        expected=len(expected_set),
        lost=len(lost),
        duplicated=sum(c - 1 for c in seen.values() if c > 1),
        unexpected=sum(c for s, c in seen.items() if s not in expected_set),
        lost_seqs=lost,
        duplicated_seqs=dup,
        row_bytes_avg=(data_bytes / len(seqs)) if seqs else 0.0,
        first_ts=stamps[0] if stamps else None,
        last_ts=stamps[-1] if stamps else None,
        file_bytes=sum(p.stat().st_size for p in paths),
    )
    return check


def csv_receipt_span_s(paths: Iterable[Path]) -> tuple[int, float]:
    """(rows, seconds between the first and the last row's receipt timestamp) of data.csv files."""
    from datetime import datetime

    _, stamps, _ = read_csv_seqs(paths)
    if len(stamps) < 2:
        return len(stamps), 0.0
    first = datetime.fromisoformat(stamps[0])
    last = datetime.fromisoformat(stamps[-1])
    return len(stamps), (last - first).total_seconds()


def wait_rows(paths_fn: Any, wanted: int, timeout_s: float, poll_s: float = 0.1,
              proc: Optional[subprocess.Popen] = None) -> int:
    """Poll until the data.csv files returned by paths_fn() hold `wanted` rows; return the last count."""
    deadline = time.monotonic() + timeout_s
    rows = 0
    while time.monotonic() < deadline:
        rows = sum(count_rows_fast(p) for p in paths_fn())
        if rows >= wanted:
            return rows
        if proc is not None and proc.poll() is not None:
            return rows
        time.sleep(poll_s)
    return rows


# =========================================================================== publisher logs


def read_publisher_times(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    """({seq: publish time}, {seq: broker-acknowledgement time}) from an esp_publisher.py log."""
    published: dict[int, float] = {}
    acked: dict[int, float] = {}
    if not path.exists():
        return published, acked
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        stamp = float(parts[2]) if len(parts) > 2 else 0.0
        if parts[0] == "P":
            published.setdefault(int(parts[1]), stamp)
        elif parts[0] == "A":
            acked.setdefault(int(parts[1]), stamp)
    return published, acked


def read_publisher_log(path: Path) -> tuple[set[int], set[int]]:
    """(published seqs, broker-acknowledged seqs) from an esp_publisher.py log."""
    published, acked = read_publisher_times(path)
    return set(published), set(acked)


def print_targets(verdicts: Sequence[str]) -> list[str]:
    """Print the benchmark's target lines under "Targets:" and return them."""
    print("\nTargets:")
    for line in verdicts:
        print("  " + line)
    return list(verdicts)


def print_table(title: str, rows: Sequence[tuple[object, ...]], header: tuple[str, ...]) -> str:
    """Print (and return) a Markdown table."""
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# =========================================================================== publisher process


def publisher_args(bancs: str, rate: float, log_dir: Path, count: int = 0, duration_s: float = 0.0,
                   prefix: str = "bench_esp", extra: Sequence[str] = ()) -> list[str]:
    """Command line of bench/esp_publisher.py."""
    args = [PYTHON, str(BENCH_DIR / "esp_publisher.py"), "--bancs", bancs, "--rate", str(rate),
            "--log-dir", str(log_dir), "--prefix", prefix]
    if count:
        args += ["--count", str(count)]
    if duration_s:
        args += ["--duration", str(duration_s)]
    return args + list(extra)


def start_capturing(group: ProcessGroup, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a process whose stdout (a JSON summary) is captured; stderr goes to the console."""
    proc = subprocess.Popen(list(args), env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=str(REPO_DIR))
    group.procs.append(proc)
    return proc


def last_json(text: str) -> dict[str, Any]:
    """The last line of a process's output, parsed as JSON."""
    lines = [line for line in (text or "").strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON summary in output: {text[-500:]!r}")
    return json.loads(lines[-1])


def sample_from_report(pid: int, state: dict[str, Any]) -> ProcSample:
    """A ProcSample built from the /proc figures count_sub.py prints at its exit."""
    return ProcSample(
        pid=pid, t_s=time.monotonic(), cpu_s=state["cpu_s"], rss_kb=state.get("VmRSS", 0),
        hwm_kb=state.get("VmHWM", 0), pss_kb=0, write_bytes=state.get("write_bytes", 0),
        wchar=state.get("wchar", 0), syscw=state.get("syscw", 0), read_bytes=state.get("read_bytes", 0),
    )


# =========================================================================== kiosk (ui.py) with the probe

UI_TITLE = "Bancs de test LFP"


def start_ui(group: ProcessGroup, display: str, home: Path, broker: MosquittoBroker, num_bancs: int,
             probe_out: Path, ui_args: Sequence[str] = (), checkout: Path = REPO_DIR,
             extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start the real kiosk (`ui.py` of `checkout`, full screen unless ui_args say otherwise) with bench/ui_probe.py."""
    env = banc_env(home, broker, num_bancs, DISPLAY=display, **(extra_env or {}))
    log_path = home / "proc" / "ui.log"
    return group.start([PYTHON, str(BENCH_DIR / "ui_probe.py"), "--ui", str(checkout / "ui.py"), str(probe_out),
                        *ui_args], env=env, log_path=log_path, cwd=checkout)


def lag_stats(lags: list[float]) -> dict[str, float]:
    """p50 / p99 / max and the number of samples of a list of lags (ms)."""
    return {
        "samples": len(lags),
        "p50_ms": percentile(lags, 50),
        "p99_ms": percentile(lags, 99),
        "max_ms": max(lags) if lags else float("nan"),
        "over_50ms": sum(1 for v in lags if v > 50),
    }


def input_wait_percentile(lags: Sequence[float], tick_ms: float, pct: float) -> float:
    """Percentile of the wait of an input arriving at a random moment (ms), from the probe's tick lags.

    A tick late by l ms means the loop was busy for l ms: an input arriving then waits
    uniformly between 0 and l. So P(wait > x) = sum(max(0, l - x)) / total time, with
    total time = sum(tick + l). Unlike the tick percentiles, where a 2 s freeze is one sample
    among thousands, this weighs each freeze by its length, as the operator feels it.
    """
    if not lags:
        return float("nan")
    total = sum(tick_ms + v for v in lags)
    share = 1.0 - pct / 100.0
    lo, hi = 0.0, max(lags)
    if sum(lags) / total <= share:
        return 0.0
    for _ in range(60):  # bisection: P(wait > x) decreases with x
        mid = (lo + hi) / 2
        if sum(v - mid for v in lags if v > mid) / total > share:
            lo = mid
        else:
            hi = mid
    return hi


def read_probe(path: Path) -> list[dict[str, Any]]:
    """Records written so far by bench/ui_probe.py (a torn last line is skipped)."""
    records: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return records
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def wait_probe_event(path: Path, event: str, timeout_s: float, proc: Optional[subprocess.Popen] = None,
                     after_t: float = 0.0) -> Optional[dict[str, Any]]:
    """Wait for a probe record of kind `event` (written after `after_t`, epoch s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in read_probe(path):
            if entry.get("event") == event and entry.get("t", 0) >= after_t:
                return entry
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def probe_lags(path: Path, t_from: float, t_to: float) -> list[float]:
    """Lag samples (ms) the probe flushed between two epoch times."""
    lags: list[float] = []
    for entry in read_probe(path):
        if entry.get("event") == "lags" and t_from <= entry.get("t", 0) <= t_to:
            lags += entry["lags_ms"]
    return lags


def window_visible(display: str, title: str = UI_TITLE) -> bool:
    """True when a viewable window with this title exists on the X display (xdotool)."""
    try:
        done = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                              env={**os.environ, "DISPLAY": display}, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def type_scan(display: str, text: str, title: str = UI_TITLE) -> None:
    """Type `text` + Enter into the kiosk as the barcode scanner does (keyboard events to the focused window)."""
    env = {**os.environ, "DISPLAY": display}
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], env=env, capture_output=True,
                           text=True, timeout=10)
    windows = found.stdout.split()
    if not windows:
        raise RuntimeError(f"no visible window {title!r} to type into")
    # Without a window manager nothing gives the kiosk the keyboard focus: give it, as the Pi's session does.
    subprocess.run(["xdotool", "windowfocus", "--sync", windows[0]], env=env, check=True, capture_output=True,
                   timeout=10)
    subprocess.run(["xdotool", "type", "--delay", "3", text], env=env, check=True, capture_output=True, timeout=10)
    subprocess.run(["xdotool", "key", "Return"], env=env, check=True, capture_output=True, timeout=10)


def screenshot(display: str, path: Path) -> Optional[Path]:
    """Save a PNG of the whole X display (Pillow); None when Pillow cannot grab."""
    try:
        from PIL import ImageGrab

        image = ImageGrab.grab(xdisplay=display)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path
    except Exception as exc:  # a screenshot is a nice-to-have, never a reason to fail a run
        print(f"screenshot failed: {exc}")
        return None


# =========================================================================== a disk of our own


class LoopDisk:
    """A fresh ext4 file system on a loop device (root only): device-level bytes written, journal included.

    /proc/PID/io write_bytes counts the pages a process dirties; what a card really receives
    also holds the file system's journal and metadata, and the writes the kernel does later.
    /sys/block/loopN/stat counts every sector sent to this device, from anyone, so BANC_HOME
    on this disk isolates the project's writes from everything else on the machine.
    """

    # cgroup v1 block-I/O throttle of the root group (where the kernel's jbd2 journal thread also
    # runs, so the journal commits that an fsync waits for are throttled too).
    BLKIO_WRITE_IOPS = Path("/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device")

    def __init__(self, name: str, size_mb: int = 512, write_iops: int = 0) -> None:
        self.image = OUT_DIR / f"{name}.img"
        self.mount_point = OUT_DIR / name / "disk"
        self.size_mb = size_mb
        self.write_iops = write_iops
        self.device: Optional[str] = None
        self.mounted = False
        self.throttled = False

    def start(self) -> Optional[LoopDisk]:
        """Create, format and mount; None (and a note) when this machine does not allow it."""
        try:
            self.image.parent.mkdir(parents=True, exist_ok=True)
            with open(self.image, "wb") as fh:
                fh.truncate(self.size_mb * 1024 * 1024)
            subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True, capture_output=True, timeout=60)
            self.device = subprocess.run(["losetup", "--find", "--show", str(self.image)], check=True,
                                         capture_output=True, text=True, timeout=30).stdout.strip()
            self.mount_point.mkdir(parents=True, exist_ok=True)
            # The Raspberry Pi OS defaults: ext4, 5 s journal commit.
            subprocess.run(["mount", "-t", "ext4", "-o", "noatime", self.device, str(self.mount_point)], check=True,
                           capture_output=True, timeout=30)
            self.mounted = True
            if self.write_iops:
                self._throttle(self.write_iops)
                self.throttled = True
            return self
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"no loop-device disk{' with a write throttle' if self.write_iops else ''} on this machine ({exc})")
            self.stop()
            return None

    def _throttle(self, iops: int) -> None:
        """Limit the writes this device accepts to `iops` requests/s (0 removes the limit): a slow card."""
        assert self.device is not None
        dev = Path(f"/sys/block/{Path(self.device).name}/dev").read_text().strip()
        with open(self.BLKIO_WRITE_IOPS, "w") as fh:
            fh.write(f"{dev} {iops}\n")

    def sectors_written(self) -> int:
        """Sectors (512 B) written to the device since it was set up."""
        assert self.device is not None
        fields = Path(f"/sys/block/{Path(self.device).name}/stat").read_text().split()
        return int(fields[6])

    def settle(self) -> int:
        """Write back everything dirty on this file system, then return sectors written so far."""
        subprocess.run(["sync", "--file-system", str(self.mount_point)], capture_output=True, timeout=120)
        time.sleep(0.5)
        return self.sectors_written()

    def stop(self) -> None:
        if self.throttled:
            # First: the loop device number is reused by the next user, who must get a normal disk.
            with contextlib.suppress(OSError):
                self._throttle(0)
            self.throttled = False
        if self.mounted:
            subprocess.run(["umount", str(self.mount_point)], capture_output=True, timeout=60)
            self.mounted = False
        if self.device:
            subprocess.run(["losetup", "-d", self.device], capture_output=True, timeout=30)
            self.device = None
        with contextlib.suppress(OSError):
            self.image.unlink()


# =========================================================================== another revision, stray processes


@contextlib.contextmanager
def checkout_of(rev: str, name: str) -> Iterator[Path]:
    """A temporary `git worktree` of `rev` under bench/out/ (to run another revision's code); removed after."""
    path = OUT_DIR / name
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "-C", str(REPO_DIR), "worktree", "remove", "--force", str(path)], capture_output=True)
    if path.exists():
        shutil.rmtree(path)
    subprocess.run(["git", "-C", str(REPO_DIR), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True, timeout=120)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO_DIR), "worktree", "remove", "--force", str(path)], capture_output=True,
                       timeout=120)
        subprocess.run(["git", "-C", str(REPO_DIR), "worktree", "prune"], capture_output=True, timeout=60)


def rev_label(rev: str, cwd: Path = REPO_DIR) -> str:
    """`git describe`-like short name of a revision (its short hash, '+' when the work tree has changes)."""
    short = subprocess.run(["git", "-C", str(cwd), "rev-parse", "--short", rev], capture_output=True, text=True,
                           timeout=30).stdout.strip() or rev
    if rev == "HEAD":
        dirty = subprocess.run(["git", "-C", str(cwd), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        short += "+" if dirty else ""
    return short


def end_of_day(watcher: Any, group: ProcessGroup, numbers: Iterable[int], procs: dict[int, subprocess.Popen],
               wait_s: float = 20.0) -> dict[int, Optional[int]]:
    """Step 9 to every bench in `numbers`, then each banc.py of `procs` given `wait_s` to exit; stragglers stopped.

    Returns the exit code of each banc.py (by bench number).
    """
    for n in numbers:
        watcher.publish(protocol.topics(n).step, protocol.encode_step(protocol.STEP_STOP))
    codes: dict[int, Optional[int]] = {}
    for n, proc in procs.items():
        try:
            codes[n] = proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            codes[n] = group.stop(proc)
    return codes


def stop_home_processes(home: Path, timeout_s: float = 10.0) -> int:
    """SIGTERM (then SIGKILL) every process whose BANC_HOME is `home` (e.g. the banc.py a kiosk started); return how many."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("BANC_HOME") == str(home):
                proc.terminate()
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    _, alive = psutil.wait_procs(found, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return len(found)
