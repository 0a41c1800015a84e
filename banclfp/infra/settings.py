"""The contract's settings (the BANC_* environment variables): their ranges, their parsing, one frozen object.

Pure: `parse_settings` takes the environment as a mapping. environment.load_settings() reads the
process's environment, once, in each entry point; the MQTT client, banc.py and the kiosk
are given the Settings object rather than reading anything themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from banclfp.wire import protocol

NUM_BANCS = 4
"""Default number of benches; `BANC_NUM_BANCS` overrides it. Nothing else needs editing."""
BMS_TIMEOUT_S = 30.0
"""Default silence (s) after which a bench's BMS is lost; `BANC_BMS_TIMEOUT_S` overrides it."""
FSYNC_INTERVAL_S = 1.0
"""Default interval (s) between fsyncs of data.csv; `BANC_FSYNC_INTERVAL_S` overrides it."""

@dataclass(frozen=True)
class Settings:
    """Process configuration from the contract's environment variables."""

    home: Path
    mqtt_host: str
    mqtt_port: int
    mqtt_username: Optional[str]
    mqtt_password: Optional[str]
    num_bancs: int
    bms_timeout_s: float
    scan_timeout_s: float
    notify_socket: Optional[str] = None  # systemd's NOTIFY_SOCKET, set when run as a Type=notify unit
    # How often banc.py fsyncs data.csv: the most a power cut can cost (a kill costs nothing).
    fsync_interval_s: float = FSYNC_INTERVAL_S
    # The CA certificate that signed the broker's (BANC_MQTT_CAFILE): set, the client speaks TLS.
    mqtt_cafile: Optional[Path] = None


class SettingsError(ValueError):
    """An environment variable holds an unusable value; str(err) is one line naming it."""


# Contract v2: "a setting that is not a finite number inside its range stops the program at
# start (exit 2, one line on stderr naming the variable)". The accepted forms are the plain
# ones of the MQTT contract: an integer setting is digits without sign or leading zero; a
# float setting is a plain decimal (optional "-", digits, optional "." and digits). So
# "1e3", "0x10", "+5", "nan", "inf", "1_000", "30s" are refused rather than guessed at.
# Surrounding whitespace is ignored (an env file line "X= 30 "), and an unset or blank
# variable means the default.

# name: (default, integer?, low, high), bounds included.
SETTING_RANGES: dict[str, tuple[float, bool, float, float]] = {
    "BANC_MQTT_PORT": (1883, True, 1, 65535),
    "BANC_NUM_BANCS": (NUM_BANCS, True, 1, 64),
    "BANC_BMS_TIMEOUT_S": (BMS_TIMEOUT_S, False, 1.0, 3600.0),
    "BANC_SCAN_TIMEOUT_S": (15.0, False, 1.0, 3600.0),
    "BANC_FSYNC_INTERVAL_S": (FSYNC_INTERVAL_S, False, 0.0, 300.0),
}


def _env_number(env: Mapping[str, str], name: str) -> Any:
    """The numeric setting `name` from `env`, its default when unset or blank; SettingsError otherwise."""
    default, integer, low, high = SETTING_RANGES[name]
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    shown = repr(raw[:40] + ("..." if len(raw) > 40 else ""))  # repr: one line whatever the value holds
    if integer:
        if not protocol.PLAIN_INT_RE.fullmatch(text):
            raise SettingsError(f"{name}={shown} is not a plain integer (expected {int(low)}..{int(high)})")
        value: Any = int(text)
    else:
        if not protocol.PLAIN_DECIMAL_RE.fullmatch(text):
            raise SettingsError(f"{name}={shown} is not a plain decimal number (expected {low:g}..{high:g})")
        value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        bounds = f"{int(low)}..{int(high)}" if integer else f"{low:g}..{high:g}"
        raise SettingsError(f"{name}={shown} is out of range (expected {bounds})")
    return value


def parse_settings(env: Mapping[str, str], default_home: Path) -> Settings:
    """The settings an environment gives (BANC_HOME defaults to `default_home`).

    Raises SettingsError (one line, naming the variable) for a numeric setting that is not a
    plain finite number inside its SETTING_RANGES range. Nothing is written anywhere.
    """
    home = Path(env.get("BANC_HOME") or default_home).expanduser().resolve()
    cafile_text = (env.get("BANC_MQTT_CAFILE") or "").strip()
    cafile = Path(cafile_text).expanduser().resolve() if cafile_text else None
    port_unset = (env.get("BANC_MQTT_PORT") or "").strip() == ""
    return Settings(
        home=home,
        mqtt_host=env.get("BANC_MQTT_HOST") or "localhost",
        # With a CA file and no port, the broker's TLS port (as mosquitto_sub --cafile does).
        mqtt_port=protocol.MQTT_TLS_PORT if cafile and port_unset else _env_number(env, "BANC_MQTT_PORT"),
        mqtt_username=env.get("BANC_MQTT_USERNAME") or None,
        mqtt_password=env.get("BANC_MQTT_PASSWORD") or None,
        num_bancs=_env_number(env, "BANC_NUM_BANCS"),
        bms_timeout_s=_env_number(env, "BANC_BMS_TIMEOUT_S"),
        scan_timeout_s=_env_number(env, "BANC_SCAN_TIMEOUT_S"),
        notify_socket=env.get("NOTIFY_SOCKET") or None,
        fsync_interval_s=_env_number(env, "BANC_FSYNC_INTERVAL_S"),
        mqtt_cafile=cafile,
    )
