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
