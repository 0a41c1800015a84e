"""Ingest of one banc.py against the baselines: rate, CPU per message, disk bytes per row, memory.

Three subscribers receive the same QoS 1 BMS lines of banc1 from a private Mosquitto, each
with a persistent session:
  - paho   : bench/count_sub.py, a paho-mqtt 2.x client that only counts (the Python limit);
  - paho5  : the same in MQTT v5 with banc.py's connect options (--subjects paho,paho5,...):
             banc.py's own protocol, bare;
  - mosq   : mosquitto_sub -q 1 -c writing every line to a file (the C limit);
  - banc   : banc.py banc1 SERIAL, the real process, which must record every line in data.csv.

Two measurements, repeated (--repeat) with the subjects interleaved, medians reported:
  - backlog: N lines are queued at the broker while the subscriber is away, then the
    subscriber (re)starts and drains them: rate = (N-1) / (last - first receipt time),
    the receipt times being the subscriber's own (data.csv timestamps for banc.py);
  - live: the subscriber is up, N lines are published as fast as the broker acknowledges
    them; CPU per message, /proc/PID/io bytes per row and memory are read around it.
Every banc.py run is checked: each seq in data.csv exactly once.

    .venv/bin/python bench/bench_ingest.py [--quick] [--count N] [--repeat R]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from banclfp.wire import protocol
from bench import common
from bench.common import (
    PYTHON,
    REPO_DIR,
    Cleanup,
    ProcessGroup,
    StatusWatcher,
    check_csv,
    count_rows_fast,
    csv_receipt_span_s,
    data_csv_paths,
    fmt,
    median,
    occupy_bancs,
    sample,
    start_banc,
    verdict,
)

BANC = 1
PUB_PREFIX = "bench_esp"


def run_publisher(home: Path, broker: Any, count: int, log_dir: Path, rate: float = 0.0) -> dict[str, Any]:
    """Publish `count` BMS lines on banc1 (as fast as acknowledged when rate=0); wait for every PUBACK."""
    env = common.banc_env(home, broker, 1)
    args = [PYTHON, str(REPO_DIR / "bench" / "esp_publisher.py"), "--bancs", str(BANC), "--rate", str(rate),
            "--count", str(count), "--log-dir", str(log_dir), "--prefix", PUB_PREFIX]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"publisher failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_publisher(group: ProcessGroup, home: Path, broker: Any, count: int, log_dir: Path) -> subprocess.Popen:
    """Same as run_publisher, in the background (stdout captured for its summary)."""
    env = common.banc_env(home, broker, 1)
    args = [PYTHON, str(REPO_DIR / "bench" / "esp_publisher.py"), "--bancs", str(BANC), "--rate", "0",
            "--count", str(count), "--log-dir", str(log_dir), "--prefix", PUB_PREFIX]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    group.procs.append(proc)
    return proc


def mosq_sub_args(broker: Any, setup: bool, count: int = 0) -> list[str]:
    """mosquitto_sub with a persistent session on banc1/bms/data, one '<epoch.ns> <payload>' line per message."""
    topic = protocol.topics(BANC).bms_data
    args = ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", str(protocol.qos_for(topic)),
            "-c", "-i", "bench_c_sub", "-t", topic]
    if setup:
        return args + ["-E"]
    args += ["-F", "%U %p"]
    if count:
        args += ["-C", str(count)]
    return args


def mosq_file_span(path: Path) -> tuple[int, float]:
    """(lines, seconds between first and last receipt) of a mosquitto_sub -F '%U %p' output."""
    first = last = None
    lines = 0
    with open(path) as fh:
        for line in fh:
            stamp = line.split(" ", 1)[0]
            try:
                value = float(stamp)
            except ValueError:
                continue
            lines += 1
            if first is None:
                first = value
            last = value
    return lines, ((last - first) if first is not None and last is not None else 0.0)


# =========================================================================== banc.py lifecycle


class BancRun:
    """One banc.py on a bench BANC_HOME: start, wait online, stop with step 9 (end of day)."""

    def __init__(self, home: Path, broker: Any, group: ProcessGroup, watcher: StatusWatcher, serial: str) -> None:
        self.home, self.broker, self.group, self.watcher, self.serial = home, broker, group, watcher, serial
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_online: bool = True) -> subprocess.Popen:
        self.watcher.forget(BANC)
        self.proc = start_banc(self.group, self.home, self.broker, 1, BANC, self.serial)
        if wait_online and not self.watcher.wait_banc(BANC, protocol.STATUS_ONLINE, 30):
            raise RuntimeError(f"banc.py did not come online; log: {self.log_tail()}")
        return self.proc

    def stop(self) -> Optional[int]:
        """SIGTERM: banc.py writes everything, closes data.csv and exits 0, keeping its session.

        (Step 9 would also end it, but banc.py then unsubscribes so that nothing is queued
        for a test stopped for the day; the backlog measurement needs the session kept.)
        """
        if self.proc is None:
            return None
        return self.group.stop(self.proc, 20.0)

    def csv_paths(self) -> list[Path]:
        return data_csv_paths(self.home, BANC)

    def log_tail(self) -> str:
        path = self.home / "proc" / f"banc{BANC}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else "(no log)"


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll predicate() until true or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


# =========================================================================== backlog drain


def backlog(subject: str, run_dir: Path, count: int) -> dict[str, Any]:
    """Queue `count` lines while the subscriber is away, then measure how fast it drains them."""
    home = run_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    with Cleanup() as cleanup:
        broker = cleanup.add(common.MosquittoBroker(run_dir / "broker").start())
        group = cleanup.add(ProcessGroup())
        env = common.banc_env(home, broker, 1)
        result: dict[str, Any] = {"subject": subject, "count": count}
        if subject in ("paho", "paho5"):
            v5 = ["--v5"] if subject == "paho5" else []
            subprocess.run([PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC), "--setup", *v5],
                           env=env, check=True, timeout=30, capture_output=True)
            run_publisher(home, broker, count, run_dir / "pub")
            t0 = time.monotonic()
            done = subprocess.run(
                [PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC), "--count", str(count),
                 "--idle-s", "20", *v5], env=env, capture_output=True, text=True, timeout=600)
            result["wall_s"] = time.monotonic() - t0
            state = json.loads(done.stdout.strip().splitlines()[-1])
            result["received"] = state["count"]
            span = (state["last_t"] or 0) - (state["first_t"] or 0)
        elif subject == "mosq":
            subprocess.run(mosq_sub_args(broker, setup=True), check=True, timeout=30, capture_output=True)
            run_publisher(home, broker, count, run_dir / "pub")
            out = run_dir / "mosq_sub.txt"
            t0 = time.monotonic()
            with open(out, "wb") as fh:
                subprocess.run(mosq_sub_args(broker, setup=False, count=count), stdout=fh, timeout=600)
            result["wall_s"] = time.monotonic() - t0
            result["received"], span = mosq_file_span(out)
        elif subject == "banc":
            watcher = cleanup.add(StatusWatcher(broker, [BANC]))
            serial = common.serial_for(BANC)
            occupy_bancs(home, broker, 1, {BANC: serial})
            banc = BancRun(home, broker, group, watcher, serial)
            banc.start()
            result["first_exit_code"] = banc.stop()
            run_publisher(home, broker, count, run_dir / "pub")
            t0 = time.monotonic()
            proc = banc.start(wait_online=False)
            rows = wait_until(lambda: sum(count_rows_fast(p) for p in banc.csv_paths()) >= count, 600, 0.05)
            result["wall_s"] = time.monotonic() - t0
            after = common.try_sample(proc.pid)
            result["total_cpu_s"] = after.cpu_s if after else None
            result["exit_code"] = banc.stop()
            check = check_csv(banc.csv_paths(), range(count))
            result["received"], span = csv_receipt_span_s(banc.csv_paths())
            result["check"] = check
            result["complete"] = bool(rows)
        else:
            raise ValueError(subject)
        result["span_s"] = span
        result["rate_per_s"] = (result["received"] - 1) / span if span > 0 else None
        return result


# =========================================================================== live run


def live(subject: str, run_dir: Path, count: int) -> dict[str, Any]:
    """Subscriber up, `count` lines published as fast as acknowledged: CPU, I/O and memory around it."""
    home = run_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    with Cleanup() as cleanup:
        broker = cleanup.add(common.MosquittoBroker(run_dir / "broker").start())
        group = cleanup.add(ProcessGroup())
        env = common.banc_env(home, broker, 1)
        result: dict[str, Any] = {"subject": subject, "count": count}
        banc: Optional[BancRun] = None
        out = run_dir / "mosq_sub.txt"
        proc: subprocess.Popen[Any]  # text pipe for count_sub.py, file or log output for the others
        if subject == "paho":
            subprocess.run([PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC), "--setup"],
                           env=env, check=True, timeout=30, capture_output=True)
            proc = subprocess.Popen([PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC),
                                     "--count", str(count), "--idle-s", "120"], env=env, stdout=subprocess.PIPE,
                                    text=True, start_new_session=True)
            group.procs.append(proc)
            time.sleep(1.0)  # connected and idle (the session exists, nothing can be missed)
        elif subject == "mosq":
            subprocess.run(mosq_sub_args(broker, setup=True), check=True, timeout=30, capture_output=True)
            fh = open(out, "wb")
            proc = subprocess.Popen(mosq_sub_args(broker, setup=False), stdout=fh, start_new_session=True)
            fh.close()
            group.procs.append(proc)
            time.sleep(1.0)
            received: Callable[[], int] = lambda: count_rows_fast(out) + 1  # noqa: E731  (no header in this file)
        else:
            watcher = cleanup.add(StatusWatcher(broker, [BANC]))
            serial = common.serial_for(BANC)
            occupy_bancs(home, broker, 1, {BANC: serial})
            banc = BancRun(home, broker, group, watcher, serial)
            proc = banc.start()
            time.sleep(1.0)  # let start-up work (config writes, first command) settle
            received = lambda: sum(count_rows_fast(p) for p in banc.csv_paths())  # noqa: E731
        broker_before = sample(broker.proc.pid)
        before = sample(proc.pid)
        t0 = time.monotonic()
        pub = start_publisher(group, home, broker, count, run_dir / "pub")
        if subject == "paho":
            pub_out, _ = pub.communicate(timeout=600)
            # count_sub exits after the last message and reports its own /proc figures.
            out_text, _ = proc.communicate(timeout=600)
            broker_after = sample(broker.proc.pid)
            state = json.loads(out_text.strip().splitlines()[-1])
            after = common.sample_from_report(proc.pid, state)
            result["received"] = state["count"]
            span = (state["last_t"] or 0) - (state["first_t"] or 0)
        else:
            complete = wait_until(lambda: received() >= count, 600, 0.05)
            result["wall_s"] = time.monotonic() - t0
            after = sample(proc.pid)
            broker_after = sample(broker.proc.pid)
            pub_out, _ = pub.communicate(timeout=600)
            if subject == "mosq":
                group.stop(proc)
                result["received"], span = mosq_file_span(out)
            else:
                assert banc is not None
                result["gui_libraries"] = common.gui_libraries(proc.pid)
                result["exit_code"] = banc.stop()
                result["check"] = check_csv(banc.csv_paths(), range(count))
                result["received"], span = csv_receipt_span_s(banc.csv_paths())
                result["complete"] = complete
        result["publisher"] = json.loads(pub_out.strip().splitlines()[-1])
        d = common.delta(before, after)
        b = common.delta(broker_before, broker_after)
        result["delta"] = d
        result["cpu_us_per_msg"] = d.cpu_s / count * 1e6
        result["broker_cpu_us_per_msg"] = b.cpu_s / count * 1e6
        result["write_bytes_per_msg"] = d.write_bytes / count
        result["wchar_per_msg"] = d.wchar / count
        result["syscw_per_msg"] = d.syscw / count
        result["span_s"] = span
        result["rate_per_s"] = (result["received"] - 1) / span if span > 0 else None
        return result


# =========================================================================== report


def summarize(results: list[dict[str, Any]], subjects: list[str]) -> dict[str, Any]:
    """Medians per subject and mode."""
    summary: dict[str, Any] = {}
    for mode in ("backlog", "live"):
        for subject in subjects:
            runs = [r for r in results if r["mode"] == mode and r["subject"] == subject]
            if not runs:
                continue
            key = f"{mode}_{subject}"
            summary[key] = {
                "runs": len(runs),
                "rate_per_s": median(r.get("rate_per_s") for r in runs),
                "rates": [r.get("rate_per_s") for r in runs],
            }
            if mode == "live":
                summary[key].update(
                    cpu_us_per_msg=median(r["cpu_us_per_msg"] for r in runs),
                    broker_cpu_us_per_msg=median(r["broker_cpu_us_per_msg"] for r in runs),
                    write_bytes_per_msg=median(r["write_bytes_per_msg"] for r in runs),
                    wchar_per_msg=median(r["wchar_per_msg"] for r in runs),
                    syscw_per_msg=median(r["syscw_per_msg"] for r in runs),
                    rss_kb=median(r["delta"].rss_kb for r in runs),
                    hwm_kb=median(r["delta"].hwm_kb for r in runs),
                    pss_kb=median(r["delta"].pss_kb for r in runs),
                    publisher_rate_per_s=median(r["publisher"]["benches"][0]["acked_rate_per_s"] for r in runs),
                )
            if subject == "banc":
                checks = [r["check"] for r in runs]
                summary[key].update(
                    lost=sum(c.lost for c in checks),
                    duplicated=sum(c.duplicated for c in checks),
                    row_bytes=median(c.row_bytes_avg for c in checks),
                )
                if mode == "live":
                    summary[key]["gui_libraries"] = sorted({lib for r in runs for lib in r.get("gui_libraries", [])})
    return summary


def report(summary: dict[str, Any], count: int) -> list[str]:
    """Print the tables and the target verdicts; return the verdict lines."""
    rows: list[tuple[str, ...]] = []
    for mode in ("backlog", "live"):
        paho = summary.get(f"{mode}_paho", {}).get("rate_per_s", float("nan"))
        mosq = summary.get(f"{mode}_mosq", {}).get("rate_per_s", float("nan"))
        for subject in ("paho", "paho5", "mosq", "banc"):
            s = summary.get(f"{mode}_{subject}")
            if not s:
                continue
            rate = s["rate_per_s"]
            rows.append((mode, subject, fmt(rate, 0), fmt(rate / paho, 2), fmt(rate / mosq, 2),
                         " ".join(fmt(r, 0) for r in s["rates"])))
    common.print_table(f"Ingest rate, QoS 1, {count} lines (medians)", rows,
                       ("mode", "subscriber", "msg/s", "x paho", "x mosquitto_sub", "runs"))
    rows = []
    for subject in ("paho", "mosq", "banc"):
        s = summary.get(f"live_{subject}")
        if s:
            rows.append((subject, fmt(s["cpu_us_per_msg"], 1), fmt(s["broker_cpu_us_per_msg"], 1),
                         fmt(s["wchar_per_msg"], 1), fmt(s["write_bytes_per_msg"], 1), fmt(s["syscw_per_msg"], 2),
                         fmt(s["rss_kb"] / 1024, 1), fmt(s["hwm_kb"] / 1024, 1), fmt(s["pss_kb"] / 1024, 1)))
    common.print_table("Live run: cost per message (medians)", rows,
                       ("subscriber", "CPU us/msg", "broker CPU us/msg", "wchar B/msg", "write_bytes B/msg",
                        "write syscalls/msg", "RSS MB", "peak RSS MB", "PSS MB"))
    verdicts = []
    banc_b, banc_l = summary.get("backlog_banc"), summary.get("live_banc")
    paho_b = summary.get("backlog_paho")
    if banc_b and paho_b:
        ratio = banc_b["rate_per_s"] / paho_b["rate_per_s"]
        verdicts.append(f"rate >= 60 % of bare paho (MQTT 3.1.1): {ratio * 100:.0f} % -> {verdict(ratio >= 0.6)}")
    paho5_b = summary.get("backlog_paho5")
    if banc_b and paho5_b:
        # banc.py speaks MQTT v5 (protocol v2: announced packet size, flow control): the same client, bare.
        ratio = banc_b["rate_per_s"] / paho5_b["rate_per_s"]
        verdicts.append(f"rate >= 60 % of bare paho (MQTT v5, banc.py's options): {ratio * 100:.0f} % -> "
                        f"{verdict(ratio >= 0.6)}")
    if banc_l:
        verdicts.append(f"CPU <= 100 us/msg: {banc_l['cpu_us_per_msg']:.1f} us -> {verdict(banc_l['cpu_us_per_msg'] <= 100)}")
        wb = banc_l["write_bytes_per_msg"]
        verdicts.append(f"disk write <= 2x CSV row ({banc_l['row_bytes']:.1f} B): write_bytes {wb:.1f} B/row "
                        f"= {wb / banc_l['row_bytes']:.2f}x (wchar {banc_l['wchar_per_msg']:.1f} B/row) -> "
                        f"{verdict(wb <= 2 * banc_l['row_bytes'])}")
        rss_mb = banc_l["hwm_kb"] / 1024
        verdicts.append(f"RSS <= 30 MB: peak {rss_mb:.1f} MB -> {verdict(rss_mb <= 30)}; "
                        f"GUI/plot libraries mapped: {banc_l['gui_libraries'] or 'none'}")
    for key in ("backlog_banc", "live_banc"):
        if key in summary:
            s = summary[key]
            verdicts.append(f"{key}: lost {s['lost']}, duplicated {s['duplicated']} -> "
                            f"{verdict(s['lost'] == 0 and s['duplicated'] == 0)}")
    return common.print_targets(verdicts)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the ingest benchmark and print the figures."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="lines per run (default 20000, 10000 with --quick)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3, 1 with --quick)")
    parser.add_argument("--subjects", default="paho,mosq,banc")
    parser.add_argument("--modes", default="backlog,live")
    args = parser.parse_args(argv)
    count = args.count or (10000 if args.quick else 20000)
    repeat = args.repeat or (1 if args.quick else 3)
    subjects = [s for s in args.subjects.split(",") if s]
    if "banc" in subjects and not (REPO_DIR / "banc.py").exists():
        print("banc.py is not there yet: measuring the baselines only")
        subjects.remove("banc")
    if not shutil.which("mosquitto_sub") and "mosq" in subjects:
        print("mosquitto_sub is not installed: skipping the C baseline")
        subjects.remove("mosq")
    info = common.machine_info()
    print(f"bench_ingest: {count} lines x {repeat} runs, subjects {subjects}; machine {info}")
    out = common.fresh_dir("ingest")
    results: list[dict[str, Any]] = []
    for rep in range(repeat):
        for mode in args.modes.split(","):
            for subject in subjects:
                if mode == "live" and subject == "paho5":
                    continue  # the v5 baseline is a drain-rate reference only
                run_dir = out / f"{mode}-{subject}-{rep}"
                fn = backlog if mode == "backlog" else live
                result = fn(subject, run_dir, count)
                result["mode"] = mode
                results.append(result)
                extra = ""
                if subject == "banc":
                    c = result["check"]
                    extra = f" rows {c.rows} lost {c.lost} dup {c.duplicated}"
                if mode == "live":
                    extra += f" cpu {result['cpu_us_per_msg']:.1f} us/msg"
                print(f"  run {rep} {mode:7s} {subject:5s}: {fmt(result.get('rate_per_s'), 0)} msg/s "
                      f"(received {result['received']}){extra}", flush=True)
    summary = summarize(results, subjects)
    verdicts = report(summary, count)
    common.save_json("ingest", {"machine": info, "count": count, "repeat": repeat, "summary": summary,
                                "verdicts": verdicts, "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
