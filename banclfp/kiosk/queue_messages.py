"""What paho's network thread and the kiosk's worker thread hand the Tk thread: a closed set of typed messages.

One queue (`CoalescingQueue`) carries them; the Tk thread drains it (App.drain_queue) and
dispatches on the message's class, which mypy checks is exhaustive over `KioskMessage`.
An MQTT message keeps its raw payload: it is parsed on the Tk thread, which reports (rate
limited) the malformed ones. Pure data, no Tk, no I/O.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Union

from banclfp.kiosk.messages import SecurityMessage
from banclfp.kiosk.scan_workflow import Action
from banclfp.kiosk.state import BancSnapshot, HistoryEntry
from banclfp.wire import protocol

# report.show_charts(master, test_folder): opens the charts window (master: a Tk widget, untyped by customtkinter).
ShowCharts = Callable[[object, Path], object]


# =========================================================================== from paho's thread (bench topics)


@dataclass(frozen=True)
class MqttBms:
    """bancX/bms/data: one BMS line, as received."""

    kind: ClassVar[str] = protocol.KIND_BMS
    banc: str
    payload: bytes


@dataclass(frozen=True)
class MqttStep:
    """bancX/step: the bench's phase (1..5) or its stop (9), as received."""

    kind: ClassVar[str] = protocol.KIND_STEP
    banc: str
    payload: bytes


@dataclass(frozen=True)
class MqttSecurity:
    """bancX/security: an alarm or a recovery notice, as received."""

    kind: ClassVar[str] = protocol.KIND_SECURITY
    banc: str
    payload: bytes


@dataclass(frozen=True)
class MqttNurse:
    """bancX/nJ: nurse battery J's state of charge, as received."""

    kind: ClassVar[str] = protocol.KIND_NURSE
    banc: str
    payload: bytes
    index: int


@dataclass(frozen=True)
class MqttEspStatus:
    """bancX/esp/status: the ESP32's online/offline (its last will), as received."""

    kind: ClassVar[str] = protocol.KIND_ESP_STATUS
    banc: str
    payload: bytes


@dataclass(frozen=True)
class MqttBancStatus:
    """bancX/banc/status: banc.py's online/offline (its last will), as received."""

    kind: ClassVar[str] = protocol.KIND_BANC_STATUS
    banc: str
    payload: bytes


MqttMessage = Union[MqttBms, MqttStep, MqttSecurity, MqttNurse, MqttEspStatus, MqttBancStatus]
_BY_KIND: dict[str, Callable[[str, bytes], MqttMessage]] = {
    cls.kind: cls for cls in (MqttBms, MqttStep, MqttSecurity, MqttEspStatus, MqttBancStatus)
}


def mqtt_message(info: protocol.TopicInfo, payload: bytes) -> Optional[MqttMessage]:
    """The message of a bench topic the kiosk shows; None for the others (ri/results: read from config.json)."""
    if info.kind == protocol.KIND_NURSE:
        return MqttNurse(info.banc, payload, info.nurse_index or 0)
    make = _BY_KIND.get(info.kind)
    return None if make is None else make(info.banc, payload)


@dataclass(frozen=True)
class BrokerLink:
    """The kiosk's own link to the broker went up or down (paho's connect and disconnect callbacks)."""

    up: bool


# =========================================================================== from the kiosk's worker thread


@dataclass(frozen=True)
class Outcome:
    """What the Tk thread must show or do after a request: the workflow's decision, performed."""

    action: Action
    message: str
    level: str
    banc: Optional[str] = None
    serial: Optional[str] = None
    start_step: Optional[int] = None
    done: bool = False  # the decision's side effect happened (test started, bench reset, folder found)
    folder: Optional[Path] = None  # GRAPH: the test to chart
    show_charts: Optional[ShowCharts] = None  # GRAPH: report.show_charts, imported by the worker
    history: tuple[HistoryEntry, ...] = ()  # GRAPH of a serial: every test of that battery, newest first
    answers_scan: bool = True  # False for a notice nobody asked for (a banc.py that failed at start)
    prompt: str = ""  # what the workflow expects next, shown once the message has expired


@dataclass(frozen=True)
class ChargeProfileLoaded:
    """charge_profile.csv is loaded: the phase-2 time left can be estimated with its charge-duration function."""

    charge_duration: Callable[[float], float]


@dataclass(frozen=True)
class ChargeProfileUnusable:
    """charge_profile.csv cannot be used (said on screen; no phase-2 estimate)."""

    reason: str


@dataclass(frozen=True)
class JournalAlarm:
    """At the kiosk's start: an alarm still active in the journal of a bench's test under way."""

    banc: str
    alarm: SecurityMessage


@dataclass(frozen=True)
class LabelOutcome:
    """What became of a grade label sent to the printer (after the verdict, or asked for by a `label` scan)."""

    banc: str
    serial: str
    printed: bool
    reason: str = ""  # in French, when not printed
    retry_in_s: Optional[float] = None  # the next automatic attempt; None: only a `label` scan prints it now
    by_hand: bool = False  # asked for by a `label` scan


# BancSnapshot (kiosk_state) is a message as it is: a bench's files and banc.py, read by the worker.
WorkerMessage = Union[Outcome, BancSnapshot, ChargeProfileLoaded, ChargeProfileUnusable, JournalAlarm, LabelOutcome]
KioskMessage = Union[MqttMessage, BrokerLink, WorkerMessage]


# =========================================================================== the queue


_Slot = tuple[str, str, int]  # (kind, bench, nurse index): where a coalesced message waits


def _slot(item: KioskMessage) -> Optional[_Slot]:
    """The slot of a message that replaces the one waiting before it (BMS lines, nurse values); None: kept in order."""
    if isinstance(item, MqttBms):
        return item.kind, item.banc, 0
    if isinstance(item, MqttNurse):
        return item.kind, item.banc, item.index
    return None


class CoalescingQueue(queue.Queue[KioskMessage]):
    """The one queue the Tk thread drains, fed by the worker and the MQTT thread; bounded where the volume is.

    A BMS line or nurse value replaces the one of the same bench (and nurse) still waiting,
    in the place the first of them took: however long the Tk thread is held, at most one
    per bench and nurse waits. Everything else (steps, statuses, alerts, the worker's
    results: a few per minute) waits in order, every one of them.
    """

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Union[KioskMessage, _Slot]] = deque()
        self.latest: dict[_Slot, KioskMessage] = {}
        self.received = 0  # items put, replaced ones included

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: KioskMessage) -> None:
        self.received += 1
        slot = _slot(item)
        if slot is None:
            self.queue.append(item)
            return
        if slot not in self.latest:
            self.queue.append(slot)
        self.latest[slot] = item

    def _get(self) -> KioskMessage:
        entry = self.queue.popleft()
        # A slot is a plain tuple; no message is one (they are dataclasses).
        return self.latest.pop(entry) if isinstance(entry, tuple) else entry
