"""The command line against hostile packs, registries and failures, run as a user runs it.

- text from packs and registries reaches the terminal with its escape sequences escaped, not
  interpreted, and cut to its column;
- anything that goes wrong is one line on stderr and exit status 2, never a traceback and never
  1 (which `check` uses for "copy found"); --debug shows the traceback;
- the `packs` commands work without FastAPI (the README's install line does not bring it).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from httpfaults import FaultServer

DEMO = REPO / "registry" / "demo"
ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31m"  # retitle the terminal, clear it, turn red
C1 = "\u009b31m\u202e"  # 8-bit CSI and a right-to-left override
RAW = ("\x1b", "\x07", "\u009b", "\u202e")


def run(*args, env=None, timeout=300, preexec=None, prefix=()):
    e = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    return subprocess.run([sys.executable, *prefix, *(["-m", "lib_replicheck"] if not prefix else []),
                           *map(str, args)], cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def no_raw_escapes(text: str) -> None:
    for ch in RAW:
        assert ch not in text, f"{ch!r} reached the terminal: {text[:500]!r}"


def one_error_line(r, *, contains: str = "") -> str:
    """The command failed as it should: exit 2, one line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("replicheck: error: "), r.stderr[-3000:]
    assert contains in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def escape_pack(tmp_path_factory):
    """A PDQ pack of the demo photos whose URLs, sources and captions carry terminal escapes."""
    from lib_replicheck import embedders
    from lib_replicheck.cli.demo import DEMO_DIR
    from lib_replicheck.images import load_image
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.builder.sources import SourceItem

    photos = sorted((DEMO_DIR / "pack").glob("*.jpg"))
    records = [SourceItem(key=f"{ESC}{p.name}", load=lambda p=p: load_image(p), url=f"http://x.test/{ESC}{C1}{p.name}",
                          caption=f"{ESC}caption {C1}", license=f"{ESC}CC0")
               for p in photos]
    out = tmp_path_factory.mktemp("packs") / "hostile"
    build_from_items(records, embedders.load("pdq"), out, name="hostile", log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def copy_image(tmp_path_factory):
    from lib_replicheck.cli.demo import DEMO_DIR, edited_copy

    path = tmp_path_factory.mktemp("img") / "copy.jpg"
    edited_copy(DEMO_DIR / "pack" / "coffee.jpg").save(path)
    return path


# -- terminal escapes ---------------------------------------------------------------------------------------

def test_check_output_escapes_what_the_pack_says(escape_pack, copy_image):
    r = run("check", copy_image, "--pack", escape_pack)
    assert r.returncode == 1, r.stderr  # the copy is found...
    no_raw_escapes(r.stdout + r.stderr)  # ...and the pack's URLs do not drive the terminal
    assert "http://x.test/\\x1b]0;owned\\x07" in r.stdout
    j = run("check", copy_image, "--pack", escape_pack, "--json")
    assert j.returncode == 1
    no_raw_escapes(j.stdout)
    report = json.loads(j.stdout)
    assert report["best"]["url"] == f"http://x.test/{ESC}{C1}coffee.jpg"  # the value itself is kept


def test_file_names_with_escapes(escape_pack, copy_image, tmp_path):
    named = tmp_path / f"{ESC}{C1}.jpg"
    shutil.copy(copy_image, named)
    bad = tmp_path / f"{ESC}bad.png"
    bad.write_bytes(b"not an image")
    r = run("check", named, bad, "--pack", escape_pack)
    assert r.returncode == 2
    no_raw_escapes(r.stdout + r.stderr)


def test_packs_list_cleans_and_cuts_the_manifest_text(tmp_path):
    packs = tmp_path / "packs"
    shutil.copytree(DEMO, packs / "demo")
    m = json.loads((packs / "demo" / "manifest.json").read_text())
    m["source"] = {"license": ESC + C1 + "L" * 1_000_000}
    m["title"] = ESC + "title"
    (packs / "demo" / "manifest.json").write_text(json.dumps(m))
    r = run("packs", "list", "--packs-dir", packs)
    assert r.returncode == 0, r.stderr
    no_raw_escapes(r.stdout)
    assert r.stdout.startswith("demo ") and max(len(x) for x in r.stdout.splitlines()) < 300
    j = run("packs", "list", "--packs-dir", packs, "--json")
    no_raw_escapes(j.stdout)
    row = json.loads(j.stdout)[0]
    assert row["title"] == "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mtitle" and len(row["source"]["license"]) <= 500


def test_packs_available_cleans_registry_text_and_urls(server, tmp_path):
    data = json.loads((REPO / "registry" / "packs.json").read_text())
    pack = data["packs"][0]
    pack["source"] = {"license": ESC + "L" * 100_000}
    pack["embedder"]["id"] = ESC + "pdq"
    pack["title"] = ESC + C1
    good = server.add("/r/packs.json", json.dumps(data).encode())
    missing = server.url + "/" + ESC + "missing.json"
    r = run("packs", "available", "--registry", good, "--registry", missing, "--packs-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    no_raw_escapes(r.stdout + r.stderr)
    assert r.stdout.startswith("demo ") and max(len(x) for x in r.stdout.splitlines()) < 300
    assert "HTTP 404" in r.stderr and "\\x1b" in r.stderr
    j = run("packs", "available", "--registry", good, "--packs-dir", tmp_path, "--json")
    no_raw_escapes(j.stdout)


# -- one error boundary ----------------------------------------------------------------------------------

BOOM = ("import sys, lib_replicheck.packs as P\n"
        "def boom(*a, **k):\n    raise RuntimeError('boom \\x1b[2J')\n"
        "P.installed = boom\n"
        "from lib_replicheck.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def test_unexpected_errors_are_one_line_and_exit_two(tmp_path):
    r = run("packs", "list", "--packs-dir", tmp_path, prefix=("-c", BOOM))
    line = one_error_line(r, contains="unexpected RuntimeError: boom")
    assert "--debug" in line
    no_raw_escapes(r.stderr)
    for debug in (dict(args=("--debug", "packs", "list")), dict(args=("packs", "list", "--debug")),
                  dict(args=("packs", "list"), env={"REPLICHECK_DEBUG": "1"})):
        r = run(*debug["args"], "--packs-dir", tmp_path, prefix=("-c", BOOM), env=debug.get("env"))
        assert r.returncode == 2 and "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr, debug


def _hostile_pack(tmp_path: Path, how: str) -> Path:
    pack = tmp_path / how
    shutil.copytree(DEMO, pack)
    mpath = pack / "manifest.json"
    m = json.loads(mpath.read_text())
    if how == "index-file-dict":
        m["index"]["file"] = {"path": "index.faiss"}
    elif how == "nested-json":
        mpath.write_text("[" * 100_000 + "]" * 100_000)
        return pack
    elif how == "metadata-types":
        with sqlite3.connect(pack / "metadata.sqlite") as db:
            db.execute("UPDATE items SET width = 'wide', height = x'00ff', url = 12345, caption = 1.5")
        size = (pack / "metadata.sqlite").stat().st_size
        for f in m["files"]:
            if f["path"] == "metadata.sqlite":
                f["size"] = size
                from lib_replicheck.embedders.weights import sha256_file

                f["sha256"] = sha256_file(pack / "metadata.sqlite")
    mpath.write_text(json.dumps(m))
    return pack


@pytest.mark.parametrize("how", ["index-file-dict", "nested-json", "metadata-types"])
def test_hostile_packs_never_exit_one(tmp_path, copy_image, how):
    """`check` exits 1 only for a copy: a pack that breaks the check is exit 2 and one line."""
    pack = _hostile_pack(tmp_path, how)
    r = run("check", copy_image, "--pack", pack, "--json")
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-3000:])
    assert [x for x in r.stderr.splitlines() if x.strip()][-1].startswith("replicheck: error: ")
    packs = tmp_path / "packs"
    shutil.copytree(pack, packs / "broken")
    listing = run("packs", "list", "--packs-dir", packs)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr[-3000:]
    if how != "metadata-types":  # the manifest is what a listing reads
        assert "ERROR" in listing.stdout


def test_bad_archive_from_the_command_line(tmp_path):
    import zipfile

    archive = tmp_path / "demo.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(DEMO.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(DEMO).as_posix())
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"SQLite format 3")
    raw[at + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    r = run("packs", "install", archive, "--packs-dir", tmp_path / "packs")
    one_error_line(r, contains="CRC")


def test_full_disk_is_one_line(tmp_path):
    """Files cannot grow past 10 KB (RLIMIT_FSIZE: writes fail as on a full disk): installing the
    demo pack (an 18 KB thumbnail) fails with one line, and leaves nothing behind."""
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    packs = tmp_path / "packs"
    r = run("packs", "install", DEMO, "--packs-dir", packs, preexec=small_files)
    line = one_error_line(r)
    assert "File too large" in line or "size limit" in line, line
    assert sorted(p.name for p in packs.iterdir() if not p.name.endswith(".lock")) == []


# -- without FastAPI ---------------------------------------------------------------------------------------

def test_packs_commands_work_without_fastapi(server, tmp_path):
    """The README's install line brings no FastAPI: every `packs` command must work without it."""
    fake = tmp_path / "nofastapi" / "fastapi"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('fastapi is not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])}
    assert run(prefix=("-c", "import fastapi"), env=env).returncode == 1  # the stand-in works
    packs = tmp_path / "packs"
    r = run("packs", "install", DEMO, "--packs-dir", packs, env=env)
    assert r.returncode == 0, r.stderr
    r = run("packs", "list", "--packs-dir", packs, env=env)
    assert r.returncode == 0 and r.stdout.startswith("demo ") and "pdq" in r.stdout, r.stderr
    r = run("packs", "list", "--packs-dir", packs, "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["name"] == "demo", r.stderr
    data = json.loads((REPO / "registry" / "packs.json").read_text())
    url = server.add("/r/packs.json", json.dumps(data).encode())
    r = run("packs", "available", "--registry", url, "--packs-dir", packs, env=env)
    assert r.returncode == 0 and "installed" in r.stdout, r.stderr
    r = run("packs", "verify", "demo", "--packs-dir", packs, env=env)
    assert r.returncode == 0, r.stderr
    r = run("packs", "remove", "demo", "--packs-dir", packs, env=env)
    assert r.returncode == 0, r.stderr
