"""`python lab_sync.py [--once | --migrate]`: this Pi's tests into the lab database (docs/labo-serveur.md).

Exit codes: 0 the lab holds everything this Pi has (--once) or the schema is up to date
(--migrate); 1 the database answered but refused (schema too old, rights); 2 a setting is
missing or invalid (BANC_LAB_DB, BANC_SITE); 3 the database could not be reached (nothing is
lost: it is sent later). Without an option it runs as a service until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from banclfp.infra import environment, logs
from banclfp.lab import sync


def main(argv: Optional[Sequence[str]] = None) -> int:
    """lab_sync.py's command line; the exit code."""
    parser = argparse.ArgumentParser(prog="lab_sync.py",
                                     description="Envoie les tests de ce Pi dans la base du labo (BANC_LAB_DB).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="envoyer ce qui est en attente puis sortir (0 : tout est envoyé, 3 : base injoignable)")
    mode.add_argument("--migrate", action="store_true", help="créer ou mettre à jour le schéma de la base du labo")
    args = parser.parse_args(argv)
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        print(f"lab_sync.py : configuration invalide : {exc}", file=sys.stderr)
        return sync.EXIT_USAGE
    if settings.lab_db is None:
        print("lab_sync.py : BANC_LAB_DB n'est pas défini (ce Pi est seul : rien à envoyer)", file=sys.stderr)
        return sync.EXIT_USAGE
    logs.setup_logging("lab_sync", settings.home, level=logging.INFO)
    from banclfp.lab import db, runner  # psycopg only for a Pi of a lab

    if args.migrate:
        try:
            applied = db.migrate(settings.lab_db)
        except db.Unreachable as exc:
            print(f"lab_sync.py : base du labo injoignable : {' '.join(str(exc).split())}", file=sys.stderr)
            return sync.EXIT_UNREACHABLE
        except db.psycopg.Error as exc:
            print(f"lab_sync.py : migration refusée : {' '.join(str(exc).split())}", file=sys.stderr)
            return sync.EXIT_ERROR
        print(f"Schéma à jour ({', '.join(applied) if applied else 'rien à appliquer'})")
        return sync.EXIT_OK
    if args.once:
        report = runner.sync_once(settings)
        if report.refused:
            print(f"lab_sync.py : refusé par la base du labo : {report.refused}", file=sys.stderr)
        elif not report.reached or report.left:
            print(f"lab_sync.py : base du labo injoignable, {report.left} test(s) en attente (envoyés plus tard)",
                  file=sys.stderr)
        else:
            print(f"Base du labo à jour : {report.tests} test(s), {report.rows} ligne(s) envoyés")
        return report.exit_code
    return runner.run_forever(settings)
