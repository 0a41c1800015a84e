#!/usr/bin/env bash
# Set up everything, then run the demo: a broker (a private one when none answers),
# the simulator for every bench, and the kiosk in a window. Ctrl+C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The demo keeps its state apart from a production install in the same folder.
export BANC_HOME=${BANC_HOME:-$PWD/.demo}
export BANC_MQTT_HOST=${BANC_MQTT_HOST:-localhost}
# With BANC_MQTT_CAFILE (a PC reaching an installed Pi over TLS), utils picks the TLS port.
if [ -z "${BANC_MQTT_CAFILE:-}" ]; then export BANC_MQTT_PORT=${BANC_MQTT_PORT:-1883}; fi
mkdir -p "$BANC_HOME"
PY=.venv/bin/python

pids=()
cleanup() {
  # The tests started from the demo kiosk run in their own sessions (so that they outlive a
  # kiosk restart in production); the demo stops them cleanly (SIGTERM: resumable) with the rest.
  for pid in $($PY -c "import utils; print(*[p for p in map(utils.banc_process_pid, utils.all_bancs()) if p])" 2>/dev/null); do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# Use the machine's broker only if it accepts our connection (an installed Pi refuses
# anonymous clients); otherwise start a private one on a free loopback port.
if ! $PY - <<'PY' 2>/dev/null
import sys, threading
import protocol
from utils import get_settings
ok = threading.Event()
client = protocol.make_client("banc_demo_probe", get_settings())
client.on_connect = lambda c, u, f, rc, p: ok.set() if not rc.is_failure else None
try:
    client.connect(get_settings().mqtt_host, get_settings().mqtt_port, 5)
except OSError:
    sys.exit(1)
client.loop_start()
accepted = ok.wait(3)
client.loop_stop()
sys.exit(0 if accepted else 1)
PY
then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  BANC_MQTT_HOST=127.0.0.1
  BANC_MQTT_PORT=$($PY -c "from testkit.support import free_port; print(free_port())")
  export BANC_MQTT_PORT
  unset BANC_MQTT_CAFILE  # the private broker speaks clear text, on loopback only
  echo "demo: pas de broker utilisable, démarrage d'un Mosquitto privé sur $BANC_MQTT_HOST:$BANC_MQTT_PORT"
  mkdir -p "$BANC_HOME/mosquitto"
  cat > "$BANC_HOME/mosquitto/mosquitto.conf" <<CONF
listener $BANC_MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $BANC_HOME/mosquitto/
max_queued_messages 1000000
max_packet_size 4096
CONF
  if [ "$(id -u)" -eq 0 ]; then echo "user root" >> "$BANC_HOME/mosquitto/mosquitto.conf"; fi
  "$MOSQUITTO" -c "$BANC_HOME/mosquitto/mosquitto.conf" >"$BANC_HOME/mosquitto/mosquitto.log" 2>&1 &
  pids+=($!)
  $PY -c "from testkit.support import wait_for_port; wait_for_port('$BANC_MQTT_HOST', $BANC_MQTT_PORT)"
fi

if [ -f simulator.py ]; then
  echo "demo: simulateur (vitesse ${BANC_DEMO_SPEED:-60}x)"
  $PY simulator.py --speed "${BANC_DEMO_SPEED:-60}" >"$BANC_HOME/simulator.log" 2>&1 &
  pids+=($!)
fi

if [ -z "${DISPLAY:-}" ]; then
  echo "demo: pas d'écran (DISPLAY vide) : lancez la démo depuis une session graphique." >&2
  exit 1
fi
if [ -f ui.py ]; then
  echo "demo: kiosque (scannez par ex. banc1, RW-DEMO0001, banc1)"
  $PY ui.py --windowed
else
  echo "demo: ui.py n'existe pas encore ; simulateur et broker tournent, Ctrl+C pour arrêter."
  wait
fi
