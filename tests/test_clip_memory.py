"""A CLIP pack's model in the web UI: what it holds in memory, and that the check service frees it
once it has been unused for the minutes Settings give (the next check loads it again).

The pack is built from published-layout embeddings (clip-retrieval's, 512 float16 columns) for
`clip:ViT-B-32/random`, which the web UI loads with random weights: the model's memory is that of the
real architecture. The idle time is cut to a fraction of a second through the setting; the test
polls for the model to be gone, with a deadline, and asserts no time.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.embedding_layouts import clip_retrieval_folder, distractors

EMBEDDER = "clip:ViT-B-32/random"


@pytest.fixture(scope="module")
def clip_pack(tmp_path_factory):
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions

    tmp = tmp_path_factory.mktemp("clip-pack")
    meta = [{"image_path": f"{i:09d}.jpg", "caption": f"caption {i}", "url": f"https://img.example/{i}.jpg",
             "key": f"{i:09d}", "width": 640, "height": 480} for i in range(60)]
    folder = clip_retrieval_folder(tmp / "laion", [(distractors(60, 512), meta)])
    return build_from_embeddings(folder, tmp / "clip", BuildOptions(embedder=EMBEDDER), log=lambda s: None).path


@pytest.fixture
def installed_clip(webui, clip_pack):
    dst = webui.packs_dir / "clip"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(clip_pack, dst)
    yield dst
    webui.set_option("replicheck_clip_idle_minutes", 5)
    webui.module.service.unload()
    shutil.rmtree(dst, ignore_errors=True)


def wait_for(condition, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def checking_with(webui, packs: list[str], photo) -> None:
    """The web UI set to check with `packs`, models kept between generations but CLIP freed after 0.3 s
    unused, generating `photo`."""
    webui.set_option("replicheck_packs", packs)
    webui.set_option("replicheck_keep_loaded", True)
    webui.set_option("replicheck_clip_idle_minutes", 0.005)  # 0.3 s
    photo = photo.convert("RGB").resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: photo


def test_the_service_frees_an_unused_clip_model(webui, installed_clip, photos):
    service = webui.module.service
    checking_with(webui, ["clip"], photos[0])
    try:
        webui.txt2img()
        status = service.status()
        assert status["last_error"] is None
        assert status["embedders"] == [EMBEDDER]
        clip = service.loaded_checker.loaded_embedder_objects()[0]
        assert_image_tower_only(clip._net)  # loaded for image checks: the text tower is gone
        # ViT-B-32's image tower (bench/clip_memory.py: 351 MB held of the 605 MB open_clip builds)
        assert status["clip_model_bytes"] == clip.memory_bytes() == tensor_bytes(clip._net.visual) > 300e6
        assert clip.built_bytes - clip.memory_bytes() > 200e6
        assert wait_for(lambda: service.status()["embedders"] == []), service.status()
        assert clip._net is None  # closed: its tensors are let go
        assert service.status()["clip_model_bytes"] == 0
        assert service.status()["loaded_packs"] == ["clip"]  # the packs stay open
        webui.txt2img()  # the next check loads it again
        assert service.status()["embedders"] == [EMBEDDER] and service.status()["last_error"] is None
        assert wait_for(lambda: service.status()["embedders"] == [])  # and frees it again
    finally:
        webui.set_option("replicheck_packs", [])


@pytest.fixture
def installed_sscd(webui, pack_photos, sscd_onnx, tmp_path):
    """An SSCD pack of four photos beside the CLIP pack, the ONNX weights in the web UI's models folder."""
    from lib_replicheck import embedders
    from lib_replicheck.builder import sources
    from lib_replicheck.builder.pipeline import build_from_items
    from tests.conftest import photo_folder

    weights = webui.packs_dir.parent / sscd_onnx.name
    if not weights.exists():
        weights.symlink_to(sscd_onnx)
    folder = photo_folder(tmp_path / "src", pack_photos[:4])
    sscd = embedders.load("sscd", runtime="onnx", weights=sscd_onnx)
    yield build_from_items(sources.folder(folder, license="test"), sscd, webui.packs_dir / "sscd-photos",
                           log=lambda s: None).path
    webui.module.service.unload()
    shutil.rmtree(webui.packs_dir / "sscd-photos", ignore_errors=True)


def test_freeing_an_idle_clip_model_keeps_sscd_loaded(webui, installed_clip, installed_sscd, photos):
    """With a CLIP pack and an SSCD pack chosen, the idle free lets go of CLIP alone: the SSCD embedder
    stays loaded and open (the same object, its session kept), and the next check still uses it."""
    service = webui.module.service
    checking_with(webui, ["clip", "sscd-photos"], photos[0])
    try:
        webui.txt2img()
        assert service.status()["last_error"] is None
        loaded = {e.spec.kind: e for e in service.loaded_checker.loaded_embedder_objects()}
        assert set(loaded) == {"clip", "sscd"}
        sscd_id = loaded["sscd"].id
        assert sorted(service.status()["embedders"]) == sorted([EMBEDDER, sscd_id])
        assert wait_for(lambda: service.status()["embedders"] == [sscd_id]), service.status()
        assert loaded["clip"]._net is None  # CLIP is freed
        assert service.status()["clip_model_bytes"] == 0
        assert service.loaded_checker.loaded_embedder_objects() == [loaded["sscd"]]
        assert loaded["sscd"]._session is not None  # SSCD is still loaded, not closed
        webui.txt2img()  # the next check loads CLIP again beside the same SSCD embedder
        again = {e.spec.kind: e for e in service.loaded_checker.loaded_embedder_objects()}
        assert again["sscd"] is loaded["sscd"] and again["clip"] is not loaded["clip"]
        assert service.status()["last_error"] is None
    finally:
        webui.set_option("replicheck_packs", [])


def test_the_setting_says_what_the_model_costs(webui):
    label = webui.shared.opts.data_labels["replicheck_clip_idle_minutes"]
    assert label.default == 5
    assert "1,216 MB" in label.comment_after and "351 MB" in label.comment_after


def tensor_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def assert_image_tower_only(net) -> None:
    """An open_clip model that holds its image tower and nothing of its text tower."""
    assert [name for name, _ in net.named_children()] == ["visual"]
    assert {id(t) for t in (*net.parameters(), *net.buffers())} == \
        {id(t) for t in (*net.visual.parameters(), *net.visual.buffers())}
    for text_part in ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection",
                      "attn_mask"):
        assert not hasattr(net, text_part), text_part


def test_the_embedder_frees_the_text_tower_and_embeds_as_the_whole_model(tmp_path, pack_photos):
    """Loaded from a weights file, the embedder keeps the image tower alone, and its vectors are those
    of the whole model open_clip loads from the same file (encode_image, normalised)."""
    import numpy as np
    import open_clip
    import torch

    from lib_replicheck.embedders.clip import ClipEmbedder
    from lib_replicheck.images import load_image

    torch.manual_seed(3)
    whole = open_clip.create_model("ViT-B-32", force_quick_gelu=True).eval()
    checkpoint = tmp_path / "vit-b-32-random.pt"
    torch.save(whole.state_dict(), checkpoint)
    clip = ClipEmbedder("ViT-B-32", pretrained="openai", checkpoint=checkpoint)
    assert_image_tower_only(clip._net)
    assert clip.built_bytes == tensor_bytes(whole) > clip.memory_bytes() == tensor_bytes(whole.visual)
    images = [load_image(p) for p in pack_photos[:4]]
    with torch.no_grad():
        theirs = whole.encode_image(torch.stack([clip.preprocess(im) for im in images]), normalize=True).numpy()
    ours = clip.embed(images)
    assert ours.shape == (4, 512)
    assert np.abs(ours - theirs).max() < 1e-5
