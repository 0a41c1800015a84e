"""Pure tests of the scan state machine (docs/kiosque.md, « Les scans »): every branch, injected lookups and clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

import pytest

from banclfp.kiosk.scan_workflow import (
    SERIAL_BODY_MAX,
    SERIAL_BODY_MIN,
    SERIAL_PREFIX,
    Action,
    BancInfo,
    Decision,
    Level,
    PreviousTest,
    ScanLookups,
    ScanWorkflow,
    Stage,
    scanned_serial,
    serial_problem,
)
from banclfp.recording import store
from banclfp.recording.record import LOCAL_TZ

# Wednesday 11 June 2025, 10:00 Paris: an ordinary business day.
T0 = datetime(2025, 6, 11, 10, 0, tzinfo=LOCAL_TZ)
TIMEOUT_S = 15.0
SERIAL = "RW-ABCD1234"
OTHER = "RW-ZZZZ9999"


@dataclass
class World:
    """What the lookups see: running banc.py, bancs_config entries, latest test folders."""

    running: set[str] = field(default_factory=set)
    bancs: dict[str, BancInfo] = field(default_factory=dict)
    tests: dict[str, PreviousTest] = field(default_factory=dict)

    def lookups(self) -> ScanLookups:
        def banc_for_serial(serial: str) -> Optional[str]:
            for banc, info in self.bancs.items():
                if info.occupied and (info.serial_pending or "").upper() == serial.upper():
                    return banc
            return None

        return ScanLookups(
            is_banc_running=lambda banc: banc in self.running,
            banc_info=lambda banc: self.bancs.get(banc, BancInfo(False)),
            banc_for_serial=banc_for_serial,
            latest_test=lambda serial: self.tests.get(serial),
        )


def run(world: World, scans: list[tuple[float, str]]) -> tuple[list[Decision], ScanWorkflow]:
    """Feed scans (seconds after T0, text); "!run bancN" / "!stop bancN" makes that bench's banc.py appear / end."""
    flow = ScanWorkflow(num_bancs=4, timeout_s=TIMEOUT_S, lookups=world.lookups())
    decisions = []
    for offset_s, text in scans:
        if text.startswith("!run "):
            world.running.add(text[5:])
            continue
        if text.startswith("!stop "):
            world.running.discard(text[6:])
            continue
        decisions.append(flow.handle(text, T0 + timedelta(seconds=offset_s), offset_s))
    return decisions, flow


def finished(banc: str, ended: datetime) -> PreviousTest:
    return PreviousTest(banc=banc, finished=True, last_activity=ended, current_step=5)


def unfinished(banc: str, step: int) -> PreviousTest:
    return PreviousTest(banc=banc, finished=False, last_activity=T0 - timedelta(hours=20), current_step=step)


FREE = World
OCC1 = lambda **kw: World(bancs={"banc1": BancInfo(True, SERIAL, 3)}, **kw)  # noqa: E731

# (id, world factory, scans, expected action, level, message fragment, final stage)
CASES = [
    ("new test", FREE, [(0, "banc1"), (3, SERIAL), (6, "banc1")], Action.START, Level.SUCCESS, "lancé sur le banc 1", Stage.IDLE),
    ("case and spaces", FREE, [(0, " BANC1 "), (3, SERIAL + "\r"), (6, "Banc1")], Action.START, Level.SUCCESS, SERIAL, Stage.IDLE),
    ("empty scan ignored", FREE, [(0, "  ")], Action.NONE, Level.INFO, "", Stage.IDLE),
    ("garbage", FREE, [(0, "hello")], Action.NONE, Level.ERROR, "Code non reconnu", Stage.IDLE),
    ("garbage echo cut", FREE, [(0, "x" * 300)], Action.NONE, Level.ERROR, "…", Stage.IDLE),
    ("serial first", FREE, [(0, SERIAL)], Action.NONE, Level.ERROR, "Scannez d'abord le banc", Stage.IDLE),
    ("unknown bench", FREE, [(0, "banc9")], Action.NONE, Level.ERROR, "Banc inconnu", Stage.IDLE),
    ("banc0 is garbage", FREE, [(0, "banc0")], Action.NONE, Level.ERROR, "Code non reconnu", Stage.IDLE),
    ("banc01 is garbage", FREE, [(0, "banc01")], Action.NONE, Level.ERROR, "Code non reconnu", Stage.IDLE),
    ("bench already running", lambda: World(running={"banc1"}), [(0, "banc1")], Action.NONE, Level.ERROR, "déjà en cours", Stage.IDLE),
    ("free bench asks serial", FREE, [(0, "banc2")], Action.NONE, Level.INFO, "libre", Stage.WAIT_SERIAL),
    ("occupied bench asks its serial", OCC1, [(0, "banc1")], Action.NONE, Level.INFO, f"occupé par {SERIAL}", Stage.WAIT_SERIAL),
    ("invalid serial keeps bench", FREE, [(0, "banc1"), (2, "RW-1")], Action.NONE, Level.ERROR, "invalide", Stage.WAIT_SERIAL),
    ("invalid then valid serial", FREE, [(0, "banc1"), (2, "RW-1"), (4, SERIAL), (6, "banc1")], Action.START, Level.SUCCESS, SERIAL, Stage.IDLE),
    ("serial injection refused", FREE, [(0, "banc1"), (2, "RW-AB/../x")], Action.NONE, Level.ERROR, "invalide", Stage.WAIT_SERIAL),
    ("serial on another bench", lambda: World(bancs={"banc2": BancInfo(True, SERIAL, 2)}), [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.ERROR, "déjà sur le banc 2", Stage.IDLE),
    ("same bench rescanned while waiting serial", FREE, [(0, "banc1"), (2, "banc1")], Action.NONE, Level.INFO, "En attente du numéro", Stage.WAIT_SERIAL),
    ("other bench restarts the sequence", FREE, [(0, "banc1"), (2, "banc2")], Action.NONE, Level.INFO, "Banc 2 libre", Stage.WAIT_SERIAL),
    ("other bench running while waiting serial", lambda: World(running={"banc2"}), [(0, "banc1"), (2, "banc2")], Action.NONE, Level.ERROR, "déjà en cours", Stage.IDLE),
    # 48 business hours: ended Thursday 12/06 10:00; the weekend does not count.
    ("retest too early", lambda: World(tests={SERIAL: finished("banc3", datetime(2025, 6, 12, 10, tzinfo=LOCAL_TZ))}),
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.ERROR, "moins de 48\u00a0h ouvrées", Stage.IDLE),
    ("retest too early names the date", lambda: World(tests={SERIAL: finished("banc3", T0 - timedelta(hours=30))}),
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.ERROR, "à partir du 12/06 à 04:00", Stage.IDLE),
    ("retest after 48 business hours", lambda: World(tests={SERIAL: finished("banc1", T0 - timedelta(days=7))}),
     [(0, "banc1"), (2, SERIAL), (4, "banc1")], Action.START, Level.SUCCESS, "lancé", Stage.IDLE),
    ("finished test without end time", lambda: World(tests={SERIAL: finished("banc1", None)}),  # type: ignore[arg-type]
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.INFO, "Rescannez banc1", Stage.WAIT_CONFIRM),
    ("unfinished test on this bench resumes", lambda: World(tests={SERIAL: unfinished("banc1", 3)}),
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.INFO, "reprise du test inachevé à la phase 3/5", Stage.WAIT_CONFIRM),
    ("unfinished test elsewhere: new test", lambda: World(tests={SERIAL: unfinished("banc2", 3)}),
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.INFO, "ne sera pas repris", Stage.WAIT_CONFIRM),
    ("occupied bench, its serial", OCC1, [(0, "banc1"), (2, SERIAL), (4, "banc1")], Action.START, Level.SUCCESS, "repris", Stage.IDLE),
    ("occupied bench, wrong serial", OCC1, [(0, "banc1"), (2, OTHER)], Action.NONE, Level.ERROR, f"attend {SERIAL}", Stage.IDLE),
    ("occupied bench, bad state file", lambda: World(bancs={"banc1": BancInfo(True, None, 3)}),
     [(0, "banc1"), (2, SERIAL)], Action.NONE, Level.INFO, "nouveau test", Stage.WAIT_CONFIRM),
    ("confirm within timeout", FREE, [(0, "banc1"), (5, SERIAL), (15, "banc1")], Action.START, Level.SUCCESS, "lancé", Stage.IDLE),
    ("confirm after timeout", FREE, [(0, "banc1"), (5, SERIAL), (15.5, "banc1")], Action.NONE, Level.ERROR, "Délai de 15\u00a0s dépassé", Stage.IDLE),
    ("confirm other bench", FREE, [(0, "banc1"), (2, SERIAL), (4, "banc2")], Action.NONE, Level.ERROR, "Confirmation attendue : banc1, reçu banc2", Stage.IDLE),
    ("confirm re-checks running", FREE, [(0, "banc1"), (2, SERIAL), (3, "!run banc1"), (4, "banc1")], Action.NONE, Level.ERROR, "enregistrement déjà en cours", Stage.IDLE),
    ("serial rescanned while confirming", FREE, [(0, "banc1"), (2, SERIAL), (4, SERIAL)], Action.NONE, Level.INFO, "Rescannez banc1", Stage.WAIT_CONFIRM),
    ("garbage while confirming", FREE, [(0, "banc1"), (2, SERIAL), (4, "oops")], Action.NONE, Level.ERROR, "Confirmation attendue", Stage.IDLE),
    ("stale bench scan then new bench", FREE, [(0, "banc1"), (20, "banc2")], Action.NONE, Level.INFO, "Banc 2 libre", Stage.WAIT_SERIAL),
    ("stale bench scan then serial", FREE, [(0, "banc1"), (20, SERIAL)], Action.NONE, Level.ERROR, "Délai de 15\u00a0s dépassé. Scannez d'abord", Stage.IDLE),
    ("end", FREE, [(0, "end")], Action.END, Level.SUCCESS, "end", Stage.IDLE),
    ("END cancels a sequence", FREE, [(0, "banc1"), (2, SERIAL), (3, "END")], Action.END, Level.SUCCESS, "tous les bancs", Stage.IDLE),
    ("reset asks bench", FREE, [(0, "reset")], Action.NONE, Level.INFO, "scannez le banc à libérer", Stage.WAIT_RESET_BANC),
    ("reset bench", OCC1, [(0, "reset"), (2, "banc1")], Action.RESET, Level.SUCCESS, "libéré", Stage.IDLE),
    ("reset refused while running", lambda: World(running={"banc1"}), [(0, "reset"), (2, "banc1")], Action.NONE, Level.ERROR, "Reset refusé", Stage.IDLE),
    # The refusal must not send the operator to `end`, which stops every bench of the lab.
    ("reset refusal names no end", lambda: World(running={"banc1"}), [(0, "reset"), (2, "banc1")], Action.NONE, Level.ERROR, "terminé ou arrêté", Stage.IDLE),
    ("reset unknown bench", FREE, [(0, "reset"), (2, "banc7")], Action.NONE, Level.ERROR, "Banc inconnu", Stage.IDLE),
    ("reset garbage", FREE, [(0, "reset"), (2, SERIAL)], Action.NONE, Level.ERROR, "Reset annulé", Stage.IDLE),
    ("stale reset then bench starts a test", FREE, [(0, "reset"), (30, "banc1")], Action.NONE, Level.INFO, "libre", Stage.WAIT_SERIAL),
    ("graph asks target", FREE, [(0, "graph")], Action.NONE, Level.INFO, "Graphiques", Stage.WAIT_GRAPH_TARGET),
    ("graph of a serial", FREE, [(0, "graph"), (2, SERIAL)], Action.GRAPH, Level.INFO, SERIAL, Stage.IDLE),
    ("graph of a bench", FREE, [(0, "GRAPH"), (2, "banc3")], Action.GRAPH, Level.INFO, "banc 3", Stage.IDLE),
    ("graph of an unknown bench", FREE, [(0, "graph"), (2, "banc12")], Action.NONE, Level.ERROR, "Banc inconnu", Stage.IDLE),
    ("graph garbage", FREE, [(0, "graph"), (2, "???")], Action.NONE, Level.ERROR, "Graphiques", Stage.IDLE),
    # A running bench's refusal says what runs, in the operator's words, and how to stop it (not `end`).
    ("running bench refusal in plain words", lambda: World(running={"banc1"}), [(0, "banc1")], Action.NONE, Level.ERROR,
     "un test y est déjà en cours d'enregistrement. Pour l'arrêter : stop, banc1, banc1.", Stage.IDLE),
    # docs/fichiers.md §1: a scan is one battery whatever its letter case; a lowercase prefix is the same serial.
    ("lowercase prefix accepted", FREE, [(0, "banc1"), (2, "rw-ab12"), (4, "banc1")], Action.START, Level.SUCCESS, "RW-ab12", Stage.IDLE),
    ("lowercase prefix asks confirmation", FREE, [(0, "banc1"), (2, "rw-AB12")], Action.NONE, Level.INFO, "RW-AB12 : nouveau test", Stage.WAIT_CONFIRM),
    ("lowercase serial first", FREE, [(0, "rw-ab12")], Action.NONE, Level.ERROR, "puis le numéro de série RW-ab12", Stage.IDLE),
    ("graph of a lowercase serial", FREE, [(0, "graph"), (2, "rw-abcd1234")], Action.GRAPH, Level.INFO, "RW-abcd1234", Stage.IDLE),
    ("invalid serial says why: short", FREE, [(0, "banc1"), (2, "RW-1")], Action.NONE, Level.ERROR, "trop court (1 caractère après RW-, il en faut de 4 à 32)", Stage.WAIT_SERIAL),
    ("invalid serial says why: prefix", FREE, [(0, "banc1"), (2, "RX-AB12")], Action.NONE, Level.ERROR, "un numéro de série commence par RW-", Stage.WAIT_SERIAL),
    ("invalid serial says why: character", FREE, [(0, "banc1"), (2, "RW-AB_12")], Action.NONE, Level.ERROR, "caractère non permis (« _ »)", Stage.WAIT_SERIAL),
    # stop -> bench -> same bench: `end` on that bench only.
    ("stop asks bench", FREE, [(0, "stop")], Action.NONE, Level.INFO, "scannez le banc dont le test doit s'arrêter", Stage.WAIT_STOP_BANC),
    ("stop asks confirmation", lambda: World(running={"banc1"}, bancs={"banc1": BancInfo(True, SERIAL, 3)}),
     [(0, "stop"), (2, "banc1")], Action.NONE, Level.INFO, f"Rescannez banc1 pour arrêter le test de {SERIAL} (courant coupé", Stage.WAIT_STOP_CONFIRM),
    ("stop confirmation names the scan", lambda: World(running={"banc1"}),
     [(0, "STOP"), (2, "banc1")], Action.NONE, Level.INFO, "Rescannez banc1 pour arrêter son test", Stage.WAIT_STOP_CONFIRM),
    ("stop confirmed", lambda: World(running={"banc1"}, bancs={"banc1": BancInfo(True, SERIAL, 3)}),
     [(0, "stop"), (2, "banc1"), (4, "Banc1")], Action.STOP, Level.SUCCESS, "Arrêt du banc 1 confirmé", Stage.IDLE),
    ("stop refused: no test running", FREE, [(0, "stop"), (2, "banc2")], Action.NONE, Level.ERROR,
     "Arrêt refusé : banc 2, aucun test n'y est en cours. Rien à arrêter.", Stage.IDLE),
    ("stop refused: interrupted test", OCC1, [(0, "stop"), (2, "banc1")], Action.NONE, Level.ERROR,
     f"le test de {SERIAL} n'est pas en cours", Stage.IDLE),
    ("stop unknown bench", FREE, [(0, "stop"), (2, "banc9")], Action.NONE, Level.ERROR, "Banc inconnu", Stage.IDLE),
    ("stop garbage", FREE, [(0, "stop"), (2, SERIAL)], Action.NONE, Level.ERROR, "Arrêt annulé, aucun test arrêté", Stage.IDLE),
    ("stop confirmed by another bench", lambda: World(running={"banc1", "banc2"}),
     [(0, "stop"), (2, "banc1"), (4, "banc2")], Action.NONE, Level.ERROR, "Confirmation attendue : banc1, reçu banc2. Arrêt annulé", Stage.IDLE),
    ("stop confirmed by garbage", lambda: World(running={"banc1"}),
     [(0, "stop"), (2, "banc1"), (4, SERIAL)], Action.NONE, Level.ERROR, "Arrêt annulé, le test continue", Stage.IDLE),
    ("stop: test ended meanwhile", lambda: World(running={"banc1"}),
     [(0, "stop"), (2, "banc1"), (3, "!stop banc1"), (4, "banc1")], Action.NONE, Level.ERROR, "s'est arrêté entre-temps", Stage.IDLE),
    # The timeout runs from the bench scan to its confirmation (as for a start), not from `stop`.
    ("stop confirm within timeout of the bench scan", lambda: World(running={"banc1"}),
     [(0, "stop"), (10, "banc1"), (24, "banc1")], Action.STOP, Level.SUCCESS, "confirmé", Stage.IDLE),
    ("stop confirm after timeout", lambda: World(running={"banc1"}),
     [(0, "stop"), (2, "banc1"), (17.5, "banc1")], Action.NONE, Level.ERROR, "arrêt du banc 1 non confirmé, le test continue", Stage.IDLE),
    ("stale stop then bench starts nothing", lambda: World(running={"banc1"}),
     [(0, "stop"), (30, "banc1")], Action.NONE, Level.ERROR, "déjà en cours", Stage.IDLE),
    ("end cancels a stop", lambda: World(running={"banc1"}), [(0, "stop"), (2, "banc1"), (3, "end")], Action.END, Level.SUCCESS, "tous les bancs", Stage.IDLE),
    ("stop cancels a start", FREE, [(0, "banc1"), (2, SERIAL), (3, "stop")], Action.NONE, Level.INFO, "Arrêt d'un seul banc", Stage.WAIT_STOP_BANC),
]


@pytest.mark.parametrize(
    "world_factory,scans,action,level,fragment,stage",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_scan_sequences(world_factory: Callable[[], World], scans: list[tuple[float, str]], action: Action, level: Level,
                        fragment: str, stage: Stage) -> None:
    decisions, flow = run(world_factory(), scans)
    last = decisions[-1]
    assert last.action is action, last
    assert last.level is level, last
    assert fragment in last.message, last.message
    assert flow.stage is stage
    # Only the confirming scan may start a test, and only one decision per sequence does.
    assert sum(d.action is Action.START for d in decisions) == (1 if action is Action.START else 0)
    # Only a confirmed stop stops a bench, and only the one scanned twice.
    assert sum(d.action is Action.STOP for d in decisions) == (1 if action is Action.STOP else 0)


@pytest.mark.parametrize(
    "world_factory,scans,banc,serial,start_step,resume",
    [
        (FREE, [(0, "banc1"), (2, SERIAL), (4, "banc1")], "banc1", SERIAL, 1, False),
        (lambda: World(tests={SERIAL: unfinished("banc2", 4)}), [(0, "banc2"), (2, SERIAL), (4, "banc2")], "banc2", SERIAL, 4, True),
        (lambda: World(bancs={"banc4": BancInfo(True, "RW-Mixed01", 2)}), [(0, "banc4"), (2, "RW-MIXED01"), (4, "banc4")], "banc4", "RW-Mixed01", 2, True),
        (lambda: World(bancs={"banc1": BancInfo(True, SERIAL, None)}), [(0, "banc1"), (2, SERIAL), (4, "banc1")], "banc1", SERIAL, 1, True),
        (lambda: World(bancs={"banc1": BancInfo(True, SERIAL, 5)}), [(0, "banc1"), (2, SERIAL), (4, "banc1")], "banc1", SERIAL, 1, True),
    ],
    ids=["new", "resume unfinished folder", "resume keeps stored spelling", "unknown step", "finished step"],
)
def test_start_decision_fields(world_factory: Callable[[], World], scans: list[tuple[float, str]], banc: str, serial: str,
                               start_step: int, resume: bool) -> None:
    decisions, _ = run(world_factory(), scans)
    start = decisions[-1]
    assert (start.action, start.banc, start.serial, start.start_step, start.resume) == (
        Action.START, banc, serial, start_step, resume,
    )


@pytest.mark.parametrize(
    "first_scans,tick_at_s,expect_message",
    [
        ([(0, "banc1")], 10, None),
        ([(0, "banc1")], 15, None),
        ([(0, "banc1")], 15.1, "scan annulé"),
        ([(0, "banc1"), (3, SERIAL)], 16, "banc1 non confirmé"),
        ([(0, "graph")], 16, "graphiques annulés. Recommencez par graph."),
        ([(0, "reset")], 16, "reset annulé. Recommencez par reset."),
        ([(0, "banc1")], 16, "Recommencez par le banc."),
        ([], 100, None),
    ],
)
def test_tick_expires_pending_sequence_once(first_scans: list[tuple[float, str]], tick_at_s: float,
                                            expect_message: Optional[str]) -> None:
    _, flow = run(World(), first_scans)
    decision = flow.tick(tick_at_s)
    if expect_message is None:
        assert decision is None
    else:
        assert decision is not None and decision.level is Level.ERROR and expect_message in decision.message
        assert flow.stage is Stage.IDLE
        assert flow.tick(tick_at_s + 1) is None


def test_business_hours_boundary_on_monday() -> None:
    """Ended Thursday 10:00: Monday 09:00 is 47 business hours later (refused), 11:00 is 49 (allowed)."""
    ended = datetime(2025, 6, 12, 10, tzinfo=LOCAL_TZ)
    world = World(tests={SERIAL: finished("banc1", ended)})
    flow = ScanWorkflow(4, TIMEOUT_S, world.lookups())
    monday_9 = datetime(2025, 6, 16, 9, tzinfo=LOCAL_TZ)
    flow.handle("banc1", monday_9, 0.0)
    assert flow.handle(SERIAL, monday_9, 1.0).level is Level.ERROR
    monday_11 = datetime(2025, 6, 16, 11, tzinfo=LOCAL_TZ)
    flow.handle("banc1", monday_11, 2.0)
    assert flow.handle(SERIAL, monday_11, 3.0).level is Level.INFO
    assert flow.handle("banc1", monday_11, 4.0).action is Action.START


def test_prompt_follows_stage() -> None:
    flow = ScanWorkflow(4, TIMEOUT_S, World().lookups())
    assert "Scannez un banc" in flow.prompt()
    flow.handle("banc2", T0, 100.0)
    assert "numéro de série" in flow.prompt() and flow.remaining_s(105.0) == 10
    flow.handle(SERIAL, T0, 101.0)
    assert "Rescannez banc2" in flow.prompt()
    flow.cancel()
    assert flow.stage is Stage.IDLE and flow.remaining_s(101.0) is None


# (id, scans as (wall-clock offset s, monotonic s, text), expected action, fragment)
CLOCK_STEP_CASES = [
    # NTP sets the clock an hour ahead mid-scan: 4 real seconds passed, the test starts.
    ("wall clock jumps ahead", [(0, 0, "banc1"), (2, 2, SERIAL), (3600 + 4, 4, "banc1")], Action.START, "lancé"),
    # The clock is set back an hour: the 20 real seconds still exceed the 15 s timeout.
    ("wall clock jumps back", [(0, 0, "banc1"), (2, 2, SERIAL), (-3600 + 20, 20, "banc1")], Action.NONE, "dépassé"),
]


@pytest.mark.parametrize("scans,action,fragment", [c[1:] for c in CLOCK_STEP_CASES], ids=[c[0] for c in CLOCK_STEP_CASES])
def test_scan_timeout_follows_the_monotonic_clock(scans: list[tuple[float, float, str]], action: Action, fragment: str) -> None:
    flow = ScanWorkflow(4, TIMEOUT_S, World().lookups())
    decisions = [flow.handle(text, T0 + timedelta(seconds=wall_s), clock_s) for wall_s, clock_s, text in scans]
    assert decisions[-1].action is action and fragment in decisions[-1].message


@pytest.mark.parametrize(
    "after_tick,expect_action,expect_fragment",
    [
        # The operator rescans the bench to confirm, unaware the timeout passed: refused, loudly, with the serial.
        ("banc1", Action.NONE, "test de RW-ABCD1234 NON lancé"),
        # Once said, the next scan of the bench starts a new sequence.
        (None, Action.NONE, "Banc 1 libre"),
        # Another bench is a new sequence at once.
        ("banc2", Action.NONE, "Banc 2 libre"),
    ],
)
def test_a_late_confirmation_is_refused_not_taken_as_a_new_start(after_tick: Optional[str], expect_action: Action,
                                                                  expect_fragment: str) -> None:
    flow = ScanWorkflow(4, TIMEOUT_S, World().lookups())
    flow.handle("banc1", T0, 0.0)
    flow.handle(SERIAL, T0, 3.0)
    assert flow.tick(16.0) is not None  # the worker's tick abandons the confirmation
    if after_tick is None:
        refusal = flow.handle("banc1", T0, 20.0)
        assert refusal.level is Level.ERROR and refusal.banc == "banc1"
        decision = flow.handle("banc1", T0, 21.0)
    else:
        decision = flow.handle(after_tick, T0, 20.0)
    assert decision.action is expect_action and expect_fragment in decision.message, decision.message


# =========================================================================== stop: one bench, by scan


def test_stop_decision_names_the_bench_and_its_serial() -> None:
    world = World(running={"banc1", "banc3"}, bancs={"banc3": BancInfo(True, SERIAL, 2), "banc1": BancInfo(True, OTHER, 4)})
    decisions, flow = run(world, [(0, "stop"), (2, "banc3"), (4, "banc3")])
    stop = decisions[-1]
    assert (stop.action, stop.banc, stop.serial) == (Action.STOP, "banc3", SERIAL)
    assert [d.banc for d in decisions] == [None, "banc3", "banc3"]  # never banc1, whose test goes on
    assert flow.stage is Stage.IDLE and flow.prompt() == "Scannez un banc pour lancer un test"


@pytest.mark.parametrize(
    "first_scans,tick_at_s,expect_message",
    [
        ([(0, "stop")], 16, "arrêt annulé, aucun test arrêté. Recommencez par stop."),
        ([(0, "stop"), (5, "banc1")], 16, None),  # 11 s after the bench scan: still pending
        ([(0, "stop"), (5, "banc1")], 20.5, "arrêt du banc 1 non confirmé, le test continue. Recommencez par stop."),
    ],
)
def test_tick_expires_a_pending_stop_once(first_scans: list[tuple[float, str]], tick_at_s: float,
                                          expect_message: Optional[str]) -> None:
    _, flow = run(World(running={"banc1"}), first_scans)
    decision = flow.tick(tick_at_s)
    if expect_message is None:
        assert decision is None and flow.stage is Stage.WAIT_STOP_CONFIRM
        return
    assert decision is not None and decision.level is Level.ERROR and expect_message in decision.message
    assert decision.action is Action.NONE and flow.stage is Stage.IDLE
    assert flow.tick(tick_at_s + 1) is None


def test_a_late_stop_confirmation_is_refused_not_taken_as_a_bench_scan() -> None:
    flow = ScanWorkflow(4, TIMEOUT_S, World(running={"banc2"}).lookups())
    flow.handle("stop", T0, 0.0)
    flow.handle("banc2", T0, 1.0)
    assert flow.tick(17.0) is not None
    late = flow.handle("banc2", T0, 18.0)
    assert late.action is Action.NONE and late.level is Level.ERROR
    assert "arrêt du banc 2 NON envoyé, le test continue. Recommencez : stop, banc2, banc2." in late.message
    # Said once: the next scan of that bench is an ordinary one (a running bench: refused, with the way to stop it).
    again = flow.handle("banc2", T0, 19.0)
    assert "Pour l'arrêter : stop, banc2, banc2." in again.message


def test_prompts_of_the_stop_sequence() -> None:
    flow = ScanWorkflow(4, TIMEOUT_S, World(running={"banc4"}).lookups())
    flow.handle("stop", T0, 0.0)
    assert flow.prompt() == "Arrêt : scannez le banc à arrêter"
    flow.handle("banc4", T0, 1.0)
    assert flow.prompt() == "Rescannez banc4 pour confirmer l'arrêt de son test"


# =========================================================================== serials as scanned


def test_serial_prefix_is_the_pattern_s() -> None:
    assert f"^{SERIAL_PREFIX}[A-Za-z0-9]{{{SERIAL_BODY_MIN},{SERIAL_BODY_MAX}}}$" == store.SERIAL_PATTERN


@pytest.mark.parametrize(
    "text,serial",
    [
        ("RW-AB12", "RW-AB12"),
        ("RW-ab12", "RW-ab12"),  # the rest keeps the scan's spelling: same battery anyway (docs/fichiers.md)
        ("rw-ab12", "RW-ab12"),
        ("Rw-AB12", "RW-AB12"),
        ("rW-" + "x" * 32, "RW-" + "x" * 32),
        ("rw-ab1", None),
        ("rw-ab/12", None),
        ("rwab12", None),
        ("", None),
        ("banc1", None),
    ],
)
def test_scanned_serial(text: str, serial: Optional[str]) -> None:
    assert scanned_serial(text) == serial
    if serial is not None:
        assert store.is_valid_serial(serial)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("AB12345", "un numéro de série commence par RW-"),
        ("RW_AB12", "un numéro de série commence par RW-"),
        ("RW-", "trop court (0 caractère après RW-, il en faut de 4 à 32)"),
        ("RW-AB1", "trop court (3 caractères après RW-, il en faut de 4 à 32)"),
        ("RW-" + "A" * 33, "trop long (33 caractères après RW-, il en faut de 4 à 32)"),
        ("RW-AB 12", "caractère non permis (espace)"),
        ("RW-ÉCRAN1", "caractère non permis (« É »)"),
        ("RW-AB-12", "caractère non permis (« - »)"),
        ("rw-ab/../x", "caractère non permis (« / »)"),
    ],
)
def test_serial_problem_says_why(text: str, reason: str) -> None:
    assert scanned_serial(text) is None
    assert serial_problem(text).startswith(reason)
