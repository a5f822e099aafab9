"""Run by the web UI (Extensions tab install, and at every start): install what replicheck needs.

Only what is missing or too old is installed, with the web UI's own pip helper; torch is never
touched (the web UI owns it); --skip-install is honoured; one line says what happened. pdqhash
builds from source: where that fails (no C++ compiler), only the pdq embedder is disabled.
"""

import importlib.metadata
import re

import launch

#: (distribution, import name, minimum version, optional)
REQUIREMENTS = (
    ("faiss-cpu", "faiss", "1.7.4", False),
    ("onnxruntime", "onnxruntime", "1.16.0", False),
    ("requests", "requests", "2.25.0", False),
    ("tqdm", "tqdm", "4.60.0", False),
    ("pdqhash", "pdqhash", "0.2.2", True),
)


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def missing_or_old(dist: str, module: str, minimum: str) -> bool:
    if not launch.is_installed(module):
        return True
    try:
        have = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False  # importable under another distribution name (e.g. faiss-gpu): keep it
    return _version_tuple(have) < _version_tuple(minimum)


def main() -> None:
    args = getattr(launch, "args", None)
    if getattr(args, "skip_install", False) or getattr(args, "skip_prepare_environment", False):
        print("replicheck: --skip-install: not checking requirements")
        return
    installed, disabled = [], []
    for dist, module, minimum, optional in REQUIREMENTS:
        if not missing_or_old(dist, module, minimum):
            continue
        spec = f"{dist}>={minimum}"
        try:
            launch.run_pip(f'install "{spec}"', f"replicheck requirement: {spec}")
            installed.append(spec)
        except Exception as e:  # noqa: BLE001 - run_pip raises RuntimeError with pip's output
            if not optional:
                raise
            disabled.append(f"{dist} could not be installed ({str(e).splitlines()[0][:120]}); the pdq embedder is "
                            "disabled, sscd and clip work")
    parts = [f"installed {', '.join(installed)}" if installed else "requirements present"] + disabled
    print("replicheck: " + "; ".join(parts))


main()
