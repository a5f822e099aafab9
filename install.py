"""Run by the web UI (Extensions tab install, and at every start): install what replicheck needs.

ComfyUI-Manager runs it too, after it pip-installed requirements.txt, with ComfyUI's Python and no
web UI around it (no `launch` module): it then checks the same requirements and installs what is
missing with that Python's own pip.

Only what is missing or too old is installed, with the web UI's own pip helper; torch is never
touched (the web UI owns it); --skip-install is honoured. Everything the web UI already installed is
kept at its version (pip gets it as constraints), so installing replicheck never upgrades a package
the web UI pinned, e.g. protobuf 3.20.0 (onnxruntime 1.27 and later want protobuf >= 4.25.8; pip then
picks an older onnxruntime instead). Afterwards a fresh interpreter checks that each package really
imports (SD.Next's pip helper silently refuses onnxruntime): what is missing is said plainly, with
the command to install it by hand, and the script exits with an error. pdqhash builds from source:
where that fails (no C++ compiler), only the pdq embedder is disabled.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass

try:
    import launch
except ImportError:  # ComfyUI-Manager, or by hand: no web UI's launch helpers
    launch = None

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # the web UI runs this file as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_replicheck.pipinstall import by_hand, normalise, pip_install, probe  # noqa: E402


@dataclass(frozen=True)
class Requirement:
    dist: str  # the distribution pip installs
    module: str  # the import name
    minimum: str
    optional: bool = False  # without it only one feature is off (see `without`)
    without: str = ""

    @property
    def spec(self) -> str:
        return f"{self.dist}>={self.minimum}"


REQUIREMENTS = (
    # the oldest faiss packs are tested with (indexes are memory-mapped only where faiss has IO_FLAG_MMAP_IFC)
    Requirement("faiss-cpu", "faiss", "1.8.0"),
    Requirement("onnxruntime", "onnxruntime", "1.16.0"),
    Requirement("requests", "requests", "2.25.0"),
    Requirement("tqdm", "tqdm", "4.60.0"),
    Requirement("pdqhash", "pdqhash", "0.2.2", optional=True, without="the pdq embedder is disabled, sscd and clip work"),
    # the signed record of the check (C2PA); a prebuilt wheel for every Python 3 on Linux, macOS and Windows
    Requirement("c2pa-python", "c2pa", "0.38.0", optional=True,
                without="the signed record (Settings -> Replicheck -> Signed record) is off"),
    # geometric verification of candidates (SIFT, RANSAC); 4.10 is the last release for NumPy 1.26
    Requirement("opencv-python-headless", "cv2", "4.5.0", optional=True,
                without="geometric verification is off: candidates between possible and likely copy stay possible"),
)


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def is_installed(module: str) -> bool:
    if launch is not None:
        return launch.is_installed(module)
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_pip(command: str, desc: str) -> None:
    """The web UI's pip helper, or this Python's own pip (ComfyUI); RuntimeError with pip's output."""
    if launch is not None:
        launch.run_pip(command, desc)
        return
    import shlex

    print(f"Installing {desc}")
    done = subprocess.run([sys.executable, "-m", "pip", *shlex.split(command), "--prefer-binary"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc}.\n{done.stdout}\n{done.stderr}")


def missing_or_old(req: Requirement) -> bool:
    if not is_installed(req.module):
        return True
    try:
        have = importlib.metadata.version(req.dist)
    except importlib.metadata.PackageNotFoundError:
        return False  # importable under another distribution name (e.g. faiss-gpu): keep it
    return _version_tuple(have) < _version_tuple(req.minimum)


def main() -> int:
    args = getattr(launch, "args", None)
    if getattr(args, "skip_install", False) or getattr(args, "skip_prepare_environment", False):
        print("replicheck: --skip-install: not checking requirements")
        return 0
    wanted = [r for r in REQUIREMENTS if missing_or_old(r)]
    if not wanted:
        print("replicheck: requirements present")
        return 0
    pip_errors = pip_install([r.spec for r in wanted], run_pip, "replicheck requirement")
    found = probe([(r.dist, r.module) for r in wanted])
    installed, problems, missing_required = [], [], []
    for r in wanted:
        got = found.get(r.dist) or {"ok": False, "error": "not checked", "version": None}
        version = got.get("version")
        if got.get("ok") and (version is None or _version_tuple(version) >= _version_tuple(r.minimum)):
            installed.append(f"{r.dist} {version}" if version else r.dist)
            continue
        if got.get("ok"):
            why = f"{r.dist} {version} is installed, {r.minimum} or later is needed"
        else:
            why = f"{r.spec} is not installed ({pip_errors.get(normalise(r.dist)) or 'pip reported success but it does not import: ' + got.get('error', '')})"
        if r.optional:
            problems.append(f"{why}; {r.without}")
        else:
            missing_required.append(r)
            problems.append(f"{why}; install it by hand: {by_hand([r.spec])}")
    parts = ([f"installed {', '.join(installed)}"] if installed else []) + problems
    print("replicheck: " + "; ".join(parts))
    if missing_required:
        print(f"replicheck: cannot check images until {', '.join(r.dist for r in missing_required)} "
              f"{'is' if len(missing_required) == 1 else 'are'} installed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
