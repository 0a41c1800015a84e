"""The seed's helpers, by the names the design document gives them (docs/architecture.md).

Nothing in the project imports this file: each name is defined once in the package
(`banclfp/`) and only gathered here, so that `utils.get_banc_info(...)` keeps working for
whoever reads the design document.
"""

from banclfp.history.business_hours import add_business_hours, is_past_business_hours
from banclfp.infra.environment import (
    _load_charge_profile,
    _load_temp_coeffs,
    get_charge_duration,
    get_temperature_coefficient,
)
from banclfp.infra.logs import log
from banclfp.recording.store import (
    create_data_csv,
    create_default_config,
    find_battery_folder,
    get_banc_for_serial,
    get_banc_info,
    is_banc_running,
    load_bancs_config,
    load_or_create_config,
    reset_banc_config,
    save_bancs_config,
    set_banc_status,
    update_bancs_config_current_step,
    update_config,
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
