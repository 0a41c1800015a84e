"""What the kiosk knows about each bench and what it shows from it: pure data and functions, no Tk, no I/O.

Two sources feed a bench's state: the worker thread's snapshots (bancs_config.json, the
test folder, whether banc.py runs) and the MQTT messages (steps, BMS lines, link status).
`banc_display` derives the header, the link pills and how the measures show (live, or greyed
with their age; the current cut) from both, in one place, with the kiosk's clock passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from banclfp.analysis import time_left
from banclfp.kiosk.messages import BenchFacts
from banclfp.presentation.display_colors import MeasureLimits
from banclfp.recording import record
from banclfp.wire import protocol

# The bench's sequence as time_left.Model knows it (deploy/FIRMWARE_ESP32.md §4).
PHASE1_DURATION_S = time_left.Model().phase1_s  # Ri/diffusion pulses: 3 pairs of 30 s pulses, 120 s rests: 17 min
NOMINAL_CAPACITY_AH = 100.0  # the 16S packs tested here, when no grading model covers the serial
STORAGE_SOC_PCT = time_left.Model().storage_soc_pct  # phase 4 recharges to the storage level
MIN_CURRENT_FOR_ESTIMATE_A = 0.5  # below this the pack is at rest: no meaningful estimate

# Bench status kinds (the panel colours its header by kind).
STATUS_FREE, STATUS_BUSY, STATUS_INTERRUPTED, STATUS_DONE = "free", "busy", "interrupted", "done"
STATE_UNKNOWN_TEXT = "Lecture de l'état…"

# What a link pill (ESP, banc) says: offline is an alarm only when something should be running.
LINK_ONLINE, LINK_IDLE, LINK_ALARM, LINK_UNKNOWN = "online", "idle", "alarm", "unknown"
_ENDED_STEPS = (protocol.STEP_FINISHED, protocol.STEP_STOP)  # after these, going offline is the normal course


@dataclass(frozen=True)
class RiView:
    """Ri and diffusion of a test, ohms, brought to 25 °C (the values the charts and the report give)."""

    ri_discharge: Optional[float] = None
    ri_charge: Optional[float] = None
    diffusion_discharge: Optional[float] = None
    diffusion_charge: Optional[float] = None


def estimate_time_left_s(
    step: Optional[int],
    line: protocol.BmsLine,
    phase_elapsed_s: Optional[float],
    charge_duration: Optional[Callable[[float], float]],
    progress: Optional[time_left.Progress] = None,
) -> Optional[float]:
    """Estimated time left of the running phase (None when it cannot be estimated): time_left.estimate_s.

    The model is the lab's: the CV taper of charge_profile.csv (`charge_duration`; None: not
    loaded, no phase-2 estimate), the nominal capacity of the battery's grading model (else
    NOMINAL_CAPACITY_AH); `progress` is what the test folder told (the charge's facts).
    """
    capacity_ah = progress.capacity_ah if progress is not None and progress.capacity_ah else NOMINAL_CAPACITY_AH
    if charge_duration is None:
        if step == 2:
            return None
        model = time_left.Model(capacity_ah=capacity_ah)
    else:
        model = time_left.model_from_profile(charge_duration, capacity_ah)
    return time_left.estimate_s(model, step, line, phase_elapsed_s, None if progress is None else progress.charge)


def phase_elapsed_s(rt: BancRuntime, now_mono_s: float, now_unix_s: float) -> Optional[float]:
    """Seconds since the bench's phase started: the test folder's journal says when (it outlives a kiosk
    restart), else the transition this kiosk saw; None when neither knows."""
    progress = rt.progress
    if progress is not None and progress.step == rt.step and progress.phase_start_unix_s is not None:
        return max(0.0, now_unix_s - progress.phase_start_unix_s)
    if rt.phase_started_s is not None:
        return max(0.0, now_mono_s - rt.phase_started_s)
    return None


def bench_time_left_s(rt: BancRuntime, line: protocol.BmsLine, charge_duration: Optional[Callable[[float], float]],
                      now_mono_s: float, now_unix_s: float) -> Optional[float]:
    """The time left the bench's panel shows for this line: the estimate, its end averaged (time_left.Smoother)."""
    estimate = None
    if takes_steps(rt):
        estimate = estimate_time_left_s(rt.step, line, phase_elapsed_s(rt, now_mono_s, now_unix_s), charge_duration,
                                        rt.progress)
    return rt.time_left_smoother.update(rt.step, now_mono_s, estimate)


def ri_view_from_config(config: record.TestSummary, correct: Callable[[float, Optional[float]], float]) -> RiView:
    """Ri and diffusion means of a test's config.json, all brought to 25 °C with `correct` (as the charts show them).

    Each pulse is corrected with its own temperature (record.ri_at_25c).
    """

    def at_25c(key: str) -> Optional[float]:
        return None if _positive(config.ri_averages.get(key)) is None else record.ri_at_25c(config, key, correct)

    return RiView(
        ri_discharge=at_25c("ri_discharge"),
        ri_charge=at_25c("ri_charge"),
        diffusion_discharge=at_25c("diffusion_discharge"),
        diffusion_charge=at_25c("diffusion_charge"),
    )


@dataclass(frozen=True)
class ResultView:
    """The result card of a bench whose last test is finished: its verdict and main figures."""

    serial: str
    grade: Optional[str]  # None: finished, but no verdict recorded (yet, or grading.json invalid)
    soh_pct: Optional[float]
    capacity_ah: Optional[float]
    ri_25c_ohm: Optional[float]
    reason: str = ""
    certificate: bool = False  # certificate.pdf is in the folder


def _positive(value: object) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def result_view_from_summary(summary: Optional[record.TestSummary], certificate: bool,
                             correct: Callable[[float, Optional[float]], float]) -> Optional[ResultView]:
    """The result card of a finished test from its summary (None for a test that is not finished)."""
    if summary is None or not summary.finished:
        return None
    verdict = summary.verdict
    ri_check = verdict.check("ri_discharge") if verdict is not None else None
    ri_25 = _positive(ri_check.value) if ri_check is not None else None
    if ri_25 is None and _positive(summary.ri_averages.get("ri_discharge")) is not None:
        ri_25 = record.ri_at_25c(summary, "ri_discharge", correct)  # each pulse at its own temperature
    return ResultView(
        serial=summary.battery_serial or "?", grade=verdict.grade if verdict is not None else None,
        soh_pct=float(verdict.soh_pct) if verdict is not None and verdict.soh_pct is not None else None,
        capacity_ah=_positive(summary.capacity_ah), ri_25c_ohm=ri_25,
        reason=verdict.reason if verdict is not None else "", certificate=certificate,
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One test of a battery in the kiosk's history list (`graph` + serial)."""

    folder: Path
    banc: str
    start: Optional[str]  # ISO 8601
    status: str
    grade: Optional[str]
    soh_pct: Optional[float]
    capacity_ah: Optional[float]
    site: Optional[str] = None  # another Pi of the lab (from the lab database): its charts are on that Pi


def status_display(
    occupied: bool, serial: Optional[str], step: Optional[int], running: bool, unfinished: bool,
    last_serial: Optional[str] = None, last_step: Optional[int] = None,
) -> tuple[str, str]:
    """Header text and kind of a bench: Libre / Occupé - SERIAL - Phase X/5 / Interrompu / Terminé."""
    if occupied and serial:
        if running:
            phase = f" - Phase {step}/5" if step in protocol.PHASES else ""
            return f"Occupé - {serial}{phase}", STATUS_BUSY
        if unfinished:
            return f"Interrompu - {serial} - scannez pour reprendre", STATUS_INTERRUPTED
        return f"Terminé - {serial} - scannez reset", STATUS_DONE
    if last_serial and last_step == protocol.STEP_FINISHED:
        # Before `running`: after step 5 banc.py frees the bench, then concludes the verdict before it exits.
        return f"Libre - {last_serial} terminé", STATUS_DONE
    if running:  # a test records while the bench's state file says free: the next reading will tell more
        return "Occupé - test en cours d'enregistrement", STATUS_BUSY
    return "Libre", STATUS_FREE


# =========================================================================== what the worker reads of a bench


@dataclass(frozen=True)
class BancSnapshot:
    """What the disk and the process table say about one bench (read by the worker thread)."""

    banc: str
    occupied: bool
    serial: Optional[str]
    file_step: Optional[int]  # current_step in bancs_config.json
    running: bool  # a banc.py runs for this bench
    unfinished: bool  # occupied, not running, and its test is not finished: to resume
    ri_view: Optional[RiView] = None  # Ri/diffusion freshly read from the test's config.json, else None
    result: Optional[ResultView] = None  # a free bench whose last test is finished: its result card
    limits: Optional[MeasureLimits] = None  # the grading model's limits for its battery (grading.json), None without
    progress: Optional[time_left.Progress] = None  # a running test's phase start and charge facts, for its time left


# =========================================================================== one bench's state and its display


@dataclass
class BancRuntime:
    """What the kiosk knows about one bench (Tk thread only)."""

    banc: str
    known: bool = False  # the worker's first snapshot has arrived: until then nothing is asserted
    occupied: bool = False
    serial: Optional[str] = None
    file_step: Optional[int] = None  # current_step in bancs_config.json
    running: bool = False
    unfinished: bool = False
    step: Optional[int] = None  # last step seen on MQTT (or shown from the file)
    previous_step: Optional[int] = None
    phase_started_s: Optional[float] = None  # monotonic time this kiosk saw the phase start (None: it did not)
    progress: Optional[time_left.Progress] = None  # what the test folder tells of the phase and the charge
    time_left_smoother: time_left.Smoother = field(default_factory=time_left.Smoother, repr=False, compare=False)
    esp_online: Optional[bool] = None
    banc_online: Optional[bool] = None
    last_serial: Optional[str] = None
    shown_stopped: bool = False
    seen_running: bool = False  # this kiosk saw the test's banc.py run: its disappearance without step 5/9 is a crash
    # The kiosk's own link to the broker: while it is down, nothing it shows of the bench's links is known.
    broker_up: bool = True
    # The latest BMS line and when the kiosk received it (its monotonic clock): `measures_view` says how it shows.
    line: Optional[protocol.BmsLine] = None
    line_received_s: Optional[float] = None
    # When the current was last cut to the kiosk's knowledge (step 9 or 5, `end` sent, ESP offline): the
    # current of a line received before that no longer flows.
    current_cut_s: Optional[float] = None


# =========================================================================== freshness of the measures

# A value is shown as live only while its line is recent on the kiosk's monotonic clock: three periods of
# the ESP, a line a second while a phase runs, one every 10 s once stopped (9) or finished (5) (protocol v3,
# field 12 says which: such a line is a real measurement at rest). After that it is greyed with its age.
FRESH_S = 3.0
REST_FRESH_S = 30.0
_REST_STEPS = (protocol.STEP_FINISHED, protocol.STEP_STOP)
_RUNNING_PHASES = (1, 2, 3, 4)


def fresh_for_s(line: protocol.BmsLine) -> float:
    """How long a line is shown as live: three of the periods its ESP sends lines at in the phase it reports."""
    return REST_FRESH_S if line.esp_step in _REST_STEPS else FRESH_S


AGE_PREFIX, AGE_AGO = "Mesures ", "il y a "  # the header's age line: "Mesures il y a 2 min"


def age_text(age_s: float) -> str:
    """How old a measure is, for people: "il y a 12 s", "il y a 2 min", "il y a 1 h 05", "il y a 3 j"."""
    nb = "\u00a0"
    seconds = int(max(0.0, age_s))
    if seconds < 60:
        return f"{AGE_AGO}{seconds}{nb}s"
    if seconds < 3600:
        return f"{AGE_AGO}{seconds // 60}{nb}min"
    if seconds < 86400:
        return f"{AGE_AGO}{seconds // 3600}{nb}h{nb}{seconds % 3600 // 60:02d}"
    return f"{AGE_AGO}{seconds // 86400}{nb}j"


@dataclass(frozen=True)
class MeasuresView:
    """How a bench's measures are shown: the latest line, whether it is live, how old, whether its current flows."""

    line: Optional[protocol.BmsLine] = None
    fresh: bool = False
    age_s: Optional[float] = None
    current_cut: bool = False  # cut (stop, end, finish, ESP offline) after this line came: no current flows now

    @property
    def age_text(self) -> str:
        """The age line ("Mesures il y a 2 min") once the line is no longer live; "" while it is, or without one."""
        if self.line is None or self.fresh or self.age_s is None:
            return ""
        return f"{AGE_PREFIX}{age_text(self.age_s)}"


def measures_view(rt: BancRuntime, now_s: Optional[float]) -> MeasuresView:
    """The one rule of freshness (pure): live within `fresh_for_s` of its reception, else aged; the current of
    a line received before the latest cut no longer flows. `now_s` is the kiosk's monotonic clock (None:
    as at the line's reception)."""
    if rt.line is None or rt.line_received_s is None:
        return MeasuresView()
    age_s = 0.0 if now_s is None else max(0.0, now_s - rt.line_received_s)
    cut = rt.current_cut_s is not None and rt.current_cut_s >= rt.line_received_s
    return MeasuresView(rt.line, age_s <= fresh_for_s(rt.line), age_s, cut)


def _unrecorded_phase(rt: BancRuntime, interrupted: bool, measures: MeasuresView, display_step: Optional[int]
                      ) -> Optional[int]:
    """The phase an ESP still runs while its test is not recorded (banc.py gone without 5 or 9), else None."""
    line = measures.line
    if not interrupted or line is None or not measures.fresh or measures.current_cut:
        return None
    if line.esp_step is not None:
        return line.esp_step if line.esp_step in _RUNNING_PHASES else None
    # A line without field 12 (firmware before v3): a current that flows says a phase runs.
    if abs(line.current_a) >= MIN_CURRENT_FOR_ESTIMATE_A:
        return display_step if display_step in _RUNNING_PHASES else 0
    return None


@dataclass(frozen=True)
class BancDisplay:
    """What a bench's header, link pills and measures show."""

    status_text: str
    status_kind: str
    display_step: Optional[int]
    interrupted: bool  # occupied, banc.py not running, test unfinished
    esp_online: Optional[bool]
    banc_online: Optional[bool]
    esp_link: str = LINK_UNKNOWN  # LINK_ONLINE, LINK_IDLE (offline, as expected), LINK_ALARM or LINK_UNKNOWN
    banc_link: str = LINK_UNKNOWN
    measures: MeasuresView = MeasuresView()
    # Not None while the ESP runs a phase nobody records (banc.py gone): that phase (0 when its lines do not
    # say which), shown instead of the stopped phase and its "(arrêt) 00:00:00".
    unrecorded_phase: Optional[int] = None


def _esp_link(rt: BancRuntime) -> str:
    if rt.esp_online is None:
        return LINK_UNKNOWN
    if rt.esp_online:
        return LINK_ONLINE
    # A free bench's or a stopped test's ESP may be switched off; during a test it must talk.
    return LINK_ALARM if rt.running and rt.step not in _ENDED_STEPS else LINK_IDLE


def _banc_link(rt: BancRuntime, banc_online: Optional[bool], interrupted: bool) -> str:
    if banc_online:
        return LINK_ONLINE
    if not rt.known:
        return LINK_UNKNOWN if banc_online is None else LINK_IDLE
    if rt.step in _ENDED_STEPS:
        return LINK_IDLE  # banc.py ends itself after step 5 and step 9
    if rt.running:
        return LINK_ALARM  # the process lives but lost the broker (its last will said offline)
    # Gone without step 5 or 9 while this kiosk watched it run: a crash. Otherwise (free bench, a test
    # stopped before the kiosk started) no banc.py is expected.
    return LINK_ALARM if interrupted and rt.seen_running else LINK_IDLE


UNRECORDED_TEXT = "Enregistrement arrêté — l'ESP continue"


def banc_display(rt: BancRuntime, now_s: Optional[float] = None) -> BancDisplay:
    """The one derivation of a bench's header, links and measures from its file state and its live MQTT state.

    `now_s` is the kiosk's monotonic clock, for the freshness of the measures (`measures_view`).
    """
    display_step = rt.step if rt.step in protocol.PHASES else (rt.previous_step or rt.file_step)
    interrupted = rt.occupied and not rt.running and rt.unfinished
    measures = measures_view(rt, now_s)
    unrecorded = _unrecorded_phase(rt, interrupted, measures, display_step)
    if rt.known:
        text, kind = status_display(rt.occupied, rt.serial, display_step, rt.running, interrupted, rt.last_serial,
                                    rt.step)
        if unrecorded is not None:  # banc.py gone, the ESP still charging or discharging: say why the pill is red
            text, kind = f"{UNRECORDED_TEXT} - {rt.serial or '?'} - scannez pour reprendre", STATUS_INTERRUPTED
    else:  # "Libre" before the state file is read could send an operator to a busy bench
        text, kind = STATE_UNKNOWN_TEXT, STATUS_FREE
    if not rt.broker_up:  # the kiosk hears nothing: neither green nor red, whatever it heard before
        return BancDisplay(text, kind, display_step, interrupted, None, None, LINK_UNKNOWN, LINK_UNKNOWN,
                           measures, unrecorded)
    # Before banc.py's own status message arrives, a running process counts as online.
    banc_online = rt.banc_online if rt.banc_online is not None else (rt.running or None)
    return BancDisplay(text, kind, display_step, interrupted, rt.esp_online, banc_online,
                       _esp_link(rt), _banc_link(rt, banc_online, interrupted), measures, unrecorded)


# The two link pills of a bench's header: their labels (the compact layout's when the panel is small).
LINK_ESP, LINK_RECORDING = "esp", "recording"
LINK_LABELS = {LINK_ESP: ("ESP", "ESP"), LINK_RECORDING: ("Enregistrement", "Enreg.")}
_LINK_COLOR_WORDS = {LINK_ONLINE: "verte", LINK_ALARM: "rouge", LINK_IDLE: "éteinte", LINK_UNKNOWN: "grise"}


def link_explanation(rt: BancRuntime, link: str, broker_connected: bool = True) -> str:
    """What a bench's link pill says now, in plain French, for the operator who touches it (pure)."""
    display = banc_display(rt)
    if not broker_connected:  # the kiosk hears nothing: the pills cannot say anything true
        return (f"Banc {protocol.banc_number(rt.banc)}, pastille {LINK_LABELS[link][0]} : état inconnu, le kiosque "
                "a perdu le broker (voir « Broker déconnecté » en bas à droite).")
    if link == LINK_ESP:
        state = display.esp_link
        text = {
            LINK_ONLINE: "l'ESP32 du banc (mesures et relais) est connecté.",
            LINK_ALARM: "l'ESP32 du banc ne répond plus pendant un test : vérifiez son alimentation et son réseau.",
            LINK_IDLE: "l'ESP32 du banc est hors ligne ; normal sans test en cours.",
            LINK_UNKNOWN: "l'ESP32 du banc ne s'est pas encore annoncé.",
        }[state]
    else:
        state = display.banc_link
        if state == LINK_ALARM and rt.running:
            text = ("le test s'enregistre mais ne reçoit plus les mesures (liaison au broker perdue) ; "
                    "il reprend seul, sinon voir logs.log.")
        elif state == LINK_ALARM:
            text = ("l'enregistrement s'est arrêté avant la fin du test (voir logs.log). Pour reprendre : "
                    f"{rt.banc}, le numéro de série, {rt.banc}.")
        else:
            text = {
                LINK_ONLINE: "le test de ce banc est en cours d'enregistrement.",
                LINK_IDLE: "aucun enregistrement en cours ; normal sans test, après la fin ou un arrêt.",
                LINK_UNKNOWN: "état de l'enregistrement pas encore lu.",
            }[state]
    return f"Banc {protocol.banc_number(rt.banc)}, pastille {LINK_LABELS[link][0]} {_LINK_COLOR_WORDS[state]} : {text}"


def takes_steps(rt: BancRuntime) -> bool:
    """Whether the panel follows the bench's steps: not on a bench known to be free (no test, no banc.py)."""
    return not rt.known or rt.occupied or rt.running


def message_facts(rt: BancRuntime) -> BenchFacts:
    """The state of a bench an operator message describes (kiosk_messages withdraws it when this changes)."""
    return BenchFacts(rt.occupied, rt.running, rt.step)


def merge_snapshot(rt: BancRuntime, snapshot: BancSnapshot) -> None:
    """Take the worker's file and process view of the bench into its runtime state."""
    if rt.serial and not snapshot.occupied:
        rt.last_serial = rt.serial
    rt.occupied, rt.serial, rt.file_step = snapshot.occupied, snapshot.serial, snapshot.file_step
    rt.running, rt.unfinished, rt.known = snapshot.running, snapshot.unfinished, True
    rt.progress = snapshot.progress
    if snapshot.running:
        rt.seen_running = True
    elif not snapshot.occupied:
        rt.seen_running = False
