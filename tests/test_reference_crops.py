"""Packs that also store centre crops of their images (`build --centre-crops`), built by the
command users run, with Meta's real SSCD weights (int8 ONNX) on real photos: a part of a training
photo enlarged to fill the picture is found as a likely copy through the crop, where the whole
image alone does not reach it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, photo_folder
from lib_replicheck.checker import Checker
from lib_replicheck.embedders import EmbedderOptions
from lib_replicheck.images import load_image
from lib_replicheck.packs.pack import Pack
from lib_replicheck.thresholds import Verdict


def build(src, out, sscd_onnx, *extra):
    return subprocess.run([sys.executable, "-m", "lib_replicheck", "build", str(src), "--out", str(out),
                           "--runtime", "onnx", "--weights", str(sscd_onnx), "--offline", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


def test_centre_crops_find_an_enlarged_part(tmp_path, pack_photos, sscd_onnx):
    src = photo_folder(tmp_path / "photos", pack_photos[:6])
    plain = build(src, tmp_path / "whole", sscd_onnx)
    cropped = build(src, tmp_path / "crops", sscd_onnx, "--centre-crops", "0.7,0.5")
    assert plain.returncode == 0 and cropped.returncode == 0, plain.stderr + cropped.stderr
    whole, crops = Pack(tmp_path / "whole"), Pack(tmp_path / "crops")
    assert crops.manifest.count == whole.manifest.count == 6 and crops.manifest.vectors == 18
    assert json.loads((tmp_path / "crops" / "manifest.json").read_text())["index"]["variants"] == [
        {"centre_crop": 1.0}, {"centre_crop": 0.7}, {"centre_crop": 0.5}]
    # the middle half of each photo (a little off centre), enlarged to fill a 768-pixel picture
    parts = []
    for p in pack_photos[:6]:
        im = load_image(p)
        w, h = im.size
        box = (round(w * 0.27), round(h * 0.23), round(w * 0.77), round(h * 0.73))
        parts.append(im.crop(box).resize((768, round(768 * (box[3] - box[1]) / (box[2] - box[0])))))
    # the descriptors alone (no geometric verification on the stored thumbnails)
    kw = dict(top_k=1, embedder=EmbedderOptions(runtime="onnx", weights=sscd_onnx, offline=True), geometry=False)
    by_whole = Checker([whole], **kw).check(parts)
    by_crops = Checker([crops], **kw).check(parts)
    for p, a, b in zip(pack_photos[:6], by_whole, by_crops):
        print(p.name, a.best.similarity, b.best.similarity)
        assert b.best.source == p.name and b.best.similarity > a.best.similarity
        assert b.verdict.rank >= Verdict.LIKELY.rank
    assert sum(a.verdict.rank >= Verdict.LIKELY.rank for a in by_whole) <= 1
    # with it (the default), a whole-image candidate whose features map onto its thumbnail is promoted
    verified = Checker([whole], **{**kw, "geometry": True}).check(parts)
    for a, v in zip(by_whole, verified):
        assert v.verdict.rank >= a.verdict.rank
        if v.best.geometry is not None and v.best.geometry.verified:
            assert v.verdict is Verdict.LIKELY and v.best.item.id == a.best.item.id


def test_centre_crops_option_is_checked(tmp_path, pack_photos, sscd_onnx):
    src = photo_folder(tmp_path / "photos", pack_photos[:1])
    for bad in ("0.7,big", "0.2", "0.5,0.5", "0.9,0.8,0.7,0.6"):
        r = build(src, tmp_path / "p", sscd_onnx, "--centre-crops", bad)
        assert r.returncode == 2 and "--centre-crops" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "p").exists()
