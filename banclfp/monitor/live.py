"""What the monitor knows live of every bench of every Pi, and what a page shows of it: pure, the clock passed in.

A bench is known by (site, banc): "" is the broker the monitor reads directly (this Pi's, or a
Pi's own broker), a site name is a Pi whose topics a Mosquitto bridge brought into the lab's
broker under `SITE/` (deploy/mosquitto-pont-labo.conf). Each bench's state is the kiosk's own
`BancRuntime`, fed as the kiosk feeds it, and what a page shows is the kiosk's `banc_display`,
`measure_cells` and `bench_time_left_s`: the same phase, numbers, units, colours and freshness.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from banclfp.kiosk.messages import SecurityKind, classify_security
from banclfp.kiosk.state import BancRuntime, banc_display, bench_time_left_s
from banclfp.presentation import display_colors, formatting
from banclfp.recording import record
from banclfp.wire import protocol

SITE_RE = re.compile(r"[A-Za-z0-9-]{1,32}")  # a Pi's name in the lab (BANC_SITE's rule)
MAX_ALARMS = 5  # the latest alarms kept per bench (the page shows them newest first)
# What the monitor subscribes to, for its own broker's benches and for every bridged Pi's (`SITE/bancN/...`).
# Wildcards, so 64 benches on 10 Pis still make 12 subscriptions; parse_topic throws away anything else.
_KIND_FILTERS = ("step", "bms/data", "security", "esp/status", "banc/status", "ri/results")
SUBSCRIPTIONS: tuple[str, ...] = tuple(f"+/{kind}" for kind in _KIND_FILTERS) + tuple(
    f"+/+/{kind}" for kind in _KIND_FILTERS)


@dataclass(frozen=True)
class BenchKey:
    """A bench of the lab: the Pi it belongs to ("" for the monitor's own broker) and its id ("banc3")."""

    site: str
    banc: str

    @property
    def slug(self) -> str:
        """A name for the page (an element id, an event's key): "banc3" or "pi-nord.banc3"."""
        return f"{self.site}.{self.banc}" if self.site else self.banc

    @property
    def title(self) -> str:
        """The bench's title on the page: "Banc 3", "pi-nord · Banc 3"."""
        name = f"Banc {protocol.banc_number(self.banc)}"
        return f"{self.site} · {name}" if self.site else name


def parse_lab_topic(topic: str) -> Optional[tuple[BenchKey, protocol.TopicInfo]]:
    """A bench topic, possibly under a bridged Pi's `SITE/` prefix; None when it is not one of ours."""
    site, _, rest = topic.partition("/")
    info = protocol.parse_topic(rest) if SITE_RE.fullmatch(site) and not site.startswith("banc") else None
    if info is not None:
        return BenchKey(site, info.banc), info
    info = protocol.parse_topic(topic)
    return (BenchKey("", info.banc), info) if info is not None else None


@dataclass
class Bench:
    """One bench as the monitor knows it: the kiosk's runtime state, its alarms and when it last changed."""

    key: BenchKey
    rt: BancRuntime
    alarms: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=MAX_ALARMS))
    line_unix_s: Optional[float] = None  # when its latest BMS line arrived (wall clock, for the latency measure)


class Board:
    """Every bench heard of; `apply` takes one MQTT message, `view` says what a page shows of a bench."""

    def __init__(self, charge_duration: Optional[Callable[[float], float]] = None) -> None:
        self.charge_duration = charge_duration
        self.benches: dict[BenchKey, Bench] = {}

    def bench(self, key: BenchKey) -> Bench:
        """The bench `key`, created on its first message (known: the monitor asserts only what it heard)."""
        bench = self.benches.get(key)
        if bench is None:
            bench = self.benches[key] = Bench(key, BancRuntime(key.banc, known=True))
        return bench

    def apply(self, topic: str, payload: bytes, retained: bool, now_mono_s: float, now_unix_s: float
              ) -> Optional[BenchKey]:
        """Take one message into its bench's state; the bench that changed, None for a message ignored (never raises)."""
        found = parse_lab_topic(topic)
        if found is None:
            return None
        key, info = found
        # A retained copy of a step or a line is old news (docs/protocole.md §5): never shown as live.
        if info.kind in protocol.NEWS_KINDS and retained:
            return None
        try:
            return key if self._apply(self.bench(key), info.kind, payload, now_mono_s, now_unix_s) else None
        except (protocol.PayloadError, ValueError):
            return None

    def _apply(self, bench: Bench, kind: str, payload: bytes, now_mono_s: float, now_unix_s: float) -> bool:
        rt = bench.rt
        if kind == protocol.KIND_BMS:
            rt.line, rt.line_received_s = protocol.parse_bms_line(payload), now_mono_s
            bench.line_unix_s = now_unix_s
            return True
        if kind == protocol.KIND_STEP:
            step = protocol.parse_step(payload)
            if step in (protocol.STEP_FINISHED, protocol.STEP_STOP):
                rt.current_cut_s = now_mono_s  # as the kiosk: finished or stopped, no current flows
            if step in protocol.PHASES:
                if step != rt.step:
                    rt.phase_started_s = now_mono_s if rt.step is not None else None
                rt.step = step
            else:
                if rt.step in protocol.PHASES:
                    rt.previous_step = rt.step
                rt.step = step
            return True
        if kind == protocol.KIND_ESP_STATUS:
            rt.esp_online = protocol.parse_status(payload) == protocol.STATUS_ONLINE
            if not rt.esp_online:
                rt.current_cut_s = now_mono_s
            return True
        if kind == protocol.KIND_BANC_STATUS:
            rt.banc_online = protocol.parse_status(payload) == protocol.STATUS_ONLINE
            # What the kiosk reads from the process table, the monitor reads from banc.py's birth and last will.
            rt.running = rt.banc_online
            if rt.running:
                rt.occupied = rt.seen_running = True
            return True
        if kind == protocol.KIND_SECURITY:
            security = classify_security(protocol.parse_security(payload))
            if security.cuts_current:
                rt.current_cut_s = now_mono_s
            if security.kind is SecurityKind.ALARM:
                bench.alarms.appendleft((now_unix_s, security.text))
            return True
        return False

    def take_files(self, key: BenchKey, entry: Optional[record.BenchEntry]) -> bool:
        """This Pi's bancs_config.json entry of a bench (its serial and phase on disk); whether anything changed."""
        rt = self.bench(key).rt
        serial = entry.serial_pending if entry is not None and entry.occupied else None
        file_step = entry.current_step if entry is not None else None
        occupied = entry is not None and entry.occupied
        if (rt.serial, rt.file_step, rt.occupied) == (serial, file_step, occupied):
            return False
        if rt.serial and not occupied:
            rt.last_serial = rt.serial
        rt.serial, rt.file_step, rt.occupied = serial, file_step, occupied
        rt.unfinished = occupied and file_step != protocol.STEP_FINISHED
        return True

    def view(self, key: BenchKey, now_mono_s: float, now_unix_s: float) -> dict[str, Any]:
        """What a page shows of a bench (JSON): the kiosk's header, phase, pills, measures, time left, alarms."""
        bench = self.bench(key)
        rt = bench.rt
        display = banc_display(rt, now_mono_s)
        line = display.measures.line
        colors = display_colors.measure_colors(line, display.display_step, None) if line is not None else {}
        cells = display_colors.measure_cells(display.measures, colors)
        time_left = None
        if line is not None and display.measures.fresh and rt.step in protocol.PHASES:
            time_left = bench_time_left_s(rt, line, self.charge_duration, now_mono_s, now_unix_s)
        step = display.display_step
        phase = formatting.get_phase_message(step)
        if rt.step == protocol.STEP_STOP and rt.previous_step in protocol.PHASES:
            phase = f"{formatting.get_phase_message(rt.previous_step)} (arrêt)"
        return {
            "key": key.slug,
            "title": key.title,
            "site": key.site,
            "banc": key.banc,
            "status": display.status_text,
            "kind": display.status_kind,
            "phase": phase,
            "phase_color": formatting.PHASE_COLORS.get(step or 0, display_colors.MUTED),
            "step": step,
            "esp": display.esp_link,
            "recording": display.banc_link,
            "fresh": display.measures.fresh,
            "age": display.measures.age_text,
            "measures": [{"key": k, "name": name, "text": cells[k][0], "color": cells[k][1]}
                         for k, name in display_colors.MEASURES],
            "soc_pct": line.soc_pct if line is not None else None,
            "time_left": formatting.format_clock(time_left),
            "seq": line.seq if line is not None else None,
            "line_unix_s": bench.line_unix_s,
            "alarms": [{"at_unix_s": at, "text": text} for at, text in bench.alarms],
        }

    def views(self, now_mono_s: float, now_unix_s: float) -> list[dict[str, Any]]:
        """Every bench's view, by site then bench number."""
        keys = sorted(self.benches, key=lambda k: (k.site, protocol.banc_number(k.banc)))
        return [self.view(key, now_mono_s, now_unix_s) for key in keys]
