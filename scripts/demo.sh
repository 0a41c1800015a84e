#!/usr/bin/env bash
# Set up everything, then run the demo: a broker (a private one when none answers),
# the simulator for every bench, and the kiosk in a window. Ctrl+C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The demo keeps its state apart from a production install in the same folder.
export BANC_HOME=${BANC_HOME:-$PWD/.demo}
export BANC_MQTT_HOST=${BANC_MQTT_HOST:-localhost}
export BANC_MQTT_PORT=${BANC_MQTT_PORT:-1883}
mkdir -p "$BANC_HOME"
PY=.venv/bin/python

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if ! $PY -c "import socket,sys; socket.create_connection(('$BANC_MQTT_HOST', $BANC_MQTT_PORT), 1)" 2>/dev/null; then
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  echo "demo: aucun broker sur $BANC_MQTT_HOST:$BANC_MQTT_PORT, démarrage d'un Mosquitto privé"
  mkdir -p "$BANC_HOME/mosquitto"
  cat > "$BANC_HOME/mosquitto/mosquitto.conf" <<CONF
listener $BANC_MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $BANC_HOME/mosquitto/
max_queued_messages 1000000
CONF
  "$MOSQUITTO" -c "$BANC_HOME/mosquitto/mosquitto.conf" >"$BANC_HOME/mosquitto/mosquitto.log" 2>&1 &
  pids+=($!)
  sleep 0.5
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
