"""The contract's settings (the BANC_* environment variables): their ranges, their parsing, one frozen object.

Pure: `parse_settings` takes the environment as a mapping. environment.load_settings() reads the
process's environment, once, in each entry point; the MQTT client, banc.py and the kiosk
are given the Settings object rather than reading anything themselves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from banclfp.wire import protocol

NUM_BANCS = 4
"""Default number of benches; `BANC_NUM_BANCS` overrides it. Nothing else needs editing."""
LABEL_SIZE_MM = (62.0, 29.0)
"""Default grade label (width, height) in mm (Brother DK-11209); `BANC_LABEL_SIZE_MM` overrides it."""
BMS_TIMEOUT_S = 30.0
"""Default silence (s) after which a bench's BMS is lost; `BANC_BMS_TIMEOUT_S` overrides it."""
FSYNC_INTERVAL_S = 1.0
"""Default interval (s) between fsyncs of data.csv; `BANC_FSYNC_INTERVAL_S` overrides it."""

WEB_HOST = "127.0.0.1"
"""Default address of the web monitor (`BANC_WEB_HOST`): the Pi itself, where clear HTTP is allowed."""
WEB_PORT = 8443
"""Default port of the web monitor (`BANC_WEB_PORT`)."""


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
    # The CUPS queue grade labels are printed on (BANC_LABEL_PRINTER); None: no label is printed.
    label_printer: Optional[str] = None
    label_size_mm: tuple[float, float] = LABEL_SIZE_MM  # BANC_LABEL_SIZE_MM, (width, height)
    # The lab database (BANC_LAB_DB, a libpq URI without password); None: this Pi stands alone.
    lab_db: Optional[str] = None
    lab_site: str = ""  # BANC_SITE: this Pi's name in the lab database (default: the host name)
    # The web monitor (monitor.py, docs/moniteur.md): where it listens, and its HTTPS certificate and key
    # (both set, or neither: clear HTTP, allowed on the loopback address only).
    web_host: str = WEB_HOST
    web_port: int = WEB_PORT
    web_cert: Optional[Path] = None
    web_key: Optional[Path] = None


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
    "BANC_WEB_PORT": (WEB_PORT, True, 1, 65535),
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


LABEL_SIZE_RANGE_MM = (15.0, 200.0)
"""Each side of BANC_LABEL_SIZE_MM, bounds included: from a small thermal label to a shipping label."""
LABEL_SIZE_RE = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?[xX](0|[1-9][0-9]*)(\.[0-9]+)?")
# A CUPS queue name as lpadmin makes them, never taken for an option of lp (no leading "-").
LABEL_PRINTER_RE = re.compile(r"[A-Za-z0-9_.@][A-Za-z0-9_.@-]{0,126}")


def _shown(raw: str) -> str:
    return repr(raw[:40] + ("..." if len(raw) > 40 else ""))  # repr: one line whatever the value holds


def _label_size_mm(env: Mapping[str, str]) -> tuple[float, float]:
    """BANC_LABEL_SIZE_MM as (width, height) in mm ("62x29", the default when unset or blank)."""
    raw = env.get("BANC_LABEL_SIZE_MM")
    if raw is None or raw.strip() == "":
        return LABEL_SIZE_MM
    low, high = LABEL_SIZE_RANGE_MM
    match = LABEL_SIZE_RE.fullmatch(raw.strip())
    if not match:
        raise SettingsError(f"BANC_LABEL_SIZE_MM={_shown(raw)} is not WIDTHxHEIGHT in mm (e.g. 62x29)")
    width, _, height = raw.strip().lower().partition("x")
    size = (float(width), float(height))
    if not all(low <= side <= high for side in size):
        raise SettingsError(f"BANC_LABEL_SIZE_MM={_shown(raw)} is out of range (each side {low:g}..{high:g} mm)")
    return size


def _label_printer(env: Mapping[str, str]) -> Optional[str]:
    """BANC_LABEL_PRINTER, a CUPS queue name; None when unset or blank (no label printed)."""
    raw = env.get("BANC_LABEL_PRINTER")
    if raw is None or raw.strip() == "":
        return None
    if not LABEL_PRINTER_RE.fullmatch(raw.strip()):
        raise SettingsError(f"BANC_LABEL_PRINTER={_shown(raw)} is not a CUPS queue name "
                            "(letters, digits, _ . @ -, not starting with -)")
    return raw.strip()


LAB_DB_SCHEMES = ("postgresql://", "postgres://")
SITE_RE = re.compile(r"[A-Za-z0-9-]{1,32}")
"""BANC_SITE: letters, digits and -, 1..32 characters (a host name's first label when unset)."""


def _lab_db(env: Mapping[str, str]) -> Optional[str]:
    """BANC_LAB_DB, a libpq URI; None when unset or blank. A password in it is refused (a password file holds it)."""
    raw = env.get("BANC_LAB_DB")
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.startswith(LAB_DB_SCHEMES):
        raise SettingsError("BANC_LAB_DB is not a postgresql:// URI")
    authority = text.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    # user:password@host, or password=... in the query: the password belongs in PGPASSFILE, never here
    # (the value is not repeated: it holds a password).
    if ":" in authority.rpartition("@")[0] or re.search(r"[?&]password=", text):
        raise SettingsError("BANC_LAB_DB holds a password: put it in the libpq password file (PGPASSFILE), not the URI")
    return text


def _lab_site(env: Mapping[str, str], hostname: str) -> str:
    """BANC_SITE, or the host name's first label; SettingsError when it is not 1..32 letters, digits or -."""
    raw = (env.get("BANC_SITE") or "").strip()
    site = raw or hostname.split(".")[0]
    if not SITE_RE.fullmatch(site):
        name = "BANC_SITE" if raw else "BANC_SITE (unset: the host name)"
        raise SettingsError(f"{name}={_shown(site)} is not a site name (letters, digits and -, 1..32 characters)")
    return site


WEB_HOST_RE = re.compile(r"[A-Za-z0-9.:-]{1,253}")
"""BANC_WEB_HOST: an address or a host name to listen on (no spaces, no scheme, no port)."""


def _web_host(env: Mapping[str, str]) -> str:
    """BANC_WEB_HOST, the address the monitor listens on (WEB_HOST when unset or blank)."""
    raw = env.get("BANC_WEB_HOST")
    if raw is None or raw.strip() == "":
        return WEB_HOST
    if not WEB_HOST_RE.fullmatch(raw.strip()):
        raise SettingsError(f"BANC_WEB_HOST={_shown(raw)} is not an address to listen on (e.g. 192.168.1.20)")
    return raw.strip()


def _web_tls(env: Mapping[str, str]) -> tuple[Optional[Path], Optional[Path]]:
    """BANC_WEB_CERT and BANC_WEB_KEY as paths: both set, or neither (a certificate is useless without its key)."""
    cert, key = ((env.get(name) or "").strip() for name in ("BANC_WEB_CERT", "BANC_WEB_KEY"))
    if bool(cert) != bool(key):
        missing = "BANC_WEB_KEY" if cert else "BANC_WEB_CERT"
        raise SettingsError(f"{missing} is unset while {'BANC_WEB_CERT' if cert else 'BANC_WEB_KEY'} is set "
                            "(HTTPS needs the certificate and its key)")
    if not cert:
        return None, None
    return Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()


def parse_settings(env: Mapping[str, str], default_home: Path, hostname: str = "") -> Settings:
    """The settings an environment gives (BANC_HOME defaults to `default_home`).

    Raises SettingsError (one line, naming the variable) for a numeric setting that is not a
    plain finite number inside its SETTING_RANGES range, and for a label printer or size it cannot use.
    Nothing is written anywhere.
    """
    home = Path(env.get("BANC_HOME") or default_home).expanduser().resolve()
    cafile_text = (env.get("BANC_MQTT_CAFILE") or "").strip()
    cafile = Path(cafile_text).expanduser().resolve() if cafile_text else None
    port_unset = (env.get("BANC_MQTT_PORT") or "").strip() == ""
    lab_db = _lab_db(env)
    web_cert, web_key = _web_tls(env)
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
        label_printer=_label_printer(env),
        label_size_mm=_label_size_mm(env),
        lab_db=lab_db,
        # The site only matters with a lab database: without one, a host name that is no site name stops nothing.
        lab_site=_lab_site(env, hostname) if lab_db or (env.get("BANC_SITE") or "").strip() else "",
        web_host=_web_host(env),
        web_port=_env_number(env, "BANC_WEB_PORT"),
        web_cert=web_cert,
        web_key=web_key,
    )
