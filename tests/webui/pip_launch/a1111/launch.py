"""launch.py of AUTOMATIC1111 v1.10.1 (modules/launch_utils.py) as an extension's install.py uses it:
`args`, `python`, `index_url`, `run`, `is_installed` and `run_pip`, with the same bodies, so
install.py runs real pip in whatever interpreter runs it. Forge's launch_utils has the same ones."""

import argparse
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

args = argparse.Namespace(skip_install=False, skip_prepare_environment=False)
python = sys.executable
index_url = os.environ.get('INDEX_URL', "")
default_command_live = (os.environ.get('WEBUI_LAUNCH_LIVE_OUTPUT') == "1")


def run(command, desc=None, errdesc=None, custom_env=None, live: bool = default_command_live) -> str:
    if desc is not None:
        print(desc)

    run_kwargs = {
        "args": command,
        "shell": True,
        "env": os.environ if custom_env is None else custom_env,
        "encoding": 'utf8',
        "errors": 'ignore',
    }

    if not live:
        run_kwargs["stdout"] = run_kwargs["stderr"] = subprocess.PIPE

    result = subprocess.run(**run_kwargs)

    if result.returncode != 0:
        error_bits = [
            f"{errdesc or 'Error running command'}.",
            f"Command: {command}",
            f"Error code: {result.returncode}",
        ]
        if result.stdout:
            error_bits.append(f"stdout: {result.stdout}")
        if result.stderr:
            error_bits.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(error_bits))

    return (result.stdout or "")


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False

        return spec is not None

    return dist is not None


def run_pip(command, desc=None, live=default_command_live):
    if args.skip_install:
        return

    index_url_line = f' --index-url {index_url}' if index_url != '' else ''
    return run(f'"{python}" -m pip {command} --prefer-binary{index_url_line}', desc=f"Installing {desc}", errdesc=f"Couldn't install {desc}", live=live)
