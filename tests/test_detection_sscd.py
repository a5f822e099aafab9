"""SSCD with Meta's real sscd_disc_mixup weights (int8 ONNX) on real photos.

Every edit, crops and rotations included, must score >= 0.5 (Somepalli et al.'s replication cut)
against its original, and unrelated images must score below it.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import edits, photo_folder
from lib_replicheck import embedders
from lib_replicheck.checker import Checker
from lib_replicheck.embedders import EmbedderOptions
from lib_replicheck.images import load_image
from lib_replicheck.builder import sources
from lib_replicheck.builder.pipeline import build_from_items
from lib_replicheck.packs.pack import Pack


@pytest.fixture(scope="module")
def sscd(sscd_onnx):
    return embedders.load("sscd", runtime="onnx", weights=sscd_onnx)


@pytest.fixture(scope="module")
def sscd_pack(tmp_path_factory, pack_photos, sscd):
    folder = photo_folder(tmp_path_factory.mktemp("photos"), pack_photos)
    result = build_from_items(sources.folder(folder), sscd, tmp_path_factory.mktemp("packs") / "photos-sscd",
                              thumbnails=False, log=lambda s: None)
    return Pack(result.path)


def test_embedder_is_the_real_model(sscd, sscd_onnx):
    assert sscd.id == "sscd_disc_mixup" and sscd.dim == 512 and sscd.runtime == "onnx"
    assert sscd.spec.weights_for("onnx").sha256  # recorded for the pack's manifest
    v = sscd.embed([load_image(sscd_onnx.parent.parent / "lib_replicheck/demo_images/pack/coffee.jpg")])
    assert v.shape == (1, 512) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


def test_edited_copies_score_above_the_replication_cut(sscd_pack, sscd_onnx, pack_photos):
    checker = Checker([sscd_pack], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    by_name = {p.name: p for p in pack_photos}
    scores: dict[str, list[float]] = {}
    wrong = []
    for row in range(sscd_pack.manifest.count):
        item = sscd_pack.metadata.get([row])[row]
        variants = edits(load_image(by_name[item.source]))
        for (edit, im), r in zip(variants.items(), checker.check(list(variants.values()), list(variants))):
            scores.setdefault(edit, []).append(r.best.similarity)
            if r.best.id != item.id or not r.is_copy:
                wrong.append((item.source, edit, round(r.best.similarity, 3)))
    for edit, s in scores.items():
        print(f"{edit:>20}: min {min(s):.3f}  1st pct {np.percentile(s, 1):.3f}  median {np.median(s):.3f}")
    assert wrong == []
    assert min(min(s) for s in scores.values()) >= 0.5


def test_unrelated_images_score_below_the_cut(sscd_pack, sscd, clipart, other_photos):
    paths = clipart[::2] + other_photos
    vectors = []
    for start in range(0, len(paths), 32):
        vectors.append(sscd.embed([load_image(p) for p in paths[start:start + 32]]))
    hits = sscd_pack.search(np.concatenate(vectors), k=1)
    best = np.array([h[0].similarity for h in hits])
    print(f"unrelated: n={len(best)} 99th pct {np.percentile(best, 99):.3f} max {best.max():.3f}")
    assert len(best) >= 200
    assert (best < 0.5).all(), [(str(p), round(float(s), 3)) for p, s in zip(paths, best) if s >= 0.5]


def stored_rotated(im, orientation: int, path):
    """`im` saved as a camera stores it: pixels turned, plus the EXIF tag that turns them back."""
    from PIL import Image

    turn = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270}
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.transpose(turn[orientation]).save(path, quality=92, exif=exif.tobytes())
    return path


def test_exif_orientation_does_not_change_the_verdict(sscd_pack, sscd_onnx, pack_photos, tmp_path):
    """A copy stored sideways with an Orientation tag is the same picture on screen: same match, same score."""
    checker = Checker([sscd_pack], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    photo = load_image(pack_photos[3])
    upright = tmp_path / "upright.jpg"
    photo.save(upright, quality=92)
    files = [upright] + [stored_rotated(photo, o, tmp_path / f"orientation{o}.jpg") for o in (6, 3, 8)]
    reports = list(checker.check_files(files))
    ref = reports[0]
    assert ref.is_copy and ref.best.source == pack_photos[3].name
    for r in reports[1:]:
        print(f"{r.image}: {r.best.similarity:.3f} (upright {ref.best.similarity:.3f})")
        assert r.verdict is ref.verdict and r.best.id == ref.best.id
        assert abs(r.best.similarity - ref.best.similarity) < 0.02


def test_pack_built_from_rotated_originals_matches_upright_copies(sscd, sscd_onnx, pack_photos, tmp_path):
    """The builder embeds and records training images as displayed."""
    folder = tmp_path / "rotated"
    folder.mkdir()
    originals = [load_image(p) for p in pack_photos[:2]]
    for i, im in enumerate(originals):
        stored_rotated(im, 6, folder / f"{i}.jpg")
    built = build_from_items(sources.folder(folder), sscd, tmp_path / "pack", thumbnails=False, log=lambda s: None)
    pack = Pack(built.path)
    checker = Checker([pack], top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True))
    for i, r in enumerate(checker.check(originals)):
        assert r.best.source == f"{i}.jpg" and r.best.similarity > 0.95, (i, r.best.similarity)
        assert (r.best.width, r.best.height) == originals[i].size  # the displayed size, not the stored one


def run_cli(*args, env=None):
    import os
    import subprocess
    import sys

    from conftest import REPO

    e = dict(os.environ, **({"REPLICHECK_HOME": str(env)} if env else {}))
    return subprocess.run([sys.executable, "-m", "lib_replicheck", *map(str, args)], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def walls(tmp_path_factory, pack_photos, sscd_onnx):
    """An SSCD pack of four photos and MATE's six transparent wallpapers, built through the command
    line: (the pack, what the build wrote on stderr)."""
    from conftest import BACKGROUNDS

    transparent = sorted((BACKGROUNDS / "mate" / "abstract").glob("*.png"))
    src = photo_folder(tmp_path_factory.mktemp("walls"), pack_photos[:4] + transparent)
    out = tmp_path_factory.mktemp("packs") / "walls"
    r = run_cli("build", src, "--out", out, "--embedder", "sscd", "--runtime", "onnx", "--weights", sscd_onnx,
                "--offline")
    assert r.returncode == 0, r.stderr
    return out, r.stderr


def test_flat_images_get_no_verdict_and_the_builder_warns(walls, pack_photos, sscd_onnx, tmp_path):
    """A plain white image scored 0.90 (likely copy) against transparent wallpapers put on white, and
    another transparent wallpaper 1.00 (duplicate): flat images now get no verdict from SSCD, and
    the build names the flat images it indexed. Copies of the photos are still found."""
    import json

    from PIL import Image

    from conftest import BACKGROUNDS

    pack, build_log = walls
    assert ("warning: 6 flat image(s) indexed (Arc-Colors-Transparent-Wallpaper.png, Flow.png, Gulp.png, Silk.png, "
            "Spring.png, ...)") in build_log
    white = tmp_path / "white.png"
    Image.new("RGB", (512, 512), "white").save(white)
    stripes = BACKGROUNDS / "mate" / "desktop" / "MATE-Stripes-Light.png"  # transparent, not in the pack
    copy = tmp_path / "copy.jpg"
    edits(load_image(pack_photos[1]))["cropped 90% centre"].save(copy, quality=90)
    args = ("--pack", pack, "--runtime", "onnx", "--weights", sscd_onnx, "--offline")
    r = run_cli("check", white, stripes, copy, *args, "--json")
    assert r.returncode == 1, r.stderr  # the copy; a flat image is neither a copy nor an error
    reports = [json.loads(x) for x in r.stdout.splitlines()]
    for x in reports[:2]:
        assert (x["verdict"], x["summary"], x["is_copy"], x["withheld"]) == \
            ("not checked", "not checked (flat image)", False, "flat image"), x
        assert x["best"]["similarity"] > 0.85  # what used to be judged a copy
    assert reports[2]["is_copy"] and reports[2]["best"]["source"] == pack_photos[1].name
    text = run_cli("check", white, *args)
    assert text.returncode == 0 and f"{white}\n  not checked    (flat image)" in text.stdout
    assert "1 image: 0 flagged, 0 no copy, 1 not checked (1 flat image)" in text.stdout
    from lib_replicheck.report import infotext  # the web UI's panel and infotext say the same
    from lib_replicheck.webui.panel import render

    report = Checker([Pack(pack)], embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True)).check([load_image(white)])[0]
    assert infotext(report) == "not checked (flat image)"
    page = render([report])
    assert 'data-verdict="not-checked"' in page and ">not checked (flat image)<" in page and 'data-flagged="0"' in page


def test_packs_of_different_embedders_are_ranked_by_tier_then_pack(walls, pack_photos, sscd_onnx, tmp_path):
    """An SSCD pack and the PDQ demo pack: similarities of different embedders measure different
    things, so matches are listed by verdict, then pack by pack (in the packs' order), each line
    naming its pack; a PDQ 0.53 no longer sits above SSCD's own nearest images."""
    import json
    import shutil

    from conftest import REPO

    home = tmp_path / "home"
    shutil.copytree(walls[0], home / "packs" / "a-walls")  # listed first
    shutil.copytree(REPO / "registry" / "demo", home / "packs" / "demo")
    photo = tmp_path / "photo.jpg"
    load_image(pack_photos[8]).save(photo, quality=90)  # in neither pack
    args = ("--runtime", "onnx", "--weights", sscd_onnx, "--offline", "--top-k", "6")
    r = run_cli("check", photo, *args, "--json", env=home)
    assert r.returncode == 0, r.stderr
    matches = json.loads(r.stdout)["matches"]
    assert {m["verdict"] for m in matches} == {"no copy"}
    packs = [m["pack"] for m in matches]
    assert packs == sorted(packs, key=["walls", "demo"].index) and set(packs) == {"walls", "demo"}, packs
    sims = {p: [m["similarity"] for m in matches if m["pack"] == p] for p in ("walls", "demo")}
    assert all(a >= b for s in sims.values() for a, b in zip(s, s[1:]))  # by similarity within a pack
    assert max(sims["demo"]) > max(sims["walls"])  # what ranking on one list would have put first
    text = run_cli("check", photo, *args, env=home).stdout
    assert "[walls, sscd_disc_mixup]" in text and "[demo, pdq]" in text
    assert "no copy        (best" in text and "in walls)" in text
