"""The seed's helpers of the LFP test benches: settings, logging, bench ids, bench state and test folders.

Every environment variable is read here (`get_settings`), and so are the paths of every
static file. Every function named in the seed's table keeps its name here; what they are
built from lives in one module per concept: `record.py` (the test record and file layouts),
`storage.py` (atomic files and locks), `business_hours.py` (48 h ouvrées), `calibration.py`
(charge profile, temperature correction), `processes.py` (which banc.py runs).
Time-dependent functions take `now` as an argument so they can be tested with a fixed clock.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import re
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import business_hours
import calibration
import grading
import processes
import protocol
import record
import settings as settings_module
import storage
from record import (  # noqa: F401  (the seed's names, defined once in record.py)
    BANCS_CONFIG_FILE,
    DATA_CSV_FILE,
    DATA_CSV_HEADER,
    EVENTS_FILE,
    LOCAL_TZ,
    REJECTED_CSV_FILE,
    REJECTED_CSV_HEADER,
    SOFTWARE_VERSION,
    STATUS_AVAILABLE,
    STATUS_OCCUPIED,
    TEST_ABANDONED,
    TEST_CONFIG_FILE,
    TEST_FINISHED,
    TEST_RUNNING,
    TEST_STOPPED,
    iso,
    now_local,
    parse_time,
    running_mean,
)
from storage import atomic_write_json, file_lock, read_json

SERIAL_PATTERN = r"^RW-[A-Za-z0-9]{4,32}$"
_SERIAL_RE = re.compile(SERIAL_PATTERN)

PROJECT_DIR = Path(__file__).resolve().parent

CHARGE_PROFILE_FILE = "charge_profile.csv"
TEMP_COEFFS_FILE = "temperature_coefficients.json"
LOG_FILE = "logs.log"

BUSINESS_HOURS_BEFORE_RETEST = business_hours.BUSINESS_HOURS_BEFORE_RETEST

logger = logging.getLogger("banc.utils")


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
    settings = settings_module.parse_settings(os.environ if environ is None else environ, PROJECT_DIR)
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


_settings: Optional[Settings] = None
_settings_lock = threading.Lock()


def get_settings() -> Settings:
    """Return the settings, read once per process."""
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def reload_settings() -> Settings:
    """Forget the cached settings and static files (tests change the environment)."""
    global _settings
    with _settings_lock:
        _settings = None
    _load_charge_profile.cache_clear()
    _load_temp_coeffs.cache_clear()
    return get_settings()


def home_dir() -> Path:
    """Folder of the mutable state (BANC_HOME)."""
    return get_settings().home


def data_dir() -> Path:
    """The data/ folder in BANC_HOME."""
    return home_dir() / "data"


def bancs_config_path() -> Path:
    """Path of bancs_config.json in BANC_HOME."""
    return home_dir() / BANCS_CONFIG_FILE


def static_file(name: str) -> Path:
    """A static file: from BANC_HOME when present there, else from the project folder."""
    in_home = home_dir() / name
    return in_home if in_home.exists() else PROJECT_DIR / name


# =========================================================================== logging

_logging_configured = False
_log_listener: Optional[logging.handlers.QueueListener] = None


class _FlushingWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """Appends whole lines with O_APPEND; reopens the file after logrotate moves it.

    Several processes append to logs.log. Each record is written by one write() on a
    file opened with O_APPEND, so lines from different processes never interleave.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except Exception:  # a full disk must not take the process down with it
            self.handleError(record)


def setup_logging(process_name: str, level: int = logging.INFO, log_file: Optional[Path] = None,
                  background: bool = False) -> None:
    """Configure the root logger once: console + logs.log in BANC_HOME, process name and pid in each line.

    With `background`, records are handed to a thread that writes them (the kiosk: its Tk
    thread must never wait on the disk); `stop_logging()` flushes it at exit.
    """
    global _logging_configured, _log_listener
    if _logging_configured:
        return
    _logging_configured = True
    fmt = logging.Formatter(
        f"%(asctime)s %(levelname)-7s {process_name}[%(process)d] %(name)s: %(message)s"
    )
    root = logging.getLogger()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    path = log_file or (home_dir() / LOG_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _FlushingWatchedFileHandler(path, encoding="utf-8", delay=True)
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
    except OSError as exc:
        console.handle(logging.makeLogRecord({"msg": f"cannot open log file {path}: {exc} (console only)",
                                              "levelno": logging.ERROR, "levelname": "ERROR"}))
    if background:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        root.addHandler(logging.handlers.QueueHandler(records))
        _log_listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
        _log_listener.start()
    else:
        for handler in handlers:
            root.addHandler(handler)
    logging.raiseExceptions = False  # a logging failure (disk full) is reported once on stderr, never raised


def stop_logging() -> None:
    """Write what the background logging thread still holds (at exit)."""
    global _log_listener
    if _log_listener is not None:
        _log_listener.stop()
        _log_listener = None


def log(message: str, level: str = "info", logger: str = "banc") -> None:
    """The seed's log(): log `message` at `level` ("debug", "info", "warning", "error", "critical")."""
    logging.getLogger(logger).log(getattr(logging, level.upper(), logging.INFO), message)


# =========================================================================== atomic files

_fsync_dir = storage.fsync_dir
_quarantine = storage.quarantine


# =========================================================================== benches and serials


def normalize_banc(banc: Union[int, str]) -> str:
    """Canonical bench id "bancN"; ValueError when not a bench of this installation."""
    name = protocol.banc_id(banc)
    if banc_number(name) > get_settings().num_bancs:
        raise ValueError(f"no such bench: {banc!r} (this installation has {get_settings().num_bancs})")
    return name


banc_number = protocol.banc_number


def is_valid_banc(banc: Any) -> bool:
    """True when `banc` names a bench of this installation (bancN, case-insensitive)."""
    if not isinstance(banc, (int, str)) or (isinstance(banc, str) and not re.fullmatch(r"(?i)\s*banc[0-9]+\s*", banc)):
        return False
    try:
        normalize_banc(banc)
    except ValueError:
        return False
    return True


def is_valid_serial(serial: Any) -> bool:
    """True when `serial` matches SERIAL_PATTERN (never a path, topic or command trick)."""
    return isinstance(serial, str) and _SERIAL_RE.fullmatch(serial) is not None


def all_bancs() -> list[str]:
    """Bench ids of this installation: banc1..bancN."""
    return [f"banc{n}" for n in range(1, get_settings().num_bancs + 1)]


# =========================================================================== bancs_config.json


def _default_entry(number: int) -> dict[str, Any]:
    return record.bench_entry(number)


def create_default_config(num_bancs: Optional[int] = None) -> dict[str, Any]:
    """Write and return a bancs_config.json with every bench available."""
    count = num_bancs or get_settings().num_bancs
    config = {"bancs": [_default_entry(n) for n in range(1, count + 1)]}
    atomic_write_json(bancs_config_path(), config)
    logger.info("created %s with %d benches", bancs_config_path(), count)
    return config


def _valid_bancs_config(data: Any) -> bool:
    return record.valid_bancs_config(data)


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """Make sure every bench 1..N has exactly one entry (added when the count grew)."""
    by_number: dict[int, dict[str, Any]] = {}
    for entry in config["bancs"]:
        try:
            by_number.setdefault(banc_number(entry["name"]), entry)
        except ValueError:
            continue
    count = get_settings().num_bancs
    bancs = [by_number.get(n) or _default_entry(n) for n in range(1, count + 1)]
    # Entries above the configured count are kept: a bench taken out of service may still hold a test.
    bancs += [by_number[n] for n in sorted(by_number) if n > count]
    return {**config, "bancs": bancs}


def rebuild_bancs_config(level: int = logging.WARNING) -> dict[str, Any]:
    """Write and return bancs_config.json rebuilt from the test folders (caller holds the lock)."""
    config = record.rebuild_bancs_config(data_dir(), get_settings().num_bancs)
    atomic_write_json(bancs_config_path(), config)
    held = [f"{e['name']}={e['serial-pending']}@{e['current_step']}" for e in config["bancs"] if e["status"] == STATUS_OCCUPIED]
    logger.log(level, "%s rebuilt from the test folders (occupied: %s)", bancs_config_path(), ", ".join(held) or "none")
    return config


def _load_bancs_config_unlocked() -> dict[str, Any]:
    path = bancs_config_path()
    try:
        data = read_json(path)
    except FileNotFoundError:
        # A first start has no data/ either: the rebuild then gives every bench available.
        return rebuild_bancs_config(logging.INFO)
    except (OSError, ValueError) as exc:
        _quarantine(path, str(exc))
        return rebuild_bancs_config()
    if not _valid_bancs_config(data):
        _quarantine(path, "unexpected structure")
        return rebuild_bancs_config()
    return _normalized(data)


def load_bancs_config() -> dict[str, Any]:
    """Load bancs_config.json; create it when missing, move it aside and recreate it when corrupt."""
    with file_lock(bancs_config_path()):
        return _load_bancs_config_unlocked()


def save_bancs_config(config: dict[str, Any]) -> None:
    """Save bancs_config.json atomically (under its lock)."""
    if not _valid_bancs_config(config):
        raise ValueError("refusing to save an invalid bancs_config")
    with file_lock(bancs_config_path()):
        atomic_write_json(bancs_config_path(), config)


@contextlib.contextmanager
def _modify_bancs_config() -> Iterator[dict[str, Any]]:
    """Locked read-modify-write of bancs_config.json; the yielded dict is saved on exit."""
    with file_lock(bancs_config_path()):
        config = _load_bancs_config_unlocked()
        yield config
        atomic_write_json(bancs_config_path(), config)


def _entry(config: dict[str, Any], banc: Union[int, str]) -> dict[str, Any]:
    number = banc_number(banc)
    for entry in config["bancs"]:
        if banc_number(entry["name"]) == number:
            return entry
    raise ValueError(f"no such bench: {banc!r}")


def get_banc_info(banc: Union[int, str]) -> dict[str, Any]:
    """Entry of one bench in bancs_config.json (a copy)."""
    return dict(_entry(load_bancs_config(), normalize_banc(banc)))


def get_banc_for_serial(serial: str, config: Optional[dict[str, Any]] = None) -> Optional[str]:
    """Bench id ("bancN") whose serial-pending is `serial` (case-insensitive), or None."""
    config = config or load_bancs_config()
    for entry in config["bancs"]:
        if entry.get("status") == STATUS_OCCUPIED and record.same_serial(entry.get("serial-pending"), serial):
            return protocol.banc_id(entry["name"])
    return None


def set_banc_status(
    banc: Union[int, str], status: str, serial: Optional[str] = None, current_step: Optional[int] = None
) -> dict[str, Any]:
    """Set status/serial/step of one bench in bancs_config.json; return the new entry."""
    banc = normalize_banc(banc)
    if status not in (STATUS_AVAILABLE, STATUS_OCCUPIED):
        raise ValueError(f"invalid status: {status!r}")
    if serial is not None and not is_valid_serial(serial):
        raise ValueError(f"invalid serial: {serial!r}")
    with _modify_bancs_config() as config:
        entry = _entry(config, banc)
        entry["status"] = status
        entry["serial-pending"] = serial if status == STATUS_OCCUPIED else None
        entry["current_step"] = current_step if status == STATUS_OCCUPIED else None
        return dict(entry)


def update_bancs_config_current_step(banc: Union[int, str], step: int) -> None:
    """Update only current_step of one bench in bancs_config.json."""
    banc = normalize_banc(banc)
    with _modify_bancs_config() as config:
        _entry(config, banc)["current_step"] = step


def reset_banc_config(banc: Union[int, str]) -> None:
    """Make one bench available again in bancs_config.json."""
    set_banc_status(banc, STATUS_AVAILABLE)


def abandon_banc(banc: Union[int, str], now: datetime) -> Optional[Path]:
    """Operator reset: the bench's unfinished test is marked abandoned in its journal, then the bench is freed.

    The journal line comes first, so a bancs_config.json rebuilt from the folders later never
    gives the bench back to an abandoned test. Returns the abandoned test's folder, if any.
    """
    banc = normalize_banc(banc)
    serial = get_banc_info(banc).get("serial-pending")
    folder: Optional[Path] = None
    if isinstance(serial, str) and is_valid_serial(serial):
        test = latest_test(serial, banc)
        if test is not None and not test.finished and not test.abandoned:
            record.append_event(test.path, record.EVENT_ABANDON, now)
            folder = test.path
    reset_banc_config(banc)
    return folder


# =========================================================================== test folders


@dataclass(frozen=True)
class BatteryFolder:
    """A test folder data/bancN/DDMMYYYY-SERIAL[-K] and its summary (config.json corrected by the journal)."""

    path: Path
    banc: str
    serial: str
    day: date
    index: int
    config: Optional[dict[str, Any]]

    @property
    def finished(self) -> bool:
        """True when the test reached step 5."""
        return record.summary_finished(self.config)

    @property
    def abandoned(self) -> bool:
        """True when the operator reset the bench of this unfinished test."""
        return record.summary_abandoned(self.config)

    @property
    def last_activity(self) -> Optional[datetime]:
        """End time of a finished test, else its last update."""
        cfg = self.config or {}
        for key in ("end_time", "timestamp_last_update", "first_handle"):
            parsed = parse_time(cfg.get(key))
            if parsed is not None:
                return parsed
        return None

    @property
    def sort_key(self) -> tuple[Any, ...]:
        cfg = self.config or {}
        first = parse_time(cfg.get("first_handle"))
        return (self.day, self.index, first.timestamp() if first else 0.0)


def battery_folder_name(serial: str, day: date, index: int = 1) -> str:
    """Folder name DDMMYYYY-SERIAL (with -K for the K-th test of the same battery the same day)."""
    if not is_valid_serial(serial):
        raise ValueError(f"invalid serial: {serial!r}")
    return record.folder_name(serial, day, index)


def list_test_folders(serial: Optional[str] = None, banc: Optional[Union[int, str]] = None) -> list[BatteryFolder]:
    """Every test folder (of a serial, of a bench), oldest first."""
    root = data_dir()
    bancs = [protocol.banc_id(banc)] if banc is not None else None
    found: list[BatteryFolder] = []
    if not root.is_dir():
        return found
    for banc_dir in sorted(root.iterdir()):
        if not banc_dir.is_dir() or not record.BANC_DIR_RE.match(banc_dir.name):
            continue
        if bancs is not None and banc_dir.name not in bancs:
            continue
        for folder in banc_dir.iterdir():
            name = record.parse_folder_name(folder.name)
            if name is None or not folder.is_dir():
                continue
            if serial is not None and not record.same_serial(name.serial, serial):
                continue
            found.append(BatteryFolder(folder, banc_dir.name, name.serial, name.day, name.index,
                                       record.load_summary(folder)))
    found.sort(key=lambda f: f.sort_key)
    return found


def find_battery_folder(serial: str, banc: Optional[Union[int, str]] = None) -> Optional[Path]:
    """Most recent test folder of a battery (on any bench, or on `banc`), or None."""
    latest = latest_test(serial, banc)
    return latest.path if latest else None


def latest_test(serial: str, banc: Optional[Union[int, str]] = None) -> Optional[BatteryFolder]:
    """Most recent BatteryFolder of a battery, or None."""
    if not is_valid_serial(serial):
        return None
    folders = list_test_folders(serial, banc)
    return folders[-1] if folders else None


def find_or_create_test_folder(banc: Union[int, str], serial: str, now: datetime) -> tuple[Path, bool]:
    """Folder for a test of `serial` on `banc`: its unfinished one (resume), else a new one.

    Returns (path, resumed).
    """
    banc = normalize_banc(banc)
    if not is_valid_serial(serial):
        raise ValueError(f"invalid serial: {serial!r}")
    latest = latest_test(serial, banc)
    if latest is not None and not latest.finished:
        return latest.path, True
    day = now.astimezone(LOCAL_TZ).date()
    parent = data_dir() / banc
    index = 1
    while (parent / battery_folder_name(serial, day, index)).exists():
        index += 1
    path = parent / battery_folder_name(serial, day, index)
    path.mkdir(parents=True, exist_ok=False)
    _fsync_dir(parent)
    # The journal's first line makes the folder a test: serial, bench and first_handle.
    record.append_event(path, record.EVENT_START, now, serial=serial, banc=banc, first_handle=iso(now),
                        software_version=SOFTWARE_VERSION)
    return path, False


def _rebuilt_summary(folder: Path, previous: Optional[dict[str, Any]]) -> dict[str, Any]:
    """config.json rebuilt from the journal and a recount of data.csv and rejected.csv."""
    events, bad = record.read_events(folder)
    if bad:
        logger.error("%s: %d unreadable journal lines skipped", Path(folder) / record.EVENTS_FILE, bad)
    state = record.fold_events(events)
    counts = record.scan_data_csv(Path(folder) / DATA_CSV_FILE)
    return record.rebuild_summary(previous, state, counts, record.count_csv_rows(Path(folder) / REJECTED_CSV_FILE))


def open_test_record(folder: Path, banc: Union[int, str], serial: str, now: datetime) -> tuple[record.RecordState, dict[str, Any]]:
    """Open a test's record for banc.py: journal made sure of, config.json rebuilt from the folder.

    A folder of the earlier version (no journal) gets one, started from its config.json and
    data.csv (the highest phase either shows). config.json is then always rewritten from the
    journal and a recount of the CSV files: a missing, damaged or stale one (kept aside when
    unreadable) can never rewind the test.
    """
    banc = normalize_banc(banc)
    folder = Path(folder)
    path = folder / TEST_CONFIG_FILE
    with file_lock(path):
        previous: Optional[dict[str, Any]] = None
        try:
            data = read_json(path)
            if isinstance(data, dict) and record.same_serial(data.get("battery_serial"), serial):
                previous = data
            else:
                _quarantine(path, "not this test's config.json")
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            _quarantine(path, str(exc))
        events, bad_lines = record.read_events(folder)
        if events and record.fold_events(events).serial is None:
            # The start line is unreadable: who the test is for is journaled again, once.
            seed = previous or {}
            first = seed.get("first_handle") if isinstance(seed.get("first_handle"), str) else events[0].get("t")
            record.append_event(folder, record.EVENT_START, now, serial=serial, banc=banc,
                                first_handle=first if isinstance(first, str) else iso(now), restored=True)
            logger.warning("%s: the journal's start line is unreadable: started again for %s", folder.name, serial)
            events, bad_lines = record.read_events(folder)
        if events:
            # A damaged journal line may be a step: what config.json or data.csv show wins over a rewind.
            data_step = record.scan_data_csv(folder / DATA_CSV_FILE).last_step if bad_lines else None
            step = record.step_to_restore(record.fold_events(events), (previous or {}).get("current_step"),
                                          data_step)
            if step is not None:
                record.append_event(folder, record.EVENT_STEP, now, step=step, restored=True)
                logger.warning("%s: journal has %d unreadable lines and phase %d is shown elsewhere: phase %d kept",
                               folder.name, bad_lines, step, step)
        else:
            counts = record.scan_data_csv(folder / DATA_CSV_FILE)
            seed = previous or {}
            fields = record.migration_event_fields(seed, counts.last_step)
            fields.setdefault("first_handle", iso(now))
            record.append_event(folder, record.EVENT_MIGRATE, now, serial=serial, banc=banc, **fields)
            logger.warning("%s: journal started from %s (step %s)", folder.name,
                           "config.json" if previous else "data.csv", fields["step"])
        config = _rebuilt_summary(folder, previous)
        atomic_write_json(path, config)
        events, _ = record.read_events(folder)
        return record.fold_events(events), config


def load_or_create_config(folder: Path, banc: Union[int, str], serial: str, now: datetime) -> dict[str, Any]:
    """Load the test's config.json, or create it (step 1); a damaged one is kept aside and rebuilt from the folder."""
    return open_test_record(folder, banc, serial, now)[1]


def read_test_config(folder: Path) -> Optional[dict[str, Any]]:
    """A test's summary (config.json corrected by its journal), or None when the folder holds neither."""
    return record.load_summary(Path(folder))


def _modify_test_config(folder: Path, change: Callable[[dict[str, Any]], None], fsync: bool = True) -> dict[str, Any]:
    """Locked update of config.json; the journal's facts always win, a damaged file is rebuilt first."""
    path = Path(folder) / TEST_CONFIG_FILE
    with file_lock(path):
        config = record.read_summary_file(folder)
        events, _ = record.read_events(folder)
        state = record.fold_events(events) if events else None
        if config is None or (state is not None and state.serial is not None
                              and not record.same_serial(config.get("battery_serial"), state.serial)):
            if path.exists():
                _quarantine(path, "unreadable or not this test's")
            if state is None:
                raise FileNotFoundError(f"{path}: no config.json and no journal")
            config = _rebuilt_summary(folder, None)
        change(config)
        if state is not None:
            config = record.apply_state(config, state)
        atomic_write_json(path, config, fsync=fsync)
        return config


def refresh_test_config(folder: Path) -> dict[str, Any]:
    """Rewrite config.json with what the journal says now (after a verdict event)."""
    return _modify_test_config(folder, lambda config: None)


def create_data_csv(folder: Path) -> Path:
    """Create data.csv with its header if it does not exist; return its path."""
    path = Path(folder) / DATA_CSV_FILE
    if not path.exists() or path.stat().st_size == 0:
        storage.append_durably(path, (",".join(DATA_CSV_HEADER) + "\n").encode("ascii"))
    return path


def update_config(folder: Path, step: int, now: datetime) -> dict[str, Any]:
    """Record a new step: the journal first (durable), then config.json and bancs_config.json."""
    if step not in protocol.PHASES:
        raise ValueError(f"invalid step for update_config: {step}")
    record.append_event(folder, record.EVENT_STEP, now, step=step)
    config = _modify_test_config(folder, lambda config: None)
    update_bancs_config_current_step(config["banc"], step)
    return config


def update_config_bms(
    folder: Path, capacity_ah: float, capacity_wh: float, now: datetime, counters: Optional[dict[str, int]] = None,
    fsync: bool = True,
) -> dict[str, Any]:
    """Record capacity, energy, the update time (and banc.py's counters) in config.json."""

    def change(config: dict[str, Any]) -> None:
        config["capacity_ah"] = round(float(capacity_ah), 4)
        config["capacity_wh"] = round(float(capacity_wh), 3)
        config["timestamp_last_update"] = iso(now)
        for key, value in (counters or {}).items():
            config[key] = int(value)

    return _modify_test_config(folder, change, fsync=fsync)


def update_config_counters(folder: Path, counters: dict[str, int], fsync: bool = True) -> dict[str, Any]:
    """Record banc.py's counters (rows, rejects, duplicates...) in config.json, nothing else."""

    def change(config: dict[str, Any]) -> None:
        for key, value in counters.items():
            config[key] = int(value)

    return _modify_test_config(folder, change, fsync=fsync)


def update_config_ri_results(folder: Path, results: dict[str, float], now: datetime) -> dict[str, Any]:
    """Fold Ri/diffusion values into the running means: the journal first (durable), then config.json."""
    values = {k: float(v) for k, v in results.items() if k in protocol.RI_KEYS or k == "temperature_c"}
    record.append_event(folder, record.EVENT_RI, now, values=values)
    return _modify_test_config(folder, lambda config: None)


# =========================================================================== processes

RUN_DIR = processes.RUN_DIR


def banc_lock_path(banc: Union[int, str]) -> Path:
    """Lock file banc.py holds for its whole life (run/bancN.lock in BANC_HOME); it contains the pid."""
    return processes.banc_lock_path(home_dir(), banc)


def acquire_banc_lock(banc: Union[int, str]) -> Optional[int]:
    """Take the bench's lifetime lock and write our pid in it; return the fd, or None if held."""
    return processes.acquire_banc_lock(home_dir(), banc)


def is_banc_running(banc: Union[int, str]) -> bool:
    """True when a live `banc.py bancN` process of this BANC_HOME runs (psutil)."""
    return processes.is_banc_running(home_dir(), banc)


def banc_process_pid(banc: Union[int, str]) -> Optional[int]:
    """Pid of the live `banc.py bancN` process of this BANC_HOME, or None."""
    return processes.banc_process_pid(home_dir(), banc)


# =========================================================================== business hours

# In business_hours.py; the seed's names are kept here.
is_business_day = business_hours.is_business_day
business_hours_between = business_hours.business_hours_between
add_business_hours = business_hours.add_business_hours
is_past_business_hours = business_hours.is_past_business_hours


# =========================================================================== static files

# The curves are defined and validated in calibration.py; here they are found and cached.
ConfigFileError = calibration.ConfigFileError
Curve = calibration.Curve


@lru_cache(maxsize=1)
def _load_charge_profile() -> Curve:
    """charge_profile.csv (BANC_HOME first, else the project): pack voltage (V) -> remaining phase-2 time (s)."""
    return calibration.load_charge_profile(static_file(CHARGE_PROFILE_FILE))


@lru_cache(maxsize=1)
def _load_temp_coeffs() -> Curve:
    """temperature_coefficients.json (BANC_HOME first, else the project): temperature (°C) -> multiplier to 25 °C."""
    return calibration.load_temp_coeffs(static_file(TEMP_COEFFS_FILE))


def get_charge_duration(voltage_v: float) -> float:
    """Estimated remaining phase-2 (charge) time in seconds at this pack voltage."""
    return _load_charge_profile()(float(voltage_v))


def get_temperature_coefficient(temperature_c: float) -> float:
    """Multiplier that brings a resistance measured at `temperature_c` to 25 °C."""
    return _load_temp_coeffs()(float(temperature_c))


def load_grading_rules() -> grading.Rules:
    """grading.json (BANC_HOME first, else the project), read afresh: the lab may edit it between tests.

    Raises grading.GradingError naming the file and what is wrong.
    """
    return grading.load_rules(static_file(grading.GRADING_FILE))


def correct_to_25c(resistance_ohm: float, temperature_c: Optional[float]) -> float:
    """A resistance measured at `temperature_c` brought to 25 °C (unchanged when the temperature is unknown)."""
    if temperature_c is None:
        return resistance_ohm
    return resistance_ohm * get_temperature_coefficient(temperature_c)


# =========================================================================== systemd


def sd_notify(state: str) -> bool:
    """Send a systemd notification ("READY=1", "WATCHDOG=1"...); False when not run by systemd."""
    import socket

    address = get_settings().notify_socket
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
