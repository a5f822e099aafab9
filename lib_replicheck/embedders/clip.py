"""CLIP image embeddings through open_clip: semantic similarity, not evidence of copying.

LAION was filtered and indexed with CLIP (ViT-L-14 / openai), so a CLIP pack finds training images
about the same thing; two different photos of the Eiffel tower score high. Reports say so.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import EmbedderError
from .base import COSINE, Embedder, EmbedderSpec, WeightsFile, l2_normalise

DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"


def embedder_id(model: str, pretrained: str | None) -> str:
    return f"clip:{model}/{pretrained or 'random'}"


def parse_id(name: str) -> tuple[str, str | None]:
    """'clip:ViT-B-32/openai' -> ('ViT-B-32', 'openai'); 'clip' -> the default model."""
    rest = name.split(":", 1)[1] if ":" in name else ""
    if not rest:
        return DEFAULT_MODEL, DEFAULT_PRETRAINED
    model, _, pretrained = rest.partition("/")
    return model, (None if pretrained in ("", "random", "none") else pretrained)


class ClipEmbedder(Embedder):
    batch_size = 16

    def __init__(self, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                 device: str = "cpu", models_dir=None, offline: bool = False, checkpoint=None):
        """`pretrained=None` builds the architecture with random weights (for tests of the plumbing);
        `checkpoint` loads the weights of tag `pretrained` from a local file instead of the hub."""
        try:
            import open_clip
            import torch
        except ImportError as e:
            raise EmbedderError(f"the clip embedder needs open_clip_torch and torch ({e})") from None
        self.device = device
        cache_dir = None
        if models_dir is not None:
            from pathlib import Path

            cache_dir = str(Path(models_dir) / "clip")
        if offline:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=str(checkpoint) if checkpoint else pretrained, device=device,
                cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError, HF errors, ...
            raise EmbedderError(f"could not load CLIP {model}/{pretrained}: {str(e).splitlines()[0][:300]}") from None
        net.eval()
        self._net = net
        self._preprocess = preprocess
        self._torch = torch
        dim = int(getattr(net.visual, "output_dim", 0) or net.text_projection.shape[1])
        self.spec = EmbedderSpec(
            id=embedder_id(model, pretrained),
            kind="clip",
            model=model,
            dim=dim,
            metric=COSINE,
            preprocessing={"open_clip_transform": str(preprocess).replace("\n", " ")[:500]},
            weights=(WeightsFile("open_clip", pretrained, None, None),),
        )

    @property
    def runtime(self) -> str:
        return "open_clip"

    def embed(self, images: Sequence):
        import numpy as np

        torch = self._torch
        out = []
        try:
            with torch.inference_mode():
                for start in range(0, len(images), self.batch_size):
                    chunk = images[start:start + self.batch_size]
                    x = torch.stack([self._preprocess(im.convert("RGB")) for im in chunk]).to(self.device)
                    out.append(self._net.encode_image(x).float().cpu().numpy())
        except MemoryError:
            raise EmbedderError("out of memory while embedding; use a smaller batch or the CPU") from None
        except Exception as e:  # noqa: BLE001
            raise EmbedderError(f"CLIP failed: {str(e).splitlines()[0][:300]}") from None
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return l2_normalise(np.concatenate(out))

    def close(self) -> None:
        self._net = None
