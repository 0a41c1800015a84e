"""report.py and the modules it re-exports: loading data.csv and the summary (analysis.py), the
text (summary_text.py), decimation and time axis (chart_data.py), the PNG (charts.py), the BDF
export (bdf.py), the kiosk chart window (chart_window.py). Most tests go through `report.X`,
the names every caller has used, so they also check that report.py re-exports them.

Test folders are written in the exact contract format (§4) by `testkit.synthetic.write_synthetic_test`,
which bench/bench_report.py also uses to build its large files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from banclfp.analysis import bdf as bdf_module, measures as analysis
from banclfp.charts import chart_data, figure as charts
from banclfp.infra import environment
from banclfp.presentation import formatting, summary_text
from banclfp.recording import record
from banclfp.recording.store import Store
from banclfp.reporting import report
from banclfp.testkit.synthetic import SERIAL, Synthetic, write_synthetic_test

REPO_DIR = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    """One finished synthetic test (6000 rows, a 14 h stop in phase 3), ESP capacity exact."""
    return write_synthetic_test(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def loaded(synthetic: Synthetic) -> analysis.Report:
    """The synthetic test loaded by report.py (default stop threshold 30 s)."""
    return analysis.load_report(synthetic.folder, environment.StaticFiles(environment.PROJECT_DIR).correct_to_25c,
                                min_gap_s=30.0)


def run_report(*args: str, home: Path) -> subprocess.CompletedProcess:
    """Run `python report.py ...` as the operator would, with BANC_HOME (its logs.log) in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env["BANC_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, str(REPO_DIR / "report.py"), *args], capture_output=True, text=True, env=env, timeout=120
    )


# --------------------------------------------------------------------------- pure: timestamps, integration


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-04T08:00:00.000+01:00",
        "2024-07-14T23:59:59.999+02:00",
        "2024-02-29T12:30:15.250+00:00",
        "1999-12-31T23:59:60.000-05:30",  # leap second spelling: numerically the next second
        "2031-10-26T02:30:00.001+01:00",
        "2024-03-04T08:00:00+01:00",  # not canonical: the slow path
        "2024-03-04T07:00:00.5Z",
        "2024-03-04T08:00:00.123456+01:00",
        "2024-03-04 08:00:00.000+01:00",
    ],
)
def test_timestamps_match_fromisoformat(text: str) -> None:
    unix, valid = analysis.parse_iso_timestamps(np.array([text.encode()]))
    assert valid.tolist() == [True]
    if text.startswith("1999-12-31T23:59:60"):
        expected = datetime.fromisoformat("2000-01-01T00:00:00.000-05:30").timestamp()
    else:
        expected = datetime.fromisoformat(text).timestamp()
    assert unix[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "2024-13-04T08:00:00.000+01:00", "2024-03-04T25:00:00.000+01:00", "2024-03-04T08:0x:00.000+01:00",
     "2024-03-04T08:00:00.000+01:00" + "0" * 20],
)
def test_bad_timestamps_are_invalid(text: str) -> None:
    _unix, valid = analysis.parse_iso_timestamps(np.array([text.encode()], dtype="S80"))
    assert valid.tolist() == [False]


def test_naive_timestamp_is_paris_time() -> None:
    unix, valid = analysis.parse_iso_timestamps(np.array([b"2024-07-01T12:00:00"]))
    assert valid[0] and unix[0] == datetime(2024, 7, 1, 12, tzinfo=record.LOCAL_TZ).timestamp()


@pytest.mark.parametrize(
    "y, dt, positive, negative",
    [
        ([2.0, 2.0], [10.0], 20.0, 0.0),
        ([-3.0, -1.0], [2.0], 0.0, 4.0),
        ([2.0, -2.0], [4.0], 2.0, 2.0),  # crosses zero in the middle
        ([3.0, -1.0], [4.0], 4.5, 0.5),  # zero at 3/4 of the interval
        ([0.0, 0.0], [5.0], 0.0, 0.0),
        ([1.0, 1.0, -1.0], [1.0, 0.0], 1.0, 0.0),  # a zero-length interval adds nothing
    ],
)
def test_split_trapezoid(y: list[float], dt: list[float], positive: float, negative: float) -> None:
    pos, neg = analysis.split_trapezoid(np.array(y), np.array(dt))
    assert pos.sum() == pytest.approx(positive)
    assert neg.sum() == pytest.approx(negative)
    assert (pos - neg).sum() == pytest.approx(float(np.sum((np.array(y[:-1]) + np.array(y[1:])) / 2 * np.array(dt))))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("x.bdf.csv", "x.bdf.metadata.json"),
        ("x.csv", "x.bdf.metadata.json"),
        ("x.bdf", "x.bdf.metadata.json"),
        ("x", "x.bdf.metadata.json"),
        ("RW-AB12.BDF.CSV", "RW-AB12.bdf.metadata.json"),
    ],
)
def test_bdf_metadata_path(tmp_path: Path, name: str, expected: str) -> None:
    assert bdf_module.bdf_metadata_path(tmp_path / name) == tmp_path / expected


@pytest.mark.parametrize(
    "steps, expected",
    [([1, 1, 2, 2, 3, 3, 3, 4, 5], [1, 1, 2, 2, 3, 3, 3, 4, 5]), ([2, 2, 3, 2, 3], [1, 1, 2, 3, 4]), ([], [])],
)
def test_bdf_step_count_increases_at_each_phase_change(steps: list[int], expected: list[int]) -> None:
    assert bdf_module.bdf_step_count(np.array(steps, dtype=np.int64)).tolist() == expected


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (59.6, "1 min 00 s"), (3725, "1 h 02 min"), (2 * 86400 + 3 * 3600 + 12 * 60, "2 j 03 h 12 min")],
)
def test_format_duration(seconds: float, text: str) -> None:
    # Written with plain spaces here for legibility: every number is tied to its unit by a no-break space.
    assert formatting.format_duration(seconds) == text.replace(" ", "\u00a0").replace("\u00a0h\u00a0", "\u00a0h ").replace(
        "\u00a0j\u00a0", "\u00a0j ").replace("\u00a0min\u00a0", "\u00a0min ")


def test_decimation_keeps_spikes_and_breaks_lines_at_stops() -> None:
    n = 1_000_000
    x = np.arange(n, dtype=float)
    x[600_000:] += 50_000.0  # a stop
    y = np.sin(x / 5000.0)
    y[123_457] = 40.0
    y[777_777] = -40.0
    runs = chart_data.display_runs(x, gap_s=30.0)
    assert runs == [(0, 600_000), (600_000, n)]
    xd, yd = chart_data.decimate(x, y, runs, buckets=1000)
    assert xd.size < 5000
    assert np.nanmax(yd) == 40.0 and np.nanmin(yd) == -40.0
    breaks = np.flatnonzero(np.isnan(yd))
    assert breaks.size == 1 and xd[breaks[0] - 1] < 600_000 <= xd[breaks[0] + 1] - 50_000
    assert np.all(np.diff(xd[~np.isnan(xd)]) > 0)


# --------------------------------------------------------------------------- loading data.csv

HEADER = ",".join(record.DATA_CSV_HEADER_V1)  # the earlier 12-column layout: every reader still reads it
ROW = "2024-03-04T08:00:0{s}.000+01:00,3,{s},52.100,-10.000,50.0,25.0,1.000,51.2,3250,3270,0"


def rows_text(count: int) -> str:
    """`count` valid data.csv lines, seq 0..count-1."""
    return "\n".join(ROW.format(s=i) for i in range(count)) + "\n"


def test_torn_last_line_is_skipped_with_a_note() -> None:
    data = analysis.parse_data_csv((HEADER + "\n" + rows_text(3) + "2024-03-04T08:00:03.000+01:00,3,3,52.1").encode())
    assert len(data) == 3
    assert data.skipped_lines == 1
    assert any("incomplète" in note for note in data.notes)


def test_last_line_without_newline_is_never_trusted() -> None:
    # Complete-looking, but a crash could have cut "3270" to "32": the newline is the proof.
    data = analysis.parse_data_csv((HEADER + "\n" + rows_text(3) + ROW.format(s=3)).encode())
    assert len(data) == 3 and data.skipped_lines == 1


def test_bad_lines_in_the_middle_are_skipped_with_their_line_numbers() -> None:
    lines = rows_text(6).splitlines()
    lines[1] = lines[1][:30]  # a torn line followed by more rows (crash then resume)
    lines[3] = lines[3].replace("52.100", "abc")
    lines[4] = lines[4].replace("-10.000", "nan")
    data = analysis.parse_data_csv((HEADER + "\n" + "\n".join(lines) + "\n").encode())
    assert len(data) == 3
    assert data.skipped_lines == 3
    assert data["seq"].tolist() == [0.0, 2.0, 5.0]
    assert any("ligne 3, 5, 6" in note for note in data.notes)


def test_crlf_and_blank_lines_are_accepted() -> None:
    text = HEADER + "\r\n" + rows_text(2).replace("\n", "\r\n") + "\r\n" + ROW.format(s=2) + "\r\n"
    data = analysis.parse_data_csv(text.encode())
    assert len(data) == 3 and data.skipped_lines == 0


def test_header_only_gives_no_rows() -> None:
    data = analysis.parse_data_csv((HEADER + "\n").encode())
    assert len(data) == 0 and data.notes == []


@pytest.mark.parametrize("raw", [b"", b"a,b,c\n1,2,3\n", (HEADER.replace("soc_pct", "soc") + "\n").encode()])
def test_wrong_header_is_a_report_error(raw: bytes) -> None:
    with pytest.raises(analysis.ReportError):
        analysis.parse_data_csv(raw)


def test_loader_matches_the_csv_module(synthetic: Synthetic) -> None:
    data = analysis.load_test_data(synthetic.folder)
    with open(synthetic.folder / record.DATA_CSV_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(data) == len(rows) == synthetic.rows
    for name in ("voltage_v", "current_a", "cell_min_mv", "step"):
        assert data[name].tolist() == [float(row[name]) for row in rows]
    expected = [datetime.fromisoformat(row["timestamp"]).timestamp() for row in rows]
    assert np.max(np.abs(data.unix_s - np.array(expected))) < 1e-6


# --------------------------------------------------------------------------- summary


def test_coulomb_count_matches_the_known_profile(loaded: analysis.Report, synthetic: Synthetic) -> None:
    counted = loaded.summary.counted_capacity_ah
    assert counted == pytest.approx(synthetic.expected_discharge_ah, rel=1e-3)
    assert loaded.summary.capacity_diff_pct is not None and abs(loaded.summary.capacity_diff_pct) < 0.1
    assert loaded.summary.capacity_flag is False


def test_stop_and_phases_are_found(loaded: analysis.Report, synthetic: Synthetic) -> None:
    summary = loaded.summary
    assert len(summary.stops) == 1
    stop = summary.stops[0]
    assert (stop.step_before, stop.step_after) == (3, 3)
    assert stop.duration_s == pytest.approx(synthetic.stop_s, abs=2.0)
    assert [s.step for s in summary.segments] == [1, 2, 3, 3, 4, 5]
    assert sorted(summary.phase_active_s) == [1, 2, 3, 4, 5]
    # Active time excludes the stop: about one second per row.
    assert sum(summary.phase_active_s.values()) == pytest.approx(synthetic.rows, rel=0.01)
    assert summary.wall_s == pytest.approx(synthetic.rows + synthetic.stop_s, rel=0.01)


def test_resistances_are_corrected_to_25c(store: Store, loaded: analysis.Report) -> None:
    by_key = {r.key: r for r in loaded.summary.resistances}
    factor = store.static.get_temperature_coefficient(15.0)
    assert factor != 1.0
    assert by_key["ri_discharge"].raw_ohm == 0.012
    assert by_key["ri_discharge"].at_25c_ohm == pytest.approx(0.012 * factor)
    assert by_key["diffusion_charge"].raw_ohm is None and by_key["diffusion_charge"].at_25c_ohm is None


@pytest.mark.parametrize("esp_error, flagged", [(0.05, True), (-0.03, True), (0.015, False), (0.0, False)])
def test_capacity_difference_flag(store: Store, tmp_path: Path, esp_error: float, flagged: bool) -> None:
    folder = write_synthetic_test(tmp_path, rows=800, esp_error=esp_error).folder
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    text = summary_text.format_summary(loaded.summary, folder)
    assert loaded.summary.capacity_flag is flagged
    assert ("ATTENTION : écart" in text) is flagged
    assert loaded.summary.capacity_diff_pct == pytest.approx(-esp_error / (1 + esp_error) * 100, abs=0.1)


def test_summary_without_config_json(store: Store, tmp_path: Path) -> None:
    folder = write_synthetic_test(tmp_path, rows=500).folder
    (folder / record.TEST_CONFIG_FILE).write_text("{ torn", encoding="utf-8")
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    assert loaded.summary.serial == SERIAL and loaded.summary.banc == "banc1"
    assert loaded.summary.esp_capacity_ah == pytest.approx(loaded.summary.counted_capacity_ah, rel=0.01)
    assert any("config.json" in note for note in loaded.summary.notes)


def test_rejected_count_without_config_json_counts_complete_lines_of_rejected_csv(store: Store, tmp_path: Path) -> None:
    folder = write_synthetic_test(tmp_path, rows=50).folder
    (folder / record.TEST_CONFIG_FILE).unlink()
    line = "2024-03-04T08:00:00.000+01:00,banc1/bms/data,champ manquant,1;2;3"
    (folder / record.REJECTED_CSV_FILE).write_text(
        ",".join(record.REJECTED_CSV_HEADER) + f"\n{line}\n{line}\n{line[:20]}", encoding="utf-8")
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    assert loaded.summary.rejected_count == 2  # a torn last line is not a message, as in config.json's count


# --------------------------------------------------------------------------- command line


def test_cli_summary(synthetic: Synthetic, tmp_path: Path) -> None:
    result = run_report(str(synthetic.folder), home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Test {SERIAL} — banc1 — terminé" in out
    # French numbers (issue 14): decimal comma, a no-break space before the unit.
    assert "Arrêts (silences > 30\u00a0s) : 1" in out
    assert "Comptage coulométrique" in out and f"{synthetic.expected_discharge_ah:.2f}".replace(".", ",") in out
    assert "ATTENTION" not in out


@pytest.mark.parametrize("what", ["missing", "file", "no_data"])
def test_cli_bad_folder_exits_2(tmp_path: Path, what: str) -> None:
    target = tmp_path / "x"
    if what == "file":
        target.write_text("not a folder")
    elif what == "no_data":
        target.mkdir()
    result = run_report(str(target), "--bdf", str(tmp_path / "out.bdf.csv"), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("report.py : ") and result.stdout == ""
    assert not (tmp_path / "out.bdf.csv").exists()


def test_cli_invalid_setting_exits_2(synthetic: Synthetic, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANC_")}
    env.update(BANC_HOME=str(tmp_path), BANC_BMS_TIMEOUT_S="soon")
    result = subprocess.run([sys.executable, str(REPO_DIR / "report.py"), str(synthetic.folder)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "BANC_BMS_TIMEOUT_S" in result.stderr and result.stdout == ""


def test_cli_png_and_bdf(synthetic: Synthetic, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    png, bdf = tmp_path / "chart.png", tmp_path / "export.bdf.csv"
    result = run_report(str(synthetic.folder), "--png", str(png), "--bdf", str(bdf), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert png.stat().st_size > 50_000
    with Image.open(png) as image:
        assert image.size == (1600, 1000)
        stddev = ImageStat.Stat(image.convert("L")).stddev[0]
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert stddev > 15  # not a blank page
    assert colors is None or len(colors) > 500
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    with open(bdf, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(bdf_module.BDF_HEADER)
    for label in ("Test Time / s", "Voltage / V", "Current / A", "Unix Time / s", "Step Count / 1",
                  "Surface Temperature T1 / degC", "Charging Capacity / Ah", "Discharging Capacity / Ah"):
        assert label in rows[0]
    assert len(rows) - 1 == synthetic.rows
    col = {label: i for i, label in enumerate(rows[0])}
    assert float(rows[1][col["Test Time / s"]]) == 0.0
    discharged = float(rows[-1][col["Discharging Capacity / Ah"]])
    charged = float(rows[-1][col["Charging Capacity / Ah"]])
    assert discharged > synthetic.expected_discharge_ah  # phase 1 pulses discharge too
    assert charged > 0
    assert [int(r[col["Step ID"]]) for r in rows[1:]][:: synthetic.rows // 7][:3] == [1, 2, 2]
    unix = [float(r[col["Unix Time / s"]]) for r in rows[1:]]
    assert unix == pytest.approx(synthetic.unix_s.tolist(), abs=1e-3)

    meta = json.loads(bdf_module.bdf_metadata_path(bdf).read_text(encoding="utf-8"))
    assert meta["battery_serial"] == SERIAL and meta["bench"] == "banc1"
    assert meta["software"]["version"] == record.SOFTWARE_VERSION
    assert meta["rows"] == synthetic.rows
    assert meta["start_time"].startswith("2024-03-04T08:00:00")
    assert meta["results"]["capacity_ah_coulomb_counting_phase3"] == pytest.approx(
        synthetic.expected_discharge_ah, rel=1e-3
    )
    assert [c["label"] for c in meta["columns"]] == list(bdf_module.BDF_HEADER)

    # The Battery Data Alliance's own validator (batterydf, requirements-dev.txt) accepts it.
    validator = Path(sys.executable).with_name("bdf")
    assert validator.exists(), "bdf (pip install batterydf) is a test dependency"
    checked = subprocess.run([str(validator), "validate", "--strict", str(bdf)], capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "validation passed" in checked.stdout


def test_bdf_of_a_running_test_with_a_torn_line(tmp_path: Path) -> None:
    syn = write_synthetic_test(tmp_path, rows=700, finished=False)
    with open(syn.folder / record.DATA_CSV_FILE, "a", encoding="ascii") as fh:
        fh.write("2024-03-05T09:00:00.000+01:00,3,99999,51.0")  # banc.py was writing this line
    bdf = tmp_path / "running.csv"
    result = run_report(str(syn.folder), "--bdf", str(bdf), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "incomplète" in result.stderr  # logged as a warning
    with open(bdf, newline="") as fh:
        assert sum(1 for _ in fh) == syn.rows + 1
    assert (tmp_path / "running.bdf.metadata.json").exists()
    summary = run_report(str(syn.folder), home=tmp_path)
    assert "en cours" in summary.stdout and "dernière ligne incomplète ignorée" in summary.stdout


def test_png_of_an_empty_test(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "banc2" / "04032024-RW-EMPTY01"
    folder.mkdir(parents=True)
    store.create_data_csv(folder)
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=30.0)
    assert loaded.summary.rows == 0 and loaded.summary.counted_capacity_ah is None
    assert "aucune mesure" in summary_text.format_summary(loaded.summary)
    png = tmp_path / "empty.png"
    charts.render_png(chart_data.prepare_plot_data(loaded.data, loaded.summary), png)
    assert png.stat().st_size > 10_000


# --------------------------------------------------------------------------- kiosk chart window


def destroy_root(root: Any) -> None:
    """Destroy a Tk root without "invalid command name" noise from its pending after() callbacks."""
    import gc

    for pending in root.tk.call("after", "info"):
        root.after_cancel(pending)
    root.destroy()
    # Free its images now, on this thread: collected later by a worker thread's GC, a Tk image's
    # __del__ raises "main thread is not in main loop" (an artefact of several roots in one process).
    gc.collect()


@pytest.mark.gui
def test_show_charts_opens_draws_and_closes(store: Store,
    synthetic: Synthetic, xvfb_display: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    import customtkinter as ctk

    root = ctk.CTk()
    try:
        root.geometry("800x600")
        ticks: list[float] = []

        def heartbeat() -> None:  # the kiosk's own after() loop must keep running while data loads
            ticks.append(time.monotonic())
            root.after(20, heartbeat)

        heartbeat()
        window = report.show_charts(root, synthetic.folder, store, 30.0)
        deadline = time.monotonic() + 30
        while window.canvas is None and time.monotonic() < deadline:
            root.update()
            time.sleep(0.01)
        assert window.canvas is not None, window.status_label.cget("text")
        for _ in range(20):
            root.update()
            time.sleep(0.01)
        assert len(ticks) > 5
        widget = window.canvas
        assert widget.winfo_ismapped() and widget.winfo_width() > 400
        # Laid out at the window's size (fonts fitted to it), not drawn at 1600x1000 and squeezed.
        assert window.chart is not None
        assert abs(window.chart.width_px - widget.winfo_width()) < 0.06 * widget.winfo_width()
        texts = list(window.chart.texts)
        assert "Résultats" in texts and any(t.startswith("Compté ph.3") for t in texts)
        assert window.close_button.cget("text") == "Fermer"

        def wait_drawn_at_canvas_size() -> tuple[int, int]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                root.update()
                size = (widget.winfo_width(), widget.winfo_height())
                if not window.loading and window.chart is not None and (
                        window.chart.width_px, window.chart.height_px) == size:
                    return size
                time.sleep(0.01)
            raise AssertionError(f"picture {window.chart} never drawn at the canvas' size {size}")

        # The picture fits the canvas exactly (larger, it would be cut), and is drawn again when the window is resized.
        first = wait_drawn_at_canvas_size()
        window.geometry("900x700")
        resized = wait_drawn_at_canvas_size()
        assert resized[0] < first[0] and resized[0] < 900
        if os.environ.get("REPORT_SCREENSHOT"):
            from PIL import ImageGrab

            ImageGrab.grab(xdisplay=xvfb_display).save(os.environ["REPORT_SCREENSHOT"])
        window.close_button.invoke()
        root.update()
        assert not window.winfo_exists()
        assert root.winfo_exists()
    finally:
        destroy_root(root)


@pytest.mark.gui
def test_refresh_shows_the_rows_a_running_test_added(store: Store,
    xvfb_display: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    import customtkinter as ctk

    syn = write_synthetic_test(tmp_path, rows=500, finished=False)
    root = ctk.CTk()
    try:
        window = report.show_charts(root, syn.folder, store, 30.0)

        def wait_loaded() -> list[str]:
            deadline = time.monotonic() + 20
            while (window.loading or window.canvas is None) and time.monotonic() < deadline:
                root.update()
                time.sleep(0.01)
            root.update()
            assert window.chart is not None
            return list(window.chart.texts)

        assert "Mesures : 500" in wait_loaded()
        last = syn.unix_s[-1]
        with open(syn.folder / record.DATA_CSV_FILE, "a", encoding="ascii") as fh:
            for i in range(1, 31):
                moment = datetime.fromtimestamp(last + i, tz=record.LOCAL_TZ).isoformat(timespec="milliseconds")
                fh.write(f"{moment},5,{1000 + i},52.0,0.0,60.0,25.0,1.0,50.0,3300,3310,0,,{moment}\n")
        window.refresh_button.invoke()
        assert window.loading
        assert "Mesures : 530" in wait_loaded()
        window.close()
        root.update()
    finally:
        destroy_root(root)


@pytest.mark.gui
def test_show_charts_reports_a_bad_folder(store: Store, xvfb_display: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    import customtkinter as ctk

    root = ctk.CTk()
    try:
        window = report.show_charts(root, tmp_path / "nothing-here", store, 30.0)
        deadline = time.monotonic() + 10
        while window.loading and time.monotonic() < deadline:
            root.update()
            time.sleep(0.01)
        root.update()
        assert window.canvas is None
        assert "Impossible d'afficher" in window.status_label.cget("text")
        window.close()
        root.update()
        assert not window.winfo_exists()
    finally:
        destroy_root(root)


@pytest.mark.gui
def test_chart_window_draws_what_its_load_callback_gives(store: Store, xvfb_display: str, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """ChartWindow takes its loader as a callback: no folder on disk is needed, and it runs off the Tk thread."""
    monkeypatch.setenv("DISPLAY", xvfb_display)
    import functools

    import customtkinter as ctk

    from banclfp.kiosk import chart_window

    calls = tmp_path / "calls.txt"
    root = ctk.CTk()
    try:
        folder = tmp_path / "banc2" / "04032024-RW-CALLBK01"  # never created
        window = chart_window.ChartWindow(root, folder, load_plot=functools.partial(_callback_plot, calls))
        assert window.title_label.cget("text") == "RW-CALLBK01 — banc2"
        deadline = time.monotonic() + 20
        while window.canvas is None and time.monotonic() < deadline:
            root.update()
            time.sleep(0.01)
        assert window.canvas is not None, window.status_label.cget("text")
        # Called once, with the folder and a bucket count, in the child process: off the kiosk's Tk thread.
        lines = calls.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        pid, buckets, called_with = lines[0].split(" ", 2)
        assert int(pid) != os.getpid() and Path(called_with) == folder and int(buckets) >= 400
        assert window.chart is not None and "Mesures : 120" in window.chart.texts
        window.close()
        root.update()
    finally:
        destroy_root(root)


def _callback_plot(calls: Path, folder: Path, buckets: int) -> chart_data.PlotData:
    """A loader for ChartWindow that needs no folder: module-level, as the child process unpickles it by name."""
    with open(calls, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {buckets} {folder}\n")
    data = _rows_at(1_709_535_600.0 + np.arange(120.0))
    summary = analysis.compute_summary(data, record.TestSummary(battery_serial="RW-CALLBK01"), 30.0,
                                       environment.StaticFiles(environment.PROJECT_DIR).correct_to_25c)
    return chart_data.prepare_plot_data(data, summary, buckets=buckets)


# --------------------------------------------------------------------------- a folder written by the real banc.py


def test_report_on_a_folder_written_by_the_real_banc_py(store: Store,
    mqtt_env: dict[str, str], banc_home: Path, broker: Any, tmp_path: Path
) -> None:
    """banc.py records phases 1-4 with an end-of-day stop (9) and a resume inside phase 3; report.py reads it all."""
    from banclfp.testkit.banc_helpers import BancFleet, MqttProbe, bms_line
    from banclfp.wire import protocol

    t = protocol.topics(1)
    esp = MqttProbe(broker, [t.command]).start()
    fleet = BancFleet(banc_home, broker)
    seq = 0

    def lines(count: int, **values: float) -> list[tuple[str, str]]:
        nonlocal seq
        out = [(t.bms_data, bms_line(seq + i, **values)) for i in range(count)]
        seq += count
        return out

    try:
        runner = fleet.start("banc1", SERIAL)
        esp.wait_for(t.command, "1")
        esp.publish_many(
            [(t.step, "1")] + lines(20, current_a=-5.0)
            + [(t.ri_results, json.dumps({"ri_discharge": 0.0125, "ri_charge": 0.0118, "temperature_c": 20.0}))]
            + [(t.step, "2")] + lines(40, current_a=30.0)
            + [(t.step, "3")] + lines(30, current_a=-40.0, capacity_ah=10.0, energy_wh=520.0)
            + [(t.step, "9")]
        )
        assert runner.wait_exit(20) == 0
        time.sleep(2.5)  # the night: nothing is recorded while the test is stopped
        seen = len(esp.messages(t.command))
        runner = fleet.start("banc1", SERIAL)
        esp.wait_for(t.command, "3", since=seen)
        esp.publish_many(
            lines(30, current_a=-40.0, capacity_ah=20.0, energy_wh=1040.0)
            + [(t.step, "4")] + lines(20, current_a=10.0, capacity_ah=20.0, energy_wh=1040.0)
            + [(t.step, "5")]
        )
        assert runner.wait_exit(20) == 0
    finally:
        fleet.stop_all()
        esp.stop()

    folder = runner.folder()
    loaded = analysis.load_report(folder, store.static.correct_to_25c, min_gap_s=1.0)
    summary = loaded.summary
    assert summary.rows == 140 and summary.skipped_lines == 0 and summary.notes == []
    assert (summary.serial, summary.banc, summary.status) == (SERIAL, "banc1", record.TEST_FINISHED)
    assert [s.step for s in summary.segments if s.step == 3] == [3, 3]
    assert any(s.step_before == s.step_after == 3 and s.duration_s >= 2.5 for s in summary.stops)
    assert summary.esp_capacity_ah == 20.0 and summary.counted_capacity_ah is not None
    ri = {r.key: r for r in summary.resistances}
    assert ri["ri_discharge"].raw_ohm == 0.0125 and ri["ri_discharge"].count == 1
    assert ri["ri_discharge"].at_25c_ohm == pytest.approx(store.static.correct_to_25c(0.0125, 20.0))

    png, bdf = tmp_path / "real.png", tmp_path / "real.bdf.csv"
    result = run_report(str(folder), "--png", str(png), "--bdf", str(bdf), home=banc_home)
    assert result.returncode == 0, result.stderr
    assert png.stat().st_size > 50_000
    with open(bdf, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(bdf_module.BDF_HEADER) and len(rows) == 141
    assert [int(r[rows[0].index("Step Count / 1")]) for r in rows[1:]][-1] == 4  # 1, 2, 3 (resumed), 4


# --------------------------------------------------------------------------- awkward time lines


def _rows_at(unix_s: np.ndarray, step: Optional[np.ndarray] = None) -> analysis.TestData:
    n = unix_s.size
    columns = {name: np.zeros(n) for name in analysis.NUMERIC_COLUMNS}
    columns["step"] = np.full(n, 3.0) if step is None else step.astype(float)
    columns["voltage_v"] = np.full(n, 52.0)
    columns["current_a"] = np.full(n, -10.0)
    columns["cell_max_mv"] = np.full(n, 3300.0)
    columns["cell_min_mv"] = np.full(n, 3290.0)
    return analysis.TestData(unix_s=unix_s, columns=columns)


def test_clock_set_right_after_boot_gives_a_short_band_and_few_ticks(store: Store) -> None:
    # A Raspberry Pi without a clock battery records in 1970 until NTP answers.
    unix = np.concatenate([np.arange(600.0), 1_709_535_600.0 + np.arange(3000.0)])
    data = _rows_at(unix)
    summary = analysis.compute_summary(data, record.TestSummary(), 30.0, store.static.correct_to_25c)
    plot = chart_data.prepare_plot_data(data, summary)
    assert len(summary.stops) == 1 and summary.stops[0].duration_s > 50 * 365 * 86400
    assert plot.axis is not None and plot.axis.width < 3600 * 1.05
    assert 3 <= len(plot.ticks) <= 12
    assert summary.counted_capacity_ah == pytest.approx(10.0 * (599 + 2999) / 3600)


def test_thousands_of_stops_still_render(store: Store, tmp_path: Path) -> None:
    # A flapping link: 3000 silences of 45 s. Each is a stop; the chart must still come out.
    unix = np.cumsum(np.tile([1.0, 45.0], 3000))
    step = np.repeat([1, 2, 3, 4, 5], 1200)
    data = _rows_at(unix, step)
    summary = analysis.compute_summary(data, record.TestSummary(capacity_ah=1.0), 30.0, store.static.correct_to_25c)
    assert len(summary.stops) == 3000
    plot = chart_data.prepare_plot_data(data, summary)
    assert plot.axis is not None and plot.axis.width <= 3000 * 1.0 * 1.31 + 1
    png = tmp_path / "flapping.png"
    charts.render_png(plot, png)
    assert png.stat().st_size > 30_000


def test_non_increasing_timestamps_are_noted_and_not_integrated() -> None:
    header = ",".join(record.DATA_CSV_HEADER_V1)
    rows = [ROW.format(s=i) for i in range(5)]
    rows[3] = rows[3].replace("08:00:03", "07:59:00")  # the clock went back
    data = analysis.parse_data_csv((header + "\n" + "\n".join(rows) + "\n").encode())
    assert any("non croissant" in note for note in data.notes)
    count = analysis.coulomb_count(data, 30.0)
    assert count.discharge_ah[-1] == pytest.approx(10.0 * 2 / 3600)  # only 0->1, 1->2 (3->4 spans 64 s)


@pytest.mark.parametrize(
    "start, hours, step_label",
    [
        (datetime(2024, 3, 30, 20, 0, tzinfo=record.LOCAL_TZ), 12, "%H:00"),  # clocks go forward at 02:00
        (datetime(2024, 10, 26, 20, 0, tzinfo=record.LOCAL_TZ), 12, "%H:00"),  # and back at 03:00
        (datetime(2024, 5, 2, 9, 7, tzinfo=record.LOCAL_TZ), 0.05, "%H:%M:%S"),
        (datetime(2024, 5, 2, 9, 7, tzinfo=record.LOCAL_TZ), 24 * 9, "%H:%M"),
    ],
)
def test_time_ticks_are_round_paris_times_in_order(start: datetime, hours: float, step_label: str) -> None:
    first = start.timestamp()
    axis = chart_data.time_axis(first, first + hours * 3600, [])
    ticks = chart_data.time_ticks(axis)
    assert 3 <= len(ticks) <= 10
    xs = [x for x, _ in ticks]
    assert xs == sorted(xs) and xs[0] >= 0 and xs[-1] <= axis.width
    for x, label in ticks:
        moment = datetime.fromtimestamp(first + x, tz=record.LOCAL_TZ)
        assert label.splitlines()[-1] == moment.strftime(step_label.replace("%H:00", "%H:%M"))
        if step_label == "%H:00":
            assert moment.minute == 0 and moment.second == 0
    assert "\n" in ticks[0][1]  # the first tick carries the date



# --------------------------------------------------------------------------- the modules behind report.py

REPORT_MODULES = ("banclfp/analysis/measures", "banclfp/presentation/summary_text", "banclfp/charts/chart_data",
                  "banclfp/charts/figure", "banclfp/analysis/bdf", "banclfp/kiosk/chart_window")


def test_the_report_modules_never_import_report() -> None:
    import ast

    for name in REPORT_MODULES:
        tree = ast.parse((REPO_DIR / f"{name}.py").read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"report", "banclfp.reporting.report"}, f"{name}.py imports report.py: an import cycle"


def test_the_command_line_and_the_core_import_no_toolkit() -> None:
    """Pure core, thin shell: matplotlib is imported only to draw, customtkinter only to open a window."""
    code = (
        "import sys, report\n"
        "from banclfp.analysis import measures, bdf\n"
        "from banclfp.charts import chart_data, figure\n"
        "from banclfp.presentation import summary_text\n"
        "print(sorted(m for m in ('matplotlib', 'customtkinter', 'tkinter') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_measured_at_orders_rows_and_rows_stamped_before_their_boot_estimate_are_recomputed() -> None:
    def stamp(s: float) -> str:
        return datetime.fromtimestamp(1_700_000_000 + s, tz=record.LOCAL_TZ).isoformat(timespec="milliseconds")

    def row(received: float, seq: int, uptime: int, measured: float) -> str:
        return f"{stamp(received)},3,{seq},52.100,-10.000,50.0,25.0,1.000,51.2,3250,3270,0,{uptime},{stamp(measured)}"

    lines = [row(0.02, 7, 7000, 0.0), row(1.02, 8, 8000, 1.0),
             row(5.02, 10, 10000, 4.0),  # 10 after 8 (9 missing)
             row(5.50, 9, 9000, 3.0),  # the replayed 9: after a later line in the file
             # The ESP rebooted while banc.py was down: its backlog arrives in 3 ms, stamped at receipt...
             row(100.000, 0, 500, 100.000), row(100.001, 1, 1500, 100.001), row(100.002, 2, 2500, 100.002),
             row(100.010, 3, 3500, 100.010)]  # ...and the first live line gives its boot an offset
    boots = [record_boot(stamp(0.02), 7, 7000, stamp(0.02), (1_700_000_000 - 7) * 1000),
             record_boot(stamp(100.000), 0, 500, stamp(100.010), round((1_700_000_000 + 96.51) * 1000))]
    raw = ("\n".join([",".join(record.DATA_CSV_HEADER)] + lines) + "\n").encode()
    data = analysis.parse_data_csv(raw, boots)
    assert data["seq"].tolist() == [7, 8, 9, 10, 0, 1, 2, 3]
    assert (data.unix_s - 1_700_000_000).round(3).tolist() == [0.0, 1.0, 3.0, 4.0, 97.01, 98.01, 99.01, 100.01]
    assert data.recomputed_rows == 4  # the 3 of the backlog, and the live line that gave the offset (unchanged)
    # Without the journal the rows keep what data.csv says.
    assert (analysis.parse_data_csv(raw).unix_s - 1_700_000_000).round(3).tolist()[4:] == [100.0, 100.001, 100.002, 100.01]


def record_boot(row_t: str, seq: int, uptime_ms: int, estimated_t: str, offset_ms: int) -> Any:
    boot = record.EspBoot(row_t, seq, uptime_ms)
    boot.clock(estimated_t, offset_ms)
    return boot


@pytest.mark.parametrize("step,decimals", [(20.0, 0), (1000.0, 0), (2.5, 1), (0.1, 1), (0.25, 2), (5e-05, 5)])
def test_tick_labels_have_the_decimals_their_step_needs(step: float, decimals: int) -> None:
    assert charts.tick_decimals(step) == decimals


@pytest.mark.parametrize("status,first_s,title", [
    (record.TEST_ABANDONED, None, "RW-T0001 — banc3 — abandonné (reset) — aucune mesure"),
    (record.TEST_RUNNING, None, "RW-T0001 — banc3 — en cours — aucune mesure"),  # never "— → —"
    (record.TEST_FINISHED, 0.0, "RW-T0001 — banc3 — terminé — 01/01/1970 01:00:00 → 01/01/1970 01:00:00"),
])
def test_chart_title_says_what_the_test_is(status: str, first_s: Optional[float], title: str) -> None:
    from types import SimpleNamespace

    summary: Any = SimpleNamespace(serial="RW-T0001", banc="banc3", status=status, first_row_s=first_s,
                                   last_row_s=first_s, first_handle=None, end_time=None)
    assert charts.chart_title(summary) == title


def test_every_page_of_a_certificate_gives_the_same_start_and_end() -> None:
    # An accelerated simulator: its measurements run ahead of the Pi's clock. The chart's title
    # (page 2) and page 1 both say the test's own start and end (its journal), not the measurements'.
    from types import SimpleNamespace

    start, end = datetime(2026, 12, 1, 8, 0, tzinfo=UTC), datetime(2026, 12, 1, 8, 10, tzinfo=UTC)
    summary: Any = SimpleNamespace(serial="RW-T0001", banc="banc3", status=record.TEST_FINISHED,
                                   first_row_s=start.timestamp(), last_row_s=start.timestamp() + 400 * 600,
                                   first_handle=start, end_time=end)
    assert summary_text.test_span(summary) == (start, end)
    assert charts.chart_title(summary).endswith(
        f"{summary_text.format_time(start)} → {summary_text.format_time(end)}")


# --------------------------------------------------------------------------- Ri at 25 °C, pulse by pulse


def test_a_simulated_20_milliohm_pack_is_reported_at_20_milliohm(store: Store, banc_home: Path) -> None:
    """The simulated phase 1 of a 20.00 mΩ pack (it warms from 25.05 to 25.29 °C over its pulses), journaled as banc.py
    does: the mean corrected with the last pulse's temperature said 20.15 mΩ; each pulse with its own says 20.01 mΩ."""
    from banclfp.simulation import battery_model
    from banclfp.verdict import grading

    firmware = battery_model.BenchFirmware(battery_model.PackParams(capacity_ah=100.0, ri_ohm=0.020, seed=0))
    events = firmware.handle_command(1) + battery_model.run_until(firmware, lambda f: f.phase >= 2, 2.0, 20_000.0)
    results = [event.values for event in events if isinstance(event, battery_model.RiMeasured)]
    assert len(results) == 6 and all("temperature_c" in values for values in results)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=record.LOCAL_TZ)
    folder, _ = store.find_or_create_test_folder("banc1", SERIAL, now)
    for values in results:
        store.update_config_ri_results(folder, values, now)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["ri_discharge_count"] == 3 and config["ri_temperature_c"] == results[-1]["temperature_c"]

    # Before: config.json's raw mean (19.87 mΩ, at 25.05..25.24 °C) corrected with the last result's 25.29 °C.
    before = store.static.correct_to_25c(config["ri_discharge_average"], config["ri_temperature_c"])
    pulses = [(values["ri_discharge"], values["temperature_c"]) for values in results if "ri_discharge" in values]
    after = sum(store.static.correct_to_25c(ohm, temperature) for ohm, temperature in pulses) / len(pulses)
    assert (formatting.format_milliohm(before), formatting.format_milliohm(after)) == ("20,15", "20,01")
    assert abs(after - 0.020) < abs(before - 0.020) / 10

    # Every reader says 20.01 mΩ: the report (text and panel), the grade (kept rounded up, toward failing).
    summary = store.read_test_config(folder)
    assert summary is not None and record.ri_at_25c(summary, "ri_discharge", store.static.correct_to_25c) == pytest.approx(after)
    header = (",".join(record.DATA_CSV_HEADER) + "\n").encode()
    computed = analysis.compute_summary(analysis.parse_data_csv(header), summary, 30.0, store.static.correct_to_25c, folder=folder)
    ri = next(r for r in computed.resistances if r.key == "ri_discharge")
    assert ri.at_25c_ohm == pytest.approx(after) and formatting.format_milliohm(ri.raw_ohm) == "19,87"
    assert computed.ri_temperature_range_c == (results[0]["temperature_c"], results[-1]["temperature_c"])
    text = summary_text.format_summary(computed)
    assert "[température des mesures : 25,1 à 25,3 °C," in text
    assert any(line.split()[:2] == ["Ri", "décharge"] and line.split()[2:4] == ["19,87", "20,01"]
               for line in text.splitlines()), text
    rules = grading.load_rules(REPO_DIR / "grading.json")
    facts = grading.TestFacts(cell_spread_mv=20.0, temperature_max_c=30.0)
    checks = grading.grade(dataclasses.replace(summary, capacity_ah=95.0), facts, rules, store.static.correct_to_25c).checks
    assert next(check.value for check in checks if check.name == grading.CHECK_RI) == 0.02002  # 20,011 mΩ, up


@pytest.mark.parametrize("status, shown", [(record.TEST_RUNNING, 12.3), (record.TEST_FINISHED, 12.0)])
def test_a_running_test_shows_the_esp_capacity_of_its_rows_not_a_config_json_minutes_old(
        status: str, shown: float) -> None:
    # config.json is rewritten every 5 minutes: the charts window of a running test showed "ESP 0,00 Ah"
    # in the middle of its discharge. A finished test's config.json holds the final value.
    header = ",".join(record.DATA_CSV_HEADER)
    lines = [header] + [
        f"2026-12-01T10:00:{k:02d}.000+01:00,3,{k},52.0,-40.0,60.0,25.0,{12.0 + k / 10:.1f},{600 + 5 * k},"
        f"3300,3310,0,{1000 * k},2026-12-01T10:00:{k:02d}.000+01:00" for k in range(4)]
    data = analysis.parse_data_csv(("\n".join(lines) + "\n").encode())
    config = {"status": status, "capacity_ah": 12.0 if status == record.TEST_FINISHED else 0.0, "capacity_wh": 600.0}
    summary = analysis.compute_summary(data, record.TestSummary.from_json(config), 30.0, lambda ohm, _t: ohm)
    assert summary.esp_capacity_ah == shown
