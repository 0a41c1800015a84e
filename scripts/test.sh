#!/usr/bin/env bash
# Set up everything, then run the lint (ruff), the type checks (mypy) and the whole test
# suite (real Mosquitto and Xvfb started by the tests). Arguments go to pytest.
#   bash scripts/test.sh --fast [ARGS]: only the pure tests (no broker, no Xvfb, no process;
#   tests/conftest.py marks them), no lint nor types: the inner loop, in under 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/setup.sh

# The lab database's tests start their own PostgreSQL (initdb in a temp folder, docs/labo-serveur.md)
# and put several Pis in network namespaces (ip netns, tc netem): Debian's server binaries and
# iproute2, for the tests only (a Pi never runs a database: setup.sh and install.sh leave them out).
# No machine cluster: Debian would otherwise create and start one on port 5432, which no test uses.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || ! command -v tc >/dev/null; then
  echo "test: installation de postgresql et iproute2 (serveur de test, sans cluster de la machine)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo "create_main_cluster = false" | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -o Dpkg::Options::=--force-confold postgresql iproute2
fi

# The web monitor's browser tests (tests/test_monitor_browser.py): Playwright drives Debian's chromium
# (it cannot download its own browsers here). For the tests only: a Pi never needs a browser.
if ! command -v chromium >/dev/null; then
  echo "test: installation de chromium (tests du moniteur web dans un vrai navigateur)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

stamp=.venv/.requirements-dev.sha256
wanted=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "test: installation de requirements-dev.txt dans .venv (ruff, mypy)"
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

if [ "$fast" = 1 ]; then
  echo "test: pytest --fast (les tests purs ; la suite complète : bash scripts/test.sh)"
  # Two workers: these tests use the CPU (the two cores), they wait on nothing.
  exec .venv/bin/python -m pytest --fast -n 2 -q -r fE "$@"
fi

echo "test: ruff"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
# Four workers on two cores: most tests wait on brokers, processes and the X server, not on
# the CPU. Work stealing: a worker that is done takes tests queued on another, so the long ones
# (two Pis in network namespaces, 53 s) no longer finish alone at the end (2407 tests on this
# machine's 2 cores: 335 s with -n 4 in fixed chunks, 215 s with --dist worksteal). Every test
# starts its own broker, BANC_HOME and (per worker) Xvfb, so they can run side by side.
exec .venv/bin/python -m pytest -n 4 --dist worksteal "$@"
