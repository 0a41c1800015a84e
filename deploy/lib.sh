# banc-lfp — helpers shared by deploy/install.sh and deploy/add_bench_account.sh.
# Sourced, never run. The caller sets ROOT (throwaway root prefix, "" for the real
# machine) and DRY_RUN (1: print every action, do nothing).
#
# Three kinds of action, so that --root and --dry-run stay honest:
#   install_content  writes a file under $ROOT (dry-run: only prints it);
#   file_run         a command that only touches files under $ROOT (mosquitto_passwd):
#                    run for real with --root, printed with --dry-run;
#   sys_run          a command that changes the machine itself (apt, systemctl, chown,
#                    raspi-config): run only on the real machine, printed otherwise.

ROOT=${ROOT:-}
DRY_RUN=${DRY_RUN:-0}
SUMMARY=()
CHANGED=0           # 1 when the last install_content changed something
ACCOUNTS_CHANGED=0  # 1 once a mosquitto password was (re)written

# Bash 5.2 gives "&" a meaning in ${var//pattern/replacement}; values must stay literal.
shopt -u patsub_replacement 2>/dev/null || true
# "render ... | install_content": the last command of a pipeline runs in this shell, so
# CHANGED and SUMMARY set by install_content are not lost in a subshell.
shopt -s lastpipe

# Paths on the target machine (without the --root prefix).
MOSQ_MAIN_CONF=/etc/mosquitto/mosquitto.conf
MOSQ_CONF_DIR=/etc/mosquitto/conf.d
MOSQ_CONF=/etc/mosquitto/conf.d/banc-lfp.conf
MOSQ_PASSWD=/etc/mosquitto/banc-lfp.passwd
MOSQ_ACL=/etc/mosquitto/banc-lfp.acl
MOSQ_DROPIN=/etc/systemd/system/mosquitto.service.d/banc-lfp.conf
ETC_DIR=/etc/banc-lfp
ENV_FILE=/etc/banc-lfp/banc.env
BENCH_CREDS=/etc/banc-lfp/bench-accounts.txt
KIOSK_UNIT_NAME=banc-lfp-kiosk.service
KIOSK_UNIT=/etc/systemd/system/banc-lfp-kiosk.service
LOGROTATE_CONF=/etc/logrotate.d/banc-lfp

say() { printf '%s\n' "$*"; }
warn() { printf 'ATTENTION : %s\n' "$*" >&2; SUMMARY+=("ATTENTION : $*"); }
die() { printf 'ERREUR : %s\n' "$*" >&2; exit 1; }
note() { SUMMARY+=("$*"); }

# Where a target path really is on this machine (under --root when given).
target() { printf '%s%s' "$ROOT" "$1"; }

# A command that changes the machine itself. SHOWN, when set, is what gets printed
# (to hide a password).
sys_run() {
  local shown=${SHOWN:-$*}
  if ((DRY_RUN)); then
    say "[dry-run] $shown"
  elif [ -n "$ROOT" ]; then
    say "[--root] non exécuté : $shown"
  else
    say "+ $shown"
    "$@"
  fi
}

# A command that only touches files under $ROOT.
file_run() {
  local shown=${SHOWN:-$*}
  if ((DRY_RUN)); then
    say "[dry-run] $shown"
  else
    say "+ $shown"
    "$@"
  fi
}

# Create a directory (and its parents) if missing, with a mode and (real machine) an owner.
ensure_dir() {
  local dir=$1 mode=$2 owner=${3:-root:root} real
  real=$(target "$dir")
  [ -d "$real" ] && return 0
  if ((DRY_RUN)); then
    say "[dry-run] créer le dossier $dir (mode $mode, $owner)"
  else
    say "+ install -d -m $mode $dir"
    install -d -m "$mode" "$real"
    sys_run chown "$owner" "$real"
  fi
  note "dossier créé : $dir"
}

# Install the text read on stdin as file $1 with mode $2 and owner $3 (user:group),
# atomically, only when it differs. Sets CHANGED. A first write in a folder that did
# not exist creates it (mode 0755).
install_content() {
  local dest=$1 mode=$2 owner=$3 real tmp action new
  real=$(target "$dest")
  tmp=$(mktemp)
  cat >"$tmp"
  CHANGED=0
  if [ -f "$real" ] && cmp -s "$tmp" "$real"; then
    rm -f "$tmp"
    if [ "$(stat -c %a "$real")" != "${mode#0}" ]; then
      CHANGED=1
      file_run chmod "$mode" "$real"
      note "droits corrigés ($mode) : $dest"
    fi
    if [ -z "$ROOT" ] && ((!DRY_RUN)) && [ "$(stat -c %U:%G "$real")" != "$owner" ]; then
      CHANGED=1
      sys_run chown "$owner" "$real"
      note "propriétaire corrigé ($owner) : $dest"
    fi
    ((CHANGED)) || note "inchangé : $dest"
    return 0
  fi
  CHANGED=1
  action="créé"
  [ -e "$real" ] && action="mis à jour"
  if ((DRY_RUN)); then
    rm -f "$tmp"
    say "[dry-run] écrire $dest (mode $mode, $owner)"
    note "$action (à faire) : $dest"
    return 0
  fi
  [ -d "$(dirname "$real")" ] || install -d -m 0755 "$(dirname "$real")"
  # A temporary file in the same folder, then rename: never a half-written file, and
  # created 0600 so a secret is never readable by others, not even for an instant.
  new="$real.banc-lfp-new"
  (umask 077 && cp "$tmp" "$new")
  rm -f "$tmp"
  chmod "$mode" "$new"
  say "+ écrire $dest (mode $mode)"
  mv -f "$new" "$real"
  sys_run chown "$owner" "$real"
  note "$action : $dest"
}

# Print template $1 with every @KEY@ replaced, for the KEY VALUE pairs that follow.
# A placeholder left unfilled is a bug: stop rather than install it.
render() {
  local template=$1 text
  shift
  text=$(<"$template")
  while (($# >= 2)); do
    text=${text//"@$1@"/"$2"}
    shift 2
  done
  if [[ $text =~ @[A-Z_]+@ ]]; then
    die "$template : ${BASH_REMATCH[0]} non remplacé"
  fi
  printf '%s\n' "$text"
}

# A random password of letters and digits (safe in an EnvironmentFile and on a command line).
gen_password() {
  local raw
  raw=$(head -c 48 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9')
  printf '%s' "${raw:0:24}"
}

valid_bench_name() { [[ $1 =~ ^banc[1-9][0-9]*$ ]]; }

# Make sure the mosquitto password file holds account $1 with password $2; with $3=1,
# (re)write the hash even when the account exists (a new or changed password).
ensure_mqtt_account() {
  local name=$1 password=$2 force=${3:-0} file
  file=$(target "$MOSQ_PASSWD")
  if ((!force)) && [ -f "$file" ] && grep -q "^${name}:" "$file"; then
    return 0
  fi
  if ((!DRY_RUN)) && [ ! -f "$file" ]; then
    install -d -m 0755 "$(dirname "$file")"
    (umask 077 && : >"$file")
  fi
  SHOWN="mosquitto_passwd -b $MOSQ_PASSWD $name ********" \
    file_run mosquitto_passwd -b "$file" "$name" "$password"
  ACCOUNTS_CHANGED=1
  note "compte MQTT $name : mot de passe enregistré dans $MOSQ_PASSWD"
}

# The password file is read by mosquitto after it has dropped root: owned by mosquitto,
# readable by nobody else.
secure_passwd_file() {
  local file
  file=$(target "$MOSQ_PASSWD")
  [ -f "$file" ] || return 0
  [ "$(stat -c %a "$file")" = 600 ] || file_run chmod 0600 "$file"
  if [ -z "$ROOT" ] && ((!DRY_RUN)) && [ "$(stat -c %U:%G "$file")" != mosquitto:mosquitto ]; then
    sys_run chown mosquitto:mosquitto "$file"
  fi
}

# Account of bench ESP32 $1 (bancN), with password $2 or the one already recorded in
# $BENCH_CREDS, or a new random one. The plain password is kept in $BENCH_CREDS
# (root only) because it has to be flashed into the ESP32.
ensure_bench_account() {
  local name=$1 wanted=${2:-} creds stored="" password force=0 others
  valid_bench_name "$name" || die "nom de banc invalide : '$name' (attendu : banc1, banc2…)"
  creds=$(target "$BENCH_CREDS")
  if [ -f "$creds" ]; then
    stored=$(awk -v u="$name" '$1 == u { print $2; exit }' "$creds")
  fi
  if [ -n "$wanted" ]; then
    [[ $wanted =~ ^[A-Za-z0-9._-]{8,}$ ]] || die "mot de passe refusé : au moins 8 caractères parmi A-Z a-z 0-9 . _ -"
    password=$wanted
  elif [ -n "$stored" ]; then
    password=$stored
  else
    password=$(gen_password)
  fi
  if [ "$password" != "$stored" ]; then
    force=1
    others=""
    [ -f "$creds" ] && others=$(awk -v u="$name" '!/^#/ && NF >= 2 && $1 != u' "$creds")
    {
      say "# banc-lfp — comptes MQTT des ESP32 des bancs : « banc mot-de-passe »."
      say "# Chaque ESP32 se connecte avec le nom de son banc et ce mot de passe."
      say "# Fichier écrit par deploy/add_bench_account.sh (et install.sh) ; root seulement."
      { [ -n "$others" ] && printf '%s\n' "$others"; say "$name $password"; } | sort -V -k1,1
    } | install_content "$BENCH_CREDS" 0600 root:root
  fi
  ensure_mqtt_account "$name" "$password" "$force"
}

# Make mosquitto re-read its password and ACL files (SIGHUP through systemd).
reload_mosquitto() {
  sys_run systemctl reload mosquitto.service
}

print_summary() {
  local line
  say ""
  say "=== Résumé ==="
  for line in "${SUMMARY[@]}"; do
    say "- $line"
  done
}
