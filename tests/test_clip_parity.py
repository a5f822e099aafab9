"""The check embeds as the producer of a pack's vectors did: clip-retrieval's own inference code (the
code LAION's published embeddings came from) and replicheck's CLIP embedder, on the same real photos
with the same weights, give the same vectors.

clip-retrieval 2.45.0 is installed without its dependencies into .cache/clip-retrieval by
tests/setup.sh (its package __init__ imports its web back end, and its ClipMapper module imports
sentence-transformers at the top, neither of which its image path uses). What runs here is its
loader (all_clip.load_clip: OpenAI's `clip.load`, as for LAION's ViT-L/14 and ViT-B/32), its
reader's dataset (clip_inference/reader.py: the files, opened and preprocessed by the loader's
transform), and the mapper's steps (encode_image, divide by the norm, float16). The weights are
random (none can be fetched here), written once as OpenAI's checkpoints are: an fp16 state dict,
which both load.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest

from tests.conftest import REPO

CLIP_RETRIEVAL = REPO / ".cache" / "clip-retrieval"


@pytest.fixture(scope="module")
def clip_retrieval():
    if not (CLIP_RETRIEVAL / "clip_retrieval" / "clip_inference" / "reader.py").is_file():
        pytest.fail(f"{CLIP_RETRIEVAL} is missing; run `bash tests/setup.sh` (it installs clip-retrieval there)")
    sys.path.append(str(CLIP_RETRIEVAL))  # after the environment's own packages: only what they lack
    from all_clip import load_clip

    spec = importlib.util.spec_from_file_location(
        "clip_retrieval_reader", CLIP_RETRIEVAL / "clip_retrieval" / "clip_inference" / "reader.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    yield load_clip, reader
    sys.path.remove(str(CLIP_RETRIEVAL))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random ViT-B/32 weights in OpenAI's form (QuickGELU; an fp16 state dict, as OpenAI's files are)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
    path = tmp_path_factory.mktemp("weights") / "vit-b-32-random.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path


def test_replicheck_embeds_as_clip_retrieval_does(tmp_path, clip_retrieval, checkpoint, pack_photos):
    import torch

    from lib_replicheck.embedders.clip import ClipEmbedder
    from lib_replicheck.images import load_image

    load_clip, reader = clip_retrieval
    folder = tmp_path / "images"
    folder.mkdir()
    for p in pack_photos[:6]:
        shutil.copy(p, folder / p.name)
    model, preprocess, _ = load_clip(clip_model=str(checkpoint), use_jit=False, device="cpu")
    dataset = reader.get_image_dataset()(preprocess, None, str(folder), enable_text=False)
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():  # ClipMapper.__call__'s image steps
        features = model.encode_image(torch.stack([it["image_tensor"] for it in items]))
        features /= features.norm(dim=-1, keepdim=True)
    theirs = features.numpy()
    stored = features.to(torch.float16).numpy()  # what img_emb_N.npy holds

    ours = ClipEmbedder("ViT-B-32", pretrained="openai", checkpoint=checkpoint).embed(
        [load_image(it["image_filename"]) for it in items])
    assert ours.shape == theirs.shape == (6, 512)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.array_equal(ours.astype(np.float16), stored) or np.abs(ours - stored).max() < 2 ** -11
    assert (theirs @ theirs.T)[~np.eye(6, dtype=bool)].max() < 0.999  # six different vectors, not one


def test_a_long_strip_is_embedded_as_clip_retrieval_does(tmp_path, clip_retrieval, checkpoint, pack_photos):
    """Longer than 4:1, replicheck resamples only the centre square the producer's resize and crop
    keep: the same pixels but where PIL's filter taps round the other way (a column, one level),
    where cutting the strip to 4:1 first moved the samples (3 levels, vectors up to 3e-4 apart)."""
    import torch
    from PIL import Image

    from lib_replicheck.embedders.clip import ClipEmbedder

    load_clip, _ = clip_retrieval
    model, preprocess, _ = load_clip(clip_model=str(checkpoint), use_jit=False, device="cpu")
    ours = ClipEmbedder("ViT-B-32", pretrained="openai", checkpoint=checkpoint)
    photo = Image.open(pack_photos[0]).convert("RGB")
    for width, height in ((2560, 266), (2560, 321), (2560, 533), (300, 1400)):  # 9.6:1, 8:1, 4.8:1, 1:4.7
        strip = photo.crop((0, 0, width, height))
        strip.save(tmp_path / "strip.png")
        with torch.no_grad():
            theirs = model.encode_image(preprocess(Image.open(tmp_path / "strip.png"))[None])
            theirs = (theirs / theirs.norm(dim=-1, keepdim=True)).numpy()
        x = ours.preprocess(strip)
        assert tuple(x.shape) == (3, 224, 224)
        assert (x - preprocess(strip)).abs().max().item() < 1.01 / 255 / 0.26  # at most one level of 255
        assert np.abs(ours.embed([strip]) - theirs).max() < 1e-4

