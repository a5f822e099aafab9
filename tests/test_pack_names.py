"""One rule for pack names and paths, in every command: a bare word is an installed pack's name,
anything with a path separator (or starting with '.' or '~') is a folder. Run as a user runs it,
from a folder that holds a folder of the same name as an installed pack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, photo_folder


def run(*args, home, cwd):
    env = dict(os.environ, REPLICHECK_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def setting(tmp_path_factory, pack_photos):
    """An installed PDQ pack `mywalls` of six photos, and in the working folder a pack folder also
    called `mywalls` of six other photos, beside a plain folder `notapack`."""
    root = tmp_path_factory.mktemp("names")
    home, work = root / "home", root / "work"
    work.mkdir()
    installed_src = photo_folder(root / "installed-src", pack_photos[:6])
    local_src = photo_folder(root / "local-src", pack_photos[6:12])
    r = run("build", installed_src, "--out", home / "packs" / "mywalls", "--embedder", "pdq", home=home, cwd=work)
    assert r.returncode == 0, r.stderr
    r = run("build", local_src, "--out", "mywalls", "--embedder", "pdq", home=home, cwd=work)
    assert r.returncode == 0, r.stderr
    (work / "notapack").mkdir()
    return home, work


def _best_source(stdout: str) -> str:
    return json.loads(stdout.splitlines()[0])["best"]["source"]


def test_a_bare_name_is_the_installed_pack_even_with_a_folder_of_that_name_here(setting, pack_photos):
    home, work = setting
    r = run("check", pack_photos[0], "--pack", "mywalls", "--json", home=home, cwd=work)
    assert r.returncode == 1, r.stderr
    assert _best_source(r.stdout) == pack_photos[0].name  # found in the installed pack
    r = run("check", pack_photos[7], "--pack", "./mywalls", "--json", home=home, cwd=work)
    assert r.returncode == 1, r.stderr
    assert _best_source(r.stdout) == pack_photos[7].name  # the folder here, asked for by its path
    r = run("check", pack_photos[7], "--pack", work / "mywalls", "--json", home=home, cwd=work)
    assert r.returncode == 1 and _best_source(r.stdout) == pack_photos[7].name


def test_a_name_that_is_not_installed_says_so_and_how_to_name_the_folder(setting, pack_photos):
    home, work = setting
    r = run("check", pack_photos[0], "--pack", "notapack", home=home, cwd=work)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"pack notapack: no pack of that name is installed in {home / 'packs'}" in r.stderr
    assert "give its path: ./notapack" in r.stderr
    r = run("check", pack_photos[0], "--pack", "./nowhere", home=home, cwd=work)
    assert r.returncode == 2 and "pack ./nowhere: no such folder" in r.stderr
    r = run("check", pack_photos[0], "--pack", "./notapack", home=home, cwd=work)
    assert r.returncode == 2 and "manifest.json" in r.stderr  # a path is taken as the folder it names


def test_packs_verify_and_remove_follow_the_same_rule(setting):
    home, work = setting
    r = run("packs", "verify", "mywalls", home=home, cwd=work)
    assert r.returncode == 0 and "every file matches" in r.stdout, r.stderr
    r = run("packs", "verify", "./mywalls", home=home, cwd=work)
    assert r.returncode == 0 and "every file matches" in r.stdout, r.stderr
    r = run("packs", "verify", "notapack", home=home, cwd=work)
    assert r.returncode == 2 and "no pack of that name is installed" in r.stderr
    r = run("packs", "remove", "./mywalls", home=home, cwd=work)
    assert r.returncode == 2 and "give the name of an installed pack" in r.stderr
    assert (work / "mywalls" / "manifest.json").is_file() and (home / "packs" / "mywalls").is_dir()
