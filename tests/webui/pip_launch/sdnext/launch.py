"""launch.py of SD.Next (master 058a7f0) as an extension's install.py uses it: the compatibility
functions `run`, `is_installed` and `run_pip`, with the same bodies. Its `run_pip` silently refuses
any package name containing "onnxruntime" or "opencv-python" and reports success (True);
`is_installed` is cached. `installer.installed` is reduced to the import check it makes."""

import importlib.util
import os
import subprocess
import sys
from functools import lru_cache

args = None  # set by SD.Next's init_args(); install.py runs in a fresh interpreter before that
index_url = os.environ.get('INDEX_URL', "")


def debug_install(*args, **kwargs):
    pass


def run(command, desc=None, errdesc=None, custom_env=None, live=False): # compatibility function
    if desc is not None:
        print(desc)
    if live:
        result = subprocess.run(command, check=False, shell=True, env=os.environ if custom_env is None else custom_env)
        if result.returncode != 0:
            raise RuntimeError(f"""{errdesc or 'Error running command'} Command: {command} Error code: {result.returncode}""")
        return ''
    result = subprocess.run(command, capture_output=True, check=False, shell=True, env=os.environ if custom_env is None else custom_env, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"""{errdesc or 'Error running command'}: {command} code: {result.returncode}
{result.stdout}
{result.stderr}
""")
    return result.stdout


@lru_cache
def is_installed(pkg): # compatibility function
    return importlib.util.find_spec(pkg) is not None


@lru_cache
def run_pip(pkg, desc=None): # compatibility function
    forbidden = ['onnxruntime', 'opencv-python']
    if desc is None:
        desc = pkg
    for f in forbidden:
        if f in pkg:
            debug_install(f'Blocked package installation: package={f}')
            return True
    index_url_line = f' --index-url {index_url}' if index_url != '' else ''
    return run(f'"{sys.executable}" -m pip {pkg} --prefer-binary{index_url_line}', desc=f"Installing {desc}", errdesc=f"Couldn't install {desc}")
