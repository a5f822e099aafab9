"""modules/launch_utils.py of AUTOMATIC1111 1.10.1 (and Forge), as extensions use it from the running
web UI: `run_pip(command, desc=None, live=...)` runs `python -m pip {command}`. Here it goes to
tests/webui/launch.py's run_pip, which records the calls (launch.py re-exports this module's in the
real web UI)."""


def run_pip(command, desc=None, live=False):
    import launch

    return launch.run_pip(command, desc, live)
