"""The installable package: a wheel built from pyproject.toml, installed into a fresh virtual
environment, gives a `replicheck` command that runs from any folder, with the demo pack, the demo
photos, the shipped registry and the prompt list inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

#: What the package is built from: the files pyproject.toml reads, nothing else of the clone.
SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "requirements-builder.txt", "lib_replicheck", "registry")


def _quiet_env() -> dict:
    """The environment of a user's shell: no PYTHONPATH that could reach the clone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd, cwd, timeout=300):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_quiet_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the sources (the clone is left as it was)."""
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "shipped_registry"))
        else:
            shutil.copy2(p, src / name)
    # the build backend of this Python (no download): pip's isolated build would fetch setuptools
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", src], root)
    (found,) = (root / "dist").glob("replicheck-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; its dependencies come from this
    Python's site-packages, which it sees (the packages of requirements.txt)."""
    env = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", env], env.parent)
    _run([env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel], env.parent)
    return env


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "lib_replicheck").rglob("*.py")
               if "shipped_registry" not in p.parts}
    assert modules - names == set()
    shipped = {"lib_replicheck/shipped_registry/" + p.relative_to(REPO / "registry").as_posix()
               for p in (REPO / "registry").rglob("*") if p.is_file()}
    data = {p.relative_to(REPO).as_posix() for d in ("data", "demo_images")
            for p in (REPO / "lib_replicheck" / d).rglob("*") if p.is_file()}
    assert "lib_replicheck/shipped_registry/packs.json" in shipped and "lib_replicheck/demo_images/pack/coffee.jpg" in data
    assert (shipped | data) - names == set()
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    for line in REPO.joinpath("requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert f"Requires-Dist: {line.split('#')[0].strip()}" in text
    builder = [x.split("#")[0].strip() for x in REPO.joinpath("requirements-builder.txt").read_text().splitlines()
               if x.strip() and not x.startswith("#")]
    assert builder and all(f'Requires-Dist: {b}; extra == "builder"' in text for b in builder)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "replicheck = lib_replicheck.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_installed_command_runs_the_demo_from_any_folder(venv, tmp_path):
    work = tmp_path / "somewhere"
    work.mkdir()
    replicheck = venv / "bin" / "replicheck"
    r = _run([replicheck, "demo"], work)
    assert "Demo result: the copy was flagged and the novel image passed." in r.stdout
    # the demo pack read is the one inside the installed package, verified
    assert f"{venv}/lib/" in r.stdout and "shipped_registry/demo: 4 photos" in r.stdout
    r = _run([replicheck, "--help"], work)
    assert r.stdout.startswith("usage: replicheck ")
    where = _run([venv / "bin" / "python", "-c", "import lib_replicheck; print(lib_replicheck.__file__)"], work)
    assert where.stdout.startswith(str(venv))


def test_the_installed_command_lists_and_installs_the_shipped_registry(venv, tmp_path):
    home = tmp_path / "home"
    env_args = ["--packs-dir", home / "packs"]
    replicheck = venv / "bin" / "replicheck"
    r = _run([replicheck, "packs", "available", *env_args], tmp_path)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert names[:2] == ["demo", "sd1-memorized"]
    _run([replicheck, "packs", "get", "demo", *env_args], tmp_path)
    r = subprocess.run([replicheck, "check", REPO / "lib_replicheck" / "demo_images" / "pack" / "coffee.jpg",
                        *env_args], cwd=tmp_path, env=_quiet_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "LIKELY COPY    (best 1.00 in demo)" in r.stdout, r.stdout + r.stderr


def test_the_readme_try_it_commands_do_what_they_say(tmp_path):
    """Each `python -m lib_replicheck ...` line of the README's Try it section and of the start of its
    Command line section runs, from the clone, with the exit status its comment gives (0 where it
    gives none): the photo paths it names exist."""
    import re
    import shlex

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    section += text.split("\n## Command line", 1)[1].split("\n### ", 1)[0].split("# check images or folders", 1)[0]
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", section, re.S) for ln in block.splitlines()
             if ln.startswith("python -m lib_replicheck ")]
    assert any("demo_images/pack/coffee.jpg" in ln for ln in lines) and any(" demo" in ln for ln in lines)
    env = dict(_quiet_env(), REPLICHECK_HOME=str(tmp_path / "home"))
    for line in lines:
        command, _, comment = line.partition("#")
        expect = int(m.group(1)) if (m := re.search(r"exit (\d)", comment)) else 0
        r = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == expect, f"{line}: {r.stdout[-1000:]}{r.stderr[-1000:]}"
