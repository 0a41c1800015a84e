#!/usr/bin/env bash
# Run every benchmark of bench/ and keep the output in bench/out/run_all.log.
#   bash bench/run_all.sh            # full run (about 25 minutes on a 2-core machine)
#   bash bench/run_all.sh --quick    # short run (about 5 minutes), rough figures
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
run() {
  echo "=== $* ($(date '+%Y-%m-%d %H:%M:%S'))" | tee -a "$LOG"
  $PY "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "=== $1 exited with $rc" | tee -a "$LOG"
    status=1
  fi
}
run bench/bench_ingest.py "$@"
run bench/bench_scale.py "$@"
run bench/bench_ui.py "$@"
# The issue's fault run: broker, one banc.py and the kiosk killed -9 and restarted, 4 benches at 10 lines/s.
run bench/bench_faults.py "$@"
# The same faults at 100 lines/s per bench, so that more lines are in flight at each kill.
run bench/bench_faults.py --name faults-stress --rate 100 --duration 60 "$@"
# Beyond the targets: the broker killed while it holds the queue of a stopped banc.py.
run bench/bench_faults.py --name faults-overlap --faults overlap --no-ui --bancs 2 --rate 50 --duration 30 --cycles 1 "$@"
echo "=== summary of the targets" | tee -a "$LOG"
grep -E "MET|MISSED|beyond the targets" "$LOG" | sed 's/^ *//' | tee "$LOG.summary"
exit $status
