"""The kiosk's reusable widgets, by the names the design document gives them: SOC gauge, phase bar, bench panel.

Each is a CTkFrame subclass that takes data and callbacks, defined once in
`banclfp/kiosk/widgets.py` (docs/architecture.md); nothing in the project imports this file.
"""

from banclfp.kiosk.widgets import (
    BancDetail,
    BancPanel,
    HistoryWindow,
    LinkPill,
    NurseBars,
    PhaseBar,
    ResultCard,
    ScanBar,
    ScanEcho,
    SocGauge,
    get_phase_message,
)

__all__ = ["BancDetail", "BancPanel", "HistoryWindow", "LinkPill", "NurseBars", "PhaseBar", "ResultCard", "ScanBar",
           "ScanEcho", "SocGauge", "get_phase_message"]
