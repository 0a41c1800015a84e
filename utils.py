"""The seed's helpers, by the names the design document gives them (docs/architecture.md).

Nothing in the project imports this file: each name is defined once in the package
(`banclfp/`) and only gathered here, so that `utils.get_banc_info(...)` keeps working for
whoever reads the design document. The seed's helpers were module functions of one implicit
home: here, and only here, they are backed by a default Store built once, on first use, from
the environment (the package's code is always given its Store explicitly).
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Union

from banclfp.analysis.calibration import Curve
from banclfp.history.business_hours import add_business_hours, is_past_business_hours
from banclfp.infra import environment
from banclfp.infra.logs import log
from banclfp.recording.record import BenchesState
from banclfp.recording.store import (
    Store,
    create_data_csv,
    update_config_bms,
    update_config_ri_results,
)

__all__ = [
    "_load_charge_profile", "_load_temp_coeffs", "add_business_hours", "create_data_csv", "create_default_config",
    "find_battery_folder", "get_banc_for_serial", "get_banc_info", "get_charge_duration",
    "get_temperature_coefficient", "is_banc_running", "is_past_business_hours", "load_bancs_config",
    "load_or_create_config", "log", "reset_banc_config", "save_bancs_config", "set_banc_status",
    "update_bancs_config_current_step", "update_config", "update_config_bms", "update_config_ri_results",
]


@functools.cache
def default_store() -> Store:
    """The store of this process's environment (BANC_HOME, BANC_NUM_BANCS), built on first use."""
    return Store.from_settings(environment.load_settings())


def create_default_config(num_bancs: Optional[int] = None) -> dict[str, Any]:
    """Write and return a bancs_config.json with every bench available."""
    return default_store().create_default_config(num_bancs).to_json()


def load_bancs_config() -> dict[str, Any]:
    """Load bancs_config.json; create it when missing, move it aside and recreate it when corrupt."""
    return default_store().load_bancs_config().to_json()


def save_bancs_config(config: dict[str, Any]) -> None:
    """Save bancs_config.json atomically (ValueError for a dict without the file's shape)."""
    default_store().save_bancs_config(BenchesState.from_json(config))


def get_banc_info(banc: Union[int, str]) -> dict[str, Any]:
    """Entry of one bench in bancs_config.json (a copy)."""
    return default_store().get_banc_info(banc).to_json()


def get_banc_for_serial(serial: str, config: Optional[dict[str, Any]] = None) -> Optional[str]:
    """Bench id ("bancN") whose serial-pending is `serial` (case-insensitive), or None."""
    return default_store().get_banc_for_serial(serial, None if config is None else BenchesState.from_json(config))


def set_banc_status(banc: Union[int, str], status: str, serial: Optional[str] = None,
                    current_step: Optional[int] = None) -> dict[str, Any]:
    """Set status/serial/step of one bench in bancs_config.json; return the new entry."""
    return default_store().set_banc_status(banc, status, serial, current_step).to_json()


def update_bancs_config_current_step(banc: Union[int, str], step: int) -> None:
    """Update only current_step of one bench in bancs_config.json."""
    default_store().update_bancs_config_current_step(banc, step)


def reset_banc_config(banc: Union[int, str]) -> None:
    """Make one bench available again in bancs_config.json."""
    default_store().reset_banc_config(banc)


def find_battery_folder(serial: str, banc: Optional[Union[int, str]] = None) -> Optional[Path]:
    """Most recent test folder of a battery (on any bench, or on `banc`), or None."""
    return default_store().find_battery_folder(serial, banc)


def load_or_create_config(folder: Path, banc: Union[int, str], serial: str, now: datetime) -> dict[str, Any]:
    """Load the test's config.json, or create it (step 1); a damaged one is kept aside and rebuilt from the folder."""
    return default_store().load_or_create_config(folder, banc, serial, now)


def update_config(folder: Path, step: int, now: datetime) -> dict[str, Any]:
    """Record a new step: the journal first (durable), then config.json and bancs_config.json."""
    return default_store().update_config(folder, step, now)


def is_banc_running(banc: Union[int, str]) -> bool:
    """True when a live `banc.py bancN` process of this BANC_HOME runs (psutil)."""
    return default_store().is_banc_running(banc)


def get_charge_duration(voltage_v: float) -> float:
    """Estimated remaining phase-2 (charge) time in seconds at this pack voltage."""
    return default_store().static.get_charge_duration(voltage_v)


def get_temperature_coefficient(temperature_c: float) -> float:
    """Multiplier that brings a resistance measured at `temperature_c` to 25 °C."""
    return default_store().static.get_temperature_coefficient(temperature_c)


def _load_charge_profile() -> Curve:
    """charge_profile.csv (BANC_HOME first, else the project), read once: pack voltage (V) -> remaining phase-2 time (s)."""
    return default_store().static.charge_profile()


def _load_temp_coeffs() -> Curve:
    """temperature_coefficients.json (BANC_HOME first, else the project), read once: temperature (°C) -> multiplier."""
    return default_store().static.temp_coeffs()
