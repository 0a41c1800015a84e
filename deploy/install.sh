#!/usr/bin/env bash
# banc-lfp — install the test bench software on a Raspberry Pi (Raspberry Pi OS / Debian):
# apt packages, the project's virtualenv, a locked-down Mosquitto (accounts + ACL, TLS on
# the LAN with a local certificate authority, clear text on 127.0.0.1 only), the
# kiosk's systemd unit, the rotation of logs.log, the desktop (autologin, X11, no
# screen blanking). Idempotent: run it again after a change, it only redoes what differs.
#
#   sudo deploy/install.sh --user pi --lan-ip 192.168.1.10 [--bancs 4] [...]
#
# --dry-run prints every action without doing anything; --root DIR writes every file
# under DIR instead of / and skips what would change the machine itself (apt,
# systemctl, chown, raspi-config), printing it instead. The tests use both.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

# What the kiosk and the scripts need; a superset of scripts/setup.sh's APT_PACKAGES, so
# that setup.sh, run afterwards as the kiosk user, finds nothing left to install as root.
# gcc, libc6-dev, mosquitto-dev and libmosquitto-dev build the broker's retain guard
# (deploy/mosquitto-retain-guard.c, step 3). cups and cups-client print the grade labels.
#
# Imprimante d'étiquettes (docs/etiquettes.md) : install.sh installe CUPS mais n'ajoute
# aucune file d'impression ; on l'ajoute une fois, à la main, l'imprimante branchée :
#   sudo apt-get install printer-driver-ptouch      # Brother QL (pilote CUPS de Debian)
#   lpinfo -v                                       # l'adresse de l'imprimante, ex. usb://Brother/QL-800?serial=...
#   lpinfo -m | grep -i -e 'QL-800' -e zebra        # son pilote (Zebra : drv:///sample.drv/zebra.ppd, ZPL)
#   sudo lpadmin -p etiquettes -E -v 'usb://Brother/QL-800?serial=...' -m PILOTE -o media=Custom.62x29mm
#   lp -d etiquettes -o media=Custom.62x29mm une-etiquette.pdf   # essai
# puis, dans /etc/banc-lfp/banc.env : BANC_LABEL_PRINTER=etiquettes (et BANC_LABEL_SIZE_MM=62x29
# si le rouleau a une autre taille), et sudo systemctl restart banc-lfp-kiosk.service.
# Attention : install.sh réécrit banc.env à chaque exécution ; ces lignes sont à remettre
# après chaque nouvelle exécution d'install.sh.
APT_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev gcc libc6-dev openssl python3 python3-venv python3-tk xvfb xdotool x11-utils poppler-utils zbar-tools logrotate cups cups-client printer-driver-cups-pdf)
OLD_SEED_UNIT=/etc/systemd/system/banc_test_ui.service

usage() {
  cat <<'EOF'
Usage : sudo deploy/install.sh --user UTILISATEUR [options]

  --user NOM         compte Linux qui fait tourner le kiosque (obligatoire, ex. pi)
  --group NOM        son groupe (défaut : le groupe principal de l'utilisateur)
  --project DOSSIER  dossier du projet (défaut : le dossier parent de deploy/)
  --home DOSSIER     BANC_HOME, l'état modifiable (défaut : le dossier du projet)
  --bancs N          nombre de bancs (défaut : 4) ; un compte MQTT par banc
  --lan-ip IP        adresse IPv4 fixe du Pi sur le réseau des bancs, une adresse
                     de cette machine (défaut : la première de « hostname -I »)
  --port PORT        port MQTT en clair, sur 127.0.0.1 seulement (défaut : 1883)
  --tls-port PORT    port MQTT chiffré (TLS) sur l'adresse LAN (défaut : 8883)
  --lan-plaintext    garder aussi une écoute en clair sur l'adresse LAN, pour
                     d'anciens firmwares sans TLS (déconseillé : tout y circule lisible)
  --pi-account NOM   compte MQTT du Pi (défaut : pi-banc)
  --display D        écran X du kiosque (défaut : :0)
  --xauthority F     fichier Xauthority (défaut : ~UTILISATEUR/.Xauthority)
  --no-desktop       ne pas toucher au bureau (connexion auto, X11, veille écran)
  --no-start         activer le kiosque au démarrage sans le (re)lancer maintenant
  --dry-run          afficher chaque action sans rien faire
  --root DOSSIER     tout écrire sous DOSSIER (essai), sans apt/systemctl/chown
  --lab-db URI       base du labo (PostgreSQL, docs/labo-serveur.md) : URI libpq SANS mot de passe,
                     ex. 'postgresql://banc_pi1@labo.local/banc_lab?sslmode=verify-full&sslrootcert=/etc/banc-lfp-lab/lab-ca.crt' ;
                     le mot de passe est lu sur l'entrée standard la première fois et rangé dans
                     /etc/banc-lfp-lab/lab.pgpass (0600) ; installe le service banc-lfp-lab-sync
  --site NOM         nom de ce Pi dans la base du labo (défaut : le nom d'hôte)
  --monitor          installer aussi le moniteur web en lecture seule (docs/moniteur.md) : compte MQTT
                     « moniteur » (lecture seule), certificat HTTPS signé par l'autorité locale pour
                     --lan-ip, service banc-lfp-monitor ; comptes web : monitor.py --add-user NOM
  --web-port PORT    port HTTPS du moniteur (défaut : 8443)
  -h, --help         cette aide
EOF
}

USER_NAME=${SUDO_USER:-}
GROUP_NAME=""
PROJECT=$(cd "$DEPLOY_DIR/.." && pwd)
BANC_HOME_DIR=""
BANCS=4
LAN_IP=""
PORT=1883
TLS_PORT=8883
LAN_PLAINTEXT=0
PI_ACCOUNT=pi-banc
DISPLAY_NAME=:0
XAUTH=""
DESKTOP=1
START=1
LAB_DB=""
SITE=""
MONITOR=0
WEB_PORT=8443

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 attend une valeur (voir --help)"; }
while (($#)); do
  case $1 in
    --user) need_value "$@"; USER_NAME=$2; shift 2 ;;
    --group) need_value "$@"; GROUP_NAME=$2; shift 2 ;;
    --project) need_value "$@"; PROJECT=$2; shift 2 ;;
    --home) need_value "$@"; BANC_HOME_DIR=$2; shift 2 ;;
    --bancs) need_value "$@"; BANCS=$2; shift 2 ;;
    --lan-ip) need_value "$@"; LAN_IP=$2; shift 2 ;;
    --port) need_value "$@"; PORT=$2; shift 2 ;;
    --tls-port) need_value "$@"; TLS_PORT=$2; shift 2 ;;
    --lan-plaintext) LAN_PLAINTEXT=1; shift ;;
    --pi-account) need_value "$@"; PI_ACCOUNT=$2; shift 2 ;;
    --display) need_value "$@"; DISPLAY_NAME=$2; shift 2 ;;
    --xauthority) need_value "$@"; XAUTH=$2; shift 2 ;;
    --no-desktop) DESKTOP=0; shift ;;
    --no-start) START=0; shift ;;
    --lab-db) need_value "$@"; LAB_DB=$2; shift 2 ;;
    --site) need_value "$@"; SITE=$2; shift 2 ;;
    --monitor) MONITOR=1; shift ;;
    --web-port) need_value "$@"; WEB_PORT=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --root) need_value "$@"; ROOT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "option inconnue : $1" ;;
  esac
done

# ------------------------------------------------------------------ checks

[ -n "$ROOT" ] && ROOT=$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)
if [ -z "$ROOT" ] && ((!DRY_RUN)) && [ "$(id -u)" -ne 0 ]; then
  die "à lancer avec sudo (ou essayer avec --dry-run / --root DOSSIER)"
fi
[ -n "$USER_NAME" ] || die "--user est obligatoire (le compte qui fait tourner le kiosque, ex. pi)"
[[ $USER_NAME =~ ^[a-z_][a-z0-9_-]*$ ]] || die "nom d'utilisateur invalide : $USER_NAME"
if id "$USER_NAME" >/dev/null 2>&1; then
  [ -n "$GROUP_NAME" ] || GROUP_NAME=$(id -gn "$USER_NAME")
  USER_HOME=$(getent passwd "$USER_NAME" | cut -d: -f6)
elif [ -n "$ROOT" ] || ((DRY_RUN)); then
  warn "l'utilisateur $USER_NAME n'existe pas sur cette machine (essai seulement)"
  [ -n "$GROUP_NAME" ] || GROUP_NAME=$USER_NAME
  USER_HOME=/home/$USER_NAME
else
  die "l'utilisateur $USER_NAME n'existe pas"
fi
[[ $GROUP_NAME =~ ^[a-z_][a-z0-9_-]*$ ]] || die "nom de groupe invalide : $GROUP_NAME"

# Paths go into systemd units and config files unquoted: keep them plain.
check_path() {
  [[ $2 =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "$1 doit être un chemin absolu sans espace ni caractère spécial : '$2'"
}
PROJECT=${PROJECT%/}
check_path --project "$PROJECT"
[ -f "$PROJECT/utils.py" ] && [ -f "$PROJECT/requirements.txt" ] || die "$PROJECT n'est pas le dossier du projet (utils.py, requirements.txt)"
BANC_HOME_DIR=${BANC_HOME_DIR:-$PROJECT}
BANC_HOME_DIR=${BANC_HOME_DIR%/}
check_path --home "$BANC_HOME_DIR"
XAUTH=${XAUTH:-$USER_HOME/.Xauthority}
check_path --xauthority "$XAUTH"
[[ $DISPLAY_NAME =~ ^[A-Za-z0-9.-]*:[0-9]+(\.[0-9]+)?$ ]] || die "--display invalide : $DISPLAY_NAME"
[[ $BANCS =~ ^[1-9][0-9]?$ ]] || die "--bancs doit être un entier de 1 à 99 : $BANCS"
[[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] && ((PORT <= 65535)) || die "--port invalide : $PORT"
[[ $TLS_PORT =~ ^[1-9][0-9]{0,4}$ ]] && ((TLS_PORT <= 65535)) || die "--tls-port invalide : $TLS_PORT"
((TLS_PORT != PORT)) || die "--tls-port et --port doivent différer ($PORT)"
[[ $PI_ACCOUNT =~ ^[A-Za-z0-9_-]+$ ]] || die "--pi-account invalide : $PI_ACCOUNT"
valid_bench_name "$PI_ACCOUNT" && die "--pi-account ne peut pas être un nom de banc : $PI_ACCOUNT"

if [ -z "$LAN_IP" ]; then
  LAN_IP=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -n 1 || true)
  [ -n "$LAN_IP" ] || die "adresse LAN introuvable : donnez --lan-ip"
  warn "adresse LAN détectée : $LAN_IP — elle doit être fixe (réservation DHCP ou IP statique), les ESP32 s'y connectent"
fi
case $LAN_IP in
  0.0.0.0 | :: | "[::]" | 0:0:0:0:0:0:0:0 | "*")
    die "--lan-ip $LAN_IP ouvrirait le broker sur toutes les interfaces (Wi-Fi, VPN…) : donnez l'adresse du Pi sur le réseau des bancs" ;;
esac
ip_ok=1
IFS=. read -r -a ip_parts <<<"$LAN_IP"
[[ $LAN_IP =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || ip_ok=0
for part in "${ip_parts[@]}"; do ((10#$part <= 255)) || ip_ok=0; done
((ip_ok)) || die "--lan-ip n'est pas une adresse IPv4 : $LAN_IP"
[ "$LAN_IP" != 127.0.0.1 ] || die "--lan-ip 127.0.0.1 : c'est déjà l'écoute locale ; donnez l'adresse du Pi sur le réseau des bancs"
# The certificate and the listener are for this one address: it must be the Pi's own (a
# typo would leave the ESP32s with nowhere to connect). A --root trial may name any.
if [ -z "$ROOT" ] && ! { ip -4 -o addr show 2>/dev/null | grep -qF " inet $LAN_IP/" ||
  hostname -I 2>/dev/null | tr ' ' '\n' | grep -qxF "$LAN_IP"; }; then
  die "--lan-ip $LAN_IP n'est pas une adresse de cette machine (voir « ip -4 addr ») ; fixez-la d'abord (réservation DHCP ou IP statique)"
fi

if [ -n "$LAB_DB" ]; then
  [[ $LAB_DB =~ ^postgres(ql)?:// ]] || die "--lab-db doit être une URI postgresql://"
  # A password in the URI would land in banc.env and in ps: it belongs in the password file.
  if [[ $LAB_DB =~ ^[a-z]+://[^/@?]*:[^/@?]*@ ]] || [[ $LAB_DB =~ [?\&]password= ]]; then
    die "--lab-db contient un mot de passe : donnez l'URI sans, le mot de passe est demandé à part"
  fi
  [[ $LAB_DB =~ ^[A-Za-z0-9._~:/?#@!\$\&\'()*+,\;=%-]+$ ]] || die "--lab-db : caractère inattendu dans l'URI"
  SITE=${SITE:-$(hostname -s 2>/dev/null || hostname)}
  [[ $SITE =~ ^[A-Za-z0-9-]{1,32}$ ]] || die "--site invalide (lettres, chiffres et -, 1 à 32) : $SITE"
fi

[[ $WEB_PORT =~ ^[1-9][0-9]{0,4}$ ]] && ((WEB_PORT <= 65535)) || die "--web-port invalide : $WEB_PORT"

MODE_LABEL="machine réelle"
((DRY_RUN)) && MODE_LABEL="essai à blanc (--dry-run) : rien n'est modifié"
[ -n "$ROOT" ] && ((!DRY_RUN)) && MODE_LABEL="racine d'essai $ROOT (--root) : rien hors de ce dossier"
say "banc-lfp : installation ($MODE_LABEL)"
say "  utilisateur $USER_NAME:$GROUP_NAME, projet $PROJECT, BANC_HOME $BANC_HOME_DIR"
LISTENERS="TLS $LAN_IP:$TLS_PORT + clair 127.0.0.1:$PORT"
((LAN_PLAINTEXT)) && LISTENERS="$LISTENERS + clair $LAN_IP:$PORT (--lan-plaintext)"
say "  $BANCS bancs, MQTT $LISTENERS, compte du Pi $PI_ACCOUNT"

# ------------------------------------------------------------------ 1. apt packages

say ""
say "== 1. Paquets apt"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sys_run apt-get update -q
  sys_run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  note "paquets apt installés : ${missing[*]}"
else
  say "déjà installés : ${APT_PACKAGES[*]}"
  note "paquets apt : déjà installés"
fi

# ------------------------------------------------------------------ 2. virtualenv

say ""
say "== 2. Environnement Python ($PROJECT/.venv, en tant que $USER_NAME)"
# scripts/setup.sh knows how to build the venv (Debian's python3 for Tk, requirements
# hash stamp); run it as the kiosk user so that .venv belongs to that user.
if [ -z "$ROOT" ] && ((!DRY_RUN)) && ! runuser -u "$USER_NAME" -- test -w "$PROJECT"; then
  die "$USER_NAME ne peut pas écrire dans $PROJECT : sudo chown -R $USER_NAME:$GROUP_NAME $PROJECT"
fi
sys_run runuser -u "$USER_NAME" -- env HOME="$USER_HOME" bash "$PROJECT/scripts/setup.sh"
note "environnement Python : $PROJECT/.venv (scripts/setup.sh)"
ensure_dir "$BANC_HOME_DIR" 0755 "$USER_NAME:$GROUP_NAME"

# ------------------------------------------------------------------ 3. Mosquitto

say ""
say "== 3. Mosquitto (comptes, ACL, TLS ; écoute $LISTENERS)"
MOSQ_CHANGED=0

# A listener or allow_anonymous left in the main file or in another conf.d file (the old
# manual instructions added "listener 1883" + "allow_anonymous true") would reopen the
# broker to anybody: comment them out (main file, saved once) or set the file aside.
OPEN_DIRECTIVES='^[[:space:]]*(listener|port|bind_address|bind_interface|allow_anonymous|password_file|acl_file|per_listener_settings)([[:space:]]|$)'
main_conf=$(target "$MOSQ_MAIN_CONF")
if [ -f "$main_conf" ]; then
  new_main=$(sed -E "s/($OPEN_DIRECTIVES.*)/# banc-lfp : désactivé -> \\1/" "$main_conf")
  if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]+$MOSQ_CONF_DIR/?[[:space:]]*$" "$main_conf"; then
    new_main+=$'\n'"include_dir $MOSQ_CONF_DIR"
  fi
  if [ "$new_main" != "$(<"$main_conf")" ] && [ ! -e "$main_conf.banc-lfp.orig" ]; then
    file_run cp -p "$main_conf" "$main_conf.banc-lfp.orig"
  fi
  printf '%s\n' "$new_main" | install_content "$MOSQ_MAIN_CONF" 0644 root:root
  MOSQ_CHANGED=$((MOSQ_CHANGED | CHANGED))
else
  warn "$MOSQ_MAIN_CONF absent (mosquitto pas encore installé ?) : seul $MOSQ_CONF sera écrit"
fi
if [ -d "$(target "$MOSQ_CONF_DIR")" ]; then
  for other in "$(target "$MOSQ_CONF_DIR")"/*.conf; do
    [ -f "$other" ] || continue
    [ "$other" = "$(target "$MOSQ_CONF")" ] && continue
    if grep -Eq "$OPEN_DIRECTIVES" "$other"; then
      file_run mv "$other" "$other.disabled-by-banc-lfp"
      warn "$other mis de côté (.disabled-by-banc-lfp) : il ouvrait une écoute ou l'accès anonyme"
      MOSQ_CHANGED=1
    fi
  done
fi

# The local CA (once) and the LAN listener's certificate (renewed when due).
ensure_dir "$ETC_DIR" 0700 root:root
ensure_ca
ensure_server_cert "$LAN_IP"
((TLS_CHANGED)) && MOSQ_CHANGED=1

if ((LAN_PLAINTEXT)); then
  LAN_PLAINTEXT_LISTENER="# --lan-plaintext: a clear-text LAN listener for old firmware without TLS. Everything on
# it, passwords included, can be read by anyone on the LAN: remove it (re-run install.sh
# without --lan-plaintext) once every ESP32 connects on @TLS_PORT@. An ESP's listener: a
# client's id is its account name, as on the TLS one.
listener $PORT $LAN_IP
use_username_as_clientid true"
  warn "--lan-plaintext : écoute en clair sur $LAN_IP:$PORT ; mots de passe et mesures y sont lisibles par tout le réseau. Relancer sans cette option dès que chaque ESP32 utilise TLS ($TLS_PORT)."
else
  LAN_PLAINTEXT_LISTENER="# No clear-text LAN listener (install.sh --lan-plaintext adds one for old firmware)."
fi

# The retain guard, a Mosquitto plugin (why: deploy/mosquitto-retain-guard.c). Compiled on
# every run into a temporary folder (the same source and compiler give the same bytes), then
# installed only when it differs; a new one needs a restart (plugins load at start).
# --dry-run compiles too when it can, to say whether the file would change.
guard_build=$(mktemp -d)
guard_cmd=(gcc -std=c99 -O2 -Wall -Wextra -fPIC -shared -s -o "$guard_build/guard.so" "$DEPLOY_DIR/mosquitto-retain-guard.c")
((DRY_RUN)) || say "+ gcc : compiler deploy/mosquitto-retain-guard.c (module du broker), dans un dossier temporaire"
if "${guard_cmd[@]}" >"$guard_build/log" 2>&1; then
  install_content "$RETAIN_GUARD" 0644 root:root <"$guard_build/guard.so"
  MOSQ_CHANGED=$((MOSQ_CHANGED | CHANGED))
  rm -rf "$guard_build"
elif ((DRY_RUN)); then
  rm -rf "$guard_build"
  say "[dry-run] gcc : compiler deploy/mosquitto-retain-guard.c -> $RETAIN_GUARD (une fois installés gcc, mosquitto-dev, libmosquitto-dev)"
  note "module du broker (à faire) : $RETAIN_GUARD"
  MOSQ_CHANGED=1
else
  cat "$guard_build/log" >&2
  rm -rf "$guard_build"
  die "compilation de deploy/mosquitto-retain-guard.c impossible (apt-get install gcc libc6-dev mosquitto-dev libmosquitto-dev)"
fi

render "$DEPLOY_DIR/mosquitto.conf" LAN_PLAINTEXT_LISTENER "$LAN_PLAINTEXT_LISTENER" PORT "$PORT" \
  TLS_PORT "$TLS_PORT" LAN_IP "$LAN_IP" SERVER_CERT "$SERVER_CERT" SERVER_KEY "$SERVER_KEY" \
  PASSWORD_FILE "$MOSQ_PASSWD" ACL_FILE "$MOSQ_ACL" RETAIN_GUARD "$RETAIN_GUARD" PI_ACCOUNT "$PI_ACCOUNT" |
  install_content "$MOSQ_CONF" 0644 root:root
MOSQ_CHANGED=$((MOSQ_CHANGED | CHANGED))
render "$DEPLOY_DIR/mosquitto.acl" PI_ACCOUNT "$PI_ACCOUNT" |
  install_content "$MOSQ_ACL" 0640 root:mosquitto
MOSQ_CHANGED=$((MOSQ_CHANGED | CHANGED))

# The Pi's account: its password lives in banc.env (the units read it from there).
pi_password=""
if [ -f "$(target "$ENV_FILE")" ]; then
  pi_password=$(sed -n 's/^BANC_MQTT_PASSWORD=//p' "$(target "$ENV_FILE")" | head -n 1)
fi
pi_force=0
if [ -z "$pi_password" ]; then
  pi_password=$(gen_password)
  pi_force=1
fi
ensure_mqtt_account "$PI_ACCOUNT" "$pi_password" "$pi_force"
for n in $(seq 1 "$BANCS"); do
  ensure_bench_account "banc$n"
done
secure_passwd_file
((ACCOUNTS_CHANGED)) && MOSQ_CHANGED=1
note "comptes MQTT : $PI_ACCOUNT (le Pi) et banc1…banc$BANCS (mots de passe des ESP32 : $BENCH_CREDS)"

# mosquitto_sub / mosquitto_pub read their options (the Pi's account) from
# $XDG_CONFIG_HOME/mosquitto_sub|pub: maintenance never types the password on a command line.
for client in mosquitto_sub mosquitto_pub; do
  render "$DEPLOY_DIR/mosquitto-client.conf.in" CLIENT "$client" PORT "$PORT" PI_ACCOUNT "$PI_ACCOUNT" \
    PI_PASSWORD "$pi_password" | install_content "$CLIENT_CONF_DIR/$client" 0600 root:root
done

install_content "$MOSQ_DROPIN" 0644 root:root <"$DEPLOY_DIR/mosquitto-override.conf"
DROPIN_CHANGED=$CHANGED

# ------------------------------------------------------------------ 4. kiosk unit

say ""
say "== 4. Service du kiosque ($KIOSK_UNIT_NAME)"
{
  render "$DEPLOY_DIR/banc.env.in" HOME "$BANC_HOME_DIR" PORT "$PORT" PI_ACCOUNT "$PI_ACCOUNT" \
    PI_PASSWORD "$pi_password" BANCS "$BANCS"
  # The lab database (--lab-db): the kiosk, banc.py and report.py read it too (48 h rule, history).
  if [ -n "$LAB_DB" ]; then
    printf 'BANC_LAB_DB=%s\nBANC_SITE=%s\nPGPASSFILE=%s\n' "$LAB_DB" "$SITE" "$LAB_PGPASS"
  fi
} | install_content "$ENV_FILE" 0600 root:root
KIOSK_CHANGED=$CHANGED
render "$DEPLOY_DIR/banc-lfp-kiosk.service.in" USER "$USER_NAME" GROUP "$GROUP_NAME" \
  PROJECT "$PROJECT" ENV_FILE "$ENV_FILE" DISPLAY "$DISPLAY_NAME" XAUTHORITY "$XAUTH" |
  install_content "$KIOSK_UNIT" 0644 root:root
UNIT_CHANGED=$CHANGED
KIOSK_CHANGED=$((KIOSK_CHANGED | UNIT_CHANGED))

LAB_CHANGED=0
if [ -n "$LAB_DB" ]; then
  # The password file libpq reads (PGPASSFILE): owned by the kiosk user, who runs lab_sync.py,
  # ui.py and banc.py; the password is read once on standard input, never from a command line.
  ensure_dir "$LAB_DIR" 0750 "root:$GROUP_NAME"
  if [ ! -s "$(target "$LAB_PGPASS")" ]; then
    lab_user=$(printf '%s' "$LAB_DB" | sed -E 's|^[a-z]+://([^@/?]*)@.*|\1|; t; s|.*||')
    [ -n "$lab_user" ] || die "--lab-db doit nommer le rôle de ce Pi (postgresql://ROLE@serveur/base)"
    if [ -t 0 ]; then printf 'Mot de passe du rôle %s dans la base du labo : ' "$lab_user" >&2; fi
    IFS= read -rs lab_password || true
    [ -t 0 ] && printf '\n' >&2
    [ -n "$lab_password" ] || die "mot de passe de la base du labo vide (à donner sur l'entrée standard)"
    lab_password=${lab_password//\\/\\\\}
    printf '*:*:*:%s:%s\n' "$lab_user" "${lab_password//:/\\:}" | install_content "$LAB_PGPASS" 0600 "$USER_NAME:$GROUP_NAME"
    unset lab_password
  fi
  render "$DEPLOY_DIR/banc-lfp-lab-sync.service.in" USER "$USER_NAME" GROUP "$GROUP_NAME" PROJECT "$PROJECT" \
    ENV_FILE "$ENV_FILE" | install_content "$LAB_UNIT" 0644 root:root
  LAB_CHANGED=$((CHANGED | KIOSK_CHANGED))
  UNIT_CHANGED=$((UNIT_CHANGED | CHANGED))
  note "base du labo : site $SITE, service $LAB_UNIT_NAME, mot de passe dans $LAB_PGPASS"
fi

MONITOR_CHANGED=0
if ((MONITOR)); then
  # Le moniteur web : un compte MQTT qui ne peut que lire (mosquitto.acl), son mot de passe dans
  # monitor.env (0600 root, lu par systemd) ; un certificat HTTPS pour l'adresse LAN, signé par
  # l'autorité locale, sa clé lisible par le groupe du kiosque seulement.
  monitor_password=""
  if [ -f "$(target "$MONITOR_ENV_FILE")" ]; then
    monitor_password=$(sed -n 's/^BANC_MQTT_PASSWORD=//p' "$(target "$MONITOR_ENV_FILE")" | head -n 1)
  fi
  monitor_force=0
  if [ -z "$monitor_password" ]; then
    monitor_password=$(gen_password)
    monitor_force=1
  fi
  ensure_mqtt_account "$MONITOR_ACCOUNT" "$monitor_password" "$monitor_force"
  secure_passwd_file
  ((ACCOUNTS_CHANGED)) && MOSQ_CHANGED=1
  ensure_dir "$WEB_TLS_DIR" 0750 "root:$GROUP_NAME"
  ensure_server_cert "$LAN_IP" "$WEB_CERT" "$WEB_KEY" "root:$GROUP_NAME"
  MONITOR_CHANGED=$TLS_CHANGED
  {
    printf 'BANC_HOME=%s\nBANC_MQTT_HOST=127.0.0.1\nBANC_MQTT_PORT=%s\nBANC_NUM_BANCS=%s\n' "$BANC_HOME_DIR" "$PORT" "$BANCS"
    printf 'BANC_MQTT_USERNAME=%s\nBANC_MQTT_PASSWORD=%s\n' "$MONITOR_ACCOUNT" "$monitor_password"
    printf 'BANC_WEB_HOST=%s\nBANC_WEB_PORT=%s\nBANC_WEB_CERT=%s\nBANC_WEB_KEY=%s\n' "$LAN_IP" "$WEB_PORT" "$WEB_CERT" "$WEB_KEY"
    if [ -n "$LAB_DB" ]; then
      printf 'BANC_LAB_DB=%s\nBANC_SITE=%s\nPGPASSFILE=%s\n' "$LAB_DB" "$SITE" "$LAB_PGPASS"
    fi
  } | install_content "$MONITOR_ENV_FILE" 0600 root:root
  MONITOR_CHANGED=$((MONITOR_CHANGED | CHANGED))
  unset monitor_password
  render "$DEPLOY_DIR/banc-lfp-monitor.service.in" USER "$USER_NAME" GROUP "$GROUP_NAME" PROJECT "$PROJECT" \
    ENV_FILE "$MONITOR_ENV_FILE" MONITOR_ACCOUNT "$MONITOR_ACCOUNT" | install_content "$MONITOR_UNIT" 0644 root:root
  MONITOR_CHANGED=$((MONITOR_CHANGED | CHANGED))
  UNIT_CHANGED=$((UNIT_CHANGED | CHANGED))
  note "moniteur web : https://$LAN_IP:$WEB_PORT/ (service $MONITOR_UNIT_NAME) ; un compte : sudo -u $USER_NAME env BANC_HOME=$BANC_HOME_DIR $PROJECT/.venv/bin/python $PROJECT/monitor.py --add-user NOM"
fi

# ------------------------------------------------------------------ 5. log rotation

say ""
say "== 5. Rotation de $BANC_HOME_DIR/logs.log"
render "$DEPLOY_DIR/logrotate.conf.in" HOME "$BANC_HOME_DIR" USER "$USER_NAME" GROUP "$GROUP_NAME" |
  install_content "$LOGROTATE_CONF" 0644 root:root
# The system's journal in RAM: the card is spared its writes (deploy/journald-banc-lfp.conf).
install_content "$JOURNALD_CONF" 0644 root:root <"$DEPLOY_DIR/journald-banc-lfp.conf"
if ((CHANGED)); then
  sys_run systemctl restart systemd-journald.service || warn "systemd-journald n'a pas redémarré : le réglage vaudra au prochain démarrage"
fi

# ------------------------------------------------------------------ 6. services

say ""
say "== 6. Services"
if ((DROPIN_CHANGED | UNIT_CHANGED)); then
  sys_run systemctl daemon-reload
fi
sys_run systemctl enable mosquitto.service
MOSQ_FAILED="mosquitto ne démarre pas : voir « journalctl -u mosquitto -n 50 »"
if ((MOSQ_CHANGED | DROPIN_CHANGED)); then
  # restart, not reload: the listeners are only opened at start.
  sys_run systemctl restart mosquitto.service || die "$MOSQ_FAILED"
  note "mosquitto redémarré avec la nouvelle configuration"
else
  sys_run systemctl start mosquitto.service || die "$MOSQ_FAILED"
fi
if [ -z "$ROOT" ] && ((!DRY_RUN)) && ! systemctl is-active --quiet mosquitto.service; then
  die "$MOSQ_FAILED"
fi

sys_run systemctl enable "$KIOSK_UNIT_NAME"
if [ -n "$LAB_DB" ]; then
  sys_run systemctl enable "$LAB_UNIT_NAME"
  if ((LAB_CHANGED)); then sys_run systemctl restart "$LAB_UNIT_NAME"; else sys_run systemctl start "$LAB_UNIT_NAME"; fi
fi
if ((MONITOR)); then
  sys_run systemctl enable "$MONITOR_UNIT_NAME"
  if ((MONITOR_CHANGED)); then sys_run systemctl restart "$MONITOR_UNIT_NAME"; else sys_run systemctl start "$MONITOR_UNIT_NAME"; fi
fi
old_seed_active=0
if [ -e "$(target "$OLD_SEED_UNIT")" ]; then
  # Disabled, not stopped: stopping it would kill the tests its UI started.
  sys_run systemctl disable "$(basename "$OLD_SEED_UNIT")"
  warn "ancien service $(basename "$OLD_SEED_UNIT") désactivé ; il tourne jusqu'au prochain redémarrage du Pi"
  if [ -z "$ROOT" ] && ((!DRY_RUN)) && systemctl is-active --quiet "$(basename "$OLD_SEED_UNIT")"; then
    old_seed_active=1
  fi
fi
if ((!START)); then
  note "kiosque activé au démarrage, non lancé (--no-start)"
elif ((old_seed_active)); then
  note "kiosque activé, lancé au prochain redémarrage (l'ancien kiosque tourne encore)"
else
  # --no-block: the kiosk needs the desktop session; do not wait for its first frame.
  # A restart leaves the running tests alone (KillMode=process in the unit).
  if ((KIOSK_CHANGED)); then
    sys_run systemctl --no-block restart "$KIOSK_UNIT_NAME"
    note "kiosque (re)lancé : $KIOSK_UNIT_NAME (les tests en cours continuent)"
  else
    sys_run systemctl --no-block start "$KIOSK_UNIT_NAME"
    note "kiosque : $KIOSK_UNIT_NAME activé et lancé"
  fi
fi

# ------------------------------------------------------------------ 7. desktop

say ""
say "== 7. Bureau (démarrage sur le kiosque)"
if ((!DESKTOP)); then
  say "ignoré (--no-desktop)"
elif [ -z "$ROOT" ] && ((!DRY_RUN)) && ! command -v raspi-config >/dev/null 2>&1; then
  warn "raspi-config absent : configurez vous-même la connexion automatique de $USER_NAME au bureau (X11)"
else
  # Autologin of the kiosk user into the desktop (B4), an X11 session (W1: DISPLAY and
  # XAUTHORITY as in the unit) and no screen blanking (1 = disabled).
  SHOWN="env SUDO_USER=$USER_NAME raspi-config nonint do_boot_behaviour B4" \
    sys_run env SUDO_USER="$USER_NAME" raspi-config nonint do_boot_behaviour B4 || warn "raspi-config do_boot_behaviour a échoué"
  sys_run raspi-config nonint do_wayland W1 || warn "raspi-config do_wayland a échoué (choisir X11 à la main)"
  sys_run raspi-config nonint do_blanking 1 || warn "raspi-config do_blanking a échoué"
  note "bureau : connexion automatique de $USER_NAME, session X11, écran jamais en veille (effectif au redémarrage)"
fi

print_summary
cat <<EOF

Vérifier :
  systemctl status mosquitto $KIOSK_UNIT_NAME
  journalctl -u $KIOSK_UNIT_NAME -f
  sudo env XDG_CONFIG_HOME=$CLIENT_CONF_DIR mosquitto_sub -t 'banc1/#' -v
Les ESP32 : TLS sur $LAN_IP:$TLS_PORT, certificat de l'autorité à épingler : $CA_CERT (deploy/FIRMWARE_ESP32.md)
Mots de passe des ESP32 : sudo cat $BENCH_CREDS ; un banc de plus : sudo $DEPLOY_DIR/add_bench_account.sh bancN
EOF
