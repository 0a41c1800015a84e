#!/usr/bin/env bash
# banc-lfp — create (or change the password of) the MQTT account of a bench's ESP32,
# then make mosquitto re-read its password file. The ACL needs no change: its line
# "pattern readwrite %u/#" already confines account bancN to the bancN/ topics; nor does
# banc-lfp.conf: its retain guard and use_username_as_clientid hold for every account.
#
#   sudo deploy/add_bench_account.sh banc5                               # new random password
#   sudo deploy/add_bench_account.sh --password-stdin banc5 <mdp.txt     # a given one (8+ chars)
#
# The password is recorded in /etc/banc-lfp/bench-accounts.txt (root only) for
# flashing the ESP32; it is never printed. An existing account keeps its password.
# A given password is read from stdin, never from the command line: every local user
# sees a process's arguments in ps (docs/installation.md).
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

usage() {
  cat <<'USAGE'
Usage : sudo deploy/add_bench_account.sh [options] bancN

  --password-stdin  lire le mot de passe voulu (8 caractères ou plus) sur l'entrée
                    standard, ex. < fichier ; sans cette option, tiré au hasard
  --no-reload     ne pas recharger mosquitto maintenant (plusieurs comptes à la suite)
  --dry-run       afficher chaque action sans rien faire
  --root DOSSIER  écrire sous DOSSIER (essai), sans systemctl
USAGE
}

RELOAD=1
FROM_STDIN=0
args=()
while (($#)); do
  case $1 in
    --no-reload) RELOAD=0; shift ;;
    --password-stdin) FROM_STDIN=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --root) [ $# -ge 2 ] || die "--root attend un dossier"; ROOT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "option inconnue : $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
if ((${#args[@]} == 2)); then
  die "un mot de passe ne se donne pas sur la ligne de commande (ps le montre à tous) : --password-stdin, puis le mot de passe sur l'entrée standard"
fi
((${#args[@]} == 1)) || { usage >&2; exit 2; }
password=""
if ((FROM_STDIN)); then
  IFS= read -r password || [ -n "$password" ] || die "--password-stdin : rien lu sur l'entrée standard"
  password=${password%$'\r'}
  [ -n "$password" ] || die "--password-stdin : mot de passe vide"
fi
if [ -z "$ROOT" ] && ((!DRY_RUN)) && [ "$(id -u)" -ne 0 ]; then
  die "à lancer avec sudo"
fi
command -v mosquitto_passwd >/dev/null 2>&1 || ((DRY_RUN)) || die "mosquitto_passwd absent (apt-get install mosquitto)"

name=$(printf '%s' "${args[0]}" | tr 'A-Z' 'a-z')
ensure_dir "$ETC_DIR" 0700 root:root
ensure_bench_account "$name" "$password"
secure_passwd_file
if ((ACCOUNTS_CHANGED)); then
  ((RELOAD)) && reload_mosquitto
  say "compte $name prêt ; son mot de passe (à flasher dans l'ESP32) : sudo grep '^$name ' $BENCH_CREDS"
else
  say "compte $name déjà présent, inchangé"
fi
