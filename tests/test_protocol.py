"""Tests of protocol.py: topics, QoS, and every payload codec (contract §2, §3)."""

from __future__ import annotations

import math

import pytest

import protocol
from protocol import BmsLine, PayloadError

EXAMPLE = "1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0"


def test_topics_of_a_bench() -> None:
    t = protocol.topics("Banc3")
    assert (t.step, t.bms_data, t.security, t.ri_results, t.command) == (
        "banc3/step", "banc3/bms/data", "banc3/security", "banc3/ri/results", "banc3/command",
    )
    assert (t.esp_status, t.banc_status) == ("banc3/esp/status", "banc3/banc/status")
    assert t.nurses == tuple(f"banc3/n{j}" for j in range(1, 7))
    with pytest.raises(ValueError):
        t.nurse(7)


@pytest.mark.parametrize("bad", ["banc0", "banc", "bench1", "banc1/x", "banc-1", "banc01", 0, -2, True, "1.5"])
def test_banc_id_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        protocol.banc_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "topic, qos, retained",
    [
        ("banc1/step", 1, False), ("banc1/bms/data", 1, False), ("banc1/security", 1, False),
        ("banc1/ri/results", 1, False), ("banc12/n6", 0, False), ("banc1/command", 1, False),
        ("banc1/esp/status", 1, True), ("banc1/banc/status", 1, True),
    ],
)
def test_qos_and_retain_per_contract(topic: str, qos: int, retained: bool) -> None:
    assert protocol.qos_for(topic) == qos
    assert protocol.retained_for(topic) is retained


@pytest.mark.parametrize(
    "topic, parsed",
    [
        ("banc1/step", (1, "step", None)),
        ("banc16/bms/data", (16, "bms/data", None)),
        ("banc2/n3", (2, "nurse", 3)),
        ("banc2/n7", None),
        ("banc0/step", None),
        ("banc1/step/extra", None),
        ("other/step", None),
        ("banc1/", None),
    ],
)
def test_parse_topic(topic: str, parsed: tuple | None) -> None:
    info = protocol.parse_topic(topic)
    assert (None if info is None else (info.banc_number, info.kind, info.nurse_index)) == parsed


def test_subscriptions_cover_every_topic_with_its_qos() -> None:
    ui = dict(protocol.ui_subscriptions(2))
    assert len(ui) == 2 * 12
    assert all(protocol.qos_for(topic) == qos for topic, qos in ui.items())
    assert "banc2/n6" in ui and "banc2/command" not in ui
    # banc/sync: banc.py's own marker, received back once the backlog is in (contract v2 §2).
    assert protocol.banc_process_subscriptions("banc1") == [("banc1/step", 1), ("banc1/bms/data", 1), ("banc1/ri/results", 1),
                                                          ("banc1/banc/sync", 1)]
    assert protocol.esp_subscriptions(1) == [("banc1/command", 1)]


def test_parse_bms_example() -> None:
    line = protocol.parse_bms_line(EXAMPLE.encode())
    assert line == BmsLine(1842, 52.31, -12.40, 67.5, 24.8, 45.123, 2301.5, 3265.0, 3281.0, 0)
    assert line.cell_spread_mv == 16.0
    assert protocol.parse_bms_line(protocol.encode_bms_line(line)) == line


@pytest.mark.parametrize(
    "payload, reason",
    [
        ("", "expected 10 fields"),
        ("garbage", "expected 10 fields"),
        ("1,2,3", "expected 10 fields"),
        (EXAMPLE + ",1", "expected 10 fields"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281", "expected 10 fields"),
        ("1842,nan,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v: not a finite number"),
        ("1842,52.31,inf,67.5,24.8,45.123,2301.5,3265,3281,0", "current_a: not a finite number"),
        ("1842,52.31,-12.40,67.5,-Infinity,45.123,2301.5,3265,3281,0", "temperature_c: not a finite number"),
        ("1842,52.31,-12.40,67.5,24.8,1e999,2301.5,3265,3281,0", "capacity_ah: not a finite number"),
        ("1842,52,31,-12.40,67.5,24.8,45.123,2301.5,3265,3281", "out of range"),  # comma decimal point
        ("1842,0x34,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v: not a finite number"),
        ("1_842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq: not an integer"),
        ("-1,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq out of range"),
        ("1.5,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq: not an integer"),
        ("1842,252.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v out of range"),
        ("1842,52.31,-912.40,67.5,24.8,45.123,2301.5,3265,3281,0", "current_a out of range"),
        ("1842,52.31,-12.40,101,24.8,45.123,2301.5,3265,3281,0", "soc_pct out of range"),
        ("1842,52.31,-12.40,67.5,224.8,45.123,2301.5,3265,3281,0", "temperature_c out of range"),
        ("1842,52.31,-12.40,67.5,24.8,-1,2301.5,3265,3281,0", "capacity_ah out of range"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3290,3281,0", "cell_min_mv greater"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,2", "balancing out of range"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,", "balancing: not an integer"),
        (b"1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,\xff", "not ASCII"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281," + "0" * 600, "too large"),
        (b"\x00" * 10, "expected 10 fields"),
    ],
)
def test_bms_rejects(payload: str | bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        protocol.parse_bms_line(payload)


def test_bms_accepts_whitespace_and_extreme_but_physical_values() -> None:
    line = protocol.parse_bms_line(" 0, 38.5 ,-250,0,85.0,0,0,2400,2650,1 \n")
    assert (line.seq, line.voltage_v, line.temperature_c, line.balancing) == (0, 38.5, 85.0, 1)


def test_encode_bms_never_writes_negative_zero() -> None:
    line = BmsLine(1, 52.0, -0.0001, 50.0, 25.0, 0.0, 0.0, 3300, 3310, 0)
    assert ",-0" not in protocol.encode_bms_line(line)


@pytest.mark.parametrize("payload, step", [("1", 1), ("5", 5), (b"9", 9), (" 3\n", 3)])
def test_parse_step(payload: str | bytes, step: int) -> None:
    assert protocol.parse_step(payload) == step


@pytest.mark.parametrize("payload", ["0", "6", "8", "10", "", "one", "1.0", "-1", "9" * 600, b"\xff"])
def test_parse_step_rejects(payload: str | bytes) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_step(payload)


@pytest.mark.parametrize(
    "payload, expected",
    [
        ('{"ri_discharge": 0.012}', {"ri_discharge": 0.012}),
        ('{"ri_charge": 0.011, "diffusion_charge": 0.004, "temperature_c": 23.5}',
         {"ri_charge": 0.011, "diffusion_charge": 0.004, "temperature_c": 23.5}),
        ('{"ri_discharge": 1, "ri_charge": 2, "diffusion_discharge": 3, "diffusion_charge": 4}',
         {"ri_discharge": 1.0, "ri_charge": 2.0, "diffusion_discharge": 3.0, "diffusion_charge": 4.0}),
    ],
)
def test_parse_ri_results(payload: str, expected: dict) -> None:
    assert protocol.parse_ri_results(payload) == expected
    assert protocol.parse_ri_results(protocol.encode_ri_results(expected)) == expected


@pytest.mark.parametrize(
    "payload, reason",
    [
        ("{bad json", "invalid JSON"),
        ("[0.01]", "not an object"),
        ("{}", "no Ri"),
        ('{"temperature_c": 20}', "no Ri"),
        ('{"ri_discharge": 0}', "out of range"),
        ('{"ri_discharge": -0.01}', "out of range"),
        ('{"ri_discharge": 11}', "out of range"),
        ('{"ri_discharge": NaN}', "not a finite number"),
        ('{"ri_discharge": Infinity}', "not a finite number"),
        ('{"ri_discharge": "0.01"}', "not a finite number"),
        ('{"ri_discharge": true}', "not a finite number"),
        ('{"ri_discharge": 0.01, "evil": 1}', "unknown keys"),
        ('{"ri_discharge": 0.01, "temperature_c": 500}', "temperature_c out of range"),
        ('{"ri_discharge": 0.01, "temperature_c": null}', "temperature_c: not a finite"),
        ('{"ri_discharge": 0.01, "pad": "' + "x" * 600 + '"}', "too large"),
    ],
)
def test_parse_ri_results_rejects(payload: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        protocol.parse_ri_results(payload)


@pytest.mark.parametrize("payload, soc", [("0", 0), ("100", 100), ("57", 57)])
def test_parse_nurse_soc(payload: str, soc: int) -> None:
    assert protocol.parse_nurse_soc(payload) == soc


@pytest.mark.parametrize("payload", ["-1", "101", "50.5", "", "abc"])
def test_parse_nurse_soc_rejects(payload: str) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_nurse_soc(payload)


@pytest.mark.parametrize("payload, command", [("1", 1), ("5", 5), ("end", "end"), (" end\n", "end")])
def test_parse_command(payload: str, command: object) -> None:
    assert protocol.parse_command(payload) == command
    assert protocol.parse_command(protocol.encode_command(command)) == command  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", ["9", "0", "END", "stop", ""])
def test_parse_command_rejects(payload: str) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_command(payload)


def test_status_and_security() -> None:
    assert protocol.parse_status(b"online") == "online"
    with pytest.raises(PayloadError):
        protocol.parse_status("maybe")
    assert protocol.parse_security("Timeout BMS banc1".encode()) == "Timeout BMS banc1"
    assert protocol.parse_security(b"") == "(alerte vide)"
    assert len(protocol.parse_security("é" * 500)) == 200
    assert "\x1b" not in protocol.parse_security(b"alert \x1b[31m red")
    assert protocol.encode_security("a\n b  " + "x" * 300)[:4] == "a b "
    assert len(protocol.encode_security("x" * 300)) == 200


@pytest.mark.parametrize("bad", [1.5, math.nan, 0, 6, 9, "go"])
def test_encode_rejects_invalid(bad: object) -> None:
    with pytest.raises(ValueError):
        protocol.encode_command(bad)  # type: ignore[arg-type]
