"""replicheck's nodes in a real ComfyUI (v0.33.0, the harness install, on the CPU), through its HTTP API
and headless Chromium.

Runs when REPLICHECK_COMFYUI points at the ComfyUI harness (see README.md here); skipped otherwise. The
module takes the install over: it stops ComfyUI, removes custom_nodes/replicheck and models/replicheck,
serves this repository's committed HEAD with the harness's serve_ext.sh, installs it through
ComfyUI-Manager's "Install via Git URL" and by `git clone`, and stops ComfyUI at the end.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time

import pytest

import real_comfyui as rq
from real_harness import DEMO_IMAGES

pytestmark = rq.skip_unless_configured()
MANAGER = "--enable-manager-legacy-ui"
#: coffee.jpg as ComfyUI's LoadImage decodes it: a likely copy, PDQ similarity 0.99 or 1.00
COPY = re.compile(r"likely copy \(best (0\.99|1\.00) in demo\)")
NODES = ("ReplicheckCheck", "ReplicheckGate", "ReplicheckSignal")
PAGE = {"X-Replicheck-Request": "1", "Origin": rq.Comfy.url}
SONY = "Sony Won't Release <i>The Interview</i> on VOD"  # a known memorized prompt (Webster 2023)


@pytest.fixture(scope="module")
def comfy():
    root, folder = rq.locate()
    c = rq.Comfy(root, folder)
    c.stop()
    c.remove_node()
    shutil.rmtree(c.comfy / "models" / "replicheck", ignore_errors=True)
    c.serve()
    c.start(MANAGER)
    yield c
    c.stop()
    c.script("serve_ext.sh", "stop")


def nodes_loaded(c: rq.Comfy) -> bool:
    return all(c.get_json(f"/object_info/{n}")[1].get(n) for n in NODES)


def assert_clean_start(log: str) -> None:
    assert "IMPORT FAILED" not in log and "(IMPORT FAILED)" not in log, log[-3000:]
    assert "No module named 'launch'" not in log
    lines = [ln for ln in log.splitlines() if "replicheck" in ln.lower() and ("Traceback" in ln or "Error" in ln)]
    assert not lines, lines


@pytest.fixture(scope="module")
def installed(comfy):
    """The node installed (by the install tests when they ran, else by clone) with the demo pack."""
    if not nodes_loaded(comfy):
        comfy.remove_node()
        comfy.script("install_custom_node.sh", "git", comfy.git_url)
        comfy.restart(MANAGER)
    comfy.install_demo_pack()
    comfy.put_input(DEMO_IMAGES / "coffee.jpg", "rc_coffee.jpg")
    return comfy


def test_install_via_the_managers_git_url(comfy):
    comfy.mark_log()
    out = comfy.script("install_custom_node.sh", "manager", comfy.git_url, timeout=1800)
    log = comfy.log_since_mark()
    assert "custom_nodes/replicheck: present" in out, out
    assert comfy.installed_head() == comfy.served_head()
    assert "install script failed" not in log.lower(), log[-3000:]
    assert "replicheck: requirements present" in log or "replicheck: installed" in log, log[-3000:]
    assert nodes_loaded(comfy)
    assert_clean_start(log)


def test_install_by_clone(comfy):
    comfy.stop()
    comfy.remove_node()
    comfy.script("install_custom_node.sh", "git", comfy.git_url)
    comfy.start(MANAGER)
    assert comfy.installed_head() == comfy.served_head()
    assert nodes_loaded(comfy)
    assert_clean_start(comfy.log_since_mark())


def test_a_copy_is_a_likely_copy_in_the_node_output_and_the_saved_png(installed):
    entry = installed.run(rq.check_image("rc_coffee.jpg", prefix="rc_copy"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    ui = entry["outputs"]["10"]
    assert len(ui["verdicts"]) == 1 and COPY.fullmatch(ui["verdicts"][0]), ui["verdicts"]
    assert 'data-verdict="likely copy"' in ui["replicheck_html"][0] and "rc-thumb" in ui["replicheck_html"][0]
    png = installed.saved_png(entry, "9")
    assert json.loads(png.text["Replicheck"]) == ui["verdicts"][0]
    assert "workflow" in png.text and "prompt" in png.text


def test_the_gate_blocks_a_copy_or_swaps_it_for_a_placeholder(installed):
    entry = installed.run(rq.check_image("rc_coffee.jpg", gate="block", prefix="rc_blocked"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert not entry["outputs"].get("9", {}).get("images"), entry["outputs"].get("9")  # nothing saved
    assert entry["outputs"]["11"]["replicheck_gate"] == ["1 of 1 image(s) at or above 'likely copy': blocked"]
    entry = installed.run(rq.check_image("rc_coffee.jpg", gate="placeholder", prefix="rc_grey"))
    png = installed.saved_png(entry, "9")
    assert set(png.convert("RGB").getdata()) == {(127, 127, 127)}  # 0.5 grey as SaveImage writes it (uint8 of 127.5)
    assert COPY.fullmatch(json.loads(png.text["Replicheck"]))


def test_a_workflow_without_the_nodes_is_untouched_and_the_signal_changes_nothing(installed):
    """The same txt2img without and with the nodes; its prompt is a known memorized one (Webster 2023)."""
    seed = random.randrange(1, 2**31)
    plain = installed.run(rq.txt2img(SONY, seed, prefix="rc_plain"))
    checked = installed.run(rq.txt2img(SONY, seed, check=True, signal=True, prefix="rc_checked"))
    a, b = installed.saved_png(plain, "9"), installed.saved_png(checked, "9")
    assert set(a.text) == {"prompt", "workflow"}
    assert json.loads(b.text["Replicheck prompt"]) == "known memorized prompt (SD 1.x, verbatim): Webster 2023"
    assert list(a.convert("RGB").getdata()) == list(b.convert("RGB").getdata())  # same pixels, same seed
    verdict = json.loads(b.text["Replicheck"])
    assert verdict.startswith("no copy (best "), verdict
    signal = json.loads(b.text["Replicheck memorization"])
    assert signal.endswith(("(high)", "(normal)")) and float(signal.split()[0]) > 0, signal
    assert "Memorization signal: " in checked["outputs"]["10"]["replicheck_html"][0]


def test_a_missing_pack_and_a_truncated_pack_give_a_message_and_the_workflow_finishes(installed):
    entry = installed.run(rq.check_image("rc_coffee.jpg", prefix="rc_missing", packs="laion-400m"))
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["10"]["verdicts"] == ["not checked (pack not installed)"]
    assert "laion-400m" in entry["outputs"]["10"]["replicheck_html"][0]
    assert entry["outputs"]["9"]["images"]
    broken = installed.packs_dir / "demo-truncated"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(installed.packs_dir / "demo", broken)
    index = broken / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    try:
        entry = installed.run(rq.check_image("rc_coffee.jpg", prefix="rc_truncated", packs="demo-truncated"))
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["10"]["verdicts"] == ["not checked (error)"]
        assert "index.faiss" in entry["outputs"]["10"]["replicheck_html"][0]
        assert entry["outputs"]["9"]["images"]
        status, listing = installed.get_json("/replicheck/v1/packs", PAGE)
        errors = [p["error"] for p in listing["packs"] if p["error"]]  # the copy's manifest also says "demo"
        assert len(errors) == 1 and "index.faiss" in errors[0], listing
    finally:
        shutil.rmtree(broken, ignore_errors=True)
    assert COPY.fullmatch(installed.run(rq.check_image("rc_coffee.jpg", prefix="rc_after"))["outputs"]["10"]["verdicts"][0])


def test_the_packs_route_answers_comfyuis_page_only_and_free_memory_unloads(installed):
    installed.run(rq.check_image("rc_coffee.jpg", prefix="rc_route"))
    status, listing = installed.get_json("/replicheck/v1/packs", PAGE)
    assert status == 200 and {p["name"]: p["loaded"] for p in listing["packs"]} == {"demo": True}
    assert installed.get_json("/replicheck/v1/packs", {**PAGE, "Origin": "http://evil.example"})[0] == 403
    assert installed.get_json("/replicheck/v1/packs", {"Referer": rq.Comfy.url + "/"})[0] == 403
    status, _ = installed.request("POST", "/free", json.dumps({"unload_models": True, "free_memory": True}).encode(),
                                  {"Content-Type": "application/json"})
    assert status == 200
    end = time.time() + 120
    while time.time() < end and installed.get_json("/replicheck/v1/packs", PAGE)[1]["loaded"]:
        time.sleep(1)
    assert installed.get_json("/replicheck/v1/packs", PAGE)[1]["loaded"] is False


def test_the_node_ui_shows_the_matches_in_the_browser(installed):
    from selenium.webdriver.support.ui import WebDriverWait

    import real_comfyui_browser as rb

    driver = rb.chromium()
    try:
        rb.open_comfyui(driver, installed.url)
        rb.queue_api_workflow(driver, rq.check_image("rc_coffee.jpg", prefix="rc_browser"))
        card = WebDriverWait(driver, 600).until(lambda d: d.execute_script(
            "const c = document.querySelector('.replicheck-comfy .rc-card[data-verdict=\"likely copy\"]');"
            "return c && c.querySelector('img.rc-thumb') && c.querySelector('img.rc-thumb').naturalWidth > 0"
            " ? c.innerText : null;"))
        assert "likely copy" in card and "demo" in card
        shot = os.environ.get("REPLICHECK_COMFYUI_SCREENSHOT")
        if shot:
            rb.save_view(driver, shot, os.environ.get("REPLICHECK_COMFYUI_WORKFLOW"))
        assert rb.console_errors(driver) == []
    finally:
        driver.quit()
