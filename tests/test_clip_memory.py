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


def test_the_service_frees_an_unused_clip_model(webui, installed_clip, photos):
    service = webui.module.service
    webui.set_option("replicheck_packs", ["clip"])
    webui.set_option("replicheck_keep_loaded", True)
    webui.set_option("replicheck_clip_idle_minutes", 0.005)  # 0.3 s
    photo = photos[0].convert("RGB").resize((512, 384))
    webui.processing.image_source = lambda p, index, seed: photo
    try:
        webui.txt2img()
        status = service.status()
        assert status["last_error"] is None
        assert status["embedders"] == [EMBEDDER]
        assert status["clip_model_bytes"] > 300e6  # ViT-B-32 as loaded (bench/clip_memory.py: 605 MB)
        clip = service.loaded_checker.loaded_embedder_objects()[0]
        assert wait_for(lambda: service.status()["embedders"] == []), service.status()
        assert clip._net is None  # closed: its tensors are let go
        assert service.status()["clip_model_bytes"] == 0
        assert service.status()["loaded_packs"] == ["clip"]  # the packs stay open
        webui.txt2img()  # the next check loads it again
        assert service.status()["embedders"] == [EMBEDDER] and service.status()["last_error"] is None
        assert wait_for(lambda: service.status()["embedders"] == [])  # and frees it again
    finally:
        webui.set_option("replicheck_packs", [])


def test_the_setting_says_what_the_model_costs(webui):
    label = webui.shared.opts.data_labels["replicheck_clip_idle_minutes"]
    assert label.default == 5
    assert "1,710 MB" in label.comment_after and "605 MB" in label.comment_after
