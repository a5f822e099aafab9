"""The command line, run as a user runs it (a subprocess), on real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, edits, photo_folder
from lib_replicheck.images import load_image


def run(*args, env=None, cwd=REPO):
    e = dict(os.environ, REPLICHECK_HOME=str(env)) if env else dict(os.environ)
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def photo_pack(tmp_path_factory, pack_photos):
    """A PDQ pack of 12 real photos, built through the command line, with captions from .txt files."""
    src = photo_folder(tmp_path_factory.mktemp("originals"), pack_photos[:12], "caption of {stem}")
    out = tmp_path_factory.mktemp("packs") / "originals"
    r = run("build", src, "--out", out, "--embedder", "pdq", "--license", "test-license", "--dataset", "wallpapers")
    assert r.returncode == 0, r.stderr
    assert "built pack" in r.stdout and "12 images" in r.stdout
    return out


@pytest.fixture(scope="module")
def audit_folder(tmp_path_factory, pack_photos, other_photos):
    """Edited copies of pack photos beside photos that are not in the pack."""
    d = tmp_path_factory.mktemp("audit")
    for p in pack_photos[:6]:
        variants = edits(load_image(p))
        for name in ("resized 0.5x", "JPEG q=30", "cropped 90% centre"):
            variants[name].save(d / f"copy-{p.stem}-{name.split()[0]}.jpg", quality=92)
    for p in pack_photos[12:18] + other_photos[:6]:
        load_image(p).save(d / f"novel-{p.stem}.jpg", quality=92)
    return d


def test_check_flags_the_copies_and_only_them(photo_pack, audit_folder):
    r = run("check", audit_folder, "--pack", photo_pack, "--json")
    assert r.returncode == 1, r.stderr  # 1: a copy was found
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(reports) == 30
    flagged = {os.path.basename(x["image"]) for x in reports if x["is_copy"]}
    copies = {os.path.basename(x["image"]) for x in reports if os.path.basename(x["image"]).startswith("copy-")}
    assert flagged == copies and len(copies) == 18
    for x in reports:
        if x["is_copy"]:
            stem = os.path.basename(x["image"]).split("-", 1)[1].rsplit("-", 1)[0]
            assert x["best"]["source"].startswith(stem)
            assert x["best"]["caption"] == f"caption of {stem}" and x["best"]["license"] == "test-license"
            assert x["verdict"] == "likely copy" and x["best"]["distance"] <= 31


def test_check_table_output(photo_pack, audit_folder):
    r = run("check", audit_folder, "--pack", photo_pack, "--top-k", "2")
    assert r.returncode == 1
    assert "LIKELY COPY" in r.stdout and "no copy" in r.stdout
    assert "30 image(s) checked against originals: 18 flagged (possible or above), 0 error(s)" in r.stdout


def test_check_novel_images_exit_zero(photo_pack, audit_folder):
    r = run("check", *sorted(audit_folder.glob("novel-*")), "--pack", photo_pack)
    assert r.returncode == 0, r.stdout + r.stderr


def test_threshold_override_changes_the_verdict(photo_pack, audit_folder):
    copy = sorted(audit_folder.glob("copy-*"))[0]
    r = run("check", copy, "--pack", photo_pack, "--threshold", "pdq.likely=off", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "no copy"
    r = run("check", copy, "--pack", photo_pack, "--threshold", "pdq.duplicate=40", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["verdict"] == "duplicate"
    r = run("check", copy, "--pack", photo_pack, "--threshold", "pdq.likely=-3")
    assert r.returncode == 2 and "Hamming distance" in r.stderr


def test_bad_files_are_named_and_exit_two(photo_pack, tmp_path, audit_folder):
    (tmp_path / "notes.png").write_text("not an image")
    good = sorted(audit_folder.glob("novel-*"))[0]
    r = run("check", tmp_path / "notes.png", good, tmp_path / "missing.jpg", "--pack", photo_pack)
    assert r.returncode == 2
    assert "notes.png: not an image" in r.stderr and "missing.jpg: no such file" in r.stderr
    assert "Traceback" not in r.stderr
    assert good.name in r.stdout  # the readable file was still checked


def test_broken_pack_is_one_clear_line(photo_pack, tmp_path, audit_folder):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(photo_pack, broken)
    (broken / "index.faiss").write_bytes(b"x")
    r = run("check", audit_folder, "--pack", broken)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"pack {broken}: file index.faiss is 1 bytes" in r.stderr


def test_no_pack_installed(tmp_path, audit_folder):
    r = run("check", audit_folder, env=tmp_path / "home")
    assert r.returncode == 2 and "no pack installed" in r.stderr


def test_installed_packs_are_found_by_name(photo_pack, tmp_path, audit_folder):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(photo_pack, home / "packs" / "originals")
    copy = sorted(audit_folder.glob("copy-*"))[0]
    assert run("check", copy, env=home).returncode == 1
    assert run("check", copy, "--pack", "originals", env=home).returncode == 1


def test_build_errors(tmp_path, photo_pack):
    r = run("build", tmp_path / "nothing", "--out", tmp_path / "p", "--embedder", "pdq")
    assert r.returncode == 2 and "not a folder of images" in r.stderr
    r = run("build", REPO / "lib_replicheck/demo_images/pack", "--out", photo_pack, "--embedder", "pdq")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run("build", REPO / "lib_replicheck/demo_images/pack", "--out", tmp_path / "p", "--embedder", "nope")
    assert r.returncode == 2 and "unknown embedder" in r.stderr


def test_demo_runs_offline_and_finds_the_copy():
    r = run("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LIKELY COPY" in r.stdout and "coffee.jpg" in r.stdout
    assert "the copy was flagged and the novel image passed" in r.stdout
    j = run("demo", "--json")
    reports = [json.loads(line) for line in j.stdout.splitlines()]
    assert [x["is_copy"] for x in reports] == [True, False]


def test_demo_builds_its_pack_when_the_bundled_one_is_absent(monkeypatch, tmp_path, capsys):
    from lib_replicheck.cli import demo

    monkeypatch.setattr(demo, "BUNDLED_PACK", tmp_path / "nowhere")
    assert demo.run_demo() == 0
    out = capsys.readouterr().out
    assert "Built the demo pack" in out and "the copy was flagged" in out


def test_demo_does_not_import_the_command_line():
    """demo.py and cli.py used to import each other (format_report, run_demo): the demo now runs
    with the command-line module unavailable."""
    code = ("import sys; sys.modules['lib_replicheck.cli.main'] = None\n"
            "from lib_replicheck.cli.demo import run_demo\nsys.exit(run_demo())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "the copy was flagged and the novel image passed" in r.stdout
