"""The journal's typed events (record.py): every kind written and read back byte for byte, any object read without error."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings, strategies as st

from banclfp.recording import record

KINDS = (record.EVENT_START, record.EVENT_MIGRATE, record.EVENT_STEP, record.EVENT_RI, record.EVENT_STOP,
         record.EVENT_RESUME, record.EVENT_ABANDON, record.EVENT_ESP_BOOT, record.EVENT_ESP_CLOCK,
         record.EVENT_SEQ_LOST, record.EVENT_CLOCK_STEP, record.EVENT_VERDICT, record.EVENT_ALERT)

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(record.LOCAL_TZ)).map(record.event_time)
maybe_times = st.one_of(st.none(), times)
texts = st.text(max_size=20)
maybe_texts = st.one_of(st.none(), texts)
ints = st.integers()
maybe_ints = st.one_of(st.none(), ints)
counts = st.integers(min_value=0, max_value=10**12)
# Numbers as a file holds them: an int stays an int (70 is written back as 70, not 70.0).
numbers = st.one_of(st.integers(min_value=-10**15, max_value=10**15), st.floats(allow_nan=False, allow_infinity=False))
maybe_numbers = st.one_of(st.none(), numbers)
ri_keys = st.one_of(st.sampled_from(("ri_discharge", "ri_charge", "diffusion_discharge", "diffusion_charge")), texts)

checks = st.builds(record.Check, name=texts, value=maybe_numbers, limit=maybe_numbers, ok=st.booleans(),
                   uncertain=st.booleans())
verdicts = st.builds(record.Verdict, grade=texts, soh_pct=maybe_numbers, model=maybe_texts, grading_version=maybe_texts,
                     checks=st.lists(checks, max_size=4).map(tuple), reason=texts)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)

events = st.one_of(
    st.builds(record.StartEvent, maybe_times, maybe_texts, maybe_texts, maybe_texts, maybe_texts,
              st.one_of(st.none(), st.booleans())),
    st.builds(record.MigrateEvent, maybe_times, maybe_texts, maybe_texts, maybe_ints, maybe_texts, maybe_texts,
              st.one_of(st.none(), st.dictionaries(ri_keys, st.tuples(numbers, counts), max_size=4)), maybe_numbers,
              st.booleans()),
    st.builds(record.StepEvent, maybe_times, maybe_ints, maybe_texts, maybe_ints, st.one_of(st.none(), st.booleans())),
    st.builds(record.RiEvent, maybe_times,
              st.one_of(st.none(), st.dictionaries(ri_keys, st.one_of(st.integers(), st.floats(allow_nan=False)),
                                                   max_size=5))),  # (NaN reads back, but is equal to nothing)
    st.builds(record.StopEvent, maybe_times, maybe_texts, maybe_ints),
    st.builds(record.ResumeEvent, maybe_times),
    st.builds(record.AbandonEvent, maybe_times),
    st.builds(record.EspBootEvent, maybe_times, maybe_texts, maybe_ints, maybe_ints, maybe_ints),
    st.builds(record.EspClockEvent, maybe_times, maybe_ints, maybe_ints),
    st.builds(record.SeqLostEvent, maybe_times, maybe_ints, maybe_ints, maybe_ints, maybe_ints),
    st.builds(record.ClockStepEvent, maybe_times, maybe_numbers),
    st.builds(record.VerdictEvent, maybe_times, st.one_of(st.none(), verdicts)),
    st.builds(record.AlertEvent, maybe_times, maybe_texts),
    st.builds(lambda t, kind, extra: record.UnknownEvent(t, kind, {"t": t, "event": kind, **extra}),
              times, texts.filter(lambda kind: kind not in KINDS),
              st.dictionaries(texts.filter(lambda key: key not in ("t", "event")), json_values, max_size=4)),
)


def reread(line: bytes) -> record.Event:
    (event,), bad = record.parse_events(line)
    assert bad == 0
    return event


@pytest.mark.slow  # 1,500 examples: the full suite's, not the inner loop's (--fast)
@settings(max_examples=1500, deadline=None)
@given(events)
def test_every_event_is_written_back_byte_for_byte(event: record.Event) -> None:
    """to_json(from_json(x)) == x for every line the module writes, through its own serializer."""
    line = record.encode_event(event)
    again = reread(line)
    assert type(again) is type(event)
    assert record.encode_event(again) == line
    assert record.fold_events([again]) == record.fold_events([event])


@pytest.mark.parametrize("event, line", [
    (record.StartEvent("2026-11-24T10:30:00.000+01:00", "RW-ab12cd", "banc1", "2026-11-24T10:30:00+01:00",
                       software_version="1.1.0"),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"start","serial":"RW-ab12cd","banc":"banc1",'
     '"first_handle":"2026-11-24T10:30:00+01:00","software_version":"1.1.0"}'),
    (record.StepEvent("2026-11-24T10:30:00.000+01:00", 3, recovered=record.STEP_RECOVERED_FROM_LINES, seq=12),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"step","step":3,"recovered":"lines","seq":12}'),
    (record.SeqLostEvent("2026-11-24T10:30:00.000+01:00", None, 3, 4, 2),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"seq_lost","boot":null,"first":3,"last":4,"count":2}'),
    (record.RiEvent("2026-11-24T10:30:00.000+01:00", {"ri_discharge": 0.03, "temperature_c": 24.5}),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"ri","values":{"ri_discharge":0.03,"temperature_c":24.5}}'),
    (record.AlertEvent("2026-11-24T10:30:00.000+01:00", "Surchauffe : 56 °C"),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"alert","text":"Surchauffe : 56 \\u00b0C"}'),
    (record.MigrateEvent("2026-11-24T10:30:00.000+01:00", "RW-ab12cd", "banc1", 2, "2026-11-24T10:30:00+01:00",
                         ri={"ri_discharge": (0.03, 3)}, ri_temperature_c=21.0, first_handle_defaulted=True),
     '{"t":"2026-11-24T10:30:00.000+01:00","event":"migrate","serial":"RW-ab12cd","banc":"banc1","step":2,'
     '"ri":{"ri_discharge":[0.03,3]},"ri_temperature_c":21.0,"first_handle":"2026-11-24T10:30:00+01:00"}'),
])
def test_the_lines_are_those_docs_fichiers_describes(event: record.Event, line: str) -> None:
    """A few lines spelled out: the keys, their order and the escaping banc.py has always written."""
    assert record.encode_event(event) == (line + "\n").encode("ascii")
    assert reread((line + "\n").encode("ascii")) == event


@pytest.mark.slow  # 1,500 examples: the full suite's, not the inner loop's (--fast)
@settings(max_examples=1500, deadline=None)
@given(st.sampled_from((*KINDS, "bogus")), st.dictionaries(
    st.one_of(st.sampled_from(("t", "serial", "banc", "first_handle", "step", "end_time", "ri", "ri_temperature_c",
                               "values", "recovered", "seq", "restored", "row_t", "uptime_ms", "boot", "offset_ms",
                               "first", "last", "count", "delta_s", "verdict", "text")), texts),
    json_values, max_size=6))
def test_any_object_is_read_without_error_and_folds(kind: str, fields: dict) -> None:
    """A hand-edited or damaged line never raises: read, folded, written; its reading is stable from then on."""
    event = record.event_from_json({**fields, "event": kind})
    record.fold_events([event])
    line = record.encode_event(event)
    assert record.encode_event(reread(line)) == line


@pytest.mark.parametrize("fields", [
    {"event": "ri", "t": "x", "values": {"ri_discharge": 10**400}},
    {"event": "migrate", "t": "x", "ri": {"ri_discharge": [10**400, 1]}, "ri_temperature_c": 10**400},
    {"event": "clock_step", "t": "x", "delta_s": 10**400},
    {"event": "verdict", "t": "x", "verdict": {"grade": "A", "checks": [{"name": "soh", "value": 10**400}], "reason": "",
                                              "soh_pct": 10**400}},
])
def test_an_integer_no_float_holds_is_no_number(fields: dict) -> None:
    """JSON integers have no bound: one too large for a float (damage) is ignored, as a string would be."""
    line = (json.dumps(fields) + "\n").encode()
    events, bad = record.parse_events(line)
    assert bad == 0
    record.fold_events(events)
