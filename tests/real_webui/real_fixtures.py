"""Fixtures for the real web UI tests: one harness web UI per module, started as few times as possible.

A plain module the test files import their fixtures from, not a conftest.py: tests/conftest.py is
imported by name (`from conftest import ...`), and a second conftest module would shadow it.

Every test here is skipped, quickly and without importing selenium, unless the flavor's environment
variable (REPLICHECK_WEBUI, REPLICHECK_FORGE, REPLICHECK_SDNEXT) points at a harness install. When it
does, a missing dependency (selenium) fails the test with what to install instead of skipping it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import real_harness as rh  # noqa: E402 - after the path is set


def _need_selenium() -> None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is not installed for this Python: `python3 -m pip install selenium` "
                    "(or `bash tests/setup.sh`)")


def open_webui(flavor: str) -> rh.WebUI:
    where = rh.locate(flavor)
    if where is None:
        pytest.skip(rh.skip_reason(flavor))
    _need_selenium()
    root, install = where
    return rh.WebUI(rh.FLAVORS[flavor], root, install)


@pytest.fixture(scope="module")
def a1111():
    """The AUTOMATIC1111 harness, reset to 'no extension installed', the passthrough test extension
    added, the repository's committed HEAD served for Install from URL. Stopped at the end."""
    w = open_webui("a1111")
    _prepare(w)
    yield w
    _finish(w)


@pytest.fixture(scope="module")
def forge():
    w = open_webui("forge")
    _prepare(w)
    yield w
    _finish(w)


@pytest.fixture(scope="module")
def forgeneo():
    w = open_webui("forgeneo")
    _prepare(w)
    yield w
    _finish(w)


@pytest.fixture(scope="module")
def sdnext():
    w = open_webui("sdnext")
    _prepare(w)
    yield w
    _finish(w)


def _prepare(w: rh.WebUI) -> None:
    w.lock()
    w.stop()
    w.reset()
    w.add_passthrough()
    w.serve_ext()


def _finish(w: rh.WebUI) -> None:
    try:
        w.stop()
    finally:
        w.stop_helpers()
        w.unlock()


@pytest.fixture(scope="module")
def browser(request):
    """Headless Chromium for the module's flavor (from the module's FLAVOR), quit at the end."""
    import real_browser

    flavor = getattr(request.module, "FLAVOR")
    d = real_browser.driver(flavor)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def ui(request):
    import real_browser

    return real_browser.ui_module(getattr(request.module, "FLAVOR"))
