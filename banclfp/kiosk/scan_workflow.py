"""The operator's scan workflow (docs/kiosque.md, « Les scans »): bench -> serial -> same bench, plus the special scans
(`end`, `stop` -> bench -> same bench, `reset` -> bench, `graph` -> serial or bench, `label` -> serial or bench).

A pure state machine: it never touches files, processes, MQTT or widgets. Everything it
needs to know about the world comes from the injected `ScanLookups` and two clocks: `now`
(the local date and time, for the 48 business hours rule) and `clock_s` (a monotonic
clock, for the scan timeout: a wall-clock step during a scan neither cuts it short nor
stretches it). It answers each scan with a `Decision` (what to do, and the French message
to show the operator). The kiosk's worker thread (kiosk_worker.py) drives it and performs
the side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Optional

from banclfp.history import business_hours
from banclfp.presentation import formatting
from banclfp.recording import record, store
from banclfp.wire import protocol

SCAN_END = "end"
SCAN_STOP = "stop"
SCAN_RESET = "reset"
SCAN_GRAPH = "graph"
SCAN_LABEL = "label"
# store.SERIAL_PATTERN's fixed prefix. A scan is the same battery whatever its letter case (docs/fichiers.md:
# RW-ab12 and RW-AB12 are one battery), so `rw-ab12` is taken as RW-ab12: only the prefix is rewritten,
# the rest keeps the scan's spelling like any other serial.
SERIAL_PREFIX = "RW-"
SERIAL_BODY_MIN, SERIAL_BODY_MAX = 4, 32  # store.SERIAL_PATTERN's {4,32}

MAX_ECHO_CHARS = 40  # a garbage scan is echoed back to the operator, cut to this length


class Action(str, Enum):
    """What the kiosk must do after a scan."""

    NONE = "none"  # only show the message (or nothing when it is empty)
    START = "start"  # set_banc_status + reset the panel + spawn banc.py
    END = "end"  # publish "end" on every bench's command topic
    STOP = "stop"  # publish "end" on one bench's command topic (`banc`): that bench's test stops
    RESET = "reset"  # clear the bench in bancs_config.json
    GRAPH = "graph"  # open the charts of a test (serial or bench)
    LABEL = "label"  # print the grade label of a finished test again (serial or bench)


class Level(str, Enum):
    """How the message is shown (kiosk_messages gives each its lifetime)."""

    INFO = "info"
    SUCCESS = "success"
    ERROR = "error"  # a refusal: the scan was not accepted, the operator must act
    ALARM = "alarm"  # something failed on the kiosk's side (a file, a process, the broker)


class Stage(str, Enum):
    """Where the workflow is."""

    IDLE = "idle"
    WAIT_SERIAL = "wait_serial"
    WAIT_CONFIRM = "wait_confirm"
    WAIT_RESET_BANC = "wait_reset_banc"
    WAIT_GRAPH_TARGET = "wait_graph_target"
    WAIT_STOP_BANC = "wait_stop_banc"
    WAIT_STOP_CONFIRM = "wait_stop_confirm"
    WAIT_LABEL_TARGET = "wait_label_target"


@dataclass(frozen=True)
class Decision:
    """The answer to one scan."""

    action: Action
    message: str
    level: Level = Level.INFO
    banc: Optional[str] = None
    serial: Optional[str] = None
    start_step: Optional[int] = None
    resume: bool = False


@dataclass(frozen=True)
class BancInfo:
    """A bench's entry in bancs_config.json, as the workflow needs it."""

    occupied: bool
    serial_pending: Optional[str] = None
    current_step: Optional[int] = None


@dataclass(frozen=True)
class PreviousTest:
    """The most recent test folder of a battery."""

    banc: str
    finished: bool
    last_activity: Optional[datetime]  # end time of a finished test, else its last update
    current_step: Optional[int] = None
    first_day: Optional[date] = None
    where: Optional[str] = None  # another Pi's test, from the lab database ("SITE:bancN/...")


@dataclass(frozen=True)
class ScanLookups:
    """The I/O the workflow needs, injected (ui.py passes utils-backed functions, tests pass tables)."""

    is_banc_running: Callable[[str], bool]
    banc_info: Callable[[str], BancInfo]
    banc_for_serial: Callable[[str], Optional[str]]
    latest_test: Callable[[str], Optional[PreviousTest]]
    # What to say with the answer of latest_test for this serial: the lab database did not answer
    # in time and only this Pi's tests were seen (None: nothing to say).
    lab_note: Callable[[str], Optional[str]] = lambda _serial: None


def banc_label(banc: str) -> str:
    """"banc3" -> "banc 3" as the operator reads it."""
    return f"banc {store.banc_number(banc)}"


def _echo(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= MAX_ECHO_CHARS else clean[: MAX_ECHO_CHARS - 1] + "…"


def scanned_serial(text: str) -> Optional[str]:
    """The serial a scan names (`rw-ab12` -> "RW-ab12"), or None when it is no valid serial in any letter case."""
    if store.is_valid_serial(text):
        return text
    if text[: len(SERIAL_PREFIX)].upper() == SERIAL_PREFIX:
        fixed = SERIAL_PREFIX + text[len(SERIAL_PREFIX):]
        if store.is_valid_serial(fixed):
            return fixed
    return None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count > 1 else ''}"


def serial_problem(text: str) -> str:
    """Why a scan is not a valid serial, in the operator's words (pure; `text` is not one)."""
    if text[: len(SERIAL_PREFIX)].upper() != SERIAL_PREFIX:
        return f"un numéro de série commence par {SERIAL_PREFIX}"
    body = text[len(SERIAL_PREFIX):]
    bad = [ch for ch in body if not (ch.isascii() and ch.isalnum())]
    if bad:
        shown = "espace" if bad[0].isspace() else f"« {_echo(bad[0])} »"
        return (f"caractère non permis ({shown}) ; après {SERIAL_PREFIX}, seulement des lettres sans accent "
                f"et des chiffres")
    length = f"{_plural(len(body), 'caractère')} après {SERIAL_PREFIX}, il en faut de {SERIAL_BODY_MIN} à {SERIAL_BODY_MAX}"
    return f"trop court ({length})" if len(body) < SERIAL_BODY_MIN else f"trop long ({length})"


def _fmt_time(moment: datetime) -> str:
    return moment.astimezone(record.LOCAL_TZ).strftime("%d/%m à %H:%M")


def _resume_step(step: Optional[int]) -> int:
    """Phase to resume at: the recorded one when it is a running phase, else 1."""
    return step if isinstance(step, int) and 1 <= step < protocol.STEP_FINISHED else 1


@dataclass
class ScanWorkflow:
    """Seed §2 as a state machine. Call `handle(text, now, clock_s)` per scan and `tick(clock_s)` about once a second."""

    num_bancs: int
    timeout_s: float
    lookups: ScanLookups
    stage: Stage = Stage.IDLE
    banc: Optional[str] = None
    serial: Optional[str] = None
    started_at_s: Optional[float] = None  # monotonic clock of the sequence's first scan
    start_step: Optional[int] = None
    resume: bool = False
    occupied: bool = False
    # A confirmation the timeout abandoned: the late confirming scan is refused with it, not taken as a new start.
    expired_confirm: Optional[tuple[str, str]] = None
    expired_stop: Optional[str] = None  # the same for a stop's confirmation: the bench whose stop was not sent

    # ------------------------------------------------------------------ helpers

    def parse_banc(self, text: str) -> Optional[str]:
        """"bancN" (any case) -> "bancN" when it looks like a bench name (even an unknown number), else None."""
        if text[:4].lower() != "banc" or text != text.strip():
            return None  # a bare number is a serial's typo, not a bench
        try:
            return protocol.banc_id(text)
        except ValueError:
            return None

    def _known(self, banc: str) -> bool:
        return 1 <= store.banc_number(banc) <= self.num_bancs

    def _unknown_banc(self, banc: str) -> Decision:
        self._clear()
        return Decision(
            Action.NONE,
            f"Banc inconnu : « {banc} ». Cette installation a {self.num_bancs} bancs (banc1 à banc{self.num_bancs}).",
            Level.ERROR,
        )

    def _clear(self) -> None:
        self.stage = Stage.IDLE
        self.banc = self.serial = None
        self.started_at_s = None
        self.start_step = None
        self.resume = self.occupied = False

    def _refuse(self, message: str, banc: Optional[str] = None) -> Decision:
        """A refusal: the sequence is abandoned, the operator starts again (`banc`: the bench it is about)."""
        self._clear()
        return Decision(Action.NONE, message, Level.ERROR, banc=banc)

    def expired(self, clock_s: float) -> bool:
        """True when a pending sequence is older than the scan timeout (monotonic clock)."""
        if self.stage is Stage.IDLE or self.started_at_s is None:
            return False
        return clock_s - self.started_at_s > self.timeout_s

    def remaining_s(self, clock_s: float) -> Optional[float]:
        """Seconds left before the pending sequence expires (None when idle)."""
        if self.stage is Stage.IDLE or self.started_at_s is None:
            return None
        return max(0.0, self.timeout_s - (clock_s - self.started_at_s))

    def _timeout_text_s(self) -> str:
        return formatting.format_number(self.timeout_s, 0 if float(self.timeout_s).is_integer() else 1, "s")

    def _timeout_text(self, stage: Stage, banc: Optional[str]) -> str:
        """The timeout refusal of a stage: what was lost, and the scan to start again with."""
        delay = f"Délai de {self._timeout_text_s()} dépassé"
        if stage is Stage.WAIT_CONFIRM and banc:
            return f"{delay} : {banc} non confirmé, test non lancé. Recommencez par le banc."
        if stage is Stage.WAIT_RESET_BANC:
            return f"{delay} : reset annulé. Recommencez par reset."
        if stage is Stage.WAIT_GRAPH_TARGET:
            return f"{delay} : graphiques annulés. Recommencez par graph."
        if stage is Stage.WAIT_LABEL_TARGET:
            return f"{delay} : étiquette non imprimée. Recommencez par label."
        if stage is Stage.WAIT_STOP_CONFIRM and banc:
            return f"{delay} : arrêt du {banc_label(banc)} non confirmé, le test continue. Recommencez par stop."
        if stage is Stage.WAIT_STOP_BANC:
            return f"{delay} : arrêt annulé, aucun test arrêté. Recommencez par stop."
        return f"{delay} : scan annulé. Recommencez par le banc."

    def prompt(self) -> str:
        """What the operator is expected to scan next."""
        if self.stage is Stage.WAIT_SERIAL and self.banc:
            return f"{banc_label(self.banc).capitalize()} : scannez le numéro de série"
        if self.stage is Stage.WAIT_CONFIRM and self.banc:
            return f"Rescannez {self.banc} pour confirmer ({self.serial})"
        if self.stage is Stage.WAIT_RESET_BANC:
            return "Reset : scannez le banc à libérer"
        if self.stage is Stage.WAIT_GRAPH_TARGET:
            return "Graphiques : scannez un numéro de série ou un banc"
        if self.stage is Stage.WAIT_LABEL_TARGET:
            return "Étiquette : scannez un numéro de série ou un banc"
        if self.stage is Stage.WAIT_STOP_BANC:
            return "Arrêt : scannez le banc à arrêter"
        if self.stage is Stage.WAIT_STOP_CONFIRM and self.banc:
            return f"Rescannez {self.banc} pour confirmer l'arrêt de son test"
        return "Scannez un banc pour lancer un test"

    # ------------------------------------------------------------------ entry points

    def tick(self, clock_s: float) -> Optional[Decision]:
        """Abandon a sequence whose timeout has passed; return the message to show once, else None."""
        if not self.expired(clock_s):
            return None
        stage, banc, serial = self.stage, self.banc, self.serial
        self._clear()
        if stage is Stage.WAIT_CONFIRM and banc and serial:
            self.expired_confirm = (banc, serial)
        if stage is Stage.WAIT_STOP_CONFIRM and banc:
            self.expired_stop = banc
        return Decision(Action.NONE, self._timeout_text(stage, banc), Level.ERROR, banc=banc)

    def begin_graph(self, now: datetime, clock_s: float) -> Decision:
        """Same as scanning `graph` (the kiosk's Graphiques button)."""
        return self.handle(SCAN_GRAPH, now, clock_s)

    def cancel(self) -> Decision:
        """Abandon any pending sequence."""
        self._clear()
        return Decision(Action.NONE, self.prompt(), Level.INFO)

    def handle(self, text: str, now: datetime, clock_s: float) -> Decision:
        """Process one scan (the text typed by the scanner before Enter); `clock_s` is a monotonic clock."""
        text = (text or "").strip()
        if not text:
            return Decision(Action.NONE, "")
        late_confirm, self.expired_confirm = self.expired_confirm, None
        late_stop, self.expired_stop = self.expired_stop, None
        word = text.lower()
        if word == SCAN_END:
            self._clear()
            return Decision(Action.END, "Fin de journée : « end » envoyé à tous les bancs.", Level.SUCCESS)
        if word == SCAN_RESET:
            self._clear()
            self.stage, self.started_at_s = Stage.WAIT_RESET_BANC, clock_s
            return Decision(Action.NONE, "Reset : scannez le banc à libérer.", Level.INFO)
        if word == SCAN_GRAPH:
            self._clear()
            self.stage, self.started_at_s = Stage.WAIT_GRAPH_TARGET, clock_s
            return Decision(Action.NONE, "Graphiques : scannez un numéro de série ou un banc.", Level.INFO)
        if word == SCAN_LABEL:
            self._clear()
            self.stage, self.started_at_s = Stage.WAIT_LABEL_TARGET, clock_s
            return Decision(Action.NONE, "Étiquette : scannez le numéro de série ou le banc du test à réimprimer.",
                            Level.INFO)
        if word == SCAN_STOP:
            self._clear()
            self.stage, self.started_at_s = Stage.WAIT_STOP_BANC, clock_s
            return Decision(
                Action.NONE, "Arrêt d'un seul banc : scannez le banc dont le test doit s'arrêter "
                "(les autres bancs continuent).", Level.INFO,
            )

        if self.stage in (Stage.WAIT_CONFIRM, Stage.WAIT_STOP_CONFIRM) and self.expired(clock_s):
            stage, banc = self.stage, self.banc
            return self._refuse(self._timeout_text(stage, banc), banc)
        if late_stop is not None and self.stage is Stage.IDLE and self.parse_banc(text) == late_stop:
            # The same for a stop: the late confirming scan must not read as the start of a new test.
            return self._refuse(
                f"Délai de {self._timeout_text_s()} dépassé : arrêt du {banc_label(late_stop)} NON envoyé, "
                f"le test continue. Recommencez : stop, {late_stop}, {late_stop}.", late_stop,
            )
        if late_confirm is not None and self.stage is Stage.IDLE and self.parse_banc(text) == late_confirm[0]:
            # The confirming scan came after the timeout: say so again rather than start a new sequence silently.
            banc, serial = late_confirm
            return self._refuse(
                f"Délai de {self._timeout_text_s()} dépassé : {banc} non confirmé, test de {serial} NON lancé. "
                f"Recommencez : {banc}, numéro de série, {banc}.", banc,
            )
        expired_before = self.expired(clock_s)
        if expired_before:
            self._clear()  # a stale bench/reset/graph scan: this scan starts afresh

        if self.stage is Stage.IDLE:
            return self._idle(text, now, clock_s, expired_before)
        if self.stage is Stage.WAIT_SERIAL:
            return self._wait_serial(text, now, clock_s)
        if self.stage is Stage.WAIT_CONFIRM:
            return self._wait_confirm(text)
        if self.stage is Stage.WAIT_RESET_BANC:
            return self._wait_reset(text)
        if self.stage is Stage.WAIT_STOP_BANC:
            return self._wait_stop_banc(text, clock_s)
        if self.stage is Stage.WAIT_STOP_CONFIRM:
            return self._wait_stop_confirm(text)
        if self.stage is Stage.WAIT_LABEL_TARGET:
            return self._wait_label(text)
        return self._wait_graph(text)

    # ------------------------------------------------------------------ stages

    def _idle(self, text: str, now: datetime, clock_s: float, after_timeout: bool = False) -> Decision:
        banc = self.parse_banc(text)
        if banc is None:
            serial = scanned_serial(text)
            if serial is not None:
                prefix = f"Délai de {self._timeout_text_s()} dépassé. " if after_timeout else ""
                return self._refuse(f"{prefix}Scannez d'abord le banc, puis le numéro de série {serial}.")
            return self._refuse(f"Code non reconnu : « {_echo(text)} ». Scannez un banc (ex. banc1).")
        if not self._known(banc):
            return self._unknown_banc(banc)
        if self.lookups.is_banc_running(banc):
            return self._refuse(
                f"{banc_label(banc).capitalize()} : un test y est déjà en cours d'enregistrement. "
                f"Pour l'arrêter : stop, {banc}, {banc}.", banc,
            )
        info = self.lookups.banc_info(banc)
        self.stage, self.banc, self.started_at_s = Stage.WAIT_SERIAL, banc, clock_s
        # An occupied entry without a usable serial is a damaged state file: treat the bench as free.
        self.occupied = info.occupied and store.is_valid_serial(info.serial_pending)
        if self.occupied:
            self.serial = info.serial_pending
            self.start_step = _resume_step(info.current_step)
            return Decision(
                Action.NONE,
                f"{banc_label(banc).capitalize()} occupé par {info.serial_pending} (test interrompu) : "
                f"scannez ce numéro de série pour reprendre.",
                Level.INFO,
                banc=banc,
            )
        return Decision(
            Action.NONE, f"{banc_label(banc).capitalize()} libre : scannez le numéro de série de la batterie.",
            Level.INFO, banc=banc,
        )

    def _wait_serial(self, text: str, now: datetime, clock_s: float) -> Decision:
        assert self.banc is not None
        banc = self.parse_banc(text)
        if banc is not None:
            if banc == self.banc:
                return Decision(Action.NONE, f"En attente du numéro de série pour le {banc_label(banc)}.", Level.INFO)
            self._clear()  # another bench: the operator changed their mind, start over with it
            return self._idle(text, now, clock_s)
        serial = scanned_serial(text)
        if serial is None:
            # A misread serial keeps the bench selected (the timer keeps running): just rescan it.
            return Decision(
                Action.NONE,
                f"Numéro de série invalide « {_echo(text)} » : {serial_problem(text)}. "
                f"Rescannez le numéro de série.",
                Level.ERROR,
                banc=self.banc,
            )
        other = self.lookups.banc_for_serial(serial)
        if other is not None and other != self.banc:
            return self._refuse(f"{serial} est déjà sur le {banc_label(other)} : un seul banc par batterie.", other)
        if self.occupied:
            pending = self.serial or ""
            if serial.upper() != pending.upper():
                return self._refuse(
                    f"Le {banc_label(self.banc)} attend {pending} (test interrompu), pas {serial}. "
                    f"Scannez reset puis {self.banc} pour libérer le banc."
                )
            self.serial = pending  # keep the spelling already on disk
            self.resume = True
            self.stage = Stage.WAIT_CONFIRM
            return Decision(
                Action.NONE,
                f"Reprise de {pending} à la phase {self.start_step}/5 : rescannez {self.banc} pour confirmer.",
                Level.INFO, banc=self.banc, serial=pending,
            )
        return self._free_banc_serial(serial, now)

    def _free_banc_serial(self, serial: str, now: datetime) -> Decision:
        assert self.banc is not None
        previous = self.lookups.latest_test(serial)
        lab_note = self.lookups.lab_note(serial)
        said = f" ({lab_note})" if lab_note else ""
        note = "nouveau test"
        self.start_step, self.resume = 1, False
        if previous is not None and previous.finished:
            ended = previous.last_activity
            if ended is not None and not business_hours.is_past_business_hours(ended, now):
                allowed = business_hours.add_business_hours(ended, business_hours.BUSINESS_HOURS_BEFORE_RETEST)
                where = f" ({previous.where})" if previous.where else ""
                return self._refuse(
                    f"{serial} : dernier test terminé le {_fmt_time(ended)}{where}, il y a moins de "
                    f"{formatting.format_number(business_hours.BUSINESS_HOURS_BEFORE_RETEST, 0, 'h')} ouvrées. "
                    f"Nouveau test possible à partir du {_fmt_time(allowed)}." + said
                )
            note = f"nouveau test (dernier test terminé il y a plus de {formatting.format_number(business_hours.BUSINESS_HOURS_BEFORE_RETEST, 0, 'h')} ouvrées)"
        elif previous is not None and previous.banc == self.banc:
            self.start_step, self.resume = _resume_step(previous.current_step), True
            note = f"reprise du test inachevé à la phase {self.start_step}/5"
        elif previous is not None:
            note = f"nouveau test (le test inachevé du {banc_label(previous.banc)} ne sera pas repris)"
        self.serial = serial
        self.stage = Stage.WAIT_CONFIRM
        return Decision(
            Action.NONE, f"{serial} : {note}. Rescannez {self.banc} pour confirmer." + said, Level.INFO,
            banc=self.banc, serial=serial,
        )

    def _wait_confirm(self, text: str) -> Decision:
        assert self.banc is not None and self.serial is not None
        banc = self.parse_banc(text)
        if banc is None:
            if self.serial and text.upper() == self.serial.upper():
                return Decision(Action.NONE, f"Rescannez {self.banc} pour confirmer le test de {self.serial}.", Level.INFO)
            return self._refuse(
                f"Confirmation attendue : rescannez {self.banc} (reçu « {_echo(text)} »). Test non lancé, recommencez."
            )
        if banc != self.banc:
            return self._refuse(f"Confirmation attendue : {self.banc}, reçu {banc}. Test non lancé, recommencez.")
        if self.lookups.is_banc_running(banc):
            return self._refuse(
                f"{banc_label(banc).capitalize()} : un test vient d'y démarrer (enregistrement déjà en cours). "
                f"Test de {self.serial} non lancé.", banc,
            )
        decision = Decision(
            Action.START,
            f"Test {'repris' if self.resume else 'lancé'} sur le {banc_label(banc)} : {self.serial}"
            f" (phase {self.start_step}/5).",
            Level.SUCCESS,
            banc=banc, serial=self.serial, start_step=self.start_step, resume=self.resume,
        )
        self._clear()
        return decision

    def _wait_reset(self, text: str) -> Decision:
        banc = self.parse_banc(text)
        if banc is None:
            return self._refuse(f"Reset : scannez un banc (reçu « {_echo(text)} »). Reset annulé.")
        if not self._known(banc):
            return self._unknown_banc(banc)
        if self.lookups.is_banc_running(banc):
            # Never advise `end` here: it stops every bench of the lab, not this one.
            return self._refuse(
                f"Reset refusé : un test tourne sur le {banc_label(banc)}. Un banc ne se libère qu'une fois son "
                f"test terminé ou arrêté (pour l'arrêter : stop, {banc}, {banc}).", banc,
            )
        self._clear()
        return Decision(Action.RESET, f"{banc_label(banc).capitalize()} libéré (reset).", Level.SUCCESS, banc=banc)

    def _wait_graph(self, text: str) -> Decision:
        banc = self.parse_banc(text)
        if banc is not None:
            if not self._known(banc):
                return self._unknown_banc(banc)
            self._clear()
            return Decision(Action.GRAPH, f"Graphiques du {banc_label(banc)}.", Level.INFO, banc=banc)
        serial = scanned_serial(text)
        if serial is not None:
            self._clear()
            return Decision(Action.GRAPH, f"Graphiques de {serial}.", Level.INFO, serial=serial)
        return self._refuse(f"Graphiques : scannez un numéro de série ou un banc (reçu « {_echo(text)} »).")

    def _wait_label(self, text: str) -> Decision:
        banc = self.parse_banc(text)
        if banc is not None:
            if not self._known(banc):
                return self._unknown_banc(banc)
            self._clear()
            return Decision(Action.LABEL, f"Étiquette du dernier test du {banc_label(banc)}…", Level.INFO, banc=banc)
        serial = scanned_serial(text)
        if serial is not None:
            self._clear()
            return Decision(Action.LABEL, f"Étiquette de {serial}…", Level.INFO, serial=serial)
        return self._refuse(f"Étiquette : scannez un numéro de série ou un banc (reçu « {_echo(text)} »).")

    def _wait_stop_banc(self, text: str, clock_s: float) -> Decision:
        banc = self.parse_banc(text)
        if banc is None:
            return self._refuse(f"Arrêt : scannez un banc (reçu « {_echo(text)} »). Arrêt annulé, aucun test arrêté.")
        if not self._known(banc):
            return self._unknown_banc(banc)
        info = self.lookups.banc_info(banc)
        serial = info.serial_pending if info.occupied and store.is_valid_serial(info.serial_pending) else None
        if not self.lookups.is_banc_running(banc):
            state = (f"le test de {serial} n'est pas en cours (déjà arrêté ou terminé)" if serial
                     else "aucun test n'y est en cours")
            return self._refuse(f"Arrêt refusé : {banc_label(banc)}, {state}. Rien à arrêter.", banc)
        # The timeout runs from this bench scan to the confirming one, as for a start.
        self.stage, self.banc, self.serial, self.started_at_s = Stage.WAIT_STOP_CONFIRM, banc, serial, clock_s
        test = f"le test de {serial}" if serial else "son test"
        # What to scan first: on a small screen the end of a long message is elided.
        return Decision(
            Action.NONE,
            f"Rescannez {banc} pour arrêter {test} (courant coupé ; il pourra reprendre à la phase atteinte).",
            Level.INFO, banc=banc, serial=serial,
        )

    def _wait_stop_confirm(self, text: str) -> Decision:
        assert self.banc is not None
        banc, serial = self.parse_banc(text), self.serial
        if banc is None:
            return self._refuse(
                f"Confirmation attendue : rescannez {self.banc} (reçu « {_echo(text)} »). Arrêt annulé, "
                f"le test continue.", self.banc,
            )
        if banc != self.banc:
            return self._refuse(
                f"Confirmation attendue : {self.banc}, reçu {banc}. Arrêt annulé, le test du "
                f"{banc_label(self.banc)} continue.", self.banc,
            )
        if not self.lookups.is_banc_running(banc):
            return self._refuse(f"Arrêt inutile : le test du {banc_label(banc)} s'est arrêté entre-temps.", banc)
        self._clear()
        return Decision(Action.STOP, f"Arrêt du {banc_label(banc)} confirmé.", Level.SUCCESS, banc=banc, serial=serial)
