"""Measured where it was measured (docs/protocole.md §6, §7): the real banc.py, a real Mosquitto, the test playing the ESP.

One run of a test goes through what the issue lists, in order: live lines give the ESP's clock
offset; banc.py is killed while the ESP goes on at 1 Hz and reboots; the restarted banc.py
stamps the backlog from the journal's offset (1.000 s apart) and the readers recompute the
rebooted boot's rows once a live line gives it an offset; a gap answered by the ESP is filled
once; the ESP reboots mid-test; a gap nobody answers is counted and alerted once at the end.
A second test resumes a folder of the earlier version (12 columns).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from banclfp.analysis import measures as analysis
from banclfp.infra import storage
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, PlayedEsp, bms_line, read_data_rows, wait_until
from banclfp.testkit.support import MosquittoBroker
from banclfp.wire import protocol

SERIAL = "RW-REPLAY01"


def rows_by(folder: Path) -> dict[tuple[int, int], dict[str, str]]:
    return {(int(r["seq"]), int(r["uptime_ms"])): r for r in read_data_rows(folder)}


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_outage_reboots_and_gaps_with_a_real_broker(store: Store, mqtt_env: dict[str, str], broker: MosquittoBroker,
                                                    banc_home: Path) -> None:
    t = protocol.topics(1)
    probe = MqttProbe(broker, [t.command, t.security]).start()
    fleet = BancFleet(banc_home, broker)
    esp = PlayedEsp(probe)
    try:
        runner = fleet.start("banc1", SERIAL)
        probe.wait_for(t.command, "1")  # the marker came back: what follows is live
        live = [esp.measure(), esp.measure()]
        folder = runner.folder()
        wait_until(lambda: len(read_data_rows(folder)) == 2, message="2 live rows")
        runner.kill()

        # Outage: the ESP goes on at 1 Hz, then reboots (a new boot banc.py has no offset for).
        backlog = esp.at_1hz(2)
        esp.reboot(0.5)
        rebooted = esp.at_1hz(2)
        commands = len(probe.messages(t.command))
        runner = fleet.start("banc1", SERIAL)
        probe.wait_for(t.command, "1", since=commands)
        after = [esp.measure()]  # live: the new boot's offset

        # A gap the ESP answers (twice: the copy is not written).
        lost_on_the_way = esp.measure(send=False)
        after.append(esp.measure())
        ask = probe.wait_for(t.command, f"replay {lost_on_the_way[0]} {lost_on_the_way[0]}", since=commands)
        assert ask.text == f"replay {lost_on_the_way[0]} {lost_on_the_way[0]}"
        replayed = esp.line(*lost_on_the_way)
        probe.publish_many([(t.bms_replay, replayed), (t.bms_replay, replayed)])

        # The ESP reboots mid-test, then a line is lost that nobody re-sends before the end.
        esp.reboot(0.2)
        after += [esp.measure(), esp.measure()]
        esp.measure(send=False)
        after.append(esp.measure())
        alerts_before = len(probe.texts(t.security))
        probe.publish(t.step, "5")
        assert runner.wait_exit(15) == 0, runner.log_text()[-2000:]
    finally:
        fleet.stop_all()
        probe.stop()

    rows = read_data_rows(folder)
    by_key = rows_by(folder)
    every = live + backlog + rebooted + after + [lost_on_the_way]
    # Each line once, the replayed one too.
    assert sorted((int(r["seq"]), int(r["uptime_ms"])) for r in rows) == sorted(every)
    # The backlog of the running boot is stamped from the journal's offset: 1.000 s apart,
    # although the broker delivered it within milliseconds.
    first, second = (by_key[key] for key in backlog)
    assert seconds(second["measured_at"]) - seconds(first["measured_at"]) == 1.0
    assert seconds(second["timestamp"]) - seconds(first["timestamp"]) < 0.5
    # The rebooted boot's backlog was written at receipt; the readers recompute it from the
    # offset its first live line gave.
    data = analysis.load_test_data(folder)
    assert data.recomputed_rows >= 2
    measured = dict(zip(zip(data["seq"].astype(int).tolist(), data["uptime_ms"].astype(int).tolist()),
                        data.unix_s.tolist()))
    times = [measured[key] for key in rebooted + after[:1]]
    assert np.diff(times).round(3).tolist() == [1.0, round((after[0][1] - rebooted[1][1]) / 1000, 3)]
    assert np.all(np.diff(data.unix_s) >= 0)  # read in the order measured (the replayed line is in its place)

    config = record.corrected_summary_file(folder)
    assert config is not None
    assert config["seq_lost_count"] == 1 and config["seq_restart_count"] == 2
    texts = probe.texts(t.security)[alerts_before:]
    assert [x for x in texts if "perdue" in x] == ["1 ligne BMS perdue (seq 2..2) : test terminé avant leur renvoi"]
    events, _ = record.read_events(folder)
    assert [e.kind for e in events].count(record.EVENT_ESP_BOOT) == 3


def test_a_folder_of_the_earlier_version_keeps_its_12_columns(store: Store, mqtt_env: dict[str, str], broker: MosquittoBroker,
                                                             banc_home: Path) -> None:
    t = protocol.topics(1)
    start = record.now_local() - timedelta(hours=1)
    folder = banc_home / "data" / "banc1" / f"{start:%d%m%Y}-{SERIAL}"
    folder.mkdir(parents=True)
    header = ",".join(record.DATA_CSV_HEADER_V1)
    old_rows = [f"{record.iso(start + timedelta(seconds=s), millis=True)},2,{s},52.000,10.000,50.0,25.0,0.000,0.0,"
                f"3250,3262,0" for s in range(3)]
    (folder / record.DATA_CSV_FILE).write_text("\n".join([header] + old_rows) + "\n", encoding="ascii")
    config = record.new_summary("banc1", SERIAL, record.iso(start))
    config["current_step"] = 2
    storage.atomic_write_json(folder / record.TEST_CONFIG_FILE, config)
    store.set_banc_status("banc1", record.STATUS_OCCUPIED, SERIAL, 2)
    probe = MqttProbe(broker, [t.command]).start()
    fleet = BancFleet(banc_home, broker)
    try:
        runner = fleet.start("banc1", SERIAL)
        probe.wait_for(t.command, "2")
        probe.publish_many([(t.bms_data, f"{bms_line(3)},4000"), (t.bms_data, bms_line(4)), (t.step, "9")])
        assert runner.wait_exit(15) == 0, runner.log_text()[-2000:]
    finally:
        fleet.stop_all()
        probe.stop()
    lines = (folder / record.DATA_CSV_FILE).read_text(encoding="ascii").splitlines()
    assert lines[0] == header and len(lines) == 6
    assert all(len(line.split(",")) == 12 for line in lines[1:])
    report = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    assert report.data["seq"].tolist() == [0, 1, 2, 3, 4] and report.summary.rows == 5
