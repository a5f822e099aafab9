"""install.py against the web UI's launch helpers.

First with tests/webui/launch.py, which records the pip commands; then with the real bodies of
AUTOMATIC1111's and SD.Next's helpers (tests/webui/pip_launch) running real pip in a fresh virtual
environment, offline, against a local package index of small wheels that declare the same
dependencies as the real ones (onnxruntime 1.27 and later require protobuf >= 4.25.8; the web UI
pins protobuf 3.20.0).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture
def launch(monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "webui"))
    import launch as fake

    sys.path.pop(0)
    monkeypatch.setitem(sys.modules, "launch", fake)
    fake.pip_calls.clear()
    fake.fail_on.clear()
    fake.present.clear()
    fake.args.skip_install = False
    return fake


def run_install(capsys) -> tuple[int, list[str]]:
    try:
        runpy.run_path(str(REPO / "install.py"), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().out.strip().splitlines()


def test_everything_present_installs_nothing(launch, capsys):
    assert run_install(capsys) == (0, ["replicheck: requirements present"])
    assert launch.pip_calls == []


def test_missing_and_old_packages_are_installed_keeping_the_web_uis_pins(launch, capsys, monkeypatch):
    launch.present["onnxruntime"] = False
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.7.4" if d == "faiss-cpu" else real(d))
    pins = []

    def run_pip(command, desc=None, live=False):
        launch.pip_calls.append((command, desc))
        pins.append(Path(command.split('-c "')[1].rstrip('"')).read_text())

    monkeypatch.setattr(launch, "run_pip", run_pip)
    code, out = run_install(capsys)
    assert [c.split(" -c ")[0] for c, _ in launch.pip_calls] == ['install "faiss-cpu>=1.8.0"',
                                                                 'install "onnxruntime>=1.16.0"']
    assert code == 0 and len(out) == 1 and out[0].startswith("replicheck: installed faiss-cpu ")
    assert f"onnxruntime {real('onnxruntime')}" in out[0]
    assert not any("torch" in c.split(" -c ")[0] for c, _ in launch.pip_calls)
    lines = pins[0].split()
    assert f"numpy=={real('numpy')}" in lines and f"protobuf=={real('protobuf')}" in lines
    assert not any(ln.startswith(("faiss-cpu==", "onnxruntime==")) for ln in lines)  # what is installed is free
    assert not any(Path(c.split('-c "')[1].rstrip('"')).exists() for c, _ in launch.pip_calls)  # removed


def test_faiss_older_than_packs_are_tested_with_is_upgraded(launch, capsys, monkeypatch):
    """requirements.txt says faiss-cpu>=1.8: 1.7.4 is not accepted any more, 1.8.0 is."""
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.7.4" if d == "faiss-cpu" else real(d))
    run_install(capsys)
    assert [c.split(" -c ")[0] for c, _ in launch.pip_calls] == ['install "faiss-cpu>=1.8.0"']
    launch.pip_calls.clear()
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.8.0" if d == "faiss-cpu" else real(d))
    assert run_install(capsys) == (0, ["replicheck: requirements present"])


def test_pdqhash_without_compiler_disables_only_pdq(launch, capsys, monkeypatch):
    launch.present["pdqhash"] = False
    launch.fail_on.add("pdqhash")
    monkeypatch.setenv("PYTHONPATH", str(_hiding_module("pdqhash")))
    code, out = run_install(capsys)
    assert len(out) == 1 and "pdqhash>=0.2.2 is not installed (Couldn't install" in out[0]
    assert out[0].endswith("the pdq embedder is disabled, sscd and clip work")
    assert code == 0  # optional: the web UI gets no error


def test_a_required_failure_is_reported_with_the_command(launch, capsys, monkeypatch):
    """pip fails and the package does not import: the line says which, why, and what to run; exit 1."""
    launch.present["faiss"] = False
    launch.fail_on.add("faiss-cpu")
    monkeypatch.setenv("PYTHONPATH", str(_hiding_module("faiss")))  # the probe's fresh interpreter
    code, out = run_install(capsys)
    assert code == 1
    assert "faiss-cpu>=1.8.0 is not installed (Couldn't install replicheck requirement" in out[0]
    assert f'install it by hand: "{sys.executable}" -m pip install "faiss-cpu>=1.8.0"' in out[0]
    assert out[-1] == "replicheck: cannot check images until faiss-cpu is installed"
    assert not any("installed faiss" in line for line in out)


def test_skip_install(launch, capsys):
    launch.args.skip_install = True
    launch.present["onnxruntime"] = False
    assert run_install(capsys) == (0, ["replicheck: --skip-install: not checking requirements"])
    assert launch.pip_calls == []


_HIDE = {}


def _hiding_module(name: str) -> Path:
    """A folder with a sitecustomize that makes `import name` fail in a fresh interpreter."""
    if name not in _HIDE:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="replicheck-hide-"))
        (folder / "sitecustomize.py").write_text(f"import sys\nsys.modules[{name!r}] = None\n")
        _HIDE[name] = folder
    return _HIDE[name]


# -- real pip, in a fresh virtual environment --------------------------------------------------------------


def _wheel(folder: Path, name: str, version: str, module: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal valid wheel: the package `module` and metadata declaring `requires`."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {f"{module.replace('.', '/')}/__init__.py": f"__version__ = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    project = folder / name
    project.mkdir(parents=True, exist_ok=True)
    filename = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(project / filename, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(project.glob("*.whl")))
    (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


#: The dependency that matters, as the real releases declare it (their METADATA, read with
#: `pip download --no-deps onnxruntime==X`): up to 1.26.0 plain `protobuf`, from 1.27.0 `protobuf>=4.25.8`.
PACKAGES = [
    ("protobuf", "3.20.0", "google.protobuf", ()),
    ("protobuf", "4.25.8", "google.protobuf", ()),
    ("onnxruntime", "1.26.0", "onnxruntime", ("protobuf",)),
    ("onnxruntime", "1.32.0", "onnxruntime", ("protobuf>=4.25.8",)),
    ("faiss-cpu", "1.12.0", "faiss", ()),
    ("requests", "2.32.0", "requests", ()),
    ("tqdm", "4.66.1", "tqdm", ()),
    ("pdqhash", "0.2.7", "pdqhash", ()),
    ("c2pa-python", "0.38.1", "c2pa", ()),
    ("opencv-python-headless", "4.10.0", "cv2", ()),
]


def _pip_env(index: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", INDEX_URL=index.as_uri())
    return env


@pytest.fixture(scope="module")
def template_venv(tmp_path_factory):
    """A web UI's environment: protobuf pinned at 3.20.0, everything replicheck needs but onnxruntime."""
    root = tmp_path_factory.mktemp("pip")
    index = root / "simple"
    for name, version, module, requires in PACKAGES:
        _wheel(index, name, version, module, requires)
    venv = root / "template"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--index-url", index.as_uri(), "protobuf==3.20.0",
                    "faiss-cpu", "requests", "tqdm", "pdqhash", "c2pa-python", "opencv-python-headless"], check=True, env=_pip_env(index), timeout=300)
    return venv, index


def _webui_venv(template_venv, tmp_path) -> tuple[Path, Path]:
    template, index = template_venv
    venv = tmp_path / "venv"
    shutil.copytree(template, venv, symlinks=True)
    return venv, index


def _install_in(venv: Path, index: Path, launch_dir: str) -> subprocess.CompletedProcess:
    """install.py as the web UI runs it: its own Python, PYTHONPATH holding launch.py."""
    env = _pip_env(index)
    env["PYTHONPATH"] = str(REPO / "tests" / "webui" / "pip_launch" / launch_dir)
    return subprocess.run([str(venv / "bin" / "python"), str(REPO / "install.py")], capture_output=True, text=True,
                          env=env, timeout=600, cwd=str(venv))


def _versions(venv: Path) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"], capture_output=True,
                         text=True, env=_pip_env(Path("/")), timeout=300, check=True)
    return {d["name"].lower(): d["version"] for d in json.loads(out.stdout)}


def test_the_web_uis_protobuf_pin_is_kept(template_venv, tmp_path):
    """AUTOMATIC1111 and Forge pin protobuf 3.20.0: pip must pick an onnxruntime that accepts it
    instead of upgrading protobuf (which the web UI reinstalls at the next start), and `pip check`
    must stay clean."""
    venv, index = _webui_venv(template_venv, tmp_path)
    done = _install_in(venv, index, "a1111")
    assert done.returncode == 0, done.stdout + done.stderr
    have = _versions(venv)
    assert have["protobuf"] == "3.20.0" and have["onnxruntime"] == "1.26.0", have
    assert done.stdout.strip().splitlines()[-1] == "replicheck: installed onnxruntime 1.26.0"
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True,
                           env=_pip_env(index), timeout=300)
    assert check.returncode == 0, check.stdout


def test_a_silently_refused_install_is_not_called_installed(template_venv, tmp_path):
    """SD.Next's run_pip drops onnxruntime and reports success: the package does not import, and the
    output says so with the command to run, and exits 1 so SD.Next logs an installer error."""
    venv, index = _webui_venv(template_venv, tmp_path)
    done = _install_in(venv, index, "sdnext")
    lines = done.stdout.strip().splitlines()
    assert "onnxruntime" not in _versions(venv)
    assert done.returncode == 1, done.stdout + done.stderr
    assert not any(line.startswith("replicheck: installed") for line in lines), lines
    assert ("onnxruntime>=1.16.0 is not installed (pip reported success but it does not import: "
            "ModuleNotFoundError: No module named 'onnxruntime')") in lines[-2]
    assert f'install it by hand: "{venv / "bin" / "python"}" -m pip install "onnxruntime>=1.16.0"' in lines[-2]
    assert lines[-1] == "replicheck: cannot check images until onnxruntime is installed"


def test_comfyui_manager_runs_it_without_the_web_uis_launch_module(template_venv, tmp_path):
    """ComfyUI-Manager runs install.py with ComfyUI's Python, where no `launch` module exists: the
    same requirements are checked and what is missing is installed with that Python's own pip,
    keeping what is installed where it is (protobuf 3.20.0 stays)."""
    venv, index = _webui_venv(template_venv, tmp_path)
    env = _pip_env(index)
    env["PIP_INDEX_URL"] = index.as_uri()
    done = subprocess.run([str(venv / "bin" / "python"), str(REPO / "install.py")], capture_output=True, text=True,
                          env=env, timeout=600, cwd=str(venv))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No module named 'launch'" not in done.stderr
    have = _versions(venv)
    assert have["protobuf"] == "3.20.0" and have["onnxruntime"] == "1.26.0", have
    assert done.stdout.strip().splitlines()[-1] == "replicheck: installed onnxruntime 1.26.0"
    again = subprocess.run([str(venv / "bin" / "python"), str(REPO / "install.py")], capture_output=True, text=True,
                           env=env, timeout=600, cwd=str(venv))
    assert (again.returncode, again.stdout.strip()) == (0, "replicheck: requirements present")
