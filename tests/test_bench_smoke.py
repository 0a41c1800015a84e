"""Smoke test of bench/: the row accounting (pure, table-driven) and a tiny real fault run.

No timing is asserted here; the figures live in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from banclfp.recording import record
from banclfp.wire import protocol
from bench import bench_faults
from bench.bench_faults import FaultEvent, attribute, schedule
from bench.common import check_csv, percentile, read_publisher_times

REPO_DIR = Path(__file__).resolve().parent.parent


def write_data_csv(path: Path, seqs: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(record.DATA_CSV_HEADER)]
    for seq in seqs:
        lines.append(f"2026-01-05T10:00:00.000+01:00,3,{seq},51.2,-12.4,80.0,24.5,1.0,50.0,3250,3270,0")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "rows, expected, lost, duplicated, unexpected",
    [
        ([0, 1, 2, 3], range(4), 0, 0, 0),
        ([0, 1, 3], range(4), 1, 0, 0),  # seq 2 missing
        ([0, 1, 1, 2, 3], range(4), 0, 1, 0),  # seq 1 written twice
        ([0, 0, 0, 3], range(4), 2, 2, 0),  # both at once
        ([0, 1, 2, 3, 99], range(4), 0, 0, 1),  # a row nobody published
        ([], range(3), 3, 0, 0),
    ],
)
def test_check_csv_counts_lost_and_duplicated_rows(tmp_path: Path, rows: list[int], expected: range, lost: int,
                                                   duplicated: int, unexpected: int) -> None:
    path = write_data_csv(tmp_path / "data.csv", rows)
    check = check_csv([path], expected)
    assert (check.lost, check.duplicated, check.unexpected, check.rows) == (lost, duplicated, unexpected, len(rows))


def test_check_csv_spans_resumed_test_folders(tmp_path: Path) -> None:
    first = write_data_csv(tmp_path / "a" / "data.csv", [0, 1, 2])
    second = write_data_csv(tmp_path / "b" / "data.csv", [2, 3])
    check = check_csv([first, second], range(5))
    assert (check.lost, check.duplicated, check.lost_seqs, check.duplicated_seqs) == (1, 1, [4], [2])


def test_publisher_log_keeps_published_and_acknowledged_apart(tmp_path: Path) -> None:
    log = tmp_path / "pub_banc1.txt"
    log.write_text("P 0 10.0\nA 0 10.1\nP 1 10.2\nP 2 10.3\nA 2 10.4\nP 1 11.0\ngarbage\n")
    published, acked = read_publisher_times(log)
    assert published == {0: 10.0, 1: 10.2, 2: 10.3}
    assert acked == {0: 10.1, 2: 10.4}


def test_losses_are_attributed_to_the_fault_they_happened_in() -> None:
    events = [FaultEvent("broker", "mosquitto", killed_t=100.0, restarted_t=102.0, recovered_t=103.0),
              FaultEvent("banc", "banc1", killed_t=200.0, restarted_t=203.0, recovered_t=204.0)]
    pub_times = {1: 50.0, 2: 101.0, 3: 104.5, 4: 199.0, 5: 300.0}
    assert attribute([1, 2, 3, 4, 5], pub_times, events, margin_s=2.0) == {
        "no fault": 2, "broker:mosquitto": 2, "banc:banc1": 1,
    }


@pytest.mark.parametrize("faults, cycles, duration, first, count", [
    (("broker", "banc", "ui"), 1, 40.0, 10.0, 3),
    (("banc",), 3, 40.0, 10.0, 3),
])
def test_faults_are_spread_over_the_run(faults: tuple[str, ...], cycles: int, duration: float, first: float,
                                        count: int) -> None:
    plan = schedule(faults, cycles, duration)
    assert len(plan) == count and plan[0][0] == first and plan[-1][0] < duration


@pytest.mark.parametrize("values, pct, expected", [
    ([5.0], 99, 5.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), (list(range(1, 101)), 99, 99), ([], 50, None),
])
def test_percentile_nearest_rank(values: list[float], pct: float, expected: Optional[float]) -> None:
    result = percentile(values, pct)
    assert (result != result) if expected is None else result == expected


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_DIR / "banc.py").exists(), reason="banc.py is not there")
def test_tiny_fault_run_counts_every_row(tmp_path: Path) -> None:
    """Broker (with banc.py behind) and banc.py killed with SIGKILL: every acknowledged line is in data.csv once.

    banc.py is frozen 3 s (150 lines, 100 in flight) and the broker killed half a second
    after a save, so it dies holding lines it had neither delivered nor saved: the ESPs
    (protocol v2 firmware) send them again when banc.py asks.
    """
    # 18 s: the ESP must still be there to answer when the restarted banc.py asks (~15 s).
    result = bench_faults.run_faults(tmp_path, bancs=1, rate=50.0, duration_s=18.0, cycles=1,
                                     faults=("broker", "banc"), use_ui=False, down_s=1.0, verbose=False,
                                     replay=True, stall_s=3.0)
    check = result.checks[1]
    assert [e.kind for e in result.events] == ["broker", "banc"]
    assert result.published == result.acked > 100
    assert check.unexpected == 0
    assert check.rows - check.duplicated + check.lost == check.expected
    assert (result.lost, result.duplicated) == (0, 0), result.attributed
    assert result.banc_exit_codes == {1: 0}


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_DIR / "banc.py").exists(), reason="banc.py is not there")
def test_a_broker_crash_with_firmware_that_cannot_replay_loses_only_what_banc_py_asks_for(tmp_path: Path) -> None:
    """Older firmware, broker killed while banc.py is behind: what the broker held is gone, and banc.py names it.

    Mosquitto keeps its queues in memory between two saves (autosave_interval): the lines
    it had neither delivered nor saved die with it. banc.py sees the gap and asks the ESP
    for exactly those seqs; firmware without replay cannot answer, so they stay missing.
    """
    # 12 s: the broker (fault at 6 s) is killed at ~10 s, while lines still come.
    result = bench_faults.run_faults(tmp_path, bancs=1, rate=50.0, duration_s=12.0, cycles=1,
                                     faults=("broker",), use_ui=False, down_s=1.0, verbose=False,
                                     replay=False, stall_s=3.0)
    check = result.checks[1]
    assert result.published == result.acked > 100
    assert check.unexpected == check.duplicated == 0
    assert check.rows + check.lost == check.expected
    assert result.attributed["banc1"] == {"lost@broker:mosquitto": check.lost} and check.lost > 0
    asked: set[int] = set()
    for line in (tmp_path / "home" / "proc" / "banc1.log").read_text().splitlines():
        if "asked the ESP: " in line:
            command = protocol.parse_command(line.split("asked the ESP: ", 1)[1].strip())
            assert isinstance(command, protocol.ReplayCommand)
            asked |= set(range(command.first, command.last + 1))
    assert asked == set(check.lost_seqs)
    assert result.banc_exit_codes == {1: 0}


@pytest.mark.slow
@pytest.mark.skipif(not (REPO_DIR / "banc.py").exists(), reason="banc.py is not there")
def test_tiny_record_run_measures_memory_and_steps(tmp_path: Path) -> None:
    """bench_record.py on a 1 MB message and 200 repeated steps: every figure is there, banc.py survives."""
    from bench import bench_record

    big = bench_record.rss_phase(tmp_path / "rss", "bms/data", 1024 * 1024)
    assert big["peak_hwm_kb"] >= big["baseline_rss_kb"] > 0
    assert big["marker_recorded"] and big["alive"] and big["still_records"], big["log_tail"]
    steps = bench_record.steps_phase(tmp_path / "steps", 200, bms_rate=20.0)
    assert steps["all_processed"] and steps["steps_acked"] == 200, steps
    assert steps["process_s"] > 0 and steps["worst_delay_s"] is not None
    assert steps["bms_lost"] == 0 and steps["bms_rows_not_step2"] == 0 and steps["current_step"] == 2


@pytest.mark.parametrize("lags, expected", [
    ([0.0] * 100, 0.0),  # never late: no input waits
    ([0.0] * 990 + [1000.0] * 10, 1000.0 - 0.01 * (990 * 10 + 10 * 1010) / 10),  # 10 one-second freezes
    ([], None),
])
def test_input_wait_weighs_freezes_by_their_length(lags: list[float], expected: Optional[float]) -> None:
    from bench.common import input_wait_percentile

    result = input_wait_percentile(lags, 10.0, 99)
    assert (result != result) if expected is None else result == pytest.approx(expected, abs=0.01)


def test_one_long_freeze_passes_the_tick_p99_but_not_the_input_wait() -> None:
    from bench.common import input_wait_percentile

    lags = [0.3] * 1999 + [2000.0]  # 20 s of 10 ms ticks with one 2 s freeze
    assert percentile(lags, 99) == 0.3
    assert input_wait_percentile(lags, 10.0, 99) > 1000.0


def test_fsync_shim_is_active_in_a_child_and_logs_each_call(tmp_path: Path) -> None:
    """The sitecustomize shim slows and logs the fsyncs of a process started with its environment."""
    from bench.bench_ui_slowdisk import fsync_summary, read_fsyncs, shim_env

    env = {**os.environ, **shim_env(tmp_path / "log", 30.0)}
    code = ("import os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT); t = time.perf_counter(); "
            "os.fsync(fd); os.fdatasync(fd); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) >= 0.060
    calls = read_fsyncs(tmp_path / "log")
    assert [c.role for c in calls] == ["other", "other"] and all(c.ms >= 30.0 for c in calls)
    assert fsync_summary(calls, 0.0, 2e9)["banc"]["calls_total"] == 0


def test_slow_disk_schedule_spreads_scans_and_phase_changes() -> None:
    from bench.bench_ui_slowdisk import schedule

    plan = schedule(20.0, [14, 15, 16], [1, 2], 2.0, graph=False)
    assert [e for e in plan if e[1] == "scan"] == [(20 / 6, "scan", 14), (10.0, "scan", 15), (50 / 3, "scan", 16)]
    steps = [e for e in plan if e[1] == "step"]
    assert len(steps) == 6 and [n for _, _, n in steps] == [1, 2, 1, 2, 1, 2]  # phases 2, 3, 4 of each, then none
