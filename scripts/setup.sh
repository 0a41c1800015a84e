#!/usr/bin/env bash
# Set up everything the project needs on Debian / Raspberry Pi OS, idempotently:
# the apt packages (only those missing) and a virtualenv .venv with requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc, libc6-dev, mosquitto-dev, libmosquitto-dev: the broker's retain guard
# (deploy/mosquitto-retain-guard.c), which deploy/install.sh compiles, in the tests too.
# cups, cups-client: grade labels go to the label printer through CUPS (lp, lpstat, cancel);
# printer-driver-cups-pdf: the tests' private cupsd prints into PDF files (docs/etiquettes.md).
APT_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev gcc libc6-dev openssl python3 python3-venv python3-tk xvfb xdotool x11-utils poppler-utils zbar-tools cups cups-client printer-driver-cups-pdf)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installation des paquets apt manquants: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Debian's python3 is the one python3-tk gives Tk to; prefer it over another python3 on PATH.
PYTHON=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3 )}
if ! .venv/bin/python -c "import tkinter" >/dev/null 2>&1; then
  echo "setup: création de l'environnement virtuel .venv ($PYTHON)"
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installation de requirements.txt dans .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$wanted" > "$stamp"
fi

# The checkout on the virtualenv's import path, as an editable install would put it: the
# package banclfp/ (and bench/, tests/) import from any script of the checkout, with no
# sys.path edits. Rewritten each time: the checkout may have moved.
site_dir=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n' "$PWD" > "$site_dir/banc-lfp.pth"
