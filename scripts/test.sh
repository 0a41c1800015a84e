#!/usr/bin/env bash
# Set up everything, then run the lint (ruff), the type checks (mypy) and the whole test
# suite (real Mosquitto and Xvfb started by the tests). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

stamp=.venv/.requirements-dev.sha256
wanted=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "test: installation de requirements-dev.txt dans .venv (ruff, mypy)"
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

echo "test: ruff"
.venv/bin/ruff check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
# Four workers on two cores: most tests wait on brokers, processes and the X server, not on
# the CPU (2188 tests: 280 s with -n 3, 222 s with -n 4 on this machine's 2 cores). Every test
# starts its own broker, BANC_HOME and (per worker) Xvfb, so they can run side by side.
exec .venv/bin/python -m pytest -n 4 "$@"
