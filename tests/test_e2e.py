"""End to end: simulator.py + the real banc.py + a real Mosquitto run a whole 5-phase test at high speed.

The rows are timed by the ESP's own clock (measured_at, docs/protocole.md §7), which runs in
simulated time: the report's coulomb count agrees with the ESP's capacity at x400.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from banclfp.analysis import measures as analysis
from banclfp.presentation import summary_text
from banclfp.recording import record, store
from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, read_data_rows, read_rejected_rows
from banclfp.testkit.support import MosquittoBroker
from banclfp.wire import protocol
from tests.test_simulator import run_simulator

CAPACITY_AH = 50.0
RI_OHM = 0.03
SERIAL = "RW-E2E00001"


@pytest.mark.slow
def test_whole_test_with_simulator_and_banc_py(
    mqtt_env: dict[str, str], broker: MosquittoBroker, banc_home: Path, tmp_path: Path
) -> None:
    t = protocol.topics(1)
    # 1 C (rather than the default 0.5 C) halves the simulated test: about 2.5 h, 25 s at x400.
    sim_args = ("--speed", "400", "--capacity-ah", str(CAPACITY_AH), "--ri-ohm", str(RI_OHM), "--seed", "7",
                "--charge-current-a", str(CAPACITY_AH), "--discharge-current-a", str(CAPACITY_AH))
    probe = MqttProbe(broker, [t.esp_status, t.step, t.ri_results]).start()
    fleet = BancFleet(banc_home, broker)
    try:
        with run_simulator(mqtt_env, tmp_path, *sim_args):
            probe.wait_for(t.esp_status, protocol.STATUS_ONLINE, live_only=False)
            started = time.monotonic()
            runner = fleet.start("banc1", SERIAL)  # banc.py announces step 1 on banc1/command
            code = runner.wait_exit(timeout_s=90)
            elapsed = time.monotonic() - started
    finally:
        fleet.stop_all()
        probe.stop()
    assert code == 0, runner.log_text()[-3000:]
    assert probe.texts(t.step) == ["1", "2", "3", "4", "5"]
    assert len(probe.texts(t.ri_results)) == 6

    folder = runner.folder()
    config = record.corrected_summary_file(folder)
    assert config is not None
    assert config["current_step"] == 5 and config["status"] == record.TEST_FINISHED
    # The measured capacity is the simulator's configuration, less what 0.5 C leaves in the pack.
    assert config["capacity_ah"] == pytest.approx(CAPACITY_AH, rel=0.015)
    assert config["capacity_ah"] <= CAPACITY_AH
    assert config["capacity_wh"] == pytest.approx(CAPACITY_AH * 16 * 3.22, rel=0.03)
    for key in ("ri_discharge", "ri_charge"):
        assert config[f"{key}_count"] == 3
        assert config[f"{key}_average"] == pytest.approx(RI_OHM, rel=0.05)
    for key in ("diffusion_discharge", "diffusion_charge"):
        assert config[f"{key}_count"] == 3 and 0 < config[f"{key}_average"] < RI_OHM
    assert read_rejected_rows(folder) == []

    rows = read_data_rows(folder)
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and {1, 2, 3, 4} <= set(steps)
    seqs = [int(r["seq"]) for r in rows]
    assert seqs == list(range(len(seqs)))  # nothing lost, nothing duplicated
    assert len(rows) > 9_000  # one line per simulated second of a ~2.8 h test
    assert store.get_banc_info("banc1")["status"] == record.STATUS_AVAILABLE
    # Measured where it was measured: one simulated second between rows, whatever the pace of delivery.
    assert all(r["uptime_ms"] for r in rows)
    report = analysis.load_report(folder)
    spacing = np.diff(report.data.unix_s)
    assert np.median(spacing) == pytest.approx(1.0, abs=0.002)
    counted = report.summary.counted_capacity_ah
    assert counted == pytest.approx(config["capacity_ah"], rel=0.01)
    assert not report.summary.capacity_flag
    assert "ATTENTION" not in summary_text.format_summary(report.summary, folder)
    print(f"e2e: {len(rows)} rows in {elapsed:.1f} s, capacity {config['capacity_ah']} Ah, "
          f"Ri {config['ri_discharge_average']:.5f} / {config['ri_charge_average']:.5f} ohm, "
          f"counted over measured_at {counted:.3f} Ah")
