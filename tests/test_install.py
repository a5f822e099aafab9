"""install.py against the web UI's launch helpers (tests/webui/launch.py follows launch.py's signatures)."""

from __future__ import annotations

import importlib.metadata
import runpy
import sys

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


def run_install(capsys):
    runpy.run_path(str(REPO / "install.py"), run_name="__main__")
    return capsys.readouterr().out.strip().splitlines()


def test_everything_present_installs_nothing(launch, capsys):
    assert run_install(capsys) == ["replicheck: requirements present"]
    assert launch.pip_calls == []


def test_missing_and_old_packages_are_installed(launch, capsys, monkeypatch):
    launch.present["onnxruntime"] = False
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.7.0" if d == "faiss-cpu" else real(d))
    out = run_install(capsys)
    assert [c for c, _ in launch.pip_calls] == ['install "faiss-cpu>=1.7.4"', 'install "onnxruntime>=1.16.0"']
    assert out == ["replicheck: installed faiss-cpu>=1.7.4, onnxruntime>=1.16.0"]
    assert not any("torch" in c for c, _ in launch.pip_calls)


def test_pdqhash_without_compiler_disables_only_pdq(launch, capsys):
    launch.present["pdqhash"] = False
    launch.fail_on.add("pdqhash")
    out = run_install(capsys)
    assert len(out) == 1 and "pdqhash could not be installed" in out[0] and "the pdq embedder is disabled" in out[0]


def test_a_required_failure_is_raised(launch, capsys):
    launch.present["faiss"] = False
    launch.fail_on.add("faiss-cpu")
    with pytest.raises(RuntimeError, match="Couldn't install"):
        run_install(capsys)


def test_skip_install(launch, capsys):
    launch.args.skip_install = True
    launch.present["onnxruntime"] = False
    assert run_install(capsys) == ["replicheck: --skip-install: not checking requirements"]
    assert launch.pip_calls == []
