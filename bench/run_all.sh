#!/usr/bin/env bash
# Run every benchmark of bench/ and keep the output in bench/out/run_all.log.
#   bash bench/run_all.sh            # full run (about 20 minutes on a 2-core machine)
#   bash bench/run_all.sh --quick    # short run (about 4 minutes), rough figures
# Each script can also be run alone: .venv/bin/python bench/bench_ingest.py [--quick] ...
# Every script starts its own Mosquitto on a free port (and Xvfb for the kiosk); nothing
# touches the machine's broker or display. The figures are also saved in bench/out/*.json.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_SKIP_SETUP:-0}" != "1" ]; then
  bash scripts/setup.sh
fi
PY=.venv/bin/python
mkdir -p bench/out
LOG=bench/out/run_all.log
: > "$LOG"
status=0
for script in bench_ingest bench_scale bench_ui bench_faults; do
  echo "=== $script $* ($(date '+%Y-%m-%d %H:%M:%S'))" | tee -a "$LOG"
  $PY "bench/$script.py" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "=== $script exited with $rc" | tee -a "$LOG"
    status=1
  fi
done
echo "=== summary of the targets" | tee -a "$LOG"
grep -E "MET|MISSED" "$LOG" | sed 's/^ *//' | tee "$LOG.summary"
exit $status
