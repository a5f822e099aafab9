"""A CLIP pack built from published-layout embeddings whose photo rows point at a 127.0.0.1 server
that serves the original photos, for the verification tests (tests/test_verification.py and
tests/hostile/test_hostile_verification.py).

The CLIP model is ViT-B-32 with random weights (no CLIP weights can be fetched here), saved to a
file that the command line loads with --weights, so the check embeds exactly as the pack was made.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.embedding_layouts import clip_retrieval_folder, distractors
from tests.httpfaults import FaultServer

EMBEDDER = "clip:ViT-B-32/random"
ROWS = 40
PHOTO_ROWS = (7, 30)  # where the first two photos sit


@pytest.fixture(scope="module")
def server():
    """A FaultServer on 127.0.0.1 for the module's training images."""
    s = FaultServer()
    yield s
    s.close()


def save_weights(clip, path: Path) -> Path:
    """`clip`'s weights as a whole open_clip model's file, as published weights are: its image tower,
    beside a text tower of another random model (the embedder holds no text tower, and the check
    never runs one)."""
    import open_clip
    from safetensors.torch import save_file

    whole = open_clip.create_model(clip.spec.model, pretrained=None).state_dict()
    whole.update(clip._net.state_dict())
    save_file({k: v.contiguous() for k, v in whole.items()}, str(path))
    return path


def build_pack(folder: Path, clip, photos, url_for) -> Path:
    """A pack of ROWS rows: random distractors, and the photos' CLIP vectors at PHOTO_ROWS whose URL
    is url_for(row)."""
    from lib_replicheck.builder.embedding_source import build_from_embeddings
    from lib_replicheck.builder.options import BuildOptions

    vectors = distractors(ROWS, clip.dim)
    vectors[list(PHOTO_ROWS)] = clip.embed(photos[:len(PHOTO_ROWS)])
    meta = [{"image_path": f"{i:09d}.jpg", "caption": f"caption {i}", "key": f"{i:09d}", "width": 640, "height": 480,
             "url": url_for(i) if i in PHOTO_ROWS else f"http://127.0.0.1:9/none/{i}.jpg"} for i in range(ROWS)]
    source = clip_retrieval_folder(folder / "layout", [(vectors, meta)])
    build_from_embeddings(source, folder / "pack", BuildOptions(embedder=EMBEDDER), log=lambda s: None)
    return folder / "pack"


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (a server that is down)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def models_folder(folder: Path, sscd_onnx: Path) -> Path:
    """A models folder holding the SSCD ONNX file the verification compares with."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sscd_disc_mixup.onnx").symlink_to(sscd_onnx)
    return folder


def check_json(capsys, pack: Path, image: Path, weights: Path, models: Path, *extra: str) -> tuple[int, dict]:
    """`check IMAGE --json` through the command line: (exit status, the image's report)."""
    from lib_replicheck.cli.main import main

    rc = main(["check", str(image), "--pack", str(pack), "--weights", str(weights), "--models-dir", str(models),
               "--json", "--progress", "off", *extra])
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out.err
    return rc, json.loads(lines[0])
