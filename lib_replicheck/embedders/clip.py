"""CLIP image embeddings through open_clip: semantic similarity, not evidence of copying.

LAION was filtered and indexed with CLIP (ViT-L-14 / openai), so a CLIP pack finds training images
about the same thing; two different photos of the Eiffel tower score high. Reports say so.
"""

from __future__ import annotations

from typing import Sequence

from lib_replicheck.errors import EmbedderError
from lib_replicheck.embedders.base import MAX_ASPECT, COSINE, Embedder, EmbedderSpec, WeightsFile, centre_crop_aspect, l2_normalise

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
    withholds_flat = True
    semantic = True

    def __init__(self, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                 device: str = "cpu", models_dir=None, offline: bool = False, checkpoint=None):
        """`pretrained=None` builds the architecture with random weights (for tests of the plumbing);
        `checkpoint` loads the weights of tag `pretrained` from a local file instead of the hub.

        With `offline=True` (the web UI while generating) the weights are looked up on disk only,
        in the Hugging Face cache and open_clip's own, and open_clip is handed the file: nothing
        here can open a connection, and no environment variable of the process is changed.
        """
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
        tag_cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
        if pretrained and not tag_cfg and not checkpoint:
            raise EmbedderError(f"open_clip knows no weights {pretrained!r} for {model}; known: "
                                f"{', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'}")
        if checkpoint:
            weights_file = str(checkpoint)
        elif pretrained:
            weights_file = (local_weights(tag_cfg, cache_dir) if offline
                            else _download(open_clip, tag_cfg, cache_dir, model, pretrained))
            if weights_file is None:
                raise EmbedderError(f"the weights of CLIP {model}/{pretrained} are not on disk and network access "
                                    "is off: load this embedder once with network access (for example by "
                                    "building or checking from the command line) to download them")
        else:
            weights_file = None
        preprocess_args = {k: tag_cfg[v] for k, v in (("image_mean", "mean"), ("image_std", "std"),
                                                      ("image_interpolation", "interpolation"),
                                                      ("image_resize_mode", "resize_mode")) if v in tag_cfg}
        try:  # weights handed over as a file: the tag's activation (OpenAI's are QuickGELU) is set here
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=weights_file, device=device, cache_dir=cache_dir,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu")), **preprocess_args)
        except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError, HF errors, ...
            raise EmbedderError(f"could not load CLIP {model}/{pretrained}: {str(e).splitlines()[0][:300]}") from None
        net.eval()
        dim = int(getattr(net.visual, "output_dim", 0) or net.text_projection.shape[1])
        #: bytes of the whole model open_clip built, text tower included, before that was freed
        self.built_bytes = tensor_bytes(net)
        drop_text_tower(net)
        self._net = net
        self._preprocess = preprocess
        size = getattr(net.visual, "image_size", None)
        size = size[0] if isinstance(size, (tuple, list)) and len(set(size)) == 1 else size
        self._square = size if isinstance(size, int) and tag_cfg.get("resize_mode", "shortest") == "shortest" \
            and tag_cfg.get("interpolation", "bicubic") == "bicubic" else None
        self._torch = torch
        self.weights_path = weights_file
        self.spec = EmbedderSpec(
            id=embedder_id(model, pretrained),
            kind="clip",
            model=model,
            dim=dim,
            metric=COSINE,
            preprocessing={"open_clip_transform": str(preprocess).replace("\n", " ")[:500],
                           "max_aspect": MAX_ASPECT},
            weights=(WeightsFile("open_clip", pretrained, None, None),),
        )

    def preprocess(self, im):
        """The model's input tensor [3, H, W]. An image longer than 4:1 is never resized whole: with
        open_clip's shortest-side resize and centre crop, only the square it keeps is resampled
        (the same pixels, so the same vectors as the producer's); else its centre cut to 4:1."""
        im = im.convert("RGB")
        w, h = im.size
        if max(w, h) <= MAX_ASPECT * min(w, h):
            return self._preprocess(im)
        if self._square is not None:
            return self._preprocess(resized_centre_square(im, self._square))
        return self._preprocess(centre_crop_aspect(im, MAX_ASPECT))

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
                    x = torch.stack([self.preprocess(im) for im in chunk]).to(self.device)
                    out.append(self._net.encode_image(x).float().cpu().numpy())
        except MemoryError:
            raise EmbedderError("out of memory while embedding; use a smaller batch or the CPU") from None
        except Exception as e:  # noqa: BLE001
            raise EmbedderError(f"CLIP failed: {str(e).splitlines()[0][:300]}") from None
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return l2_normalise(np.concatenate(out))

    def memory_bytes(self) -> int:
        """Bytes the loaded model's parameters and buffers hold (its image tower: the text tower was
        freed on loading): what closing it gives back."""
        net = self._net  # read once: close() may run in another thread
        return tensor_bytes(net) if net is not None else 0

    def close(self) -> None:
        self._net = None


def tensor_bytes(module) -> int:
    """Bytes of a torch module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def drop_text_tower(net) -> None:
    """Free every part of an open_clip model but its image tower (`visual`, all `encode_image`
    runs): the text transformer, token and positional embeddings, ln_final, text_projection, the
    attention mask and the logit scale. replicheck embeds images only, never text, so nothing here
    needs them; after this, the model's memory is its image tower's (bench/clip_memory.py)."""
    for name, _ in list(net.named_children()):
        if name != "visual":
            delattr(net, name)
    for name, _ in [*net.named_parameters(recurse=False), *net.named_buffers(recurse=False)]:
        delattr(net, name)


def resized_centre_square(im, n: int):
    """What a bicubic resize of the shortest side to `n` then a centre crop of n x n give (torchvision's
    Resize and CenterCrop, OpenAI CLIP's preprocessing), resampling only the box that is kept: PIL
    computes the same filter taps for a box of the image as for the whole."""
    from PIL import Image

    w, h = im.size
    short, long = min(w, h), max(w, h)
    new_long = int(n * long / short)
    first = int(round((new_long - n) / 2.0))
    scale = long / new_long
    a, b = first * scale, (first + n) * scale
    return im.resize((n, n), Image.BICUBIC, box=(a, 0, b, h) if w >= h else (0, a, w, b))


def _download(open_clip, tag_cfg: dict, cache_dir: str | None, model: str, pretrained: str) -> str:
    """The weights file of a tag, downloaded by open_clip if it is not cached yet (network allowed)."""
    try:
        path = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - urllib, huggingface_hub and RuntimeError
        raise EmbedderError(f"could not download CLIP {model}/{pretrained}: {str(e).splitlines()[0][:300]}") from None
    if not path:
        raise EmbedderError(f"open_clip names no download for CLIP {model}/{pretrained}")
    return path


def local_weights(tag_cfg: dict, cache_dir: str | None) -> str | None:
    """Where open_clip would have cached a tag's weights, looked up on disk only: the Hugging Face
    cache first, as open_clip prefers it, then open_clip's own folder for URL downloads. None when
    they are not there."""
    import os

    if "file" in tag_cfg:
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:  # a plain look-up in the cache folders; hf_hub_download, even with local_files_only,
            # builds request headers, and recent huggingface_hub versions fetch a registry for them
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo_id, filename = os.path.split(hub)
            names = [filename]
            if not filename or filename == "open_clip_pytorch_model.bin":
                names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            elif filename.endswith((".bin", ".pth")):
                names = [filename[:-4] + ".safetensors", filename]
            for name in names:
                try:
                    found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
                except (ValueError, OSError):
                    found = None
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None
