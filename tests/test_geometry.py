"""Geometric verification of candidates between "possible" and "likely", on real photos with Meta's real
SSCD weights (int8 ONNX) and a real faiss pack that stores thumbnails: an edited copy the whole image
scores in the band is promoted once its local features map onto the stored thumbnail; a look-alike
with no such features, and a generic pattern found through a region, are not; without OpenCV a
candidate stays "possible" and says why."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from conftest import REPO, photo_folder
from lib_replicheck import embedders
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.checker import Checker
from lib_replicheck.embedders import EmbedderOptions
from lib_replicheck.images import centre_crop, load_image
from lib_replicheck.packs.pack import Pack
from lib_replicheck.thresholds import GEOMETRY_INLIERS, Verdict

sys.path.insert(0, str(REPO / "bench"))
from geometry import checkerboard  # noqa: E402 - the benchmark's own pattern
from regions import paste, random_crop, shrink  # noqa: E402 - the benchmark's own crop and paste makers


def stripes(side: int, n: int = 12) -> Image.Image:
    im = Image.new("RGB", (side, side), "white")
    draw, c = ImageDraw.Draw(im), side // n
    for i in range(0, n, 2):
        draw.rectangle((i * c, 0, (i + 1) * c - 1, side), fill="navy")
    return im


@pytest.fixture(scope="module")
def split(pack_photos):
    return pack_photos[0::2], pack_photos[1::2]


@pytest.fixture(scope="module")
def pack(tmp_path_factory, split, sscd_onnx, clipart):
    """The pack photos and an 8x8 checkerboard, with thumbnails and a background set of drawings."""
    folder = photo_folder(tmp_path_factory.mktemp("photos"), split[0])
    checkerboard(8, 512).save(folder / "checkerboard.png")
    background = tmp_path_factory.mktemp("background")
    for i, p in enumerate(clipart[1::2][:150]):
        (background / f"{i:03d}-{p.name}").symlink_to(p)
    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    built = build_from_items(sources.folder(folder), sscd, tmp_path_factory.mktemp("packs") / "photos",
                             thumbnails=True, background=sources.folder(background), log=lambda s: None)
    return Pack(built.path)


@pytest.fixture(scope="module")
def checker(pack, sscd_onnx):
    return Checker([pack], top_k=3, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))


def check_json(pack, sscd_onnx, path, *extra, env=None) -> dict:
    args = ["check", path, "--pack", pack.path, "--runtime", "onnx", "--weights", sscd_onnx, "--offline", "--json",
            *extra]
    p = subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout.splitlines()[0])


def test_an_edited_copy_in_the_band_is_verified_and_promoted(pack, split, sscd_onnx, tmp_path):
    """The centre 60% of a pack photo: the whole image scores it between "possible" and "likely"; its
    features map onto the stored thumbnail, so the command line says "likely copy" and where."""
    original = split[0][8]
    f = tmp_path / "crop.png"
    crop = centre_crop(shrink(load_image(original)), 0.6)
    crop.save(f)
    report = check_json(pack, sscd_onnx, f)
    best = report["best"]
    assert best["source"] == original.name and 0.5 <= best["similarity"] < 0.75  # in the band
    assert report["verdict"] == "likely copy"
    g = best["geometry"]
    assert g["verified"] and g["inliers"] >= GEOMETRY_INLIERS and g["source"] == "thumbnail"
    area = g["area"]
    w, h = crop.size
    assert (area["image_w"], area["image_h"]) == (w, h)  # in the checked image's own pixels
    assert area["w"] * area["h"] > 0.25 * w * h and len(g["hull"]) >= 3
    assert g["text"].startswith(f"geometry: {g['inliers']} inliers on the thumbnail in {area['w']}x{area['h']}")


def test_a_novel_look_alike_is_not_promoted(checker):
    """A 12x12 dark red and khaki checkerboard is not the pack's black and white 8x8 one, though SSCD
    scores the pair in the band: no features map onto it, so it stays "possible copy"."""
    report = checker.check([checkerboard(12, 512, "darkred", "khaki")], regions="off")[0]
    best = report.best
    assert best.source == "checkerboard.png" and best.region is None
    assert report.verdict is Verdict.POSSIBLE
    assert best.geometry is not None and not best.geometry.verified and best.geometry.inliers < GEOMETRY_INLIERS
    assert best.to_dict()["geometry"]["text"].endswith("(too few)")


@pytest.mark.parametrize("pattern", ["checkerboard", "stripes"])
def test_a_pattern_region_beside_a_photo_never_reaches_likely(checker, split, pattern):
    """A real photo with a drawn checkerboard (7x7, not the pack's 8x8) or stripes beside it: thorough
    regions find the pack's checkerboard at a high region score (before verification, "likely copy
    0.93"), and geometric verification keeps it below "likely"."""
    seen = 0
    for n, p in enumerate(split[1][:6]):
        photo = random_crop(random.Random(n), shrink(load_image(p)), (512, 512))
        canvas = Image.new("RGB", (768, 512), "white")
        canvas.paste(photo, (0, 0))
        drawn = checkerboard(7, 384) if pattern == "checkerboard" else stripes(384)
        canvas.paste(drawn.resize((256, 256)), (512, 128))
        report = checker.check([canvas], regions="thorough")[0]
        assert report.verdict.rank < Verdict.LIKELY.rank, report.summary()
        for m in report.matches:
            if m.region is not None and m.source == "checkerboard.png":
                seen += 1
                assert m.verdict is Verdict.POSSIBLE and m.geometry is not None and not m.geometry.verified
    if pattern == "checkerboard":
        assert seen >= 5  # found through a region, and held at "possible"


def test_without_opencv_a_candidate_stays_possible_with_a_note(pack, split, sscd_onnx, tmp_path):
    """The same edited copy, where OpenCV cannot be imported: "possible copy", and the report says why."""
    import os

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['cv2'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    f = tmp_path / "crop.png"
    centre_crop(shrink(load_image(split[0][8])), 0.6).save(f)
    report = check_json(pack, sscd_onnx, f, env=env)
    assert report["verdict"] == "possible copy" and report["best"]["source"] == split[0][8].name
    g = report["best"]["geometry"]
    assert not g["verified"] and "OpenCV is not installed" in g["detail"]
    assert any(n.startswith("geometric verification: OpenCV is not installed") and n.endswith("stay possible")
               for n in report["notes"]), report["notes"]


def test_the_panel_and_the_html_report_show_the_matched_area(checker, pack, split, sscd_onnx, tmp_path):
    """The promoted copy on the web UI's panel: the inliers' hull drawn on the checked image's outline,
    with the words; in the command line's HTML report: the words, and the area boxed on the checked image."""
    from lib_replicheck.webui.panel import render

    crop = centre_crop(shrink(load_image(split[0][8])), 0.6)
    report = checker.check([crop], regions="off")[0]
    g = report.best.geometry
    assert report.verdict is Verdict.LIKELY and g.verified
    page = render([report])
    assert '<polygon class="rc-geometry-hull" points="' in page
    points = page.split('<polygon class="rc-geometry-hull" points="')[1].split('"')[0].split()
    assert [tuple(map(int, p.split(","))) for p in points] == [tuple(p) for p in g.hull]
    assert f"geometry: {g.inliers} inliers on the thumbnail in {g.area.text()}" in page
    f = tmp_path / "crop.png"
    crop.save(f)
    out = tmp_path / "r.html"
    p = subprocess.run([sys.executable, "-m", "lib_replicheck", "check", str(f), "--pack", str(pack.path), "--runtime",
                        "onnx", "--weights", str(sscd_onnx), "--offline", "--report", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1), p.stderr
    html_page = out.read_text()
    assert "inliers on the thumbnail in " in html_page
    assert "boxed: the area whose features match" in html_page and 'class="region"' in html_page


def test_an_unverified_region_match_to_another_image_does_not_outrank_the_whole_image():
    """At the same verdict, a region's match to a different training image comes after the whole image's
    match unless verification matched its features; verified, it ranks by its score again."""
    from lib_replicheck.checker import best_per_item
    from lib_replicheck.item import Item
    from lib_replicheck.regions import Region
    from lib_replicheck.report import Match
    from lib_replicheck.verification_status import Geometry

    box = Region(0, 0, 128, 128, 512, 512)

    def match(item, similarity, region=None, geometry=None):
        return Match(pack="a", item=Item(id=item), similarity=similarity, distance=None, verdict=Verdict.POSSIBLE,
                     embedder="sscd_disc_mixup", region=region, geometry=geometry)

    whole, region = match(1, 0.55), match(2, 0.70, box, Geometry(inliers=3))
    assert [m.item.id for m in best_per_item([region, whole], ["a"])] == [1, 2]
    verified = match(2, 0.70, box, Geometry(inliers=40, verified=True))
    assert [m.item.id for m in best_per_item([verified, whole], ["a"])] == [2, 1]


def pastes(split, scale: float, n: int):
    """`n` pack photos, each pasted at `scale` of the side into a crop of another real photo (as
    bench/regions.py pastes), with the pasted photo's file name."""
    rng = random.Random(7)
    for k in range(n):
        original = split[0][k % len(split[0])]
        host = random_crop(rng, shrink(load_image(split[1][rng.randrange(len(split[1]))])), (768, 512))
        yield paste(rng, shrink(load_image(original)), host, scale)[0], original.name


def test_a_paste_whose_regions_stay_below_the_tiers_is_found_by_its_placed_features(checker, pack, split, sscd_onnx):
    """Pack photos pasted at 35% of the side into other real photos: no region of `fast` reaches a region
    tier, but a region's nearest training image is the paste's own original; verified on its thumbnail, it
    is a "likely copy" found through that region. Without geometric verification the same regions find
    nothing; novel crops of the other photos, whose regions are verified the same way, stay unflagged."""
    from lib_replicheck.thresholds import GEOMETRY_SHORTLIST, NORMALISED_REGION_TIERS

    plain = Checker([pack], top_k=3, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True),
                    geometry=False)
    below = 0
    for im, source in pastes(split, 0.35, 12):
        report = checker.check([im], regions="fast")[0]
        if report.verdict is Verdict.LIKELY:
            best = report.best
            assert best.source == source and best.geometry.verified and best.region is not None, report.summary()
            if best.normalised < NORMALISED_REGION_TIERS["sscd"].possible:
                below += 1
                assert best.normalised >= GEOMETRY_SHORTLIST["sscd"]
                unverified = plain.check([im], regions="fast")[0]
                assert all(m.source != source or not m.verdict.is_copy for m in unverified.matches), unverified.summary()
    assert below >= 2
    for n, p in enumerate(split[1][:8]):
        crop = random_crop(random.Random(100 + n), shrink(load_image(p)), (768, 512), least=0.3)
        assert not checker.check([crop], regions="fast")[0].verdict.is_copy


def test_a_training_image_too_small_for_local_features_is_not_compared(split):
    """A photo against its own copy shrunk to 64 pixels: too small to compare, so not verified, and said;
    at 160 pixels the same pair is compared and verified."""
    from lib_replicheck.verification.geometry import MIN_TRAINING_SIDE, judged

    photo = random_crop(random.Random(3), shrink(load_image(split[0][2])), (768, 512))
    small, larger = photo.resize((64, 43)), photo.resize((240, 160))
    g = judged(photo, small)
    assert not g.verified and g.inliers == 0
    assert g.detail == f"the thumbnail is too small to compare (64x43; local features need {MIN_TRAINING_SIDE} pixels a side)"
    assert judged(photo, larger).verified
