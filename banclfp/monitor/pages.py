"""The monitor's pages as HTML text, in French: pure functions of what they show (no request, no file).

Every value is escaped here; the page's script (static/monitor.js) only fills in what the live
feed sends, with the same texts and colours (live.Board.view).
"""

from __future__ import annotations

from html import escape
from typing import Any, Optional
from urllib.parse import quote

from banclfp.history.index import TestRow
from banclfp.kiosk.state import LINK_ESP, LINK_LABELS, LINK_RECORDING
from banclfp.presentation.formatting import format_number, grade_color
from banclfp.presentation.summary_text import format_time
from banclfp.recording import record

APP_NAME = "Moniteur des bancs LFP"

_LOGIN_STYLE = """
body{font-family:system-ui,sans-serif;background:#121416;color:#e8eaed;margin:0;display:flex;
min-height:100vh;align-items:center;justify-content:center}
form{background:#1f2327;padding:24px;border-radius:10px;width:min(320px,calc(100vw - 48px))}
h1{font-size:1.2rem;margin:0 0 16px}label{display:block;margin:12px 0 4px}
input{width:100%;box-sizing:border-box;padding:10px;font-size:1rem;border-radius:6px;border:1px solid #444;
background:#121416;color:#e8eaed}button{margin-top:18px;width:100%;padding:10px;font-size:1rem;border:0;
border-radius:6px;background:#42a5f5;color:#000}.error{color:#ef5350;margin-top:12px}
"""


def _attr(text: object) -> str:
    return escape(str(text), quote=True)


def login_page(error: str = "", user: str = "") -> str:
    """The login page (its style inline: nothing else is served before a session)."""
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Connexion — {APP_NAME}</title><style>{_LOGIN_STYLE}</style></head>
<body><form method="post" action="/login">
<h1>{APP_NAME}</h1>
<label for="user">Compte</label><input id="user" name="user" autocomplete="username" required value="{_attr(user)}">
<label for="password">Mot de passe</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Se connecter</button>{message}
</form></body></html>"""


def layout(title: str, user: str, body: str, scripts: tuple[str, ...] = ()) -> str:
    """A page of the monitor: its header (links, account, logout) and `body`."""
    tags = "".join(f'<script src="/static/{_attr(name)}" defer></script>' for name in scripts)
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — {APP_NAME}</title>
<link rel="stylesheet" href="/static/monitor.css"><link rel="stylesheet" href="/static/uPlot.min.css">{tags}</head>
<body><header><a class="brand" href="/">Bancs LFP</a>
<nav><a href="/">Bancs</a><a href="/historique">Historique</a><a href="/resultats.csv">Résultats (CSV)</a></nav>
<form method="post" action="/logout" class="logout"><span>{escape(user)}</span><button type="submit">Déconnexion</button></form>
</header><main>{body}</main></body></html>"""


def _pill(kind: str, state: str) -> str:
    label = LINK_LABELS[kind][0]
    return f'<span class="pill {_attr(state)}" data-link="{_attr(kind)}">{escape(label)}</span>'


def bench_card(view: dict[str, Any]) -> str:
    """One bench's card as live.Board.view describes it (the script redraws it from the same JSON)."""
    cells = "".join(
        f'<div class="m"><span class="n">{escape(m["name"])}</span>'
        f'<span class="v" data-m="{_attr(m["key"])}" style="color:{_attr(m["color"])}">{escape(m["text"])}</span></div>'
        for m in view["measures"])
    alarms = "".join(f"<li>{escape(a['text'])}</li>" for a in view["alarms"])
    return f"""<section class="bench {_attr(view['kind'])}" id="b-{_attr(view['key'])}" data-key="{_attr(view['key'])}">
<h2><span class="t">{escape(view['title'])}</span>{_pill(LINK_ESP, view['esp'])}{_pill(LINK_RECORDING, view['recording'])}</h2>
<p class="status">{escape(view['status'])}</p>
<p class="phase" style="color:{_attr(view['phase_color'])}">{escape(view['phase'])}
<span class="left" title="Temps restant">{escape(view['time_left'])}</span></p>
<p class="age">{escape(view['age'])}</p>
<div class="measures">{cells}</div>
<ul class="alarms">{alarms}</ul>
</section>"""


def board_page(user: str, views: list[dict[str, Any]], source: str) -> str:
    """Every bench of the lab, live."""
    cards = "".join(bench_card(view) for view in views) or '<p class="empty">Aucun banc entendu pour l’instant.</p>'
    body = (f'<h1>Bancs en direct</h1><p class="source">{escape(source)} '
            f'<span id="live" class="live off">connexion…</span></p><div id="benches" class="grid">{cards}</div>')
    return layout("Bancs", user, body, ("monitor.js",))


def _cell(value: Optional[float], decimals: int, unit: str) -> str:
    return escape(format_number(value, decimals, unit))


def _grade(grade: Optional[str]) -> str:
    if not grade:
        return "—"
    return f'<span class="grade" style="background:{_attr(grade_color(grade))}">{escape(grade)}</span>'


HISTORY_COLUMNS = ("Dossier", "Début", "Fin", "État", "Classe", "SOH", "Capacité")  # report.py --history's


def _time(text: Optional[str]) -> str:
    """An ISO 8601 time of the history as the report writes times (dd/mm/yyyy HH:MM:SS, Paris)."""
    return format_time(record.parse_time(text)) if text else "—"


def test_base(banc: str, name: str, site: Optional[str] = None) -> str:
    """A test page's address: this Pi's folder (/test/bancN/NAME) or the lab's row of SITE (/labo/SITE/bancN/NAME)."""
    where = f"/labo/{quote(site)}" if site is not None else "/test"
    return f"{where}/{quote(banc)}/{quote(name)}"


def test_link(folder: str, own_site: str = "") -> Optional[str]:
    """The page of a history row's test: "bancN/NAME" and "OWN_SITE:bancN/NAME" on this Pi, "SITE:bancN/NAME" in the lab."""
    site, colon, rest = folder.rpartition(":")
    banc, _, name = rest.partition("/")
    if not banc or not name or "/" in name:
        return None
    return test_base(banc, name, site if colon and site != own_site else None)


def history_page(user: str, serial: str, rows: list[TestRow], note: Optional[str], error: str = "",
                 own_site: str = "") -> str:
    """A battery's history, newest first (report.py --history's columns)."""
    form = (f'<form class="search" method="get" action="/historique"><label for="serial">Numéro de série</label>'
            f'<input id="serial" name="serie" value="{_attr(serial)}" placeholder="RW-…" required>'
            f'<button type="submit">Chercher</button></form>')
    parts = [f"<h1>Historique d’une batterie</h1>{form}"]
    if error:
        parts.append(f'<p class="error">{escape(error)}</p>')
    if note:
        parts.append(f'<p class="note">{escape(note)}</p>')
    if serial and not error:
        if not rows:
            parts.append(f"<p>Aucun test de {escape(serial)}.</p>")
        else:
            items = []
            for row in rows:
                link = test_link(row.folder, own_site)
                name = f'<a href="{_attr(link)}">{escape(row.folder)}</a>' if link else escape(row.folder)
                cells = (name, escape(_time(row.start)), escape(_time(row.end)),
                         escape(record.STATUS_LABELS.get(row.status, row.status)), _grade(row.grade),
                         _cell(row.soh_pct, 1, "%"), _cell(row.capacity_ah, 2, "Ah"))
                items.append("<tr>" + "".join(f'<td data-label="{label}">{cell}</td>'
                                              for label, cell in zip(HISTORY_COLUMNS, cells)) + "</tr>")
            head = "".join(f"<th>{label}</th>" for label in HISTORY_COLUMNS)
            parts.append(f'<div class="scroll"><table class="history"><thead><tr>{head}</tr></thead>'
                         f"<tbody>{''.join(items)}</tbody></table></div>")
    return layout("Historique", user, "".join(parts))


def test_page(user: str, base: str, where: str, serial: str, grade: Optional[str], soh_pct: Optional[float],
              lines: list[tuple[str, str]], checks: list[tuple[str, bool]], reason: str, certificate: bool,
              note: str = "") -> str:
    """One test (at `base`, see test_base): its verdict and checks, the results panel, the charts, the certificate."""
    soh = f'<span class="soh">SOH {escape(format_number(soh_pct, 1, "%"))}</span>' if soh_pct is not None else ""
    verdict = (f'<p class="verdict">{_grade(grade)}{soh}<span class="reason">{escape(reason)}</span></p>' if grade
               else '<p class="verdict">Pas de verdict (test en cours ou non conclu).</p>')
    check_items = "".join(f'<li class="{"ok" if ok else "ko"}">{"✔" if ok else "✘"} {escape(text)}</li>'
                          for text, ok in checks)
    panel = "".join(f'<div style="color:{_attr(color)}">{escape(text) or "&nbsp;"}</div>' for text, color in lines)
    download = (f'<p><a class="button" id="certificate" href="{base}/certificat.pdf" download>'
                f"Télécharger le certificat (PDF)</a></p>" if certificate else "<p>Pas encore de certificat.</p>")
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    body = f"""<h1>{escape(serial)} <small>{escape(where)}</small></h1>
{verdict}<ul class="checks">{check_items}</ul>{download}{note_html}
<div class="test"><div class="panel">{panel}</div>
<div id="charts" class="charts" data-src="{base}/graphiques.json"></div></div>"""
    return layout(f"Test {serial}", user, body, ("uPlot.iife.min.js", "charts.js"))

