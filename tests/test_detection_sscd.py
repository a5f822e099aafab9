"""SSCD with Meta's real sscd_disc_mixup weights (int8 ONNX) on real photos.

Every edit, crops and rotations included, must score >= 0.5 (Somepalli et al.'s replication cut)
against its original, and unrelated images must score below it.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import edits, photo_folder
from lib_replicheck import embedders
from lib_replicheck.check import Checker
from lib_replicheck.images import load_image
from lib_replicheck.packs.build import build_pack, folder_records
from lib_replicheck.packs.pack import Pack


@pytest.fixture(scope="module")
def sscd(sscd_onnx):
    return embedders.load("sscd", runtime="onnx", weights=sscd_onnx)


@pytest.fixture(scope="module")
def sscd_pack(tmp_path_factory, pack_photos, sscd):
    folder = photo_folder(tmp_path_factory.mktemp("photos"), pack_photos)
    result = build_pack(folder_records(folder), sscd, tmp_path_factory.mktemp("packs") / "photos-sscd",
                        thumbnails=False, log=lambda s: None)
    return Pack(result.path)


def test_embedder_is_the_real_model(sscd, sscd_onnx):
    assert sscd.id == "sscd_disc_mixup" and sscd.dim == 512 and sscd.runtime == "onnx"
    assert sscd.spec.weights_for("onnx").sha256  # recorded for the pack's manifest
    v = sscd.embed([load_image(sscd_onnx.parent.parent / "lib_replicheck/demo_images/pack/coffee.jpg")])
    assert v.shape == (1, 512) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


def test_edited_copies_score_above_the_replication_cut(sscd_pack, sscd_onnx, pack_photos):
    checker = Checker([sscd_pack], top_k=1, runtime="onnx", weights=sscd_onnx, offline=True)
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
