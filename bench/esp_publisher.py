"""ESP32-like BMS publisher for the benchmarks: BMS lines with seq, QoS 1, persistent session.

Each bench gets its own paho-mqtt 2.x client (client id `<prefix>_bancN`, clean_session=False,
birth/last-will on bancN/esp/status), built by protocol.make_client like every project client.
Lines are encoded with protocol.encode_bms_line, seq +1 per message from --start-seq.
A message the broker has not acknowledged (PUBACK) is kept by paho and sent again after a
reconnect, as the ESP firmware does, so a broker restart loses nothing on this side.

Every published seq is logged as "P seq epoch_s" and every broker-acknowledged seq as
"A seq epoch_s" in <log-dir>/pub_bancN.txt, so a run can be checked against data.csv afterwards. The broker
address comes from the environment (environment.load_settings), like any project process.

    python bench/esp_publisher.py --bancs 1-16 --rate 10 --duration 60 --log-dir OUT
    python bench/esp_publisher.py --bancs 1 --rate 0 --count 20000 --log-dir OUT   # as fast as acked

With --replay the ESP behaves like firmware of docs/protocole.md §6: its lines carry uptime_ms (the
11th field), it keeps its last REPLAY_LINES lines and answers `replay FIRST LAST` on
bancN/command by re-publishing them unchanged on bancN/bms/replay ("R seq epoch_s" in the log).
With --esp-step P as well, it is firmware of protocol v3: each line carries P as its 12th field
(esp_step, the phase the ESP measured it in; the lines are a phase-3 discharge, so 3 fits them).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from banclfp.infra import environment
from banclfp.wire import protocol


def parse_bancs(text: str) -> list[int]:
    """"1-4,7" -> [1, 2, 3, 4, 7]."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            numbers += range(int(low), int(high) + 1)
        elif part:
            numbers.append(int(part))
    return numbers


REPLAY_LINES = 3600  # what the firmware keeps in RAM (one hour at 1 Hz)


def bms_payload(seq: int, banc_number: int, uptime_ms: Optional[int] = None, esp_step: Optional[int] = None) -> str:
    """A plausible BMS line (phase 3 discharge), as the ESP sends it (esp_step needs uptime_ms)."""
    t = seq * 0.1
    soc = max(0.0, 95.0 - (seq % 9000) * 0.01)
    line = protocol.BmsLine(
        seq=seq,
        voltage_v=50.0 + 2.0 * math.sin(t / 50.0) + 0.01 * banc_number,
        current_a=-12.4 + 0.05 * math.sin(t),
        soc_pct=round(soc, 1),
        temperature_c=24.0 + 0.5 * math.sin(t / 300.0),
        capacity_ah=(seq % 100000) * 0.0003,
        energy_wh=(seq % 100000) * 0.0155,
        cell_min_mv=3250 + (seq % 7),
        cell_max_mv=3270 + (seq % 5),
        balancing=1 if seq % 50 == 0 else 0,
        uptime_ms=uptime_ms,
        esp_step=esp_step,
    )
    return protocol.encode_bms_line(line)


class EspBench:
    """One simulated ESP: a paho client, its seq counter and its publish/ack log."""

    def __init__(self, number: int, prefix: str, log_dir: Path, start_seq: int, window: int,
                 settings: environment.Settings, replay: bool = False, esp_step: Optional[int] = None) -> None:
        self.number = number
        self.replay = replay
        self.esp_step = esp_step  # the 12th field of every line (protocol v3), with replay only
        self.booted_at = time.monotonic()
        self.history: collections.deque[tuple[int, str]] = collections.deque(maxlen=REPLAY_LINES)
        self.replayed = 0
        self.topics = protocol.topics(number)
        self.seq = start_seq
        self.window = window
        self.lock = threading.Lock()
        self.acked_cond = threading.Condition(self.lock)
        self.mid_to_seq: dict[int, int] = {}
        self.early_acks: set[int] = set()
        self.published = 0
        self.acked = 0
        self.connects = 0
        self.first_pub_t: Optional[float] = None
        self.last_ack_t: Optional[float] = None
        self.log = open(log_dir / f"pub_banc{number}.txt", "a", buffering=1 << 16)
        self.client = protocol.make_client(
            f"{prefix}_banc{number}", settings, persistent=True,
            will=(self.topics.esp_status, protocol.STATUS_OFFLINE),
        )
        # An ESP retries its Wi-Fi/MQTT connection every few seconds, not with a 30 s backoff.
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        try:
            if not reason.is_failure:
                self.connects += 1
                protocol.publish(client, self.topics.esp_status, protocol.STATUS_ONLINE)
                if self.replay:
                    protocol.subscribe_all(client, protocol.esp_subscriptions(self.number))
        except Exception as exc:  # a callback never raises
            print(f"banc{self.number}: on_connect: {exc}", file=sys.stderr)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """`replay FIRST LAST`: re-send the lines still held, unchanged, on bancN/bms/replay."""
        try:
            command = protocol.parse_command(message.payload)
            if not isinstance(command, protocol.ReplayCommand):
                return
            with self.lock:
                lines = [(seq, text) for seq, text in self.history if command.first <= seq <= command.last]
            for _seq, text in lines:
                protocol.publish(client, self.topics.bms_replay, text)
            with self.lock:
                self.replayed += len(lines)
                now = time.time()
                for seq, _ in lines:
                    self.log.write(f"R {seq} {now:.3f}\n")
        except Exception as exc:  # a callback never raises
            print(f"banc{self.number}: on_message: {exc}", file=sys.stderr)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self.lock:
            seq = self.mid_to_seq.pop(mid, None)
            if seq is None:
                self.early_acks.add(mid)  # PUBACK processed before publish() returned
                return
            self._acked(seq)

    def _acked(self, seq: int) -> None:
        self.acked += 1
        self.last_ack_t = time.time()
        self.log.write(f"A {seq} {self.last_ack_t:.3f}\n")
        self.acked_cond.notify_all()

    def publish_next(self) -> None:
        """Publish the next BMS line (waits while `window` messages are unacknowledged)."""
        seq = self.seq
        self.seq += 1
        uptime_ms = round((time.monotonic() - self.booted_at) * 1000) if self.replay else None
        payload = bms_payload(seq, self.number, uptime_ms, self.esp_step if self.replay else None)
        if self.replay:
            with self.lock:
                self.history.append((seq, payload))
        if self.window:
            with self.acked_cond:
                while self.published - self.acked >= self.window:
                    self.acked_cond.wait(1.0)
        info = protocol.publish(self.client, self.topics.bms_data, payload)
        with self.lock:
            now = time.time()
            if self.first_pub_t is None:
                self.first_pub_t = now
            self.published += 1
            self.log.write(f"P {seq} {now:.3f}\n")
            if info.mid in self.early_acks:
                self.early_acks.discard(info.mid)
                self._acked(seq)
            else:
                self.mid_to_seq[info.mid] = seq

    def publish_step(self, step: int) -> None:
        """Publish a phase change on bancN/step (QoS 1)."""
        protocol.publish(self.client, self.topics.step, protocol.encode_step(step))

    def outstanding(self) -> int:
        with self.lock:
            return self.published - self.acked

    def flush(self) -> None:
        with self.lock:
            self.log.flush()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            span = (self.last_ack_t or 0) - (self.first_pub_t or 0)
            return {
                "banc": self.number,
                "published": self.published,
                "acked": self.acked,
                "connects": self.connects,
                "replayed": self.replayed,
                "first_pub_t": self.first_pub_t,
                "last_ack_t": self.last_ack_t,
                "acked_rate_per_s": (self.acked / span) if span > 0 else None,
            }


def main(argv: Optional[list[str]] = None) -> int:
    """Publish BMS lines for some benches, paced or as fast as the broker acknowledges them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bancs", default="1", help="benches, e.g. 1-16 or 1,3")
    parser.add_argument("--rate", type=float, default=10.0, help="messages/s per bench; 0 = as fast as acknowledged")
    parser.add_argument("--count", type=int, default=0, help="messages per bench (0 = until --duration)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to publish (0 = until --count)")
    parser.add_argument("--start-seq", type=int, default=0)
    parser.add_argument("--window", type=int, default=1000, help="max unacknowledged messages per bench")
    parser.add_argument("--step", type=int, default=0, help="publish this phase on bancN/step before the data")
    parser.add_argument("--prefix", default="bench_esp")
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--wait-ack-s", type=float, default=120.0, help="time allowed for the last PUBACKs")
    parser.add_argument("--stop-file", type=Path, help="stop publishing when this file exists")
    parser.add_argument("--replay", action="store_true",
                        help="send uptime_ms, keep the last lines and answer `replay FIRST LAST` (docs/protocole.md §6)")
    parser.add_argument("--esp-step", type=int, choices=sorted(protocol.ESP_STEPS), default=None,
                        help="with --replay, send this phase as the 12th field esp_step (protocol v3)")
    parser.add_argument("--linger-s", type=float, default=0.0,
                        help="with --replay, go on answering replays this long after the last PUBACK (a real ESP stays)")
    args = parser.parse_args(argv)
    if not args.count and not args.duration:
        parser.error("give --count or --duration")
    if args.esp_step is not None and not args.replay:
        parser.error("--esp-step needs --replay (the 12th field comes after uptime_ms)")

    settings = environment.load_settings()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    benches = [EspBench(n, args.prefix, args.log_dir, args.start_seq, args.window, settings, args.replay,
                        args.esp_step)
               for n in parse_bancs(args.bancs)]
    for bench in benches:
        bench.client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=15)
        bench.client.loop_start()
    deadline = time.monotonic() + 20
    while any(b.connects == 0 for b in benches) and time.monotonic() < deadline:
        time.sleep(0.02)
    if args.step:
        for bench in benches:
            bench.publish_step(args.step)

    t0 = time.monotonic()
    stop_at = t0 + args.duration if args.duration else math.inf

    def done(sent: int) -> bool:
        if args.count and sent >= args.count:
            return True
        if time.monotonic() >= stop_at:
            return True
        return bool(args.stop_file and args.stop_file.exists())

    sent = 0
    last_flush = time.monotonic()
    if args.rate <= 0:
        # As fast as the broker takes them: a window of unacknowledged messages per bench.
        while not done(sent):
            for bench in benches:
                bench.publish_next()
            sent += 1
            if time.monotonic() - last_flush > 0.5:
                for bench in benches:
                    bench.flush()
                last_flush = time.monotonic()
    else:
        period_s = 1.0 / args.rate
        # Spread the benches over the period, as independent ESPs would be.
        offsets = [i * period_s / len(benches) for i in range(len(benches))]
        tick = 0
        while not done(sent):
            base = t0 + tick * period_s
            for bench, offset in zip(benches, offsets):
                delay = base + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                bench.publish_next()
            sent += 1
            tick += 1
            if time.monotonic() - last_flush > 0.5:
                for bench in benches:
                    bench.flush()
                last_flush = time.monotonic()
    publish_end = time.monotonic()

    deadline = time.monotonic() + args.wait_ack_s
    while any(b.outstanding() for b in benches) and time.monotonic() < deadline:
        time.sleep(0.05)
    if args.replay and args.linger_s > 0:
        time.sleep(args.linger_s)  # the network threads answer the replays asked meanwhile
    for bench in benches:
        bench.flush()
        bench.client.disconnect()
        bench.client.loop_stop()
        bench.log.close()
    result = {
        "publish_s": publish_end - t0,
        "benches": [b.summary() for b in benches],
        "all_acked": all(b.outstanding() == 0 for b in benches),
    }
    print(json.dumps(result), flush=True)
    return 0 if result["all_acked"] else 1


if __name__ == "__main__":
    sys.exit(main())
