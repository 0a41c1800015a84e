"""Baseline: the smallest paho-mqtt 2.x subscriber that only counts (the Python limit).

Same session as banc.py (persistent, QoS 1 subscription to bancN/bms/data, or to --topic,
built by protocol.make_client), but on_message does nothing except count and note the time of the
first and last message. It exits after --count messages or --idle-s seconds of silence and
prints {"count", "first_t", "last_t"} as JSON. With --setup it only creates the session
(connect, subscribe, disconnect), so that the broker queues a backlog for it.

    python bench/count_sub.py --banc 1 --count 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from banclfp.infra import environment
from banclfp.wire import protocol


def main(argv: Optional[list[str]] = None) -> int:
    """Count QoS 1 BMS messages of one bench; print the count and the first/last receipt times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banc", type=int, default=1)
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages")
    parser.add_argument("--idle-s", type=float, default=30.0, help="exit after this long without a message")
    parser.add_argument("--topic", help="subscribe to this bench topic instead of bancN/bms/data (e.g. banc1/step)")
    parser.add_argument("--client-id", default="bench_count_sub")
    parser.add_argument("--setup", action="store_true", help="only create the persistent session")
    parser.add_argument("--v5", action="store_true",
                        help="MQTT v5 with banc.py's connect options (4 KiB packets, Receive Maximum, session expiry)")
    args = parser.parse_args(argv)

    settings = environment.load_settings()
    topic = args.topic or protocol.topics(args.banc).bms_data
    state: dict[str, Any] = {"count": 0, "first_t": None, "last_t": None}  # printed as JSON at the end
    subscribed = threading.Event()
    client = protocol.make_client(args.client_id, settings, persistent=True, v5=args.v5)
    options = protocol.connect_options(persistent=True) if args.v5 else {}

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(topic, protocol.qos_for(topic))

    def on_subscribe(c: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()
        if args.setup:
            c.disconnect()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        if state["count"] == 0:
            state["first_t"] = now
        state["count"] += 1
        state["last_t"] = now
        if args.count and state["count"] >= args.count:
            c.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30, **options)

    def watchdog() -> None:
        while True:
            time.sleep(0.2)
            last = state["last_t"] or start_t
            if time.time() - last > args.idle_s:
                client.disconnect()
                return

    start_t = time.time()
    threading.Thread(target=watchdog, daemon=True).start()
    client.loop_forever()
    # What /proc says about this process at its end, for CPU/memory deltas measured by the caller.
    state["cpu_s"] = time.process_time()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            state[line.split(":")[0]] = int(line.split()[1])
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        state[key] = int(value)
    print(json.dumps(state), flush=True)
    return 0 if (args.setup and subscribed.is_set()) or not args.setup else 1


if __name__ == "__main__":
    sys.exit(main())
