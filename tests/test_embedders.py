"""Embedder plumbing with randomly initialised models of the real architectures, and weights files.

A random network does not separate copies: these tests check loading, preprocessing, batching,
shapes, normalisation, determinism, downloads and sha256 checks. Detection quality is tested with
real weights in test_detection_*.py.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from lib_replicheck import embedders
from lib_replicheck.errors import EmbedderError, WeightsError
from lib_replicheck.images import load_image

PHOTOS = sorted((REPO / "lib_replicheck" / "demo_images" / "pack").glob("*.jpg"))


@pytest.fixture(scope="module")
def images():
    return [load_image(p) for p in PHOTOS]


@pytest.fixture(scope="module")
def torchscript_resnet50(tmp_path_factory):
    """SSCD's architecture: ResNet-50 trunk, GeM pooling, 512-d projection, L2 normalisation."""
    import torch
    import torchvision

    class SSCDLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            trunk = torchvision.models.resnet50(weights=None)
            self.trunk = torch.nn.Sequential(*list(trunk.children())[:-2])
            self.proj = torch.nn.Linear(2048, 512)

        def forward(self, x):
            f = self.trunk(x).clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3)  # GeM, p=3
            return torch.nn.functional.normalize(self.proj(f), dim=1)

    torch.manual_seed(0)
    model = SSCDLike().eval()
    path = tmp_path_factory.mktemp("weights") / "sscd_disc_mixup.torchscript.pt"
    torch.jit.script(model).save(str(path))
    return path


def test_torchscript_runtime(torchscript_resnet50, images):
    e = embedders.load("sscd", runtime="torchscript", weights=torchscript_resnet50)
    assert e.runtime == "torchscript" and e.id == "sscd_disc_mixup" and e.dim == 512
    v = e.embed(images)
    assert v.shape == (len(images), 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    again = e.embed(images[::-1])[::-1]  # batches grouped by size, order preserved, deterministic
    assert np.allclose(v, again, atol=1e-5)
    one = e.embed(images[:1])
    assert np.allclose(one[0], v[0], atol=1e-5)
    assert e.spec.weights_for("torchscript").sha256 == hashlib.sha256(torchscript_resnet50.read_bytes()).hexdigest()


def test_torchscript_preprocessing_matches_the_sscd_readme(torchscript_resnet50):
    e = embedders.load("sscd", runtime="torchscript", weights=torchscript_resnet50)
    assert e.preprocess(Image.new("RGB", (600, 400))).shape == (288, 432, 3)
    assert e.spec.preprocessing["resize_short_side"] == 288
    assert e.spec.preprocessing["mean"] == [0.485, 0.456, 0.406]


def test_torchscript_weights_download_and_sha256(torchscript_resnet50, http_server, tmp_path, images):
    """First use downloads into the models folder (from a real HTTP server on 127.0.0.1)."""
    from lib_replicheck.embedders import sscd
    from lib_replicheck.embedders.base import EmbedderSpec

    data = torchscript_resnet50.read_bytes()
    http_server.files["/sscd_disc_mixup.torchscript.pt"] = data
    good = hashlib.sha256(data).hexdigest()
    spec = sscd.spec_for("sscd_disc_mixup")

    def with_weights(url, sha):
        d = spec.to_dict()
        d["weights"] = [{"runtime": "torchscript", "url": url, "sha256": sha,
                         "filename": "sscd_disc_mixup.torchscript.pt"}]
        return EmbedderSpec.from_dict(d)

    url = http_server.url + "/sscd_disc_mixup.torchscript.pt"
    old = sscd.BASE_URL
    sscd.BASE_URL = http_server.url + "/"
    try:
        models = tmp_path / "models"
        # a pack that names the wrong sha256: the downloaded file is refused and removed
        with pytest.raises(WeightsError, match="sha256"):
            embedders.load(with_weights(url, "0" * 64), runtime="torchscript", models_dir=models, progress=False)
        assert not (models / "sscd_disc_mixup.torchscript.pt").exists()
        assert not list(models.glob("*.part"))
        # offline: nothing is fetched
        with pytest.raises(WeightsError, match="network access is off"):
            embedders.load("sscd", runtime="torchscript", models_dir=models, offline=True)
        e = embedders.load(with_weights(url, good), runtime="torchscript", models_dir=models, progress=False)
        assert (models / "sscd_disc_mixup.torchscript.pt").read_bytes() == data
        assert e.embed(images[:1]).shape == (1, 512)
        # a file placed by hand that does not match the pack's sha256 is refused too
        (models / "sscd_disc_mixup.torchscript.pt").write_bytes(data[:-1] + b"x")
        with pytest.raises(WeightsError, match="sha256"):
            embedders.load(with_weights(url, good), runtime="torchscript", models_dir=models, offline=True)
        # a pack's own URL without a sha256 is ignored in favour of the official one
        e2 = embedders.load(with_weights(http_server.url + "/elsewhere.pt", None), runtime="torchscript",
                            models_dir=tmp_path / "m3", progress=False)
        assert e2.weights_path == tmp_path / "m3" / "sscd_disc_mixup.torchscript.pt"
        # 404
        with pytest.raises(WeightsError, match="could not download"):
            embedders.load(with_weights(http_server.url + "/missing.pt", good), runtime="torchscript",
                           models_dir=tmp_path / "m2", progress=False)
    finally:
        sscd.BASE_URL = old


def test_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a loadable ONNX model"):
        embedders.load("sscd", runtime="onnx", weights=bad)
    bad_ts = tmp_path / "bad.pt"
    bad_ts.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a loadable TorchScript model"):
        embedders.load("sscd", runtime="torchscript", weights=bad_ts)


def test_onnx_file_with_the_wrong_sha256_is_refused(sscd_onnx):
    from lib_replicheck.embedders import sscd

    d = sscd.spec_for("sscd_disc_mixup", onnx_sha256="1" * 64)
    with pytest.raises(WeightsError, match="sha256"):
        embedders.load(d, runtime="onnx", weights=sscd_onnx)


def test_clip_with_random_weights(images):
    from lib_replicheck.embedders.clip import ClipEmbedder

    e = ClipEmbedder("ViT-B-32", pretrained=None)
    assert e.id == "clip:ViT-B-32/random" and e.dim == 512 and e.metric == "cosine"
    v = e.embed(images)
    assert v.shape == (4, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.allclose(v, e.embed(images), atol=1e-5)


def test_clip_pack_reports_semantic_similarity(images, tmp_path):
    from lib_replicheck.check import SEMANTIC_NOTE, Checker
    from lib_replicheck.embedders.clip import ClipEmbedder
    from lib_replicheck.packs.build import build_pack, folder_records
    from lib_replicheck.packs.pack import Pack

    e = ClipEmbedder("ViT-B-32", pretrained=None)
    out = build_pack(folder_records(PHOTOS[0].parent), e, tmp_path / "clip", thumbnails=False, log=lambda s: None)
    pack = Pack(out.path)
    assert pack.embedder.id == "clip:ViT-B-32/random"
    checker = Checker([pack])
    checker._embedders[e.id] = e  # random weights cannot be re-created from the spec's tag
    r = checker.check(images[:1])[0]
    assert r.best.source == PHOTOS[0].name and r.best.similarity > 0.99
    assert SEMANTIC_NOTE in r.notes and not r.is_copy  # no default CLIP tiers: semantic, not a copy


def test_pdq_missing_package_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "pdqhash", None)
    with pytest.raises(EmbedderError, match="pip install pdqhash"):
        embedders.load("pdq")


def test_unknown_embedder():
    with pytest.raises(EmbedderError, match="unknown embedder 'dino'"):
        embedders.load("dino")
    with pytest.raises(EmbedderError, match="unknown SSCD model"):
        embedders.load("sscd_disc_tiny")


def test_core_imports_without_torch():
    import subprocess

    code = ("import sys, time; t = time.time(); import lib_replicheck.check, lib_replicheck.cli, "
            "lib_replicheck.packs.pack, lib_replicheck.embedders; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, sorted(sys.modules); "
            "print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
