"""replicheck in a real Forge Neo (the `neo` branch of sd-webui-forge-classic: Python 3.11, gradio 4.40,
torch 2.8; the harness install), through the browser and the API.

Runs when REPLICHECK_FORGENEO points at the Forge Neo harness (see README.md here); skipped otherwise.
The Forge glue's cases (Neo is detected as Forge), with the memorization signal, which Neo's sampling
measures through the same post-CFG function as Forge's.
"""

from __future__ import annotations

import real_cases as rc
import real_harness as rh
from real_fixtures import browser, forgeneo, ui  # noqa: F401 - fixtures

FLAVOR = "forgeneo"
pytestmark = rh.skip_unless_configured(FLAVOR)
P = rc.FORGE_NEO


def test_install_from_url_and_apply_and_restart(forgeneo, browser, ui):
    rc.case_install_from_url(forgeneo, browser, ui, P)


def test_settings_page_loads_without_errors(forgeneo, browser, ui):
    rc.case_settings_page_loads_without_errors(forgeneo, browser, ui, P)


def test_txt2img_panel_and_infotext(forgeneo, browser, ui):
    rc.case_txt2img_panel_and_infotext(forgeneo, browser, ui, P)


def test_api_txt2img_verdict(forgeneo):
    rc.case_api_txt2img_verdict(forgeneo, P)


def test_batch_grid_infotext_is_not_the_last_images(forgeneo):
    rc.case_batch_grid_infotext(forgeneo, P)


def test_no_pack_infotext_and_panel(forgeneo, browser, ui):
    rc.case_no_pack(forgeneo, browser, ui, P)


def test_api_auth_routes_and_panel(forgeneo, browser, ui):
    rc.case_api_auth(forgeneo, browser, ui, P)
