"""What the kiosk says to the operator, and for how long: pure data and rules, no Tk, no I/O, clock injected.

The scan bar shows one message at a time. Each has a kind and a lifetime: information and
good news fade back to the workflow's prompt after a while; a refusal stays readable until
the next scan; an alarm stays until it is touched (acknowledged). Any message about a
bench is withdrawn as soon as the state it describes changes ("Test lancé … phase 1/5"
once the bench is in phase 2, "un test est déjà en cours" once that banc.py has stopped).

On a bench's panel, what banc.py or the ESP32 publish on bancX/security is either a
notice (good news: data or writes are back; informational, never red, fades away) or an
alarm (red, stays until touched or cleared by the state: the next step, the bench reset,
or the notice that its subject is back).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Optional


class Kind(str, Enum):
    """What a message is, which sets its colour and its lifetime."""

    INFO = "info"
    SUCCESS = "success"
    REFUSAL = "refusal"
    ALARM = "alarm"


INFO_LIFETIME_S = 30.0  # long enough to read twice; the prompt it fades to says what to scan next
SUCCESS_LIFETIME_S = 20.0
NOTICE_LIFETIME_S = 30.0  # a recovery notice on a bench's panel
LIFETIMES_S: dict[Kind, Optional[float]] = {
    Kind.INFO: INFO_LIFETIME_S,
    Kind.SUCCESS: SUCCESS_LIFETIME_S,
    Kind.REFUSAL: None,  # until the next scan: an operator who looked away must still read it
    Kind.ALARM: None,  # until touched
}

# How every message about the kiosk's own broker link being down begins (withdrawn when it is back).
BROKER_DOWN_PREFIX = "Broker déconnecté"

# scan_workflow.Level values (carried by the worker's Outcome) -> kinds.
_KIND_OF_LEVEL = {"info": Kind.INFO, "success": Kind.SUCCESS, "error": Kind.REFUSAL, "alarm": Kind.ALARM}


def kind_of_level(level: str) -> Kind:
    """The message kind of a scan_workflow.Level value (unknown levels are information)."""
    return _KIND_OF_LEVEL.get(level, Kind.INFO)


class BenchFacts(NamedTuple):
    """The state of a bench a message describes (kiosk_state.message_facts derives it)."""

    occupied: bool
    running: bool
    step: Optional[int]


@dataclass(frozen=True)
class Message:
    """One message for the operator: its text, kind, when it was shown and how long it lives."""

    text: str
    kind: Kind
    shown_at_s: float
    lifetime_s: Optional[float]
    banc: Optional[str] = None
    facts: Optional[BenchFacts] = None

    def expired(self, now_s: float) -> bool:
        """True once its lifetime is over (never for refusals and alarms)."""
        return self.lifetime_s is not None and now_s - self.shown_at_s >= self.lifetime_s

    def outdated(self, facts: BenchFacts) -> bool:
        """True when the bench's state no longer is the one the message describes."""
        if self.facts is None:
            return False
        if self.kind in (Kind.INFO, Kind.SUCCESS):
            return facts != self.facts  # "phase 1/5" is wrong in phase 2
        # A refusal or an alarm is about whether the bench is taken and whether its banc.py runs.
        return (facts.occupied, facts.running) != (self.facts.occupied, self.facts.running)


class MessageBoard:
    """The scan bar's message: the latest one while it holds, else the workflow's prompt."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.message: Optional[Message] = None

    def show(
        self, text: str, kind: Kind, now_s: float, *, banc: Optional[str] = None, facts: Optional[BenchFacts] = None,
        prompt: Optional[str] = None,
    ) -> None:
        """A new message replaces the current one (`prompt`: what the workflow expects next)."""
        if prompt:
            self.prompt = prompt
        self.message = Message(text, kind, now_s, LIFETIMES_S[kind], banc, facts) if text else None

    def scanned(self) -> None:
        """A scan was made: a refusal has been read (its answer replaces it)."""
        if self.message is not None and self.message.kind is Kind.REFUSAL:
            self.message = None

    def acknowledge(self) -> bool:
        """The operator touched the message: an alarm is acknowledged. True when something changed."""
        if self.message is not None and self.message.kind is Kind.ALARM:
            self.message = None
            return True
        return False

    def bench_changed(self, banc: str, facts: BenchFacts) -> bool:
        """A bench's state changed: withdraw a message about it that it makes wrong. True when withdrawn."""
        if self.message is not None and self.message.banc == banc and self.message.outdated(facts):
            self.message = None
            return True
        return False

    def withdraw(self, text: str) -> bool:
        """Withdraw the message if it is still this text (one that a closed window made untrue). True when withdrawn."""
        if self.message is not None and self.message.text == text:
            self.message = None
            return True
        return False

    def expire(self, now_s: float) -> bool:
        """Withdraw the message once its lifetime is over. True when withdrawn."""
        if self.message is not None and self.message.expired(now_s):
            self.message = None
            return True
        return False

    def broker_back(self) -> bool:
        """The kiosk's broker link is back: a message saying it is down ("Broker déconnecté : …") is no longer
        true, and goes. True when withdrawn."""
        if self.message is not None and self.message.text.startswith(BROKER_DOWN_PREFIX):
            self.message = None
            return True
        return False

    def current(self) -> tuple[str, Kind]:
        """What the scan bar shows now: the message, else the prompt."""
        if self.message is None:
            return self.prompt, Kind.INFO
        return self.message.text, self.message.kind


# =========================================================================== bancX/security: notice or alarm


class SecurityKind(str, Enum):
    """A bancX/security text is good news (a notice) or an alarm."""

    NOTICE = "notice"
    ALARM = "alarm"


class SecurityMessage(NamedTuple):
    """A bancX/security text, classified; `subject` ties a recovery notice to the alarm it ends; `cuts_current`:
    the alarm says the current is cut (the panel then never shows a current flowing from an older line)."""

    text: str
    kind: SecurityKind
    subject: Optional[str]
    cuts_current: bool = False


# recorder.py's recovery texts: "Données BMS rétablies après 47 s de silence", "Écriture dans data.csv rétablie : …".
_RECOVERY_RE = re.compile(r"\brétabli(e|s|es)?\b", re.IGNORECASE)
_LOSS_RE = re.compile(r"\bperdu(e|s|es)?\b", re.IGNORECASE)
# The firmware's safety stops: "… courant coupé …", "courant 0" (deploy/FIRMWARE_ESP32.md, Protections).
_CURRENT_CUT_RE = re.compile(r"\bcourant (?:coup[ée]|0\b)", re.IGNORECASE)
_SUBJECTS = (
    (re.compile(r"donn[ée]es? BMS", re.IGNORECASE), "bms"),
    (re.compile(r"[ée]criture (?:impossible )?dans (\S+?)(?=[\s:(]|$)", re.IGNORECASE), "write"),
)


def classify_security(text: str) -> SecurityMessage:
    """Classify a bancX/security text: a recovery ("… rétablie(s) …") is a notice, anything else an alarm."""
    subject = None
    for pattern, name in _SUBJECTS:
        match = pattern.search(text)
        if match:
            subject = f"{name}:{match.group(1).lower()}" if match.groups() else name
            break
    # A recovery that also reports a loss ("… rétablie : 40 lignes rattrapées, 3 perdues") stays an
    # alarm: the operator must see how many measurements are gone, not watch it fade.
    recovered = _RECOVERY_RE.search(text) and not _LOSS_RE.search(text)
    kind = SecurityKind.NOTICE if recovered else SecurityKind.ALARM
    return SecurityMessage(text, kind, subject, kind is SecurityKind.ALARM and bool(_CURRENT_CUT_RE.search(text)))


class BenchAlarm:
    """The red alarm of one bench's panel (the rules; the panel draws what it holds).

    An alarm stays until it is touched, the next phase, the bench reset or a new test, or the
    recovery notice of the same subject; a newer alarm replaces it. The same rules run live
    (the Tk thread) and over a test's journal when the kiosk starts (`replay_alerts`).
    """

    def __init__(self) -> None:
        self.alarm: Optional[SecurityMessage] = None

    def security(self, message: SecurityMessage) -> bool:
        """A bancX/security text; True when it changed the alarm (shown, or ended by its recovery notice)."""
        if message.kind is SecurityKind.ALARM:
            self.alarm = message
            return True
        if self.alarm is not None and message.subject is not None and message.subject == self.alarm.subject:
            self.alarm = None  # what the alarm was about is back
            return True
        return False

    def clear(self) -> bool:
        """Touched, the next phase, a reset or a new test: the alarm goes. True when there was one."""
        had = self.alarm is not None
        self.alarm = None
        return had


# The journal's events (record.EVENT_*) that end a panel's alarm as the live kiosk would: a new test or a
# resumed one (the panel is reset), a new phase.
_JOURNAL_CLEARS = frozenset(("start", "migrate", "resume", "abandon", "step"))
_JOURNAL_ALERT = "alert"


def replay_alerts(events: Iterable[tuple[str, Optional[str]]]) -> Optional[SecurityMessage]:
    """The alarm still active at the end of a test's journal (banc.py writes every bancX/security text in it),
    through the rules the kiosk applies live (`BenchAlarm`): what a kiosk that starts shows (pure).

    `events` are the journal's (kind, text of an alert, else None), in order (KioskWorker.replay_journals).
    """
    alarm = BenchAlarm()
    for kind, text in events:
        if kind in _JOURNAL_CLEARS:
            alarm.clear()
        elif kind == _JOURNAL_ALERT and text is not None and text.strip():
            alarm.security(classify_security(text))
    return alarm.alarm
