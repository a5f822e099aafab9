"""File names that are not UTF-8 (`caf\\xe9.jpg`, written by a Latin-1 system or a camera): Python
keeps their bytes as lone surrogates, which no UTF-8 file can hold. A report must still be written,
whole, with the name shown as its bytes (`caf\\xe9.jpg`), from the command line and from the tab."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

DEMO = REPO / "registry" / "demo"
LATIN1 = b"caf\xe9.jpg"  # 'café.jpg' in Latin-1: not UTF-8


@pytest.fixture
def folder(tmp_path):
    """A copy of a demo photo under a Latin-1 name, and a novel photo under a plain one."""
    from lib_replicheck.cli.demo import DEMO_DIR

    d = tmp_path / "outputs"
    d.mkdir()
    shutil.copy(DEMO_DIR / "pack" / "coffee.jpg", os.fsdecode(os.fsencode(d) + b"/" + LATIN1))
    shutil.copy(DEMO_DIR / "novel" / "hubble_deep_field.jpg", d / "space.jpg")
    assert LATIN1 in os.listdir(os.fsencode(d))
    return d


def test_report_and_csv_are_written_for_a_name_that_is_not_utf8(folder, tmp_path):
    report, rows = tmp_path / "r.html", tmp_path / "r.csv"
    report.write_text("<!doctype html><html><head><title>Replicheck report</title></head><body>stale</body></html>")
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "check", str(folder), "--pack", str(DEMO),
                        "--report", str(report), "--csv", str(rows)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1, r.stderr  # the copy is found; nothing failed
    assert "Traceback" not in r.stderr and "UnicodeEncodeError" not in r.stderr
    assert f"{folder}/caf\\xe9.jpg\n  LIKELY COPY" in r.stdout
    page = report.read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert "stale" not in page and "caf\\xe9.jpg" in page and page.count('class="row"') == 1
    table = list(csv.DictReader(io.StringIO(rows.read_bytes().decode("utf-8"))))
    assert [(os.path.basename(x["image"]), x["verdict"]) for x in table] == \
        [("caf\\xe9.jpg", "likely copy"), ("space.jpg", "no copy")]


def test_the_tabs_folder_check_writes_its_report(folder, tmp_path):
    from lib_replicheck.webui.audits import AuditJobs, ServiceChecker
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings
    from lib_replicheck.webui.tab import PacksTab

    home = tmp_path / "home"
    shutil.copytree(DEMO, home / "packs" / "demo")
    service = CheckService(home / "packs", home)
    audits = AuditJobs(home / "reports", lambda: ServiceChecker(service, Settings()))
    steps = list(PacksTab(None, None, service, audits=audits).check_folder(str(folder)))
    assert "data-state='done'" in steps[-1], steps[-1]
    job = next(iter(audits.jobs.values()))
    page = job.report.read_bytes().decode("utf-8")
    assert "caf\\xe9.jpg" in page and "2 images: 1 flagged (1 likely copy), 1 no copy, 0 not checked" in page
