"""replicheck in a real SD.Next (the harness install, diffusers backend), through the browser and the API.

Runs when REPLICHECK_SDNEXT points at the SD.Next harness (see README.md here); skipped otherwise.
The subset for SD.Next's own glue: Extensions -> Manual install, the verdict in the infotext and the
panel's data, the grid's infotext, no pack. (SD.Next's --auth guards the whole UI, not the API alone:
the --api-auth test is AUTOMATIC1111's and Forge's.)
"""

from __future__ import annotations

import real_cases as rc
import real_harness as rh
from real_fixtures import browser, sdnext, ui  # noqa: F401 - fixtures

FLAVOR = "sdnext"
pytestmark = rh.skip_unless_configured(FLAVOR)
P = rc.SDNEXT


def test_manual_install_and_restart(sdnext, browser, ui):
    rc.case_sdnext_manual_install(sdnext, browser, ui, P)


def test_txt2img_verdict_in_infotext_and_panel(sdnext):
    rc.case_api_txt2img_verdict(sdnext, P)


def test_batch_grid_infotext_is_not_the_last_images(sdnext):
    rc.case_batch_grid_infotext(sdnext, P)


def test_no_pack_infotext_and_panel(sdnext):
    rc.case_api_no_pack(sdnext, P)
