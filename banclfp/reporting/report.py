"""Charts, summary and Battery Data Format export of one test (docs/rapport.md, docs/fichiers.md).

    python report.py TEST_FOLDER [--png FILE] [--bdf FILE] [--certificate FILE] [--label FILE.pdf]
    python report.py --history SERIAL
    python report.py --results FILE.csv

Without an option it prints a plain-text summary. --certificate writes the certificate of a
finished test (concluding it first when banc.py could not: its verdict is then recorded), --label
its grade label (docs/etiquettes.md);
--history lists every test of one battery, --results writes one CSV row per test of the lab. This file is the command line; the work
is done by one module per concept (docs/architecture.md): banclfp.analysis (data.csv, coulomb counting, the BDF
export), banclfp.presentation.summary_text, banclfp.charts, banclfp.verdict and banclfp.history.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from banclfp.analysis.bdf import (
    write_bdf,
)
from banclfp.analysis.measures import (
    ReportError,
    load_report,
)
from banclfp.charts.chart_data import (
    load_plot_data,
    prepare_plot_data,
)
from banclfp.charts.figure import render_png
from banclfp.history import index as history
from banclfp.infra import environment, logs, storage
from banclfp.infra.settings import Settings
from banclfp.lab import history as lab_history
from banclfp.presentation.formatting import format_number
from banclfp.presentation.summary_text import (
    STATUS_LABELS,
    capacity_flag_text,
    format_summary,
)
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.verdict import conclude as verdict_module, grading

if TYPE_CHECKING:
    from banclfp.kiosk.chart_window import ChartWindow

__all__ = ["format_history", "main", "show_charts"]

logger = logging.getLogger("banc.report")


def show_charts(master: Any, test_folder: Path, store: Store, min_gap_s: float) -> ChartWindow:
    """Open the charts of a test of `store` in a kiosk window (non-blocking); returns the window.

    `min_gap_s` is the shortest silence drawn as a stop (the settings' bms_timeout_s).
    customtkinter is imported only here, so that the command line never needs a display or Tk.
    """
    from banclfp.kiosk import chart_window

    return chart_window.show_charts(master, test_folder, functools.partial(
        load_plot_data, correct_to_25c=store.static.correct_to_25c, min_gap_s=min_gap_s))


def format_history(serial: str, rows: list[history.TestRow]) -> str:
    """`--history`: one line per test of the battery, newest first (French)."""
    if not rows:
        return f"Aucun test pour {serial}\n"
    lines = [f"Historique de {rows[0].serial} : {len(rows)} test(s), du plus récent au plus ancien", ""]
    head = f"{'dossier':<32} {'début':<16} {'fin':<16} {'statut':<10} {'classe':<10} {'SOH':>8} {'capacité':>11}"
    lines += [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.folder:<32} {_short_time(row.start):<16} {_short_time(row.end):<16} "
            f"{STATUS_LABELS.get(row.status, row.status):<10} {row.grade or '—':<10} "
            f"{format_number(row.soh_pct, 1, '%'):>8} {format_number(row.capacity_ah, 2, 'Ah'):>11}"
        )
    return "\n".join(lines) + "\n"


def _short_time(text: Optional[str]) -> str:
    moment = record.parse_time(text)
    return "—" if moment is None else moment.astimezone(record.LOCAL_TZ).strftime("%d/%m/%Y %H:%M")


def _conclude(store: Store, folder: Path, what: str) -> int:
    """Conclude the test if needed (its verdict recorded) before its `what` is written; the exit code (0: go on)."""
    try:
        verdict_module.conclude(store, folder)
    except verdict_module.NotFinished as exc:
        print(f"report.py : {exc}", file=sys.stderr)
        return 2
    except grading.GradingError as exc:
        logger.error("%s: no verdict, no %s: %s", folder, what, exc)
        print(f"report.py : pas de verdict : {exc}", file=sys.stderr)
        return 2
    except environment.ConfigFileError as exc:  # temperature_coefficients.json: no Ri at 25 °C to grade, as for grading.json
        logger.error("%s: no verdict, no %s: cannot correct to 25 °C: %s", folder, what, exc)
        print(f"report.py : pas de verdict : correction à 25 °C impossible : {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        logger.error("%s: verdict not recorded: %s", folder, exc)
        print(f"report.py : verdict non enregistré : {exc}", file=sys.stderr)
        return 1
    return 0


def _write_certificate(store: Store, folder: Path, path: Path, min_gap_s: float) -> int:
    """`--certificate`: conclude the test if needed, then write its PDF; the exit code."""
    code = _conclude(store, folder, "certificate")
    if code != 0:
        return code
    try:
        from banclfp.verdict import certificate

        certificate.write_certificate(load_report(folder, store.static.correct_to_25c, min_gap_s), path)
    except (OSError, ValueError) as exc:
        logger.error("%s: certificate not written to %s: %s", folder, path, exc)
        print(f"report.py : certificat non écrit : {exc}", file=sys.stderr)
        return 1
    logger.info("%s: certificate written to %s", folder, path)
    print(f"Certificat écrit : {path}")
    return 0


def _write_label(store: Store, folder: Path, path: Path, settings: Settings) -> int:
    """`--label`: conclude the test if needed, then write its grade label (PDF at BANC_LABEL_SIZE_MM); the exit code."""
    code = _conclude(store, folder, "label")
    if code != 0:
        return code
    try:
        from banclfp.verdict import label

        label.write_label(load_report(folder, store.static.correct_to_25c, settings.bms_timeout_s), path,
                          settings.label_size_mm)
    except (OSError, ValueError) as exc:
        logger.error("%s: label not written to %s: %s", folder, path, exc)
        print(f"report.py : étiquette non écrite : {exc}", file=sys.stderr)
        return 1
    print(f"Étiquette écrite : {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`report.py TEST_FOLDER [--png FILE] [--bdf FILE] [--certificate FILE] [--label FILE.pdf]`, `--history SERIAL`, `--results FILE.csv`."""
    parser = argparse.ArgumentParser(
        prog="report.py",
        description="Graphiques, résumé et export Battery Data Format d'un test (dossier data/bancN/JJMMAAAA-SERIAL).",
    )
    parser.add_argument("test_folder", type=Path, nargs="?", help="dossier du test (contient data.csv et config.json)")
    parser.add_argument("--png", type=Path, metavar="FILE", help="écrire les graphiques dans ce fichier PNG")
    parser.add_argument("--bdf", type=Path, metavar="FILE",
                        help="écrire l'export Battery Data Format (CSV) et son FILE.bdf.metadata.json")
    parser.add_argument("--certificate", type=Path, metavar="FILE", help="écrire le certificat PDF d'un test terminé")
    parser.add_argument("--label", type=Path, metavar="FILE.pdf",
                        help="écrire l'étiquette de classement (PDF à la taille BANC_LABEL_SIZE_MM) d'un test terminé")
    parser.add_argument("--history", metavar="SERIAL", help="tous les tests d'une batterie, du plus récent au plus ancien")
    parser.add_argument("--results", type=Path, metavar="FILE.csv", help="écrire une ligne CSV par test du labo")
    args = parser.parse_args(argv)
    if (args.history is None and args.results is None) == (args.test_folder is None):
        parser.error("donner un dossier de test, ou --history SERIAL, ou --results FILE.csv")
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):  # replaced (tests, pythonw): nothing to reconfigure
            continue
        try:
            stream.reconfigure(errors="replace")
        except ValueError:
            pass
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        print(f"report.py : configuration invalide : {exc}", file=sys.stderr)
        return 2
    store = Store.from_settings(settings)
    # INFO: a certificate written by banc.py's child leaves its outcome in logs.log.
    logs.setup_logging("report", store.home, level=logging.INFO if args.certificate else logging.WARNING)

    if args.history is not None:
        try:
            rows, note = lab_history.battery_history(args.history, settings)
            if note:
                print(f"report.py : {note}", file=sys.stderr)
            sys.stdout.write(format_history(args.history, rows))
        except (OSError, history.sqlite3.Error) as exc:
            print(f"report.py : historique illisible : {exc}", file=sys.stderr)
            return 1
        return 0
    if args.results is not None:
        try:
            text, count, note = lab_history.results_csv(settings)
            if note:
                print(f"report.py : {note}", file=sys.stderr)
            data = text.encode("utf-8")
            storage.atomic_write(args.results, lambda fh: fh.write(data))
        except (OSError, history.sqlite3.Error) as exc:
            print(f"report.py : résultats non écrits : {exc}", file=sys.stderr)
            return 1
        print(f"Résultats écrits : {args.results} ({count} tests)")
        return 0
    if args.certificate is not None:
        code = _write_certificate(store, args.test_folder, args.certificate, settings.bms_timeout_s)
        if code != 0 or (args.png is None and args.bdf is None and args.label is None):
            return code
    if args.label is not None:
        code = _write_label(store, args.test_folder, args.label, settings)
        if code != 0 or (args.png is None and args.bdf is None):
            return code

    try:
        report = load_report(args.test_folder, store.static.correct_to_25c, settings.bms_timeout_s)
    except ReportError as exc:
        print(f"report.py : {exc}", file=sys.stderr)
        return 2
    for note in report.summary.notes:
        logger.warning("%s: %s", args.test_folder, note)
    if args.png is None and args.bdf is None:
        sys.stdout.write(format_summary(report.summary, args.test_folder))
        return 0
    try:
        if args.png is not None:
            render_png(prepare_plot_data(report.data, report.summary, folder=report.folder), args.png)
            print(f"PNG écrit : {args.png}")
        if args.bdf is not None:
            sidecar = write_bdf(args.bdf, report.data, report.summary, source=report.folder / record.DATA_CSV_FILE)
            print(f"BDF écrit : {args.bdf} ({len(report.data)} lignes), métadonnées : {sidecar}")
    except OSError as exc:
        print(f"report.py : écriture impossible : {exc}", file=sys.stderr)
        return 1
    if report.summary.capacity_flag:
        print(capacity_flag_text(report.summary))
    return 0

