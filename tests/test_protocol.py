"""Tests of protocol.py: topics, QoS, and every payload codec (docs/protocole.md §1 to §3)."""

from __future__ import annotations

import math

import pytest

from banclfp.wire import protocol
from banclfp.wire.protocol import BmsLine, PayloadError

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
    # The kiosk keeps a session (docs/protocole.md §5): what it only displays is taken at QoS 0, never queued for it
    # while it is away (an hour of BMS lines shown on its return as if live); the rest at the contract's QoS.
    display_only = {"banc1/bms/data", "banc1/ri/results", "banc2/bms/data", "banc2/ri/results"}
    assert all(qos == (0 if topic in display_only else protocol.qos_for(topic)) for topic, qos in ui.items())
    assert ui["banc1/security"] == ui["banc1/step"] == ui["banc1/esp/status"] == 1
    assert "banc2/n6" in ui and "banc2/command" not in ui
    # banc/sync: banc.py's own marker, received back once the backlog is in (docs/protocole.md §5); its own
    # bancX/security too: every alert goes into the test's journal.
    assert protocol.banc_process_subscriptions("banc1") == [("banc1/step", 1), ("banc1/bms/data", 1), ("banc1/bms/replay", 1),
                                                              ("banc1/ri/results", 1), ("banc1/security", 1),
                                                              ("banc1/banc/sync", 1)]
    assert protocol.esp_subscriptions(1) == [("banc1/command", 1)]


def test_parse_bms_example() -> None:
    line = protocol.parse_bms_line(EXAMPLE.encode())
    assert line == BmsLine(1842, 52.31, -12.40, 67.5, 24.8, 45.123, 2301.5, 3265.0, 3281.0, 0)
    assert line.uptime_ms is None
    assert line.cell_spread_mv == 16.0
    assert protocol.parse_bms_line(protocol.encode_bms_line(line)) == line


def test_parse_bms_v2_line_with_uptime() -> None:
    line = protocol.parse_bms_line(EXAMPLE + ",86400123")
    assert line == BmsLine(1842, 52.31, -12.40, 67.5, 24.8, 45.123, 2301.5, 3265.0, 3281.0, 0, 86400123)
    assert protocol.encode_bms_line(line).endswith(",0,86400123")
    assert protocol.parse_bms_line(protocol.encode_bms_line(line)) == line
    assert line.as_row() == protocol.parse_bms_line(EXAMPLE).as_row()  # data.csv: the 10 fields only


def test_bms_fields_keep_the_data_csv_columns() -> None:
    assert protocol.BMS_FIELDS == (
        "seq", "voltage_v", "current_a", "soc_pct", "temperature_c",
        "capacity_ah", "energy_wh", "cell_min_mv", "cell_max_mv", "balancing",
    )
    assert protocol.BMS_FIELDS_V2 == protocol.BMS_FIELDS + ("uptime_ms",)
    assert protocol.BMS_FIELDS_V3 == protocol.BMS_FIELDS_V2 + ("esp_step",)
    assert set(protocol.BMS_RANGES) == set(protocol.BMS_FIELDS_V3)


def test_a_12_field_line_carries_the_esp_phase() -> None:
    line = protocol.parse_bms_line("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0,6632145,3")
    assert (line.uptime_ms, line.esp_step) == (6632145, 3)
    assert protocol.parse_bms_line(protocol.encode_bms_line(line)) == line
    assert protocol.encode_bms_line(line).endswith(",6632145,3")


@pytest.mark.parametrize("field", ["6", "7", "8", "10", "03", "-1", "3.0", "", "+3"])
def test_a_12th_field_that_is_no_esp_phase_is_refused(field: str) -> None:
    with pytest.raises(protocol.PayloadError):
        protocol.parse_bms_line(f"1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0,6632145,{field}")


def test_esp_step_needs_the_clock_field() -> None:
    with pytest.raises(ValueError):
        protocol.encode_bms_line(BmsLine(1, 52.0, 0.0, 50.0, 25.0, 0.0, 0.0, 3300, 3310, 0, None, 2))


FIELD_INDEX = {name: i for i, name in enumerate(protocol.BMS_FIELDS_V2)}


def with_field(name: str, text: str, base: str = EXAMPLE + ",1000") -> str:
    """The 11-field example line with one field's text replaced."""
    parts = base.split(",")
    parts[FIELD_INDEX[name]] = text
    return ",".join(parts)


# Contract v2 decimal form, tried on current_a (range -500..500, so only the form matters).
@pytest.mark.parametrize(
    "text, value",
    [("0", 0.0), ("0.5", 0.5), ("-0.25", -0.25), ("12", 12.0), ("-3", -3.0), ("-0", 0.0), ("-0.000", 0.0),
     ("0.000", 0.0), ("10.0", 10.0), ("499.999", 499.999), ("0." + "0" * 40 + "1", 1e-41)],
)
def test_bms_decimal_accepted(text: str, value: float) -> None:
    assert protocol.parse_bms_line(with_field("current_a", text)).current_a == value


@pytest.mark.parametrize(
    "text",
    ["+0007", "+5", "5.231e1", "5E1", "1e3", "007", "00", "00.5", "-07", " 5", "5 ", "5\n", "\t5", "5.", ".5", "-.5",
     "1_000", "nan", "NaN", "inf", "-inf", "Infinity", "0x10", "", "-", "--5", "1.2.3", "5,", "1e999", "٥"],
)
def test_bms_decimal_rejected(text: str) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_bms_line(with_field("current_a", text))


@pytest.mark.parametrize("name", ["seq", "balancing", "uptime_ms"])
@pytest.mark.parametrize("text", ["+1", "01", "00", "-0", "-1", "1.0", "1.", " 1", "1 ", "1\n", "1e0", "0x1", "1_0", "", "nan"])
def test_bms_integer_fields_take_plain_digits_only(name: str, text: str) -> None:
    with pytest.raises(PayloadError, match=name):
        protocol.parse_bms_line(with_field(name, text))


# Every BMS_RANGES boundary: the bound itself is accepted, one step beyond it is rejected.
@pytest.mark.parametrize(
    "name, text, ok",
    [
        ("seq", "0", True), ("seq", "4294967295", True), ("seq", "4294967296", False),
        ("voltage_v", "0", True), ("voltage_v", "80", True), ("voltage_v", "80.001", False), ("voltage_v", "-0.001", False),
        ("current_a", "-500", True), ("current_a", "500", True), ("current_a", "-500.001", False), ("current_a", "500.001", False),
        ("soc_pct", "0", True), ("soc_pct", "100", True), ("soc_pct", "100.1", False), ("soc_pct", "-0.1", False),
        ("temperature_c", "-40", True), ("temperature_c", "150", True), ("temperature_c", "-40.1", False),
        ("temperature_c", "150.1", False),
        ("capacity_ah", "0", True), ("capacity_ah", "10000", True), ("capacity_ah", "10000.001", False),
        ("capacity_ah", "-0.001", False),
        ("energy_wh", "0", True), ("energy_wh", "1000000", True), ("energy_wh", "1000000.1", False), ("energy_wh", "-0.1", False),
        ("cell_min_mv", "0", True), ("cell_min_mv", "-1", False),
        ("cell_max_mv", "5000", True), ("cell_max_mv", "5001", False),
        ("balancing", "0", True), ("balancing", "1", True), ("balancing", "2", False),
        ("uptime_ms", "0", True), ("uptime_ms", str(2**63 - 1), True), ("uptime_ms", str(2**63), False),
    ],
)
def test_bms_range_boundaries(name: str, text: str, ok: bool) -> None:
    payload = with_field(name, text)
    if ok:
        expected = int(text) if name in ("seq", "balancing", "uptime_ms") else float(text)
        assert getattr(protocol.parse_bms_line(payload), name) == expected
    else:
        with pytest.raises(PayloadError, match=f"{name}: not a plain|{name} out of range"):
            protocol.parse_bms_line(payload)


def test_bms_payload_size_boundary() -> None:
    # "52." followed by zeros is still a plain decimal: pad the voltage to land on the limit.
    base = EXAMPLE.replace("52.31", "52.3")
    fitting = base.replace("52.3", "52.3" + "0" * (protocol.MAX_PAYLOAD_BYTES - len(base)))
    assert len(fitting) == protocol.MAX_PAYLOAD_BYTES
    assert protocol.parse_bms_line(fitting).voltage_v == 52.3
    with pytest.raises(PayloadError, match="too large"):
        protocol.parse_bms_line(fitting.replace("52.3", "52.30"))


@pytest.mark.parametrize(
    "payload, reason",
    [
        ("", "expected 10, 11 or 12 fields"),
        ("garbage", "expected 10, 11 or 12 fields"),
        ("1,2,3", "expected 10, 11 or 12 fields"),
        (EXAMPLE + ",1,2,3", "expected 10, 11 or 12 fields"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281", "expected 10, 11 or 12 fields"),
        ("1842,nan,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v: not a plain decimal"),
        ("1842,52.31,inf,67.5,24.8,45.123,2301.5,3265,3281,0", "current_a: not a plain decimal"),
        ("1842,52.31,-12.40,67.5,-Infinity,45.123,2301.5,3265,3281,0", "temperature_c: not a plain decimal"),
        ("1842,52.31,-12.40,67.5,24.8,1e999,2301.5,3265,3281,0", "capacity_ah: not a plain decimal"),
        ("1842,52.31,-12.40,67.5,24.8," + "9" * 400 + ",2301.5,3265,3281,0", "capacity_ah: not a finite number"),
        ("1842,52,31,-12.40,67.5,24.8,45.123,2301.5,3265,3281", "out of range"),  # comma decimal point
        ("1842,0x34,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v: not a plain decimal"),
        ("1_842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq: not a plain integer"),
        # v1 rejected "-1" as out of range; v2 rejects the sign itself.
        ("-1,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq: not a plain integer"),
        ("1.5,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "seq: not a plain integer"),
        ("1842,252.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,0", "voltage_v out of range"),
        ("1842,52.31,-912.40,67.5,24.8,45.123,2301.5,3265,3281,0", "current_a out of range"),
        ("1842,52.31,-12.40,101,24.8,45.123,2301.5,3265,3281,0", "soc_pct out of range"),
        ("1842,52.31,-12.40,67.5,224.8,45.123,2301.5,3265,3281,0", "temperature_c out of range"),
        ("1842,52.31,-12.40,67.5,24.8,-1,2301.5,3265,3281,0", "capacity_ah out of range"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3290,3281,0", "cell_min_mv greater"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,2", "balancing out of range"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,", "balancing: not a plain integer"),
        (EXAMPLE + ",", "uptime_ms: not a plain integer"),
        (b"1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281,\xff", "not ASCII"),
        ("1842,52.31,-12.40,67.5,24.8,45.123,2301.5,3265,3281," + "0" * 600, "too large"),
        (b"\x00" * 10, "expected 10, 11 or 12 fields"),
        # Whitespace anywhere: v1 stripped it, v2 rejects the line.
        (EXAMPLE + "\n", "balancing: not a plain integer"),
        (EXAMPLE + "\r\n", "balancing: not a plain integer"),
        (" " + EXAMPLE, "seq: not a plain integer"),
        (EXAMPLE.replace(",52.31,", ", 52.31,"), "voltage_v: not a plain decimal"),
        (EXAMPLE.replace(",52.31,", ",+52.31,"), "voltage_v: not a plain decimal"),
        (EXAMPLE.replace(",52.31,", ",052.31,"), "voltage_v: not a plain decimal"),
        (EXAMPLE.replace(",52.31,", ",5.231e1,"), "voltage_v: not a plain decimal"),
        (EXAMPLE.replace("1842,", "01842,"), "seq: not a plain integer"),
        (EXAMPLE.replace("1842,", "+1842,"), "seq: not a plain integer"),
    ],
)
def test_bms_rejects(payload: str | bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        protocol.parse_bms_line(payload)


def test_bms_accepts_extreme_but_physical_values() -> None:
    # v1 test also fed " 0, 38.5 ,...,1 \n" (whitespace stripped): protocol v2 rejects that (see test_bms_rejects).
    line = protocol.parse_bms_line("0,38.5,-250,0,85.0,0,0,2400,2650,1")
    assert (line.seq, line.voltage_v, line.temperature_c, line.balancing) == (0, 38.5, 85.0, 1)


@pytest.mark.parametrize("current", [-0.0001, -0.0, 0.0004, -0.0004])
def test_encode_bms_never_writes_negative_zero(current: float) -> None:
    line = BmsLine(1, 52.0, current, 50.0, 25.0, -0.0, -0.0001, 3300, 3310, 0)
    text = protocol.encode_bms_line(line)
    assert ",-0" not in text
    assert protocol.parse_bms_line(text).current_a == 0.0


def test_encode_bms_rejects_a_negative_uptime() -> None:
    with pytest.raises(ValueError):
        protocol.encode_bms_line(BmsLine(1, 52.0, 0.0, 50.0, 25.0, 0.0, 0.0, 3300, 3310, 0, -1))


@pytest.mark.parametrize("payload, step", [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5), ("9", 9), (b"9", 9)])
def test_parse_step(payload: str | bytes, step: int) -> None:
    assert protocol.parse_step(payload) == step
    assert protocol.encode_step(step) == (payload if isinstance(payload, str) else payload.decode())


# v1 accepted " 3\n" (stripped): protocol v2 accepts exactly "1".."5" and "9", nothing around them.
@pytest.mark.parametrize(
    "payload",
    ["0", "6", "7", "8", "10", "05", "09", "+5", "-5", " 5", "5 ", "5\n", "\n5", "5\r\n", " 3\n", "\t1", "5\x00",
     "-1", "-0", "", " ", "one", "1.0", "5.", "5e0", "0x5", "٥", "9" * 600, b"\xff", b"5\xff"],
)
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
        ('{"ri_discharge": 0.01} x', "invalid JSON"),
        ('x {"ri_discharge": 0.01}', "invalid JSON"),
        ('{"ri_discharge": 0.01}{}', "invalid JSON"),
        ('{"ri_discharge": 1e400}', "not a finite number"),
        ('{"ri_discharge": -Infinity}', "not a finite number"),
        ('{"ri_discharge": -0.0}', "out of range"),
        ('{"ri_discharge": 0.01, "temperature_c": NaN}', "temperature_c: not a finite"),
    ],
)
def test_parse_ri_results_rejects(payload: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        protocol.parse_ri_results(payload)


@pytest.mark.parametrize("payload, soc", [("0", 0), ("1", 1), ("57", 57), ("99", 99), ("100", 100), (b"100", 100)])
def test_parse_nurse_soc(payload: str | bytes, soc: int) -> None:
    assert protocol.parse_nurse_soc(payload) == soc


@pytest.mark.parametrize(
    "payload",
    ["-1", "101", "1000", "50.5", "50.0", "", "abc", "+5", "05", "00", "-0", " 5", "5 ", "5\n", "1e2", "0x10", "nan",
     b"\xff", "5" * 600],
)
def test_parse_nurse_soc_rejects(payload: str | bytes) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_nurse_soc(payload)


@pytest.mark.parametrize(
    "payload, command",
    [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5), ("end", "end"), (b"end", "end"),
     ("replay 12 40", protocol.ReplayCommand(12, 40)), ("replay 0 0", protocol.ReplayCommand(0, 0)),
     ("replay 7 7", protocol.ReplayCommand(7, 7)), ("replay 0 4294967295", protocol.ReplayCommand(0, 2**32 - 1))],
)
def test_parse_command(payload: str | bytes, command: protocol.Command) -> None:
    assert protocol.parse_command(payload) == command
    assert protocol.parse_command(protocol.encode_command(command)) == command


# v1 accepted " end\n" (stripped): protocol v2 takes banc.py's exact payloads only.
@pytest.mark.parametrize(
    "payload",
    ["9", "0", "6", "01", "+1", "-1", "1.0", "1\n", " 1", "END", "End", "stop", "", " end\n", "end\n", "end ",
     "replay", "replay 1", "replay 40 12", "replay -1 5", "replay +1 5", "replay 01 5", "replay 1 05", "replay 1  5",
     " replay 1 5", "replay 1 5 ", "replay 1 5\n", "replay 1 5 6", "replay 1.0 5", "replay 1 4294967296",
     "replay 1e3 2000", "Replay 1 5", "replay\t1 5", "replay 1,5", b"replay 1 5\xff"],
)
def test_parse_command_rejects(payload: str | bytes) -> None:
    with pytest.raises(PayloadError):
        protocol.parse_command(payload)


def test_encode_replay() -> None:
    assert protocol.encode_replay(12, 40) == "replay 12 40"
    assert protocol.encode_command(protocol.ReplayCommand(0, 0)) == "replay 0 0"
    assert protocol.parse_command(protocol.encode_replay(5, 2**32 - 1)) == protocol.ReplayCommand(5, 2**32 - 1)


@pytest.mark.parametrize("first, last", [(40, 12), (-1, 5), (1, -1), (1.5, 2), (True, 2), (1, 2**32), ("1", 2)])
def test_encode_replay_rejects(first: object, last: object) -> None:
    with pytest.raises(ValueError):
        protocol.encode_replay(first, last)  # type: ignore[arg-type]


def test_status_and_security() -> None:
    assert protocol.parse_status(b"online") == "online"
    with pytest.raises(PayloadError):
        protocol.parse_status("maybe")
    assert protocol.parse_security(b"Timeout BMS banc1") == "Timeout BMS banc1"
    assert protocol.parse_security(b"") == "(alerte vide)"
    assert len(protocol.parse_security("é" * 500)) == 200
    assert "\x1b" not in protocol.parse_security(b"alert \x1b[31m red")
    assert protocol.encode_security("a\n b  " + "x" * 300)[:4] == "a b "
    assert len(protocol.encode_security("x" * 300)) == 200


@pytest.mark.parametrize("bad", [1.5, 1.0, True, math.nan, 0, 6, 9, "go", " end", "1"])
def test_encode_rejects_invalid(bad: object) -> None:
    with pytest.raises(ValueError):
        protocol.encode_command(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- producers

def test_the_repo_producers_send_strict_bms_lines() -> None:
    """Every BMS line the repo builds (test helper, bench publisher) passes the v2 parser."""
    from banclfp.testkit.banc_helpers import bms_line
    from bench.esp_publisher import bms_payload

    for seq in (0, 1, 49, 50, 99_999, 2**32 - 1):
        for number in (1, 4, 64):
            assert protocol.parse_bms_line(bms_payload(seq, number)).seq == seq
        assert protocol.parse_bms_line(bms_line(seq)).seq == seq
    assert protocol.parse_bms_line(bms_line(3, current_a=-0.0001, temperature_c=-0.04)).current_a == 0.0


def test_firmware_doc_bms_example_is_strict() -> None:
    # The line of deploy/FIRMWARE_ESP32.md §3, kept here as text (the test reads no file).
    assert protocol.parse_bms_line("1842,52.310,-12.400,67.5,24.8,45.123,2301.5,3265,3281,0").seq == 1842
    assert protocol.parse_bms_line("1842,52.310,-12.400,67.5,24.8,45.123,2301.5,3265,3281,0,86400123").uptime_ms == 86400123
