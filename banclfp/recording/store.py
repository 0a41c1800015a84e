"""The store: one BANC_HOME's bancs_config.json (the benches' state), its test folders under data/, its history.

A `Store` is given its home and bench count explicitly (entry points build it from the
settings they read once): the bench names of this installation, the bench state read and
written under its lock (`record.BenchesState`), the test folders found, created and resumed,
the processes of its benches, the history index (a `TestIndex` backend) and the static files.
What needs only a test folder (its config.json, data.csv) is a module function, also reachable
on the store.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

from banclfp.history.index import INDEX_FILE, SqliteIndex, TestIndex
from banclfp.infra import processes, storage
from banclfp.infra.environment import StaticFiles
from banclfp.infra.settings import NUM_BANCS, Settings
from banclfp.infra.storage import atomic_write_json, file_lock, read_json
from banclfp.recording import datafile, record
from banclfp.recording.record import (
    BANCS_CONFIG_FILE,
    DATA_CSV_FILE,
    DATA_CSV_HEADER,
    LOCAL_TZ,
    SOFTWARE_VERSION,
    STATUS_AVAILABLE,
    STATUS_OCCUPIED,
    TEST_CONFIG_FILE,
    BenchEntry,
    BenchesState,
    iso,
    parse_time,
)
from banclfp.wire import protocol

SERIAL_PATTERN = r"^RW-[A-Za-z0-9]{4,32}$"
_SERIAL_RE = re.compile(SERIAL_PATTERN)

logger = logging.getLogger("banc.store")

# =========================================================================== atomic files

_fsync_dir = storage.fsync_dir
_quarantine = storage.quarantine


# =========================================================================== serials


banc_number = protocol.banc_number


def is_valid_serial(serial: Any) -> bool:
    """True when `serial` matches SERIAL_PATTERN (never a path, topic or command trick)."""
    return isinstance(serial, str) and _SERIAL_RE.fullmatch(serial) is not None


# =========================================================================== test folders


@dataclass(frozen=True)
class BatteryFolder:
    """A test folder data/bancN/DDMMYYYY-SERIAL[-K] and its summary (config.json corrected by the journal)."""

    path: Path
    banc: str
    serial: str
    day: date
    index: int
    config: Optional[record.TestSummary]

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
        return self.config.last_activity if self.config is not None else None

    @property
    def sort_key(self) -> tuple[Any, ...]:
        first = parse_time(self.config.first_handle) if self.config is not None else None
        return (self.day, self.index, first.timestamp() if first else 0.0)


def battery_folder_name(serial: str, day: date, index: int = 1) -> str:
    """Folder name DDMMYYYY-SERIAL (with -K for the K-th test of the same battery the same day)."""
    if not is_valid_serial(serial):
        raise ValueError(f"invalid serial: {serial!r}")
    return record.folder_name(serial, day, index)


def _rebuilt_summary(folder: Path, previous: Optional[dict[str, Any]],
                     snapshot: Optional[datafile.FolderSnapshot] = None) -> dict[str, Any]:
    """config.json rebuilt from the journal and a recount of data.csv and rejected.csv (`snapshot`: read already)."""
    if snapshot is None:
        snapshot = datafile.read_folder(folder)
    if snapshot.bad_events:
        logger.error("%s: %d unreadable journal lines skipped", Path(folder) / record.EVENTS_FILE, snapshot.bad_events)
    state = record.fold_events(snapshot.events)
    return record.rebuild_summary(previous, state, snapshot.counts, snapshot.rejected_rows)


def open_test_record(folder: Path, banc: str, serial: str, now: datetime,
                     snapshot: Optional[datafile.FolderSnapshot] = None) -> tuple[record.RecordState, dict[str, Any]]:
    """Open a test's record for banc.py: journal made sure of, config.json rebuilt from the folder.

    A folder of the earlier version (no journal) gets one, started from its config.json and
    data.csv (the highest phase either shows). config.json is then always rewritten from the
    journal and a recount of the CSV files: a missing, damaged or stale one (kept aside when
    unreadable) can never rewind the test. `banc` is the canonical id (Store.open_test_record checks it).
    `snapshot` is the folder as banc.py's start read it (read here when not given); the events
    written here are added to it.
    """
    folder = Path(folder)
    path = folder / TEST_CONFIG_FILE
    with file_lock(path):
        previous: Optional[dict[str, Any]] = None
        try:
            data = read_json(path)
            if isinstance(data, dict) and record.same_serial(record.TestSummary.from_json(data).battery_serial, serial):
                previous = data
            else:
                _quarantine(path, "not this test's config.json")
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            _quarantine(path, str(exc))
        if snapshot is None:
            snapshot = datafile.read_folder(folder)
        events, bad_lines = snapshot.events, snapshot.bad_events
        if events and record.fold_events(events).serial is None:
            # The start line is unreadable: who the test is for is journaled again, once.
            kept_first = record.TestSummary.from_json(previous).first_handle
            first = kept_first if kept_first is not None else events[0].t
            snapshot.append_event(record.StartEvent(record.event_time(now), serial, banc,
                                                    first if first is not None else iso(now), restored=True))
            logger.warning("%s: the journal's start line is unreadable: started again for %s", folder.name, serial)
        if events:
            # A damaged journal line may be a step: what config.json or data.csv show wins over a rewind.
            data_step = snapshot.counts.last_step if bad_lines else None
            step = record.step_to_restore(record.fold_events(events), record.TestSummary.from_json(previous).current_step,
                                          data_step)
            if step is not None:
                snapshot.append_event(record.StepEvent(record.event_time(now), step, restored=True))
                logger.warning("%s: journal has %d unreadable lines and phase %d is shown elsewhere: phase %d kept",
                               folder.name, bad_lines, step, step)
        else:
            migration = record.migration_event(record.TestSummary.from_json(previous), snapshot.counts.last_step,
                                               now, serial, banc, iso(now))
            snapshot.append_event(migration)
            logger.warning("%s: journal started from %s (step %s)", folder.name,
                           "config.json" if previous else "data.csv", migration.step)
        config = _rebuilt_summary(folder, previous, snapshot)
        atomic_write_json(path, config)
        return record.fold_events(snapshot.events), config


def read_test_config(folder: Path) -> Optional[record.TestSummary]:
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
                              and not record.same_serial(record.TestSummary.from_json(config).battery_serial,
                                                         state.serial)):
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


def update_config_bms(
    folder: Path, capacity_ah: float, capacity_wh: float, now: datetime, counters: Optional[dict[str, int]] = None,
    fsync: bool = True,
) -> dict[str, Any]:
    """Record capacity, energy, the update time (and banc.py's counters) in config.json."""

    def change(config: dict[str, Any]) -> None:
        record.set_summary_measures(config, capacity_ah, capacity_wh, now)
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
    record.append_event(folder, record.RiEvent(record.event_time(now), values))
    return _modify_test_config(folder, lambda config: None)


# =========================================================================== the store

RUN_DIR = processes.RUN_DIR


class Store:
    """One BANC_HOME: its benches (1..num_bancs) and their state, its test folders, processes, history and static files."""

    def __init__(self, home: Path, num_bancs: int = NUM_BANCS) -> None:
        self.home = Path(home)
        self.num_bancs = num_bancs
        self.static = StaticFiles(self.home)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store of the settings' BANC_HOME and bench count."""
        return cls(settings.home, settings.num_bancs)

    @property
    def data_dir(self) -> Path:
        """The data/ folder (the test folders)."""
        return self.home / "data"

    @property
    def bancs_config_path(self) -> Path:
        """Path of bancs_config.json."""
        return self.home / BANCS_CONFIG_FILE

    @cached_property
    def history(self) -> TestIndex:
        """The history index of this home's test folders (SQLite today; the lab database may be another)."""
        return SqliteIndex(self.home / INDEX_FILE, self.data_dir, self.static.correct_to_25c)

    # What needs only a test folder, reachable on the store like the rest.
    read_test_config = staticmethod(read_test_config)
    refresh_test_config = staticmethod(refresh_test_config)
    create_data_csv = staticmethod(create_data_csv)
    update_config_bms = staticmethod(update_config_bms)
    update_config_counters = staticmethod(update_config_counters)
    update_config_ri_results = staticmethod(update_config_ri_results)
    is_valid_serial = staticmethod(is_valid_serial)

    # ------------------------------------------------------------------ benches

    def normalize_banc(self, banc: Union[int, str]) -> str:
        """Canonical bench id "bancN"; ValueError when not a bench of this installation."""
        name = protocol.banc_id(banc)
        if banc_number(name) > self.num_bancs:
            raise ValueError(f"no such bench: {banc!r} (this installation has {self.num_bancs})")
        return name

    def is_valid_banc(self, banc: Any) -> bool:
        """True when `banc` names a bench of this installation (bancN, case-insensitive)."""
        if not isinstance(banc, (int, str)) or (isinstance(banc, str) and not re.fullmatch(r"(?i)\s*banc[0-9]+\s*", banc)):
            return False
        try:
            self.normalize_banc(banc)
        except ValueError:
            return False
        return True

    def all_bancs(self) -> list[str]:
        """Bench ids of this installation: banc1..bancN."""
        return [f"banc{n}" for n in range(1, self.num_bancs + 1)]

    # ------------------------------------------------------------------ bancs_config.json

    def create_default_config(self, num_bancs: Optional[int] = None) -> BenchesState:
        """Write and return a bancs_config.json with every bench available."""
        count = num_bancs or self.num_bancs
        state = BenchesState(tuple(record.bench_entry(n) for n in range(1, count + 1)))
        atomic_write_json(self.bancs_config_path, state.to_json())
        logger.info("created %s with %d benches", self.bancs_config_path, count)
        return state

    def _normalized(self, state: BenchesState) -> BenchesState:
        """Make sure every bench 1..N has exactly one entry (added when the count grew)."""
        by_number: dict[int, BenchEntry] = {}
        for entry in state.bancs:
            try:
                by_number.setdefault(banc_number(entry.name), entry)
            except ValueError:
                continue
        count = self.num_bancs
        bancs = [by_number.get(n) or record.bench_entry(n) for n in range(1, count + 1)]
        # Entries above the configured count are kept: a bench taken out of service may still hold a test.
        bancs += [by_number[n] for n in sorted(by_number) if n > count]
        return BenchesState(tuple(bancs), state.extra)

    def rebuild_bancs_config(self, level: int = logging.WARNING) -> BenchesState:
        """Write and return bancs_config.json rebuilt from the test folders (caller holds the lock)."""
        state = record.rebuild_bancs_config(self.data_dir, self.num_bancs)
        atomic_write_json(self.bancs_config_path, state.to_json())
        held = [f"{e.name}={e.serial_pending}@{e.current_step}" for e in state.bancs if e.occupied]
        logger.log(level, "%s rebuilt from the test folders (occupied: %s)", self.bancs_config_path,
                   ", ".join(held) or "none")
        return state

    def _load_bancs_config_unlocked(self) -> BenchesState:
        path = self.bancs_config_path
        try:
            data = read_json(path)
        except FileNotFoundError:
            # A first start has no data/ either: the rebuild then gives every bench available.
            return self.rebuild_bancs_config(logging.INFO)
        except (OSError, ValueError) as exc:
            _quarantine(path, str(exc))
            return self.rebuild_bancs_config()
        try:
            state = BenchesState.from_json(data)
        except ValueError:
            _quarantine(path, "unexpected structure")
            return self.rebuild_bancs_config()
        return self._normalized(state)

    def load_bancs_config(self) -> BenchesState:
        """Load bancs_config.json; create it when missing, move it aside and recreate it when corrupt."""
        with file_lock(self.bancs_config_path):
            return self._load_bancs_config_unlocked()

    def save_bancs_config(self, state: BenchesState) -> None:
        """Save bancs_config.json atomically (under its lock)."""
        with file_lock(self.bancs_config_path):
            atomic_write_json(self.bancs_config_path, state.to_json())

    def _replace_entry(self, banc: str, change: Callable[[BenchEntry], BenchEntry]) -> BenchEntry:
        """Locked read-modify-write of one bench's entry in bancs_config.json; return the new entry."""
        with file_lock(self.bancs_config_path):
            state = self._load_bancs_config_unlocked()
            entry = change(state.entry(banc))
            atomic_write_json(self.bancs_config_path, state.replaced(entry).to_json())
            return entry

    def get_banc_info(self, banc: Union[int, str]) -> BenchEntry:
        """Entry of one bench in bancs_config.json."""
        return self.load_bancs_config().entry(self.normalize_banc(banc))

    def get_banc_for_serial(self, serial: str, state: Optional[BenchesState] = None) -> Optional[str]:
        """Bench id ("bancN") whose serial-pending is `serial` (case-insensitive), or None."""
        return (state or self.load_bancs_config()).banc_for_serial(serial)

    def set_banc_status(
        self, banc: Union[int, str], status: str, serial: Optional[str] = None, current_step: Optional[int] = None
    ) -> BenchEntry:
        """Set status/serial/step of one bench in bancs_config.json; return the new entry."""
        banc = self.normalize_banc(banc)
        if status not in (STATUS_AVAILABLE, STATUS_OCCUPIED):
            raise ValueError(f"invalid status: {status!r}")
        if serial is not None and not is_valid_serial(serial):
            raise ValueError(f"invalid serial: {serial!r}")
        occupied = status == STATUS_OCCUPIED
        return self._replace_entry(banc, lambda entry: dataclasses.replace(
            entry, status=status, serial_pending=serial if occupied else None,
            current_step=current_step if occupied else None))

    def update_bancs_config_current_step(self, banc: Union[int, str], step: int) -> None:
        """Update only current_step of one bench in bancs_config.json."""
        banc = self.normalize_banc(banc)
        self._replace_entry(banc, lambda entry: dataclasses.replace(entry, current_step=step))

    def reset_banc_config(self, banc: Union[int, str]) -> None:
        """Make one bench available again in bancs_config.json."""
        self.set_banc_status(banc, STATUS_AVAILABLE)

    def abandon_banc(self, banc: Union[int, str], now: datetime) -> Optional[Path]:
        """Operator reset: the bench's unfinished test is marked abandoned in its journal, then the bench is freed.

        The journal line comes first, so a bancs_config.json rebuilt from the folders later never
        gives the bench back to an abandoned test. Returns the abandoned test's folder, if any.
        """
        banc = self.normalize_banc(banc)
        serial = self.get_banc_info(banc).serial_pending
        folder: Optional[Path] = None
        if serial is not None and is_valid_serial(serial):
            test = self.latest_test(serial, banc)
            if test is not None and not test.finished and not test.abandoned:
                record.append_event(test.path, record.AbandonEvent(record.event_time(now)))
                folder = test.path
        self.reset_banc_config(banc)
        return folder

    # ------------------------------------------------------------------ test folders

    def list_test_folders(self, serial: Optional[str] = None,
                          banc: Optional[Union[int, str]] = None) -> list[BatteryFolder]:
        """Every test folder (of a serial, of a bench), oldest first."""
        root = self.data_dir
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

    def find_battery_folder(self, serial: str, banc: Optional[Union[int, str]] = None) -> Optional[Path]:
        """Most recent test folder of a battery (on any bench, or on `banc`), or None."""
        latest = self.latest_test(serial, banc)
        return latest.path if latest else None

    def latest_test(self, serial: str, banc: Optional[Union[int, str]] = None) -> Optional[BatteryFolder]:
        """Most recent BatteryFolder of a battery, or None."""
        if not is_valid_serial(serial):
            return None
        folders = self.list_test_folders(serial, banc)
        return folders[-1] if folders else None

    def find_or_create_test_folder(self, banc: Union[int, str], serial: str, now: datetime) -> tuple[Path, bool]:
        """Folder for a test of `serial` on `banc`: its unfinished one (resume), else a new one.

        Returns (path, resumed).
        """
        banc = self.normalize_banc(banc)
        if not is_valid_serial(serial):
            raise ValueError(f"invalid serial: {serial!r}")
        latest = self.latest_test(serial, banc)
        if latest is not None and not latest.finished:
            return latest.path, True
        day = now.astimezone(LOCAL_TZ).date()
        parent = self.data_dir / banc
        index = 1
        while (parent / battery_folder_name(serial, day, index)).exists():
            index += 1
        path = parent / battery_folder_name(serial, day, index)
        path.mkdir(parents=True, exist_ok=False)
        _fsync_dir(parent)
        # The journal's first line makes the folder a test: serial, bench and first_handle.
        record.append_event(path, record.StartEvent(record.event_time(now), serial, banc, iso(now),
                                                    software_version=SOFTWARE_VERSION))
        return path, False

    def open_test_record(self, folder: Path, banc: Union[int, str], serial: str, now: datetime,
                         snapshot: Optional[datafile.FolderSnapshot] = None) -> tuple[record.RecordState, dict[str, Any]]:
        """Open a test's record for banc.py (module `open_test_record`), for a bench of this installation."""
        return open_test_record(folder, self.normalize_banc(banc), serial, now, snapshot)

    def load_or_create_config(self, folder: Path, banc: Union[int, str], serial: str, now: datetime) -> dict[str, Any]:
        """Load the test's config.json, or create it (step 1); a damaged one is kept aside and rebuilt from the folder."""
        return self.open_test_record(folder, banc, serial, now)[1]

    def update_config(self, folder: Path, step: int, now: datetime) -> dict[str, Any]:
        """Record a new step: the journal first (durable), then config.json and bancs_config.json."""
        if step not in protocol.PHASES:
            raise ValueError(f"invalid step for update_config: {step}")
        record.append_event(folder, record.StepEvent(record.event_time(now), step))
        config = _modify_test_config(folder, lambda config: None)
        self.update_bancs_config_current_step(config["banc"], step)
        return config

    # ------------------------------------------------------------------ processes

    def banc_lock_path(self, banc: Union[int, str]) -> Path:
        """Lock file banc.py holds for its whole life (run/bancN.lock in BANC_HOME); it contains the pid."""
        return processes.banc_lock_path(self.home, banc)

    def acquire_banc_lock(self, banc: Union[int, str]) -> Optional[int]:
        """Take the bench's lifetime lock and write our pid in it; return the fd, or None if held."""
        return processes.acquire_banc_lock(self.home, banc)

    def is_banc_running(self, banc: Union[int, str]) -> bool:
        """True when a live `banc.py bancN` process of this BANC_HOME runs (psutil)."""
        return processes.is_banc_running(self.home, banc)

    def banc_process_pid(self, banc: Union[int, str]) -> Optional[int]:
        """Pid of the live `banc.py bancN` process of this BANC_HOME, or None."""
        return processes.banc_process_pid(self.home, banc)
