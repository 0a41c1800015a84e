"""The process's environment: the settings, the static files found and cached, systemd.

Every environment variable is read here (`load_settings`, parsed by `settings.parse_settings`),
once, by an entry point, which hands the Settings (and the store built from them) down; the
lab's static files (charge profile, temperature coefficients, grading model) are found in
BANC_HOME first, then in the project folder (`StaticFiles`).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from banclfp.analysis import calibration
from banclfp.infra import settings as settings_module
from banclfp.verdict import grading

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent

CHARGE_PROFILE_FILE = "charge_profile.csv"
TEMP_COEFFS_FILE = "temperature_coefficients.json"

logger = logging.getLogger("banc.environment")

# =========================================================================== settings (defined in settings.py)

Settings = settings_module.Settings
SettingsError = settings_module.SettingsError
SETTING_RANGES = settings_module.SETTING_RANGES
NUM_BANCS = settings_module.NUM_BANCS


def load_settings(environ: Optional[dict[str, str]] = None) -> Settings:
    """Read the contract's environment variables (the only place that reads os.environ).

    SettingsError (one line, naming the variable) for a value settings.parse_settings refuses,
    or a BANC_MQTT_CAFILE that is not a readable PEM certificate.
    """
    settings = settings_module.parse_settings(os.environ if environ is None else environ, PROJECT_DIR,
                                              socket.gethostname())
    if settings.mqtt_cafile is not None:
        _check_cafile(settings.mqtt_cafile)
    return settings


def _check_cafile(path: Path) -> None:
    """SettingsError unless `path` loads as the MQTT client will load it (a PEM CA certificate)."""
    shown = repr(str(path)[:80] + ("..." if len(str(path)) > 80 else ""))
    if not path.is_file():
        raise SettingsError(f"BANC_MQTT_CAFILE={shown} is not a file (expected the broker's CA certificate, PEM)")
    try:
        # A bad file stops the program now, with its name, rather than as a traceback from
        # the network code.
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:80]
        raise SettingsError(f"BANC_MQTT_CAFILE={shown} is not a readable PEM certificate ({reason})") from None


# =========================================================================== static files

# The curves are defined and validated in calibration.py; here they are found and cached.
ConfigFileError = calibration.ConfigFileError
Curve = calibration.Curve


class StaticFiles:
    """The lab's static files of one BANC_HOME: found there first, else in the project folder.

    The two curves are read once, on first use (a process that never needs them never reads
    them); grading.json is read afresh each time (the lab may edit it between tests).
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._curves: dict[str, Curve] = {}

    def static_file(self, name: str) -> Path:
        """A static file: from BANC_HOME when present there, else from the project folder."""
        in_home = self.home / name
        return in_home if in_home.exists() else PROJECT_DIR / name

    def loaded(self) -> frozenset[str]:
        """The names of the curves read so far."""
        return frozenset(self._curves)

    def _curve(self, name: str, load: Callable[[Path], Curve]) -> Curve:
        curve = self._curves.get(name)
        if curve is None:
            # Two threads may both read the file once: the same curve, no lock needed.
            curve = self._curves[name] = load(self.static_file(name))
        return curve

    def charge_profile(self) -> Curve:
        """charge_profile.csv: pack voltage (V) -> remaining phase-2 time (s)."""
        return self._curve(CHARGE_PROFILE_FILE, calibration.load_charge_profile)

    def temp_coeffs(self) -> Curve:
        """temperature_coefficients.json: temperature (°C) -> multiplier to 25 °C."""
        return self._curve(TEMP_COEFFS_FILE, calibration.load_temp_coeffs)

    def get_charge_duration(self, voltage_v: float) -> float:
        """Estimated remaining phase-2 (charge) time in seconds at this pack voltage."""
        return self.charge_profile()(float(voltage_v))

    def get_temperature_coefficient(self, temperature_c: float) -> float:
        """Multiplier that brings a resistance measured at `temperature_c` to 25 °C."""
        return self.temp_coeffs()(float(temperature_c))

    def correct_to_25c(self, resistance_ohm: float, temperature_c: Optional[float]) -> float:
        """A resistance measured at `temperature_c` brought to 25 °C (unchanged when the temperature is unknown)."""
        if temperature_c is None:
            return resistance_ohm
        return resistance_ohm * self.get_temperature_coefficient(temperature_c)

    def load_grading_rules(self) -> grading.Rules:
        """grading.json (BANC_HOME first, else the project), read afresh.

        Raises grading.GradingError naming the file and what is wrong.
        """
        return grading.load_rules(self.static_file(grading.GRADING_FILE))


# =========================================================================== systemd


def sd_notify(state: str, address: Optional[str]) -> bool:
    """Send a systemd notification ("READY=1", "WATCHDOG=1"...) to `address` (Settings.notify_socket); False without one."""
    import socket

    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError as exc:
        logger.warning("sd_notify(%s) failed: %s", state, exc)
        return False


SYSTEMD_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environment() -> dict[str, str]:
    """Environment for a child process (a banc.py started by the kiosk): ours without systemd's notify variables.

    The kiosk unit only accepts notifications from ui.py (NotifyAccess=main): a child that
    inherited NOTIFY_SOCKET would have every READY/WATCHDOG it sends refused by systemd,
    with a warning in the journal each time.
    """
    return {key: value for key, value in os.environ.items() if key not in SYSTEMD_NOTIFY_VARIABLES}

