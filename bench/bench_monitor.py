"""Benchmark of the web monitor (docs/moniteur.md): many benches, many open pages, one run.

    PYTHONPATH=$PWD python bench/bench_monitor.py [--pis 4] [--benches-per-pi 16] [--clients 20] [--seconds 30]

`--pis` publishers stand for Pis bridged into the lab's broker (topics `piK/bancN/...`), each sending a
BMS line per bench per second; `--clients` pages hold the live feed (server-sent events) of a real
`monitor.py`. Figures: the time from a line's publication to its arrival on a page (p50, p99, max),
against a bare paho subscriber to the same broker in the same run (the broker's own share), and the
monitor's CPU (percent of one core) and memory (RSS, peak). One line each on stdout, and
bench/out/bench_monitor.json.
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from banclfp.testkit.banc_helpers import bms_line
from banclfp.testkit.support import MosquittoBroker
from banclfp.testkit.web import PASSWORD, USER, MonitorProcess
from bench.common import base_parser, percentile, sample, save_json


def login(port: int) -> str:
    """The session cookie of one login (every page of the run shares it, as tabs of one browser do)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = f"user={USER}&password={PASSWORD.replace(' ', '+')}"
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    cookie = response.getheader("Set-Cookie") or ""
    conn.close()
    if response.status != 303 or not cookie:
        raise SystemExit(f"login refused: {response.status}")
    return cookie.split(";", 1)[0]


class Page(threading.Thread):
    """One open page: reads the event stream and notes when each (bench, seq) arrived."""

    def __init__(self, port: int, cookie: str, arrivals: dict[tuple[str, int], float], lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.port, self.cookie, self.arrivals, self.lock = port, cookie, arrivals, lock
        self.events = 0
        self.seen: set[tuple[str, int]] = set()
        self.ready = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/evenements", headers={"Cookie": self.cookie})
        response = conn.getresponse()
        self.ready.set()
        while True:
            line = response.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                now = time.monotonic()
                view = json.loads(line[6:])
                self.events += 1
                if view.get("seq") is not None and view.get("site"):
                    key = (view["key"], int(view["seq"]))
                    if key in self.seen:  # the same line again (the periodic refresh of every bench)
                        continue
                    self.seen.add(key)
                    with self.lock:
                        self.arrivals.setdefault(key, now)  # the first page to get it
                        self.arrivals[(f"last:{view['key']}", int(view["seq"]))] = now  # the last one so far


def main() -> int:
    """Run the benchmark; 0."""
    parser = base_parser(__doc__ or "")
    parser.add_argument("--pis", type=int, default=4)
    parser.add_argument("--benches-per-pi", type=int, default=16)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    benches = [(f"pi{p}", n) for p in range(1, args.pis + 1) for n in range(1, args.benches_per_pi + 1)]

    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp, MosquittoBroker(Path(tmp) / "broker") as broker:
        home = Path(tmp) / "home"
        home.mkdir()
        monitor = MonitorProcess(home, broker)
        monitor.add_user()
        monitor.start()
        try:
            return run(args, seconds, benches, broker, monitor)
        finally:
            monitor.stop()


def run(args: Any, seconds: float, benches: list[tuple[str, int]], broker: MosquittoBroker,
        monitor: MonitorProcess) -> int:
    """Publish, receive, measure."""
    sent: dict[tuple[str, int], float] = {}
    bare: dict[tuple[str, int], float] = {}
    page_arrivals: dict[tuple[str, int], float] = {}
    lock = threading.Lock()

    def on_bare(_client: Any, _userdata: Any, message: Any) -> None:
        site, banc, _rest = message.topic.split("/", 2)
        seq = int(message.payload.split(b",", 1)[0])
        bare.setdefault((f"{site}.{banc}", seq), time.monotonic())

    subscriber = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench_bare")
    subscriber.on_message = on_bare
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("+/+/bms/data", qos=0)
    subscriber.loop_start()

    cookie = login(monitor.port)
    pages = [Page(monitor.port, cookie, page_arrivals, lock) for _ in range(args.clients)]
    for page in pages:
        page.start()
        page.ready.wait(10)
    publishers = []
    for p in range(1, args.pis + 1):
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench_pi{p}")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        publishers.append(client)
    time.sleep(1.0)

    pid = monitor.proc.pid if monitor.proc else 0
    first = sample(pid)
    rss_peak = first.rss_kb
    started = time.monotonic()
    seq = 0
    while time.monotonic() - started < seconds:
        tick = started + seq
        for index, (site, number) in enumerate(benches):
            # Each bench at 1 Hz, the benches spread over the second as real ESPs are.
            time.sleep(max(0.0, tick + index / len(benches) - time.monotonic()))
            client = publishers[int(site[2:]) - 1]
            key = (f"{site}.banc{number}", seq)
            sent[key] = time.monotonic()
            client.publish(f"{site}/banc{number}/bms/data", f"{bms_line(seq)},{100000 + 1000 * seq},2", qos=0)
        rss_peak = max(rss_peak, sample(pid).rss_kb)
        seq += 1
    time.sleep(2.0)
    last = sample(pid)
    for client in [*publishers, subscriber]:
        client.loop_stop()
        client.disconnect()

    to_page = [page_arrivals[k] - t for k, t in sent.items() if k in page_arrivals]
    to_last_page = [page_arrivals[(f"last:{k[0]}", k[1])] - t for k, t in sent.items()
                    if (f"last:{k[0]}", k[1]) in page_arrivals]
    to_bare = [bare[k] - t for k, t in sent.items() if k in bare]
    cpu_pct = 100.0 * (last.cpu_s - first.cpu_s) / (last.t_s - first.t_s)
    result = {
        "benches": len(benches), "pis": args.pis, "clients": args.clients, "seconds": seconds, "lines_sent": len(sent),
        "lines_on_pages": len(to_page), "events_per_page": [page.events for page in pages],
        "page_p50_ms": 1000 * percentile(to_page, 50), "page_p99_ms": 1000 * percentile(to_page, 99),
        "page_max_ms": 1000 * max(to_page, default=float("nan")),
        "last_page_p50_ms": 1000 * percentile(to_last_page, 50),
        "last_page_p99_ms": 1000 * percentile(to_last_page, 99),
        "bare_p50_ms": 1000 * percentile(to_bare, 50), "bare_p99_ms": 1000 * percentile(to_bare, 99),
        "monitor_cpu_pct": cpu_pct, "monitor_rss_mb": last.rss_kb / 1024, "monitor_rss_peak_mb": rss_peak / 1024,
    }
    print(f"{len(benches)} benches at 1 Hz from {args.pis} Pis, {args.clients} pages, {seconds:.0f} s: "
          f"{len(sent)} lines, {len(to_page)} reached a page")
    print(f"publish -> first page: p50 {result['page_p50_ms']:.1f} ms, p99 {result['page_p99_ms']:.1f} ms, "
          f"max {result['page_max_ms']:.1f} ms")
    print(f"publish -> last of the {args.clients} pages: p50 {result['last_page_p50_ms']:.1f} ms, "
          f"p99 {result['last_page_p99_ms']:.1f} ms")
    print(f"publish -> bare paho subscriber: p50 {result['bare_p50_ms']:.1f} ms, p99 {result['bare_p99_ms']:.1f} ms")
    print(f"monitor: CPU {cpu_pct:.1f} % of one core, RSS {result['monitor_rss_mb']:.0f} MB "
          f"(peak {result['monitor_rss_peak_mb']:.0f} MB)")
    save_json("bench_monitor", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
