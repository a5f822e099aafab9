"""The extension inside the (fake) web UI: hooks in the real order, settings, infotext, saving, API."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from conftest import edits, photo_folder
from lib_replicheck import embedders
from lib_replicheck.images import load_image
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items


@pytest.fixture(scope="session")
def novel(other_photos):
    return [load_image(p).resize((512, 384)) for p in other_photos[:4]]


@pytest.fixture(scope="session")
def built_pack(tmp_path_factory, pack_photos):
    src = photo_folder(tmp_path_factory.mktemp("src"), pack_photos[:8], "training image {stem}")
    return build_from_items(sources.folder(src, license="test"), embedders.load("pdq"),
                            tmp_path_factory.mktemp("built") / "photos", log=lambda s: None).path


@pytest.fixture
def installed(webui, built_pack):
    dst = webui.packs_dir / "photos"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(built_pack, dst)
    yield dst
    webui.module.service.unload()
    shutil.rmtree(dst, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean(webui):
    from modules import errors

    errors.reported.clear()
    for key, value in {"replicheck_on_copy": "Warn only", "replicheck_infotext": True, "replicheck_packs": [],
                       "replicheck_keep_loaded": True}.items():
        webui.set_option(key, value)
    shutil.rmtree(webui.outdir, ignore_errors=True)
    yield
    assert errors.reported == [], "the web UI reported an exception from a hook"


def _source(webui, images_by_index):
    webui.processing.image_source = lambda p, index, seed: images_by_index[index % len(images_by_index)]


def _copy(photo):
    return edits(photo)["resized 0.5x"].resize((512, 384))


def test_settings_are_registered(webui):
    labels = webui.shared.opts.data_labels
    keys = [k for k in labels if k.startswith("replicheck_")]
    assert {"replicheck_enabled", "replicheck_packs", "replicheck_top_k", "replicheck_sscd_possible",
            "replicheck_sscd_likely", "replicheck_sscd_duplicate", "replicheck_pdq_likely", "replicheck_device",
            "replicheck_keep_loaded", "replicheck_remote_thumbnails", "replicheck_on_copy",
            "replicheck_infotext"} <= set(keys)
    for k in keys:
        assert labels[k].section == ("replicheck", "Replicheck") and labels[k].category_id == "postprocessing"
        assert "class='info'" in labels[k].comment_after
    assert labels["replicheck_sscd_possible"].default == 0.5 and labels["replicheck_sscd_likely"].default == 0.75
    assert labels["replicheck_pdq_likely"].default == 31 and labels["replicheck_device"].default == "cpu"
    assert webui.shared.opts.replicheck_enabled is True


def test_no_pack_leaves_generation_untouched(webui, novel, caplog):
    from lib_replicheck.webui.panel import render

    _source(webui, novel)
    p, processed = webui.txt2img(batch_size=2)
    assert len(processed.images) == 3  # grid + 2
    # each image says it was not checked and why; the grid carries no verdict
    assert [t.count("Replicheck: not checked (no pack installed)") for t in processed.infotexts] == [0, 1, 1]
    job = webui.module.service.live.get("txt2img")
    assert job.state == "no-pack" and "No pack installed" in job.message
    html = render(job.reports, state=job.state, message=job.message, signals=job.signals, expected=job.expected)
    assert "generating" not in html and html.count("not checked") == 2  # the cards leave "generating..."
    _, plain = webui.txt2img(enabled=False, batch_size=2)
    for a, b in zip(processed.images, plain.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_batches_are_checked_live_with_infotext(webui, installed, photos, novel):
    from modules.api.api import parse_info

    # batch size 2, batch count 2: image 0 and 3 copy training images, 1 and 2 are new
    _source(webui, [_copy(photos[0]), novel[0], novel[1], _copy(photos[3])])
    seen_live = []
    original_add = webui.module.service.live.add

    def spy(job, index, report):
        original_add(job, index, report)
        seen_live.append((index, len(job.reports), job.state))

    webui.module.service.live.add = spy
    try:
        p, processed = webui.txt2img(batch_size=2, n_iter=2)
    finally:
        webui.module.service.live.add = original_add
    assert [s[:2] for s in seen_live] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(state == "checking" for _, _, state in seen_live)  # shown while later images are generated
    job = webui.module.service.live.get("txt2img")
    assert job.state == "done" and sorted(job.reports) == [0, 1, 2, 3]  # 4 images checked, the grid not
    verdicts = [job.reports[i].verdict.value for i in range(4)]
    assert verdicts == ["likely copy", "no copy", "no copy", "likely copy"]
    assert job.reports[0].best.caption == f"training image {installed_stem(installed, job.reports[0])}"
    infotexts = processed.infotexts[1:]
    assert re.search(r"Replicheck: likely copy \(best [01]\.\d\d in photos\)", infotexts[0])
    assert "Replicheck: no match" not in infotexts[1] and "Replicheck: no copy (best 0." in infotexts[1]
    assert re.search(r"Replicheck: likely copy \(best [01]\.\d\d in photos\)", infotexts[3])
    assert "d=" not in "".join(infotexts)
    # the grid comes first and is not checked: it carries no image's verdict
    assert "Replicheck" not in processed.infotexts[0]
    grids = sorted((webui.root / "outputs" / "txt2img-images-grids").glob("*.png"))
    assert grids and "Replicheck" not in Image.open(grids[-1]).info["parameters"]
    assert [t.split("Seed: ")[1].split(",")[0] for t in processed.infotexts[1:]] == ["1234", "1235", "1236", "1237"]
    saved = sorted(p for p in (webui.root / "outputs" / "txt2img-images").glob("*.png"))
    assert len(saved) == 4
    assert "Replicheck: likely copy" in Image.open(saved[0]).info["parameters"]
    info = parse_info(processed.js())
    assert info["infotexts"][1].count("Replicheck") == 1


def installed_stem(pack_dir, report):
    return report.best.source.rsplit(".", 1)[0]


def test_hires_fix_images_are_checked(webui, installed, photos):
    _source(webui, [_copy(photos[1]).resize((256, 192))])
    p, processed = webui.txt2img(enable_hr=True, hr_scale=2.0)
    assert processed.images[0].size == (512, 384)
    job = webui.module.service.live.get("txt2img")
    assert job.reports[0].verdict.value == "likely copy"


def test_img2img_match_already_in_the_input(webui, installed, photos, novel):
    _source(webui, [_copy(photos[2]), novel[2]])
    p, processed = webui.img2img([photos[2]], batch_size=2)
    job = webui.module.service.live.get("img2img")
    assert job.input_reports[0].is_copy
    first, second = job.reports[0], job.reports[1]
    assert first.is_copy and first.from_input and any("already in the img2img input" in n for n in first.notes)
    assert not second.is_copy
    assert "already in the input image" in processed.infotexts[1]
    # the match came from the input: not flagged in the heading, no gallery badge, no double brackets
    from fastapi.testclient import TestClient

    live = TestClient(webui.app).get("/replicheck/v1/live", params={"tab": "img2img"}).json()
    assert live["flagged"] == [False, False] and live["verdicts"][0] == "likely copy"
    assert 'data-flagged="0"' in live["html"] and "No copy found in 2 image(s)" in live["html"]
    assert "))" not in live["html"]


def test_dont_save_flagged_images(webui, installed, photos, novel):
    webui.set_option("replicheck_on_copy", "Warn and do not save the image")
    _source(webui, [_copy(photos[4]), novel[3]])
    p, processed = webui.txt2img(batch_size=2)
    saved = sorted((webui.root / "outputs" / "txt2img-images").glob("*.png"))
    assert len(saved) == 1 and "Replicheck: no copy" in Image.open(saved[0]).info["parameters"]
    assert len(processed.images) == 3  # still shown in the gallery, with its warning
    assert len(list((webui.root / "outputs" / "txt2img-images-grids").glob("*.png"))) >= 1


def test_infotext_setting_off(webui, installed, photos):
    webui.set_option("replicheck_infotext", False)
    _source(webui, [_copy(photos[0])])
    _, processed = webui.txt2img()
    assert "Replicheck" not in processed.infotexts[0]
    assert webui.module.service.live.get("txt2img").reports[0].is_copy


def test_disabled_for_one_generation(webui, installed, photos):
    _source(webui, [_copy(photos[0])])
    _, processed = webui.txt2img(enabled=False)
    assert "Replicheck" not in processed.infotexts[0]
    assert webui.module.service.live.get("txt2img").state == "disabled"


def _generate_twice_compare(webui, photos):
    _source(webui, [_copy(photos[0]), photos[5].resize((512, 384))])
    _, with_rc = webui.txt2img(batch_size=2)
    _, without = webui.txt2img(batch_size=2, enabled=False)
    for a, b in zip(with_rc.images, without.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    return with_rc


def test_corrupt_pack_leaves_images_untouched(webui, installed, photos, caplog):
    (installed / "index.faiss").write_bytes(b"broken")
    caplog.set_level(logging.WARNING, logger="replicheck")
    processed = _generate_twice_compare(webui, photos)
    job = webui.module.service.live.get("txt2img")
    assert job.state == "disabled"  # the last run was the one without replicheck
    processed_first = processed
    assert "Replicheck: not checked (error)" in processed_first.infotexts[1]
    assert str(installed) not in processed_first.infotexts[1]  # no local path in published metadata
    lines = [r.getMessage() for r in caplog.records if r.name == "replicheck"]
    assert len(lines) == 1 and "index.faiss" in lines[0] and "Traceback" not in lines[0]


def test_failing_embedder_then_recovery(webui, installed, photos, monkeypatch, caplog):
    from lib_replicheck.embedders.pdq import PDQEmbedder

    def boom(self, images):
        raise MemoryError()

    monkeypatch.setattr(PDQEmbedder, "embed", boom)
    caplog.set_level(logging.WARNING, logger="replicheck")
    processed = _generate_twice_compare(webui, photos)
    assert "Replicheck: not checked (error)" in processed.infotexts[1]
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.undo()
    _source(webui, [_copy(photos[0])])
    _, again = webui.txt2img()
    assert "Replicheck: likely copy" in again.infotexts[0]  # the next generation tries again


def test_unload_after_each_job(webui, installed, photos):
    webui.set_option("replicheck_keep_loaded", False)
    _source(webui, [_copy(photos[0])])
    webui.txt2img()
    assert webui.module.service.status()["loaded"] is False


# -- HTTP API ---------------------------------------------------------------------------------------

@pytest.fixture
def client(webui):
    from fastapi.testclient import TestClient

    return TestClient(webui.app)


def _b64(im, fmt="PNG"):
    buf = io.BytesIO()
    im.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_sdapi_txt2img_carries_the_verdict_in_info(webui, installed, photos, client):
    _source(webui, [_copy(photos[6])])
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "alwayson_scripts": {"replicheck": {"args": [True]}}})
    assert r.status_code == 200
    info = json.loads(r.json()["info"])
    assert "Replicheck: likely copy" in info["infotexts"][0]
    assert info["extra_generation_params"]["Replicheck"].startswith("likely copy")
    assert not list((webui.root / "outputs" / "txt2img-images").glob("*.png"))  # API default: not saved
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "alwayson_scripts": {"replicheck": {"args": [False]}}})
    assert "Replicheck" not in json.loads(r.json()["info"])["infotexts"][0]


def test_sdapi_img2img(webui, installed, photos, client):
    _source(webui, [_copy(photos[7])])
    r = client.post("/sdapi/v1/img2img", json={"init_images": [_b64(photos[1])], "prompt": "x"})
    assert r.status_code == 200
    assert "Replicheck: likely copy" in json.loads(r.json()["info"])["infotexts"][0]
    assert webui.module.service.live.get("img2img").input_reports[0].is_copy


def test_inpainting_is_checked_as_saved(webui, installed, photos, novel, client):
    """Inpainting a small area: the web UI pastes the model's output into the input image after
    postprocess_image; the saved image is the input photo, a training image, and must be judged so."""
    webui.set_option("replicheck_check_input", False)
    try:
        _source(webui, [novel[0]])  # the model's output: a new image
        mask = Image.new("L", (512, 384), 0)
        mask.paste(255, (236, 172, 276, 212))  # 40x40 in the middle (PDQ: d=28 from the original)
        r = client.post("/sdapi/v1/img2img", json={
            "init_images": [_b64(_copy(photos[1]))], "mask": _b64(mask), "prompt": "x", "width": 512,
            "height": 384, "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 0.1})
        assert r.status_code == 200, r.text
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")
        assert np.abs(np.asarray(out, np.int16) - np.asarray(_copy(photos[1]), np.int16)).mean() < 8
        assert "Replicheck: likely copy" in json.loads(r.json()["info"])["infotexts"][0]
        assert webui.module.service.live.get("img2img").reports[0].is_copy
    finally:
        webui.set_option("replicheck_check_input", True)


def test_replicheck_api(webui, installed, photos, novel, client):
    r = client.post("/replicheck/v1/check", json={"image": _b64(_copy(photos[3]), "JPEG"), "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["is_copy"] and body["verdict"] == "likely copy" and len(body["matches"]) == 2
    assert "thumbnail" not in body["best"]  # no local paths leave the machine
    r = client.post("/replicheck/v1/check", json={"image": "data:image/png;base64," + _b64(novel[0])})
    assert r.status_code == 200 and r.json()["is_copy"] is False
    packs = client.get("/replicheck/v1/packs").json()
    assert [p["name"] for p in packs["installed"]] == ["photos"] and packs["installed"][0]["embedder"] == "pdq"
    status = client.get("/replicheck/v1/status").json()
    assert status["installed_packs"] == ["photos"] and status["platform"] == "automatic1111"


def test_replicheck_api_bad_requests(client, installed, photos):
    json_type = {"Content-Type": "application/json"}
    assert client.post("/replicheck/v1/check", json={"image": "!!!notbase64"}).status_code == 422
    r = client.post("/replicheck/v1/check", json={"image": base64.b64encode(b"not an image").decode()})
    assert r.status_code == 422 and r.json()["detail"].startswith("field 'image': not an image")
    assert "BytesIO" not in r.text
    r = client.post("/replicheck/v1/check", json={"nope": 1})
    assert r.status_code == 422 and r.json()["detail"].startswith("field 'image'")
    assert client.post("/replicheck/v1/check", content=b"[1, 2]", headers=json_type).status_code == 422
    assert client.post("/replicheck/v1/check", content=b"{", headers=json_type).status_code == 422
    # a body that is not declared JSON is what a no-cors cross-site form sends: refused
    assert client.post("/replicheck/v1/check", content=b'{"image": "x"}').status_code == 415
    big = b'{"image": "' + b"A" * (21 * 1024 * 1024) + b'"}'
    assert client.post("/replicheck/v1/check", content=big, headers=json_type).status_code == 413
    # a PNG header declaring 10001 x 10001 pixels: refused from the header, at the command line's cap
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10001, 10001, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    r = client.post("/replicheck/v1/check", json={"image": base64.b64encode(bomb).decode()})
    assert r.status_code == 422 and r.json()["detail"].startswith("field 'image': 10001x10001 pixels is over")
    # a pack the request names that is not installed: the pack is named, nothing is checked
    r = client.post("/replicheck/v1/check", json={"image": _b64(photos[0]), "packs": ["nosuch"]})
    assert r.status_code == 404 and "nosuch" in r.json()["detail"] and "photos" in r.json()["detail"]


def test_live_route_serves_the_panel(webui, installed, photos, client):
    _source(webui, [_copy(photos[0]), photos[5].resize((512, 384))])
    webui.txt2img(batch_size=2)
    live = client.get("/replicheck/v1/live", params={"tab": "txt2img"}).json()
    assert live["state"] == "done" and live["verdicts"] == ["likely copy", "likely copy"]
    assert 'data-verdict="likely copy"' in live["html"] and "training image" in live["html"]
    again = client.get("/replicheck/v1/live", params={"tab": "txt2img", "since": live["seq"]}).json()
    assert again["html"] is None and again["seq"] == live["seq"]  # nothing new: no panel re-sent


def test_api_auth_protects_routes(tmp_path):
    """--api-auth applies to /replicheck/v1 as to /sdapi/v1 (a fresh app with the same service)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_replicheck.webui import api
    from lib_replicheck.webui.service import CheckService
    from lib_replicheck.webui.settings import Settings

    app = FastAPI()
    api.mount(app, CheckService(tmp_path / "packs", tmp_path), Settings, api_auth="alice:s3cret,bob:pw")
    c = TestClient(app)
    assert c.get("/replicheck/v1/status").status_code == 401
    assert c.get("/replicheck/v1/status", auth=("alice", "wrong")).status_code == 401
    assert c.get("/replicheck/v1/status", auth=("alice", "s3cret")).status_code == 200
    assert c.get("/replicheck/v1/packs", auth=("bob", "pw")).status_code == 200


def test_settings_persist_in_config_json(webui, tmp_path, installed):
    opts = webui.shared.opts
    opts.set("replicheck_top_k", 3)
    opts.set("replicheck_sscd_possible", 0.6)
    opts.set("replicheck_packs", ["photos"])
    opts.save(str(tmp_path / "config.json"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["replicheck_top_k"] == 3 and saved["replicheck_packs"] == ["photos"]
    opts.set("replicheck_top_k", 5)
    opts.load(str(tmp_path / "config.json"))
    s = webui.module.current_settings()
    assert s.top_k == 3 and s.tiers["sscd"].possible == 0.6 and s.packs == ["photos"]
    opts.set("replicheck_top_k", 5)
    opts.set("replicheck_sscd_possible", 0.5)


def test_packs_setting_naming_a_missing_pack(webui, installed, photos):
    webui.set_option("replicheck_packs", ["gone"])
    _source(webui, [_copy(photos[0])])
    _, processed = webui.txt2img()
    job = webui.module.service.live.get("txt2img")
    assert job.state == "error" and "gone" in job.message
    assert "Replicheck: not checked (pack not installed)" in processed.infotexts[0]
    assert "gone" not in processed.infotexts[0]  # pack names chosen locally stay out of published metadata


# -- the pack manager tab and its API -------------------------------------------------------------------

PANEL = {"X-Replicheck-Request": "1"}  # what the panel's script sends; changing routes require it

@pytest.fixture
def registry_server(webui):
    from httpfaults import FaultServer
    from test_downloads import FAST, serve_registry

    server = FaultServer()
    url = serve_registry(server)
    webui.set_option("replicheck_registries", url)
    webui.module.manager.installer.policy = FAST
    yield server
    webui.set_option("replicheck_registries", "")
    server.close()
    shutil.rmtree(webui.packs_dir / "demo", ignore_errors=True)
    webui.module.manager.available, webui.module.manager.refreshed = [], None


def test_pack_manager_tab(webui, registry_server, photos):
    from lib_replicheck.cli.demo import DEMO_DIR, edited_copy

    m = webui.module
    tabs = webui.callbacks.ui_tabs_callback()
    assert [(t, e) for _, t, e in tabs] == [("Replicheck", "replicheck_tab")]
    assert "Refresh list" in m.packs_tab.page() and "nothing is fetched" in m.packs_tab.page()
    _source(webui, [_copy(photos[0])])
    webui.txt2img()
    assert registry_server.log == []  # building the tab and generating fetched nothing
    page, dropdown, message = m.packs_tab.refresh()
    assert "demo" in page and "available" in page and "Read 1 registry" in message
    assert [p for p, _ in registry_server.log] == ["/r/packs.json"]
    _, message = m.packs_tab.download("demo")
    assert "Downloading demo" in message
    job = m.manager.wait("demo")
    assert job.state == "installed" and job.done == job.total
    page, message = m.packs_tab.verify("demo")
    assert "every file matches" in message and ">installed<" in page
    edited_copy(DEMO_DIR / "pack" / "chelsea.jpg").save(webui.root / "copy.png")
    _source(webui, [load_image(webui.root / "copy.png").resize((512, 384))])
    _, processed = webui.txt2img()  # the new pack is used without a restart
    assert "Replicheck: likely copy" in processed.infotexts[0] and " in demo)" in processed.infotexts[0]
    page, message = m.packs_tab.remove("demo")
    assert "Removed demo" in message and not (webui.packs_dir / "demo").exists()
    _, message = m.packs_tab.verify("")
    assert "Choose a pack" in message


def test_pack_manager_api_with_cancel(webui, registry_server, client):
    r = client.get("/replicheck/v1/packs")
    assert r.json()["available"] == [] and registry_server.log == []
    r = client.get("/replicheck/v1/packs", params={"refresh": "true"}, headers=PANEL).json()
    assert [p["name"] for p in r["available"]] == ["demo"] and r["available"][0]["installed"] is False
    registry_server.routes["/r/demo/index.faiss"].fault = "stall"
    registry_server.routes["/r/demo/index.faiss"].stall = 2.0
    job = client.post("/replicheck/v1/packs/demo/download", headers=PANEL).json()
    assert job["name"] == "demo" and job["active"]
    assert client.post("/replicheck/v1/packs/demo/download", headers=PANEL).status_code == 409  # one at a time
    assert client.post("/replicheck/v1/downloads/demo/cancel", headers=PANEL).json()["ok"]
    final = webui.module.manager.wait("demo")
    assert final.state == "cancelled" and not (webui.packs_dir / "demo").exists()
    registry_server.routes["/r/demo/index.faiss"].fault = ""
    client.post("/replicheck/v1/packs/demo/download", headers=PANEL)
    assert webui.module.manager.wait("demo").state == "installed"
    downloads = client.get("/replicheck/v1/downloads").json()
    assert downloads[0]["state"] == "installed" and downloads[0]["fraction"] == 1.0
    assert client.post("/replicheck/v1/packs/demo/verify", headers=PANEL).json()["ok"]
    assert client.delete("/replicheck/v1/packs/demo", headers=PANEL).json()["ok"]
    assert client.delete("/replicheck/v1/packs/demo", headers=PANEL).status_code == 409


# -- the Settings page, through gradio as the web UI serves it ----------------------------------------

def _predict(client, fn_index, data):
    return client.post("/run/predict", json={"fn_index": fn_index, "data": data, "session_hash": "settings-test"})


def test_settings_page_loads_refreshes_and_applies(webui, installed, tmp_path):
    """The page load sends gr.update(value, **component_args) for every setting; gradio hands those to
    each component's update(), so one argument it does not take fails every setting on the page."""
    from fastapi.testclient import TestClient

    opts = webui.shared.opts
    ui = webui.settings_ui
    client = TestClient(webui.gradio_app(webui.settings_blocks))
    deps = client.get("/config").json()["dependencies"]
    load = next(i for i, d in enumerate(deps) if d["trigger"] == "load" and len(d["outputs"]) == len(ui.components))
    submit = next(i for i, d in enumerate(deps) if d["targets"] == [ui.submit._id])
    refresh_button = ui.component_dict["replicheck_packs"].refresh_button
    refresh = next(i for i, d in enumerate(deps) if d["targets"] == [refresh_button._id])
    opts.set("replicheck_top_k", 2)
    opts.set("replicheck_sscd_likely", 0.6)
    try:
        r = _predict(client, load, [])
        assert r.status_code == 200, r.text
        values = [u.get("value") for u in r.json()["data"]]
        keys = list(opts.data_labels)
        shown = dict(zip(keys, values))
        assert shown["replicheck_top_k"] == 2 and shown["replicheck_sscd_likely"] == 0.6
        packs_update = r.json()["data"][keys.index("replicheck_packs")]
        assert packs_update["choices"] == [["photos", "photos"]] or packs_update["choices"] == ["photos"]
        r = _predict(client, refresh, [])
        assert r.status_code == 200, r.text
        # Apply settings with what the page shows, after changing one unrelated setting
        values[keys.index("replicheck_pdq_likely")] = 20
        r = _predict(client, submit, values)
        assert r.status_code == 200, r.text
        saved = json.loads(open(webui.shared.config_filename).read())
        assert saved["replicheck_top_k"] == 2 and saved["replicheck_sscd_likely"] == 0.6
        assert saved["replicheck_pdq_likely"] == 20
    finally:
        for key in ("replicheck_top_k", "replicheck_sscd_likely", "replicheck_pdq_likely"):
            opts.set(key, opts.data_labels[key].default)


# -- failures around a generation ----------------------------------------------------------------------

def test_failed_generation_closes_the_panel(webui, installed, photos, client):
    """A generation that raises never reaches postprocess: the next poll closes its job."""
    calls = []

    def source(p, index, seed):
        calls.append(index)
        if index == 1:
            raise RuntimeError("the model failed")
        return _copy(photos[0])

    webui.processing.image_source = source
    with pytest.raises(RuntimeError):
        webui.txt2img(batch_size=2, n_iter=2)  # the UI path: state.end() is never reached
    assert webui.module.service.live.get("txt2img").state == "checking"
    live = client.get("/replicheck/v1/live", params={"tab": "txt2img"}).json()
    assert live["state"] == "interrupted" and "generating" not in live["html"]
    assert "ended before every image was checked" in live["html"]


def test_hung_check_never_holds_a_generation(webui, installed, photos, monkeypatch, caplog):
    """A check that never ends: the image is reported not checked after the bound, the generation
    finishes, the next images do not wait again, and checks resume once the stuck one ends."""
    import threading

    from lib_replicheck.checker import Checker

    service = webui.module.service
    gate = threading.Event()
    real = Checker.check

    def stuck(self, images, labels, **per_check):
        gate.wait(60)
        return real(self, images, labels, **per_check)

    monkeypatch.setattr(Checker, "check", stuck)
    monkeypatch.setattr(service, "check_seconds", 1.0)
    caplog.set_level(logging.WARNING, logger="replicheck")
    _source(webui, [_copy(photos[0])])
    try:
        _, processed = webui.txt2img(batch_size=3)
        assert [t.count("Replicheck: not checked (error)") for t in processed.infotexts[1:]] == [1, 1, 1]
        status = webui.module.service.status()  # answers while the stuck check holds the packs
        assert "longer than 1 s" in status["last_error"] or "running for more than" in status["last_error"]
    finally:
        gate.set()
    monkeypatch.setattr(Checker, "check", real)
    for _ in range(100):
        if service._busy_since is None:
            break
        time.sleep(0.05)
    _, again = webui.txt2img()
    assert "Replicheck: likely copy" in again.infotexts[0]
    assert sum("replicheck:" in r.getMessage() for r in caplog.records) <= 2  # one line per distinct failure


def test_broken_pack_is_listed_with_why(webui, installed, photos, client):
    m = webui.module
    _source(webui, [_copy(photos[0])])
    webui.txt2img()  # opens the pack
    index = installed / "index.faiss"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    listed = client.get("/replicheck/v1/packs").json()["installed"]
    assert listed[0]["name"] == "photos" and "index.faiss" in listed[0]["error"]
    page = m.packs_tab.page()
    assert "rc-error-text" in page and "index.faiss" in page and ">installed<" not in page
    _, processed = webui.txt2img()  # the generation goes on, the image says it was not checked
    assert "Replicheck: not checked (error)" in processed.infotexts[0]
    assert client.get("/replicheck/v1/status").json()["last_error"]
    m.manager.remove("photos")
    assert client.get("/replicheck/v1/status").json()["last_error"] is None  # nothing left of the removed pack


def test_a_damaged_pack_is_skipped_and_the_others_searched(webui, installed, photos, client, caplog):
    """One pack with a file cut short must not stop the check against the others: the image is
    checked against the sound pack, its report says which pack was skipped and why, the console gets
    one line, and the pack list shows the damaged pack with its error."""
    damaged = installed.parent / "photos-damaged"
    shutil.copytree(installed, damaged)
    index = damaged / "index.faiss"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    caplog.set_level(logging.WARNING, logger="replicheck")
    try:
        _source(webui, [_copy(photos[0])])
        _, processed = webui.txt2img()
        assert "Replicheck: likely copy" in processed.infotexts[0]
        report = webui.module.service.live.get("txt2img").reports[0]
        assert [n for n in report.notes if n.startswith("pack skipped:")] and "index.faiss" in " ".join(report.notes)
        lines = [r.getMessage() for r in caplog.records if r.name == "replicheck"]
        assert len(lines) == 1 and "photos-damaged" in lines[0] and "index.faiss" in lines[0]
        errors = [p["error"] for p in client.get("/replicheck/v1/packs").json()["installed"]]  # both named photos
        assert len(errors) == 2 and None in errors and "index.faiss" in "".join(e or "" for e in errors)
    finally:
        webui.module.service.unload()
        shutil.rmtree(damaged, ignore_errors=True)


def test_pack_fields_are_cut_and_cleaned_in_the_tab(webui):
    from lib_replicheck.webui import packs_page
    from lib_replicheck.webui.api_models import PackModel
    from lib_replicheck.registry.registry import RegistryPack

    huge = "L" * 1_000_000
    installed = [PackModel(name="p", title="t\x1b[31mred", embedder="pdq", metric="hamming", count=1, size_bytes=1,
                           source={"license": huge, "dataset": "d\u202eevil", "url": "https://example.com/x"})]
    fields = {f: None for f in RegistryPack.__dataclass_fields__}
    fields.update(name="q", title="q", description="", version="1", source={"license": huge, "dataset": huge},
                  embedder={"id": "pdq"}, count=1, size=1, registry="r", files=[])
    available = [RegistryPack(**{k: v for k, v in fields.items() if k in RegistryPack.__dataclass_fields__})]
    html = packs_page.render(installed, available, ["bad\x1b]8;;x\x07registry " + huge])
    assert len(html) < 10_000
    assert "\x1b" not in html and "\u202e" not in html and "\x07" not in html
    # the panel's match lines too
    from lib_replicheck.report import Match, Report
    from lib_replicheck.webui.panel import render
    from lib_replicheck.thresholds import Verdict

    from lib_replicheck.item import Item

    item = Item(id=1, caption=huge, source="row\x1b]0;x\x07", license=huge + "\x1b[31m", url="https://example.com/a")
    fields = dict(pack="p\x1b[2J", item=item, similarity=0.9, distance=None, verdict=Verdict.LIKELY, embedder="sscd")
    report = Report(image="image 1", verdict=Verdict.LIKELY, best=Match(**fields), matches=[Match(**fields)])
    panel = render([report])
    assert len(panel) < 10_000 and "\x1b" not in panel and "\x07" not in panel


def test_tab_is_current_at_each_page_load(webui, installed):
    """The table is built at each page load (gradio's load event for a callable value), not once at
    start-up; a download that ends re-renders it through the hidden reload button."""
    from fastapi.testclient import TestClient

    tab = webui.callbacks.ui_tabs_callback()[0][0]
    client = TestClient(webui.gradio_app(tab))
    deps = client.get("/config").json()["dependencies"]
    shutil.rmtree(installed)
    loads = [i for i, d in enumerate(deps) if d["trigger"] == "load"]
    pages = [_predict(client, i, []).json()["data"][0] for i in loads]
    assert pages and all("No pack installed yet" in (p if isinstance(p, str) else p.get("value", "")) for p in pages)
    reload = next(i for i, d in enumerate(deps) if d["trigger"] == "click" and len(d["outputs"]) == 2
                  and not d["inputs"])
    assert "No pack installed yet" in _predict(client, reload, []).json()["data"][0]


def test_registry_errors_are_named_in_the_tab(webui, http_server):
    http_server.files["/bad/packs.json"] = b"\x00 not json"
    webui.set_option("replicheck_registries", f"{http_server.url}/bad/packs.json")
    try:
        page, _, message = webui.module.packs_tab.refresh()
        assert "rc-error-text" in message and "Read 0 of 1 registry" in message and "/bad/packs.json" in message
        assert "Traceback" not in message and "Traceback" not in page
    finally:
        webui.set_option("replicheck_registries", "")
        webui.module.manager.available, webui.module.manager.refreshed = [], None


def test_routes_are_attached_without_analysing_them_again(webui, monkeypatch):
    """on_app_started only hands prebuilt routes to the app: at start-up (Forge loads the model
    meanwhile) no route, model or dependency is built then, so /replicheck/v1 answers with /sdapi."""
    import fastapi.routing
    from fastapi import FastAPI

    built = []
    original = fastapi.routing.APIRoute.__init__

    def counting(self, *args, **kwargs):
        built.append(args[0] if args else kwargs.get("path"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(fastapi.routing.APIRoute, "__init__", counting)
    app = FastAPI()
    webui.module.on_app_started(None, app)
    assert built == []
    paths = {getattr(r, "path", "") for r in app.routes}
    assert {"/replicheck/v1/live", "/replicheck/v1/check", "/replicheck/v1/packs"} <= paths


def test_sdnext_inpainting_is_checked_as_it_will_be_saved(webui, photos, novel, monkeypatch):
    """SD.Next has no hook after its overlay: the check makes the composite with SD.Next's own
    apply_overlay(image, paste_loc, index, overlays) and leaves the web UI's image alone."""
    from types import SimpleNamespace

    from PIL import ImageChops

    calls = []

    def sdnext_apply_overlay(image, paste_loc, index, overlays):
        calls.append(index)
        out = image.convert("RGBA")
        out.alpha_composite(overlays[index])
        return out.convert("RGB")

    monkeypatch.setattr(webui.processing, "apply_overlay", sdnext_apply_overlay)
    overlay = _copy(photos[1]).convert("RGBA")
    p = SimpleNamespace(overlay_images=[None, overlay], paste_to=None, batch_index=1, mask_apply_overlay=None)
    model_output = novel[0]
    seen = webui.module.composite_as_saved(p, model_output)
    assert calls == [1] and not ImageChops.difference(seen, _copy(photos[1])).getbbox()
    assert model_output is novel[0] and model_output.size == (512, 384)
    p.mask_apply_overlay = False  # SD.Next's 'apply overlay' off: it saves the model's output
    assert webui.module.composite_as_saved(p, model_output) is model_output


def test_check_without_a_pack_says_not_checked(webui, client, photos):
    r = client.post("/replicheck/v1/check", json={"image": _b64(photos[0])})
    assert r.status_code == 200 and r.json()["verdict"] == "not checked" and "no pack installed" in r.json()["error"]
    r = client.post("/replicheck/v1/check", json={"image": _b64(photos[0]), "packs": ["demo"]})
    assert r.status_code == 404 and "demo" in r.json()["detail"]


def test_sdnext_grid_infotext_carries_no_images_value():
    """SD.Next writes extra_generation_params as text (it calls no value) and builds the grid's
    infotext after the last image's: the grid must not read as the last image's verdict.
    `create_infotext` and `quote` below follow SD.Next 058a7f0 (modules/processing_info.py and
    modules/infotext.py), reduced to the lines that handle extra_generation_params."""
    from types import SimpleNamespace

    from lib_replicheck.webui.hook import PerImageValue

    def quote(text):
        if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
            return text
        return json.dumps(text, ensure_ascii=False)

    def create_infotext(p, all_prompts=None, index=None, grid=None):
        args = {"Steps": 4}
        args.update(p.extra_generation_params)
        for k, v in args.copy().items():
            if v is None:
                del args[k]
        params_text = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in args.items()])
        return f"{all_prompts[index]}\n{params_text}"

    values = {0: {"Replicheck": "no copy (best 0.54 in demo)"}, 3: {"Replicheck": "no copy (best 0.56 in demo)"}}
    p = SimpleNamespace(extra_generation_params={
        "Replicheck": PerImageValue(values[3]["Replicheck"], values, "Replicheck")})
    last = create_infotext(p, ["a rocket"] * 4, index=3)
    grid = create_infotext(p, ["a rocket"] * 4, index=0, grid="2x2")
    assert "Replicheck: no copy (best 0.56 in demo)" in last
    assert "0.56" not in grid and "Replicheck: not checked (grid)" in grid
    assert str(p.extra_generation_params["Replicheck"]) == "no copy (best 0.56 in demo)"  # elsewhere: the value


def test_live_job_declares_what_the_store_holds():
    """Every value the hook stores on a live job is a declared field (the known-prompt check's hits and
    error included); a name the job does not declare is refused instead of stored unseen."""
    from lib_replicheck.webui.live import LiveResults

    live = LiveResults()
    job = live.start("txt2img", 2)
    assert job.prompt_hits == [] and job.prompt_error == ""
    seq = live.seq
    live.update(job, prompt_hits=["hit"], prompt_error="failed")
    assert job.prompt_hits == ["hit"] and job.prompt_error == "failed" and live.seq == seq + 1
    with pytest.raises(AttributeError, match="prompt_hit"):
        live.update(job, prompt_hit=["typo"])
    assert not hasattr(job, "prompt_hit") and live.seq == seq + 1


def test_live_and_folder_jobs_share_one_job_base(tmp_path, pack_photos):
    """A generation's live job and a folder check are webui/jobs.py Jobs: the same state, progress,
    cancel and JSON; a folder check whose work fails unexpectedly ends in 'error' with the reason and
    one log line, from its own thread, instead of dying silently."""
    from lib_replicheck.report import Report
    from lib_replicheck.webui.audits import AuditJobs
    from lib_replicheck.webui.jobs import Job
    from lib_replicheck.webui.live import LiveResults

    live = LiveResults()
    job = live.start("txt2img", 2)
    assert isinstance(job, Job) and job.to_dict() == {"state": "checking", "message": "", "running": True,
                                                      "done": 0, "total": 2, "fraction": 0.0}
    live.add(job, 0, Report(image="a.png"))
    assert job.to_dict()["done"] == 1 and job.fraction == 0.5
    live.update(job, state="done")
    assert not job.running and not job.request_cancel() and not job.cancel.is_set()

    folder = tmp_path / "outputs"
    folder.mkdir()
    shutil.copy(pack_photos[0], folder / "a.jpg")
    logs = []

    def no_checker():
        raise RuntimeError("the model went away")

    audits = AuditJobs(tmp_path / "reports", no_checker, log=logs.append)
    check = audits.start(str(folder))
    assert isinstance(check, Job)
    for _ in range(600):
        if not check.running:
            break
        time.sleep(0.05)
    assert check.to_dict()["state"] == "error" and check.message == "unexpected RuntimeError: the model went away"
    assert logs == [f"replicheck: checking {folder} failed: unexpected RuntimeError: the model went away"]
    assert not audits.cancel(check.id) and audits.report_file(check.id) is None


@pytest.fixture
def sscd_installed(webui, pack_photos, sscd_onnx, tmp_path):
    """An SSCD pack of eight photos in the web UI's packs folder, the ONNX weights in its models folder."""
    models = webui.packs_dir.parent
    webui.packs_dir.mkdir(parents=True, exist_ok=True)
    weights = models / sscd_onnx.name
    if not weights.exists():
        weights.symlink_to(sscd_onnx)
    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    folder = photo_folder(tmp_path / "src", pack_photos[:8])
    build_from_items(sources.folder(folder, license="test"), sscd, webui.packs_dir / "sscd-photos",
                     log=lambda s: None)
    yield
    webui.module.service.unload()
    shutil.rmtree(webui.packs_dir / "sscd-photos", ignore_errors=True)


def test_regions_setting_reaches_the_check(webui, sscd_installed, pack_photos, other_photos):
    """The region setting reaches the web UI's check: with it off only the whole image is searched;
    set to thorough, a training photo pasted into another photo is also searched region by region, and
    matches found through a region carry their box."""
    from lib_replicheck.regions import DEFAULT_MODE

    im = load_image(other_photos[0]).resize((512, 512))
    im.paste(load_image(pack_photos[1]).resize((282, 176)), (58, 228))
    service = webui.module.service
    webui.set_option("replicheck_regions", "off")
    off = service.check([im], ["pasted"], webui.module.current_settings())[0]
    webui.set_option("replicheck_regions", "thorough")
    try:
        fast = service.check([im], ["pasted"], webui.module.current_settings())[0]
    finally:
        webui.set_option("replicheck_regions", DEFAULT_MODE)
    assert off.error is None and fast.error is None
    assert off.matches and all(m.region is None for m in off.matches)
    assert any(m.region is not None for m in fast.matches)
    assert fast.best.similarity >= off.best.similarity
