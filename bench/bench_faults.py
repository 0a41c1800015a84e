"""Fault run: broker, banc.py and kiosk killed (-9) and restarted during a test; lost and duplicated rows counted.

Benches 1..B run a test each (`banc.py bancN SERIAL`, started as the kiosk starts them) while
bench/esp_publisher.py plays their ESP32s: QoS 1 BMS lines with seq, persistent session, and
paho keeps every line the broker has not acknowledged and sends it again after reconnecting,
as the firmware does. The kiosk runs on Xvfb (unless --no-ui). During the run:
  - broker : Mosquitto killed with SIGKILL, restarted on the same port and persistence file;
  - banc   : one banc.py killed with SIGKILL, restarted with the same command line;
  - ui     : the kiosk killed with SIGKILL, restarted (its first frame is waited for).
Afterwards every data.csv is compared with the seqs the broker acknowledged to the publisher:
a seq missing is LOST, a seq recorded twice is DUPLICATED; each one is attributed to the
fault during which it was published.

    .venv/bin/python bench/bench_faults.py [--quick] [--bancs 4] [--rate 10] [--duration 90] [--cycles 2]
    .venv/bin/python bench/bench_faults.py --faults overlap --no-ui [--replay]   # the double fault
    .venv/bin/python bench/bench_faults.py --faults broker --no-ui --stall-s 3 [--replay]  # broker dies, banc.py behind

--replay: the ESPs answer `replay FIRST LAST` (docs/protocole.md §6) from their last 3600 lines, as
the firmware and the simulator do, and go on answering 15 s after their last line (a real ESP
does not go away when the run ends); without it they do not (older firmware).
--stall-s: every banc.py is frozen (SIGSTOP) that long before each broker kill, as a banc.py held
up by a slow disk would be, then the broker is killed half a second after it saved its
persistence file: it dies holding lines it had neither delivered (beyond the 100 in flight) nor
saved. banc.py sees the gap and asks for it; only firmware that answers replays gets those
lines back.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from banclfp.testkit.support import Xvfb
from banclfp.wire import protocol
from bench import common
from bench.common import (
    REPO_DIR,
    Cleanup,
    CsvCheck,
    ProcessGroup,
    StatusWatcher,
    check_csv,
    count_rows_fast,
    data_csv_paths,
    read_publisher_times,
    verdict,
)

FAULTS = ("broker", "banc", "ui")
# Beyond the scenario: the broker killed while a banc.py is down, i.e. while the
# broker holds that bench's lines in its queue (a power cut of the Pi does this).
ALL_FAULTS = FAULTS + ("overlap",)


@dataclass
class FaultEvent:
    """One injected fault: what, when it was killed, when it was back."""

    kind: str
    target: str
    killed_t: float
    restarted_t: float = 0.0
    recovered_t: float = 0.0
    note: str = ""


@dataclass
class FaultRunResult:
    """Everything a fault run measured."""

    bancs: int
    rate: float
    duration_s: float
    events: list[FaultEvent] = field(default_factory=list)
    checks: dict[int, CsvCheck] = field(default_factory=dict)
    published: int = 0
    acked: int = 0
    published_not_acked: int = 0
    attributed: dict[str, dict[str, int]] = field(default_factory=dict)
    banc_exit_codes: dict[int, Optional[int]] = field(default_factory=dict)
    duplicate_processes: list[str] = field(default_factory=list)
    ui_recovered: Optional[bool] = None

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.checks.values())

    @property
    def duplicated(self) -> int:
        return sum(c.duplicated for c in self.checks.values())

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.checks.values())


def schedule(faults: Sequence[str], cycles: int, duration_s: float) -> list[tuple[float, str]]:
    """(offset s, fault kind) pairs spread evenly over the run, leaving the first and last slice quiet."""
    kinds = [kind for _ in range(cycles) for kind in faults]
    step = duration_s / (len(kinds) + 1)
    return [(step * (i + 1), kind) for i, kind in enumerate(kinds)]


def attribute(seqs: Sequence[int], pub_times: dict[int, float], events: Sequence[FaultEvent],
              margin_s: float = 2.0) -> dict[str, int]:
    """Count seqs per fault during which they were published (else 'no fault')."""
    counts: dict[str, int] = {}
    for seq in seqs:
        t = pub_times.get(seq)
        label = "no fault"
        for event in events:
            end = max(event.recovered_t, event.restarted_t, event.killed_t)
            if t is not None and event.killed_t - margin_s <= t <= end + margin_s:
                label = f"{event.kind}:{event.target}"
                break
        counts[label] = counts.get(label, 0) + 1
    return counts


def banc_processes(home: Path) -> dict[str, int]:
    """Number of live banc.py processes per bench for this BANC_HOME (to catch a double start)."""
    import psutil

    counts: dict[str, int] = {}
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if not any(part.endswith("banc.py") for part in cmd):
                continue
            if proc.environ().get("BANC_HOME") != str(home):
                continue
            banc = cmd[-2] if len(cmd) >= 2 else "?"
            counts[banc] = counts.get(banc, 0) + 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return counts


def run_faults(out: Path, bancs: int = 4, rate: float = 10.0, duration_s: float = 90.0, cycles: int = 1,
               faults: Sequence[str] = FAULTS, use_ui: bool = True, down_s: float = 2.0,
               verbose: bool = True, broker_conf: str = "", replay: bool = False,
               stall_s: float = 0.0, linger_s: float = 0.0) -> FaultRunResult:
    """Run one fault scenario in `out` and return the counts (the processes are all stopped on return).

    `stall_s`: before a broker fault every banc.py is frozen (SIGSTOP) that long, as a banc.py
    held up by a slow disk would be, so the broker dies holding lines it has not delivered.
    `linger_s`: with `replay`, the ESPs go on answering replays that long after their last line.
    """

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    use_ui = use_ui and "ui" in faults and (REPO_DIR / "ui.py").exists()
    faults = [f for f in faults if f != "ui" or use_ui]
    result = FaultRunResult(bancs=bancs, rate=rate, duration_s=duration_s)
    home = out / "home"
    home.mkdir(parents=True, exist_ok=True)
    with Cleanup() as cleanup:
        broker = cleanup.add(common.MosquittoBroker(out / "broker", extra_conf=broker_conf).start())
        group = cleanup.add(ProcessGroup())
        watcher = cleanup.add(StatusWatcher(broker, range(1, bancs + 1)))
        serials = {n: common.serial_for(n) for n in range(1, bancs + 1)}
        common.occupy_bancs(home, broker, bancs, serials)
        procs = {n: common.start_banc(group, home, broker, bancs, n, serials[n]) for n in serials}
        for n in serials:
            if not watcher.wait_banc(n, protocol.STATUS_ONLINE, 60):
                raise RuntimeError(f"banc{n} did not come online")
        display = ""
        ui: Optional[subprocess.Popen] = None
        probe = out / "probe.jsonl"
        if use_ui:
            xvfb = cleanup.add(Xvfb(1280, 800).start())
            display = xvfb.display or ""
            ui = common.start_ui(group, display, home, broker, bancs, probe)
            if common.wait_probe_event(probe, "first_frame", 30, ui) is None:
                raise RuntimeError("the kiosk did not start")
        env = common.banc_env(home, broker, bancs)
        t0, t0_epoch = time.monotonic(), time.time()
        pub = common.start_capturing(group, common.publisher_args(
            f"1-{bancs}", rate, out / "pub", duration_s=duration_s,
            extra=["--wait-ack-s", "180"] + (["--replay", "--linger-s", f"{linger_s:g}"] if replay else [])), env)
        say(f"  publishing {bancs} x {rate:g} lines/s for {duration_s:g} s")
        victim = 0
        for offset, kind in schedule(faults, cycles, duration_s):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if kind == "broker":
                stalled = ""
                if stall_s > 0:
                    for proc in procs.values():
                        proc.send_signal(signal.SIGSTOP)
                    time.sleep(stall_s)
                    # Half an autosave after a save: the broker dies holding what came since.
                    saved = broker.wait_for_save()
                    time.sleep(0.5)
                    stalled = f"banc.py frozen {stall_s:g} s, " + (
                        "killed 0.5 s after a save; " if saved else "no save seen in 5 s; ")
                event = FaultEvent("broker", "mosquitto", time.time())
                broker.kill()
                for proc in procs.values():
                    proc.send_signal(signal.SIGCONT)
                time.sleep(down_s)
                broker.start()
                event.restarted_t = time.time()
                # Recovered when every banc.py has reconnected: each publishes 'online' again (the
                # retained copy the restarted broker replays does not count).
                ok = all(watcher.wait_live(n, protocol.STATUS_ONLINE, event.killed_t, 60) for n in serials)
                event.recovered_t = time.time()
                event.note = stalled + ("all banc.py reconnected" if ok else "some banc.py did not reconnect in 60 s")
            elif kind == "banc":
                victim = victim % bancs + 1
                event = FaultEvent("banc", f"banc{victim}", time.time())
                group.kill(procs[victim])
                time.sleep(down_s + 1.0)
                procs[victim] = common.start_banc(group, home, broker, bancs, victim, serials[victim])
                event.restarted_t = time.time()
                ok = watcher.wait_live(victim, protocol.STATUS_ONLINE, event.restarted_t, 60)
                event.recovered_t = time.time()
                if procs[victim].poll() is not None:
                    event.note = f"restart exited with {procs[victim].returncode}"
                else:
                    event.note = "back online" if ok else "not online after 60 s"
            elif kind == "overlap":
                victim = victim % bancs + 1
                event = FaultEvent("overlap", f"banc{victim}", time.time())
                group.kill(procs[victim])
                time.sleep(1.5)  # the broker now queues banc{victim}'s lines for its session
                broker.kill()
                time.sleep(down_s)
                broker.start()
                time.sleep(1.0)
                procs[victim] = common.start_banc(group, home, broker, bancs, victim, serials[victim])
                event.restarted_t = time.time()
                ok = watcher.wait_live(victim, protocol.STATUS_ONLINE, event.restarted_t, 60)
                event.recovered_t = time.time()
                event.note = "banc.py killed, then the broker while it was down; " + (
                    "back online" if ok else "not online after 60 s")
            else:
                assert ui is not None
                event = FaultEvent("ui", "ui.py", time.time())
                group.kill(ui)
                time.sleep(down_s)
                restart_t = time.time()
                ui = common.start_ui(group, display, home, broker, bancs, probe)
                event.restarted_t = restart_t
                frame = common.wait_probe_event(probe, "first_frame", 30, ui, after_t=restart_t)
                event.recovered_t = time.time()
                result.ui_recovered = frame is not None and (result.ui_recovered is not False)
                event.note = f"first frame after {frame['first_frame_s']:.2f} s" if frame else "no first frame"
                time.sleep(3.0)  # the kiosk's refresh loop has looked at the running banc.py by now
                doubles = {b: c for b, c in banc_processes(home).items() if c > 1}
                if doubles:
                    result.duplicate_processes.append(f"after ui restart: {doubles}")
            result.events.append(event)
            say(f"  {kind:6s} {event.target:10s} killed at +{event.killed_t - t0_epoch:5.1f} s,"
                f" recovered in {event.recovered_t - event.killed_t:4.1f} s ({event.note})")
        pub_out, _ = pub.communicate(timeout=duration_s + 300)
        summary = common.last_json(pub_out)
        say(f"  publisher done: all acknowledged = {summary['all_acked']}")
        # Wait until the rows stop coming (everything acknowledged is delivered by now or never).
        wanted = sum(b["acked"] for b in summary["benches"])
        last_rows, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = sum(count_rows_fast(p) for n in serials for p in data_csv_paths(home, n))
            if rows != last_rows:
                last_rows, stable_since = rows, time.monotonic()
            if rows >= wanted and time.monotonic() - stable_since > 2.0:
                break
            if time.monotonic() - stable_since > 10.0:
                break
            time.sleep(0.2)
        result.banc_exit_codes.update(common.end_of_day(watcher, group, serials, procs))
        if ui is not None:
            group.stop(ui, 10)
        lost_all: list[tuple[int, int]] = []
        dup_all: list[tuple[int, int]] = []
        for n in serials:
            pub_times, ack_times = read_publisher_times(out / "pub" / f"pub_banc{n}.txt")
            check = check_csv(data_csv_paths(home, n), ack_times)
            result.checks[n] = check
            result.published += len(pub_times)
            result.acked += len(ack_times)
            result.published_not_acked += len(set(pub_times) - set(ack_times))
            lost_all += [(n, s) for s in check.lost_seqs]
            dup_all += [(n, s) for s in check.duplicated_seqs]
            result.attributed[f"banc{n}"] = {
                **{f"lost@{k}": v for k, v in attribute(check.lost_seqs, pub_times, result.events).items()},
                **{f"dup@{k}": v for k, v in attribute(check.duplicated_seqs, pub_times, result.events).items()},
            }
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Run the fault scenario and print the counts."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--bancs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="BMS lines/s per bench")
    parser.add_argument("--duration", type=float, help="seconds of publishing (default 90, 30 quick)")
    parser.add_argument("--cycles", type=int, help="times each fault is injected (default 2, 1 quick)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"among {','.join(ALL_FAULTS)}")
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--broker-conf", default="", help="extra mosquitto.conf lines (\\n separated)")
    parser.add_argument("--name", default="faults", help="output name under bench/out/")
    parser.add_argument("--replay", action="store_true", help="the ESPs answer replay requests (docs/protocole.md §6)")
    parser.add_argument("--stall-s", type=float, default=0.0,
                        help="freeze every banc.py this long before each broker kill (a banc.py held up by its disk)")
    args = parser.parse_args(argv)
    duration = args.duration or (30.0 if args.quick else 90.0)
    cycles = args.cycles or (1 if args.quick else 2)
    if not (REPO_DIR / "banc.py").exists():
        print("banc.py is not there yet: nothing to measure")
        return 1
    info = common.machine_info()
    broker_conf = args.broker_conf.replace("\\n", "\n")
    print(f"bench_faults: {args.bancs} benches x {args.rate:g} lines/s, {duration:g} s, {cycles} cycle(s) of "
          f"{args.faults}{', ESPs answering replays' if args.replay else ''}{'; broker conf: ' + broker_conf if broker_conf else ''}; machine {info}", flush=True)
    out = common.fresh_dir(args.name)
    result = run_faults(out, args.bancs, args.rate, duration, cycles, [f for f in args.faults.split(",") if f],
                        use_ui=not args.no_ui, broker_conf=broker_conf, replay=args.replay,
                        stall_s=args.stall_s, linger_s=15.0)
    rows = [(f"banc{n}", c.expected, c.rows, c.lost, c.duplicated, c.unexpected,
             " ".join(f"{k}={v}" for k, v in result.attributed[f"banc{n}"].items()) or "-")
            for n, c in result.checks.items()]
    common.print_table("data.csv against the seqs the broker acknowledged", rows,
                       ("bench", "acknowledged", "rows", "lost", "duplicated", "unexpected", "attributed to"))
    print("\nFaults:")
    for e in result.events:
        print(f"  {e.kind:6s} {e.target:10s} down {e.restarted_t - e.killed_t:4.1f} s, recovered "
              f"{e.recovered_t - e.killed_t:4.1f} s after the kill: {e.note}")
    print(f"\npublished {result.published}, acknowledged by the broker {result.acked}, "
          f"never acknowledged {result.published_not_acked}")
    print(f"banc.py exit codes: {result.banc_exit_codes}; double banc.py: {result.duplicate_processes or 'none'}; "
          f"kiosk came back: {result.ui_recovered}")
    in_scope = all(kind in FAULTS for kind in result_kinds(result))
    if in_scope:
        verdicts = [
            f"lost rows: {result.lost} -> {verdict(result.lost == 0)}",
            f"duplicated rows: {result.duplicated} -> {verdict(result.duplicated == 0)}",
        ]
        print("\nTargets:")
    else:
        # Not one of the targets: this run shows what the broker's own persistence can lose.
        verdicts = [f"(beyond the targets) lost rows: {result.lost}, duplicated rows: {result.duplicated}"]
        print("\nBeyond the targets (the broker killed while it holds a queue for a stopped banc.py):")
    for v in verdicts:
        print("  " + v)
    common.save_json(args.name, {"machine": info, "faults": args.faults, "broker_conf": broker_conf,
                                 "result": result, "verdicts": verdicts})
    return 0 if not in_scope or (result.lost == 0 and result.duplicated == 0) else 2


def result_kinds(result: FaultRunResult) -> list[str]:
    """The kinds of fault a run injected."""
    return sorted({event.kind for event in result.events})


if __name__ == "__main__":
    sys.exit(main())
