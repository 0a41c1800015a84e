"""Crash-proof test record: banc.py's memory under one huge message, and its time for repeated steps.

Three measurements in one run, each on its own private Mosquitto and BANC_HOME:
  - rss-bms / rss-step: `banc.py banc1 SERIAL` is up and idle; a separate paho client
    (QoS 1) publishes ONE --big-mb message (default 250 MB) on banc1/bms/data (resp.
    banc1/step), then a normal BMS line. The broker runs WITHOUT max_packet_size: what is
    measured is whether banc.py itself protects its memory (e.g. by announcing an MQTT v5
    maximum packet size, so that the broker never delivers such a message to it). VmRSS is
    sampled every 5 ms and VmHWM (the kernel's peak) read from /proc until the BMS line
    published after the big one is in data.csv (delivered or dropped), or 60 s. Then one
    more BMS line checks that banc.py still records. Target: peak RSS <= 40 MB.
    The same message is also sent to a bare paho subscriber (bench/count_sub.py) for
    reference: the memory paho itself needs to receive it.
  - steps: banc.py at step 2; --steps (default 50 000) messages `2` are published on
    banc1/step by one paho client (QoS 1, 100 in flight, as fast as the broker acknowledges
    them) while a second client publishes BMS lines at --bms-rate (10/s) on banc1/bms/data,
    as the ESP keeps doing, from the first step until banc.py has recorded the marker: the
    first BMS line published once every step is acknowledged. banc.py has processed every
    step when the marker's row is in data.csv.
    Reported: time from the first step published to the marker's receipt timestamp in
    data.csv, steps/s, and the delay of every BMS row of the window (publish time ->
    data.csv `timestamp`, banc.py's receipt time, same machine clock): worst, p99, median.
  - baseline: bench/count_sub.py subscribed to banc1/step receives the same steps from the
    same publishers (BMS lines included, which nobody receives); its time from the first
    step published to its last receipt is the denominator of the step-time ratio.

Any banc.py can be measured (--banc-script), so the same command gives the "before" and the
"after" figures of a rework.

    .venv/bin/python bench/bench_record.py [--quick] [--steps N] [--big-mb MB] [--bms-rate R]
        [--phases rss,steps] [--banc-script PATH] [--name record]
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from banclfp.recording import record
from banclfp.testkit.banc_helpers import MqttProbe, bms_line
from banclfp.wire import protocol
from bench import common
from bench.common import (
    PYTHON,
    REPO_DIR,
    Cleanup,
    ProcessGroup,
    StatusWatcher,
    data_csv_paths,
    fmt,
    occupy_bancs,
    percentile,
    read_status_kb,
    start_banc,
    try_sample,
    verdict,
)

BANC = 1
TOPICS = protocol.topics(BANC)
RSS_TARGET_MB = 40.0
BIG_WAIT_S = 60.0  # the brief: until the big message is delivered or dropped, at most this long
ISSUE_STEP_DELAY_S = 96.0  # "50,000 repeated steps held data rows back for 96 s"


# =========================================================================== data.csv readers


def csv_rows(home: Path) -> dict[int, tuple[float, str]]:
    """{seq: (receipt epoch s, step)} of every data.csv row of banc1 (first occurrence)."""
    rows: dict[int, tuple[float, str]] = {}
    for path in data_csv_paths(home, BANC):
        with open(path, newline="", encoding="ascii", errors="replace") as fh:
            fh.readline()
            for row in csv.reader(fh):
                try:
                    seq = int(row[common.SEQ_COLUMN])
                    stamp = datetime.fromisoformat(row[common.TIME_COLUMN]).timestamp()
                except (IndexError, ValueError):
                    continue  # a torn last line being written
                rows.setdefault(seq, (stamp, row[common.STEP_COLUMN]))
    return rows


def wait_seq(home: Path, seq: int, timeout_s: float, proc: Optional[subprocess.Popen] = None,
             poll_s: float = 0.05) -> Optional[tuple[float, str]]:
    """Wait until a BMS seq has its row in data.csv; (receipt epoch s, step) or None."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = csv_rows(home).get(seq)
        if found is not None:
            return found
        if time.monotonic() >= deadline or (proc is not None and proc.poll() is not None):
            return None
        time.sleep(poll_s)


def count_rejected(home: Path) -> int:
    """Rows of rejected.csv of banc1 (all test folders)."""
    return sum(common.count_rows_fast(p) for p in (home / "data" / f"banc{BANC}").glob(f"*/{record.REJECTED_CSV_FILE}"))


def current_step(home: Path) -> Any:
    """current_step of banc1's config.json (None when unreadable)."""
    for path in (home / "data" / f"banc{BANC}").glob(f"*/{record.TEST_CONFIG_FILE}"):
        try:
            return json.loads(path.read_text()).get("current_step")
        except (OSError, ValueError):
            return None
    return None


# =========================================================================== banc.py on its own broker


class Bench:
    """A private broker, a BANC_HOME and (optionally) one banc.py banc1, all stopped on exit."""

    def __init__(self, run_dir: Path, with_banc: bool = True) -> None:
        self.run_dir = run_dir
        self.home = run_dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.cleanup = Cleanup()
        # No max_packet_size and no message_size_limit: the broker accepts and forwards a 250 MB message.
        self.broker = self.cleanup.add(common.MosquittoBroker(run_dir / "broker", max_packet_size=None).start())
        self.group = self.cleanup.add(ProcessGroup())
        self.env = common.banc_env(self.home, self.broker, 1)
        self.proc: Optional[subprocess.Popen] = None
        if with_banc:
            watcher = StatusWatcher(self.broker, [BANC], client_id=f"bench_watcher_{run_dir.name}")
            self.cleanup.add(watcher)
            serial = common.serial_for(BANC)
            occupy_bancs(self.home, self.broker, 1, {BANC: serial})
            self.proc = start_banc(self.group, self.home, self.broker, 1, BANC, serial)
            if not watcher.wait_banc(BANC, protocol.STATUS_ONLINE, 30):
                self.close()
                raise RuntimeError(f"banc.py did not come online: {self.log_tail()}")

    def probe(self, client_id: str) -> MqttProbe:
        """A publishing client (QoS per contract, 100 in flight), stopped with the bench."""
        probe = MqttProbe(self.broker, client_id=client_id).start()
        self.cleanup.add(probe)
        return probe

    def log_tail(self) -> str:
        path = self.home / "proc" / f"banc{BANC}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else "(no log)"

    def stop_banc(self) -> Optional[int]:
        return self.group.stop(self.proc, 20.0) if self.proc is not None else None

    def close(self) -> None:
        self.cleanup.__exit__(None, None, None)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every `period_s` (max kept) until stopped or the process is gone."""

    def __init__(self, pid: int, period_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.max_rss_kb = 0
        self.last_hwm_kb = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                status = read_status_kb(self.pid)
            except (OSError, ValueError):
                return
            self.samples += 1
            self.max_rss_kb = max(self.max_rss_kb, status.get("VmRSS", 0))
            self.last_hwm_kb = max(self.last_hwm_kb, status.get("VmHWM", 0))
            time.sleep(self.period_s)

    def stop(self) -> None:
        self.halt.set()
        self.join(2.0)


# =========================================================================== 1. one huge message


def rss_phase(run_dir: Path, kind: str, big_bytes: int) -> dict[str, Any]:
    """banc.py idle, then one `big_bytes` message on banc1/<kind> and a BMS line after it."""
    topic = TOPICS.bms_data if kind == protocol.KIND_BMS else TOPICS.step
    result: dict[str, Any] = {"topic": topic, "big_bytes": big_bytes}
    with Bench(run_dir) as bench:
        assert bench.proc is not None
        pid = bench.proc.pid
        probe = bench.probe(f"bench_big_{kind.replace('/', '_')}")
        probe.publish(TOPICS.step, "2")
        probe.publish(TOPICS.bms_data, bms_line(0))
        if wait_seq(bench.home, 0, 20, bench.proc) is None:
            raise RuntimeError(f"banc.py did not record the first line: {bench.log_tail()}")
        time.sleep(1.0)
        base = read_status_kb(pid)
        result["baseline_rss_kb"], result["baseline_hwm_kb"] = base.get("VmRSS", 0), base.get("VmHWM", 0)
        rejected_before = count_rejected(bench.home)
        sampler = RssSampler(pid)
        sampler.start()
        payload = b"2" * big_bytes  # ASCII digits: on banc1/step it is "a step", only far too long
        t0 = time.time()
        info = probe.publish(topic, payload, wait=False)
        del payload
        marker = probe.publish(TOPICS.bms_data, bms_line(1), wait=False)
        info.wait_for_publish(BIG_WAIT_S)
        result["broker_acked_big"] = info.is_published()
        result["broker_ack_s"] = time.time() - t0
        marker.wait_for_publish(BIG_WAIT_S)
        seen = wait_seq(bench.home, 1, max(1.0, BIG_WAIT_S - (time.time() - t0)), bench.proc)
        result["marker_recorded"] = seen is not None
        result["marker_after_s"] = (seen[0] - t0) if seen else None
        end = try_sample(pid)
        sampler.stop()
        result["peak_hwm_kb"] = end.hwm_kb if end else sampler.last_hwm_kb
        result["max_sampled_rss_kb"] = sampler.max_rss_kb
        result["rss_after_kb"] = end.rss_kb if end else None
        result["samples"] = sampler.samples
        result["broker_hwm_kb"] = read_status_kb(bench.broker.proc.pid).get("VmHWM", 0)
        # Still alive, and still records?
        alive = bench.proc.poll() is None
        result["alive"] = alive
        probe.publish(TOPICS.bms_data, bms_line(2))
        result["still_records"] = alive and wait_seq(bench.home, 2, 10, bench.proc) is not None
        result["alive_after_check"] = bench.proc.poll() is None
        result["rejected_rows"] = count_rejected(bench.home) - rejected_before
        result["current_step"] = current_step(bench.home)
        result["exit_code"] = bench.stop_banc()
        result["log_tail"] = bench.log_tail()[-600:]
    return result


def paho_big_phase(run_dir: Path, big_bytes: int) -> dict[str, Any]:
    """Reference: the peak RSS of a bare paho subscriber (count_sub.py) receiving the same message."""
    with Bench(run_dir, with_banc=False) as bench:
        args = [PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC), "--client-id",
                "bench_count_big"]
        subprocess.run(args + ["--setup"], env=bench.env, check=True, timeout=30, capture_output=True)
        sub = common.start_capturing(bench.group, args + ["--count", "1", "--idle-s", str(BIG_WAIT_S)], bench.env)
        time.sleep(1.0)
        base = read_status_kb(sub.pid)
        probe = bench.probe("bench_big_paho")
        t0 = time.time()
        probe.publish(TOPICS.bms_data, b"2" * big_bytes, wait=False).wait_for_publish(BIG_WAIT_S)
        out, _ = sub.communicate(timeout=BIG_WAIT_S + 30)
        state = common.last_json(out)
        return {"baseline_rss_kb": base.get("VmRSS", 0), "peak_hwm_kb": state.get("VmHWM", 0),
                "received": state["count"], "received_after_s": (state["last_t"] or t0) - t0}


# =========================================================================== 2. repeated steps


class StepLoad:
    """`steps` x "2" on banc1/step as fast as acknowledged, and BMS lines at `bms_rate` on banc1/bms/data.

    Two clients, as the broker sees an ESP's two streams: the BMS lines are not queued behind
    the steps in the publisher, so their delay is the subscriber's. The first BMS line
    published after every step is acknowledged is the marker; BMS lines go on until stop().
    """

    def __init__(self, bench: Bench, steps: int, bms_rate: float, first_seq: int) -> None:
        self.steps, self.bms_rate, self.seq = steps, bms_rate, first_seq
        self.step_client = bench.probe("bench_steps")
        self.bms_client = bench.probe("bench_bms")
        self.bms_pub_t: dict[int, float] = {}
        self.steps_acked = threading.Event()
        self.marker_published = threading.Event()
        self.halt = threading.Event()
        self.marker_seq: Optional[int] = None
        self.thread = threading.Thread(target=self._bms_loop, daemon=True)

    def _bms_loop(self) -> None:
        period = 1.0 / self.bms_rate if self.bms_rate > 0 else 0.5
        next_t = time.monotonic()
        while not self.halt.is_set():
            is_marker = self.marker_seq is None and self.steps_acked.is_set()
            seq = self.seq
            self.bms_pub_t[seq] = time.time()
            if self.bms_rate > 0 or is_marker:
                self.bms_client.publish(TOPICS.bms_data, bms_line(seq), wait=is_marker)
                self.seq += 1
            else:
                del self.bms_pub_t[seq]
            if is_marker:
                self.marker_seq = seq
                self.marker_published.set()
            next_t += period
            if self.steps_acked.is_set() and self.marker_seq is None:
                continue  # the marker at once
            self.halt.wait(max(0.0, next_t - time.monotonic()))

    def run_steps(self) -> dict[str, Any]:
        """Publish every step, wait for their acknowledgements and for the marker; return the timings."""
        self.t_first = time.time()
        self.thread.start()
        client = self.step_client.client
        qos = protocol.qos_for(TOPICS.step)
        infos = [client.publish(TOPICS.step, "2", qos=qos) for _ in range(self.steps)]
        t_queued = time.time()
        deadline = time.monotonic() + 600
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        t_acked = time.time()
        self.steps_acked.set()
        self.marker_published.wait(30)
        return {"t_first": self.t_first, "publish_queued_s": t_queued - self.t_first,
                "publish_acked_s": t_acked - self.t_first, "acked": sum(1 for i in infos if i.is_published()),
                "marker_seq": self.marker_seq}

    def stop(self) -> int:
        """Stop the BMS lines; return the last seq published."""
        self.halt.set()
        self.thread.join(10)
        return self.seq - 1


def steps_phase(run_dir: Path, steps: int, bms_rate: float) -> dict[str, Any]:
    """banc.py at step 2 receives `steps` more "2" while BMS lines keep coming."""
    result: dict[str, Any] = {"steps": steps, "bms_rate": bms_rate}
    with Bench(run_dir) as bench:
        assert bench.proc is not None
        warm = bench.probe("bench_warmup")
        warm.publish(TOPICS.step, "2")
        warm.publish(TOPICS.bms_data, bms_line(0))
        first = wait_seq(bench.home, 0, 20, bench.proc)
        if first is None or first[1] != "2":
            raise RuntimeError(f"banc.py is not recording at step 2 ({first}): {bench.log_tail()}")
        time.sleep(1.0)
        before = try_sample(bench.proc.pid)
        load = StepLoad(bench, steps, bms_rate, first_seq=1)
        pub = load.run_steps()
        t_first = pub["t_first"]
        timeout_s = max(120.0, steps * 0.01)
        seen = wait_seq(bench.home, pub["marker_seq"], timeout_s, bench.proc, poll_s=0.1)
        after = try_sample(bench.proc.pid)
        last_seq = load.stop()
        wait_seq(bench.home, last_seq, 10, bench.proc)  # the lines published while the marker was awaited
        rows = csv_rows(bench.home)
        result["all_processed"] = seen is not None
        result["alive"] = bench.proc.poll() is None
        result["steps_acked"] = pub["acked"]
        result["publish_acked_s"] = pub["publish_acked_s"]
        result["publish_queued_s"] = pub["publish_queued_s"]
        result["process_s"] = (seen[0] - t_first) if seen else None
        result["steps_per_s"] = steps / result["process_s"] if result["process_s"] else None
        bms_pub_t = dict(load.bms_pub_t)
        delays = [rows[s][0] - t for s, t in bms_pub_t.items() if s in rows]
        result["bms_lines"] = len(bms_pub_t)
        result["bms_lines_before_marker"] = sum(1 for s in bms_pub_t if s <= pub["marker_seq"])
        result["bms_rows"] = len(delays)
        result["bms_lost"] = len(bms_pub_t) - len(delays)
        result["bms_rows_not_step2"] = sum(1 for s in bms_pub_t if s in rows and rows[s][1] != "2")
        result["worst_delay_s"] = max(delays) if delays else None
        result["p99_delay_s"] = percentile(delays, 99) if delays else None
        result["median_delay_s"] = common.median(delays)
        if before and after:
            d = common.delta(before, after)
            result["cpu_s"] = d.cpu_s
            result["write_bytes"] = d.write_bytes
            result["wchar"] = d.wchar
            result["syscw"] = d.syscw
            result["hwm_kb"] = d.hwm_kb
        result["current_step"] = current_step(bench.home)
        result["exit_code"] = bench.stop_banc()
    return result


def baseline_phase(run_dir: Path, steps: int, bms_rate: float) -> dict[str, Any]:
    """The same publishers; a bare paho subscriber (count_sub.py) on banc1/step counts the steps."""
    with Bench(run_dir, with_banc=False) as bench:
        args = [PYTHON, str(REPO_DIR / "bench" / "count_sub.py"), "--banc", str(BANC), "--topic", TOPICS.step,
                "--client-id", "bench_count_steps"]
        subprocess.run(args + ["--setup"], env=bench.env, check=True, timeout=30, capture_output=True)
        sub = common.start_capturing(bench.group, args + ["--count", str(steps), "--idle-s", "60"], bench.env)
        time.sleep(1.0)  # connected and idle
        load = StepLoad(bench, steps, bms_rate, first_seq=1)
        pub = load.run_steps()
        out, _ = sub.communicate(timeout=600)
        load.stop()
        state = common.last_json(out)
        process_s = (state["last_t"] - pub["t_first"]) if state["last_t"] else None
        return {"steps": steps, "received": state["count"], "process_s": process_s,
                "steps_per_s": steps / process_s if process_s else None, "publish_acked_s": pub["publish_acked_s"],
                "cpu_s": state.get("cpu_s")}


# =========================================================================== run and report


def run(out: Path, phases: list[str], steps: int, big_bytes: int, bms_rate: float,
        verbose: bool = True) -> dict[str, Any]:
    """Run the chosen phases ("rss", "steps") under `out`; return every figure."""
    results: dict[str, Any] = {}

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    if "rss" in phases:
        for kind in (protocol.KIND_BMS, protocol.KIND_STEP):
            key = f"rss_{kind.split('/')[0]}"
            results[key] = r = rss_phase(out / key, kind, big_bytes)
            say(f"  {key}: peak {r['peak_hwm_kb'] / 1024:.1f} MB (baseline {r['baseline_rss_kb'] / 1024:.1f} MB), "
                f"marker after {fmt(r['marker_after_s'], 2)} s, alive {r['alive']}, still records "
                f"{r['still_records']}")
        results["rss_paho"] = r = paho_big_phase(out / "rss_paho", big_bytes)
        say(f"  rss_paho: peak {r['peak_hwm_kb'] / 1024:.1f} MB (baseline {r['baseline_rss_kb'] / 1024:.1f} MB)")
    if "steps" in phases:
        results["steps_baseline"] = b = baseline_phase(out / "steps_baseline", steps, bms_rate)
        say(f"  steps_baseline: {b['received']} steps in {fmt(b['process_s'], 2)} s")
        results["steps_banc"] = s = steps_phase(out / "steps_banc", steps, bms_rate)
        say(f"  steps_banc: {steps} steps in {fmt(s['process_s'], 2)} s, worst BMS row delay "
            f"{fmt(s['worst_delay_s'], 2)} s")
    return results


def report(results: dict[str, Any], big_bytes: int) -> list[str]:
    """Print the tables and the verdicts; return the verdict lines."""
    verdicts: list[str] = []
    mb = big_bytes / 1024 / 1024
    if "rss_bms" in results:
        rows = []
        for key in ("rss_bms", "rss_step"):
            r = results[key]
            rows.append((f"banc.py, {r['topic']}", fmt(r["baseline_rss_kb"] / 1024, 1),
                         fmt(r["peak_hwm_kb"] / 1024, 1), fmt(r["max_sampled_rss_kb"] / 1024, 1),
                         fmt(r["marker_after_s"], 2), str(r["alive"]), str(r["still_records"]),
                         fmt(r["rejected_rows"]), str(r["exit_code"])))
        p = results["rss_paho"]
        rows.append(("bare paho subscriber (count_sub.py)", fmt(p["baseline_rss_kb"] / 1024, 1),
                     fmt(p["peak_hwm_kb"] / 1024, 1), "", fmt(p["received_after_s"], 2), "", "", "", ""))
        common.print_table(f"One {mb:g} MB message (broker without max_packet_size)", rows,
                           ("subscriber", "RSS before MB", "peak RSS (VmHWM) MB", "max sampled VmRSS MB",
                            "next line recorded after s", "alive", "still records", "rejected rows", "exit code"))
        for key in ("rss_bms", "rss_step"):
            r = results[key]
            peak = r["peak_hwm_kb"] / 1024
            ok = peak <= RSS_TARGET_MB and r["alive"] and r["still_records"]
            verdicts.append(f"{r['topic']}: peak RSS <= {RSS_TARGET_MB:g} MB with one {mb:g} MB message, alive, "
                            f"still records: {peak:.1f} MB, alive {r['alive']}, records {r['still_records']} "
                            f"-> {verdict(ok)}")
    if "steps_banc" in results:
        s, b = results["steps_banc"], results["steps_baseline"]
        ratio = (s["process_s"] / b["process_s"]) if s["process_s"] and b["process_s"] else None
        rows = [
            ("bare paho subscriber (count_sub.py)", fmt(b["received"]), fmt(b["process_s"], 2),
             fmt(b["steps_per_s"], 0), "1.00", fmt(b["publish_acked_s"], 2), "", "", ""),
            ("banc.py", fmt(s["steps"]), fmt(s["process_s"], 2), fmt(s["steps_per_s"], 0), fmt(ratio, 2),
             fmt(s["publish_acked_s"], 2), fmt(s["worst_delay_s"], 2), fmt(s["p99_delay_s"], 2),
             fmt(s["median_delay_s"], 2)),
        ]
        common.print_table(f"{s['steps']} repeated steps `2` with BMS lines at {s['bms_rate']:g}/s", rows,
                           ("subscriber", "steps", "processed in s", "steps/s", "x paho time",
                            "publisher all acked after s", "worst BMS row delay s", "p99 s", "median s"))
        if s.get("cpu_s") is not None:
            print(f"\nbanc.py during the steps: CPU {s['cpu_s']:.1f} s ({s['cpu_s'] / s['steps'] * 1e6:.0f} us/step), "
                  f"write_bytes {s['write_bytes'] / s['steps']:.0f} B/step, wchar {s['wchar'] / s['steps']:.0f} B/step, "
                  f"write syscalls {s['syscw'] / s['steps']:.1f}/step; BMS rows {s['bms_rows']}/{s['bms_lines']} "
                  f"(not at step 2: {s['bms_rows_not_step2']}); config.json step {s['current_step']}")
        verdicts.append(f"{s['steps']} steps processed: {fmt(s['process_s'], 1)} s = {fmt(ratio, 1)}x the bare paho "
                        f"subscriber ({fmt(b['process_s'], 2)} s); worst BMS row delay {fmt(s['worst_delay_s'], 2)} s "
                        f"(issue: {ISSUE_STEP_DELAY_S:g} s for 50 000 steps); all processed {s['all_processed']}, "
                        f"BMS rows lost {s['bms_lost']}")
    return common.print_targets(verdicts)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the record benchmark and print the figures."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="repeated steps (default 50000, 5000 with --quick)")
    parser.add_argument("--big-mb", type=float, default=250.0, help="size of the huge message, MB (2^20 bytes)")
    parser.add_argument("--bms-rate", type=float, default=10.0, help="BMS lines/s during the steps")
    parser.add_argument("--phases", default="rss,steps", help="rss,steps")
    parser.add_argument("--banc-script", type=Path, help="the banc.py to measure (default: the repository's)")
    parser.add_argument("--name", default="record", help="output name under bench/out/")
    args = parser.parse_args(argv)
    if args.banc_script:
        common.BANC_SCRIPT = args.banc_script.resolve()
    steps = args.steps or (5000 if args.quick else 50000)
    big_bytes = int(args.big_mb * 1024 * 1024)
    phases = [p for p in args.phases.split(",") if p]
    info = common.machine_info()
    print(f"bench_record: {common.BANC_SCRIPT}; phases {phases}, {steps} steps, {args.big_mb:g} MB message, "
          f"BMS {args.bms_rate:g}/s; machine {info}", flush=True)
    out = common.fresh_dir(args.name)
    results = run(out, phases, steps, big_bytes, args.bms_rate)
    verdicts = report(results, big_bytes)
    path = common.save_json(args.name, {"machine": info, "banc_script": str(common.BANC_SCRIPT), "steps": steps,
                                        "big_bytes": big_bytes, "bms_rate": args.bms_rate, "results": results,
                                        "verdicts": verdicts})
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
