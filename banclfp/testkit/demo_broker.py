"""The demo's broker (scripts/demo.sh): a private Mosquitto of its own, unless told otherwise.

The demo's simulated ESP32s publish on bancN/...: on a machine whose broker serves real
benches (an installed Pi listens on 127.0.0.1:1883) they would mix with the real data, and
the demo's retained messages would stay there. So the demo always starts a private
Mosquitto on a free loopback port, with its configuration and persistence under the demo's
BANC_HOME. The only way to use another broker is to name it: BANC_DEMO_BROKER=HOST[:PORT].
BANC_MQTT_HOST/BANC_MQTT_PORT do not count as asking: they are the production settings
(deploy/banc.env), and a shell that sourced that file to run report.py would carry them
into the demo without anyone meaning it.

    python -m testkit.demo_broker          # prints "private 127.0.0.1 PORT" or "explicit HOST PORT"
    python -m testkit.demo_broker probe    # exit 0 when the configured broker accepts our connection
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from banclfp.infra.settings import Settings
from banclfp.testkit.support import free_port

DEMO_BROKER_VAR = "BANC_DEMO_BROKER"
PRIVATE_HOST = "127.0.0.1"
MACHINE_PORT = 1883  # the machine's own broker (an installed Pi's): never the private one's
TLS_PORT = 8883
# Inherited settings the private broker does not use (a private broker speaks clear text, anonymously).
IGNORED_FOR_PRIVATE = ("BANC_MQTT_HOST", "BANC_MQTT_PORT", "BANC_MQTT_USERNAME", "BANC_MQTT_PASSWORD",
                       "BANC_MQTT_CAFILE")


@dataclass(frozen=True)
class DemoBroker:
    """Where the demo's clients connect; `private`: a Mosquitto the demo starts itself."""

    private: bool
    host: str
    port: int


def parse_broker(text: str, tls: bool = False) -> tuple[str, int]:
    """"HOST", "HOST:PORT" or "[IPv6]:PORT" -> (host, port); ValueError with a French reason."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{DEMO_BROKER_VAR}={text!r} : attendu HÔTE:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"{DEMO_BROKER_VAR}={text!r} : hôte manquant ou invalide (attendu HÔTE:PORT)")
    if port_text is None:
        return host, TLS_PORT if tls else MACHINE_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{DEMO_BROKER_VAR}={text!r} : port invalide (1 à 65535)")
    return host, int(port_text)


def choose_broker(env: Mapping[str, str], pick_port: Callable[[], int] = free_port) -> DemoBroker:
    """The demo's broker: BANC_DEMO_BROKER when set, else a private one on a free loopback port (never 1883)."""
    asked = (env.get(DEMO_BROKER_VAR) or "").strip()
    if asked:
        host, port = parse_broker(asked, tls=bool((env.get("BANC_MQTT_CAFILE") or "").strip()))
        return DemoBroker(False, host, port)
    for _ in range(10):
        port = pick_port()
        if port != MACHINE_PORT:
            return DemoBroker(True, PRIVATE_HOST, port)
    raise RuntimeError("aucun port libre pour le broker privé de la démo")


def ignored_settings(env: Mapping[str, str]) -> list[str]:
    """The inherited BANC_MQTT_* a private broker leaves aside (the demo says so)."""
    if (env.get(DEMO_BROKER_VAR) or "").strip():
        return []
    return [name for name in IGNORED_FOR_PRIVATE if (env.get(name) or "").strip()]


def private_conf(home: Path, port: int, as_root: bool = False) -> str:
    """The private Mosquitto's configuration: loopback only, its persistence under the demo's BANC_HOME."""
    lines = [
        f"listener {port} {PRIVATE_HOST}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {home / 'mosquitto'}/",
        "max_queued_messages 1000000",
        "max_packet_size 4096",  # as deploy/mosquitto.conf
    ]
    if as_root:
        lines.append("user root")  # else Mosquitto drops to a "mosquitto" user that cannot write in BANC_HOME
    return "\n".join(lines) + "\n"


def write_private_conf(home: Path, port: int) -> Path:
    """Write $BANC_HOME/mosquitto/mosquitto.conf for the private broker; its path."""
    folder = home / "mosquitto"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mosquitto.conf"
    path.write_text(private_conf(home, port, as_root=os.geteuid() == 0), encoding="utf-8")
    return path


def probe(settings: Settings, timeout_s: float = 3.0) -> bool:
    """True when the broker of `settings` (BANC_MQTT_*) accepts our connection."""
    from banclfp.wire import protocol

    accepted = threading.Event()
    client = protocol.make_client("banc_demo_probe", settings)
    client.on_connect = lambda _c, _u, _f, rc, _p: accepted.set() if not rc.is_failure else None
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, 5)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv: list[str]) -> int:
    if argv == ["probe"]:
        from banclfp.infra import environment

        return 0 if probe(environment.load_settings()) else 1
    if argv:
        print("usage: python -m testkit.demo_broker [probe]", file=sys.stderr)
        return 2
    try:
        choice = choose_broker(os.environ)
    except (ValueError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    ignored = ignored_settings(os.environ)
    if ignored:
        print(f"demo: {', '.join(ignored)} ignoré(s) : la démo a son propre broker. Pour en utiliser un autre : "
              f"{DEMO_BROKER_VAR}=HÔTE:PORT.", file=sys.stderr)
    if choice.private:
        home = Path(os.environ.get("BANC_HOME") or ".demo").resolve()
        write_private_conf(home, choice.port)
    print("private" if choice.private else "explicit", choice.host, choice.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
