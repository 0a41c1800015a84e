#!/usr/bin/env bash
# Set up everything, then run the demo: a private broker of its own (never the machine's:
# on an installed Pi the simulated benches would mix with the real ones), the simulator for
# every bench, and the kiosk in a window. Ctrl+C stops it all.
# Another broker only when named: BANC_DEMO_BROKER=HOST[:PORT] (banclfp/testkit/demo_broker.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The demo keeps its state apart from a production install in the same folder.
export BANC_HOME=${BANC_HOME:-$PWD/.demo}
mkdir -p "$BANC_HOME"
PY=.venv/bin/python

# The broker: private (a free loopback port, config and persistence in $BANC_HOME/mosquitto),
# unless BANC_DEMO_BROKER names one. An inherited BANC_MQTT_HOST/PORT is not asking (banc.env).
choice=$($PY -m banclfp.testkit.demo_broker) || exit 2
read -r broker_mode BANC_MQTT_HOST BANC_MQTT_PORT <<<"$choice"
export BANC_MQTT_HOST BANC_MQTT_PORT

pids=()
cleanup() {
  # The tests started from the demo kiosk run in their own sessions (so that they outlive a
  # kiosk restart in production); the demo stops them cleanly (SIGTERM: resumable) with the rest.
  for pid in $($PY -c "import utils; print(*[p for p in map(utils.banc_process_pid, utils.all_bancs()) if p])" 2>/dev/null); do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Gone before the prompt returns: the private broker writes its persistence on the way out.
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if [ "$broker_mode" = private ]; then
  # Clear text and anonymous, on loopback only: the accounts and CA of an installed Pi do not apply.
  unset BANC_MQTT_USERNAME BANC_MQTT_PASSWORD BANC_MQTT_CAFILE
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  echo "demo: Mosquitto privé sur $BANC_MQTT_HOST:$BANC_MQTT_PORT ($BANC_HOME/mosquitto)"
  "$MOSQUITTO" -c "$BANC_HOME/mosquitto/mosquitto.conf" >"$BANC_HOME/mosquitto/mosquitto.log" 2>&1 &
  pids+=($!)
  if ! $PY -c "from banclfp.testkit.support import wait_for_port; wait_for_port('$BANC_MQTT_HOST', $BANC_MQTT_PORT)" \
      || ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "demo: le Mosquitto privé n'a pas démarré (voir $BANC_HOME/mosquitto/mosquitto.log)" >&2
    exit 1
  fi
else
  echo "demo: broker demandé $BANC_MQTT_HOST:$BANC_MQTT_PORT (BANC_DEMO_BROKER) : les bancs simulés y publient"
  if ! $PY -m banclfp.testkit.demo_broker probe 2>/dev/null; then
    echo "demo: le broker $BANC_MQTT_HOST:$BANC_MQTT_PORT ne répond pas ou refuse la connexion" \
         "(compte : BANC_MQTT_USERNAME/BANC_MQTT_PASSWORD ; TLS : BANC_MQTT_CAFILE)" >&2
    exit 1
  fi
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
