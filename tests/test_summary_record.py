"""The typed records of config.json and the verdict (record.TestSummary, Verdict, Check): one converter each."""

from __future__ import annotations

import ast
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st

from banclfp.recording import record
from banclfp.testkit.support import REPO_DIR
from banclfp.testkit.synthetic import write_finished_record, write_synthetic_test
from banclfp.wire import protocol

T0 = datetime(2026, 11, 24, 10, 30, tzinfo=record.LOCAL_TZ)

numbers = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.integers(-10**6, 10**6))
texts = st.one_of(st.none(), st.text(max_size=12))
counts = st.integers(0, 10**9)

checks = st.builds(record.Check, name=st.sampled_from(["soh", "ri_discharge", "cell_spread", "temperature_max"]),
                   value=numbers, limit=numbers, ok=st.booleans(), uncertain=st.booleans())
verdicts = st.builds(record.Verdict, grade=st.sampled_from(["A", "B", "C", "REJET", "NON CLASSÉ", "À VÉRIFIER"]),
                     soh_pct=numbers, model=texts, grading_version=texts,
                     checks=st.lists(checks, max_size=4).map(tuple), reason=st.text(max_size=30))
pulses = st.tuples(st.floats(0.0005, 1.0), st.one_of(st.none(), st.floats(-20, 60)), st.integers(1, 5))


@st.composite
def summaries(draw: Any) -> record.TestSummary:
    """A config.json as banc.py writes it (every key, each value of its type)."""
    return record.TestSummary(
        battery_serial=draw(st.text(max_size=12)), banc=draw(st.text(max_size=6)),
        current_step=draw(st.sampled_from(protocol.PHASES)), first_handle=draw(st.text(max_size=25)),
        timestamp_last_update=draw(st.text(max_size=25)),
        status=draw(st.sampled_from([record.TEST_RUNNING, record.TEST_STOPPED, record.TEST_FINISHED,
                                     record.TEST_ABANDONED])),
        end_time=draw(texts), capacity_ah=draw(numbers), capacity_wh=draw(numbers),
        ri_averages={key: draw(numbers) for key in protocol.RI_KEYS},
        ri_counts={key: draw(counts) for key in protocol.RI_KEYS},
        ri_temperature_c=draw(numbers),
        ri_pulses={key: tuple(draw(st.lists(pulses, max_size=3))) for key in protocol.RI_KEYS},
        **{key: draw(counts) for key in record.COUNTER_KEYS},
        software_version=draw(st.text(max_size=8)), verdict=draw(st.one_of(st.none(), verdicts)),
    )


@settings(max_examples=200, deadline=None)
@given(summaries())
def test_a_config_json_read_and_written_again_is_the_same_file(summary: record.TestSummary) -> None:
    written = summary.to_json()
    again = record.TestSummary.from_json(json.loads(json.dumps(written))).to_json()
    assert json.dumps(again) == json.dumps(written)  # same keys, same values, same order: the same bytes


@settings(max_examples=200, deadline=None)
@given(verdicts)
def test_a_verdict_read_and_written_again_is_the_same_object(verdict: record.Verdict) -> None:
    written = verdict.to_json()
    assert json.dumps(record.Verdict.from_json(json.loads(json.dumps(written))).to_json()) == json.dumps(written)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(record.new_summary("b", "s", "t"))),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4),
                                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                      st.integers(), max_size=2))))
def test_a_damaged_config_json_loads_what_it_can_and_never_raises(damaged: dict[str, Any]) -> None:
    summary = record.TestSummary.from_json(damaged)
    summary.to_json()
    assert isinstance(summary.finished, bool) and isinstance(summary.counters, dict)
    summary.last_activity  # noqa: B018 (must not raise)
    for key in protocol.RI_KEYS:
        record.ri_at_25c(summary, key, lambda ohm, _t: ohm)
    record.ri_temperature_range(summary)


def test_today_s_files_convert_exactly(banc_home: Path) -> None:
    """config.json as banc.py's writers leave it (journal folded in, verdict included) comes back byte for byte."""
    folder = write_finished_record(banc_home, "banc1", "RW-RECORD01", T0, 3600.0, 95.0, "A", 95.0)
    on_disk = json.loads((folder / record.TEST_CONFIG_FILE).read_text(encoding="utf-8"))
    assert json.dumps(record.TestSummary.from_json(on_disk).to_json()) == json.dumps(on_disk)
    corrected = record.corrected_summary_file(folder)
    assert corrected is not None
    assert json.dumps(record.TestSummary.from_json(corrected).to_json()) == json.dumps(corrected)
    assert json.dumps(record.new_summary("banc1", "RW-X", "t")) == json.dumps(
        record.TestSummary.from_json(record.new_summary("banc1", "RW-X", "t")).to_json())


def test_the_typed_summary_says_what_the_dict_readers_read(banc_home: Path) -> None:
    """A folder of the earlier version (config.json alone) and a graded one: each attribute is the key's value."""
    older = write_synthetic_test(banc_home, rows=300).folder
    graded = write_finished_record(banc_home, "banc2", "RW-RECORD02", T0, 3600.0, 80.0, "B", 80.0)
    for folder in (older, graded):
        raw = record.corrected_summary_file(folder)
        summary = record.load_summary(folder)
        assert raw is not None and summary is not None
        for key in ("battery_serial", "banc", "current_step", "first_handle", "timestamp_last_update", "status",
                    "end_time", "capacity_ah", "capacity_wh", "ri_temperature_c", "software_version",
                    *record.COUNTER_KEYS):
            assert getattr(summary, key) == raw.get(key), key
        for key in protocol.RI_KEYS:
            assert summary.ri_averages[key] == raw.get(f"{key}_average")
            assert summary.ri_counts[key] == raw.get(f"{key}_count", 0)
        assert summary.finished == (raw.get("status") == record.TEST_FINISHED)
        assert (summary.verdict.to_json() if summary.verdict else None) == raw.get("verdict")


# The keys of config.json that name nothing else in the project: spelled only in record.py.
SUMMARY_ONLY_KEYS = frozenset({"battery_serial", "timestamp_last_update", "first_handle", "end_time",
                               "software_version", "ri_pulses", "ri_discharge_average", "ri_charge_average",
                               "diffusion_discharge_average", "diffusion_charge_average"})
# bdf.py writes its own format (the BDF sidecar), whose field names happen to be two of them.
OWN_FORMATS = {"banclfp/analysis/bdf.py": frozenset({"battery_serial", "end_time"})}


def test_no_config_json_key_is_spelled_outside_the_record_module() -> None:
    found = []
    for path in sorted((REPO_DIR / "banclfp").rglob("*.py")):
        relative = path.relative_to(REPO_DIR).as_posix()
        if relative == "banclfp/recording/record.py":
            continue
        allowed = OWN_FORMATS.get(relative, frozenset())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in SUMMARY_ONLY_KEYS
                    and node.value not in allowed):
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []
