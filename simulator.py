#!/usr/bin/env python3
"""Simulated ESP32 benches: a physical 16S LFP model behind the real MQTT protocol.

    python simulator.py [--bancs 1,2] [--speed 100] [--capacity-ah 100] [--ri-ohm 0.02] [--firmware v3|v2|v1]
                        [--fault bms-silence|garbage|disconnect|over-temperature|reboot|drop|seq-bitflip
                                 |uptime-garbled|reboot-loop|ri-absurd|retained-step]

Each bench is its own MQTT client (client id `esp32_sim_bancN`, birth `online` / last
will `offline` retained on bancN/esp/status), exactly like one ESP32 per bench. The
physics and the firmware's test sequence live in `battery_model.py` (pure, unit tested);
this file only moves messages and paces the simulated clock: physics steps of `--dt`
simulated seconds, one BMS line per simulated second, `--speed` simulated seconds per
real second. Each line carries the ESP's `uptime_ms` on the simulated clock, so an
accelerated test has its real durations, and `esp_step`, the phase the firmware was in when
it measured the line (protocol v3: 12 fields; `--firmware v2` sends 11 fields, `v1` 10
fields and answers no replay); the firmware keeps its last 3600 lines and re-sends them on
bancN/bms/replay when banc.py asks (`replay FIRST LAST`). The `drop` fault loses one line in
DROP_EVERY on the way, for the replay to fill.

Faults (`--fault`, FAULT_HELP): the single-line ones (`seq-bitflip`, `uptime-garbled`) and
the absurd Ri results (`ri-absurd`) are made by BenchFirmware; `reboot-loop` and
`retained-step` live here, in the shell: a real firmware sends no BMS line between a reboot
and the next command, and never publishes a retained message on bancN/step.
"""

import sys

from banclfp.simulation.simulator import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
