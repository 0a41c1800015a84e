"""The operator message model and the security notices (kiosk_messages): tables, injected clock, no window."""

from __future__ import annotations

from typing import Optional

import pytest

from banclfp.kiosk.messages import (
    INFO_LIFETIME_S,
    SUCCESS_LIFETIME_S,
    BenchFacts,
    Kind,
    MessageBoard,
    SecurityKind,
    classify_security,
    kind_of_level,
)

PROMPT = "Scannez un banc pour lancer un test"
RUNNING_P1 = BenchFacts(occupied=True, running=True, step=1)
RUNNING_P2 = BenchFacts(occupied=True, running=True, step=2)
RUNNING_P3 = BenchFacts(occupied=True, running=True, step=3)
STOPPED = BenchFacts(occupied=True, running=False, step=9)
FREE = BenchFacts(occupied=False, running=False, step=None)

# (id, kind, facts at show time, events after it, what the bar shows at the end)
# Events: ("at", t) moves the clock; ("scan",) a new scan; ("touch",) the operator touches the message;
# ("bench", facts) the bench the message is about changes state.
CASES = [
    ("info fades to the prompt", Kind.INFO, None, [("at", INFO_LIFETIME_S)], PROMPT),
    ("info still there just before", Kind.INFO, None, [("at", INFO_LIFETIME_S - 0.1)], "MSG"),
    ("success fades", Kind.SUCCESS, None, [("at", SUCCESS_LIFETIME_S)], PROMPT),
    ("refusal outlives any delay", Kind.REFUSAL, None, [("at", 3600.0)], "MSG"),
    ("refusal read at the next scan", Kind.REFUSAL, None, [("at", 50.0), ("scan",)], PROMPT),
    ("touching a refusal does not drop it", Kind.REFUSAL, None, [("touch",)], "MSG"),
    ("alarm outlives any delay", Kind.ALARM, None, [("at", 3600.0)], "MSG"),
    ("alarm survives a scan", Kind.ALARM, None, [("scan",)], "MSG"),
    ("alarm acknowledged by a touch", Kind.ALARM, None, [("touch",)], PROMPT),
    # "Test lancé … (phase 1/5)" is wrong once the bench is in phase 2, even 2 s later.
    ("success withdrawn at the next phase", Kind.SUCCESS, RUNNING_P1, [("at", 2.0), ("bench", RUNNING_P2)], PROMPT),
    ("success kept while the state holds", Kind.SUCCESS, RUNNING_P1, [("at", 2.0), ("bench", RUNNING_P1)], "MSG"),
    # "un test y est déjà en cours d'enregistrement": wrong once step 9 has stopped that banc.py.
    ("refusal withdrawn when banc.py stops", Kind.REFUSAL, RUNNING_P3, [("at", 50.0), ("bench", STOPPED)], PROMPT),
    # ...but a phase change does not make "a test runs there" wrong.
    ("refusal kept across a phase change", Kind.REFUSAL, RUNNING_P2, [("bench", RUNNING_P3)], "MSG"),
    ("refusal withdrawn when the bench is freed", Kind.REFUSAL, STOPPED, [("bench", FREE)], PROMPT),
    ("a message about no bench ignores benches", Kind.SUCCESS, None, [("bench", FREE)], "MSG"),
]


@pytest.mark.parametrize("kind,facts,events,shown", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_message_lifetimes(kind: Kind, facts: Optional[BenchFacts], events: list[tuple], shown: str) -> None:
    board = MessageBoard(PROMPT)
    board.show("MSG", kind, 100.0, banc="banc1" if facts else None, facts=facts)
    assert board.current() == ("MSG", kind)
    for event in events:
        if event[0] == "at":
            board.expire(100.0 + event[1])
        elif event[0] == "scan":
            board.scanned()
        elif event[0] == "touch":
            board.acknowledge()
        elif event[0] == "bench":
            board.bench_changed("banc1", event[1])
            board.bench_changed("banc2", FREE)  # another bench's change never touches it
    assert board.current()[0] == shown


def test_a_new_message_replaces_the_old_and_the_prompt_follows_the_workflow() -> None:
    board = MessageBoard(PROMPT)
    board.show("Banc 1 : un test est déjà en cours", Kind.REFUSAL, 0.0, banc="banc1", facts=RUNNING_P3)
    board.show("Banc 2 libre : scannez le numéro de série", Kind.INFO, 1.0,
               prompt="Banc 2 : scannez le numéro de série")
    assert board.current() == ("Banc 2 libre : scannez le numéro de série", Kind.INFO)
    assert not board.bench_changed("banc1", STOPPED)  # the banc1 refusal is gone already
    board.expire(1.0 + INFO_LIFETIME_S)
    assert board.current() == ("Banc 2 : scannez le numéro de série", Kind.INFO)
    board.show("", Kind.INFO, 2.0)  # an empty answer (a blank scan) shows the prompt
    assert board.current()[0] == "Banc 2 : scannez le numéro de série"


def test_a_closed_window_withdraws_its_own_message_only() -> None:
    """The history's "Touchez un test …" goes with its window; a newer message is not the window's to withdraw."""
    board = MessageBoard(PROMPT)
    history = "Historique de RW-AB12 : 2 tests. Touchez un test pour voir ses graphiques."
    board.show(history, Kind.INFO, 0.0)
    assert board.withdraw(history) and board.current() == (PROMPT, Kind.INFO)
    board.show(history, Kind.INFO, 1.0)
    board.show("Banc inconnu : « banc9 ».", Kind.REFUSAL, 2.0)
    assert not board.withdraw(history)
    assert board.current()[0] == "Banc inconnu : « banc9 »."


@pytest.mark.parametrize("level,kind", [("info", Kind.INFO), ("success", Kind.SUCCESS), ("error", Kind.REFUSAL),
                                        ("alarm", Kind.ALARM), ("?", Kind.INFO)])
def test_kind_of_level(level: str, kind: Kind) -> None:
    assert kind_of_level(level) is kind


# The texts banc.py's recorder publishes (recorder.py), and what the ESP32 may send.
@pytest.mark.parametrize("text,kind,subject", [
    ("Données BMS rétablies après 47 s de silence", SecurityKind.NOTICE, "bms"),
    ("Aucune donnée BMS valide depuis 30 s : vérifier l'ESP32 et le câble BMS", SecurityKind.ALARM, "bms"),
    ("Écriture dans data.csv rétablie : 12 lignes rattrapées", SecurityKind.NOTICE, "write:data.csv"),
    # Back, but with measurements lost: the count must stay on screen until acknowledged.
    ("Écriture dans data.csv rétablie : 40 lignes rattrapées, 3 perdues (mémoire pleine)", SecurityKind.ALARM,
     "write:data.csv"),
    ("Écriture impossible dans data.csv ([Errno 28] No space left on device) : nouvel essai", SecurityKind.ALARM,
     "write:data.csv"),
    ("Écriture dans config.json rétablie", SecurityKind.NOTICE, "write:config.json"),
    ("Écriture impossible dans config.json (disque plein) : nouvel essai chaque seconde", SecurityKind.ALARM,
     "write:config.json"),
    ("Mémoire tampon pleine : des mesures BMS sont perdues, libérer le disque", SecurityKind.ALARM, None),
    ("Température haute", SecurityKind.ALARM, None),
    ("Timeout BMS : aucune donnée depuis 30 s", SecurityKind.ALARM, None),
])
def test_security_texts_are_notices_or_alarms(text: str, kind: SecurityKind, subject: Optional[str]) -> None:
    security = classify_security(text)
    assert (security.kind, security.subject) == (kind, subject)
