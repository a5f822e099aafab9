"""Packages installed into the web UI's Python with the web UI's own pip helper, keeping every
package it already has at its version.

install.py does this at start-up for replicheck's requirements, and the Replicheck tab for the
builder's packages when a recipe needs them. Everything installed is handed to pip as constraints
(`name==version`), so an install never upgrades a package the web UI pinned (protobuf 3.20.0,
NumPy 1.26): pip resolves what it adds around them, or fails saying why. A fresh interpreter then
checks that each package really imports (this one's import caches predate the install).
Standard library only: install.py imports this before anything else is installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Callable, Sequence

#: bounds the import check of freshly installed packages (faiss and onnxruntime load large libraries)
PROBE_TIMEOUT_S = 300
_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9]+(\.[a-z0-9]+)*)?$", re.I)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(spec: str) -> str:
    """'pyarrow<18' -> 'pyarrow'."""
    return normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])


def installed_pins(exclude: set[str]) -> list[str]:
    """`name==version` for every installed distribution except `exclude`: as pip constraints they keep
    the web UI's packages where they are, and pip resolves what it adds around them."""
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        if not name or not version or not _PEP440.match(version):
            continue  # a broken or non-standard install: pip could not read it as a constraint either
        key = normalise(name)
        if key not in exclude and key not in pins:  # the first on sys.path is the one that imports
            pins[key] = f"{key}=={version}"
    return [pins[k] for k in sorted(pins)]


def probe(pairs: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """For each (distribution, import name), in a fresh interpreter: whether it imports, and the
    installed version."""
    code = ("import importlib, importlib.metadata as md, json, sys\n"
            "out = {}\n"
            "for dist, module in json.loads(sys.argv[1]):\n"
            "    r = {'ok': True, 'error': '', 'version': None}\n"
            "    try:\n"
            "        importlib.import_module(module)\n"
            "    except BaseException as e:\n"
            "        r = {'ok': False, 'error': f'{type(e).__name__}: {e}'[:300], 'version': None}\n"
            "    try:\n"
            "        r['version'] = md.version(dist)\n"
            "    except md.PackageNotFoundError:\n"
            "        pass\n"
            "    out[dist] = r\n"
            "print(json.dumps(out))\n")
    arg = json.dumps([list(p) for p in pairs])
    try:
        done = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        why = f"the import check could not run ({type(e).__name__})"
        return {d: {"ok": False, "error": why, "version": None} for d, _ in pairs}


def pip_error(e: Exception) -> str:
    """The line of pip's output that says why, not the whole log."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors[0] if errors else lines[0] if lines else type(e).__name__)[:300]


def pip_install(specs: Sequence[str], run_pip: Callable[[str, str], object], desc: str) -> dict[str, str]:
    """`run_pip('install "SPEC" -c "CONSTRAINTS"', desc)` for each requirement, the constraints
    being every installed distribution but those asked for; returns pip's error by distribution
    for those it could not install. The constraints file is removed afterwards."""
    errors: dict[str, str] = {}
    fd, constraints = tempfile.mkstemp(prefix="replicheck-pins-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(installed_pins({dist_name(s) for s in specs})) + "\n")
        for spec in specs:
            try:
                run_pip(f'install "{spec}" -c "{constraints}"', f"{desc}: {spec}")
            except Exception as e:  # noqa: BLE001 - run_pip raises RuntimeError with pip's output
                errors[dist_name(spec)] = pip_error(e)
    finally:
        os.remove(constraints)
    return errors


def by_hand(specs: Sequence[str]) -> str:
    """The command that installs `specs` into this Python."""
    return f'"{sys.executable}" -m pip install ' + " ".join(f'"{s}"' for s in specs)
