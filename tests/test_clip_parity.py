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
