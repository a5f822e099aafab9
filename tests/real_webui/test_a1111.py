"""replicheck in a real AUTOMATIC1111 v1.10.1 (the harness install), through the browser and the API.

Runs when REPLICHECK_WEBUI points at the harness (see README.md here); skipped otherwise. The tests
share one web UI process and run in this order: Install from URL first (run alone, the others install
the committed HEAD by copy), --api-auth last (it needs a restart). The checks are in real_cases.py.
"""

from __future__ import annotations

import real_cases as rc
import real_harness as rh
from real_fixtures import browser, a1111, ui  # noqa: F401 - fixtures

FLAVOR = "a1111"
pytestmark = rh.skip_unless_configured(FLAVOR)
P = rc.A1111


def test_install_from_url_and_apply_and_restart(a1111, browser, ui):
    rc.case_install_from_url(a1111, browser, ui, P)


def test_settings_page_loads_without_errors(a1111, browser, ui):
    rc.case_settings_page_loads_without_errors(a1111, browser, ui, P)


def test_settings_apply_keeps_values(a1111, browser, ui):
    rc.case_settings_apply_keeps_values(a1111, browser, ui, P)


def test_txt2img_panel_and_infotext(a1111, browser, ui):
    rc.case_txt2img_panel_and_infotext(a1111, browser, ui, P)


def test_tab_builds_a_csv_recipe(a1111, browser, ui):
    rc.case_tab_builds_a_csv_recipe(a1111, browser, ui, P)


def test_batch_grid_infotext_is_not_the_last_images(a1111):
    rc.case_batch_grid_infotext(a1111, P)


def test_inpainting_passthrough_verdict_is_copy(a1111):
    rc.case_inpainting_passthrough(a1111, P)


def test_inpainting_verdict_is_of_the_saved_image(a1111):
    rc.case_inpainting_overlay(a1111, P)


def test_saved_image_carries_a_signed_record(a1111):
    rc.case_signed_record(a1111, P)


def test_api_image_carries_a_signed_record(a1111):
    rc.case_signed_record_api(a1111, P)


def test_no_pack_infotext_and_panel(a1111, browser, ui):
    rc.case_no_pack(a1111, browser, ui, P)


def test_truncated_pack_keeps_webui_alive(a1111):
    rc.case_truncated_pack(a1111, P)


def test_api_auth_routes_and_panel(a1111, browser, ui):
    rc.case_api_auth(a1111, browser, ui, P)
