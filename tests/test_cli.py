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
    assert "30 images: 18 flagged (18 likely copy), 12 no copy, 0 not checked; packs searched: originals" in r.stdout


def test_check_novel_images_exit_zero(photo_pack, audit_folder):
    r = run("check", *sorted(audit_folder.glob("novel-*")), "--pack", photo_pack)
    assert r.returncode == 0, r.stdout + r.stderr


def test_threshold_override_changes_the_verdict(photo_pack, audit_folder):
    copy = sorted(audit_folder.glob("copy-*"))[0]
    r = run("check", copy, "--pack", photo_pack, "--threshold", "pdq.likely=off", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "no copy"
    r = run("check", copy, "--pack", photo_pack, "--threshold", "pdq.duplicate=31", "--json")
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


def test_verdicts_read_the_same_in_table_json_and_summary(photo_pack, audit_folder):
    """One wording everywhere: 'likely copy (best 0.94 in originals)', similarities with two decimals
    (PDQ's Hamming distance as 1 - d/256), rounded down so a score shown at a cut is at or above it."""
    import math

    r = run("check", audit_folder, "--pack", photo_pack, "--json")
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    for x in reports:
        best = math.floor(x["best"]["similarity"] * 100 + 1e-6) / 100
        assert x["summary"] == f"{x['verdict']} (best {best:.2f} in originals)"
        assert abs(x["best"]["similarity"] - (1 - x["best"]["distance"] / 256)) < 1e-6
    table = run("check", audit_folder, "--pack", photo_pack, "--top-k", "1").stdout
    for x in reports:
        head = x["verdict"].upper() if x["is_copy"] else x["verdict"]
        assert f"{os.path.basename(x['image'])}\n  {head:<14} {x['summary'][len(x['verdict']) + 1:]}" in table
    assert "d=" not in table


def _on_a_terminal(*args) -> tuple[int, str]:
    """Run the command line with its stderr on a pseudo-terminal; its exit status and what it wrote there."""
    import pty
    import threading

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 columns wide
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    p = subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=slave, timeout=600)
    os.close(slave)
    reader.join(10)
    os.close(master)
    return p.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_quiet_otherwise(photo_pack, audit_folder):
    code, tty = _on_a_terminal("check", audit_folder, "--pack", photo_pack)
    assert code == 1 and "30/30" in tty and "image/s" in tty  # count, rate; time left while it runs
    code, tty = _on_a_terminal("check", audit_folder, "--pack", photo_pack, "--json")
    assert code == 1 and "image/s" not in tty and "30/30" not in tty  # JSON: quiet even on a terminal
    r = run("check", audit_folder, "--pack", photo_pack)  # stderr is a pipe: quiet
    assert r.returncode == 1 and "image/s" not in r.stderr and "%|" not in r.stderr
    r = run("check", audit_folder, "--pack", photo_pack, "--progress", "on", "--json")
    assert "30/30" in r.stderr and all(json.loads(line) for line in r.stdout.splitlines())  # stdout stays JSON


def test_build_shows_progress(tmp_path, pack_photos):
    src = photo_folder(tmp_path / "src", pack_photos[:6])
    r = run("build", src, "--out", tmp_path / "p", "--embedder", "pdq", "--progress", "on")
    assert r.returncode == 0, r.stderr
    assert "embedding" in r.stderr and "6/6" in r.stderr and "image/s" in r.stderr
    r = run("build", src, "--out", tmp_path / "q", "--embedder", "pdq")
    assert r.returncode == 0 and "image/s]" not in r.stderr and "6/6" not in r.stderr


def test_report_and_csv_are_written_atomically_and_checked_first(photo_pack, audit_folder, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("<!doctype html><html><head><title>Replicheck report</title></head></html>")  # an older report
    r = run("check", audit_folder, "--pack", photo_pack, "--report", out, "--csv", tmp_path / "rows.csv")
    assert r.returncode == 1, r.stderr
    text = out.read_text()
    assert text.startswith("<!doctype html>") and text.count('class="row"') == 18
    assert f"wrote {out}" in r.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "rows.csv"]
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 31
    r = run("check", audit_folder, "--pack", photo_pack, "--report", tmp_path / "no" / "such" / "r.html")
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stdout == ""  # refused before checking
    r = run("check", audit_folder, "--pack", photo_pack, "--csv", tmp_path)
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_build_reports_progress_batch_by_batch(tmp_path, pack_photos):
    """The bar moves after each batch (and for shards kept from an earlier run), not once per shard."""
    from lib_replicheck.builder.options import BuildOptions
    from lib_replicheck.builder.pipeline import build

    src = photo_folder(tmp_path / "src", pack_photos[:5])
    calls = []
    build(src, tmp_path / "p", BuildOptions(embedder="pdq", batch=2, shard_size=4, progress=calls.append),
          log=lambda s: None)
    assert calls == [2, 2, 1]  # shard 0: two batches of 2; shard 1: one image
    kept = []
    build(src, tmp_path / "q", BuildOptions(embedder="pdq", batch=2, shard_size=4, progress=kept.append),
          work=tmp_path / "work", keep_work=True, log=lambda s: None)
    again = []
    build(src, tmp_path / "r", BuildOptions(embedder="pdq", batch=2, shard_size=4, progress=again.append),
          work=tmp_path / "work", log=lambda s: None)
    assert sum(kept) == sum(again) == 5 and again == [4, 1]  # both shards kept from the first run


def _folder_with_unreadable_files(tmp_path, audit_folder):
    """One copy, two novel photos, two files that are no image."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(audit_folder.glob("copy-*"))[:1] + sorted(audit_folder.glob("novel-*"))[:2]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (folder / "notes.jpg").write_text("not an image")
    return folder


def test_unreadable_files_are_not_checked_in_every_output(photo_pack, audit_folder, tmp_path):
    """One verdict for a file that cannot be read, 'not checked', in the text, the JSON, the CSV and
    the HTML report; and one count line, the same in the terminal, under --json and in the report."""
    import csv
    import html

    folder = _folder_with_unreadable_files(tmp_path, audit_folder)
    counts = "5 images: 1 flagged (1 likely copy), 2 no copy, 2 not checked (2 errors)"
    r = run("check", folder, "--pack", photo_pack, "--report", tmp_path / "r.html", "--csv", tmp_path / "r.csv")
    assert r.returncode == 2, r.stderr
    assert f"{counts}; packs searched: originals" in r.stdout
    assert f"{folder / 'broken.png'}\n  not checked    (error)" in r.stdout and "notes.jpg: not an image" in r.stderr
    j = run("check", folder, "--pack", photo_pack, "--json")
    reports = {os.path.basename(x["image"]): x for x in map(json.loads, j.stdout.splitlines())}
    for name in ("broken.png", "notes.jpg"):
        x = reports[name]
        assert (x["verdict"], x["summary"], x["is_copy"]) == ("not checked", "not checked (error)", False), x
    assert {x["verdict"] for n, x in reports.items() if n.startswith("novel-")} == {"no copy"}
    assert f"{counts}; packs searched: originals" in j.stderr  # stdout stays one report per line
    rows = {os.path.basename(x["image"]): x for x in csv.DictReader(io_text(tmp_path / "r.csv"))}
    assert rows["broken.png"]["verdict"] == rows["notes.jpg"]["verdict"] == "not checked"
    assert rows["broken.png"]["summary"] == "not checked (error)"
    page = (tmp_path / "r.html").read_text()
    assert f'<p id="count-line">{html.escape(counts)}</p>' in page
    assert '<b>2</b><span class="badge t-error">not checked</span>' in page and "unreadable<" not in page


def io_text(path):
    import io

    return io.StringIO(path.read_text())


def test_tiers_out_of_order_are_refused(photo_pack, audit_folder):
    """A tier below the one under it is an error naming both, before any image is checked; lowering
    both together is fine."""
    copy = sorted(audit_folder.glob("copy-*"))[0]
    for overrides, words in ((["sscd.likely=0.1"], "threshold sscd.likely=0.1 is below sscd.possible=0.5"),
                             (["sscd.possible=0.8"], "threshold sscd.likely=0.75 is below sscd.possible=0.8"),
                             (["pdq.duplicate=40"], "threshold pdq.duplicate=40 is above pdq.likely=31")):
        r = run("check", copy, "--pack", photo_pack, *[a for o in overrides for a in ("--threshold", o)])
        assert r.returncode == 2 and words in r.stderr and r.stdout == "", (overrides, r.stderr)
        assert "Traceback" not in r.stderr
    r = run("check", copy, "--pack", photo_pack, "--threshold", "sscd.likely=0.4", "--threshold", "sscd.possible=0.3")
    assert r.returncode == 1, r.stderr


def test_a_damaged_pack_is_skipped_and_listed_as_damaged(photo_pack, audit_folder, tmp_path):
    """A pack missing one thumbnail is skipped with one line naming it and the file; the other packs
    are still searched and their results printed (exit status 2: an error happened); `packs list`
    shows the damage."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(REPO / "registry" / "demo", home / "packs" / "demo")
    damaged = home / "packs" / "originals"
    shutil.copytree(photo_pack, damaged)
    thumb = sorted((damaged / "thumbnails").iterdir())[0]
    thumb.unlink()
    copy = sorted(audit_folder.glob("copy-*"))[0]
    coffee = REPO / "lib_replicheck" / "demo_images" / "pack" / "coffee.jpg"
    r = run("check", copy, coffee, env=home)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"replicheck: error: pack {damaged}: file thumbnails/{thumb.name} listed in the manifest is missing; "
            "skipped, the other packs are searched") in r.stderr
    assert f"{coffee}\n  LIKELY COPY    (best 1.00 in demo)" in r.stdout
    assert "packs searched: demo; 1 damaged pack(s) skipped" in r.stdout
    listed = run("packs", "list", env=home)
    line = next(x for x in listed.stdout.splitlines() if x.startswith("originals"))
    assert f"ERROR: damaged: file thumbnails/{thumb.name} listed in the manifest is missing" in line
    assert "ERROR" not in next(x for x in listed.stdout.splitlines() if x.startswith("demo"))


def test_outputs_never_replace_what_is_not_a_report(photo_pack, audit_folder, tmp_path):
    """--report and --csv refuse, before any image is checked, a file that is not a replicheck report
    (an image being checked, the user's notes) unless --force, and one file named twice; our own
    report and CSV are replaced."""
    import shutil

    image = tmp_path / "keep.jpg"
    shutil.copy(sorted(audit_folder.glob("copy-*"))[0], image)
    before = image.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    refused = (([image, "--report", image], f"--report {image}: the file exists and is not a replicheck report"),
               ([image, "--csv", notes], f"--csv {notes}: the file exists and is not a replicheck report"),
               ([image, "--report", tmp_path / "r.out", "--csv", tmp_path / "r.out"],
                f"--report and --csv both name {tmp_path / 'r.out'}"))
    for args, words in refused:
        r = run("check", *args, "--pack", photo_pack)
        assert r.returncode == 2 and words in r.stderr and r.stdout == "", r.stderr
    assert image.read_bytes() == before and notes.read_text() == "my notes" and not (tmp_path / "r.out").exists()
    for _ in range(2):  # the second run replaces the first run's files
        r = run("check", image, "--pack", photo_pack, "--report", tmp_path / "r.html", "--csv", tmp_path / "r.csv")
        assert r.returncode == 1, r.stderr
    r = run("check", image, "--pack", photo_pack, "--csv", notes, "--force")
    assert r.returncode == 1 and notes.read_text().startswith("image,verdict,summary")


def test_flagged_only_lists_only_the_flagged_images(photo_pack, audit_folder):
    r = run("check", audit_folder, "--pack", photo_pack, "--flagged-only")
    assert r.returncode == 1
    listed = [x for x in r.stdout.splitlines() if x.startswith(str(audit_folder))]
    assert len(listed) == 18 and all(os.path.basename(x).startswith("copy-") for x in listed)
    assert "30 images: 18 flagged (18 likely copy), 12 no copy, 0 not checked" in r.stdout
    j = run("check", audit_folder, "--pack", photo_pack, "--flagged-only", "--json")
    assert [json.loads(x)["verdict"] for x in j.stdout.splitlines()] == ["likely copy"] * 18
    r = run("check", audit_folder, "--pack", photo_pack, "--flagged-only", "--fail-on", "duplicate")
    assert r.returncode == 0 and str(audit_folder) not in r.stdout and "30 images: 18 flagged" in r.stdout


def test_help_explains_every_argument_and_the_exit_status():
    r = run("check", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "IMAGE_OR_DIR images, or folders searched for images" in text
    for line in ("0 no copy found", "1 a copy found: an image at or above --fail-on", "2 an error:", "130 interrupted"):
        assert line in text, line
    d = " ".join(run("demo", "--help").stdout.split())
    assert "--json print the two reports as JSON lines" in d


def test_flagged_counts_the_same_in_exit_status_report_panel_and_gate(photo_pack, audit_folder, tmp_path):
    """One rule of what is flagged (Report.flagged), at each --fail-on tier: the exit status, the count
    line, --flagged-only, the folder report's counts, the panel's and the ComfyUI Gate's, on the
    reports of the same real photos (18 edited copies, PDQ 'likely copy', and 12 novel photos)."""
    from lib_replicheck.audit import count
    from lib_replicheck.comfyui.nodes import flagged_at
    from lib_replicheck.report import is_flagged, verdict_from_word
    from lib_replicheck.thresholds import Verdict
    from lib_replicheck.webui.panel import render

    r = run("check", audit_folder, "--pack", photo_pack, "--json", "--report", tmp_path / "r.html")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 30
    report_page = (tmp_path / "r.html").read_text()
    for tier, at in (("possible", Verdict.POSSIBLE), ("likely", Verdict.LIKELY), ("duplicate", Verdict.DUPLICATE)):
        n = sum(is_flagged(verdict_from_word(x["verdict"]), at, x["from_input"]) for x in lines)
        assert n == (0 if tier == "duplicate" else 18), tier
        t = run("check", audit_folder, "--pack", photo_pack, "--fail-on", tier, "--flagged-only")
        assert t.returncode == (1 if n else 0), (tier, t.stderr)
        assert len([x for x in t.stdout.splitlines() if x.startswith(str(audit_folder))]) == n, tier
        if at is not Verdict.POSSIBLE:
            assert f"; {n} at or above {at.value} (--fail-on {tier})" in t.stdout, t.stdout
        gate = flagged_at(json.dumps({"images": lines}), at.value, len(lines))
        assert sum(gate) == n and gate == [is_flagged(verdict_from_word(x["verdict"]), at) for x in lines], tier
    # at the lowest tier: the report's count line and its flagged section, and the panel's count
    assert "30 images: 18 flagged (18 likely copy), 12 no copy, 0 not checked" in r.stdout + r.stderr
    assert "Flagged images, most similar first (18)" in report_page
    from lib_replicheck.checker import Checker
    from lib_replicheck.packs.pack import Pack

    files = sorted(audit_folder.iterdir())
    reports = list(Checker([Pack(photo_pack)]).check_files(files))
    assert [x.flagged() for x in reports] == [is_flagged(verdict_from_word(x["verdict"]), Verdict.POSSIBLE)
                                              for x in sorted(lines, key=lambda x: x["image"])]
    assert count(reports).flagged == 18 and 'data-flagged="18"' in render(reports)
