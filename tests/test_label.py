"""Grade labels (docs/etiquettes.md): the PDF at its size, its QR code, and printing through a real, private CUPS."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from banclfp.infra import environment, printing
from banclfp.infra.printing import PrintOutcome, RetryPolicy
from banclfp.reporting import report
from banclfp.testkit.support import REPO_DIR, CupsServer
from banclfp.testkit.synthetic import write_synthetic_test
from banclfp.verdict import certificate, conclude, label

ARTIFACTS = REPO_DIR / "tests" / "artifacts"
RULES = {
    "version": "labels-1",
    "models": [{"name": "LFP 16S 100 Ah", "serial_pattern": "^RW-", "nominal_capacity_ah": 100.0,
                "grades": [{"grade": "A", "min_soh_pct": 90}, {"grade": "B", "min_soh_pct": 80},
                           {"grade": "C", "min_soh_pct": 70}],
                "ri_discharge_max_ohm": 0.040, "cell_spread_max_mv": 300, "temperature_max_c": 50}],
}
PRINT_TIMEOUT_S = 30.0  # two cores shared by many tests: cups-pdf runs Ghostscript


def graded_folder(home: Path, serial: str = "RW-LABEL001", capacity_ah: float = 95.0, banc: str = "banc2") -> Path:
    """A finished test of `capacity_ah` on a 100 Ah model, concluded (its verdict recorded)."""
    (home / "grading.json").write_text(json.dumps(RULES), encoding="utf-8")
    folder = write_synthetic_test(home, rows=600, serial=serial, banc=banc).folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(capacity_ah=capacity_ah, ri_temperature_c=25.0)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    conclude.conclude(folder)
    return folder


def pdf_text(pdf: Path) -> str:
    """pdftotext's layout text, no-break spaces as spaces."""
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return text.replace("\u00a0", " ")


def page_size_pt(pdf: Path) -> tuple[float, float]:
    """pdfinfo's page size in points."""
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Page size:\s+([\d.]+) x ([\d.]+) pts", info)
    assert found, info
    return float(found.group(1)), float(found.group(2))


def render_300dpi(pdf: Path, stem: Path, antialias: bool = True) -> Path:
    """The first page as a greyscale PNG at 300 dpi, the thermal printers' resolution."""
    aa = [] if antialias else ["-aa", "no", "-aaVector", "no"]
    subprocess.run(["pdftoppm", "-png", "-gray", "-r", "300", *aa, "-f", "1", "-l", "1", "-singlefile", str(pdf),
                    str(stem)], check=True)
    return stem.with_suffix(".png")


def qr_text(png: Path) -> str:
    """What zbarimg reads in the image's QR code."""
    done = subprocess.run(["zbarimg", "-q", "--raw", str(png)], capture_output=True, text=True, check=True)
    return done.stdout.rstrip("\n")


def expected_qr(folder: Path, grade: str, soh_pct: float) -> str:
    """The certificate's QR content for this test."""
    return certificate.qr_payload(folder.name.split("-", 1)[1], grade, soh_pct, certificate.data_sha256(folder))


# --------------------------------------------------------------------------- the label itself


def test_report_label_writes_the_label_at_62x29_mm_with_its_qr(banc_home: Path, tmp_path: Path) -> None:
    """`report.py FOLDER --label FILE.pdf`: serial, grade alone in large type, SOH, capacity, date, bench, the QR."""
    folder = graded_folder(banc_home)
    pdf = tmp_path / "label.pdf"
    assert report.main([str(folder), "--label", str(pdf)]) == 0
    width, height = page_size_pt(pdf)
    assert (round(width, 2), round(height, 2)) == (175.75, 82.20)  # 62 x 29 mm
    text = pdf_text(pdf)
    assert re.search(r"^\s*A\s*$", text, re.M), text  # the grade stands alone, on its own line
    for part in ("RW-LABEL001", "SOH 95,0 %", "Capacité 95,00 Ah", "banc2", "04/03/2024"):
        assert part in text, (part, text)
    png = render_300dpi(pdf, tmp_path / "label")
    assert qr_text(png) == expected_qr(folder, "A", 95.0)
    ARTIFACTS.mkdir(exist_ok=True)
    Image.open(png).save(ARTIFACTS / "label_A_300dpi.png")


def test_the_label_is_black_on_white_only(banc_home: Path, tmp_path: Path) -> None:
    """Rendered at 300 dpi without anti-aliasing, every pixel is black or white: no grey for a thermal head."""
    folder = graded_folder(banc_home, capacity_ah=85.0)
    pdf = tmp_path / "label.pdf"
    label.write_label(report.load_report(folder), pdf)
    image = Image.open(render_300dpi(pdf, tmp_path / "mono", antialias=False)).convert("L")
    assert abs(image.size[0] - 732) <= 1 and abs(image.size[1] - 342) <= 1  # 62 x 29 mm at 300 dpi
    colours = {value for _count, value in image.getcolors(maxcolors=256) or []}
    assert colours == {0, 255}, colours


@pytest.mark.parametrize("serial, capacity_ah, grade", [
    ("RW-REJ00001", 50.0, "REJET"), ("RW-" + "L" * 32, 95.0, "A"),
])
def test_every_label_keeps_inside_its_page_and_its_qr_reads(
    banc_home: Path, tmp_path: Path, serial: str, capacity_ah: float, grade: str,
) -> None:
    """A long grade and the longest serial shrink to fit: pdftotext finds them whole, the QR still reads."""
    folder = graded_folder(banc_home, serial=serial, capacity_ah=capacity_ah)
    pdf = tmp_path / "label.pdf"
    label.write_label(report.load_report(folder), pdf)
    text = pdf_text(pdf)
    assert serial in text and re.search(rf"^\s*{grade}\s*$", text, re.M), text
    soh = json.loads((folder / "config.json").read_text(encoding="utf-8"))["verdict"]["soh_pct"]
    assert qr_text(render_300dpi(pdf, tmp_path / "p")) == expected_qr(folder, grade, soh)
    # Nothing drawn outside the page: pdftotext's bounding boxes stay inside it.
    boxes = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    width, height = page_size_pt(pdf)
    for x_min, y_min, x_max, y_max in re.findall(
            r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)"', boxes):
        assert float(x_min) >= 0 and float(x_max) <= width and float(y_min) >= 0 and float(y_max) <= height


def test_banc_label_size_mm_sets_the_page(banc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BANC_LABEL_SIZE_MM=62x100 (a portrait label): the page is that size and the QR still reads."""
    folder = graded_folder(banc_home)
    monkeypatch.setenv("BANC_LABEL_SIZE_MM", "62x100")
    environment.reload_settings()
    pdf = tmp_path / "label.pdf"
    assert report.main([str(folder), "--label", str(pdf)]) == 0
    width, height = page_size_pt(pdf)
    assert (round(width, 1), round(height, 1)) == (175.7, 283.5)
    assert qr_text(render_300dpi(pdf, tmp_path / "p")) == expected_qr(folder, "A", 95.0)


def test_report_label_of_an_unfinished_test_exits_2_and_writes_nothing(banc_home: Path, tmp_path: Path) -> None:
    folder = write_synthetic_test(banc_home, rows=600, finished=False).folder
    pdf = tmp_path / "label.pdf"
    assert report.main([str(folder), "--label", str(pdf)]) == 2
    assert not pdf.exists()


def test_report_label_with_an_invalid_grading_json_exits_2(banc_home: Path, tmp_path: Path) -> None:
    folder = write_synthetic_test(banc_home, rows=600).folder
    (banc_home / "grading.json").write_text("{not json", encoding="utf-8")
    pdf = tmp_path / "label.pdf"
    assert report.main([str(folder), "--label", str(pdf)]) == 2
    assert not pdf.exists()


# --------------------------------------------------------------------------- settings


def test_label_settings_defaults() -> None:
    settings = environment.load_settings({})
    assert settings.label_printer is None and settings.label_size_mm == (62.0, 29.0)


@pytest.mark.parametrize("value, expected", [
    ("62x29", (62.0, 29.0)), (" 62X100 ", (62.0, 100.0)), ("54x17", (54.0, 17.0)), ("15x15", (15.0, 15.0)),
    ("200x200", (200.0, 200.0)), ("62.5x29.25", (62.5, 29.25)), ("", (62.0, 29.0)),
])
def test_label_size_accepts(value: str, expected: tuple[float, float]) -> None:
    assert environment.load_settings({"BANC_LABEL_SIZE_MM": value}).label_size_mm == expected


@pytest.mark.parametrize("value", ["62", "62x", "x29", "62*29", "62 x 29", "14x29", "62x201", "0x0", "-62x29",
                                   "62,5x29", "nanxnan", "1e2x29", "062x29", "62x29x3", "62x29\n2"])
def test_label_size_refuses(value: str) -> None:
    with pytest.raises(environment.SettingsError, match="BANC_LABEL_SIZE_MM") as info:
        environment.load_settings({"BANC_LABEL_SIZE_MM": value})
    assert "\n" not in str(info.value)  # one line on stderr, whatever the value holds


@pytest.mark.parametrize("value, expected", [
    ("Brother_QL-800", "Brother_QL-800"), (" zebra ", "zebra"), ("", None), ("  ", None), ("QL@pi", "QL@pi"),
])
def test_label_printer_accepts(value: str, expected: str | None) -> None:
    assert environment.load_settings({"BANC_LABEL_PRINTER": value}).label_printer == expected


@pytest.mark.parametrize("value", ["-d", "two words", "a/b", "q#1", "é", "x" * 128, "q;rm"])
def test_label_printer_refuses(value: str) -> None:
    with pytest.raises(environment.SettingsError, match="BANC_LABEL_PRINTER"):
        environment.load_settings({"BANC_LABEL_PRINTER": value})


def test_an_invalid_label_setting_stops_report_py_with_exit_2(banc_home: Path, tmp_path: Path) -> None:
    env = dict(os.environ, BANC_HOME=str(banc_home), BANC_LABEL_SIZE_MM="62")
    done = subprocess.run([sys.executable, str(REPO_DIR / "report.py"), "--history", "RW-X0001"],
                          capture_output=True, text=True, env=env, cwd=REPO_DIR, timeout=60)
    assert done.returncode == 2 and "BANC_LABEL_SIZE_MM" in done.stderr and len(done.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- the retry policy (pure)


def test_retry_policy_waits_its_delays_then_gives_up_until_asked() -> None:
    now = [1000.0]
    policy = RetryPolicy(delays_s=(30.0, 120.0), clock=lambda: now[0])
    assert not policy.due()
    assert policy.failed() == 30.0
    now[0] += 29.9
    assert not policy.due()
    now[0] += 0.1
    assert policy.due()
    assert policy.failed() == 120.0 and not policy.due()
    now[0] += 120.0
    assert policy.due()
    assert policy.failed() is None and policy.gave_up and not policy.due()
    now[0] += 1e6
    assert not policy.due()  # no more automatic tries: a reprint by hand only
    policy.reset()
    assert not policy.gave_up and policy.failed() == 30.0
    policy.succeeded()
    assert not policy.due() and policy.failures == 0


# --------------------------------------------------------------------------- printing through a real CUPS


@pytest.fixture
def cups() -> Iterator[CupsServer]:
    """A private cupsd (its own socket, config, spool and logs), closed after the test."""
    server = CupsServer().start()
    yield server
    server.close()


def wait_for_pdfs(out: Path, count: int, timeout_s: float = PRINT_TIMEOUT_S) -> list[Path]:
    """The PDFs cups-pdf wrote into `out`, once there are `count` of them (complete: renamed from its spool)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(out.glob("*.pdf"))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{len(list(out.glob('*.pdf')))} PDF(s) in {out} after {timeout_s} s, expected {count}")


def check_printed(pdf: Path, folder: Path, tmp_path: Path) -> None:
    """What came out of the queue: serial and grade, 62 x 29 mm, the certificate's QR."""
    text = pdf_text(pdf)
    assert "RW-LABEL001" in text and re.search(r"^\s*A\s*$", text, re.M), text
    width, height = page_size_pt(pdf)
    # Ghostscript (cups-pdf) writes whole points: 175 x 82 for 175.75 x 82.2.
    assert abs(width - 175.75) < 1.0 and abs(height - 82.2) < 1.0, (width, height)
    assert qr_text(render_300dpi(pdf, tmp_path / f"printed-{pdf.stem}")) == expected_qr(folder, "A", 95.0)


def test_a_label_printed_arrives_in_the_queue_as_the_pdf(banc_home: Path, tmp_path: Path, cups: CupsServer) -> None:
    folder = graded_folder(banc_home)
    out = tmp_path / "out"
    queue = cups.add_pdf_queue(out)
    result = label.print_label(folder, queue, server=cups.server, timeout_s=PRINT_TIMEOUT_S)
    assert result.outcome is PrintOutcome.PRINTED, (result, cups.error_log())
    assert result.job_id and result.job_id.startswith(queue)
    (printed,) = wait_for_pdfs(out, 1)
    check_printed(printed, folder, tmp_path)


def test_cups_server_from_the_environment(banc_home: Path, tmp_path: Path, cups: CupsServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No server given: the CUPS tools find it as CUPS always does (CUPS_SERVER here)."""
    folder = graded_folder(banc_home)
    out = tmp_path / "out"
    queue = cups.add_pdf_queue(out)
    monkeypatch.setenv("CUPS_SERVER", cups.server)
    assert label.print_label(folder, queue, timeout_s=PRINT_TIMEOUT_S).printed
    wait_for_pdfs(out, 1)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.mark.parametrize("fault, outcome", [
    ("missing queue", PrintOutcome.QUEUE_MISSING),
    ("cupsd stopped", PrintOutcome.UNREACHABLE),
    ("cupsreject", PrintOutcome.REFUSED),
    ("cupsdisable", PrintOutcome.PRINTER_STOPPED),
    ("cupsd hung", PrintOutcome.UNREACHABLE),
])
def test_a_printer_that_cannot_print_says_why_in_time_and_a_reprint_works_once_back(
    banc_home: Path, tmp_path: Path, cups: CupsServer, fault: str, outcome: PrintOutcome,
) -> None:
    """Each failure is a result, never an exception, within its timeout; the folder is untouched; back, one label."""
    folder = graded_folder(banc_home)
    before = folder_files(folder)
    out = tmp_path / "out"
    queue = cups.add_pdf_queue(out)
    asked = queue + "-absent" if fault == "missing queue" else queue
    if fault == "cupsd stopped":
        cups.stop()
    elif fault == "cupsreject":
        cups.admin("cupsreject", queue)
    elif fault == "cupsdisable":
        cups.admin("cupsdisable", queue)
    elif fault == "cupsd hung":
        assert cups.proc is not None
        os.kill(cups.proc.pid, signal.SIGSTOP)
    timeout_s = 3.0
    started = time.monotonic()
    try:
        result = label.print_label(folder, asked, server=cups.server, timeout_s=timeout_s)
    finally:
        if fault == "cupsd hung" and cups.proc is not None:
            os.kill(cups.proc.pid, signal.SIGCONT)
    elapsed_s = time.monotonic() - started
    assert result.outcome is outcome, (result, cups.error_log())
    assert not result.printed and result.detail
    # Drawing the label takes its part (about 1 s here); CUPS's part never goes past the timeout.
    assert elapsed_s < timeout_s + 5.0, elapsed_s
    assert folder_files(folder) == before  # the verdict and certificate are not this module's to touch
    time.sleep(1.0)
    assert not list(out.glob("*.pdf"))

    # The printer is back: a reprint prints one label (nothing left over from the failed attempt).
    if fault == "cupsd stopped":
        cups.start()
    elif fault == "cupsreject":
        cups.admin("cupsaccept", queue)
    elif fault == "cupsdisable":
        cups.admin("cupsenable", queue)
    again = label.print_label(folder, queue, server=cups.server, timeout_s=PRINT_TIMEOUT_S)
    assert again.printed, (again, cups.error_log())
    (printed,) = wait_for_pdfs(out, 1)
    time.sleep(1.0)
    assert len(list(out.glob("*.pdf"))) == 1
    check_printed(printed, folder, tmp_path)


def test_a_label_without_a_verdict_is_not_drawn_and_nothing_raises(banc_home: Path, cups: CupsServer,
                                                                    tmp_path: Path) -> None:
    folder = write_synthetic_test(banc_home, rows=600, finished=False).folder
    queue = cups.add_pdf_queue(tmp_path / "out")
    result = label.print_label(folder, queue, server=cups.server, timeout_s=5.0)
    assert result.outcome is PrintOutcome.NOT_DRAWN and "verdict" in result.detail


def test_submit_refuses_a_missing_file_as_a_result(cups: CupsServer, tmp_path: Path) -> None:
    queue = cups.add_pdf_queue(tmp_path / "out")
    result = printing.submit(tmp_path / "absent.pdf", queue, server=cups.server, timeout_s=5.0)
    assert result.outcome is PrintOutcome.REFUSED and "absent.pdf" in result.detail
