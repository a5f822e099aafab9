"""Verification of CLIP candidates online (`check --verify online`): the training image of a candidate
is fetched from its URL (a real HTTP server on 127.0.0.1 serving the original photos) and compared
with SSCD (Meta's weights) and PDQ; its verdict becomes SSCD's on the pair. Without it, candidates
stay 'possible copy (unverified ...)' and the report says why."""

from __future__ import annotations

import pytest

from lib_replicheck.report import infotext

from tests.verification_packs import (PHOTO_ROWS, build_pack, check_json, closed_port, models_folder,
                                      save_weights)
from tests.verification_packs import server  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def clip():
    from lib_replicheck.embedders.clip import ClipEmbedder

    return ClipEmbedder("ViT-B-32", pretrained=None)


@pytest.fixture(scope="module")
def world(tmp_path_factory, clip, photos, pack_photos, server, sscd_onnx):
    """The pack (photo rows served by `server`), the CLIP weights file, the models folder and an
    edited copy of the first photo (its centre 80%, at half size, JPEG quality 40)."""
    from conftest import jpeg

    from lib_replicheck.images import centre_crop

    root = tmp_path_factory.mktemp("verify")
    for row, path in zip(PHOTO_ROWS, pack_photos):
        server.add(f"/img/{row}.jpg", path.read_bytes())
    pack = build_pack(root, clip, photos, lambda row: f"{server.url}/img/{row}.jpg")
    copy = root / "copy.jpg"
    im = centre_crop(photos[0], 0.8)
    jpeg(im.resize((im.width // 2, im.height // 2)), 40).save(copy, quality=95)
    return {"pack": pack, "weights": save_weights(clip, root / "clip.safetensors"), "copy": copy,
            "models": models_folder(root / "models", sscd_onnx), "root": root}


def test_an_edited_copy_of_an_image_in_a_clip_pack_is_a_verified_likely_copy(world, server, capsys):
    server.log.clear()
    rc, report = check_json(capsys, world["pack"], world["copy"], world["weights"], world["models"],
                            "--verify", "online")
    best = report["best"]
    assert rc == 1 and report["verdict"] == "likely copy", report
    assert best["url"].endswith(f"/img/{PHOTO_ROWS[0]}.jpg")
    v = best["verification"]
    assert v["status"] == "verified" and 0.75 <= v["sscd"] < 0.95 and not v["cached"]
    assert isinstance(v["pdq"], int)  # PDQ's distance on the pair, beside SSCD's verdict
    assert best["verdict_text"] == f"likely copy ({v['text']})" and not best["unverified"]
    assert report["summary"].startswith("likely copy (verified: SSCD ") and report["summary"].endswith(
        f" in {world['pack'].name})")
    assert any(n.startswith("verification: ") for n in report["notes"])
    assert (f"/img/{PHOTO_ROWS[0]}.jpg", "") in server.log
    cached = list((world["models"] / "verify-cache").iterdir())
    assert len(cached) == len({p for p, _ in server.log})  # each fetched image kept once

    server.log.clear()  # again: from the cache, no request
    rc, again = check_json(capsys, world["pack"], world["copy"], world["weights"], world["models"],
                           "--verify", "online")
    assert rc == 1 and again["verdict"] == "likely copy" and again["best"]["verification"]["cached"]
    assert server.log == []


def test_the_text_output_says_verified(world, capsys):
    from lib_replicheck.cli.main import main

    rc = main(["check", str(world["copy"]), "--pack", str(world["pack"]), "--weights", str(world["weights"]),
               "--models-dir", str(world["models"]), "--verify", "online", "--progress", "off"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "  likely copy (verified: SSCD " in out.splitlines()[1]
    assert "note: verification: " in out


def test_without_verify_or_offline_a_candidate_is_possible_and_unverified(world, server, capsys):
    server.log.clear()
    rc, report = check_json(capsys, world["pack"], world["copy"], world["weights"], world["models"])
    best = report["best"]
    assert rc == 1 and report["verdict"] == "possible copy" and best["unverified"]
    score = best["verdict_text"].split("CLIP ")[1].split(";")[0]
    assert best["verdict_text"] == (f"possible copy (unverified: CLIP {score}; verification off (not asked: check "
                                    "--verify online))")
    assert best["verification"]["status"] == "off"
    assert report["summary"].startswith(f"possible copy (unverified: CLIP {score} in {world['pack'].name}; "
                                        "verification off")
    assert any(n.startswith("verification off (not asked") for n in report["notes"])

    rc, report = check_json(capsys, world["pack"], world["copy"], world["weights"], world["models"],
                            "--verify", "online", "--offline")
    assert rc == 1 and report["verdict"] == "possible copy" and report["best"]["unverified"]
    assert report["best"]["verdict_text"].endswith("; verification off (offline))")
    assert server.log == []  # nothing was fetched


def test_a_novel_image_has_no_candidate_and_nothing_is_fetched(world, server, capsys, other_photos):
    server.log.clear()
    rc, report = check_json(capsys, world["pack"], other_photos[0], world["weights"], world["models"],
                            "--verify", "online", "--clip-cut", "0.999")
    assert rc == 0 and report["verdict"] == "no copy" and report["best"]["verification"] is None
    assert server.log == []


def test_a_server_that_is_down_reads_dead(world, capsys, clip, photos, tmp_path):
    """The candidate stays possible and unverified, and says why."""
    port = closed_port()
    down = build_pack(tmp_path, clip, photos, lambda row: f"http://127.0.0.1:{port}/img/{row}.jpg")
    rc, report = check_json(capsys, down, world["copy"], world["weights"], world["models"], "--verify", "online")
    best = report["best"]
    assert rc == 1 and report["verdict"] == "possible copy" and best["unverified"]
    assert best["verification"]["status"] == "dead URL" and "Connection refused" in best["verification"]["detail"]
    assert "; dead URL (Connection refused))" in best["verdict_text"]


def test_a_404_reads_dead(world, server, capsys, clip, photos, tmp_path):
    down = build_pack(tmp_path, clip, photos, lambda row: f"{server.url}/gone/{row}.jpg")
    rc, report = check_json(capsys, down, world["copy"], world["weights"], world["models"], "--verify", "online")
    v = report["best"]["verification"]
    assert rc == 1 and report["verdict"] == "possible copy"
    assert v["status"] == "dead URL" and v["detail"] == "HTTP Error 404: Not Found"
    assert report["best"]["verdict_text"].endswith("; dead URL (HTTP Error 404: Not Found))")
    assert any("#7 in pack: dead URL (HTTP Error 404: Not Found)" in n for n in report["notes"])


def test_the_cache_keeps_within_its_cap_evicting_the_oldest(tmp_path, pack_photos):
    import os

    from lib_replicheck.verification.online import ImageCache

    data = [p.read_bytes() for p in pack_photos[:3]]
    cap = len(data[1]) + len(data[2]) + 10
    cache = ImageCache(tmp_path / "cache", cap)
    for n, d in enumerate(data):
        cache.put(f"http://x/{n}", d)
        p = cache.path(f"http://x/{n}")
        if p.exists():
            os.utime(p, ns=(n * 10**9, n * 10**9))  # a clear order, whatever the file system's clock
        cache.evict()
    assert cache.size() <= cap
    assert cache.get("http://x/0") is None  # the oldest went
    assert cache.get("http://x/2") == data[2]
    tiny = ImageCache(tmp_path / "tiny", 0)
    tiny.put("http://x/0", data[0])
    assert tiny.size() == 0


def test_the_web_ui_setting_verifies_after_the_check_and_is_off_by_default(webui, world, clip, photos):
    """Inside the web UI the verification is a setting, off by default; on, the check that follows each
    image verifies its candidates, and the panel and the infotext say so."""
    import shutil

    from lib_replicheck.images import load_image
    from lib_replicheck.webui import panel

    service = webui.module.service
    models = service.models_dir
    shutil.copytree(world["pack"], service.packs_dir / "clip-photos")
    onnx = models / "sscd_disc_mixup.onnx"
    if not onnx.exists():
        onnx.symlink_to(world["models"] / "sscd_disc_mixup.onnx")
    copy = load_image(world["copy"])
    try:
        webui.set_option("replicheck_packs", ["clip-photos"])
        settings = webui.module.current_settings()
        assert settings.verify_online is False
        service.checker(settings)._embedders[clip.id] = clip  # random weights cannot be re-created from the spec
        off = service.check([copy], ["copy"], settings)[0]
        assert off.error is None and off.verdict.value == "possible copy" and off.best.unverified
        assert "verification off (not asked: Settings > Replicheck > Verify CLIP candidates online)" in (
            off.best.verdict_text())
        webui.set_option("replicheck_verify_online", True)
        on = service.check([copy], ["copy"], webui.module.current_settings())[0]
        assert on.error is None and on.verdict.value == "likely copy" and on.best.verified
        assert infotext(on).startswith("likely copy (verified: SSCD ")
        html = panel.card(on, 0)
        assert "likely copy (verified: SSCD " in html
        assert (models / "verify-cache").is_dir()
    finally:
        webui.set_option("replicheck_verify_online", False)
        webui.set_option("replicheck_packs", [])
        service.unload()
        shutil.rmtree(service.packs_dir / "clip-photos", ignore_errors=True)
        shutil.rmtree(models / "verify-cache", ignore_errors=True)


def test_a_candidate_the_pair_scores_between_possible_and_likely_is_decided_by_its_features(world, capsys, photos):
    """The centre half of the first photo: SSCD scores the pair with the fetched original between
    "possible" and "likely"; its local features map onto the fetched image, so it is a likely copy, and
    the report says where."""
    from lib_replicheck.images import centre_crop

    half = world["root"] / "half.png"
    centre_crop(photos[0], 0.5).save(half)
    rc, report = check_json(capsys, world["pack"], half, world["weights"], world["models"], "--verify", "online")
    best = report["best"]
    assert best["verification"]["status"] == "verified" and 0.5 <= best["verification"]["sscd"] < 0.75, best
    g = best["geometry"]
    assert g["source"] == "fetched image" and g["verified"] and g["area"] is not None
    assert rc == 1 and report["verdict"] == "likely copy"



def test_a_pasted_copy_is_found_through_a_region_judged_normalised_against_the_default_background(
        sscd_onnx, photos, other_photos):
    """A photo pasted at 55% of the side into another real photo, compared with its fetched
    original as verification compares a candidate (Meta's SSCD): the whole image is no copy, but a region
    on the paste scores the original above the default SSCD background by more than the normalised cut,
    above the raw floor: a copy by the same rule as an SSCD pack's region matches, where the raw region
    tiers alone (the pair has no background of its own) would call it none."""
    from PIL import Image

    from lib_replicheck import embedders
    from lib_replicheck.thresholds import REGION_RAW_FLOOR, REGION_TIERS
    from lib_replicheck.verification.compare import CheckedImage, compare

    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    canvas = Image.open(other_photos[1]).convert("RGB").resize((512, 512))
    part = photos[1].convert("RGB")
    side = int(512 * 0.55)
    part = part.resize((side, max(1, side * part.height // part.width)) if part.width >= part.height
                       else (max(1, side * part.width // part.height), side))
    canvas.paste(part, (40, 60))
    checked = CheckedImage(canvas, sscd, "fast")
    pair = compare(checked, photos[1], sscd)
    assert pair.region is not None and pair.verdict.is_copy, pair
    box = pair.region
    assert box.x < 40 + part.width and box.x + box.w > 40 and box.y < 60 + part.height and box.y + box.h > 60
    assert REGION_RAW_FLOOR["sscd"] <= pair.sscd < REGION_TIERS["sscd"].possible, pair
    assert float(checked.whole @ sscd.embed([photos[1]])[0]) < 0.5  # no whole-image verdict
