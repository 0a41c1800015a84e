"""monitor.py's command line: serve the web monitor, or add an account (`--add-user NAME`, password on stdin)."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import ssl
import sys
from collections.abc import Sequence
from typing import Optional

from banclfp.infra import environment, logs
from banclfp.infra.settings import Settings
from banclfp.monitor import auth

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` is the machine itself (127.0.0.0/8, ::1, localhost): the only place clear HTTP is served."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serving_problem(settings: Settings) -> Optional[str]:
    """Why the monitor cannot serve with these settings (one line, French), None when it can."""
    if settings.web_cert is None:
        if not is_loopback(settings.web_host):
            return (f"BANC_WEB_HOST={settings.web_host} sans certificat : le HTTP en clair n'est servi que sur "
                    "127.0.0.1 ; donnez BANC_WEB_CERT et BANC_WEB_KEY (certificat de l'autorité du labo)")
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(settings.web_cert),
                                                                            str(settings.web_key))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"BANC_WEB_CERT/BANC_WEB_KEY illisibles ({' '.join(str(exc).split())[:80]})"
    return None


def read_password() -> str:
    """The new account's password: typed twice on a terminal, else the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("Mot de passe : ")
        if getpass.getpass("Encore une fois : ") != first:
            raise auth.AccountError("les deux mots de passe diffèrent")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """monitor.py's command line; the exit code."""
    parser = argparse.ArgumentParser(prog="monitor.py", description="Le moniteur web des bancs, en lecture seule.")
    parser.add_argument("--add-user", metavar="NOM", help="créer ou changer un compte (mot de passe sur l'entrée standard)")
    args = parser.parse_args(argv)
    try:
        settings = environment.load_settings()
    except environment.SettingsError as exc:
        print(f"monitor.py : configuration invalide : {exc}", file=sys.stderr)
        return EXIT_USAGE
    from banclfp.monitor.app import Monitor, monitor_folder

    if args.add_user is not None:
        try:
            new = auth.Accounts(monitor_folder(settings)).add(args.add_user, read_password())
        except auth.AccountError as exc:
            print(f"monitor.py : {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"Compte {args.add_user} {'créé' if new else 'mis à jour'}.")
        return EXIT_OK
    problem = serving_problem(settings)
    if problem is not None:
        print(f"monitor.py : {problem}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup_logging("monitor", settings.home, level=logging.INFO)
    import uvicorn

    app = Monitor(settings).asgi()
    uvicorn.run(app, host=settings.web_host, port=settings.web_port, log_level="warning", access_log=False,
                ssl_certfile=str(settings.web_cert) if settings.web_cert else None,
                ssl_keyfile=str(settings.web_key) if settings.web_key else None,
                proxy_headers=False, server_header=False)
    return EXIT_OK
