"""The MQTT protocol between the ESP32 benches, banc.py and ui.py (docs/protocole.md).

This is the only module that knows topic names, QoS levels and payload formats.
Everything here is pure (no I/O) except `make_client`, which builds a paho client from
the account (settings) it is given.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

Payload = Union[bytes, bytearray, str]

# --------------------------------------------------------------------------- phases

PHASES: tuple[int, ...] = (1, 2, 3, 4, 5)
STEP_FINISHED = 5
STEP_STOP = 9
VALID_STEPS: frozenset[int] = frozenset((*PHASES, STEP_STOP))

PHASE_NAMES: dict[int, str] = {
    1: "Ri / diffusion",
    2: "Charge",
    3: "Décharge",
    4: "Recharge stockage",
    5: "Terminé",
    STEP_STOP: "Arrêt",
}

COMMAND_END = "end"
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
NURSE_COUNT = 6

MAX_PAYLOAD_BYTES = 512
MAX_SECURITY_CHARS = 200

# --------------------------------------------------------------------------- topics

# Topic kinds, the suffix after "bancX/".
KIND_STEP = "step"
KIND_BMS = "bms/data"
KIND_REPLAY = "bms/replay"  # BMS lines the ESP re-sends on a `replay FIRST LAST` command (docs/protocole.md §6)
KIND_SECURITY = "security"
KIND_RI = "ri/results"
KIND_COMMAND = "command"
KIND_ESP_STATUS = "esp/status"
KIND_BANC_STATUS = "banc/status"
KIND_NURSE = "nurse"  # bancX/nJ
# banc.py's own marker: published after (re)connecting and received back once the broker has
# delivered everything it had queued before it (the backlog) — see banc.py's announcement.
KIND_SYNC = "banc/sync"

QOS: dict[str, int] = {
    KIND_STEP: 1,
    KIND_BMS: 1,
    KIND_REPLAY: 1,
    KIND_SECURITY: 1,
    KIND_RI: 1,
    KIND_NURSE: 0,
    KIND_COMMAND: 1,
    KIND_ESP_STATUS: 1,
    KIND_BANC_STATUS: 1,
    KIND_SYNC: 1,
}
RETAINED: frozenset[str] = frozenset((KIND_ESP_STATUS, KIND_BANC_STATUS))
# Topics that carry news from the ESP: a message on them delivered with the retain flag was stored
# before the subscriber came (any client may have left it) and is never acted on (docs/protocole.md §5).
NEWS_KINDS: frozenset[str] = frozenset((KIND_STEP, KIND_BMS, KIND_REPLAY, KIND_RI))


def is_stale_retained(topic: str, retained: bool) -> bool:
    """Whether a message delivered with `retained` on `topic` is an old stored copy that must not be acted on."""
    if not retained:
        return False
    info = parse_topic(topic)
    return info is not None and info.kind in NEWS_KINDS

_TOPIC_RE = re.compile(r"^banc([1-9][0-9]*)/(step|bms/data|bms/replay|security|ri/results|command|esp/status|banc/status|banc/sync|n([1-6]))$")


def banc_id(banc: Union[int, str]) -> str:
    """Return the canonical lowercase bench id ("banc3") for 3, "3", "banc3" or "Banc3"."""
    if isinstance(banc, bool):
        raise ValueError(f"invalid bench: {banc!r}")
    if isinstance(banc, int):
        number = banc
    else:
        text = str(banc).strip().lower()
        if text.startswith("banc"):
            text = text[4:]
        if not text.isdigit() or text.startswith("0"):
            raise ValueError(f"invalid bench: {banc!r}")
        number = int(text)
    if number < 1:
        raise ValueError(f"invalid bench: {banc!r}")
    return f"banc{number}"


def banc_number(banc: Union[int, str]) -> int:
    """Bench number of "bancN" (any case) or N, as the operator reads it."""
    return int(banc_id(banc)[4:])


@dataclass(frozen=True)
class BancTopics:
    """All topic names of one bench."""

    banc: str

    @property
    def step(self) -> str:
        return f"{self.banc}/{KIND_STEP}"

    @property
    def bms_data(self) -> str:
        return f"{self.banc}/{KIND_BMS}"

    @property
    def bms_replay(self) -> str:
        return f"{self.banc}/{KIND_REPLAY}"

    @property
    def security(self) -> str:
        return f"{self.banc}/{KIND_SECURITY}"

    @property
    def ri_results(self) -> str:
        return f"{self.banc}/{KIND_RI}"

    @property
    def command(self) -> str:
        return f"{self.banc}/{KIND_COMMAND}"

    @property
    def esp_status(self) -> str:
        return f"{self.banc}/{KIND_ESP_STATUS}"

    @property
    def banc_status(self) -> str:
        return f"{self.banc}/{KIND_BANC_STATUS}"

    @property
    def sync(self) -> str:
        return f"{self.banc}/{KIND_SYNC}"

    def nurse(self, index: int) -> str:
        """Topic of nurse battery `index` (1..6)."""
        if not 1 <= index <= NURSE_COUNT:
            raise ValueError(f"nurse index out of range: {index}")
        return f"{self.banc}/n{index}"

    @property
    def nurses(self) -> tuple[str, ...]:
        return tuple(self.nurse(j) for j in range(1, NURSE_COUNT + 1))


def topics(banc: Union[int, str]) -> BancTopics:
    """Return the topics of bench `banc` (number or name)."""
    return BancTopics(banc_id(banc))


@dataclass(frozen=True)
class TopicInfo:
    """A parsed topic: bench number, kind (one of KIND_*) and nurse index for KIND_NURSE."""

    banc_number: int
    kind: str
    nurse_index: Optional[int] = None

    @property
    def banc(self) -> str:
        return f"banc{self.banc_number}"


def parse_topic(topic: str) -> Optional[TopicInfo]:
    """Parse a bench topic; None when it is not one of ours."""
    match = _TOPIC_RE.match(topic)
    if not match:
        return None
    number = int(match.group(1))
    if match.group(3):
        return TopicInfo(number, KIND_NURSE, int(match.group(3)))
    return TopicInfo(number, match.group(2))


def qos_for(topic: str) -> int:
    """QoS of a bench topic (docs/protocole.md §1)."""
    info = parse_topic(topic)
    if info is None:
        raise ValueError(f"not a bench topic: {topic!r}")
    return QOS[info.kind]


def retained_for(topic: str) -> bool:
    """Whether messages on this bench topic are retained (docs/protocole.md §1)."""
    info = parse_topic(topic)
    if info is None:
        raise ValueError(f"not a bench topic: {topic!r}")
    return info.kind in RETAINED


def banc_process_subscriptions(banc: Union[int, str]) -> list[tuple[str, int]]:
    """(topic, qos) pairs banc.py subscribes to (its own bancX/security too: every alert goes into the journal)."""
    t = topics(banc)
    return [(t.step, QOS[KIND_STEP]), (t.bms_data, QOS[KIND_BMS]), (t.bms_replay, QOS[KIND_REPLAY]),
            (t.ri_results, QOS[KIND_RI]), (t.security, QOS[KIND_SECURITY]), (t.sync, QOS[KIND_SYNC])]


# The kiosk's MQTT session (docs/protocole.md §5): one fixed id, kept by the broker while the kiosk or the broker
# restarts, so that the alarms published meanwhile (QoS 1) reach the operator.
KIOSK_CLIENT_ID = "ui_kiosk"
KIOSK_SESSION_EXPIRY_S = 24 * 3600
# What the kiosk only displays (BMS lines, Ri results) it takes at QoS 0: nothing of it is queued for the
# kiosk while it is away (a line queued for an hour and shown on arrival would look live).
KIOSK_DISPLAY_QOS = 0


def ui_subscriptions(num_bancs: int) -> list[tuple[str, int]]:
    """(topic, qos) pairs the kiosk subscribes to, for benches 1..num_bancs."""
    subs: list[tuple[str, int]] = []
    for n in range(1, num_bancs + 1):
        t = topics(n)
        subs += [
            (t.step, QOS[KIND_STEP]),
            (t.bms_data, KIOSK_DISPLAY_QOS),
            (t.security, QOS[KIND_SECURITY]),
            (t.ri_results, KIOSK_DISPLAY_QOS),
            (t.esp_status, QOS[KIND_ESP_STATUS]),
            (t.banc_status, QOS[KIND_BANC_STATUS]),
        ]
        subs += [(topic, QOS[KIND_NURSE]) for topic in t.nurses]
    return subs


def esp_subscriptions(banc: Union[int, str]) -> list[tuple[str, int]]:
    """(topic, qos) pairs an ESP32 (or the simulator) subscribes to."""
    t = topics(banc)
    return [(t.command, QOS[KIND_COMMAND])]


# --------------------------------------------------------------------------- codecs


class PayloadError(ValueError):
    """A payload that does not follow the contract; str(err) is the reason."""


def _ascii(payload: Payload) -> str:
    """The payload as ASCII text, exactly as sent (no strip): size and charset checked."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload too large ({len(raw)} bytes > {MAX_PAYLOAD_BYTES})")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PayloadError("payload is not ASCII text") from exc


def _text(payload: Payload) -> str:
    """Like _ascii, surrounding whitespace removed: only for formats that allow it (JSON, status)."""
    return _ascii(payload).strip()


# Contract v2 number forms. An integer field: digits, no sign, no leading zero ("0" itself is
# fine). A decimal field: an optional "-", digits without a leading zero, an optional "." with
# at least one digit after it. No "+", no exponent, no whitespace, no "nan"/"inf", no "_".
# Always used with re.fullmatch (a "$" anchor would let a trailing newline through). The
# settings (environment.load_settings) use the same forms.
PLAIN_INT_RE = re.compile(r"0|[1-9][0-9]*")
PLAIN_DECIMAL_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def _int_field(text: str, name: str) -> int:
    """A plain non-negative integer (docs/protocole.md §2); the caller checks the range."""
    if not PLAIN_INT_RE.fullmatch(text):
        raise PayloadError(f"{name}: not a plain integer: {text[:20]!r}")
    return int(text)


def _float_field(text: str, name: str) -> float:
    """A plain decimal number (docs/protocole.md §2), always finite."""
    if not PLAIN_DECIMAL_RE.fullmatch(text):
        raise PayloadError(f"{name}: not a plain decimal number: {text[:20]!r}")
    value = float(text)
    if not math.isfinite(value):  # a few hundred digits overflow to inf
        raise PayloadError(f"{name}: not a finite number: {text[:20]!r}")
    return value


@dataclass(frozen=True)
class BmsLine:
    """One BMS measurement (docs/protocole.md §2), in field order.

    `uptime_ms` is the ESP's clock (ms since its boot), the optional 11th wire field of
    the protocol (docs/protocole.md §2); firmware before it sends 10 fields and the line has None.
    `esp_step` is the optional 12th field (it needs the 11th): the phase the ESP was running
    when it measured the line, 0 (idle, waiting for a command), 1..5 or 9.
    """

    seq: int
    voltage_v: float
    current_a: float
    soc_pct: float
    temperature_c: float
    capacity_ah: float
    energy_wh: float
    cell_min_mv: float
    cell_max_mv: float
    balancing: int
    uptime_ms: Optional[int] = None
    esp_step: Optional[int] = None

    @property
    def cell_spread_mv(self) -> float:
        """Difference between the highest and the lowest cell, mV."""
        return self.cell_max_mv - self.cell_min_mv

    def as_row(self) -> list[Any]:
        """The BMS_FIELDS values in order, as they go into data.csv (uptime_ms is not a column)."""
        return [getattr(self, name) for name in BMS_FIELDS]


# The 10 fields every firmware sends, which are also data.csv's BMS columns (record.DATA_CSV_HEADER).
BMS_FIELDS: tuple[str, ...] = (
    "seq", "voltage_v", "current_a", "soc_pct", "temperature_c",
    "capacity_ah", "energy_wh", "cell_min_mv", "cell_max_mv", "balancing",
)
# Contract v2: the same, then the ESP's uptime as an optional 11th field.
BMS_FIELDS_V2: tuple[str, ...] = BMS_FIELDS + ("uptime_ms",)
# Contract v3: then the phase the ESP was in when it measured the line, an optional 12th field.
BMS_FIELDS_V3: tuple[str, ...] = BMS_FIELDS_V2 + ("esp_step",)
assert tuple(f.name for f in fields(BmsLine)) == BMS_FIELDS_V3

# The phases an ESP can report in field 12: 0 is idle (booted, waiting for a command).
ESP_STEP_IDLE = 0
ESP_STEPS: frozenset[int] = frozenset((ESP_STEP_IDLE, *VALID_STEPS))

_INTEGER_FIELDS = frozenset(("seq", "balancing", "uptime_ms", "esp_step"))

# Physically possible ranges: wider than a healthy 16S LFP pack on purpose, so that an
# abnormal but real reading (an over-temperature, a deep discharge) is recorded and
# alarmed on rather than thrown away. Only impossible values are rejected.
BMS_RANGES: dict[str, tuple[float, float]] = {
    "seq": (0, 2**32 - 1),
    "voltage_v": (0.0, 80.0),
    "current_a": (-500.0, 500.0),
    "soc_pct": (0.0, 100.0),
    "temperature_c": (-40.0, 150.0),
    "capacity_ah": (0.0, 10_000.0),
    "energy_wh": (0.0, 1_000_000.0),
    "cell_min_mv": (0.0, 5_000.0),
    "cell_max_mv": (0.0, 5_000.0),
    "balancing": (0, 1),
    "uptime_ms": (0, 2**63 - 1),
    "esp_step": (0, STEP_STOP),
}


_INT_GROUP = r"(0|[1-9][0-9]*)"
_DECIMAL_GROUP = r"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?)"
# The whole line in one match (the hot path of banc.py: one regex instead of ten).
_BMS_LINE_RE = re.compile(",".join([_INT_GROUP] + [_DECIMAL_GROUP] * 8 + [_INT_GROUP])
                          + f"(?:,{_INT_GROUP}(?:,([0-59]))?)?")
_RANGES_IN_ORDER = tuple(BMS_RANGES[name] for name in BMS_FIELDS_V3)


def parse_bms_line(payload: Payload) -> BmsLine:
    """Parse and validate a BMS line (10 fields, 11 with uptime_ms, 12 with esp_step); raise PayloadError with the reason.

    Contract v2: ASCII, comma separated, no whitespace anywhere, every number in its plain form.
    """
    text = _ascii(payload)
    match = _BMS_LINE_RE.fullmatch(text)
    if match is not None:
        groups = match.groups()
        values: list[Any] = [int(groups[0]), *map(float, groups[1:9]), int(groups[9]),
                             None if groups[10] is None else int(groups[10]),
                             None if groups[11] is None else int(groups[11])]
        if all(value is None or low <= value <= high for value, (low, high) in zip(values, _RANGES_IN_ORDER)) \
                and values[7] <= values[8]:
            return BmsLine(*values)
    return _parse_bms_line_checked(text)  # raises with the precise reason


def _parse_bms_line_checked(text: str) -> BmsLine:
    """Field by field, for the reason a line is refused."""
    parts = text.split(",")
    if len(parts) not in (len(BMS_FIELDS), len(BMS_FIELDS_V2), len(BMS_FIELDS_V3)):
        raise PayloadError(f"expected {len(BMS_FIELDS)}, {len(BMS_FIELDS_V2)} or {len(BMS_FIELDS_V3)} fields, "
                           f"got {len(parts)}")
    values: dict[str, Any] = {}
    for name, part in zip(BMS_FIELDS_V3, parts):
        if name in _INTEGER_FIELDS:
            values[name] = _int_field(part, name)
        else:
            values[name] = _float_field(part, name)
        low, high = BMS_RANGES[name]
        if not low <= values[name] <= high:
            raise PayloadError(f"{name} out of range: {values[name]} not in [{low}, {high}]")
    if values["cell_min_mv"] > values["cell_max_mv"]:
        raise PayloadError("cell_min_mv greater than cell_max_mv")
    if values.get("esp_step", ESP_STEP_IDLE) not in ESP_STEPS:
        raise PayloadError(f"esp_step not a phase: {values['esp_step']}")
    return BmsLine(**values)


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def encode_bms_line(line: BmsLine) -> str:
    """Encode a BmsLine as the ESP sends it: 10 fields, 11 when uptime_ms is set, 12 when esp_step is too."""
    fields_text = [
        str(int(line.seq)),
        _fmt(line.voltage_v, 3),
        _fmt(line.current_a, 3),
        _fmt(line.soc_pct, 1),
        _fmt(line.temperature_c, 1),
        _fmt(line.capacity_ah, 3),
        _fmt(line.energy_wh, 1),
        str(int(round(line.cell_min_mv))),
        str(int(round(line.cell_max_mv))),
        str(int(line.balancing)),
    ]
    if line.uptime_ms is not None:
        if isinstance(line.uptime_ms, bool) or not 0 <= line.uptime_ms <= BMS_RANGES["uptime_ms"][1]:
            raise ValueError(f"invalid uptime_ms: {line.uptime_ms!r}")
        fields_text.append(str(int(line.uptime_ms)))
    if line.esp_step is not None:
        if line.uptime_ms is None or isinstance(line.esp_step, bool) or line.esp_step not in ESP_STEPS:
            raise ValueError(f"invalid esp_step: {line.esp_step!r} (needs uptime_ms)")
        fields_text.append(str(int(line.esp_step)))
    return ",".join(fields_text)


STEP_PAYLOADS: dict[str, int] = {str(step): step for step in sorted(VALID_STEPS)}


def parse_step(payload: Payload) -> int:
    """Parse a step payload: exactly one of "1" "2" "3" "4" "5" "9" (no sign, zero, space or newline)."""
    text = _ascii(payload)
    step = STEP_PAYLOADS.get(text)
    if step is None:
        raise PayloadError(f"invalid step: {text[:20]!r}")
    return step


def encode_step(step: int) -> str:
    """Encode a step number."""
    if step not in VALID_STEPS:
        raise ValueError(f"invalid step: {step}")
    return str(step)


RI_KEYS: tuple[str, ...] = ("ri_discharge", "ri_charge", "diffusion_discharge", "diffusion_charge")
RI_MAX_OHM = 10.0  # a whole 16S pack above 10 ohm is a broken connection, not a battery


def parse_ri_results(payload: Payload) -> dict[str, float]:
    """Parse a Ri/diffusion JSON object; return the present keys (and temperature_c)."""
    text = _text(payload)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc.msg}") from exc
    except ValueError as exc:  # e.g. a number too long to convert
        raise PayloadError(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError("JSON is not an object")
    unknown = set(data) - set(RI_KEYS) - {"temperature_c"}
    if unknown:
        raise PayloadError(f"unknown keys: {', '.join(sorted(map(str, unknown)))[:80]}")
    result: dict[str, float] = {}
    for key in RI_KEYS:
        if key not in data:
            continue
        value = _json_number(data[key], key)
        if not 0 < value <= RI_MAX_OHM:
            raise PayloadError(f"{key} out of range: {value}")
        result[key] = value
    if not result:
        raise PayloadError("no Ri or diffusion value")
    if "temperature_c" in data:
        temp = _json_number(data["temperature_c"], "temperature_c")
        low, high = BMS_RANGES["temperature_c"]
        if not low <= temp <= high:
            raise PayloadError(f"temperature_c out of range: {temp}")
        result["temperature_c"] = float(temp)
    return result


def _json_number(value: Any, key: str) -> float:
    """A JSON number as a finite float; an integer too large for a float is refused, not an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"{key}: not a finite number")
    try:
        number = float(value)
    except OverflowError:
        raise PayloadError(f"{key}: not a finite number (too large)") from None
    if not math.isfinite(number):
        raise PayloadError(f"{key}: not a finite number")
    return number


def encode_ri_results(values: dict[str, float]) -> str:
    """Encode Ri/diffusion results as JSON."""
    return json.dumps({k: float(v) for k, v in values.items() if k in RI_KEYS or k == "temperature_c"})


def parse_nurse_soc(payload: Payload) -> int:
    """Parse a nurse battery SOC: a plain integer 0..100 (no sign, leading zero or whitespace)."""
    value = _int_field(_ascii(payload), "nurse soc")
    if not 0 <= value <= 100:
        raise PayloadError(f"nurse soc out of range: {value}")
    return value


COMMAND_REPLAY = "replay"
REPLAY_MAX_SEQ = int(BMS_RANGES["seq"][1])  # a replay names BMS seq numbers
COMMAND_PHASES: dict[str, int] = {str(phase): phase for phase in PHASES}
_REPLAY_RE = re.compile(r"replay (0|[1-9][0-9]*) (0|[1-9][0-9]*)")


@dataclass(frozen=True)
class ReplayCommand:
    """`replay FIRST LAST` (docs/protocole.md §3): the ESP re-sends its BMS lines FIRST..LAST (seq, inclusive)."""

    first: int
    last: int


Command = Union[int, str, ReplayCommand]


def _check_replay(first: int, last: int) -> None:
    for value in (first, last):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= REPLAY_MAX_SEQ:
            raise ValueError(f"invalid replay seq: {value!r}")
    if first > last:
        raise ValueError(f"replay first {first} > last {last}")


def parse_command(payload: Payload) -> Command:
    """Parse a command, exactly as banc.py sends it (no whitespace around it).

    "1".."5": start or resume at that phase (int); "end": stop for the day (str);
    "replay FIRST LAST": two plain integers 0..2**32-1 separated by one space, FIRST <= LAST
    (ReplayCommand).
    """
    text = _ascii(payload)
    if text == COMMAND_END:
        return COMMAND_END
    if text in COMMAND_PHASES:
        return COMMAND_PHASES[text]
    match = _REPLAY_RE.fullmatch(text)
    if match is None:
        raise PayloadError(f"invalid command: {text[:20]!r}")
    first, last = int(match.group(1)), int(match.group(2))
    try:
        _check_replay(first, last)
    except ValueError as exc:
        raise PayloadError(str(exc)[:80]) from None
    return ReplayCommand(first, last)


def encode_replay(first: int, last: int) -> str:
    """Encode `replay FIRST LAST`; ValueError unless 0 <= first <= last <= 2**32-1."""
    _check_replay(first, last)
    return f"{COMMAND_REPLAY} {first} {last}"


def encode_command(command: Command) -> str:
    """Encode a command (phase number, "end" or a ReplayCommand)."""
    if isinstance(command, ReplayCommand):
        return encode_replay(command.first, command.last)
    if command == COMMAND_END:
        return COMMAND_END
    if isinstance(command, bool) or not isinstance(command, int) or command not in PHASES:
        raise ValueError(f"invalid command: {command!r}")
    return str(command)


def parse_status(payload: Payload) -> str:
    """Parse an online/offline status."""
    text = _text(payload)
    if text not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise PayloadError(f"invalid status: {text[:20]!r}")
    return text


def parse_security(payload: Payload) -> str:
    """Decode a security alert: UTF-8 text, cut to MAX_SECURITY_CHARS."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    text = raw[: MAX_SECURITY_CHARS * 4].decode("utf-8", errors="replace").strip()
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text[:MAX_SECURITY_CHARS] or "(alerte vide)"


def encode_security(message: str) -> str:
    """Encode a security alert, cut to MAX_SECURITY_CHARS characters."""
    return " ".join(message.split())[:MAX_SECURITY_CHARS]


# --------------------------------------------------------------------------- client


# No client of the project ever holds a larger message: the broker refuses larger packets
# (max_packet_size) and the MQTT v5 clients announce this maximum so it never sends them one.
MAX_PACKET_BYTES = 4096
# MQTT v5 flow control: at most this many QoS 1 messages unacknowledged at once. banc.py
# holds its acknowledgements while the disk refuses writes, so the broker then keeps the rest.
RECEIVE_MAXIMUM = 100
# How long the broker keeps a persistent session (and its queued messages) while the client
# is away: a test stopped by a crash on Friday evening is resumed on Monday.
SESSION_EXPIRY_S = 14 * 24 * 3600
# The broker's TLS port (docs/installation.md): the ESP32s, and a simulator on a PC, reach the Pi
# there; clear text stays on 127.0.0.1 (MQTT's usual 1883).
MQTT_TLS_PORT = 8883


class BrokerAccount(typing.Protocol):
    """What a client needs to log in: environment.Settings is one (passed in, never looked up here)."""

    @property
    def mqtt_username(self) -> Optional[str]: ...

    @property
    def mqtt_password(self) -> Optional[str]: ...

    @property
    def mqtt_cafile(self) -> Optional[Path]: ...


def make_client(client_id: str, account: BrokerAccount, *, persistent: bool = False,
                will: Optional[tuple[str, str]] = None, v5: bool = False) -> Any:
    """Build a paho-mqtt 2.x client (MQTT 3.1.1, or v5 with `v5`) logging in with `account`'s credentials.

    `persistent` asks the broker to keep the session (subscriptions and queued QoS 1
    messages) while the client is away; `will` is a (topic, payload) last will, sent
    with that topic's QoS and retain flag. A v5 client is connected with `connect_options`.
    With `account.mqtt_cafile`, the client speaks TLS and accepts only a broker whose
    certificate that CA signed for the address it dials (the password never travels in clear).
    """
    import paho.mqtt.client as mqtt  # local import: the pure codecs above need no paho

    username, password = account.mqtt_username, account.mqtt_password
    if v5:
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
    if username:
        client.username_pw_set(username, password)
    if account.mqtt_cafile is not None:
        # paho's defaults: certificate required, hostname (here the IP address) checked.
        client.tls_set(ca_certs=str(account.mqtt_cafile))
    if will is not None:
        will_topic, will_payload = will
        client.will_set(will_topic, will_payload, qos=qos_for(will_topic), retain=retained_for(will_topic))
    # Reconnect forever with a capped backoff; loop_forever/loop_start handle it.
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    # Keep many QoS 1 messages in flight so a backlog drains quickly after a restart.
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    return client


def connect_options(*, persistent: bool, session_expiry_s: int = SESSION_EXPIRY_S) -> dict[str, Any]:
    """Keyword arguments of connect()/connect_async() for a v5 client: packet size, flow control, session.

    A `persistent` session is kept `session_expiry_s` by the broker while the client is away.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)
    properties.MaximumPacketSize = MAX_PACKET_BYTES
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        properties.SessionExpiryInterval = session_expiry_s
    return {"clean_start": not persistent, "properties": properties}


def publish(client: Any, topic: str, payload: str) -> Any:
    """Publish with the topic's contract QoS and retain flag."""
    return client.publish(topic, payload, qos=qos_for(topic), retain=retained_for(topic))


def subscribe_all(client: Any, subscriptions: Iterable[tuple[str, int]]) -> Any:
    """Subscribe to a list of (topic, qos) pairs in one SUBSCRIBE."""
    subs = list(subscriptions)
    if subs:
        return client.subscribe(subs)
    return None
