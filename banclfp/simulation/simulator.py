#!/usr/bin/env python3
"""Simulated ESP32 benches: a physical 16S LFP model behind the real MQTT protocol.

    python simulator.py [--bancs 1,2] [--speed 100] [--capacity-ah 100] [--ri-ohm 0.02] [--firmware v3|v2|v1]
                        [--fault bms-silence|garbage|disconnect|over-temperature|reboot|drop|seq-bitflip
                                 |uptime-garbled|reboot-loop|ri-absurd|retained-step]

Each bench is its own MQTT client (client id `esp32_sim_bancN`, birth `online` / last
will `offline` retained on bancN/esp/status), exactly like one ESP32 per bench. The
physics and the firmware's test sequence live in `battery_model.py` (pure, unit tested);
this file only moves messages and paces the simulated clock: physics steps of `--dt`
simulated seconds, one BMS line per simulated second, `--speed` simulated seconds per
real second. Each line carries the ESP's `uptime_ms` on the simulated clock, so an
accelerated test has its real durations, and `esp_step`, the phase the firmware was in when
it measured the line (protocol v3: 12 fields; `--firmware v2` sends 11 fields, `v1` 10
fields and answers no replay); the firmware keeps its last 3600 lines and re-sends them on
bancN/bms/replay when banc.py asks (`replay FIRST LAST`). The `drop` fault loses one line in
DROP_EVERY on the way, for the replay to fill.

Faults (`--fault`, FAULT_HELP): the single-line ones (`seq-bitflip`, `uptime-garbled`) and
the absurd Ri results (`ri-absurd`) are made by BenchFirmware; `reboot-loop` and
`retained-step` live here, in the shell: a real firmware sends no BMS line between a reboot
and the next command, and never publishes a retained message on bancN/step.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import queue
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from banclfp.infra import environment, logs
from banclfp.simulation.battery_model import (
    CONTRACTS,
    LINE_GLITCHES,
    BenchFirmware,
    Event,
    PackParams,
    RiMeasured,
    SecurityAlert,
    SequenceParams,
    StepChanged,
)
from banclfp.wire import protocol

logger = logging.getLogger("simulator")

FAULTS: tuple[str, ...] = ("bms-silence", "garbage", "disconnect", "over-temperature", "reboot", "drop",
                           *LINE_GLITCHES, "reboot-loop", "ri-absurd", "retained-step")
# What each fault does, for --help (French, like the other options).
FAULT_HELP: dict[str, str] = {
    "bms-silence": "plus aucune ligne BMS envoyée pendant --fault-duration (le seq continue, le trou se voit)",
    "garbage": "pendant --fault-duration : une ligne BMS illisible toutes les 3, un résultat Ri illisible tous les 10",
    "disconnect": "lien MQTT coupé sans DISCONNECT pendant --fault-duration (dernière volonté ; état sûr après "
                  "--safe-timeout-s)",
    "over-temperature": "la batterie chauffe de 0,1 K/s jusqu'à la coupure de sécurité à 55 °C",
    "reboot": "l'ESP redémarre : seq et uptime_ms repartent de 0, alerte et 9, attente d'une commande",
    "drop": "pendant --fault-duration, une ligne sur 7 perdue en route (le renvoi la comble)",
    "seq-bitflip": "une seule ligne dont le seq a le bit 20 inversé (seq ^ 2**20), puis des lignes normales ; "
                   "l'anneau garde la vraie ligne, un renvoi de son seq la redonne",
    "uptime-garbled": "une seule ligne dont uptime_ms a le bit 40 inversé (environ 35 ans d'avance), puis des "
                      "lignes normales ; l'anneau garde la vraie (pas avec --firmware v1)",
    "reboot-loop": "l'ESP redémarre --fault-count fois de suite ; chaque démarrage (alerte et 9 comme un "
                   "redémarrage) envoie une seule ligne BMS (seq 0, champ 12 = 9) ; le dernier reste en attente "
                   "d'une commande (fait par le simulateur : un vrai firmware n'envoie pas de ligne à l'arrêt)",
    "ri-absurd": "trois résultats Ri aussitôt : 1e-9 ohm, 10 ohm, et un nombre trop grand pour un float "
                 "({\"ri_discharge\": 1 suivi de 400 zéros})",
    "retained-step": "avant le test, à la première connexion : un « 5 » publié une fois RETENU sur bancN/step "
                     "(aucun ESP ne le fait ; il reste sur le broker ; lancer banc.py après pour qu'il le reçoive "
                     "marqué retenu ; fait par le simulateur, pas par le firmware)",
}
assert set(FAULT_HELP) == set(FAULTS)
REBOOT_LOOP_COUNT = 3  # reboots of the reboot-loop fault unless --fault-count says otherwise
RETAINED_STEP = protocol.STEP_FINISHED  # the step of the retained-step fault: applied, it would close the test
FIRMWARES: dict[str, int] = {f"v{n}": n for n in CONTRACTS}  # --firmware: the contract version emulated
DROP_EVERY = 7  # the drop fault loses every 7th BMS line while it lasts
KEEPALIVE_S = 15
MIN_OFFLINE_REAL_S = 0.5  # a dropped link stays down at least this long, so the broker and observers see it
REBOOT_S = 5.0  # simulated boot time of the ESP32 after a reset
OUTBOX_SIZE = 100  # steps/alerts/results kept while the broker is unreachable
OVERHEAT_RATE_K_PER_S = 0.1  # heating of the over-temperature fault (blocked fan + hot spot)
NURSE_REPUBLISH_S = 60  # nurse SOCs (QoS 0, not retained) are re-sent this often for a kiosk that just started

# Payloads a broken ESP or a noisy link could produce; none of them parses (docs/protocole.md §2).
GARBAGE_BMS_PAYLOADS: tuple[bytes, ...] = (
    b"1,2,3",  # wrong field count
    b"hello world",
    b"12,nan,1.0,50.0,25.0,0.0,0.0,3300,3310,0",  # NaN
    b"12,inf,1.0,50.0,25.0,0.0,0.0,3300,3310,0",
    b"12,999.000,1.0,50.0,25.0,0.0,0.0,3300,3310,0",  # voltage out of range
    b"12,52.000,1.0,150.0,25.0,0.0,0.0,3300,3310,0",  # soc out of range
    b"12,52.000,1.0,50.0,25.0,0.0,0.0,3400,3300,0",  # cell min > cell max
    b"12,52,000,1.0,50.0,25.0,0.0,0.0,3300,3310,0",  # decimal comma
    b"x,52.000,1.0,50.0,25.0,0.0,0.0,3300,3310,0",  # seq not a number
    b"12,52.000,1.0,50.0,25.0,0.0,0.0,3300,3310,2",  # balancing not 0/1
    b"\xff\xfe\x00\x01binary",  # not ASCII
    b"9" * 600,  # longer than 512 bytes
    b"",
)
GARBAGE_RI_PAYLOADS: tuple[bytes, ...] = (
    b"not json",
    b'{"ri_discharge": -0.02}',
    b'{"ri_charge": "0.02"}',
    b'{"ri_discharge": 1e400}',
    b"[0.02, 0.03]",
    b'{"resistance": 0.02}',
)


@dataclass(frozen=True)
class FaultPlan:
    """One fault, injected once per selected bench, `at_s` simulated seconds after its test started."""

    mode: str
    at_s: float
    duration_s: float
    bancs: frozenset[int]
    count: int = REBOOT_LOOP_COUNT  # reboot-loop: reboots in a row, each boot sending one line


class SimulatedEsp:
    """One bench's ESP32: a BenchFirmware and its own MQTT connection (owned by the main thread)."""

    def __init__(
        self,
        number: int,
        firmware: BenchFirmware,
        settings: environment.Settings,
        inbox: queue.Queue[tuple[SimulatedEsp, str, Any]],
        speed: float,
        substeps: int,
        fault: Optional[FaultPlan] = None,
    ) -> None:
        self.number = number
        self.topics = protocol.topics(number)
        self.firmware = firmware
        self.settings = settings  # the broker to reach and how to log in
        self.host, self.port = settings.mqtt_host, settings.mqtt_port
        self.inbox = inbox
        self.speed = speed
        self.substeps = substeps
        self.dt_s = 1.0 / substeps
        self.fault = fault
        self.client: Any = None
        self.link_up = False  # as last reported by the network thread, handled in the main thread
        self.outbox: collections.deque[tuple[str, str]] = collections.deque(maxlen=OUTBOX_SIZE)
        self.reconnect_at: Optional[float] = None  # monotonic time of a scheduled reconnect
        self.test_started_s: Optional[float] = None
        self.fault_state = "pending"  # pending -> active -> done
        self.fault_started_s = 0.0
        self.garbage_index = 0
        self.boots_left = 0  # reboot-loop: boots still to send their one line
        self.nurse_published: list[Optional[int]] = [None] * protocol.NURSE_COUNT
        self.lines_published = 0
        self.seconds = 0  # simulated seconds ticked

    @property
    def name(self) -> str:
        return self.topics.banc

    # ----------------------------------------------------------------- connection (network thread side)

    def connect(self) -> None:
        """Create a fresh MQTT client and connect in the background (retries until the broker answers)."""
        client = protocol.make_client(f"esp32_sim_{self.name}", self.settings,
                                      will=(self.topics.esp_status, protocol.STATUS_OFFLINE))

        def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            try:
                if reason_code.is_failure:
                    logger.warning("%s: broker refused the connection: %s", self.name, reason_code)
                    return
                protocol.subscribe_all(c, protocol.esp_subscriptions(self.name))
                protocol.publish(c, self.topics.esp_status, protocol.STATUS_ONLINE)
                self.inbox.put((self, "link", (c, True)))
            except Exception:  # a callback must never raise into paho's thread
                logger.exception("%s: on_connect failed", self.name)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            self.inbox.put((self, "link", (c, False)))

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            self.inbox.put((self, "command", (c, bytes(message.payload))))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        self.client = client
        client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def drop_connection(self) -> None:
        """Lose the link abruptly (no DISCONNECT packet): the broker publishes our last will."""
        client, self.client = self.client, None
        if client is None:
            return
        client.loop_stop()
        sock = client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._set_link(False)

    def close(self) -> None:
        """Clean shutdown of the simulator: say offline, then disconnect."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.is_connected():
                info = protocol.publish(client, self.topics.esp_status, protocol.STATUS_OFFLINE)
                info.wait_for_publish(timeout=2.0)
            client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            logger.warning("%s: unclean disconnect: %s", self.name, exc)
        client.loop_stop()

    # ----------------------------------------------------------------- main thread

    def handle(self, kind: str, payload: Any) -> None:
        """An item from the network thread: link change or command."""
        client, data = payload
        if client is not self.client:
            return  # from a client we already dropped
        if kind == "link":
            self._set_link(bool(data))
        elif kind == "command":
            self._on_command(data)

    def _set_link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        self.firmware.set_connected(up)
        if up:
            logger.info("%s: connected to %s:%s", self.name, self.host, self.port)
            if self.fault is not None and self.fault.mode == "retained-step" and self.fault_state == "pending":
                # Not the firmware: a retained step left on the broker before the test (one publish).
                self.fault_state = "done"
                logger.warning("%s: injecting fault retained-step: %s retained on %s",
                               self.name, RETAINED_STEP, self.topics.step)
                self._send_raw(self.topics.step, protocol.encode_step(RETAINED_STEP).encode(), retain=True)
            self.nurse_published = [None] * protocol.NURSE_COUNT
            self._publish_events(self.firmware.take_pending())
            while self.outbox and self.link_up:
                topic, text = self.outbox.popleft()
                self._send(topic, text)
            self._publish_nurses()
        else:
            logger.warning("%s: broker connection lost", self.name)

    def _on_command(self, raw: bytes) -> None:
        try:
            command = protocol.parse_command(raw)
        except protocol.PayloadError as exc:
            logger.warning("%s: ignored command %r: %s", self.name, raw[:40], exc)
            return
        if isinstance(command, protocol.ReplayCommand):
            lines = self.firmware.replay(command.first, command.last)
            sent = sum(self._send(self.topics.bms_replay, protocol.encode_bms_line(line)) for line in lines)
            logger.info("%s: replay %d..%d: %d lines re-sent", self.name, command.first, command.last, sent)
            return
        logger.info("%s: command %s (state %s, phase %s)", self.name, command, self.firmware.state, self.firmware.phase)
        if command != protocol.COMMAND_END and self.test_started_s is None:
            self.test_started_s = self.firmware.clock_s
        self._publish_events(self.firmware.handle_command(command))

    def _send(self, topic: str, text: str) -> bool:
        """Publish now if the link is up; False when it is not (a real ESP cannot either)."""
        client = self.client
        if client is None or not self.link_up or not client.is_connected():
            return False
        result = protocol.publish(client, topic, text)
        return result.rc == 0

    def _publish_events(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, StepChanged):
                topic, text = self.topics.step, protocol.encode_step(event.step)
                logger.info("%s: step %s", self.name, event.step)
            elif isinstance(event, RiMeasured):
                topic, text = self.topics.ri_results, event.payload()
                logger.info("%s: Ri results %s", self.name, text)
            elif isinstance(event, SecurityAlert):
                topic, text = self.topics.security, protocol.encode_security(event.message)
                logger.warning("%s: security: %s", self.name, event.message)
            else:
                continue
            if not self._send(topic, text):
                self.outbox.append((topic, text))  # kept for the reconnection

    def _publish_nurses(self) -> None:
        """Nurse SOCs when they change, and all of them every NURSE_REPUBLISH_S simulated seconds."""
        if self.seconds % NURSE_REPUBLISH_S == 0:
            self.nurse_published = [None] * protocol.NURSE_COUNT
        for j, soc in enumerate(self.firmware.nurses.soc_pct(), start=1):
            soc = min(max(soc, 0), 100)
            if soc != self.nurse_published[j - 1] and self._send(self.topics.nurse(j), str(soc)):
                self.nurse_published[j - 1] = soc

    def tick_second(self, now_real: float) -> None:
        """One simulated second: physics substeps, faults, then one BMS line."""
        self.seconds += 1
        if self.reconnect_at is not None and now_real >= self.reconnect_at:
            self.reconnect_at = None
            logger.info("%s: reconnecting", self.name)
            self.connect()
        events: list[Event] = []
        for _ in range(self.substeps):
            events += self.firmware.advance(self.dt_s)
        self._publish_events(events)
        silent = self._run_fault(now_real)
        if (self.firmware.engaged or self.link_up) and self.firmware.line_due():
            # A running phase measures every second, sent or lost (seq counts them); a stopped or
            # finished ESP sends its line every 10 s only to say so, not while it cannot.
            line = self.firmware.measure()
            if not silent and self._send(self.topics.bms_data, protocol.encode_bms_line(line)):
                self.lines_published += 1
                if self._fault_active("garbage"):
                    self._send_garbage()
        self._publish_nurses()

    # ----------------------------------------------------------------- faults

    def _fault_active(self, mode: str) -> bool:
        return self.fault is not None and self.fault.mode == mode and self.fault_state == "active"

    def _run_fault(self, now_real: float) -> bool:
        """Start/stop the configured fault; True when this second's BMS line must not be sent."""
        fault = self.fault
        if fault is None or self.test_started_s is None or self.fault_state == "done":
            return False
        clock = self.firmware.clock_s
        if self.fault_state == "pending":
            if clock - self.test_started_s < fault.at_s:
                return False
            self.fault_state = "active"
            self.fault_started_s = clock
            logger.warning("%s: injecting fault %s at t=%.0f s", self.name, fault.mode, clock - self.test_started_s)
            if fault.mode == "disconnect":
                self.drop_connection()
                self.reconnect_at = now_real + max(fault.duration_s / self.speed, MIN_OFFLINE_REAL_S)
            elif fault.mode == "reboot":
                self._reset(now_real)
                self.fault_state = "done"
            elif fault.mode == "reboot-loop":
                self.boots_left = fault.count
                self._reset(now_real)
            elif fault.mode in LINE_GLITCHES:
                self.firmware.garble_next_line(fault.mode)  # this second's line
                self.fault_state = "done"
            elif fault.mode == "ri-absurd":
                self._publish_events(self.firmware.absurd_ri_results())
                self.fault_state = "done"
            elif fault.mode == "over-temperature":
                assert self.firmware.pack.params.heat_capacity_j_per_k is not None  # filled by __post_init__
                heat_capacity = float(self.firmware.pack.params.heat_capacity_j_per_k)
                self.firmware.extra_heat_w = heat_capacity * OVERHEAT_RATE_K_PER_S
        elif self.fault_state == "active":
            if fault.mode == "over-temperature":
                if not self.firmware.engaged:  # the protection tripped: the hot spot is gone with the current
                    self.firmware.extra_heat_w = 0.0
                    self.fault_state = "done"
            elif fault.mode == "disconnect":
                if self.reconnect_at is None:
                    self.fault_state = "done"
            elif fault.mode == "reboot-loop":
                self._reboot_loop_turn(now_real)
            elif clock - self.fault_started_s >= fault.duration_s:
                self.fault_state = "done"
                logger.warning("%s: fault %s over", self.name, fault.mode)
                return False
        if self._fault_active("drop"):
            return self.firmware.seq % DROP_EVERY == DROP_EVERY - 1
        return self._fault_active("bms-silence")

    def _reset(self, now_real: float) -> None:
        """The ESP resets: the link drops without DISCONNECT, the firmware reboots, it reconnects later."""
        self.drop_connection()
        self.firmware.reboot()
        self.reconnect_at = now_real + max(REBOOT_S / self.speed, MIN_OFFLINE_REAL_S)

    def _reboot_loop_turn(self, now_real: float) -> None:
        """reboot-loop: once a boot is back online (its alert and 9 sent), its one line, then the next reset."""
        if self.reconnect_at is not None or not self.link_up:
            return
        line = self.firmware.measure()  # seq 0, esp_step 9: the firmware is stopped after the reboot
        if self._send(self.topics.bms_data, protocol.encode_bms_line(line)):
            self.lines_published += 1
        self.boots_left -= 1
        if self.boots_left > 0:
            self._reset(now_real)
        else:
            self.fault_state = "done"
            logger.warning("%s: fault reboot-loop over", self.name)

    def _send_garbage(self) -> None:
        """During the garbage fault: a malformed BMS payload every 3rd line, a bad Ri result every 10th."""
        k = self.lines_published
        if k % 3 == 0:
            payload = GARBAGE_BMS_PAYLOADS[self.garbage_index % len(GARBAGE_BMS_PAYLOADS)]
            self.garbage_index += 1
            self._send_raw(self.topics.bms_data, payload)
        if k % 10 == 0:
            self._send_raw(self.topics.ri_results, GARBAGE_RI_PAYLOADS[(k // 10) % len(GARBAGE_RI_PAYLOADS)])

    def _send_raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        client = self.client
        if client is not None and client.is_connected():
            client.publish(topic, payload, qos=protocol.qos_for(topic), retain=retain)


class Simulator:
    """All simulated benches on one simulated clock, paced against the real one."""

    def __init__(self, benches: list[SimulatedEsp], inbox: queue.Queue[tuple[SimulatedEsp, str, Any]],
                 speed: float) -> None:
        self.benches = benches
        self.inbox = inbox
        self.speed = speed
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Run until stop_event is set: simulated second k happens at real time t0 + k / speed."""
        for bench in self.benches:
            bench.connect()
        start = time.monotonic()
        second = 0
        lag_warned = False
        while not self.stop_event.is_set():
            due = start + (second + 1) / self.speed
            self._drain(due)
            if self.stop_event.is_set():
                break
            second += 1
            now = time.monotonic()
            for bench in self.benches:
                bench.tick_second(now)
            if not lag_warned and now - due > 10.0:
                lag_warned = True
                logger.warning("the simulation runs %.0f s behind real time: the machine is too slow for --speed %g",
                               now - due, self.speed)

    def _drain(self, due: float) -> None:
        """Handle network events until the real time `due` (at least the ones already waiting)."""
        while True:
            remaining = due - time.monotonic()
            try:
                if remaining > 0 and not self.stop_event.is_set():
                    bench, kind, payload = self.inbox.get(timeout=min(remaining, 0.2))
                else:
                    bench, kind, payload = self.inbox.get_nowait()
            except queue.Empty:
                if time.monotonic() >= due or self.stop_event.is_set():
                    return
                continue
            try:
                bench.handle(kind, payload)
            except Exception:  # one bad event must not stop every bench
                logger.exception("%s: error while handling %s", bench.name, kind)

    def close(self) -> None:
        """Disconnect every bench cleanly."""
        for bench in self.benches:
            bench.close()


# =========================================================================== command line


def _bench_list(text: str, num_bancs: int) -> list[int]:
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        number = protocol.banc_number(part)  # accepts "2", "banc2", "Banc2"
        if number > num_bancs:
            raise ValueError(f"no bench {number} (this installation has {num_bancs})")
        if number not in numbers:
            numbers.append(number)
    if not numbers:
        raise ValueError("empty bench list")
    return numbers


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text}")
        return value

    return parse


def build_parser(settings: environment.Settings) -> argparse.ArgumentParser:
    """Command-line options (defaults from the settings)."""
    width = max(map(len, FAULTS)) + 4
    faults = "\n".join(
        textwrap.fill(FAULT_HELP[name], 100, initial_indent=f"  {name:<{width - 2}}", subsequent_indent=" " * width)
        for name in FAULTS
    )
    parser = argparse.ArgumentParser(
        prog="simulator.py",
        description="ESP32 simulés : un modèle physique de batterie LFP 16S par banc, sur le protocole MQTT réel.",
        epilog="pannes (--fault ; une fois par banc touché, --fault-at secondes simulées après le début du test) :\n"
               + faults,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bancs", default=None, help="bancs simulés, ex. 1,2 (défaut : tous)")
    parser.add_argument("--speed", type=_positive(float), default=1.0,
                        help="secondes simulées par seconde réelle (défaut 1 ; 1000 = un test complet en ~20 s)")
    parser.add_argument("--capacity-ah", type=_positive(float), default=100.0, help="capacité nominale (Ah)")
    parser.add_argument("--ri-ohm", type=_positive(float), default=None,
                        help="résistance ohmique du pack à 25 °C (défaut 2.0/capacité)")
    parser.add_argument("--diffusion-ohm", type=_positive(float), default=None,
                        help="résistance de diffusion (RC) du pack à 25 °C (défaut 0.4 x Ri)")
    parser.add_argument("--seed", type=int, default=1, help="graine : même graine, même simulation")
    parser.add_argument("--host", default=settings.mqtt_host, help=f"broker MQTT (défaut {settings.mqtt_host})")
    parser.add_argument("--port", type=int, default=settings.mqtt_port, help=f"port MQTT (défaut {settings.mqtt_port})")
    parser.add_argument("--ambient-c", type=float, default=25.0, help="température ambiante (°C)")
    parser.add_argument("--initial-soc-pct", type=float, default=30.0, help="SOC des batteries à l'arrivée (%%)")
    parser.add_argument("--imbalance-pct", type=float, default=0.3, help="écart-type du SOC initial des cellules")
    parser.add_argument("--weak-cell", nargs="?", const="all", default=None, metavar="BANCS",
                        help="une cellule faible (80 %% de capacité, 2x la résistance) ; seule : tous les bancs")
    parser.add_argument("--charge-current-a", type=_positive(float), default=None, help="courant de charge (défaut 0.5 C)")
    parser.add_argument("--discharge-current-a", type=_positive(float), default=None,
                        help="courant de décharge (défaut 0.5 C)")
    parser.add_argument("--storage-soc-pct", type=float, default=50.0, help="SOC de stockage de la phase 4 (%%)")
    parser.add_argument("--dt", type=_positive(float), default=0.5,
                        help="pas d'intégration simulé (s), un diviseur de 1 (défaut 0.5)")
    parser.add_argument("--safe-timeout-s", type=_positive(float), default=30.0,
                        help="broker perdu depuis ce temps simulé : courant coupé (défaut 30)")
    parser.add_argument("--firmware", choices=tuple(FIRMWARES), default=f"v{CONTRACTS[-1]}",
                        help="version du contrat imitée : v3 (défaut) 12 champs, avec la phase de l'ESP ; "
                             "v2 11 champs, avec uptime_ms et le renvoi ; v1 10 champs, sans renvoi")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="panne à injecter (liste ci-dessous)")
    parser.add_argument("--fault-at", type=float, default=60.0,
                        help="secondes simulées après le début du test avant la panne (défaut 60)")
    parser.add_argument("--fault-duration", type=_positive(float), default=60.0,
                        help="durée simulée de la panne (bms-silence, garbage, disconnect, drop ; défaut 60)")
    parser.add_argument("--fault-count", type=_positive(int), default=REBOOT_LOOP_COUNT,
                        help=f"reboot-loop : redémarrages de suite (défaut {REBOOT_LOOP_COUNT})")
    parser.add_argument("--fault-bancs", default=None, help="bancs touchés par la panne (défaut : tous)")
    return parser


def make_firmware(number: int, args: argparse.Namespace, weak: bool, connected: bool = False) -> BenchFirmware:
    """The firmware and battery of bench `number` from the command-line options."""
    pack = PackParams(
        capacity_ah=args.capacity_ah,
        ri_ohm=args.ri_ohm,
        diffusion_ohm=args.diffusion_ohm,
        ambient_c=args.ambient_c,
        initial_soc_pct=args.initial_soc_pct,
        imbalance_pct=args.imbalance_pct,
        weak_cell=weak,
        seed=args.seed * 100 + number,
    )
    sequence = SequenceParams(
        charge_current_a=args.charge_current_a,
        discharge_current_a=args.discharge_current_a,
        storage_soc_pct=args.storage_soc_pct,
        safe_timeout_s=args.safe_timeout_s,
    )
    return BenchFirmware(pack, sequence, connected=connected, contract=FIRMWARES[args.firmware])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: run the simulated benches until SIGINT/SIGTERM."""
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        print(f"simulator.py: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        numbers = _bench_list(args.bancs, settings.num_bancs) if args.bancs else list(range(1, settings.num_bancs + 1))
        weak = (
            set(numbers) if args.weak_cell == "all"
            else set(_bench_list(args.weak_cell, settings.num_bancs)) if args.weak_cell else set()
        )
        fault_bancs = set(_bench_list(args.fault_bancs, settings.num_bancs)) if args.fault_bancs else set(numbers)
        if not 0 <= args.storage_soc_pct <= 100 or not 0 <= args.initial_soc_pct <= 100:
            raise ValueError("SOC values must be within 0..100")
        substeps = round(1.0 / args.dt)
        if substeps < 1 or abs(substeps * args.dt - 1.0) > 1e-9:
            raise ValueError("--dt must divide one second (1, 0.5, 0.25, 0.2, 0.1...)")
        firmwares = {n: make_firmware(n, args, n in weak) for n in numbers}
        if args.fault == "uptime-garbled" and args.firmware == "v1":
            raise ValueError("--fault uptime-garbled needs uptime_ms: not with --firmware v1")
    except ValueError as exc:
        parser.error(str(exc))
    logs.setup_logging("simulator", settings.home)
    broker = dataclasses.replace(settings, mqtt_host=args.host, mqtt_port=args.port)
    fault = (FaultPlan(args.fault, args.fault_at, args.fault_duration, frozenset(fault_bancs), args.fault_count)
             if args.fault else None)
    inbox: queue.Queue[tuple[SimulatedEsp, str, Any]] = queue.Queue()
    benches = [
        SimulatedEsp(n, firmwares[n], broker, inbox, args.speed, substeps,
                     fault if fault and n in fault.bancs else None)
        for n in numbers
    ]
    simulator = Simulator(benches, inbox, args.speed)

    def request_stop(signum: int, frame: Any) -> None:
        simulator.stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    ri_ohm = benches[0].firmware.pack_params.ri_ohm
    assert ri_ohm is not None  # filled by PackParams.__post_init__
    logger.info(
        "simulating %s at x%g (firmware %s, capacity %.1f Ah, Ri %.4f ohm, seed %d%s) on %s:%s",
        ", ".join(b.name for b in benches), args.speed, args.firmware, args.capacity_ah,
        float(ri_ohm), args.seed,
        f", fault {fault.mode} at {fault.at_s:g} s" if fault else "", args.host, args.port,
    )
    try:
        simulator.run()
    finally:
        simulator.close()
        logger.info("simulator stopped")
    return 0

