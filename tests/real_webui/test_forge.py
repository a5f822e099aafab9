"""replicheck in a real Forge (the harness install, gradio 4), through the browser and the API.

Runs when REPLICHECK_FORGE points at the Forge harness (see README.md here); skipped otherwise. The
subset that concerns Forge's own glue: Install from URL, the Settings page, the panel and infotext,
the grid's infotext, no pack, --api-auth. (Inpainting and damaged packs go through the same library
code as in AUTOMATIC1111 and are tested there.)
"""

from __future__ import annotations

import real_cases as rc
import real_harness as rh
from real_fixtures import browser, forge, ui  # noqa: F401 - fixtures

FLAVOR = "forge"
pytestmark = rh.skip_unless_configured(FLAVOR)
P = rc.FORGE


def test_install_from_url_and_apply_and_restart(forge, browser, ui):
    rc.case_install_from_url(forge, browser, ui, P)


def test_settings_page_loads_without_errors(forge, browser, ui):
    rc.case_settings_page_loads_without_errors(forge, browser, ui, P)


def test_settings_apply_keeps_values(forge, browser, ui):
    rc.case_settings_apply_keeps_values(forge, browser, ui, P)


def test_txt2img_panel_and_infotext(forge, browser, ui):
    rc.case_txt2img_panel_and_infotext(forge, browser, ui, P)


def test_batch_grid_infotext_is_not_the_last_images(forge):
    rc.case_batch_grid_infotext(forge, P)


def test_saved_image_carries_a_signed_record(forge):
    rc.case_signed_record(forge, P)


def test_api_image_carries_a_signed_record(forge):
    rc.case_signed_record_api(forge, P)


def test_no_pack_infotext_and_panel(forge, browser, ui):
    rc.case_no_pack(forge, browser, ui, P)


def test_api_auth_routes_and_panel(forge, browser, ui):
    rc.case_api_auth(forge, browser, ui, P)
