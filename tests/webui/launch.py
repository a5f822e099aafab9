"""launch.py (1.10.1) as install.py sees it: is_installed, run_pip and args. Records pip calls."""

import argparse
import importlib.util

args = argparse.Namespace(skip_install=False, skip_prepare_environment=False)
pip_calls: list[tuple[str, str]] = []
fail_on: set[str] = set()  # distributions whose install "fails" (e.g. pdqhash without a compiler)
present: dict[str, bool] = {}  # import name -> forced answer of is_installed


def is_installed(package):
    if package in present:
        return present[package]
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        return False
    return spec is not None


def run_pip(command, desc=None, live=False):
    if args.skip_install:
        return
    pip_calls.append((command, desc))
    if any(name in command for name in fail_on):
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: pip {command}\nerror: Microsoft Visual C++ 14.0 or "
                           "a C++ compiler is required")
    return ""
