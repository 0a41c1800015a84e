"""The kiosk (ui.py) under Xvfb with 16 benches at 10 messages/s: event-loop lag, CPU, memory, first frame.

The real `ui.py` runs as the kiosk does (full screen, BANC_NUM_BANCS=16), with
bench/ui_probe.py adding one after(10 ms) timer to its Tk loop to measure how late it fires
(the lag every other after() callback of the app also suffers) and the first frame.

  1. start-up: the kiosk is started --starts times: time from the process start to the first
     frame (probe: root mapped and the drawing queued so far done), cross-checked from the
     outside (xdotool sees the window), RSS at that moment;
  2. idle: the kiosk with no BMS traffic (the baseline of this run): lag, CPU;
  3. load: 16 ESP-like publishers at 10 lines/s each (bench/esp_publisher.py): lag p50/p99/max, CPU, RSS;
  4. full system (unless --no-bancs): the same load with the 16 banc.py recording it, as on the Pi.

    .venv/bin/python bench/bench_ui.py [--quick] [--duration S] [--starts N] [--no-bancs]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

from banclfp.testkit.support import Xvfb
from banclfp.wire import protocol
from bench import common
from bench.common import (
    REPO_DIR,
    Cleanup,
    ProcessGroup,
    StatusWatcher,
    fmt,
    median,
    sample,
    verdict,
)


def measure_startups(run_dir: Path, display: str, broker: Any, home: Path, bancs: int, starts: int) -> list[dict]:
    """Start the kiosk `starts` times; time to first frame each time."""
    results = []
    for i in range(starts):
        with ProcessGroup() as group:
            probe = run_dir / f"probe-start{i}.jsonl"
            t0 = time.time()
            proc = common.start_ui(group, display, home, broker, bancs, probe)
            seen_outside: Optional[float] = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and seen_outside is None and proc.poll() is None:
                if common.window_visible(display):
                    seen_outside = time.time() - t0
                else:
                    time.sleep(0.05)
            frame = common.wait_probe_event(probe, "first_frame", 30, proc)
            s = common.try_sample(proc.pid)
            results.append({
                "first_frame_s": frame["first_frame_s"] if frame else None,
                "window_visible_s": seen_outside,
                "rss_kb_at_first_frame": s.rss_kb if s else None,
                "size": (frame or {}).get("width"), "exit": proc.poll(),
            })
            if frame is None:
                log = (home / "proc" / "ui.log").read_text(errors="replace")[-2000:]
                print(f"  start {i}: no first frame; ui log:\n{log}")
            else:
                print(f"  start {i}: first frame {frame['first_frame_s']:.2f} s after process start "
                      f"(window seen by xdotool {fmt(seen_outside, 2)} s after Popen)", flush=True)
            group.stop(proc, 10)
    return results


def window(proc_pid: int, xvfb_pid: int, probe: Path, seconds: float) -> dict[str, Any]:
    """Measure the kiosk for `seconds`: lag from the probe, CPU/RSS from /proc (ui.py and Xvfb)."""
    before, xbefore = sample(proc_pid), sample(xvfb_pid)
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    after, xafter = sample(proc_pid), sample(xvfb_pid)
    time.sleep(1.2)  # let the probe flush the last second
    d = common.delta(before, after)
    return {
        "lag": common.lag_stats(common.probe_lags(probe, t0 + 1.0, t1 + 1.0)),
        "cpu_pct": d.cpu_s / d.wall_s * 100,
        "xvfb_cpu_pct": (xafter.cpu_s - xbefore.cpu_s) / d.wall_s * 100,
        "rss_kb": after.rss_kb, "hwm_kb": after.hwm_kb, "pss_kb": after.pss_kb,
        "seconds": seconds,
    }


def main(argv: Optional[list[str]] = None) -> int:
    """Run the kiosk measurements and print the figures."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, help="seconds per measured window (default 60, 15 quick)")
    parser.add_argument("--starts", type=int, help="start-up measurements (default 5, 2 quick)")
    parser.add_argument("--bancs", type=int, default=16)
    parser.add_argument("--rate", type=float, default=10.0, help="messages/s per bench")
    parser.add_argument("--no-bancs", action="store_true", help="skip the full-system window (16 banc.py)")
    args = parser.parse_args(argv)
    duration = args.duration or (15.0 if args.quick else 60.0)
    idle_s = min(duration, 10.0 if not args.quick else 5.0)
    starts = args.starts or (2 if args.quick else 5)
    if not (REPO_DIR / "ui.py").exists():
        print("ui.py is not there yet: nothing to measure")
        return 1
    info = common.machine_info()
    print(f"bench_ui: kiosk with {args.bancs} benches, {args.rate:g} msg/s each, windows of {duration:g} s; "
          f"machine {info}", flush=True)
    out = common.fresh_dir("ui")
    home = out / "home"
    home.mkdir()
    results: dict[str, Any] = {"machine": info, "bancs": args.bancs, "rate": args.rate, "duration_s": duration}
    with Cleanup() as cleanup:
        xvfb = cleanup.add(Xvfb(1920, 1080).start())
        display = xvfb.display or ""
        broker = cleanup.add(common.MosquittoBroker(out / "broker").start())
        group = cleanup.add(ProcessGroup())
        watcher = cleanup.add(StatusWatcher(broker, range(1, args.bancs + 1)))
        serials = {n: common.serial_for(n) for n in range(1, args.bancs + 1)}
        common.occupy_bancs(home, broker, args.bancs, serials)

        print("start-up:", flush=True)
        results["startups"] = measure_startups(out, display, broker, home, args.bancs, starts)

        probe = out / "probe-load.jsonl"
        ui = common.start_ui(group, display, home, broker, args.bancs, probe)
        if common.wait_probe_event(probe, "first_frame", 30, ui) is None:
            raise RuntimeError("the kiosk did not show its first frame")
        time.sleep(3.0)
        print("idle window...", flush=True)
        results["idle"] = window(ui.pid, xvfb.proc.pid, probe, idle_s)

        env = common.banc_env(home, broker, args.bancs)
        pub_duration = duration + 4.0
        print("load window (kiosk alone)...", flush=True)
        pub = common.start_capturing(group, common.publisher_args(f"1-{args.bancs}", args.rate, out / "pub-a",
                                                                  duration_s=pub_duration, prefix="bench_esp_a"), env)
        time.sleep(2.0)
        results["load"] = window(ui.pid, xvfb.proc.pid, probe, duration)
        common.screenshot(display, out / "kiosk-load.png")
        pub.communicate(timeout=120)

        if not args.no_bancs and (REPO_DIR / "banc.py").exists():
            print("full-system window (kiosk + 16 banc.py)...", flush=True)
            bancs = {n: common.start_banc(group, home, broker, args.bancs, n, serials[n]) for n in serials}
            for n in serials:
                watcher.wait_banc(n, protocol.STATUS_ONLINE, 60)
            time.sleep(3.0)
            pub = common.start_capturing(group, common.publisher_args(
                f"1-{args.bancs}", args.rate, out / "pub-b", duration_s=pub_duration, prefix="bench_esp_b",
                extra=["--start-seq", "1000000"]), env)
            time.sleep(2.0)
            bancs_before = [sample(p.pid) for p in bancs.values()]
            results["full"] = window(ui.pid, xvfb.proc.pid, probe, duration)
            bancs_after = [sample(p.pid) for p in bancs.values()]
            results["full"]["bancs_cpu_pct"] = sum(a.cpu_s - b.cpu_s for a, b in zip(bancs_before, bancs_after)) / (
                bancs_after[0].t_s - bancs_before[0].t_s) * 100
            common.screenshot(display, out / "kiosk-full.png")
            pub.communicate(timeout=120)
            common.end_of_day(watcher, group, serials, bancs)
        results["ui_exit"] = group.stop(ui, 10)

    ss = results["startups"]
    first = median(s["first_frame_s"] for s in ss if s["first_frame_s"] is not None)
    outside = median(s["window_visible_s"] for s in ss if s["window_visible_s"] is not None)
    rows = []
    for key, name in (("idle", "idle (baseline)"), ("load", f"{args.bancs} x {args.rate:g} msg/s, kiosk alone"),
                      ("full", f"{args.bancs} x {args.rate:g} msg/s + {args.bancs} banc.py")):
        if key not in results:
            continue
        r = results[key]
        lag = r["lag"]
        rows.append((name, fmt(lag["p50_ms"], 1), fmt(lag["p99_ms"], 1), fmt(lag["max_ms"], 1),
                     fmt(lag["samples"]), fmt(r["cpu_pct"], 1), fmt(r["xvfb_cpu_pct"], 1),
                     fmt(r["rss_kb"] / 1024, 0), fmt(r["hwm_kb"] / 1024, 0)))
    common.print_table("Kiosk event loop (after(10 ms) probe) and cost", rows,
                       ("window", "lag p50 ms", "lag p99 ms", "lag max ms", "samples", "ui.py CPU %",
                        "Xvfb CPU %", "RSS MB", "peak RSS MB"))
    print(f"\nFirst frame: median {first:.2f} s after the process start over {len(ss)} starts "
          f"({', '.join(fmt(s['first_frame_s'], 2) for s in ss)}); window seen from outside after {outside:.2f} s")
    worst = max((results[k]["lag"]["p99_ms"] for k in ("load", "full") if k in results), default=float("nan"))
    peak = max(results[k]["hwm_kb"] for k in ("idle", "load", "full") if k in results) / 1024
    idle_p99 = results["idle"]["lag"]["p99_ms"]
    verdicts = [
        f"p99 lag <= 50 ms under {args.bancs} x {args.rate:g} msg/s: {worst:.1f} ms (idle {idle_p99:.1f} ms) -> "
        f"{verdict(worst <= 50)}",
        f"first frame <= 2 s: {first:.2f} s -> {verdict(first <= 2.0)}",
        f"RSS <= 150 MB: peak {peak:.0f} MB -> {verdict(peak <= 150)}",
    ]
    if "load" in results:
        verdicts.append(f"CPU under load vs idle: {results['load']['cpu_pct']:.1f} % vs {results['idle']['cpu_pct']:.1f} % "
                        f"of one core")
    print("\nTargets:")
    for v in verdicts:
        print("  " + v)
    results["verdicts"] = verdicts
    common.save_json("ui", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
