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
# The broker's retain guard (deploy/mosquitto-retain-guard.c), compiled by install.sh.
RETAIN_GUARD=/usr/local/lib/banc-lfp/mosquitto-retain-guard.so
MOSQ_DROPIN=/etc/systemd/system/mosquitto.service.d/banc-lfp.conf
ETC_DIR=/etc/banc-lfp
ENV_FILE=/etc/banc-lfp/banc.env
BENCH_CREDS=/etc/banc-lfp/bench-accounts.txt
KIOSK_UNIT_NAME=banc-lfp-kiosk.service
KIOSK_UNIT=/etc/systemd/system/banc-lfp-kiosk.service
LAB_UNIT_NAME=banc-lfp-lab-sync.service
LAB_UNIT=/etc/systemd/system/banc-lfp-lab-sync.service
# Readable by the kiosk user (ETC_DIR is root only): the password file and the lab's CA certificate.
LAB_DIR=/etc/banc-lfp-lab
LAB_PGPASS=/etc/banc-lfp-lab/lab.pgpass
# Le moniteur web (--monitor, docs/moniteur.md) : son service, ses réglages (compte MQTT en lecture
# seule), son certificat HTTPS signé par l'autorité locale, lisible par le groupe du kiosque seulement.
MONITOR_UNIT_NAME=banc-lfp-monitor.service
MONITOR_UNIT=/etc/systemd/system/banc-lfp-monitor.service
MONITOR_ENV_FILE=/etc/banc-lfp/monitor.env
MONITOR_ACCOUNT=moniteur
WEB_TLS_DIR=/etc/banc-lfp-web
WEB_CERT=/etc/banc-lfp-web/monitor.crt
WEB_KEY=/etc/banc-lfp-web/monitor.key
LOGROTATE_CONF=/etc/logrotate.d/banc-lfp
JOURNALD_CONF=/etc/systemd/journald.conf.d/banc-lfp.conf
# The options file of mosquitto_sub/mosquitto_pub for the Pi's account (XDG_CONFIG_HOME):
# the password never goes on their command line.
CLIENT_CONF_DIR=/etc/banc-lfp
# TLS of the LAN listener (docs/installation.md, TLS). The CA key signs the server certificate and
# nothing else: root only, never read by mosquitto. The public files sit with mosquitto.
CA_KEY=/etc/banc-lfp/ca.key
MOSQ_TLS_DIR=/etc/mosquitto/banc-lfp-tls
CA_CERT=/etc/mosquitto/banc-lfp-tls/ca.crt
SERVER_CERT=/etc/mosquitto/banc-lfp-tls/server.crt
SERVER_KEY=/etc/mosquitto/banc-lfp-tls/server.key
CA_DAYS=7300          # 20 years: the ESP32s pin this certificate, a new CA means reflashing them
SERVER_DAYS=825       # the server certificate: renewed by install.sh, nothing to reflash
RENEW_BEFORE_DAYS=60  # install.sh renews the server certificate this close to its expiry
TLS_CHANGED=0         # 1 once a certificate or key was (re)made

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

# A new private folder for secrets in the making (a password to hash, a key), inside
# $ETC_DIR (root only), not /tmp: should the script be killed midway, what is left there
# is no more exposed than bench-accounts.txt beside it. The caller removes it.
secret_workdir() {
  local dir
  dir=$(target "$ETC_DIR")
  [ -d "$dir" ] || (umask 077 && install -d -m 0700 "$dir")
  (umask 077 && mktemp -d "$dir/.banc-lfp-work.XXXXXX")
}

# Make sure the mosquitto password file holds account $1 with password $2; with $3=1,
# (re)write the hash even when the account exists (a new or changed password).
# Never "mosquitto_passwd -b FILE USER PASSWORD": its argv, password included, is in ps for
# every local user. The account goes through a root-only temporary file that
# "mosquitto_passwd -U" hashes in place; the hashed line then replaces the account's line.
ensure_mqtt_account() {
  local name=$1 password=$2 force=${3:-0} file work
  file=$(target "$MOSQ_PASSWD")
  if ((!force)) && [ -f "$file" ] && grep -q "^${name}:" "$file"; then
    return 0
  fi
  if ((DRY_RUN)); then
    say "[dry-run] mosquitto_passwd -U (compte $name, depuis un fichier temporaire) -> $MOSQ_PASSWD"
  else
    say "+ mosquitto_passwd -U (compte $name, depuis un fichier temporaire) -> $MOSQ_PASSWD"
    work=$(secret_workdir)
    # printf is a shell builtin: the password is in no process's argv.
    printf '%s:%s\n' "$name" "$password" >"$work/account"
    if ! mosquitto_passwd -U "$work/account" >"$work/log" 2>&1; then
      say "$(<"$work/log")" >&2
      rm -rf "$work"
      die "mosquitto_passwd -U a échoué pour le compte $name"
    fi
    {
      [ -f "$file" ] && grep -v "^${name}:" "$file" || true
      cat "$work/account"
    } >"$work/passwd"
    install -d -m 0755 "$(dirname "$file")"
    (umask 077 && cp "$work/passwd" "$file.banc-lfp-new")
    mv -f "$file.banc-lfp-new" "$file"
    rm -rf "$work"
  fi
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

# ------------------------------------------------------------------ TLS (docs/installation.md, TLS)

# True when private key file $1 and certificate file $2 hold the same public key.
same_public_key() {
  local from_key from_cert
  from_key=$(openssl pkey -in "$1" -pubout 2>/dev/null) || return 1
  from_cert=$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null) || return 1
  [ -n "$from_key" ] && [ "$from_key" = "$from_cert" ]
}

# Expiry date of certificate file $1, as openssl prints it.
cert_end_date() { openssl x509 -in "$1" -noout -enddate 2>/dev/null | sed 's/^notAfter=//'; }

# Run openssl with arguments "$@" (no secret ever is one: keys go through files); on
# failure, show its messages and stop.
run_openssl() {
  local out
  if ! out=$(openssl "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "openssl $1 a échoué"
  fi
}

# A new EC P-256 private key in file $1 (created 0600: umask). EC: fast to make on a Pi,
# and what the ESP32's mbedTLS handles best.
new_ec_key() {
  (umask 077 && run_openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

# The local certificate authority: made once, then kept across every re-run (the ESP32s pin
# its certificate). A lost key means a new CA, announced loudly: every ESP32 must then be
# reflashed with the new ca.crt.
ensure_ca() {
  local key crt work subject
  key=$(target "$CA_KEY")
  crt=$(target "$CA_CERT")
  if [ -f "$key" ] && [ -f "$crt" ] && same_public_key "$key" "$crt"; then
    if [ "$(stat -c %a "$key")" != 600 ]; then
      file_run chmod 0600 "$key"
      note "droits corrigés (0600) : $CA_KEY"
    fi
    if ! openssl x509 -in "$crt" -noout -checkend $((365 * 86400)) >/dev/null; then
      warn "l'autorité de certification expire le $(cert_end_date "$crt") : la remplacer avant (voir docs/installation.md, « Renouvellement »), puis reflasher chaque ESP32"
    fi
    note "autorité de certification conservée : $CA_CERT (jusqu'au $(cert_end_date "$crt"))"
    return 0
  fi
  if ((DRY_RUN)); then
    say "[dry-run] openssl : autorité de certification locale (clé EC P-256 $CA_KEY 0600, certificat $CA_CERT, $CA_DAYS jours)"
    note "autorité de certification (à créer) : $CA_CERT"
    TLS_CHANGED=1
    return 0
  fi
  work=$(secret_workdir)
  subject="/CN=banc-lfp CA $(hostname -s 2>/dev/null || echo pi) $(date -u +%Y-%m-%d)"
  if [ -f "$key" ]; then
    # The key is there, its certificate lost or damaged: the same key signs a new one, so
    # the server certificate and the ESP32s' pinned copy (same key, same name) stay valid.
    subject=$(openssl x509 -in "$crt" -noout -subject -nameopt compat 2>/dev/null | sed 's/^subject=//') || true
    [ -n "$subject" ] || subject="/CN=banc-lfp CA $(hostname -s 2>/dev/null || echo pi)"
    cp "$key" "$work/ca.key"
    warn "certificat de l'autorité absent ou ne correspondant pas à sa clé : refait avec la même clé"
  else
    [ -f "$crt" ] && warn "clé de l'autorité de certification perdue ($CA_KEY) : nouvelle autorité ; reflasher chaque ESP32 avec le nouveau $CA_CERT"
    say "+ openssl genpkey : clé de l'autorité de certification $CA_KEY (EC P-256, mode 0600)"
    new_ec_key "$work/ca.key"
  fi
  say "+ openssl req -x509 : certificat de l'autorité $CA_CERT ($CA_DAYS jours)"
  run_openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$CA_DAYS" -subj "$subject" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$work/ca.crt"
  ensure_dir "$(dirname "$CA_KEY")" 0700 root:root
  install_content "$CA_KEY" 0600 root:root <"$work/ca.key"
  install_content "$CA_CERT" 0644 root:root <"$work/ca.crt"
  rm -rf "$work"
  TLS_CHANGED=1
}

# The server certificate of the LAN listener, for address $1, signed by the CA. Made again
# when missing, when it expires within RENEW_BEFORE_DAYS, when it was made for another
# address, or when the CA or its key changed; kept otherwise (a re-run changes nothing).
# ensure_server_cert IP [CERT KEY OWNER]: the broker's certificate by default; the web monitor's with
# its own paths and the owner of its key (user:group that may read it).
ensure_server_cert() {
  local ip=$1 cert_path=${2:-$SERVER_CERT} key_path=${3:-$SERVER_KEY} owner=${4:-root:mosquitto}
  local crt key ca reason="" work
  crt=$(target "$cert_path")
  key=$(target "$key_path")
  ca=$(target "$CA_CERT")
  if [ ! -f "$crt" ] || [ ! -f "$key" ]; then
    reason="absent"
  elif ! openssl x509 -in "$crt" -noout -checkend $((RENEW_BEFORE_DAYS * 86400)) >/dev/null 2>&1; then
    reason="expire le $(cert_end_date "$crt"), dans moins de $RENEW_BEFORE_DAYS jours"
  elif ! openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | grep -Eq "IP Address:${ip//./\\.}(,|\$)"; then
    reason="fait pour une autre adresse que $ip"
  elif ! same_public_key "$key" "$crt"; then
    reason="ne correspond pas à sa clé"
  elif [ ! -f "$ca" ] || ! openssl verify -CAfile "$ca" "$crt" >/dev/null 2>&1; then
    reason="pas signé par l'autorité actuelle"
  fi
  if [ -z "$reason" ]; then
    if [ "$(stat -c %a "$key")" != 640 ]; then
      file_run chmod 0640 "$key"
      note "droits corrigés (0640) : $key_path"
    fi
    if [ -z "$ROOT" ] && ((!DRY_RUN)) && [ "$(stat -c %U:%G "$key")" != "$owner" ]; then
      sys_run chown "$owner" "$key"
    fi
    note "certificat du serveur conservé : $cert_path ($ip, jusqu'au $(cert_end_date "$crt"))"
    return 0
  fi
  if ((DRY_RUN)); then
    say "[dry-run] openssl : certificat du serveur pour $ip ($reason), signé par l'autorité, $SERVER_DAYS jours"
    note "certificat du serveur (à faire) : $cert_path"
    TLS_CHANGED=1
    return 0
  fi
  work=$(secret_workdir)
  say "+ openssl : certificat du serveur pour $ip ($reason), clé EC P-256, signé par l'autorité, $SERVER_DAYS jours"
  new_ec_key "$work/server.key"
  run_openssl req -new -key "$work/server.key" -subj "/CN=$ip" -out "$work/server.csr"
  # IP and DNS forms of the address: a TLS client that dials an IP matches the IP entry;
  # the older mbedTLS of some ESP32 cores only compares the DNS entries with what it dialled.
  cat >"$work/ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:$ip,DNS:$ip
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
  run_openssl x509 -req -in "$work/server.csr" -CA "$ca" -CAkey "$(target "$CA_KEY")" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$SERVER_DAYS" -sha256 -extfile "$work/ext" -out "$work/server.crt"
  # mosquitto (or the monitor) reads its key after dropping root: its group, nobody else.
  install_content "$key_path" 0640 "$owner" <"$work/server.key"
  install_content "$cert_path" 0644 root:root <"$work/server.crt"
  rm -rf "$work"
  note "certificat du serveur pour $ip : valable jusqu'au $(cert_end_date "$crt") ; relancer install.sh avant (il le renouvelle)"
  TLS_CHANGED=1
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
