"""The real web UI checks, written once and run by test_a1111.py, test_forge.py and test_sdnext.py.

Each `case_*` function states the behaviour a user must get; `w` is the harness install
(real_harness.WebUI), `browser` headless Chromium, `ui` the harness's selenium helpers, `prof` what
differs between the web UIs (tab labels, platform name, whether the memorization signal exists there).
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from dataclasses import dataclass

import pytest

import real_harness as rh
from real_harness import EXT_SRC

COPY_VERDICTS = ("possible copy", "likely copy", "duplicate")
SETTINGS_CHANGED = {"replicheck_top_k": 2, "replicheck_sscd_likely": 0.6, "replicheck_pdq_likely": 24}
SETTINGS_DEFAULTS = {"replicheck_top_k": 5, "replicheck_sscd_likely": 0.75, "replicheck_pdq_likely": 31}
UNRELATED = ("jpeg_quality", 80, 81)  # Settings -> Saving images/grids
AUTH = ("rcuser", "rc-secret")
#: gradio's own page (3.41 and 4.40) asks cdnjs for iframeResizer: no network here, and not the extension's request
GRADIO_CDN = re.compile(r"^SEVERE https://cdnjs\.cloudflare\.com/ajax/libs/iframe-resizer/[0-9.]+/"
                        r"iframeResizer\.contentWindow\.min\.js - Failed to load resource")


@dataclass(frozen=True)
class Profile:
    platform: str       # what /replicheck/v1/status says: automatic1111 | forge | sdnext
    txt2img_tab: str    # the top-level tab's label
    signal: bool        # whether the memorization signal is measured there (AUTOMATIC1111 only)


A1111 = Profile("automatic1111", "txt2img", True)
FORGE = Profile("forge", "Txt2img", False)
#: Forge Neo runs the Forge glue (platform "forge"); its sampling hands the post-CFG functions what Forge's does
FORGE_NEO = Profile("forge", "Txt2img", True)


def _rb():
    import real_browser

    return real_browser


def _log_problems(text: str) -> list[str]:
    """Tracebacks and errors in the web UI's log (the harness README lists the known, unrelated noise)."""
    return [line for line in text.splitlines()
            if re.search(r"Traceback|TypeError|Error running|Error loading script|Error completing request", line)]


def _mask_png(size, box: int = 40) -> bytes:
    from PIL import Image, ImageDraw

    mask = Image.new("L", size, 0)
    x, y = size[0] // 2 - box // 2, size[1] // 2 - box // 2
    ImageDraw.Draw(mask).rectangle([x, y, x + box - 1, y + box - 1], fill=255)
    return rh.png_bytes(mask)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _best(value: str | None) -> str | None:
    """The best similarity an infotext or a report summary names: 'likely copy (best 0.94 in demo)' -> '0.94'."""
    m = re.search(r"\bbest (-?\d+\.\d\d) in ", value or "")
    return m.group(1) if m else None


def _open(ui, browser, w) -> None:
    ui.console(browser)  # drop the previous page's console lines
    ui.open_ui(browser, w.url)


# -- 1. Install from URL ---------------------------------------------------------------------------------

def case_install_from_url(w, browser, ui, prof: Profile) -> None:
    """Extensions -> Install from URL (git daemon serving the committed HEAD) -> Apply and restart UI:
    the extension loads, its routes answer, and the start-up log has no error of ours."""
    if w.ext_dir.exists():  # installed by another test run first: back to a fresh install
        w.stop()
        w.reset()
        w.add_passthrough()
    w.ensure(installed=False)
    _open(ui, browser, w)
    result = _rb().install_from_url(ui, browser, w.git_url)  # the URL box found by its label (any gradio)
    assert "Installed into" in result, result
    installed = subprocess.run(["git", "-C", str(w.ext_dir), "rev-parse", "HEAD"], capture_output=True,
                               text=True).stdout
    assert installed.strip() == w.served_head(), "the installed extension is not the served committed HEAD"

    ui.tab(browser, "Installed", nav="#tabs_extensions > .tab-nav")
    _rb().wait_js(browser, "return document.querySelectorAll('#extensions input[name=\"enable_replicheck\"]').length",
                  120, "replicheck in the Installed table")
    w.mark_log()
    browser.execute_script("arguments[0].click()", ui.button(browser, "Apply and restart UI", "#tabs_extensions"))
    w.wait_restarted(browser)
    status = w.get("replicheck/v1/status").body
    assert status["platform"] == prof.platform, status
    log = w.log_since_mark()
    assert "replicheck" in log.lower(), "install.py / the extension said nothing at start-up"
    problems = _log_problems(log)
    assert not problems, "errors in the web UI log after the restart:\n" + "\n".join(problems)


# -- 2. Settings -----------------------------------------------------------------------------------------

def case_settings_page_loads_without_errors(w, browser, ui, prof: Profile) -> None:
    """Opening the Settings page (and the Replicheck section, and its refresh button) gives no console
    error, no failed request or queue event, no 'Error' badge, no traceback in the log."""
    rb = _rb()
    w.ensure()
    w.mark_log()
    _open(ui, browser, w)
    ui.tab(browser, "Settings")
    ui.tab(browser, "Replicheck", nav="#settings > .tab-nav")
    time.sleep(8)
    refresh = browser.find_elements("css selector", "#refresh_replicheck_packs")
    if refresh:
        browser.execute_script("arguments[0].click()", refresh[0])
        time.sleep(4)
    problems = {
        "console": [c for c in rb.severe_console(ui, browser) if not GRADIO_CDN.search(c)],
        "requests": rb.bad_requests(browser),
        "badges": rb.error_badges(browser, "#tab_settings"),
        "log": _log_problems(w.log_since_mark()),
    }
    assert not any(problems.values()), f"the Settings page has errors: {problems}"
    assert browser.find_elements("css selector", "#setting_replicheck_top_k"), "no replicheck settings on the page"


def _read_setting(browser, key: str) -> float:
    v = browser.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.value : null;",
        f"#setting_{key} input[type=number]")
    assert v is not None, f"no number input for {key}"
    return float(v)


def _apply_settings(ui, browser) -> str:
    """Click Apply settings on a freshly loaded page (its result box starts empty) and return the result."""
    rb = _rb()
    ui.click(browser, "#settings_submit")
    return rb.wait_js(browser, "var r = document.querySelector('#settings_result'); var t = r && r.textContent.trim();"
                               "return t && /changed|save/i.test(t) ? t : null;", 120, "the Apply settings result")


def case_settings_apply_keeps_values(w, browser, ui, prof: Profile) -> None:
    """Change top-k, the SSCD likely and PDQ likely tiers, Apply: config.json has them, a reload shows
    them; then Apply a change of an unrelated setting: the replicheck values are still in config.json."""
    w.ensure()
    try:
        _open(ui, browser, w)
        ui.tab(browser, "Settings")
        ui.tab(browser, "Replicheck", nav="#settings > .tab-nav")
        time.sleep(3)
        for key, value in SETTINGS_CHANGED.items():
            ui.set_number(browser, f"#setting_{key} input[type=number]", value)
        time.sleep(1)
        result = _apply_settings(ui, browser)
        cfg = w.config()
        assert {k: cfg.get(k) for k in SETTINGS_CHANGED} == pytest.approx(SETTINGS_CHANGED), \
            f"config.json after Apply ({result!r})"

        _open(ui, browser, w)
        ui.tab(browser, "Settings")
        ui.tab(browser, "Replicheck", nav="#settings > .tab-nav")
        time.sleep(3)
        shown = {k: _read_setting(browser, k) for k in SETTINGS_CHANGED}
        assert shown == pytest.approx(SETTINGS_CHANGED), "the Settings page after a reload"

        key, _, new = UNRELATED
        ui.tab(browser, "Saving images/grids", nav="#settings > .tab-nav")
        time.sleep(2)
        ui.set_number(browser, f"#setting_{key} input[type=number]", new)
        time.sleep(1)
        result = _apply_settings(ui, browser)
        cfg = w.config()
        assert cfg.get(key) == new, f"the unrelated setting was not applied ({result!r})"
        assert {k: cfg.get(k) for k in SETTINGS_CHANGED} == pytest.approx(SETTINGS_CHANGED), \
            f"Apply of an unrelated setting changed the replicheck values in config.json ({result!r})"
    finally:
        w.set_options(SETTINGS_DEFAULTS | {UNRELATED[0]: UNRELATED[1]})


# -- 3. Generation with the demo pack --------------------------------------------------------------------

def case_txt2img_panel_and_infotext(w, browser, ui, prof: Profile) -> None:
    """Generate in the browser with the demo pack installed (downloaded by the pack manager from the
    registry on 127.0.0.1): the panel under the gallery fills with the image's card, the infotext has
    the verdict and the memorization signal."""
    rb = _rb()
    w.ensure()
    w.install_demo_pack()
    _open(ui, browser, w)
    ui.tab(browser, prof.txt2img_tab)
    info = rb.generate_txt2img(ui, browser, "a photo of an astronaut riding a horse", seed=11)
    value = rh.infotext_value(info, "Replicheck")
    assert value is not None and re.search(r"\bdemo\b", value), f"no Replicheck verdict for the demo pack in: {info!r}"
    if prof.signal:
        assert rh.infotext_value(info, "Replicheck memorization") is not None, f"no memorization signal in {info!r}"
    shown = rb.wait_panel(browser, "txt2img", lambda p: p["state"] == "done" and p["cards"]
                          and all(c[1] != "pending" for c in p["cards"]), 60, "the finished card")
    assert len(shown["cards"]) == 1, shown
    assert "demo" in shown["text"], shown
    assert not [b for b in rb.bad_requests(browser) if "replicheck" in b], "failed replicheck requests"


def case_tab_builds_a_csv_recipe(w, browser, ui, prof: Profile) -> None:
    """The Replicheck tab builds a CSV recipe (the suggested recipe's kind) in the web UI's own Python,
    which has neither pyarrow nor img2dataset from replicheck: a registry and four photos served on
    127.0.0.1 by this test, Refresh list, choose the recipe, Build; the progress line ends installed
    and the pack is listed."""
    import hashlib
    import json

    from httpfaults import FaultServer

    rb = _rb()
    w.ensure()
    photos = sorted((EXT_SRC / "lib_replicheck" / "demo_images" / "pack").glob("*.jpg"))[:4]
    server = FaultServer()
    try:
        rows = [f"{server.add(f'/img/{p.name}', p.read_bytes())};{p.stem}" for p in photos]
        rows.append(f"{server.url}/img/gone.jpg;gone")
        body = ("URL;Caption\n" + "\n".join(rows) + "\n").encode()
        server.add("/local.csv", body)
        entry = {"kind": "recipe", "name": "local-photos", "title": "four photos on 127.0.0.1",
                 "embedder": {"id": "pdq"},
                 "list": {"format": "csv", "delimiter": ";", "columns": {"url": "URL", "caption": "Caption"},
                          "files": [{"urls": ["local.csv"], "size": len(body),
                                     "sha256": hashlib.sha256(body).hexdigest()}]},
                 "build": {"image_size": 256, "download_timeout": 5}}
        registry = server.add("/registry.json", json.dumps({"format": "replicheck-registry", "format_version": 1,
                                                            "packs": [entry]}).encode())
        if (w.packs_dir / "local-photos").exists():
            w.request("DELETE", "replicheck/v1/packs/local-photos", timeout=60)
        w.set_options({"replicheck_registries": registry})
        _open(ui, browser, w)
        ui.tab(browser, "Replicheck")
        ui.click(browser, "#replicheck_refresh")
        rb.wait_js(browser, "var t = document.querySelector('#replicheck_message'); return t && "
                            "/Read 1 registry/.test(t.textContent) ? t.textContent : null;", 120, "the registry read")
        assert rb.choose(browser, "replicheck_pack_name", "local-photos") == "local-photos"
        ui.click(browser, "#replicheck_build")
        text = rb.wait_js(browser, "var t = (document.querySelector('#replicheck_downloads') || {}).textContent || '';"
                                   "return /local-photos: (installed|failed|cancelled)/.test(t) ? t : null;", 600,
                          "the build's end in the progress line")
        assert "local-photos: installed - 4 images in the pack: 4 of 5 fetched, 1 failed" in text, text
        packs = w.get("replicheck/v1/packs").body
        assert any(p["name"] == "local-photos" for p in packs["installed"]), packs
        assert not [b for b in rb.bad_requests(browser) if "replicheck" in b], "failed replicheck requests"
    finally:
        server.close()
        w.set_options({"replicheck_registries": ""})
        if (w.packs_dir / "local-photos").exists():
            w.request("DELETE", "replicheck/v1/packs/local-photos", timeout=60)


def case_batch_grid_infotext(w, prof: Profile) -> None:
    """A 2x2 batch: the grid's infotext (image 1's seed) must not carry image 4's replicheck values."""
    w.ensure()
    w.install_demo_pack()
    out = w.txt2img(prompt="a red rocket on a launch pad", seed=21, batch_size=2, n_iter=2, save_images=True,
                    **prof_kw(prof))
    texts = rh.infotexts(out)
    assert len(texts) == 5, f"expected the grid's infotext and 4 images' (save_images makes the grid), got {len(texts)}"
    grid, first, last = texts[0], texts[1], texts[4]
    assert rh.infotext_value(grid, "Seed") == rh.infotext_value(first, "Seed")
    for key in ("Replicheck", "Replicheck memorization") if prof.signal else ("Replicheck",):
        g, v1, v4 = (rh.infotext_value(t, key) for t in (grid, first, last))
        assert v4 is not None, f"image 4 has no {key!r} entry: {last!r}"
        if v4 != v1:
            assert g != v4, f"the grid's {key!r} is image 4's value {v4!r} (image 1: {v1!r})"


# -- 4. Inpainting ---------------------------------------------------------------------------------------

def _coffee():
    from PIL import Image

    data = (rh.DEMO_IMAGES / "coffee.jpg").read_bytes()
    return data, Image.open(io.BytesIO(data)).size


def _inpaint_request(prompt: str) -> dict:
    data, size = _coffee()
    return {"init_images": [_b64(data)], "mask": _b64(_mask_png(size)), "prompt": prompt, "seed": 3, "steps": 4,
            "sampler_name": "Euler", "cfg_scale": 7, "denoising_strength": 0.1, "inpainting_fill": 1,
            "inpaint_full_res": False, "mask_blur": 4, "width": 512, "height": 344, "save_images": True}


def _newest_png(folder, since: float):
    pngs = [p for p in folder.rglob("*.png") if p.stat().st_mtime >= since]
    return max(pngs, key=lambda p: p.stat().st_mtime) if pngs else None


def case_inpainting_passthrough(w, prof: Profile) -> None:
    """img2img inpainting whose output is the input photo (the harness's passthrough extension stands
    in for a model that reproduces it): the saved PNG is coffee.jpg, and its Replicheck verdict says copy."""
    from PIL import Image

    w.ensure()
    w.install_demo_pack()
    t0 = time.time() - 1
    out = w.img2img(**_inpaint_request("[passthrough] a cup of coffee"))
    value = rh.infotext_value(rh.infotexts(out)[0], "Replicheck")
    saved = _newest_png(w.install / "outputs" / "img2img-images", t0)
    assert saved is not None, "no PNG saved"
    check = w.check_image(saved.read_bytes()).body
    assert check["verdict"] in COPY_VERDICTS, f"the saved PNG is not coffee.jpg to the checker: {check}"
    png_value = rh.infotext_value(Image.open(saved).info.get("parameters", ""), "Replicheck")
    assert png_value == value, "the PNG's infotext differs from the API's"
    assert rh.verdict_word(value) in COPY_VERDICTS, \
        f"the saved PNG is a copy of coffee.jpg (check: {check['verdict']} d={check['best']['distance']}) but its " \
        f"infotext says {value!r}"


def case_inpainting_overlay(w, prof: Profile) -> None:
    """Inpainting without passthrough (a 40x40 mask, fill 1, not full-res, denoising 0.1): the web UI
    pastes the result onto the input photo; the verdict written into the image must be the verdict of
    that final image (the same best similarity as checking the returned image), not of the model's raw output."""
    w.ensure()
    w.install_demo_pack()
    out = w.img2img(**_inpaint_request("a cup of coffee"))
    value = rh.infotext_value(rh.infotexts(out)[0], "Replicheck")
    final = rh.decode_b64_image(out["images"][0])
    check = w.check_image(rh.png_bytes(final)).body
    assert check.get("best"), check
    assert value is not None, "no Replicheck entry in the inpainting infotext"
    assert _best(value) is not None and _best(value) == _best(check["summary"]) and \
        (rh.verdict_word(value) in COPY_VERDICTS) == check["is_copy"], \
        f"the infotext says {value!r}; the image it was written into checks as {check['verdict']} " \
        f"d={check['best']['distance']}"


def case_signed_record(w, prof: Profile) -> None:
    """Settings → Replicheck → Signed record on: the image the web UI saves carries a C2PA manifest that
    `verify` (c2pa-python here) reads back as valid, signed by the install's local certificate, with the
    same verdict as the infotext; the PNG info is still there. The web UI's Python needs c2pa-python."""
    from PIL import Image

    w.ensure()
    w.install_demo_pack()
    w.set_options({"replicheck_sign": "sign"})
    try:
        t0 = time.time() - 1
        out = w.txt2img(prompt="a cup of coffee on a saucer", seed=7, save_images=True, **prof_kw(prof))
        value = rh.infotext_value(rh.infotexts(out)[-1], "Replicheck")
        saved = _newest_png(w.install / "outputs", t0)
        assert saved is not None, "no PNG saved"
        html = case_live_panel_after(w).get("html") or ""
        assert "rc-sign-error" not in html, f"the panel says the image was not signed: {html[-600:]}"
        assert rh.infotext_value(Image.open(saved).info.get("parameters", ""), "Replicheck") == value
        _assert_signed(w, saved, value)
    finally:
        w.set_options({"replicheck_sign": "off"})


def _verify(w, path):
    """`verify --json --trust <the install's local CA>` on `path`: (exit code, its JSON answer)."""
    import json
    import os
    import sys

    ca = w.install / "models" / "replicheck" / "signing" / "local-ca.pem"
    r = subprocess.run([sys.executable, "-m", "lib_replicheck", "verify", "--json", "--trust", str(ca), str(path)],
                       cwd=rh.REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    return r.returncode, json.loads(r.stdout.splitlines()[-1])


def _assert_signed(w, path, value) -> None:
    """`path` carries a valid record signed by the install's local certificate, with the verdict `value`."""
    code, got = _verify(w, path)
    assert got["valid"] and got["trusted"] and not got["changed"], got
    assert got["verdict"] == rh.verdict_word(value), (got["verdict"], value)
    assert code == (1 if got["verdict"] in COPY_VERDICTS else 0), got


def case_signed_record_api(w, prof: Profile) -> None:
    """Signed record on: the image /sdapi/v1/txt2img returns (base64, nothing saved) carries the same
    record as a saved one would: `verify` reads it back as valid, with the infotext's verdict, and its
    PNG text is the web UI's `parameters` alone. Signing off: the API's image carries no record."""
    import base64
    import tempfile
    from pathlib import Path

    from PIL import Image

    w.ensure()
    w.install_demo_pack()
    w.set_options({"replicheck_sign": "sign"})
    try:
        out = w.txt2img(prompt="a cup of coffee on a saucer", seed=7, save_images=False, **prof_kw(prof))
        text = rh.infotexts(out)[-1]
        value = rh.infotext_value(text, "Replicheck")
        assert value is not None, f"infotext {text!r}"
        html = case_live_panel_after(w).get("html") or ""
        assert "rc-sign-error" not in html, f"the panel says the image was not signed: {html[-600:]}"
        with tempfile.TemporaryDirectory() as d:
            returned = Path(d) / "returned.png"
            returned.write_bytes(base64.b64decode(out["images"][-1]))
            assert Image.open(returned).text == {"parameters": text}, Image.open(returned).text
            _assert_signed(w, returned, value)
            w.set_options({"replicheck_sign": "off"})
            out = w.txt2img(prompt="a cup of coffee on a saucer", seed=7, save_images=False, **prof_kw(prof))
            unsigned = Path(d) / "unsigned.png"
            unsigned.write_bytes(base64.b64decode(out["images"][-1]))
            code, got = _verify(w, unsigned)
            assert code == 2 and not got["valid"], got
            assert Image.open(unsigned).info.get("parameters") == rh.infotexts(out)[-1]
    finally:
        w.set_options({"replicheck_sign": "off"})


# -- 5. No pack ------------------------------------------------------------------------------------------

def case_no_pack(w, browser, ui, prof: Profile) -> None:
    """No pack installed: the generation works, the infotext says 'Replicheck: not checked ...', and the
    panel says why instead of staying on 'generating...'."""
    rb = _rb()
    w.ensure()
    w.remove_demo_pack()
    _open(ui, browser, w)
    ui.tab(browser, prof.txt2img_tab)
    info = rb.generate_txt2img(ui, browser, "a cat on a sofa", seed=5)
    value = rh.infotext_value(info, "Replicheck")
    assert value is not None and value.startswith("not checked"), f"infotext {info!r}"
    time.sleep(6)  # a few polls after the end
    shown = rb.panel(browser, "txt2img")
    assert shown["state"] in ("no-pack", "error"), shown
    assert "pack" in shown["text"].lower(), shown
    assert not [c for c in shown["cards"] if c[1] == "pending"] and "generating" not in shown["text"], \
        f"a card still says generating after the generation ended: {shown}"


# -- 6. A pack damaged while loaded ----------------------------------------------------------------------

def case_truncated_pack(w, prof: Profile) -> None:
    """Check once (the pack loads), truncate its index.faiss to 0 bytes, check again: the web UI process
    survives, the answer is a clear error naming the pack or file (or the pack's in-memory answer), and
    generation still works."""
    w.ensure()
    w.install_demo_pack()
    data, _ = _coffee()
    first = w.check_image(data)
    assert first.status == 200 and first.body["verdict"] in COPY_VERDICTS, first.text[:500]
    w.mark_log()
    pgid = w.pgid()
    (w.packs_dir / "demo" / "index.faiss").write_bytes(b"")
    try:
        second = w.check_image(data)
    except Exception as e:  # noqa: BLE001 - the connection dropped: the process died
        second = rh.Response(0, None, f"{type(e).__name__}: {e}")
    time.sleep(3)
    died = rh.kill_signal_in_log(w.log_since_mark())
    assert w.alive() and w.pgid() == pgid and not died, f"the web UI died: {died or second.text[:300]}"
    assert w.get("sdapi/v1/options", timeout=60).status == 200
    body = second.body if isinstance(second.body, dict) else {}
    message = str(body.get("error") or body.get("detail") or "")
    same_as_before = second.status == 200 and not body.get("error") and body.get("best") == first.body["best"]
    clear_error = bool(message) and ("demo" in message or "index.faiss" in message) and "Traceback" not in message
    assert clear_error or same_as_before, f"answer after truncation: {second.status} {second.text[:500]}"
    out = w.txt2img(prompt="a lighthouse", seed=7)
    assert len(out["images"]) == 1
    w.remove_demo_pack()


# -- 7. --api-auth ---------------------------------------------------------------------------------------

def case_api_auth(w, browser, ui, prof: Profile) -> None:
    """With --api-auth user:pass: the /replicheck/v1 routes refuse API clients without credentials and
    answer with them (/check and changing routes too), and the page's panel still fills (its polling
    gets no 401)."""
    rb = _rb()
    w.ensure("--api-auth", f"{AUTH[0]}:{AUTH[1]}")
    for path in ("replicheck/v1/status", "replicheck/v1/live", "replicheck/v1/packs"):  # a plain API client
        assert w.get(path, auth=None, panel_header=False).status == 401, f"{path} answers without credentials"
        assert w.get(path, auth=("rcuser", "wrong"), panel_header=False).status == 401, \
            f"{path} answers to a wrong password"
        assert w.get(path, panel_header=False).status == 200, f"{path} refuses the right credentials"
    data, _ = _coffee()
    assert w.post("replicheck/v1/check", {"image": _b64(data)}, auth=None).status == 401, \
        "/check answers without credentials"
    assert w.post("replicheck/v1/packs/demo/download", auth=None).status == 401, \
        "a changing route answers without credentials"
    w.install_demo_pack()
    ok = w.check_image(data)
    assert ok.status == 200, f"/check refuses the right credentials: {ok.status} {ok.text[:300]}"
    _open(ui, browser, w)
    ui.tab(browser, prof.txt2img_tab)
    info = rb.generate_txt2img(ui, browser, "a bowl of fruit", seed=9)
    assert rh.infotext_value(info, "Replicheck") is not None, info
    time.sleep(3)
    refused = [b for b in rb.bad_requests(browser, clear=False) if "replicheck" in b]
    shown = rb.panel(browser, "txt2img")
    assert not refused, f"the page's replicheck requests were refused: {refused[:5]}"
    polls = browser.execute_script("return (window.__rcAll || []).filter(function (x) { return x.indexOf('replicheck') >= 0; })"
                                   ".slice(-5);")
    assert shown["state"] == "done" and shown["cards"] and all(c[1] != "pending" for c in shown["cards"]), \
        f"the panel did not fill: {shown}; last replicheck requests of the page: {polls}; console: " \
        f"{rb.severe_console(ui, browser)[-5:]}"


# -- SD.Next: Manual install, and the checks through the API -------------------------------------------

SDNEXT = Profile("sdnext", "Text", False)


def case_sdnext_manual_install(w, browser, ui, prof: Profile) -> None:
    """Extensions -> Manual install (runs install.py), then a restart: the extension loads on SD.Next."""
    if w.ext_dir.exists():
        w.stop()
        w.reset()
        w.add_passthrough()
    w.ensure(installed=False)
    _open(ui, browser, w)
    ui.tab(browser, "Extensions")
    ui.tab(browser, "Manual install", nav="#tabs_extensions > .tab-nav")
    for label, text in (("Extension GIT repository URL", w.git_url), ("Local directory name", rh.EXT_NAME)):
        box = _rb().textbox_by_label(browser, label)
        box.clear()
        box.send_keys(text)
    time.sleep(1)
    w.mark_log()
    browser.execute_script("arguments[0].click()", ui.button(browser, "Install", "#tabs_extensions"))
    result = _rb().wait_js(browser, "var e = document.querySelector('#extension_info'); var t = e && e.textContent.trim();"
                                    "return t && !/^(queue|processing|[0-9.]+s$)/i.test(t) ? t : null;", 900,
                           "the Manual install result")  # gradio shows the elapsed time ('0.2s') first
    assert "Extension installed" in result, result
    installed = subprocess.run(["git", "-C", str(w.ext_dir), "rev-parse", "HEAD"], capture_output=True,
                               text=True).stdout
    assert installed.strip() == w.served_head(), "the installed extension is not the served committed HEAD"
    w.stop()
    w.start()
    status = w.get("replicheck/v1/status").body
    assert status["platform"] == prof.platform, status
    problems = [line for line in _log_problems(w.log_since_mark()) + w.log_since_mark().splitlines()
                if "replicheck" in line.lower() and re.search(r"error|traceback|exception", line, re.I)]
    assert not problems, "errors about replicheck in the log:\n" + "\n".join(problems)


def case_live_panel_after(w, tab: str = "txt2img") -> dict:
    """What the page's panel would show now (the /live answer the panel script polls)."""
    r = w.get("replicheck/v1/live", params={"tab": tab, "since": -1})
    assert r.status == 200, r.text[:300]
    return r.body


def case_api_txt2img_verdict(w, prof: Profile) -> None:
    """txt2img through /sdapi/v1 with the demo pack: the infotext has the verdict, the panel's data is done."""
    w.ensure()
    w.install_demo_pack()
    out = w.txt2img(prompt="a photo of an astronaut", seed=11, **prof_kw(prof))
    value = rh.infotext_value(rh.infotexts(out)[-1], "Replicheck")
    assert value is not None and re.search(r"\bdemo\b", value), rh.infotexts(out)
    live = case_live_panel_after(w)
    assert live["state"] == "done" and live["verdicts"] and None not in live["verdicts"], live
    assert 'data-verdict="pending"' not in (live["html"] or ""), live["html"]


def case_api_no_pack(w, prof: Profile) -> None:
    """No pack: 'Replicheck: not checked ...' in the infotext; the panel's data says why, nothing pending."""
    w.ensure()
    w.remove_demo_pack()
    out = w.txt2img(prompt="a cat on a sofa", seed=5, **prof_kw(prof))
    value = rh.infotext_value(rh.infotexts(out)[-1], "Replicheck")
    assert value is not None and value.startswith("not checked"), rh.infotexts(out)
    live = case_live_panel_after(w)
    assert live["state"] in ("no-pack", "error"), live
    html = live["html"] or ""
    assert 'data-verdict="pending"' not in html and "generating" not in html, html


def prof_kw(prof: Profile) -> dict:
    """Request fields that differ: SD.Next names its samplers differently (its default is used there)."""
    return {"sampler_name": None} if prof.platform == "sdnext" else {}
