"""Tests of utils.py: settings, state files, test folders, business hours, static files, processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from banclfp.history import business_hours
from banclfp.infra import environment, storage
from banclfp.recording import record, store
from banclfp.recording.record import LOCAL_TZ
from banclfp.wire import protocol

REPO_DIR = Path(__file__).resolve().parent.parent


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=LOCAL_TZ)


# =========================================================================== settings


def test_settings_defaults(tmp_path: Path) -> None:
    settings = environment.load_settings({})
    assert settings.home == environment.PROJECT_DIR
    assert (settings.mqtt_host, settings.mqtt_port) == ("localhost", 1883)
    assert settings.mqtt_username is None and settings.mqtt_password is None
    assert settings.num_bancs == environment.NUM_BANCS == 4
    assert (settings.bms_timeout_s, settings.scan_timeout_s) == (30.0, 15.0)
    assert settings.fsync_interval_s == 1.0  # issue 3: a power cut loses about one second at most


def test_settings_from_environment(tmp_path: Path) -> None:
    settings = environment.load_settings(
        {
            "BANC_HOME": str(tmp_path),
            "BANC_MQTT_HOST": "pi.local",
            "BANC_MQTT_PORT": "8883",
            "BANC_MQTT_USERNAME": "pi-banc",
            "BANC_MQTT_PASSWORD": "s3cret",
            "BANC_NUM_BANCS": "6",
            "BANC_BMS_TIMEOUT_S": "2.5",
            "BANC_SCAN_TIMEOUT_S": "20",
            "BANC_FSYNC_INTERVAL_S": "30",
        }
    )
    assert settings.home == tmp_path.resolve()
    assert (settings.mqtt_host, settings.mqtt_port) == ("pi.local", 8883)
    assert (settings.mqtt_username, settings.mqtt_password) == ("pi-banc", "s3cret")
    assert (settings.num_bancs, settings.bms_timeout_s, settings.scan_timeout_s) == (6, 2.5, 20.0)
    assert settings.fsync_interval_s == 30.0


# Contract v2 ranges, bounds included: timeouts 1..3600 s, fsync 0..300 s, port 1..65535, benches 1..64.
# (v1 refused BANC_FSYNC_INTERVAL_S=0, "at least 0.1": v2 allows 0, an fsync at every flush.)
SETTING_ATTRIBUTES = {
    "BANC_MQTT_PORT": "mqtt_port",
    "BANC_NUM_BANCS": "num_bancs",
    "BANC_BMS_TIMEOUT_S": "bms_timeout_s",
    "BANC_SCAN_TIMEOUT_S": "scan_timeout_s",
    "BANC_FSYNC_INTERVAL_S": "fsync_interval_s",
}
TIMEOUTS = ("BANC_BMS_TIMEOUT_S", "BANC_SCAN_TIMEOUT_S")


@pytest.mark.parametrize(
    "name, value, expected",
    [
        *[(t, v, e) for t in TIMEOUTS for v, e in
          [("1", 1.0), ("1.0", 1.0), ("1.01", 1.01), ("30", 30.0), ("2.5", 2.5), ("3599.99", 3599.99), ("3600", 3600.0),
           ("3600.00", 3600.0), (" 20 ", 20.0), ("", None), ("  ", None)]],
        ("BANC_FSYNC_INTERVAL_S", "0", 0.0), ("BANC_FSYNC_INTERVAL_S", "0.0", 0.0), ("BANC_FSYNC_INTERVAL_S", "-0", 0.0),
        ("BANC_FSYNC_INTERVAL_S", "0.1", 0.1), ("BANC_FSYNC_INTERVAL_S", "300", 300.0), ("BANC_FSYNC_INTERVAL_S", "", None),
        ("BANC_MQTT_PORT", "1", 1), ("BANC_MQTT_PORT", "1883", 1883), ("BANC_MQTT_PORT", "65535", 65535),
        ("BANC_MQTT_PORT", "", None),
        ("BANC_NUM_BANCS", "1", 1), ("BANC_NUM_BANCS", "16", 16), ("BANC_NUM_BANCS", "64", 64), ("BANC_NUM_BANCS", "", None),
    ],
)
def test_settings_accept_values_in_range(name: str, value: str, expected: float | None) -> None:
    settings = environment.load_settings({name: value})
    default = getattr(environment.load_settings({}), SETTING_ATTRIBUTES[name])
    got = getattr(settings, SETTING_ATTRIBUTES[name])
    assert got == (default if expected is None else expected)
    assert type(got) is (int if name in ("BANC_MQTT_PORT", "BANC_NUM_BANCS") else float)


GARBAGE = ["nan", "NaN", "inf", "-inf", "Infinity", "abc", "soon", "30s", "1e3", "1E1", "0x10", "+5", "1_000", "5.",
           ".5", "--1", "1,5", "１", "1\n2", "\x00"]


@pytest.mark.parametrize(
    "name, value",
    [
        *[(t, v) for t in TIMEOUTS for v in ["0.99", "0", "-1", "3600.01", "3601", "99999", "030", *GARBAGE]],
        *[("BANC_FSYNC_INTERVAL_S", v) for v in ["-0.01", "-1", "300.01", "301", "1e2", *GARBAGE]],
        *[("BANC_MQTT_PORT", v) for v in ["0", "65536", "99999", "-1", "1883.0", "1883.5", "01883", "2.5", *GARBAGE]],
        *[("BANC_NUM_BANCS", v) for v in ["0", "65", "10000", "-1", "2.5", "4.0", "04", *GARBAGE]],
    ],
)
def test_settings_reject_bad_values(name: str, value: str) -> None:
    with pytest.raises(environment.SettingsError, match=name) as info:
        environment.load_settings({name: value})
    assert "\n" not in str(info.value)  # one line on stderr, whatever the value holds


@pytest.fixture(scope="module")
def ca_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (self-signed, EC) CA certificate, as install.sh makes."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(folder / "ca.key"), "-subj", "/CN=test CA", "-days", "2", "-out", str(folder / "ca.crt")],
        check=True, capture_output=True,
    )
    return folder / "ca.crt"


@pytest.mark.parametrize(
    "env, port, cafile",
    [
        ({}, 1883, None),
        ({"BANC_MQTT_CAFILE": ""}, 1883, None),
        ({"BANC_MQTT_CAFILE": "  "}, 1883, None),
        ({"BANC_MQTT_CAFILE": "{ca}"}, 8883, "{ca}"),  # TLS without a port: the TLS port, as mosquitto_sub does
        ({"BANC_MQTT_CAFILE": " {ca} ", "BANC_MQTT_PORT": ""}, 8883, "{ca}"),
        ({"BANC_MQTT_CAFILE": "{ca}", "BANC_MQTT_PORT": "18883"}, 18883, "{ca}"),  # an explicit port wins
        ({"BANC_MQTT_PORT": "8883"}, 8883, None),  # a port alone does not turn TLS on
    ],
)
def test_settings_ca_file_and_its_port(ca_cert: Path, env: dict[str, str], port: int, cafile: str | None) -> None:
    ca = ca_cert
    settings = environment.load_settings({k: v.format(ca=ca) for k, v in env.items()})
    assert settings.mqtt_port == port
    assert settings.mqtt_cafile == (None if cafile is None else Path(cafile.format(ca=ca)))


@pytest.mark.parametrize(
    "value, content, reason",
    [
        ("{tmp}/missing.crt", None, "is not a file"),
        ("{tmp}", None, "is not a file"),
        ("/dev/null/x", None, "is not a file"),
        ("{tmp}/empty.crt", "", "is not a readable PEM certificate"),
        ("{tmp}/truncated.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n", "is not a readable PEM certificate"),
        ("{tmp}/key.pem", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
         "is not a readable PEM certificate"),
    ],
)
def test_settings_reject_a_ca_file_that_is_not_a_certificate(
    tmp_path: Path, value: str, content: str | None, reason: str
) -> None:
    path = Path(value.format(tmp=tmp_path))
    if content is not None:
        path.write_text(content)
    with pytest.raises(environment.SettingsError, match="BANC_MQTT_CAFILE") as info:
        environment.load_settings({"BANC_MQTT_CAFILE": str(path)})
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_settings_error_message_is_short_and_names_the_range() -> None:
    with pytest.raises(environment.SettingsError) as info:
        environment.load_settings({"BANC_MQTT_PORT": "65536"})
    assert str(info.value) == "BANC_MQTT_PORT='65536' is out of range (expected 1..65535)"
    with pytest.raises(environment.SettingsError) as info:
        environment.load_settings({"BANC_BMS_TIMEOUT_S": "x" * 5000})
    assert len(str(info.value)) < 200


# Each entry point refuses an invalid setting before anything else: exit 2, a single stderr
# line naming the variable, nothing under BANC_HOME. (ui.py stops before opening a display.)
ENTRY_POINTS = {
    "banc.py": ["banc1", "RW-TEST0001"],
    "report.py": ["{tmp}/no-such-test-folder"],
    "ui.py": ["--windowed"],
    "simulator.py": [],
}


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    "name, value",
    [("BANC_BMS_TIMEOUT_S", "nan"), ("BANC_SCAN_TIMEOUT_S", "3600.01"), ("BANC_FSYNC_INTERVAL_S", "inf"),
     ("BANC_MQTT_PORT", "99999"), ("BANC_NUM_BANCS", "10000"), ("BANC_MQTT_CAFILE", "/nonexistent/ca.crt")],
)
def test_entry_points_exit_2_on_invalid_setting_and_create_nothing(
    script: str, name: str, value: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env.update({"BANC_HOME": str(home), "BANC_MQTT_HOST": "127.0.0.1", "BANC_MQTT_PORT": "1", name: value})
    args = [a.format(tmp=tmp_path) for a in ENTRY_POINTS[script]]
    result = subprocess.run([sys.executable, str(REPO_DIR / script), *args], cwd=REPO_DIR, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and name in result.stderr, result.stderr
    assert result.stderr.startswith(script), result.stderr
    assert result.stdout == ""
    assert sorted(home.rglob("*")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_only_the_environment_module_reads_the_environment() -> None:
    offenders = []
    for path in [*REPO_DIR.glob("*.py"), *(REPO_DIR / "banclfp").rglob("*.py")]:
        if path.name == "environment.py" or "testkit" in path.parts:
            continue  # the test kit builds the environments of the processes it starts
        text = path.read_text(encoding="utf-8")
        if "os.environ" in text or "os.getenv" in text:
            offenders.append(str(path.relative_to(REPO_DIR)))
    assert offenders == []


# =========================================================================== benches and serials


@pytest.mark.parametrize(
    "serial, valid",
    [
        ("RW-48v29155551", True),
        ("RW-ABCD", True),
        ("RW-" + "a" * 32, True),
        ("RW-ABC", False),  # too short
        ("RW-" + "a" * 33, False),  # too long
        ("RW-" + "a" * 197, False),  # 200 characters
        ("RW-../x", False),
        ("RW-a/b", False),
        ("RW-ab/../../etc", False),
        ("RW-AB CD", False),
        (" RW-ABCD", False),
        ("RW-ABCD ", False),
        ("RW-ABCD\n", False),
        ("RW-ABCD\x00", False),
        ("RW-ABCD#", False),
        ("RW-ABCD+", False),
        ("RW-ABC\u0661", False),  # a non-ASCII digit
        ("rw-ABCD", False),
        ("XX-ABCD", False),
        ("", False),
        (None, False),
        (12345678, False),
    ],
)
def test_serial_validation(serial: object, valid: bool) -> None:
    assert store.is_valid_serial(serial) is valid


@pytest.mark.parametrize(
    "banc, expected",
    [("banc1", "banc1"), ("Banc2", "banc2"), ("BANC4", "banc4"), (3, "banc3"), (" banc1 ", "banc1")],
)
def test_normalize_banc(banc_home: Path, banc: int | str, expected: str) -> None:
    assert store.normalize_banc(banc) == expected
    assert store.is_valid_banc(banc)


@pytest.mark.parametrize("banc", ["banc0", "banc5", "banc01", "banc-1", "bancX", "banc1/../x", "", "1", 0, None, 2.0, True])
def test_invalid_bancs(banc_home: Path, banc: object) -> None:
    assert not store.is_valid_banc(banc)


def test_num_bancs_from_environment(banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANC_NUM_BANCS", "6")
    environment.reload_settings()
    assert store.all_bancs() == [f"banc{n}" for n in range(1, 7)]
    assert store.is_valid_banc("banc6") and not store.is_valid_banc("banc7")


# =========================================================================== bancs_config.json


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_missing_bancs_config_is_created(banc_home: Path) -> None:
    config = store.load_bancs_config()
    assert config == _read(banc_home / "bancs_config.json")
    assert [e["name"] for e in config["bancs"]] == ["Banc1", "Banc2", "Banc3", "Banc4"]
    assert all(e["status"] == "available" and e["serial-pending"] is None and e["current_step"] is None for e in config["bancs"])


def test_create_default_config_with_count(banc_home: Path) -> None:
    config = store.create_default_config(6)
    assert len(config["bancs"]) == 6
    assert _read(banc_home / "bancs_config.json") == config


@pytest.mark.parametrize(
    "content",
    ["{not json", "", "[]", '{"bancs": 3}', '{"bancs": [{"name": "Banc1", "status": "weird"}]}', "\x00\x00\x00"],
)
def test_corrupt_bancs_config_is_kept_aside_and_recreated(
    banc_home: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (banc_home / "bancs_config.json").write_text(content, encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        config = store.load_bancs_config()
    assert len(config["bancs"]) == 4
    kept = list(banc_home.glob("bancs_config.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == content
    assert _read(banc_home / "bancs_config.json") == config
    assert any("corrupt" in r.message for r in caplog.records)


def test_bench_count_growth_keeps_existing_state(banc_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.set_banc_status("banc2", "occupied", "RW-GROW0001", 3)
    monkeypatch.setenv("BANC_NUM_BANCS", "6")
    environment.reload_settings()
    config = store.load_bancs_config()
    assert [e["name"] for e in config["bancs"]] == [f"Banc{n}" for n in range(1, 7)]
    assert config["bancs"][1]["serial-pending"] == "RW-GROW0001"


def test_set_get_and_reset_banc(banc_home: Path) -> None:
    entry = store.set_banc_status("Banc3", "occupied", "RW-ABCD1234", 2)
    assert entry == {"name": "Banc3", "status": "occupied", "serial-pending": "RW-ABCD1234", "current_step": 2}
    assert store.get_banc_info("banc3") == entry
    assert store.get_banc_for_serial("RW-ABCD1234") == "banc3"
    assert store.get_banc_for_serial("rw-abcd1234") == "banc3"
    assert store.get_banc_for_serial("RW-OTHER123") is None
    store.update_bancs_config_current_step("banc3", 4)
    assert store.get_banc_info("banc3")["current_step"] == 4
    store.reset_banc_config("banc3")
    assert store.get_banc_info("banc3") == {"name": "Banc3", "status": "available", "serial-pending": None, "current_step": None}
    assert store.get_banc_for_serial("RW-ABCD1234") is None


@pytest.mark.parametrize(
    "args, error",
    [(("banc9", "occupied", "RW-ABCD1234"), "no such bench"), (("banc1", "busy"), "invalid status"),
     (("banc1", "occupied", "RW-../x"), "invalid serial")],
)
def test_set_banc_status_rejects_bad_input(banc_home: Path, args: tuple, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        store.set_banc_status(*args)


def test_save_bancs_config_refuses_invalid(banc_home: Path) -> None:
    store.load_bancs_config()
    with pytest.raises(ValueError):
        store.save_bancs_config({"bancs": "nope"})
    assert len(store.load_bancs_config()["bancs"]) == 4


def test_save_and_load_roundtrip(banc_home: Path) -> None:
    config = store.load_bancs_config()
    config["bancs"][0].update({"status": "occupied", "serial-pending": "RW-SAVE0001", "current_step": 1})
    store.save_bancs_config(config)
    assert store.load_bancs_config() == config


# =========================================================================== atomic writes


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    storage.atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        storage.atomic_write_json(path, {"a": object()})
    assert _read(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_file_lock_excludes_other_processes(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    script = textwrap.dedent(
        f"""
        import sys, time
        from banclfp.infra import storage
        from pathlib import Path
        print("ready", flush=True)
        start = time.monotonic()
        with storage.file_lock(Path({str(target)!r})):
            print(round(time.monotonic() - start, 3))
        """
    )
    with storage.file_lock(target):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        # Held from the moment the child is ready to take it (its imports take a variable time on a busy machine).
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(0.6)
        assert child.poll() is None  # still waiting for our lock
    out, _ = child.communicate(timeout=10)
    assert float(out) >= 0.5


# =========================================================================== test folders and per-test config


NOW = paris(2026, 11, 24, 10, 30)


def test_find_or_create_test_folder_new_then_resume(banc_home: Path) -> None:
    folder, resumed = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    assert (folder, resumed) == (banc_home / "data" / "banc1" / "24112026-RW-ABCD1234", False)
    store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    again, resumed = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW + timedelta(days=1))
    assert (again, resumed) == (folder, True)
    assert store.find_battery_folder("RW-ABCD1234") == folder
    assert store.find_battery_folder("RW-ABCD1234", "banc2") is None


def test_finished_battery_gets_a_new_folder(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    store.set_banc_status("banc1", "occupied", "RW-ABCD1234", 1)
    store.update_config(folder, 5, NOW + timedelta(hours=5))
    same_day, resumed = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW + timedelta(hours=6))
    assert not resumed and same_day.name == "24112026-RW-ABCD1234-2"
    # a folder whose test never wrote its config (crash right after creation) is resumed, not duplicated
    assert store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW + timedelta(hours=7)) == (same_day, True)
    store.load_or_create_config(same_day, "banc1", "RW-ABCD1234", NOW + timedelta(hours=6))
    store.update_config(same_day, 5, NOW + timedelta(hours=8))
    later, resumed = store.find_or_create_test_folder("banc1", "RW-ABCD1234", paris(2026, 12, 1, 9, 0))
    assert not resumed and later.name == "01122026-RW-ABCD1234"
    store.load_or_create_config(later, "banc1", "RW-ABCD1234", paris(2026, 12, 1, 9, 0))
    assert store.find_battery_folder("RW-ABCD1234") == later
    latest = store.latest_test("RW-ABCD1234")
    assert latest is not None and latest.path == later and not latest.finished


def test_find_battery_folder_ignores_strangers(banc_home: Path) -> None:
    for name in ("notes", "24112026-RW-../x", "99999999-RW-ABCD1234", "24112026-XX-ABCD1234"):
        (banc_home / "data" / "banc1" / name).mkdir(parents=True, exist_ok=True)
    (banc_home / "data" / "misc").mkdir()
    assert store.find_battery_folder("RW-ABCD1234") is None
    assert store.find_battery_folder("RW-../x") is None
    assert store.list_test_folders() == []


def test_find_battery_folder_across_benches_picks_latest(banc_home: Path) -> None:
    old = banc_home / "data" / "banc2" / "01102026-RW-MOVE0001"
    new = banc_home / "data" / "banc4" / "03112026-RW-MOVE0001"
    for folder in (old, new):
        folder.mkdir(parents=True)
    assert store.find_battery_folder("RW-MOVE0001") == new


def test_load_or_create_config_contents(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc2", "RW-48v29155551", NOW)
    config = store.load_or_create_config(folder, "banc2", "RW-48v29155551", NOW)
    seed_keys = {
        "battery_serial", "banc", "current_step", "first_handle", "timestamp_last_update", "capacity_ah",
        "capacity_wh", "ri_discharge_average", "ri_charge_average", "diffusion_discharge_average",
        "diffusion_charge_average",
    }
    assert seed_keys <= set(config)
    assert config["battery_serial"] == "RW-48v29155551" and config["banc"] == "banc2"
    assert config["current_step"] == 1 and config["status"] == "running"
    assert config["first_handle"] == "2026-11-24T10:30:00+01:00"
    assert store.read_test_config(folder) == record.TestSummary.from_json(config)
    # loading again returns the stored file, not a new one
    store.update_config_bms(folder, 12.5, 640.0, NOW + timedelta(minutes=1))
    assert store.load_or_create_config(folder, "banc2", "RW-48v29155551", NOW + timedelta(hours=1))["capacity_ah"] == 12.5


def test_corrupt_test_config_is_kept_and_rebuilt(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    (folder / "config.json").write_text('{"battery_serial": "RW-ABCD12', encoding="utf-8")
    config = store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    assert config["current_step"] == 1
    assert len(list(folder.glob("config.json.corrupt-*"))) == 1


def test_create_data_csv_header_once(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    path = store.create_data_csv(folder)
    header = "timestamp,step,seq,voltage_v,current_a,soc_pct,temperature_c,capacity_ah,energy_wh,cell_min_mv,cell_max_mv,balancing,uptime_ms,measured_at\n"  # docs/fichiers.md
    assert path.read_text() == header
    with open(path, "a") as fh:
        fh.write("row\n")
    store.create_data_csv(folder)
    assert path.read_text() == header + "row\n"


def test_update_config_updates_both_files(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    store.set_banc_status("banc1", "occupied", "RW-ABCD1234", 1)
    config = store.update_config(folder, 3, NOW + timedelta(hours=2))
    assert config["current_step"] == 3 and config["status"] == "running"
    assert config["timestamp_last_update"] == "2026-11-24T12:30:00+01:00"
    assert store.get_banc_info("banc1")["current_step"] == 3
    config = store.update_config(folder, 5, NOW + timedelta(hours=4))
    assert config["status"] == "finished" and config["end_time"] == "2026-11-24T14:30:00+01:00"
    with pytest.raises(ValueError):
        store.update_config(folder, 9, NOW)


def test_update_config_bms_and_counters(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    config = store.update_config_bms(folder, 95.81234, 4905.4321, NOW, {"rows_count": 1000, "rejected_count": 2})
    assert (config["capacity_ah"], config["capacity_wh"]) == (95.8123, 4905.432)
    assert (config["rows_count"], config["rejected_count"]) == (1000, 2)


def test_update_config_ri_results_running_means(banc_home: Path) -> None:
    folder, _ = store.find_or_create_test_folder("banc1", "RW-ABCD1234", NOW)
    store.load_or_create_config(folder, "banc1", "RW-ABCD1234", NOW)
    pulses = [
        {"ri_discharge": 0.010, "diffusion_discharge": 0.004, "temperature_c": 24.0},
        {"ri_discharge": 0.012, "ri_charge": 0.009},
        {"ri_discharge": 0.014, "diffusion_charge": 0.005, "temperature_c": 26.0},
    ]
    for pulse in pulses:
        config = store.update_config_ri_results(folder, pulse, NOW)
    assert config["ri_discharge_average"] == pytest.approx(0.012)
    assert config["ri_discharge_count"] == 3
    assert (config["ri_charge_average"], config["ri_charge_count"]) == (pytest.approx(0.009), 1)
    assert (config["diffusion_discharge_average"], config["diffusion_discharge_count"]) == (pytest.approx(0.004), 1)
    assert (config["diffusion_charge_average"], config["diffusion_charge_count"]) == (pytest.approx(0.005), 1)
    assert config["ri_temperature_c"] == 26.0


@pytest.mark.parametrize(
    "values, expected",
    [([5.0], 5.0), ([1.0, 2.0, 3.0, 4.0], 2.5), ([0.001] * 1000, 0.001), ([1e-3, 3e-3], 2e-3)],
)
def test_running_mean(values: list[float], expected: float) -> None:
    mean, count = None, 0
    for value in values:
        mean, count = record.running_mean(mean, count, value)
    assert count == len(values)
    assert mean == pytest.approx(expected)


@pytest.mark.parametrize(
    "moment, millis, expected",
    [
        (paris(2026, 11, 24, 10, 30, 5), False, "2026-11-24T10:30:05+01:00"),
        (paris(2026, 7, 1, 8, 0, 0), False, "2026-07-01T08:00:00+02:00"),
        (datetime(2026, 7, 1, 8, 0, 0, 123456, tzinfo=LOCAL_TZ), True, "2026-07-01T08:00:00.123+02:00"),
    ],
)
def test_iso_has_offset(moment: datetime, millis: bool, expected: str) -> None:
    assert record.iso(moment, millis) == expected
    assert record.parse_time(expected) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_parse_time_tolerates_junk() -> None:
    assert record.parse_time("not a time") is None
    assert record.parse_time(None) is None
    assert record.parse_time("2026-11-24T10:30:00") == paris(2026, 11, 24, 10, 30)


# =========================================================================== business hours

# 2026: Armistice Wed 11 Nov, Christmas Fri 25 Dec; 2027: New Year Fri 1 Jan, Easter Monday 29 Mar.
# DST in France: Sun 29 Mar 2026 (+1 h), Sun 25 Oct 2026 (-1 h), Sun 28 Mar 2027.
BUSINESS_CASES = [
    # (start, end, business hours)
    (paris(2026, 11, 24, 10), paris(2026, 11, 24, 12), 2.0),  # same day
    (paris(2026, 11, 23, 12), paris(2026, 11, 25, 12), 48.0),  # Mon -> Wed, plain
    (paris(2026, 11, 20, 12), paris(2026, 11, 23, 12), 24.0),  # Fri -> Mon: weekend skipped
    (paris(2026, 11, 20, 12), paris(2026, 11, 24, 12), 48.0),  # Fri -> Tue: exactly 48 h
    (paris(2026, 11, 21, 10), paris(2026, 11, 22, 20), 0.0),  # inside a weekend
    (paris(2026, 11, 21, 10), paris(2026, 11, 23, 10), 10.0),  # Sat -> Mon
    (paris(2026, 11, 10, 12), paris(2026, 11, 12, 12), 24.0),  # Tue -> Thu over Armistice (Wed)
    (paris(2026, 12, 24, 0), paris(2026, 12, 29, 0), 48.0),  # Christmas Fri + weekend
    (paris(2026, 12, 31, 12), paris(2027, 1, 4, 12), 24.0),  # New Year Fri + weekend, year change
    (paris(2027, 3, 26, 12), paris(2027, 3, 31, 12), 48.0),  # weekend + Easter Monday + DST change
    (paris(2026, 10, 23, 12), paris(2026, 10, 27, 12), 48.0),  # DST end weekend (real time: 97 h)
    (paris(2026, 3, 27, 12), paris(2026, 3, 31, 12), 48.0),  # DST start weekend (real time: 95 h)
    (paris(2026, 11, 24, 12), paris(2026, 11, 24, 11), 0.0),  # end before start
]


@pytest.mark.parametrize("start, end, hours", BUSINESS_CASES)
def test_business_hours_between(start: datetime, end: datetime, hours: float) -> None:
    assert business_hours.business_hours_between(start, end) == pytest.approx(hours)


@pytest.mark.parametrize("start, end, hours", [c for c in BUSINESS_CASES if c[2] > 0])
def test_add_business_hours_is_the_inverse(start: datetime, end: datetime, hours: float) -> None:
    result = business_hours.add_business_hours(start, hours)
    assert business_hours.business_hours_between(start, result) == pytest.approx(hours)
    # the earliest such moment: when the span ends on a non-business day, the sum stops before it
    assert result <= end


@pytest.mark.parametrize(
    "start, hours, expected",
    [
        (paris(2026, 11, 24, 12), 48, paris(2026, 11, 26, 12)),  # Tue + 48 h = Thu
        (paris(2026, 11, 20, 12), 48, paris(2026, 11, 24, 12)),  # Fri + 48 h = Tue
        (paris(2026, 11, 21, 15), 1, paris(2026, 11, 23, 1)),  # from a Saturday
        (paris(2026, 10, 23, 12), 48, paris(2026, 10, 27, 12)),  # over the DST end: wall clock kept
        (paris(2026, 11, 10, 12), 24, paris(2026, 11, 12, 12)),  # over Armistice
        (paris(2026, 11, 24, 12), 0, paris(2026, 11, 24, 12)),
    ],
)
def test_add_business_hours(start: datetime, hours: float, expected: datetime) -> None:
    assert business_hours.add_business_hours(start, hours) == expected


@pytest.mark.parametrize(
    "now, past",
    [
        (paris(2026, 11, 24, 12), True),  # exactly 48 business hours
        (paris(2026, 11, 24, 12) - timedelta(seconds=1), False),
        (paris(2026, 11, 23, 23, 59), False),
        (paris(2026, 11, 25, 9), True),
    ],
)
def test_is_past_business_hours_boundary(now: datetime, past: bool) -> None:
    assert business_hours.is_past_business_hours(paris(2026, 11, 20, 12), now) is past


def test_business_hours_accept_naive_and_utc_times() -> None:
    from zoneinfo import ZoneInfo

    naive = datetime(2026, 11, 20, 12)
    utc = paris(2026, 11, 24, 12).astimezone(ZoneInfo("UTC"))
    assert business_hours.business_hours_between(naive, utc) == pytest.approx(48.0)
    with pytest.raises(ValueError):
        business_hours.add_business_hours(naive, -1)


@pytest.mark.parametrize(
    "day, business",
    [(date(2026, 11, 24), True), (date(2026, 11, 21), False), (date(2026, 11, 22), False),
     (date(2026, 11, 11), False), (date(2026, 7, 14), False), (date(2026, 5, 14), False), (date(2026, 5, 25), False),
     (date(2026, 12, 24), True)],
)
def test_is_business_day(day: date, business: bool) -> None:
    assert business_hours.is_business_day(day) is business


# =========================================================================== static files


@pytest.mark.parametrize(
    "voltage_v, remaining_s",
    [
        (40.0, 8100.0),  # first point
        (58.4, 900.0),  # last point
        (53.3, 5000.0),  # a point
        (53.2, 5400.0),  # between 53.1 (5800) and 53.3 (5000)
        (55.0, 1350.0),  # between 54.6 (1500) and 55.4 (1200)
        (30.0, 8100.0),  # below: clamped
        (60.0, 900.0),  # above: clamped
    ],
)
def test_get_charge_duration(banc_home: Path, voltage_v: float, remaining_s: float) -> None:
    assert environment.get_charge_duration(voltage_v) == pytest.approx(remaining_s)


def test_charge_profile_is_monotonic(banc_home: Path) -> None:
    voltages = [40 + i * 0.05 for i in range(400)]
    durations = [environment.get_charge_duration(v) for v in voltages]
    assert all(a >= b for a, b in zip(durations, durations[1:]))


@pytest.mark.parametrize(
    "temperature_c, multiplier",
    [(25.0, 1.0), (-20.0, 0.1008), (60.0, 3.8812), (-40.0, 0.1008), (80.0, 3.8812)],
)
def test_get_temperature_coefficient(banc_home: Path, temperature_c: float, multiplier: float) -> None:
    assert environment.get_temperature_coefficient(temperature_c) == pytest.approx(multiplier, rel=1e-4)


def test_temperature_coefficients_follow_arrhenius(banc_home: Path) -> None:
    import math

    data = json.loads((REPO_DIR / "temperature_coefficients.json").read_text())
    ea, r = data["activation_energy_j_per_mol"], data["gas_constant_j_per_mol_k"]
    assert 30000 <= ea <= 35000
    for t in (-12.5, 0.0, 17.0, 32.5, 47.0):  # between points: interpolation stays within 1 % of the law
        law = math.exp(-(ea / r) * (1 / (t + 273.15) - 1 / 298.15))
        assert environment.get_temperature_coefficient(t) == pytest.approx(law, rel=0.01)
    # a colder measurement reads a higher resistance, brought down to 25 °C
    assert environment.correct_to_25c(0.020, 10.0) < 0.020 < environment.correct_to_25c(0.020, 40.0)
    assert environment.correct_to_25c(0.020, None) == 0.020


def test_static_files_are_loaded_lazily_and_from_home(banc_home: Path) -> None:
    assert environment._load_charge_profile.cache_info().currsize == 0
    assert environment._load_temp_coeffs.cache_info().currsize == 0
    (banc_home / "charge_profile.csv").write_text("voltage_v,remaining_s\n40,100\n60,0\n")
    assert environment.get_charge_duration(50) == pytest.approx(50)
    assert environment._load_charge_profile.cache_info().currsize == 1
    assert environment._load_temp_coeffs.cache_info().currsize == 0


@pytest.mark.parametrize(
    "content, where",
    [
        ("voltage,remaining\n40,100\n", ":1:"),
        ("# comment\nvoltage_v,remaining_s\n40,100\n41,abc\n", ":4:"),
        ("voltage_v,remaining_s\n40,100\n39,50\n", ":3:"),
        ("voltage_v,remaining_s\n40,100\n41,200\n", ":3:"),
        ("voltage_v,remaining_s\n40,100,3\n", ":2:"),
        ("voltage_v,remaining_s\n40,nan\n", ":2:"),
        ("voltage_v,remaining_s\n40,100\n", "at least 2"),
    ],
)
def test_malformed_charge_profile_names_file_and_line(banc_home: Path, content: str, where: str) -> None:
    (banc_home / "charge_profile.csv").write_text(content)
    with pytest.raises(environment.ConfigFileError) as err:
        environment.get_charge_duration(50)
    assert "charge_profile.csv" in str(err.value) and where in str(err.value)


@pytest.mark.parametrize(
    "content, where",
    [
        ('{\n  "coefficients": [\n    {"temperature_c": 0, "multiplier": 0.5},\n  ]\n}\n', ":4:"),
        ('{"coefficients": [{"temperature_c": 0, "multiplier": 1}]}', "at least 2"),
        ('{\n"coefficients": [\n{"temperature_c": 0, "multiplier": 1},\n{"temperature_c": -5, "multiplier": 1}\n]}', ":4:"),
        ('{\n"coefficients": [\n{"temperature_c": 0, "multiplier": 1},\n{"temperature_c": 5, "multiplier": -1}\n]}', ":4:"),
        ('{\n"coefficients": [\n{"temperature_c": 0, "multiplier": 1},\n{"temperature_c": "hot", "multiplier": 2}\n]}', ":4:"),
    ],
)
def test_malformed_temperature_coefficients_name_file_and_line(banc_home: Path, content: str, where: str) -> None:
    (banc_home / "temperature_coefficients.json").write_text(content)
    with pytest.raises(environment.ConfigFileError) as err:
        environment.get_temperature_coefficient(20)
    assert "temperature_coefficients.json" in str(err.value) and where in str(err.value)


# =========================================================================== logging


def test_logging_from_several_processes_keeps_whole_lines(banc_home: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from banclfp.infra import logs
        logs.setup_logging(sys.argv[1])
        for i in range(300):
            logs.log("message %d %s" % (i, "x" * 200), "warning")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env["BANC_HOME"] = str(banc_home)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"proc{n}"], env=env, stderr=subprocess.DEVNULL)
        for n in range(4)
    ]
    for proc in procs:
        assert proc.wait(30) == 0
    lines = (banc_home / "logs.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1200
    for n in range(4):
        mine = [line for line in lines if f" proc{n}[" in line]
        assert len(mine) == 300
        assert all(line.endswith("x" * 200) and "WARNING" in line for line in mine)


# =========================================================================== processes


FAKE_BANC = """
import sys, time
from banclfp.recording import store
fd = store.acquire_banc_lock(sys.argv[1])
print("locked" if fd is not None else "busy", flush=True)
time.sleep(60)
"""


def _start_fake(tmp_path: Path, home: Path, script_name: str, banc: str) -> subprocess.Popen:
    script = tmp_path / script_name
    script.write_text(FAKE_BANC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env["BANC_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, str(script), banc, "RW-FAKE0001"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.first_line = proc.stdout.readline().strip()  # type: ignore[attr-defined]
    return proc


def test_is_banc_running(banc_home: Path, tmp_path: Path) -> None:
    assert not store.is_banc_running("banc1")
    proc = _start_fake(tmp_path, banc_home, "banc.py", "banc1")
    try:
        assert proc.first_line == "locked"  # type: ignore[attr-defined]
        assert store.is_banc_running("banc1") and store.is_banc_running("Banc1")
        assert store.banc_process_pid("banc1") == proc.pid
        assert not store.is_banc_running("banc2")
        assert store.acquire_banc_lock("banc1") is None  # a second banc.py for banc1 is refused
        # another installation (another BANC_HOME) does not see it
        other = tmp_path / "other-home"
        other.mkdir()
        script = "import utils; print(utils.is_banc_running('banc1'))"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
        env["BANC_HOME"] = str(other)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "False"
    finally:
        proc.kill()
        proc.wait()
    assert not store.is_banc_running("banc1")  # killed: the kernel released the lock


def test_is_banc_running_ignores_other_programs(banc_home: Path, tmp_path: Path) -> None:
    proc = _start_fake(tmp_path, banc_home, "notbanc.py", "banc1")
    try:
        assert proc.first_line == "locked"  # type: ignore[attr-defined]
        assert not store.is_banc_running("banc1")  # the lock holder is not banc.py
    finally:
        proc.kill()
        proc.wait()
    # a stale pid file pointing at a live process that is not banc.py
    store.banc_lock_path("banc2").write_text(f"{os.getpid()}\n")
    assert not store.is_banc_running("banc2")


def test_sd_notify_without_systemd(banc_home: Path) -> None:
    assert environment.sd_notify("WATCHDOG=1") is False


def test_sd_notify_sends_datagram(banc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        environment.reload_settings()
        assert environment.sd_notify("READY=1") is True
        server.settimeout(2)
        assert server.recv(64) == b"READY=1"


def test_protocol_and_utils_agree_on_csv_header() -> None:
    assert record.DATA_CSV_HEADER[2:] == protocol.BMS_FIELDS + ("uptime_ms", "measured_at")
