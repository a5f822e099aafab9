"""Forge and SD.Next: how the extension tells them apart and what it changes for them.

Each run is a separate process with the fake web UI dressed as that platform: Forge is recognised
by its `modules_forge` package, SD.Next by `shared.native`. This checks replicheck's handling of
their documented differences (webui-api.md), not the platforms themselves, which cannot run here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = r"""
import json, os, sys, tempfile, types
root = tempfile.mkdtemp()
os.environ["FAKE_WEBUI_ROOT"] = root
sys.path[:0] = [{webui!r}, {repo!r}]
platform = {platform!r}
if platform == "forge":
    sys.modules["modules_forge"] = types.ModuleType("modules_forge")
    import importlib.machinery
    sys.modules["modules_forge"].__spec__ = importlib.machinery.ModuleSpec("modules_forge", None)
from modules import scripts, script_callbacks, shared
if platform == "sdnext":
    shared.native = True
    def options_section(section_identifier, options_dict):  # SD.Next keeps the whole tuple
        for v in options_dict.values():
            v.section = section_identifier
        return options_dict
    shared.options_section = options_section
module = scripts.load_script_module(os.path.join({repo!r}, "scripts", "replicheck.py"))
script_callbacks.ui_settings_callback()
info = shared.opts.data_labels["replicheck_enabled"]
print(json.dumps({{"platform": module.PLATFORM, "section": list(info.section), "category": info.category_id,
                  "unsupported": module.UNSUPPORTED, "signal": module.SIGNAL_UNAVAILABLE}}))
"""


@pytest.mark.parametrize("platform,section,category", [
    ("automatic1111", ["replicheck", "Replicheck"], "postprocessing"),
    ("forge", ["replicheck", "Replicheck"], "postprocessing"),
    ("sdnext", ["replicheck", "Replicheck"], None),
])
def test_platform_settings(platform, section, category):
    code = SCRIPT.format(webui=str(REPO / "tests" / "webui"), repo=str(REPO), platform=platform)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["platform"] == platform and got["section"] == section and got["category"] == category
    if platform == "sdnext":
        assert got["unsupported"] and "category" in got["unsupported"][0]
    # the memorization signal needs on_cfg_denoised, which SD.Next's diffusers backend never calls; Forge
    # does not either, but passes the predictions to post-CFG functions (tests/test_forge_signal.py)
    assert (got["signal"] is None) == (platform != "sdnext")
    assert any("memorization signal" in u for u in got["unsupported"]) == (platform == "sdnext")


def test_webui_rooms_import_without_the_web_ui_gradio_or_torch():
    """The platform rules, the tab and the calibration runner take the web UI's modules as arguments:
    the library imports them with no web UI, gradio, pydantic or torch installed."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('modules', 'gradio', 'fastapi', 'pydantic', 'torch', 'faiss'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lib_replicheck.webui.platform, lib_replicheck.webui.tab, lib_replicheck.webui.calibrate\n"
        "print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported"


def test_platform_rules_from_the_shared_module():
    from types import SimpleNamespace

    from lib_replicheck.webui import platform

    a1111 = platform.detect(SimpleNamespace(opts=None))
    assert a1111 == platform.Platform("automatic1111") and a1111.settings_section[-1] == "postprocessing"
    native = platform.detect(SimpleNamespace(native=True))
    assert native.name == "sdnext" and "CFG callbacks" in native.signal_unavailable
    assert native.settings_section == ("replicheck", "Replicheck") and len(native.unsupported) == 2
    original = platform.detect(SimpleNamespace(backend="original", native=False))  # SD.Next's original backend
    assert original.signal_unavailable is None and original.unsupported == (platform.NO_CATEGORY,)
    assert platform.is_sd1(SimpleNamespace()) and not platform.is_sd1(SimpleNamespace(is_sdxl=True))
    assert not platform.is_sd1(None)
    assert platform.image_index(SimpleNamespace(iteration=2, batch_size=3, batch_index=1)) == 7


def test_generation_lock_as_the_web_ui_holds_it():
    """call_queue's FIFOLock wraps a threading.Lock: held means a generation is running; a lock that
    cannot say (or none) counts as held, so no live job is closed early."""
    import threading
    from types import SimpleNamespace

    from lib_replicheck.webui.platform import lock_held

    lock = threading.Lock()
    fifo = SimpleNamespace(_lock=lock)
    assert not lock_held(fifo) and not lock_held(lock)
    with lock:
        assert lock_held(fifo) and lock_held(lock)
    assert lock_held(None) and lock_held(object())
