#!/usr/bin/env bash
# Set up everything, then run the whole test suite (real Mosquitto and Xvfb started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
