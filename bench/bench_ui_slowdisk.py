"""The kiosk on a slow disk: Tk loop lag of a baseline revision's kiosk and of this checkout's, in the same run.

On a Pi the SD card answers an fsync in hundreds of ms while it is being written to; a
kiosk that waits on the disk on its Tk thread (bancs_config.json's flock, fsyncs when a
test starts, config.json reads) then freezes for that long. Target: p99 lag <= 20 ms, the
lag as bench_ui.py measures it (how late each 10 ms tick of bench/ui_probe.py fires). Also
printed: the time spent frozen, and the p99 of the wait of an input arriving at a random
moment (common.input_wait_percentile), which weighs each freeze by its length where the
tick p99 counts a 2 s freeze as one sample; and where the Tk thread was each time it was
100 ms late (the probe's stall stacks): what is still blocking it.

The slow disk (--disk). dm-delay (a loop device behind a fixed write delay) would be the
textbook one, but this kind of machine has no device-mapper (no /dev/mapper/control, no
modprobe), so:
  - shim (default): bench/fsync_shim/sitecustomize.py, first on PYTHONPATH of the kiosk and
    of every banc.py (the harness's, and the kiosk's own children, which inherit its
    environment), sleeps --slow-fsync-ms before each os.fsync/os.fdatasync. 200 ms by
    default: an SD card's fsync under sustained writes takes hundreds of ms (its flash
    translation layer erases and rewrites whole blocks), which is the latency dm-delay would
    add, identical for every subject. flock is left alone: a banc.py that fsyncs under
    bancs_config.json's lock holds it that much longer, so the kiosk's flock waits grow by
    themselves. Not modelled: ext4 journal stalls of other calls (create, rename, write);
  - throttle: BANC_HOME on a fresh ext4 on a loop device whose writes the kernel caps at
    --write-iops requests/s (cgroup v1 blkio throttle, root only): a real slow device, the
    journal commits included, but its latency depends on the load (tens of ms to seconds),
    so two subjects do not meet exactly the same disk: a cross-check, not the reference.
In both modes the shim logs every fsync (process, start, duration) outside BANC_HOME: the
count, the latency actually seen, and the proof that it ran in the kiosk and each banc.py.

Scenario, identical for each subject (the baseline revision's checkout, made with
`git worktree` under bench/out/ and removed after, then this checkout), on a fresh broker
and BANC_HOME: --bancs benches, one ESP-like publisher per bench at --rate lines/s
(bench/esp_publisher.py); --bancs minus --scans banc.py recording from the start; the kiosk
(bench/ui_probe.py measures its Tk loop lag) with its own 2 s refresh. During the measured
window: --scans tests started by scanning as an operator does (xdotool: bench, serial,
bench + Enter; the kiosk marks the bench and spawns banc.py, which ends with every bench
recording), and every --step-every s a running bench moves to its next phase (its banc.py
rewrites bancs_config.json under its lock: the contention the kiosk's flock meets).
--graph also opens a running test's charts by scanning `graph` then a bench, at 30 % of the
window, and closes them (Escape) at 70 % (off by default: charts are CPU, not disk);
--graph-rows N gives that test N rows before its banc.py starts (a synthetic unfinished
test it resumes: 172800 is 48 h at 1 Hz), so the charts are those of a long test.

    .venv/bin/python bench/bench_ui_slowdisk.py [--quick] [--baseline REV] [--disk shim|throttle]
        [--slow-fsync-ms 200] [--write-iops 60] [--duration S] [--rounds N] [--graph] [--graph-rows N]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from banclfp.recording import record
from banclfp.testkit.support import Xvfb
from banclfp.testkit.synthetic import write_synthetic_test
from banclfp.wire import protocol
from bench import common
from bench.common import REPO_DIR, Cleanup, ProcessGroup, StatusWatcher, fmt, percentile, verdict
from bench.ui_probe import TICK_MS

SHIM_DIR = common.BENCH_DIR / "fsync_shim"
TARGET_MS = 20.0
DEFAULT_BASELINE = "9790fb4"  # main before the kiosk's I/O leaves its Tk thread
SCAN_PAUSE_S = 0.4  # between the three scans of one start: an operator's hand, not a script's
STALL_MS = 100.0  # the probe notes where the Tk thread is once it is this late (what a user sees as a freeze)
CHARTS_TITLE = "Graphiques"  # the chart window's title starts with it


@dataclass(frozen=True)
class Fsync:
    """One os.fsync/os.fdatasync call logged by the shim."""

    role: str  # ui, banc or other
    pid: int
    start: float  # epoch s
    ms: float


def shim_env(log_dir: Path, delay_ms: float) -> dict[str, str]:
    """Environment that puts the fsync shim in a project process (logging to log_dir, delaying by delay_ms)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(SHIM_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_FSYNC_LOG_DIR": str(log_dir), "BENCH_FSYNC_DELAY_MS": f"{delay_ms:g}"}


def read_fsyncs(log_dir: Path) -> list[Fsync]:
    """Every fsync the shim logged in log_dir (fsync-<pid>.log files)."""
    calls: list[Fsync] = []
    for path in sorted(log_dir.glob("fsync-*.log")):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    calls.append(Fsync(parts[0], pid, float(parts[1]), float(parts[2])))
    return calls


def fsync_summary(calls: list[Fsync], t_from: float, t_to: float) -> dict[str, Any]:
    """Per role: calls in the window, their latency, and how many processes ran the shim at all."""
    summary: dict[str, Any] = {}
    for role in ("ui", "banc"):
        mine = [c for c in calls if c.role == role]
        window = [c.ms for c in mine if t_from <= c.start <= t_to]
        summary[role] = {
            "processes": len({c.pid for c in mine}),
            "calls_total": len(mine),
            "calls_window": len(window),
            "p50_ms": percentile(window, 50),
            "max_ms": max(window) if window else float("nan"),
            "min_ms_total": min((c.ms for c in mine), default=float("nan")),
        }
    return summary


def stall_site(stack: list[str], checkout: Path) -> str:
    """Where a stall happened: the innermost frame of the project's code, and the kiosk's frame that led there."""
    prefix = str(checkout) + os.sep
    # bench/ frames (the fsync shim, the probe) are ours, not the kiosk's.
    mine = [entry[len(prefix):] for entry in stack if entry.startswith(prefix) and not entry.startswith(prefix + "bench")]
    if not mine:  # in a library (a Tk redraw, matplotlib...): its path from site-packages on
        return stack[-1].rpartition("site-packages/")[2] if stack else "?"
    kiosk = [entry for entry in mine if entry.startswith("ui.py:")]
    if kiosk and kiosk[-1] != mine[-1]:
        return f"{mine[-1]} <- {kiosk[-1]}"
    return mine[-1]


def schedule(duration_s: float, scanned: list[int], running: list[int], step_every_s: float,
             graph: bool) -> list[tuple[float, str, int]]:
    """(offset s, action, bench) of the window: starts by scanning spread evenly, phase changes every step_every_s."""
    events = [(duration_s * (i + 0.5) / len(scanned), "scan", n) for i, n in enumerate(scanned)]
    if step_every_s > 0 and running:
        # Phases 2, 3, 4 (5 would end the test and free the bench), bench after bench.
        budget = 3 * len(running)
        k = 1
        while k * step_every_s < duration_s and k <= budget:
            events.append((k * step_every_s, "step", running[(k - 1) % len(running)]))
            k += 1
    if graph and running:
        events.append((duration_s * 0.3, "graph", running[0]))
        events.append((duration_s * 0.7, "close_graph", running[0]))
    return sorted(events)


def long_running_test(home: Path, banc: int, serial: str, rows: int) -> Path:
    """A synthetic unfinished test of `rows` rows at 1 Hz ending now, which `banc.py bancN SERIAL` resumes."""
    start = datetime.now(record.LOCAL_TZ) - timedelta(seconds=rows + 600.0)
    return write_synthetic_test(home, rows=rows, stop_s=300.0, start=start, banc=f"banc{banc}", serial=serial,
                                finished=False).folder


def close_charts(display: str) -> bool:
    """Close the chart window as an operator does with a keyboard: Escape on it; False if it was not open."""
    env = {**os.environ, "DISPLAY": display}
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", CHARTS_TITLE], env=env,
                           capture_output=True, text=True, timeout=10)
    for window in found.stdout.split()[:1]:
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, capture_output=True, timeout=10)
        subprocess.run(["xdotool", "key", "Escape"], env=env, capture_output=True, timeout=10)
    return bool(found.stdout.split())


def run_subject(label: str, checkout: Path, home: Path, run_dir: Path, display: str, args: Any,
                delay_ms: float, run: int) -> dict[str, Any]:
    """The scenario once for one subject (a checkout's kiosk and banc.py): lag and fsyncs in the window."""
    home.mkdir(parents=True, exist_ok=True)
    fsync_dir = run_dir / "fsync"
    extra = shim_env(fsync_dir, delay_ms)
    scanned = list(range(args.bancs - args.scans + 1, args.bancs + 1))
    running = list(range(1, args.bancs - args.scans + 1))
    serials = {n: common.serial_for(n, run) for n in range(1, args.bancs + 1)}
    result: dict[str, Any] = {"subject": label, "checkout": str(checkout), "home": str(home)}
    with Cleanup() as cleanup:
        broker = cleanup.add(common.MosquittoBroker(run_dir / "broker").start())
        group = cleanup.add(ProcessGroup())
        watcher = cleanup.add(StatusWatcher(broker, range(1, args.bancs + 1), client_id=f"slow_watch_{label}"))
        common.occupy_bancs(home, broker, args.bancs, {n: serials[n] for n in running})
        if args.graph and args.graph_rows and running:
            long_running_test(home, running[0], serials[running[0]], args.graph_rows)
        bancs = {n: common.start_banc(group, home, broker, args.bancs, n, serials[n], run_dir / "proc",
                                      script=checkout / "banc.py", extra_env=extra) for n in running}
        for n in running:
            if not watcher.wait_banc(n, protocol.STATUS_ONLINE, 120):
                log = (run_dir / "proc" / f"banc{n}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{label}: banc{n} did not come online: {log}")
        probe = run_dir / "probe.jsonl"
        ui = common.start_ui(group, display, home, broker, args.bancs, probe, checkout=checkout,
                             extra_env={**extra, "BENCH_PROBE_STALL_MS": f"{STALL_MS:g}"})
        if common.wait_probe_event(probe, "first_frame", 60, ui) is None:
            log = (home / "proc" / "ui.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{label}: the kiosk did not show its first frame: {log}")
        time.sleep(3.0)
        pub = common.start_capturing(group, common.publisher_args(
            f"1-{args.bancs}", args.rate, run_dir / "pub", duration_s=args.duration + 8.0,
            prefix=f"slow_esp_{label}_{run}"), common.banc_env(home, broker, args.bancs))
        time.sleep(2.0)
        phase = {n: 1 for n in running}
        late: list[float] = []
        t0 = time.time()
        for offset, action, n in schedule(args.duration, scanned, running, args.step_every, args.graph):
            time.sleep(max(0.0, t0 + offset - time.time()))
            late.append(time.time() - t0 - offset)
            if action == "scan":
                for text in (f"banc{n}", serials[n], f"banc{n}"):
                    common.type_scan(display, text)
                    time.sleep(SCAN_PAUSE_S)
            elif action == "step":
                phase[n] += 1
                watcher.publish(protocol.topics(n).step, protocol.encode_step(phase[n]))
            elif action == "graph":
                for text in ("graph", f"banc{n}"):
                    common.type_scan(display, text)
                    time.sleep(SCAN_PAUSE_S)
            elif action == "close_graph":
                common.screenshot(display, run_dir / "charts.png")  # what the charts showed when closed
                result["charts_open"] = close_charts(display)
        time.sleep(max(0.0, t0 + args.duration - time.time()))
        t1 = time.time()
        time.sleep(1.2)  # the probe flushes its lags every second
        lags = common.probe_lags(probe, t0 + 1.0, t1 + 1.0)
        stalls = [e for e in common.read_probe(probe) if e.get("event") == "stall" and t0 <= e.get("t", 0) <= t1]
        started = sum(1 for n in scanned if watcher.wait_banc(n, protocol.STATUS_ONLINE, 30))
        result.update({
            "lags_ms": lags, "lag": common.lag_stats(lags), "stall_sites": [stall_site(e["stack"], checkout) for e in stalls], "scanned": len(scanned), "scanned_online": started,
            "phase_changes": sum(p - 1 for p in phase.values()), "worst_event_late_s": max(late, default=0.0),
            "ui_alive": ui.poll() is None,
        })
        pub.communicate(timeout=120)
        # Every bench, those whose banc.py the kiosk started by scanning too.
        common.end_of_day(watcher, group, range(1, args.bancs + 1), bancs, wait_s=30.0)
        group.stop(ui, 10)
        # The benches started by scanning belong to the kiosk's children, in their own sessions.
        result["strays_stopped"] = common.stop_home_processes(home)
    result["fsync_calls"] = [c.__dict__ for c in read_fsyncs(fsync_dir)]
    result["fsync"] = fsync_summary(read_fsyncs(fsync_dir), t0, t1)
    return result


@contextlib.contextmanager
def slow_disk(mode: str, write_iops: int) -> Iterator[Optional[common.LoopDisk]]:
    """The throttled loop disk BANC_HOME goes on (mode throttle), or None (mode shim: BANC_HOME under bench/out/)."""
    disk: Optional[common.LoopDisk] = None
    if mode == "throttle":
        disk = common.LoopDisk("ui-slowdisk-disk", size_mb=512, write_iops=write_iops).start()
        if disk is None:
            raise RuntimeError("--disk throttle: no loop device with a blkio write throttle on this machine")
    try:
        yield disk
    finally:
        if disk is not None:
            disk.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """Run the scenario for the baseline revision and this checkout, print both and their ratio."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"revision to compare with (default {DEFAULT_BASELINE})")
    parser.add_argument("--disk", choices=("shim", "throttle"), default="shim",
                        help="shim: +--slow-fsync-ms per fsync (default); throttle: a write-limited loop device")
    parser.add_argument("--slow-fsync-ms", type=float, default=200.0, help="shim: delay added to each fsync")
    parser.add_argument("--write-iops", type=int, default=60, help="throttle: write requests/s the disk accepts")
    parser.add_argument("--duration", type=float, help="seconds measured per subject and round (default 60, 20 quick)")
    parser.add_argument("--rounds", type=int, help="rounds, subjects alternating (default 2, 1 quick)")
    parser.add_argument("--bancs", type=int, default=16)
    parser.add_argument("--rate", type=float, default=10.0, help="lines/s per bench")
    parser.add_argument("--scans", type=int, default=3, help="tests started by scanning during the window")
    parser.add_argument("--step-every", type=float, default=2.0, help="s between two phase changes (0: none)")
    parser.add_argument("--graph", action="store_true", help="also open a test's charts (scan graph + bench), then close them")
    parser.add_argument("--graph-rows", type=int, default=0,
                        help="--graph: rows the charted test already has (0: those of the run; 172800: 48 h at 1 Hz)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (20.0 if args.quick else 60.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if not 1 <= args.scans < args.bancs:
        parser.error("--scans must leave at least one bench running from the start")
    info = common.machine_info()
    base_label, cur_label = common.rev_label(args.baseline), common.rev_label("HEAD")
    out = common.fresh_dir("ui-slowdisk")
    results: dict[str, Any] = {"machine": info, "args": vars(args), "baseline": base_label, "current": cur_label}
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    with contextlib.ExitStack() as stack:
        disk = stack.enter_context(slow_disk(args.disk, args.write_iops))
        mode = args.disk
        delay_ms = args.slow_fsync_ms if mode == "shim" else 0.0
        what = (f"ext4 on {disk.device}, writes limited to {args.write_iops}/s" if disk is not None
                else f"fsync shim, +{delay_ms:g} ms per fsync")
        results["disk"] = what
        print(f"bench_ui_slowdisk: kiosk {base_label} (baseline) vs {cur_label} (this checkout); {args.bancs} benches x "
              f"{args.rate:g} lines/s, {args.scans} starts by scan, a phase change every {args.step_every:g} s, "
              f"{rounds} x {args.duration:g} s per subject; slow disk: {what}; machine {info}", flush=True)
        base_dir = stack.enter_context(common.checkout_of(args.baseline, "ui-slowdisk-baseline"))
        xvfb = stack.enter_context(Xvfb(1920, 1080))
        checkouts = {"baseline": base_dir, "current": REPO_DIR}
        for r in range(rounds):
            # Alternating the order keeps a drift of the machine's load from favouring one subject.
            for label in (("baseline", "current") if r % 2 == 0 else ("current", "baseline")):
                run_dir = out / f"{label}-{r}"
                root = disk.mount_point if disk is not None else run_dir
                print(f"  round {r + 1}/{rounds}: {label}...", flush=True)
                res = run_subject(label, checkouts[label], root / f"home-{label}-{r}", run_dir, xvfb.display or "",
                                  args, delay_ms, r)
                lag = res["lag"]
                print(f"    lag p50 {fmt(lag['p50_ms'])} / p99 {fmt(lag['p99_ms'])} / max {fmt(lag['max_ms'])} ms; "
                      f"starts by scan {res['scanned_online']}/{res['scanned']}; kiosk fsyncs "
                      f"{res['fsync']['ui']['calls_window']}"
                      + (f"; charts open when closed: {res.get('charts_open')}" if args.graph else ""), flush=True)
                runs[label].append(res)
    results["runs"] = runs
    return report(results, runs, args, mode, delay_ms)


def report(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]], args: Any, mode: str,
           delay_ms: float) -> int:
    """Print the table, the ratios and the verdict; save the JSON."""
    pooled: dict[str, dict[str, Any]] = {}
    rows = []
    for label in ("baseline", "current"):
        lags = [v for r in runs[label] for v in r["lags_ms"]]
        # Latencies over the whole runs (how slow the disk was); counts within the measured windows.
        calls = [saved_fsync(c) for r in runs[label] for c in r["fsync_calls"]]
        lag = common.lag_stats(lags)
        lag["input_p99_ms"] = common.input_wait_percentile(lags, TICK_MS, 99)
        # The probe gives one sample per tick, so a 3 s freeze weighs as much in the percentiles as a
        # 60 ms one: the time spent frozen (ticks late by more than 50 ms) is the figure that weighs it.
        frozen_s = sum(v for v in lags if v > 50) / 1000.0
        window_s = args.duration * len(runs[label])
        ui_calls = sum(r["fsync"]["ui"]["calls_window"] for r in runs[label])
        banc_calls = sum(r["fsync"]["banc"]["calls_window"] for r in runs[label])
        all_ms = [c.ms for c in calls]
        ui_ms = [c.ms for c in calls if c.role == "ui"]
        pooled[label] = {"lag": lag, "frozen_s": frozen_s, "window_s": window_s, "ui_fsyncs": ui_calls, "banc_fsyncs": banc_calls,
                         "fsync_p50_ms": percentile(all_ms, 50), "fsync_max_ms": max(all_ms, default=float("nan")),
                         "ui_fsync_p50_ms": percentile(ui_ms, 50),
                         "shim_processes": {role: max(r["fsync"][role]["processes"] for r in runs[label])
                                            for role in ("ui", "banc")},
                         "fsync_min_ms": min(all_ms, default=float("nan"))}
        p = pooled[label]
        rows.append((f"{label} ({results[label]})", fmt(lag["p50_ms"]), fmt(lag["p99_ms"]), fmt(lag["max_ms"]),
                     fmt(lag["input_p99_ms"]),
                     fmt(lag["samples"]), f"{lag['over_50ms']} / {frozen_s:.1f} s of {window_s:g} s", fmt(ui_calls), fmt(p["ui_fsync_p50_ms"]),
                     fmt(banc_calls), f"{fmt(p['fsync_p50_ms'])} / {fmt(p['fsync_max_ms'])}",
                     f"{sum(r['scanned_online'] for r in runs[label])}/{sum(r['scanned'] for r in runs[label])}"))
    common.print_table(f"Kiosk Tk loop lag on a slow disk ({results['disk']}), {args.bancs} x {args.rate:g} lines/s",
                       rows, ("kiosk", "lag p50 ms", "lag p99 ms", "lag max ms", "input wait p99 ms", "samples", "ticks > 50 ms / frozen",
                              "kiosk fsyncs", "kiosk fsync p50 ms", "banc.py fsyncs", "fsync p50 / max ms",
                              "starts by scan"))
    for label in ("baseline", "current"):
        sites = Counter(site for r in runs[label] for site in r["stall_sites"])
        pooled[label]["stall_sites"] = dict(sites)
        print(f"\nWhere the {label} kiosk's Tk thread was when {STALL_MS:g} ms late ({sum(sites.values())} stalls):")
        for site, count in sites.most_common(6):
            print(f"  {count:4d}  {site}")
    base, cur = pooled["baseline"]["lag"], pooled["current"]["lag"]
    print("\nRatio this checkout / baseline: " + ", ".join(
        f"{key[:-3]} {cur[key] / base[key]:.2f}" if base[key] > 0 else f"{key[:-3]} n/a"
        for key in ("p50_ms", "p99_ms", "max_ms", "input_p99_ms")))
    # The measurement only counts if the disk was really slow in every process that matters.
    checks = []
    for label in ("baseline", "current"):
        p = pooled[label]
        procs = p["shim_processes"]
        ok = procs["ui"] >= 1 and procs["banc"] >= args.bancs
        if mode == "shim":
            ok = ok and p["fsync_min_ms"] >= delay_ms
        checks.append(ok)
        print(f"  {label}: shim seen in {procs['ui']} kiosk and {procs['banc']} banc.py processes, "
              f"shortest fsync {fmt(p['fsync_min_ms'])} ms -> slow disk {'active' if ok else 'NOT PROVEN'}")
    scans_ok = all(r["scanned_online"] == r["scanned"] for rs in runs.values() for r in rs)
    valid = all(checks) and scans_ok
    verdicts = [
        f"p99 kiosk lag (per tick) <= {TARGET_MS:g} ms on a slow disk, {args.bancs} x {args.rate:g} lines/s: "
        f"{cur['p99_ms']:.1f} ms (baseline {results['baseline']}: {base['p99_ms']:.1f} ms) -> "
        f"{verdict(cur['p99_ms'] <= TARGET_MS and valid)}",
        # The tick p99 can pass a kiosk that freezes for seconds (few long stalls among thousands of
        # ticks): the same threshold on the wait of an input, which weighs each freeze by its length.
        f"p99 input wait <= {TARGET_MS:g} ms: {cur['input_p99_ms']:.1f} ms (baseline {base['input_p99_ms']:.1f} ms); "
        f"time frozen {pooled['current']['frozen_s']:.1f} s (baseline {pooled['baseline']['frozen_s']:.1f} s) "
        f"of {pooled['current']['window_s']:g} s -> {verdict(cur['input_p99_ms'] <= TARGET_MS and valid)}",
    ]
    if not scans_ok:
        verdicts.append("some tests started by scanning did not come online: the scenario did not run as planned")
    results["pooled"] = pooled
    results["verdicts"] = common.print_targets(verdicts)
    common.save_json("ui-slowdisk", results)
    return 0 if valid else 1


def saved_fsync(raw: dict[str, Any]) -> Fsync:
    """An Fsync back from its saved dict."""
    return Fsync(raw["role"], raw["pid"], raw["start"], raw["ms"])


if __name__ == "__main__":
    sys.exit(main())
