"""Region search on real photos with Meta's real SSCD weights (int8 ONNX): a training photo pasted
into another photo, which the whole image misses, is found through a region, with its box."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

from conftest import REPO, photo_folder
from lib_replicheck import embedders
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.checker import Checker
from lib_replicheck.embedders import EmbedderOptions
from lib_replicheck.images import load_image
from lib_replicheck.packs.pack import Pack
from lib_replicheck.regions import (MIN_DETAIL, MODES, PASSES, Region, cell_boxes, check_mode, featured, gem_pool,
                                    setting_mode, to_region)
from lib_replicheck.thresholds import DEFAULT_TIERS, NORMALISED_REGION_TIERS, Verdict

sys.path.insert(0, str(REPO / "bench"))
from regions import paste, random_crop, shrink  # noqa: E402 - the benchmark's own copy maker


@pytest.fixture(scope="module")
def sscd(sscd_onnx):
    return embedders.load("sscd", runtime="onnx", weights=sscd_onnx)


@pytest.fixture(scope="module")
def split(pack_photos):
    """The real photos split by photo: (in the pack, novel)."""
    return pack_photos[0::2], pack_photos[1::2]


@pytest.fixture(scope="module")
def background_folder(tmp_path_factory, clipart):
    """150 drawings that are not in any pack here (numbered: drawings of different folders share names)."""
    folder = tmp_path_factory.mktemp("background")
    for i, p in enumerate(clipart[1::2][:150]):
        (folder / f"{i:03d}-{p.name}").symlink_to(p)
    return folder


@pytest.fixture(scope="module")
def pack(tmp_path_factory, split, sscd, background_folder):
    """The photos in the pack, with a background set: region matches are judged normalised."""
    folder = photo_folder(tmp_path_factory.mktemp("photos"), split[0])
    built = build_from_items(sources.folder(folder), sscd, tmp_path_factory.mktemp("packs") / "photos",
                             thumbnails=True, background=sources.folder(background_folder), log=lambda s: None)
    return Pack(built.path)


@pytest.fixture(scope="module")
def raw_pack(tmp_path_factory, split, sscd):
    """The same photos without a background set: region matches are judged on their similarity."""
    folder = photo_folder(tmp_path_factory.mktemp("photos"), split[0])
    return Pack(build_from_items(sources.folder(folder), sscd, tmp_path_factory.mktemp("packs") / "raw",
                                 thumbnails=False, log=lambda s: None).path)


@pytest.fixture(scope="module")
def checker(pack, sscd_onnx):
    return Checker([pack], top_k=3, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))


@pytest.fixture(scope="module")
def pasted(split):
    """Four training photos pasted at 55% of the side into crops of photos not in the pack, at
    random (seeded) spots: (composite, box of the paste, source file name)."""
    rng = random.Random(16)
    in_pack, novel = split
    backgrounds = [shrink(load_image(p)) for p in novel]
    out = []
    for k in (1, 5, 9, 13):
        original = shrink(load_image(in_pack[k]))
        bg = random_crop(rng, backgrounds[rng.randrange(len(backgrounds))], (512, 512))
        im, box = paste(rng, original, bg, 0.55)
        out.append((im, box, in_pack[k].name))
    return out


def overlap(found: Region, paste: Region) -> float:
    """Their intersection over the smaller of the two: the box found lies on the paste, or holds it."""
    w = min(found.x + found.w, paste.x + paste.w) - max(found.x, paste.x)
    h = min(found.y + found.h, paste.y + paste.h) - max(found.y, paste.y)
    return max(0, w) * max(0, h) / min(found.w * found.h, paste.w * paste.h)


def test_boxes_cover_the_feature_map_inside_its_bounds():
    for rows, cols in ((9, 9), (9, 14), (18, 27), (9, 36)):
        cells = cell_boxes(rows, cols)
        assert cells and (0, 0, cols, rows) not in cells  # the whole map is the whole-image query
        assert all(0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows and x1 - x0 >= 2 and y1 - y0 >= 2
                   for x0, y0, x1, y1 in cells)
        assert min(c[0] for c in cells) == 0 and max(c[2] for c in cells) == cols
        assert min(c[1] for c in cells) == 0 and max(c[3] for c in cells) == rows
        for w, h in ((512, 512), (768, 512), (1023, 777)):
            for c in cells:
                r = to_region(c, rows, cols, w, h)
                assert 0 <= r.x and 0 <= r.y and r.x + r.w <= w and r.y + r.h <= h and (r.image_w, r.image_h) == (w, h)
    assert check_mode("FAST") == "fast" and set(MODES) == {"off", "fast", "thorough"}
    with pytest.raises(Exception, match="regions 'tiles': choose one of off, fast, thorough"):
        check_mode("tiles")


def test_box_layout_of_a_square_map():
    """On a 9 x 9 map (a square image's whole-image pass), thorough lays boxes of 35% to 100% of the
    side, square and 4:3 either way, a third of their size apart; the whole map left out, and any box
    wider than the map (the whole side at 4:3); in pixels, exact multiples of the cell. Fast lays
    squares of 35% to 80%, half their size apart."""
    fast = cell_boxes(9, 9, "fast")
    assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in fast} == {(3, 3), (4, 4), (6, 6), (7, 7)}
    assert sorted((x0, y0) for x0, y0, x1, y1 in fast if x1 - x0 == 3) == [(x, y) for x in (0, 2, 4, 6) for y in (0, 2, 4, 6)]
    assert len(fast) == len(set(fast)) == 16 + 16 + 4 + 4
    cells = cell_boxes(9, 9)
    sides = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in cells}
    assert sides == {(3, 3), (3, 4), (4, 3), (4, 4), (4, 5), (5, 4), (5, 7), (7, 5), (6, 6), (6, 8), (8, 6), (7, 7)}
    assert len(cells) == len(set(cells)) == 242
    threes = sorted((x0, y0) for x0, y0, x1, y1 in cells if (x1 - x0, y1 - y0) == (3, 3))
    assert threes == [(x, y) for x in range(7) for y in range(7)]  # 3-cell boxes step by one cell
    assert to_region((3, 0, 6, 3), 9, 9, 900, 450) == Region(300, 0, 300, 150, 900, 450)
    assert len(PASSES["thorough"]) > len(PASSES["fast"]) == 1 and PASSES["off"] == ()


def test_flat_regions_are_not_searched():
    """A picture whose left half is busy and right half a plain colour: only boxes inside the
    busy half have the detail (MIN_DETAIL) to be searched."""
    from PIL import Image, ImageDraw

    rng = random.Random(3)
    im = Image.new("RGB", (512, 256), (200, 210, 220))
    d = ImageDraw.Draw(im)
    for _ in range(300):
        x, y = rng.randrange(250), rng.randrange(256)
        d.rectangle((x, y, x + rng.randrange(2, 12), y + rng.randrange(2, 12)), fill=(rng.randrange(256), 0, 90))
    boxes = [Region(0, 0, 200, 200, 512, 256), Region(20, 40, 128, 128, 512, 256),
             Region(300, 0, 200, 200, 512, 256), Region(380, 100, 100, 120, 512, 256)]
    assert featured(im, boxes) == [True, True, False, False] and MIN_DETAIL > 0


def test_the_regions_option_has_one_rule_wherever_it_is_read():
    """The command line's choices, the settings (the web UI, the ComfyUI node) and the API all
    read regions through regions.check_mode; a setting it refuses falls back to off."""
    from lib_replicheck.cli.main import parser
    from lib_replicheck.webui.settings import Settings

    def setting(value):
        return Settings.from_options(lambda key: {"replicheck_regions": value}.get(key)).regions

    assert [setting(v) for v in ("thorough", " Fast ", "tiles", None, 3)] == ["thorough", "fast", "off", "off", "off"]
    assert setting_mode("THOROUGH") == check_mode("THOROUGH") == "thorough" and setting_mode("x" * 10_000) == "off"
    with pytest.raises(Exception, match="regions 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': choose one of"):
        check_mode("x" * 10_000)  # named, but not echoed whole
    check = parser()._subparsers._group_actions[0].choices["check"]
    assert next(a for a in check._actions if a.dest == "regions").choices == MODES


def test_gem_pool_is_the_models_pooling_of_the_box():
    """The summed-area pooling gives, for every box, GeM (p=3) computed directly on that box."""
    import numpy as np

    rng = np.random.default_rng(0)
    fmap = (rng.random((64, 7, 11), dtype=np.float32) * 4) ** 2
    fmap[:, 2:4, 3:6] = 0.0  # ReLU zeros are clipped to 1e-6, as the model does
    cells = cell_boxes(7, 11) + [(0, 0, 11, 7)]
    pooled = gem_pool(fmap, cells)
    for (x0, y0, x1, y1), got in zip(cells, pooled):
        want = (np.clip(fmap[:, y0:y1, x0:x1], 1e-6, None).astype(np.float64) ** 3).mean(axis=(1, 2)) ** (1 / 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-4)  # values are 0.1 to 10


def test_regions_come_from_the_models_own_feature_map(sscd, split):
    """The whole-image vectors from embed_regions are embed's; the map's whole box pooled through the
    head read from the ONNX file is the model's own vector; thorough adds a second, finer pass."""
    import numpy as np

    images = [shrink(load_image(p)).resize((768, 512)) for p in split[0][:2]]
    whole, fast = sscd.embed_regions(images, "fast")
    _, thorough = sscd.embed_regions(images, "thorough")
    np.testing.assert_allclose(whole, sscd.embed(images), atol=1e-5)
    assert fast and len(thorough) > 1.5 * len(fast)
    # fast: its own layout's boxes on the whole-image pass's map; thorough lays that map densely first
    _, maps = sscd._forward([sscd.preprocess(images[0])], feature_map=True)
    rows, cols = maps[0].shape[1:]
    laid = {mode: [to_region(c, rows, cols, 768, 512) for c in cell_boxes(rows, cols, mode)] for mode in ("fast", "thorough")}
    assert {b for i, b, _ in fast if i == 0} <= set(laid["fast"]) and len(laid["thorough"]) > 3 * len(laid["fast"])
    first = next(n for n, (i, _, _) in enumerate(thorough) if i == 1)  # image 0's boxes of the first pass
    assert first > len([1 for i, _, _ in fast if i == 0]) and {b for _, b, _ in thorough[:first]} <= set(laid["thorough"])
    assert any(i == 0 for i, _, _ in thorough[first:])  # then the finer passes
    assert {i for i, _, _ in fast} == {0, 1}
    for i, box, v in fast:
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-4 and box.image_w == 768 and box.image_h == 512
    # a region that covers a photo pasted at its side scores as that photo
    canvas = load_image(split[1][0]).resize((1024, 512))
    canvas.paste(images[0].resize((512, 342)), (0, 85))
    _, found = sscd.embed_regions([canvas], "thorough")
    best = max(found, key=lambda f: float(f[2] @ whole[0]))
    assert float(best[2] @ whole[0]) >= 0.7 and best[1].x + best[1].w <= 600


def test_a_model_without_a_readable_head_checks_the_whole_image(pack, sscd_onnx, pasted):
    """Region search is optional: a head that does not pool to the model's own vector is refused
    (the check of the image goes on, whole), and a torchscript runtime says it has none."""
    import numpy as np

    checker = Checker([pack], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    embedder = checker.embedder(pack)
    weight, bias = embedder._head
    embedder._head = (np.roll(weight, 1, axis=0), bias)  # a head that is not the model's
    im = pasted[0][0]
    report = checker.check([im], regions="thorough")[0]
    assert report.error is None and report.best is not None and report.best.region is None
    assert any("head is not GeM + linear" in n for n in report.notes), report.notes
    assert embedder._head is None and "ONNX file whose head" in embedder.regions_available
    again = checker.check([im], regions="fast")[0]
    assert again.best.region is None and any(n.startswith("regions: ") for n in again.notes)


def test_onnx_graph_edits(sscd_onnx):
    """The few protobuf edits region search makes on the model file: its head found, the linear
    layer read, one more output that onnxruntime serves; malformed bytes are a ValueError."""
    import numpy as np
    import onnxruntime as ort

    from lib_replicheck.embedders import onnx_graph

    model = sscd_onnx.read_bytes()
    head = onnx_graph.find_gem_head(onnx_graph.nodes(model))
    assert head is not None and head.weight == "embeddings.1.weight"
    assert onnx_graph.initializer(model, head.weight).shape == (512, 2048)
    assert onnx_graph.initializer(model, "no such tensor") is None
    session = ort.InferenceSession(onnx_graph.with_output(model, head.feature_map), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"image": np.zeros((1, 64, 96, 3), np.uint8)})
    assert outs[0].shape == (1, 512) and outs[1].shape == (1, 2048, 2, 3)
    for bad in (model[:1000], b"\xff" * 20, b"\x3a\xff\xff\xff\xff\x0f"):
        with pytest.raises(ValueError):
            onnx_graph.find_gem_head(onnx_graph.nodes(bad))
    assert onnx_graph.find_gem_head([]) is None


def test_pasted_copy_missed_whole_is_found_with_its_box(checker, pasted):
    """Measured by bench/regions.py, thorough mode finds most 55% pastes into photos: here the
    whole image misses all four, regions find at least three, each with a box on the paste."""
    found = 0
    for im, box, source in pasted:
        off = checker.check([im], regions="off")[0]
        fast = checker.check([im], regions="thorough")[0]
        print(f"{source}: off {off.verdict.value} {off.best.similarity:.3f}; fast {fast.verdict.value} "
              f"{fast.best.similarity:.3f} in {fast.best.region}")
        assert not (off.best.source == source and off.is_copy)  # the whole image alone misses it
        assert off.best.region is None and all(m["region"] is None for m in off.to_dict()["matches"])
        if not fast.is_copy:
            continue
        found += 1
        assert fast.best.source == source  # never another training image
        assert fast.best.region is not None and overlap(fast.best.region, box) >= 0.5, (fast.best.region, box)
        r = fast.best.region
        assert fast.to_dict()["best"]["region"] == {"x": r.x, "y": r.y, "w": r.w, "h": r.h, "image_w": 512,
                                                    "image_h": 512}
        # judged on the score above the pack's background, which the report gives beside the similarity
        b = fast.best
        assert b.background is not None and 0 < b.background < b.similarity
        assert NORMALISED_REGION_TIERS["sscd"].verdict(b.similarity - b.background).is_copy
        # a region reaches "likely" only when its features map onto the stored thumbnail
        assert fast.verdict is (Verdict.LIKELY if b.geometry is not None and b.geometry.verified else Verdict.POSSIBLE)
        assert fast.to_dict()["best"]["normalised"] == round(b.similarity - b.background, 4)
        assert not any("no background set" in n for n in fast.notes)
    assert found >= 3


def test_without_a_background_regions_are_judged_above_the_default(raw_pack, sscd_onnx, pasted):
    """A pack built without --background uses the default background shipped for SSCD: its regions
    are judged on the normalised score as well, and no report says it has no background."""
    assert raw_pack.manifest.background is None and raw_pack.default_background is not None
    checker = Checker([raw_pack], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    for im, box, source in pasted[:2]:
        report = checker.check([im], regions="thorough")[0]
        assert not any("no background set" in n for n in report.notes), report.notes
        b = report.best
        if b.region is not None:
            assert b.background is not None  # judged above the default background
            expected = NORMALISED_REGION_TIERS["sscd"].verdict(b.similarity - b.background)
            if expected is Verdict.LIKELY:
                # this pack stores no thumbnails, so no region is verified geometrically: it stays possible
                expected = Verdict.POSSIBLE
                assert "stores no thumbnail" in b.geometry.detail
            assert report.verdict is expected
        else:
            assert report.verdict is DEFAULT_TIERS["sscd"].verdict(b.similarity)
    assert not any("background" in n for n in checker.check([pasted[0][0]], regions="off")[0].notes)


def test_builder_keeps_a_background_without_copies_of_the_pack(pack, split, sscd, tmp_path, background_folder):
    """The background set: embedded by the builder, copies of pack images dropped (one pack photo
    among 150 drawings), float16 rows of unit length named with their sha256 in the manifest."""
    import numpy as np

    from lib_replicheck.packs import background as bg

    entry = pack.manifest.background
    assert entry["file"] == bg.FILE and pack.manifest.file(bg.FILE) is not None
    assert entry["count"] == len(pack.background) and entry["count"] > 100
    rows = np.load(pack.path / bg.FILE, allow_pickle=False)
    assert rows.dtype == np.float16 and rows.shape == (entry["count"], 512)
    # with a pack photo among the background images, that one is dropped
    folder = photo_folder(tmp_path / "bg", [split[0][3]])
    for p in sorted(background_folder.iterdir())[:20]:
        (folder / p.name).symlink_to(p.resolve())
    built = build_from_items(sources.folder(photo_folder(tmp_path / "photos", split[0][:6])), sscd,
                             tmp_path / "pack", thumbnails=False, background=sources.folder(folder),
                             log=lambda s: None)
    again = Pack(built.path)
    assert again.manifest.background["dropped_as_copies"] == 1
    assert again.manifest.background["count"] == 20
    assert float((again.background @ np.asarray(sscd.embed([load_image(split[0][3])]))[0]).max()) < 0.75


def test_background_is_refused_for_bit_codes(split, tmp_path):
    from lib_replicheck.errors import ReplicheckError

    folder = photo_folder(tmp_path / "photos", split[0][:2])
    with pytest.raises(ReplicheckError, match="--background: score normalisation is for similarity descriptors"):
        build_from_items(sources.folder(folder), embedders.load("pdq"), tmp_path / "pack",
                         background=sources.folder(folder), log=lambda s: None)
    assert not (tmp_path / "pack").exists()


def test_whole_image_copies_keep_their_verdict(checker, split):
    for im in [load_image(p) for p in split[0][:3]]:
        off, fast = checker.check([im], regions="off")[0], checker.check([im], regions="fast")[0]
        assert fast.best.id == off.best.id and fast.verdict is off.verdict is Verdict.DUPLICATE
        assert fast.best.region is None  # the whole image scores highest: no box


def test_novel_photos_stay_unflagged(checker, split):
    rng = random.Random(5)
    images = [random_crop(rng, shrink(load_image(p)), (512, 512), least=0.3) for p in split[1][:12]]
    reports = checker.check(images, regions="thorough")
    print("novel best scores:", [round(r.best.similarity, 3) for r in reports])
    assert [r.verdict for r in reports] == [Verdict.NONE] * len(images)


def test_command_line_json_gives_the_box(pack, pasted, sscd_onnx, tmp_path):
    im, box, source = pasted[0]
    f = tmp_path / "pasted.png"
    im.save(f)
    args = ["check", f, "--pack", pack.path, "--runtime", "onnx", "--weights", sscd_onnx, "--offline", "--json",
            "--top-k", "1"]
    runs = {}
    for mode in ("off", "thorough"):
        p = subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args), "--regions", mode], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
        runs[mode] = json.loads(p.stdout.splitlines()[0])
    assert runs["off"]["best"]["region"] is None
    best = runs["thorough"]["best"]
    assert best["source"] == source and best["verdict"] in ("possible copy", "likely copy", "duplicate")
    assert overlap(Region(**best["region"]), box) >= 0.5
    assert abs(best["normalised"] - (best["similarity"] - best["background"])) < 2e-4 and best["normalised"] >= 0.25
    bad = subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args), "--regions", "tiles"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--regions" in bad.stderr and "Traceback" not in bad.stderr


def test_panel_draws_the_box_and_escapes_text(checker, pasted):
    from dataclasses import replace

    from lib_replicheck.webui.panel import render

    im, box, source = pasted[0]
    report = checker.check([im], ["<img src=x onerror=alert(1)>"], regions="thorough")[0]
    hostile = replace(report.best.item, caption='<script>alert("x")</script>', url="javascript:alert(1)")
    report.best = report.matches[0] = replace(report.best, item=hostile)
    page = render([report])
    r = report.best.region
    assert f'<rect class="rc-region-box" x="{r.x}" y="{r.y}" width="{r.w}" height="{r.h}"' in page
    assert f'viewBox="0 0 {r.image_w} {r.image_h}"' in page
    assert f"found in the region {r.w}x{r.h} at ({r.x}, {r.y}) of the 512x512 image" in page
    above = f"{math.floor(report.best.normalised * 100 + 1e-6) / 100:.2f}"  # rounded down, as every score reads
    assert f"{above} above the pack&#x27;s background, which its verdict is judged on" in page
    assert "<script>" not in page and "<img src=x" not in page and "javascript:" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    off = checker.check([im], regions="off")[0]
    assert "rc-region" not in render([off])  # a whole-image match draws no box


def test_http_api_regions_field(webui, pack, pasted):
    """POST /replicheck/v1/check with `regions`: the best match's box in the answer; a bad value is a 422."""
    import base64
    import io
    import shutil

    from fastapi.testclient import TestClient

    service = webui.module.service
    dst = webui.packs_dir / "region-photos"
    onnx = service.models_dir / "sscd_disc_mixup.onnx"
    had_onnx = onnx.is_file()
    shutil.copytree(pack.path, dst)
    if not had_onnx:
        onnx.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / ".cache" / "sscd_disc_mixup.onnx", onnx)
    try:
        client = TestClient(webui.app)
        im, box, source = pasted[1]
        buf = io.BytesIO()
        im.save(buf, "PNG")
        body = {"image": base64.b64encode(buf.getvalue()).decode(), "packs": ["region-photos"], "top_k": 1}
        off = client.post("/replicheck/v1/check", json=body)
        fast = client.post("/replicheck/v1/check", json={**body, "regions": "thorough"})
        assert off.status_code == 200 and fast.status_code == 200, (off.text, fast.text)
        assert off.json()["best"]["region"] is None and not off.json()["is_copy"]
        best = fast.json()["best"]
        assert fast.json()["is_copy"] and best["source"] == source
        assert overlap(Region(**best["region"]), box) >= 0.5
        assert best["judged_on"] == "region above background" and "above background; raw" in fast.json()["summary"]
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (512, 512), "white").save(buf, "PNG")  # flat: no verdict from SSCD
        flat = client.post("/replicheck/v1/check", json={**body, "image": base64.b64encode(buf.getvalue()).decode()})
        assert flat.status_code == 200 and (flat.json()["verdict"], flat.json()["summary"], flat.json()["withheld"]) \
            == ("not checked", "not checked (flat image)", "flat image"), flat.text
        bad = client.post("/replicheck/v1/check", json={**body, "regions": "<b>all</b>"})
        assert bad.status_code == 422 and "regions" in bad.text
    finally:
        service.unload()
        shutil.rmtree(dst, ignore_errors=True)
        if not had_onnx:
            onnx.unlink(missing_ok=True)


def test_hostile_background_files_are_refused_by_name(pack, tmp_path):
    """The background file comes with a downloaded pack: a cut file, a pickle, the wrong shape,
    values that are not finite or not of unit length, a count the file does not hold, a path out of
    the pack or a file the manifest does not list are each a PackError naming what is wrong."""
    import io
    import shutil

    import numpy as np

    from lib_replicheck.embedders.weights import sha256_file
    from lib_replicheck.errors import PackError
    from lib_replicheck.packs import background as bg
    from lib_replicheck.packs import manifest as mf

    good = np.load(pack.path / bg.FILE, allow_pickle=False)

    def npy(a) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=True)
        return buf.getvalue()

    def refused(name: str, data: bytes | None, expect: str, **entry) -> None:
        folder = tmp_path / name
        shutil.copytree(pack.path, folder)
        if data is not None:
            (folder / bg.FILE).write_bytes(data)
        m = mf.read(folder)
        m.background = {**m.background, **entry}
        m.files = [mf.FileEntry(f.path, (folder / f.path).stat().st_size, sha256_file(folder / f.path))
                   if f.path == bg.FILE else f for f in m.files]
        mf.write(folder, m)
        with pytest.raises(PackError) as e:
            Pack(folder)
        assert expect in str(e.value) and "Traceback" not in str(e.value), str(e.value)

    nan, long = good.astype(np.float32), good.astype(np.float32)
    nan[3, 7] = np.nan
    long[5] *= 2
    refused("cut", (pack.path / bg.FILE).read_bytes()[:1000], f"background {bg.FILE} cannot be read")
    refused("pickle", npy(np.array([{"a": 1}], dtype=object)), f"background {bg.FILE} cannot be read")
    refused("shape", npy(good[:, :256]), f"background {bg.FILE} holds float16 ({len(good)}, 256), not float16 or "
                                        "float32 [1 to 50,000, 512]")
    refused("nan", npy(nan), f"background {bg.FILE} holds values that are not finite")
    refused("length", npy(long), f"background {bg.FILE} holds rows that are not of unit length")
    refused("count", None, f"background {bg.FILE} holds {len(good)} rows, the manifest says {len(good) + 1}",
            count=len(good) + 1)
    refused("zero", None, "manifest field 'background.count' should be from 1 to 50,000, not 0", count=0)
    refused("escape", None, "manifest field 'background.file' '../background.npy' leaves the pack folder",
            file="../background.npy")
    refused("unlisted", None, "manifest does not list the file 'other.npy'", file="other.npy")


def test_command_line_build_takes_a_background(split, background_folder, sscd_onnx, tmp_path):
    """`build --background SOURCE --background-size N`: the command users run writes the set."""
    folder = photo_folder(tmp_path / "photos", split[0][:4])
    out = tmp_path / "pack"
    p = subprocess.run([sys.executable, "-m", "lib_replicheck", "build", str(folder), "--out", str(out),
                        "--runtime", "onnx", "--weights", str(sscd_onnx), "--offline", "--background",
                        str(background_folder), "--background-size", "40", "--progress", "off"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "background: 40 images embedded" in p.stderr
    built = Pack(out)
    assert built.manifest.background["count"] + built.manifest.background["dropped_as_copies"] == 40
    bad = subprocess.run([sys.executable, "-m", "lib_replicheck", "build", str(folder), "--out", str(tmp_path / "x"),
                          "--embedder", "pdq", "--background", str(background_folder), "--progress", "off"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--background: score normalisation is for similarity descriptors" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


def test_the_judged_number_is_shown_and_named_everywhere(pack, checker, pasted, sscd_onnx, tmp_path):
    """A region judged against the pack's background is judged on how far it stands above it, not on
    its similarity (a 0.67 could be a likely copy under the 0.75 cut): the text, the JSON, the HTML
    report's histogram and the panel show that number, say what it is, and give the raw one beside it."""
    import html

    from lib_replicheck.webui.panel import render

    def floor(v: float) -> str:
        return f"{math.floor(v * 100 + 1e-6) / 100:.2f}"

    im, box, source = pasted[0]
    f = tmp_path / "pasted.png"
    im.save(f)
    args = [sys.executable, "-m", "lib_replicheck", "check", str(f), "--pack", str(pack.path), "--runtime", "onnx",
            "--weights", str(sscd_onnx), "--offline", "--regions", "thorough"]
    j = subprocess.run(args + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    report = json.loads(j.stdout.splitlines()[0])
    best = report["best"]
    assert best["judged_on"] == "region above background" and best["source"] == source
    assert abs(best["judged_score"] - best["normalised"]) < 1e-4 and best["verdict"] == report["verdict"] != "no copy"
    words = f"region {floor(best['normalised'])} above background; raw {floor(best['similarity'])}"
    assert report["summary"] == f"{report['verdict']} ({words} in photos)"
    text = subprocess.run(args + ["--report", str(tmp_path / "r.html")], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert f"{report['verdict'].upper():<14} ({words} in photos)" in text.stdout, text.stdout
    page = (tmp_path / "r.html").read_text()
    region_svg = page[page.index('<svg id="histogram-region-background"'):]
    region_svg = region_svg[:region_svg.index("</svg>")]
    lo = math.floor(best["normalised"] * 50) / 50
    assert 'data-count="1"' in region_svg and f"1 image(s) at {lo:.2f}" in region_svg
    assert "sscd possible 0.25" in region_svg and "sscd likely 0.35" in region_svg
    assert 'class="bar"' not in page[page.index('<svg id="histogram"'):page.index('<svg id="histogram-region')]
    card = checker.check([im], regions="thorough")[0]
    assert html.escape(card.best.judged_text()) in render([card]) and card.best.judged_text() == words
